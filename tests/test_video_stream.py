"""VideoStream's decoding shortcuts: groups of pictures that hold no wanted frame are not
decoded, and the frames chosen are exactly those a decode without the shortcut chooses, in an
MP4 (length-prefixed H.264), an MPEG-TS (Annex B), a VP8 WebM and an open-GOP stream (no
shortcut there: FFmpeg's H.264 decoder gave frames out of order after skipping before such a
keyframe); and read_video's seeking frames, which share open files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

W, H, FPS, SECONDS = 160, 96, 10, 6


def _clip(path: Path, options: dict[str, str], codec: str = "libx264") -> Path:
    """Every frame different (a moving bar on noise), so a wrong frame shows in its pixels."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=FPS)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.options = {"crf": "20", "preset": "veryfast", **options} if codec == "libx264" else {
            "crf": "30", "b": "0", "deadline": "realtime", **options}
        for i in range(FPS * SECONDS):
            img = rng.integers(0, 60, (H, W, 3), dtype=np.uint8)
            img[:, (i * 3) % W:(i * 3) % W + 8] = 255
            for packet in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)
    return path


def _chosen(path: Path, every: float, error: str | None = None
            ) -> tuple[list[tuple[int, float, str]], int]:
    from facegender.io.video import frame_image
    from facegender.io.video_stream import VideoStream

    stream = VideoStream(str(path), every=every)
    out = []
    for s in stream:
        pixels = np.asarray(frame_image(s.picture)).tobytes()
        out.append((s.groups["frame"], s.groups["timestamp"], hashlib.md5(pixels).hexdigest()))
        s.release()
    assert stream.error == error
    return out, stream.frames


@pytest.mark.parametrize("name,options,skips", [
    ("gop5.mp4", {"g": "5"}, True),
    ("gop5.ts", {"g": "5"}, True),
    ("open_gop.mkv", {"g": "15", "x264-params": "open-gop=1:scenecut=0"}, False),
    ("vp8.webm", {"g": "5"}, True),
])
def test_groups_without_a_wanted_frame_are_skipped_and_the_frames_are_the_same(
        tmp_path, monkeypatch, name, options, skips):
    import facegender.io.video_stream as vs

    codec = "libvpx" if name.endswith(".webm") else "libx264"
    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV has no {codec} encoder")
    clip = _clip(tmp_path / name, options, codec)
    for every in (1.0, 2.0):
        fast, decoded = _chosen(clip, every)
        with monkeypatch.context() as m:  # the same stream, nothing skipped
            m.setattr(vs, "_starts_clean", lambda packet, stream: False)
            full, all_decoded = _chosen(clip, every)
        assert fast == full
        # (non-reference frames are not decoded: a chosen frame may be a frame or two late)
        assert len(fast) == int(SECONDS / every)
        assert all(every * i <= t < every * i + 3 / FPS for i, (_, t, _) in enumerate(fast))
        assert (decoded < all_decoded) == skips, (decoded, all_decoded)


def test_a_damaged_stream_keeps_the_frames_read_ahead_of_the_damage(tmp_path, monkeypatch):
    """Packets read ahead (a group of pictures) when demuxing fails are still decoded: the same
    frames as without skipping, and the error says where the video broke off."""
    import facegender.io.video_stream as vs

    data = bytearray(_clip(tmp_path / "ok.ts", {"g": "5"}).read_bytes())
    at, hole = len(data) // 3, len(data) * 2 // 5  # (MPEG-TS resyncs past shorter holes)
    data[at:at + hole] = bytes(hole)
    holed = tmp_path / "holed.ts"
    holed.write_bytes(bytes(data))
    stream = vs.VideoStream(str(holed), every=1.0)
    frames = list(stream)
    assert stream.error and stream.error.startswith("decoding stopped at ")
    fast, _ = _chosen(holed, 1.0, stream.error)
    with monkeypatch.context() as m:
        m.setattr(vs, "_starts_clean", lambda packet, stream: False)
        full, _ = _chosen(holed, 1.0, stream.error)
    assert fast == full and 1 <= len(fast) == len(frames) < SECONDS


@pytest.mark.parametrize("name,options", [("gop12.mp4", {"g": "12"}),
                                          ("open_gop.mkv", {"g": "25", "x264-params": "open-gop=1"})])
def test_seeking_frames_share_open_files_and_skip_unused_frames_with_the_same_pixels(
        tmp_path, name, options):
    """`predict --every` (read_video: a seek per frame) decodes in one open container per
    thread and skips non-reference frames before each target: every frame's pixels equal a
    fresh open and full decode's, in threads too, and a pickled frame decodes alone."""
    import pickle
    from concurrent.futures import ThreadPoolExecutor

    from facegender.io.video import _seek_frame, frame_image, read_video

    clip = _clip(tmp_path / name, options)

    def md5(img) -> str:
        return hashlib.md5(np.asarray(img).tobytes()).hexdigest()

    def fresh(sample) -> str:
        with av.open(str(clip)) as container:
            return md5(frame_image(_seek_frame(container, sample.groups["timestamp"], False)))

    samples = read_video(clip, every=0.7).samples
    assert len(samples) == 9
    want = [fresh(s) for s in samples]
    assert len(set(want)) == len(want)  # every frame different: a wrong pick shows
    assert [md5(s.read_image()) for s in samples] == want
    opened = samples[0].containers
    assert opened is not None and len(opened._open) == 1  # one file open for all nine
    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(lambda s: md5(s.read_image()), samples[::-1])) == want[::-1]
    assert len(opened._open) <= 3
    alone = pickle.loads(pickle.dumps(samples[4]))
    assert alone.containers is None and md5(alone.read_image()) == want[4]
