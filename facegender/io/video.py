"""Video files as a source: one Sample per frame every `every` seconds, decoded with PyAV (the
`[video]` extra) when the Predictor reads it, so a long video never sits in memory.

Each frame Sample carries its frame number and time (groups "frame", "timestamp"), which every
face record of that frame repeats. The Predictor takes a frame as pixels (`read_image`, within
the pixel limit), not encoded again; `read_bytes` gives it as PPM for callers that want bytes.
A frame is found by a seek in an open container of the file, one per thread, which the file's
frames share (`_Containers`).
"""

from __future__ import annotations

import io
import logging
import math
import os
import threading
from contextlib import nullcontext
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import DataError, ImageError, require
from .images import checked_pixels
from .sources import Sample, SourceData

log = logging.getLogger(__name__)
DEFAULT_EVERY = 1.0  # seconds between classified frames
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg")


def has_video_suffix(name: str | Path) -> bool:
    return os.path.splitext(os.fspath(name))[1].lower() in VIDEO_EXTENSIONS  # (no Path: hot)


def is_video_path(spec: object) -> bool:
    return isinstance(spec, (str, Path)) and has_video_suffix(spec) and Path(spec).is_file()


def video_container(data: bytes) -> str | None:
    """The video container that bytes announce by their first bytes (mp4 for MP4/MOV/3GP,
    matroska for MKV/WebM, avi, mpeg, mpegts), or None: what an upload is, whatever its name
    or content type say. ISO files of an image brand (HEIC, AVIF) are images, not videos."""
    from .images import _HEIF_BRANDS

    if data[4:8] == b"ftyp":
        return None if data[8:12] in _HEIF_BRANDS | {b"avif", b"avis"} else "mp4"
    if data[4:8] in (b"moov", b"mdat", b"wide", b"free"):  # QuickTime without ftyp
        return "mp4"
    if data.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "avi"
    if data.startswith((b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")):
        return "mpeg"
    if len(data) > 376 and data[0] == data[188] == data[376] == 0x47:
        return "mpegts"
    return None


def _open(path: str):
    av = require("av", "video")
    try:
        return av.open(path)
    except av.error.FFmpegError as exc:
        raise DataError(f"{path}: cannot read the video ({exc.strerror or exc})") from None


def _duration_and_rate(container, stream) -> tuple[float, Fraction]:
    rate = stream.average_rate or stream.guessed_rate or Fraction(25)
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base), Fraction(rate)
    if container.duration is not None:  # microseconds
        return container.duration / 1_000_000, Fraction(rate)
    return packet_seconds(container, stream), Fraction(rate)  # no duration in the headers


def packet_seconds(container: Any, stream: Any) -> float:
    """A stream's length from its packets' times, without decoding: for containers whose
    headers do not say (some WebM, a browser's recording)."""
    last = 0.0
    for packet in container.demux(stream):
        if packet.pts is not None and stream.time_base is not None:
            last = max(last, float((packet.pts + (packet.duration or 0)) * stream.time_base))
    return last


def read_video(path: str | Path, every: float = DEFAULT_EVERY,
               max_frames: int | None = None) -> SourceData:
    """Frames of a video file at 0, every, 2*every... seconds as Samples (ref = the file)."""
    if not every > 0:
        raise DataError(f"every must be > 0 seconds, got {every}")
    path = str(path)
    with _open(path) as container:
        if not container.streams.video:
            raise DataError(f"{path}: no video stream in the file")
        stream = container.streams.video[0]
        if not (stream.codec_context.width or 0) > 0 < (stream.codec_context.height or 0):
            raise DataError(f"{path}: the video stream has no picture size "
                            f"({stream.codec_context.width}x{stream.codec_context.height})")
        duration, rate = _duration_and_rate(container, stream)
    n_frames = max(1, math.floor(duration * rate + 1e-6))
    # Frames between classified ones: at least one, so no value of `every` makes this spin.
    step = every * float(rate)
    if step < 1:
        _say_every_frame(every, rate)
        step = 1.0
    samples: list[Sample] = []
    opened = _Containers(path)  # shared by the file's frames, closed when they are all gone
    for i in range(n_frames):  # each pass moves >= 1 frame on: at most n_frames passes
        frame = round(i * step)
        if frame >= n_frames or (max_frames is not None and len(samples) >= max_frames):
            break
        if not samples or frame != samples[-1].groups["frame"]:
            samples.append(VideoFrameSample(ref=path, path=path, groups={
                "frame": int(frame), "timestamp": round(float(frame / rate), 3)},
                containers=opened))
    return SourceData(path, samples)


_SCALERS = threading.local()  # per thread: one libswscale context kept for each output size


def _reformat(picture: Any, width: int | None = None, height: int | None = None) -> Any:
    """`picture` (a decoded PyAV frame) as packed RGB, at width x height if given, by this
    thread's own reformatter. A frame's own reformat() makes a scaler, with a thread pool of
    its own, on every call: 3-10 ms of CPU a 720p frame here, against 0.2 ms with one kept.
    One thread each: frames are converted in parallel already (the Predictor's workers)."""
    key = (width, height)
    cache = getattr(_SCALERS, "cache", None)
    if cache is None:
        cache = _SCALERS.cache = {}
    if key not in cache:
        av = require("av", "video")
        cache[key] = av.video.reformatter.VideoReformatter()
    return cache[key].reformat(picture, width=width, height=height, format="rgb24",
                               interpolation="BILINEAR", threads=1)


def frame_image(picture: Any) -> Image.Image:
    """A decoded PyAV frame as an RGB PIL image: libswscale's conversion to packed RGB, then
    one copy (1.7 ms for 1080p here; PyAV's to_image took 13.6 ms for the same frame)."""
    return Image.fromarray(_reformat(picture).to_ndarray())


def frame_scaled(picture: Any, width: int, height: int) -> Image.Image:
    """A decoded PyAV frame resized to width x height (bilinear) and converted to RGB in one
    libswscale pass: 1-2.6 ms for 1080p to 683x384 here, where PIL's resize of the RGB frame
    took 7.7."""
    return Image.fromarray(_reformat(picture, width, height).to_ndarray())


_SAID: set[float] = set()


def _say_every_frame(every: float, rate: Fraction) -> None:
    """Tell once per value of `every` that it is below a video's frame interval."""
    if every not in _SAID:
        _SAID.add(every)
        log.warning("every %g s is below the video's frame interval (%.4g s at %.4g fps): "
                    "every frame is classified", every, 1 / float(rate), float(rate))


def _half_frame(stream: Any) -> float:
    """Half a frame's duration in seconds: a frame within it of a time is the frame at it."""
    return 0.5 / float(stream.average_rate or 25)


def _seek_frame(container: Any, target: float, skip: bool) -> Any:
    """The first frame at or after `target` seconds (within half a frame), or the last one
    before it where the stream ends first: seeks to the keyframe at or before it, then decodes
    on. `skip`: frames before the target that no other frame refers to are not decoded (the
    frame found is the same; 10% of the CPU on the benchmark clip)."""
    stream = container.streams.video[0]
    half = _half_frame(stream)
    ctx, tb = stream.codec_context, stream.time_base
    container.seek(int(target / tb), stream=stream, backward=True)
    picked = None
    for packet in container.demux(stream):
        early = skip and packet.pts is not None and float(packet.pts * tb) < target - half
        ctx.skip_frame = "NONREF" if early else "DEFAULT"
        for frame in packet.decode():
            picked = frame
            if frame.time is None or frame.time >= target - half:
                return frame
    return picked


class _Containers:
    """The open containers of one video file, one per thread that decodes its frames (a
    container is not thread-safe), so a frame seeks in an open file instead of opening it:
    opening probes the file, 7-16 ms of CPU for a 720p H.264 file here, once per frame before.
    They close when the last Sample holding them is gone (or on an error, that thread's)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._open: dict[int, Any] = {}
        self._lock = threading.Lock()

    def get(self) -> Any:
        key = threading.get_ident()
        with self._lock:
            container = self._open.get(key)
        if container is None:
            av = require("av", "video")
            container = av.open(self.path)
            with self._lock:
                self._open[key] = container
        return container

    def drop(self) -> None:
        """Close this thread's container (after an error it may be in any state)."""
        with self._lock:
            container = self._open.pop(threading.get_ident(), None)
        if container is not None:
            container.close()

    def __del__(self) -> None:
        for container in self._open.values():
            try:
                container.close()
            except Exception:  # at interpreter exit PyAV may be gone already: nothing to free
                pass


@dataclass
class VideoFrameSample(Sample):
    """One frame of a video file, decoded when read (in an open container of the file that
    the file's frames share, `containers`, where there is one)."""

    containers: _Containers | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        # to a worker process without the open files: it opens its own per frame
        return {**self.__dict__, "containers": None}

    def read_bytes(self, cap: int | None = None) -> bytes:
        """The frame as PPM; `cap` is not applied: the frame's size is the video's, which the
        pixel limit checks when the PPM is decoded."""
        buf = io.BytesIO()
        self._decode().save(buf, "PPM")
        return buf.getvalue()

    def read_image(self, max_pixels: int | None = None) -> Image.Image:
        """The frame as an RGB image (no PPM between), within the pixel limit."""
        return checked_pixels(self._decode(), self.ref, max_pixels)

    def _decode(self) -> Image.Image:
        av = require("av", "video")
        target = float(self.groups["timestamp"])
        shared = self.containers
        try:
            with (nullcontext(shared.get()) if shared else av.open(self.path)) as container:
                picked = _seek_frame(container, target, skip=True)
                if picked is None or (picked.time is not None and picked.time
                                      < target - _half_frame(container.streams.video[0])):
                    # the stream ended before the target: its last frame, skipped ones included
                    picked = _seek_frame(container, target, skip=False) or picked
        except av.error.FFmpegError as exc:
            if shared:
                shared.drop()
            raise ImageError(self.ref, f"cannot decode the frame at {target:.3f} s "
                                       f"({exc.strerror or exc})") from None
        if picked is None:
            raise ImageError(self.ref, f"no frame at {target:.3f} s")
        return frame_image(picked)
