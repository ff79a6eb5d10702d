"""Videos sent to the service. An upload is a video when its first bytes say so
(io.video.video_container: MP4/MOV, MKV/WebM, AVI, MPEG), whatever its name or content type.
Before any work, each video is probed in memory: one that cannot be read refuses the request
(400 bad_video, naming it and why), and the frames the request's videos would have classified
(their length over the sampling interval) must stay within the server's `max_video_frames`
(413 video_too_long). A video is then tracked from its bytes (infer.video_tracks.track_video;
nothing touches the disk) and answered as one result (schemas.VideoOut): its faces frame by
frame with their track, the tracks, and the screen-time summary.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

from ..errors import FaceGenderError, require
from ..infer.video_summary import summarize_video
from ..infer.video_tracks import TRACK_COLUMNS, VideoTracks, frame_rows, track_rows
from ..io.video import packet_seconds, video_container
from ..io.video_stream import probe_video
from .schemas import ApiError

_SNIFF_BYTES = 400  # enough for every signature video_container reads


def is_video(data: bytes | None) -> bool:
    return data is not None and video_container(data[:_SNIFF_BYTES]) is not None


@dataclass
class VideoPlan:
    """A video of a request: its upload's name and bytes, and what classifying it costs."""

    name: str
    data: bytes
    seconds: float
    frames: int


def _packet_seconds(data: bytes) -> float:
    """A video's length from its packets' times (no decoding), for containers whose headers
    do not say (a browser's recorded WebM)."""
    av = require("av", "video")
    try:
        with av.open(io.BytesIO(data)) as container:
            return packet_seconds(container, container.streams.video[0])
    except av.error.FFmpegError:
        return 0.0  # decoding will say what is wrong


def plan_video(name: str, data: bytes, every: float) -> VideoPlan:
    """Probe a video in memory; ApiError 400 (one line: the upload's name and the reason) when
    it cannot be read, has no video stream or no picture size."""
    try:
        info = probe_video(name, data)
    except FaceGenderError as exc:
        raise ApiError(400, "bad_video", f"video {exc}") from None
    seconds = info.duration or _packet_seconds(data)
    step = max(every, 1.0 / info.rate) if info.rate > 0 else every  # no more than every frame
    return VideoPlan(name, data, seconds, max(1, math.ceil(seconds / step - 1e-9)))


def check_video_frames(plans: list[VideoPlan], every: float, limit: int) -> None:
    """ApiError 413 when the request's videos would have more than `limit` frames classified."""
    total = sum(p.frames for p in plans)
    if total <= limit:
        return
    longest = max(plans, key=lambda p: p.frames)
    raise ApiError(413, "video_too_long",
                   f"video {longest.name}: {longest.seconds:.0f} s at one frame every {every:g} s "
                   f"is {longest.frames:,} frames"
                   + (f" ({total:,} for the request's {len(plans)} videos)" if len(plans) > 1
                      else "")
                   + f"; the limit is {limit:,} a request (send a shorter clip or a larger "
                     "'every')")


def video_json(v: VideoTracks, track: bool) -> dict[str, Any]:
    """One video's result (schemas.VideoOut): the face rows of its sampled frames (with their
    track's columns when `track`), its tracks and its summary."""
    faces = [r for r in frame_rows(v) if r["face"] is not None]
    if not track:
        faces = [{**r, **dict.fromkeys(TRACK_COLUMNS)} for r in faces]
    info = v.info
    return {"path": v.path, "width": info.width if info else None,
            "height": info.height if info else None, "faces": faces, "error": v.error,
            "duration": round(v.duration, 3), "sampling": v.sampling, "frames": len(v.times),
            "tracks": list(track_rows(v)) if track else [],
            "summary": summarize_video(v) if track else None}
