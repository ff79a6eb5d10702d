"""`-` as an input: standard input holds either paths (one per line, as `find` or `ls` print them)
or the bytes of one image (`cat photo.jpg | facegender predict -`).

Told apart by content: image files carry NUL bytes or do not decode as UTF-8 within their first
kilobytes; a list of paths does both. Each listed path is read as its own source, so one bad line
is reported and the others go on.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import BinaryIO

from ..errors import DataError, FaceGenderError
from .sources import Sample, Skipped, SourceData, read_source

STDIN_REF = "-"
DEFAULT_MAX_BYTES = 50 * 1024 * 1024  # one image, or a very long list of paths
SNIFF = 8192


def looks_like_text(data: bytes) -> bool:
    head = data[:SNIFF]
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # only a character cut at the sniff boundary
    return True


def read_stdin(stream: BinaryIO | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
               opener: Callable[[str], SourceData] | None = None) -> SourceData:
    """Standard input as a source: the listed paths' samples, or one image named '-'.
    `opener` reads each listed path (default: read_source; io.inputs.open_input adds URLs)."""
    opener = opener or (lambda ref: read_source(ref, labelled=False))
    stream = stream if stream is not None else sys.stdin.buffer
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise DataError(f"-: stdin holds more than the limit of {max_bytes / 2**20:.0f} MB")
    if not data.strip():
        raise DataError("-: stdin is empty (pipe in image paths, one per line, or one image's bytes)")
    if not looks_like_text(data):
        return SourceData(STDIN_REF, [Sample(ref=STDIN_REF, data=data)])
    out = SourceData(STDIN_REF, [], [])
    for line in data.decode("utf-8", "replace").splitlines():
        ref = line.strip()
        if not ref:
            continue
        try:
            part = opener(ref)
        except FaceGenderError as exc:
            out.skipped.append(Skipped(ref, str(exc).split(": ", 1)[-1]))
            continue
        out.samples += part.samples
        out.skipped += part.skipped
    return out
