"""What a prediction input names, opened: `-` (stdin), an http(s) URL, a video file, or anything
`read_source` reads (file, folder, glob, tar, manifest, HF dataset). The Predictor and the
explainer open every input through here (the Predictor through `iter_input`, which streams tars
and manifests). Video files inside a folder or glob are read as videos too (their frames every
`every` seconds), not tried as images."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..errors import FaceGenderError
from .remote import UrlSample, is_url
from .shards import is_shard_tar, iter_shard
from .sources import Sample, Skipped, SourceData, iter_csv_manifest, read_source, tree_entry
from .stdin import STDIN_REF, read_stdin
from .tars import TAR_SUFFIXES, tar_entries
from .video import DEFAULT_EVERY, has_video_suffix, is_video_path, read_video


def open_input(spec: str | Path | SourceData, include_hidden: bool = False,
               every: float = DEFAULT_EVERY) -> SourceData:
    """One input as unlabelled Samples; FaceGenderError (DataError) says why it cannot be.
    `include_hidden` reads hidden files and __MACOSX/ in folders and archives too; `every`:
    seconds between the classified frames of a video, given directly or found in a folder."""
    if isinstance(spec, SourceData):
        return spec
    s = str(spec)
    if s == STDIN_REF:
        # paths one per line, or one image's bytes
        return read_stdin(opener=lambda ref: open_input(ref, include_hidden, every))
    if is_url(s):
        return SourceData(s, [UrlSample(ref=s)])  # fetched when read, within limits
    if is_video_path(s):
        return read_video(s, every)
    return _with_videos(read_source(spec, labelled=False, include_hidden=include_hidden), every)


def iter_input(spec: str | Path | SourceData, include_hidden: bool = False,
               every: float = DEFAULT_EVERY) -> Iterator[Sample | Skipped]:
    """One input's Samples and Skipped inputs (`ignored` set for those left out by policy) as
    they are read: a tar (plain, compressed or a shard) member by member and a CSV manifest row
    by row, so memory stays flat in their length, the first rows come at once, and damage
    part-way costs one Skipped, not the intact members around it. Anything else: open_input.
    FaceGenderError when the input cannot be opened at all."""
    s = str(spec)
    if not isinstance(spec, SourceData) and s != STDIN_REF and not is_url(s) \
            and Path(s).is_file() and s.lower().endswith((".csv", *TAR_SUFFIXES)):
        n = 0
        for x in _stream_file(Path(s), include_hidden):
            for y in _with_frames(x, every):
                n += 1
                yield y
        if not n:
            yield Skipped(s, "no images found")
        return
    data = open_input(spec, include_hidden, every)
    yield from data.samples
    yield from data.skipped
    yield from (Skipped(x.ref, x.reason, ignored=True) for x in data.ignored)


def _stream_file(p: Path, include_hidden: bool) -> Iterator[Sample | Skipped]:
    """The items of a manifest or an archive file; damage part-way ends it with one Skipped."""
    try:
        if p.name.lower().endswith(".csv"):
            rows = iter_csv_manifest(p)
            next(rows)  # the label column's name
            yield from rows
        elif is_shard_tar(p):
            yield from iter_shard(p, labelled=False)
        else:
            for rel, kw in tar_entries(p, inline_cap=None):
                got = tree_entry(rel, kw, labelled=False, include_hidden=include_hidden)
                if not isinstance(got, str):
                    yield got
    except FaceGenderError as exc:
        yield Skipped(str(p), str(exc).split(": ", 1)[-1])


def _with_frames(x: Sample | Skipped, every: float) -> list[Sample | Skipped]:
    """A video file's frames in place of its Sample (or why it cannot be read); others as is."""
    if not isinstance(x, Sample) or not _is_video(x):
        return [x]
    if x.offset is not None:  # a byte range of a tar: PyAV needs a file of its own
        return [Skipped(x.ref, "a video inside an archive is not read; extract it and pass "
                               "the file or its folder")]
    try:
        return list(read_video(x.path, every).samples)
    except FaceGenderError as exc:
        return [Skipped(x.ref, str(exc).split(": ", 1)[-1])]


def _with_videos(data: SourceData, every: float) -> SourceData:
    """Each video file listed in `data` replaced by its frames; one that cannot be opened (no
    PyAV, a broken file) becomes a skipped input with its reason, and the rest goes on."""
    if not any(_is_video(x) for x in data.samples):
        return data
    samples: list[Sample] = []
    for x in data.samples:
        for y in _with_frames(x, every):
            (samples if isinstance(y, Sample) else data.skipped).append(y)
    data.samples = samples
    return data


def _is_video(x: Sample) -> bool:
    return x.data is None and x.path is not None and has_video_suffix(x.ref)
