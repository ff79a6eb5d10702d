"""What a prediction input names, opened: `-` (stdin), an http(s) URL, a video file, or anything
`read_source` reads (file, folder, glob, tar, manifest, HF dataset). The Predictor and the
explainer open every input through here."""

from __future__ import annotations

from pathlib import Path

from .remote import UrlSample, is_url
from .sources import SourceData, read_source
from .stdin import STDIN_REF, read_stdin
from .video import is_video_path, read_video


def open_input(spec: str | Path | SourceData, include_hidden: bool = False) -> SourceData:
    """One input as unlabelled Samples; FaceGenderError (DataError) says why it cannot be.
    `include_hidden` reads hidden files and __MACOSX/ in folders and archives too."""
    if isinstance(spec, SourceData):
        return spec
    s = str(spec)
    if s == STDIN_REF:
        # paths one per line, or one image's bytes
        return read_stdin(opener=lambda ref: open_input(ref, include_hidden))
    if is_url(s):
        return SourceData(s, [UrlSample(ref=s)])  # fetched when read, within limits
    if is_video_path(s):
        return read_video(s)
    return read_source(spec, labelled=False, include_hidden=include_hidden)
