"""One pass over a video, decoded in its own thread: what tracking reads.

`read_video` (video.py) makes one lazily decoded Sample per sampled frame, each opening the file
and seeking: right for a few frames of a long video, wrong for many frames (every seek decodes
from the previous keyframe again). `VideoStream` decodes the file once, front to back, and
hands on the frames chosen by time (`every` seconds), by count (every `period`-th frame) or the
keyframes only (`keyframes`: the decoder skips every other frame, so nothing else is decoded).
Chosen by time, frames apart, the decoder also skips the groups of pictures, or their tails,
that hold no wanted frame (`_gop_ahead`: packets are read one group ahead), where the next
keyframe starts clean; the frames chosen are the same as with every group decoded.
The times of the frames it passes over are kept (two numbers a frame) so the frames between
two chosen ones can be given rows later. Decoding runs in a thread of its own, a few frames
ahead, so it overlaps detection and classification; memory stays flat over any length.
"""

from __future__ import annotations

import io
import math
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from ..errors import DataError, ImageError, require
from .images import checked_pixels
from .sources import Sample
from .video import frame_image, frame_scaled

_AHEAD = 8  # decoded frames waiting for the predictor
_SKIP_APART = 10  # frames between chosen ones from which non-reference frames are skipped
_MAX_BAD = 50  # undecodable packets in a row before a video is given up
_GOP_CAP = 32 << 20  # bytes of packets read ahead to find the next keyframe (then not skipped)
_LEADING_MAX = 16  # packets after a keyframe searched for frames shown before it


@dataclass
class VideoInfo:
    """What the container says before decoding: size, nominal rate, duration (seconds, 0.0 when
    the headers do not say)."""

    path: str
    width: int
    height: int
    rate: float
    duration: float


def _opened(path: str, data: bytes | None) -> Any:
    """The container of a file, or of bytes in memory (`data`, named `path`): an upload is
    decoded where it is, never written to disk."""
    av = require("av", "video")
    return av.open(path if data is None else io.BytesIO(data))


def probe_video(path: str, data: bytes | None = None) -> VideoInfo:
    """The first video stream's size, rate and duration; DataError naming the file and the
    reason when it cannot be read, has no video stream, or a stream of 0x0 pixels. `data`:
    the video's bytes in memory, `path` then only names it."""
    av = require("av", "video")
    try:
        with _opened(path, data) as container:
            if not container.streams.video:
                raise DataError(f"{path}: no video stream in the file")
            s = container.streams.video[0]
            width, height = int(s.codec_context.width or 0), int(s.codec_context.height or 0)
            rate = float(s.average_rate or s.guessed_rate or 25)
            if s.duration is not None and s.time_base is not None:
                duration = float(s.duration * s.time_base)
            else:
                duration = (container.duration or 0) / 1_000_000
    except av.error.FFmpegError as exc:
        raise DataError(f"{path}: cannot read the video ({exc.strerror or exc})") from None
    if width <= 0 or height <= 0:
        raise DataError(f"{path}: the video stream has no picture size ({width}x{height})")
    return VideoInfo(path, width, height, rate, max(0.0, duration))


@dataclass
class FrameSample(Sample):
    """One decoded frame; converted to RGB only when read (in a predictor worker thread, so
    the colour conversion runs in parallel too), and handed on as pixels (read_image)."""

    picture: Any = field(default=None, repr=False)

    def read_image(self, max_pixels: int | None = None) -> Image.Image:
        if self.picture is None:
            raise ImageError(self.ref, "the frame was already read")
        # The decoded frame stays until release(), for `scaled`: the detector's view of it.
        return checked_pixels(frame_image(self.picture), self.ref, max_pixels)

    def scaled(self, width: int, height: int) -> Image.Image | None:
        """The frame at width x height, straight from the decoded frame (video.frame_scaled)."""
        return None if self.picture is None else frame_scaled(self.picture, width, height)

    def release(self) -> None:
        self.picture = None  # the frame's memory goes as soon as it is detected

    def read_bytes(self, cap: int | None = None) -> bytes:
        """The frame as PPM (for a caller that wants bytes; the Predictor reads read_image)."""
        buf = io.BytesIO()
        self.read_image().save(buf, "PPM")
        self.release()
        return buf.getvalue()


class VideoStream:
    """Iterate FrameSamples of the chosen frames of one video (groups: frame, timestamp).

    Exactly one of `every` (seconds), `period` (frames) or `keyframes` chooses frames; `data`
    holds the video's bytes when it is in memory (`path` then names it). After
    (or during) iteration `times` maps every decoded frame number to its time, `error` holds the
    reason decoding stopped early or skipped corrupt packets (the frames decoded are kept),
    and `frames` counts the decoded frames."""

    def __init__(self, path: str, *, every: float | None = None, period: int | None = None,
                 keyframes: bool = False, data: bytes | None = None) -> None:
        if sum(x is not None and x is not False for x in (every, period, keyframes or None)) != 1:
            raise DataError("choose frames by exactly one of every, period or keyframes")
        if every is not None and not every > 0:
            raise DataError(f"every must be > 0 seconds, got {every}")
        if period is not None and period < 1:
            raise DataError(f"period must be >= 1 frame, got {period}")
        self.info = probe_video(path, data)
        self.path, self.every, self.period, self.keyframes = path, every, period, keyframes
        self.data = data  # the video's bytes when it is in memory (an upload), else None
        self.times: dict[int, float] = {}
        self.frames = 0
        self.bad_packets = 0
        self.error: str | None = None
        self._wanted = -math.inf  # the earliest time (from the first frame) still wanted
        self._reached = 0.0  # the latest packet's time (from the first frame) read so far

    def _decode(self) -> Iterator[tuple[int, float, Any]]:
        """(frame number, seconds from the first frame, frame) of every decoded frame. A packet
        that does not decode (a corrupt stretch) is skipped and counted; after _MAX_BAD of
        them in a row decoding stops, and `error` says so."""
        av = require("av", "video")
        rate = self.info.rate
        with _opened(self.path, self.data) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # frame threads inside the decoder
            ctx = stream.codec_context
            # Frames no other frame refers to (most B-frames) are not decoded when the frames
            # wanted are _SKIP_APART or more apart: a chosen frame is then the first decoded one
            # at or after its time (a frame or two late, against a spacing ten times that).
            by_time = self.keyframes or (self.every is not None
                                         and self.every * rate >= _SKIP_APART)
            if self.keyframes:
                ctx.skip_frame = "NONKEY"
            elif by_time:
                ctx.skip_frame = "NONREF"
            packets = (_gop_ahead(container, stream) if by_time and not self.keyframes
                       else ((p, None) for p in container.demux(stream)))
            t0, n, bad_run, skipping = None, 0, 0, False
            for packet, latest in packets:
                # The rest of a group of pictures whose frames all come before the next one
                # wanted is not decoded, a whole group where no frame is wanted: the frames
                # chosen are the same, the decoder stops at the last one wanted in each group.
                skip = latest is not None and t0 is not None and self._wanted > latest - t0
                if skip != skipping:
                    ctx.skip_frame, skipping = ("ALL" if skip else "NONREF"), skip
                if packet.pts is not None and t0 is not None and stream.time_base:
                    self._reached = max(self._reached, float(packet.pts * stream.time_base) - t0)
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    self.bad_packets += 1
                    bad_run += 1
                    if bad_run >= _MAX_BAD:
                        raise
                    continue
                bad_run = 0
                for frame in frames:
                    t = frame.time if frame.time is not None else n / rate
                    t0 = t if t0 is None else t0
                    # Frames skipped: the frame number is where the time puts it.
                    number = round((t - t0) * rate) if by_time else n
                    n += 1
                    yield number, round(t - t0, 6), frame

    def _chosen(self) -> Iterator[FrameSample]:
        av = require("av", "video")
        half = 0.5 / self.info.rate
        next_t = 0.0
        try:
            for number, t, frame in self._decode():
                self.times[number] = t
                self.frames += 1
                if self.every is not None:
                    if t < next_t - half:
                        continue
                    while next_t <= t + half:
                        next_t += self.every
                    self._wanted = next_t - half  # what the decoder may skip up to (_decode)
                elif self.period is not None and number % self.period:
                    continue
                yield FrameSample(ref=self.path, groups={"frame": number, "timestamp": t},
                                  picture=frame)
        except av.error.FFmpegError as exc:
            # where the video broke off (the packets read), not the frames decoded: some skipped
            at = max(self._reached, max(self.times.values(), default=0.0))
            self.error = f"decoding stopped at {at:.2f} s ({exc.strerror or exc})"
        else:
            if self.bad_packets:
                self.error = f"{self.bad_packets} corrupt packets skipped"

    def __iter__(self) -> Iterator[FrameSample]:
        return prefetch(self._chosen(), _AHEAD)


def _nal_types(data: bytes, codec: str, length_size: int) -> Iterator[int]:
    """The NAL unit types of an H.264 / HEVC packet: length-prefixed (MP4, MKV: `length_size`
    bytes each) or, with `length_size` 0, after Annex B start codes (MPEG-TS, raw streams)."""
    def kind(i: int) -> int:
        return data[i] & 0x1F if codec == "h264" else (data[i] >> 1) & 0x3F

    if length_size:
        i = 0
        while i + length_size < len(data):
            n = int.from_bytes(data[i:i + length_size], "big")
            yield kind(i + length_size)
            i += length_size + n
        return
    i = data.find(b"\x00\x00\x01")
    while 0 <= i < len(data) - 3:
        yield kind(i + 3)
        i = data.find(b"\x00\x00\x01", i + 3)


def _starts_clean(packet: Any, stream: Any) -> bool:
    """Whether decoding may start afresh at this keyframe when frames before it were skipped:
    an H.264 / HEVC IDR picture (after a recovery-point keyframe FFmpeg's H.264 decoder, frames
    before it skipped, gave frames out of order here), an MPEG-1/2 or VP8 keyframe; other
    codecs no (FFmpeg's VP9 decoder here ignored skip_frame anyway)."""
    codec = stream.codec_context.name
    if codec in ("mpeg1video", "mpeg2video", "vp8"):
        return True
    if codec not in ("h264", "hevc"):
        return False
    extra = stream.codec_context.extradata or b""
    at = 4 if codec == "h264" else 21  # avcC / hvcC: the NAL length size's byte
    length_size = (extra[at] & 3) + 1 if extra[:1] == b"\x01" and len(extra) > at else 0
    idr = {5} if codec == "h264" else {19, 20}
    try:
        return any(t in idr for t in _nal_types(bytes(packet), codec, length_size))
    except IndexError:  # a cut packet
        return False


def _gop_ahead(container: Any, stream: Any) -> Iterator[tuple[Any, float | None]]:
    """Each packet of `stream` with the latest time (seconds) of a frame that may need it: the
    latest of its group of pictures (keyframe to keyframe, in decoding order) and of the next
    group's leading frames (shown before that group's keyframe, which may refer back to this
    group). None where frames may not be skipped: in the last group, and before a keyframe
    that does not start clean (_starts_clean). Packets are read one group ahead (cheap to
    read, small to hold; a group over _GOP_CAP bytes goes on without a time)."""
    tb = stream.time_base

    def seconds(packet: Any) -> float | None:
        return None if packet.pts is None or not tb else float(packet.pts * tb)

    group: list[Any] = []  # the group being read
    held: list[Any] = []  # the group before it, until the next one's leading frames are read
    latest = key = -math.inf
    size, clean = 0, False
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except Exception:  # a demuxing error: what was read before it is decoded first
            yield from ((p, None) for p in held + group)
            raise
        t = seconds(packet)
        if packet.is_keyframe and group and t is not None and not held:
            held, key = group, t
            latest = max((x for x in map(seconds, group) if x is not None), default=math.inf)
            clean = _starts_clean(packet, stream)
            group, size = [], 0
        group.append(packet)
        size += packet.size
        if held and (t is None or t > key or len(group) > _LEADING_MAX):
            lead = [x for x in map(seconds, group) if x is not None and x < key]
            bound = max([latest, *lead]) if clean else None
            yield from ((p, bound) for p in held)
            held = []
        if size > _GOP_CAP:
            yield from ((p, None) for p in held + group)
            held, group, size = [], [], 0
    yield from ((p, None) for p in held + group)


def prefetch(items: Iterator[Any], ahead: int) -> Iterator[Any]:
    """`items` produced in a thread of its own, at most `ahead` waiting; the thread stops when
    the consumer does (an early stop, an error, Ctrl-C)."""
    q: queue.Queue = queue.Queue(maxsize=max(1, ahead))
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for x in items:
                while not stop.is_set():
                    try:
                        q.put((x, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            q.put((done, exc))
            return
        finally:
            close = getattr(items, "close", None)
            if close is not None:  # closes the container at once, not at garbage collection
                close()
        q.put((done, None))

    worker = threading.Thread(target=produce, name="facegender-decode", daemon=True)
    worker.start()
    try:
        while True:
            x, exc = q.get()
            if x is done:
                if exc is not None:
                    raise exc
                return
            yield x
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                worker.join(0.05)
