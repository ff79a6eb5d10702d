"""Reading files from disk: regular files only, never more than a cap.

Every path the package reads an image or a manifest from comes through `read_file`: the path is
stat'ed first (a FIFO would block the open itself, a device such as /dev/zero never ends, a
socket cannot be read), then opened non-blocking and checked again on the open descriptor (the
name may have been swapped in between), and at most `cap` bytes are read: a file over the cap
is refused before a byte of it is read. The cap comes from the pixel cap (the largest image the
decoder would accept, stored uncompressed) and an optional byte cap, both settable.
"""

from __future__ import annotations

import os
import stat

from ..errors import ImageError

# 50 megapixels covers any phone photo; far larger files are almost always bombs or scans
# that would exhaust memory on a small server. Override per call or with FACEGENDER_MAX_PIXELS.
DEFAULT_MAX_PIXELS = int(os.environ.get("FACEGENDER_MAX_PIXELS", 50_000_000))
# An explicit byte cap (FACEGENDER_MAX_BYTES); none by default: the pixel cap bounds it.
DEFAULT_MAX_BYTES: int | None = (int(os.environ["FACEGENDER_MAX_BYTES"])
                                 if os.environ.get("FACEGENDER_MAX_BYTES") else None)
# An image of max_pixels stored without compression at 8-bit RGBA, plus room for headers,
# EXIF, ICC profiles and thumbnails: no real file of an acceptable image is larger.
_BYTES_PER_PIXEL = 4
_HEADER_ROOM = 4 * 1024 * 1024
MAX_MANIFEST_BYTES = 512 * 1024 * 1024  # a CSV of ~5M rows

_KINDS = (
    (stat.S_ISDIR, "is a directory, not an image"),
    (stat.S_ISFIFO, "is a named pipe (FIFO), not a regular file; refused without opening it"),
    (stat.S_ISCHR, "is a character device, not a regular file; refused without opening it"),
    (stat.S_ISBLK, "is a block device, not a regular file; refused without opening it"),
    (stat.S_ISSOCK, "is a socket, not a regular file; refused without opening it"),
)


def byte_cap(max_pixels: int | None = None, max_bytes: int | None = None) -> int:
    """The most bytes read for one image: from the pixel cap, lowered by a byte cap if set."""
    pixels = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
    cap = pixels * _BYTES_PER_PIXEL + _HEADER_ROOM
    limit = DEFAULT_MAX_BYTES if max_bytes is None else int(max_bytes)
    return cap if limit is None else min(cap, limit)


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MB" if n >= 2**20 else f"{n:,} bytes"


def too_large(size: int, cap: int) -> str:
    """The reason given for bytes over the cap (files, tar members, rows, uploads alike)."""
    return (f"is {_mb(size)}, over the limit of {_mb(cap)} for one image (raise max_bytes / "
            "FACEGENDER_MAX_BYTES or max_pixels to allow)")


def special_kind(mode: int) -> str | None:
    """Why a file of this st_mode cannot be read as data, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    for test, reason in _KINDS:
        if test(mode):
            return reason
    return "is not a regular file"


def check_file(path: str | os.PathLike, label: str | None = None,
               cap: int | None = None) -> os.stat_result:
    """stat `path` (following symlinks) and refuse anything that is not a regular file of at
    most `cap` bytes, without opening it. Returns the stat result."""
    label = label if label is not None else os.fsdecode(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        reason = "file not found (a broken symlink)" if os.path.islink(path) else "file not found"
        raise ImageError(label, reason) from None
    except OSError as exc:  # loops of symlinks, permissions, names too long
        raise ImageError(label, f"cannot read file ({exc.strerror or exc})") from None
    kind = special_kind(info.st_mode)
    if kind:
        raise ImageError(label, kind)
    if cap is not None and info.st_size > cap:
        raise ImageError(label, too_large(info.st_size, cap))
    return info


def read_file(path: str | os.PathLike, label: str | None = None, *, cap: int | None = None,
              offset: int | None = None, size: int | None = None) -> bytes:
    """The bytes of a regular file (or `size` bytes at `offset`, e.g. a tar member), at most
    `cap` (default: the image cap). Raises ImageError naming `label` and the reason."""
    label = label if label is not None else os.fsdecode(path)
    cap = byte_cap() if cap is None else int(cap)
    if size is not None and size > cap:
        raise ImageError(label, too_large(size, cap))
    check_file(path, label, cap if offset is None else None)
    try:
        # O_NONBLOCK: if the name became a FIFO since the stat, the open must not wait for a
        # writer; fstat on the descriptor then sees what was really opened.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ImageError(label, f"cannot read file ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb", buffering=0) as fh:
        info = os.fstat(fd)
        kind = special_kind(info.st_mode)
        if kind:
            raise ImageError(label, kind)
        try:
            if offset is not None:
                fh.seek(offset)
            want = cap + 1 if size is None else size
            # Ask for what the file holds (+1 byte, to see it grow): a raw read allocates all it
            # asks for, and two 8 MB reads per small photo showed up at 0.18 ms a read in a
            # profile of the prediction pipeline.
            hint = info.st_size + 1 if size is None else size
            chunks, got = [], 0
            while got < want:  # raw reads may return less than asked
                chunk = fh.read(min(want - got, max(hint - got, 2**16), 8 * 2**20))
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
        except OSError as exc:
            raise ImageError(label, f"cannot read file ({exc.strerror or exc})") from None
    data = b"".join(chunks)
    if size is None and len(data) > cap:  # grew since the stat
        raise ImageError(label, too_large(len(data), cap))
    if size is not None and len(data) < size:
        raise ImageError(label, f"file ends early: {len(data):,} of {size:,} bytes (truncated "
                                "archive?)")
    return data


def safe_text(s: str) -> str:
    """`s` as valid UTF-8 text: bytes of a non-UTF-8 file name (surrogate escapes from
    os.fsdecode) become \\xNN, so CSV/JSON writers and terminals never fail on a name."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") \
            if _only_escapes(s) else s.encode("utf-8", "backslashreplace").decode("utf-8")


def _only_escapes(s: str) -> bool:
    """True when every surrogate in s is a surrogateescape byte (U+DC80..U+DCFF)."""
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in s)


def display_name(s: str) -> str:
    """safe_text plus control characters escaped, for one-line terminal and log output."""
    s = safe_text(s)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)
