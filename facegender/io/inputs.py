"""What a prediction input names, opened: `-` (stdin), an http(s) URL, a video file, or anything
`read_source` reads (file, folder, glob, tar, manifest, HF dataset). The Predictor and the
explainer open every input through here. Video files inside a folder or glob are read as
videos too (their frames every `every` seconds), not tried as images."""

from __future__ import annotations

from pathlib import Path

from ..errors import FaceGenderError
from .remote import UrlSample, is_url
from .sources import Sample, Skipped, SourceData, read_source
from .stdin import STDIN_REF, read_stdin
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


def _with_videos(data: SourceData, every: float) -> SourceData:
    """Each video file listed in `data` replaced by its frames; one that cannot be opened (no
    PyAV, a broken file) becomes a skipped input with its reason, and the rest goes on."""
    if not any(_is_video(x) for x in data.samples):
        return data
    samples: list[Sample] = []
    for x in data.samples:
        if not _is_video(x):
            samples.append(x)
        elif x.offset is not None:  # a byte range of a tar: PyAV needs a file of its own
            data.skipped.append(Skipped(x.ref, "a video inside an archive is not read; "
                                               "extract it and pass the file or its folder"))
        else:
            try:
                samples += read_video(x.path, every).samples
            except FaceGenderError as exc:
                data.skipped.append(Skipped(x.ref, str(exc).split(": ", 1)[-1]))
    data.samples = samples
    return data


def _is_video(x: Sample) -> bool:
    return x.data is None and x.path is not None and has_video_suffix(x.ref)
