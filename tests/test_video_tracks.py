"""predict --track on a video built here from real face photos, whose tracks, labels and screen
time are known exactly; and videos that are empty, corrupt, variable-rate or 0x0 in a batch.

The clip (6 s, 10 fps, 384x216, H.264): a woman (FairFace, examples/) on screen all along,
moving right; a man who leaves at 1.5 s and is back at 2.5 s somewhere else; a camera cut at
4.0 s to another background, after which the woman is elsewhere and a second man appears. So:
3 tracks (the man bridged across his absence, the woman across the cut), female on screen 6 s,
male 5 s (1.5 + 1.5 + 2), person-seconds female 6, male 5."""

from __future__ import annotations

import csv
import io
import json
import struct
import tarfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facegender.cli import main

av = pytest.importorskip("av")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
FAIRFACE = ROOT.parent / "shared" / "data" / "fairface540" / "fairface540.tar"
W, H, FPS, SECONDS, SIDE = 384, 216, 10, 6, 120


def _photos() -> dict[str, Image.Image]:
    out = {"woman": Image.open(EXAMPLES / "fairface_0027.jpg"),
           "man": Image.open(EXAMPLES / "fairface_0010.jpg")}
    if FAIRFACE.exists():
        with tarfile.open(FAIRFACE) as t:
            out["man2"] = Image.open(io.BytesIO(t.extractfile("male/fairface_0007.jpg").read()))
    else:  # the project's own examples still make a man
        out["man2"] = Image.open(EXAMPLES / "fairface_0061.jpg")
    return {k: v.convert("RGB").resize((SIDE, SIDE)) for k, v in out.items()}


def _background(shot: int) -> Image.Image:
    y, x = np.mgrid[0:H, 0:W]
    arr = (np.stack([40 + x * 0.3, 80 + y * 0.5, 140 + 0 * x], -1) if shot == 0 else
           np.stack([170 + 0 * x, 120 + y * 0.3, 60 + x * 0.2], -1))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def _layout(i: int) -> tuple[dict[str, tuple[int, int]], int]:
    t = i / FPS
    if t >= 4.0:  # after the cut
        return {"woman": (240, 50), "man2": (40, 70)}, 1
    where = {"woman": (int(10 + 12 * t), 40)}
    if t < 1.5 or t >= 2.5:
        where["man"] = (250 if t < 1.5 else 180, 60)
    return where, 0


def _encode(path: Path, frames, rate=FPS, size=(W, H), pts=None) -> Path:
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt = size[0], size[1], "yuv420p"
        s.options = {"crf": "16", "preset": "veryfast"}
        if pts is not None:
            s.codec_context.time_base = s.time_base = Fraction(1, 1000)
        for n, img in enumerate(frames):
            frame = av.VideoFrame.from_image(img)
            if pts is not None:
                frame.pts = pts[n]
                frame.time_base = s.codec_context.time_base
            for packet in s.encode(frame):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    photos, bgs = _photos(), [_background(0), _background(1)]

    def frames():
        for i in range(FPS * SECONDS):
            where, shot = _layout(i)
            img = bgs[shot].copy()
            for who, xy in where.items():
                img.paste(photos[who], xy)
            yield img

    return _encode(tmp_path_factory.mktemp("tracks") / "scene.mp4", frames())


def _csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_tracks_labels_and_screen_time_are_exact(clip, tmp_path, capsys):
    out = {k: tmp_path / n for k, n in (("frames", "frames.csv"), ("tracks", "tracks.csv"),
                                        ("summary", "summary.json"), ("sum_csv", "s.csv"),
                                        ("ass", "scene.ass"), ("html", "timeline.html"))}
    assert main(["predict", str(clip), "--track", "--every", "0.5", "-q", "--csv",
                 str(out["frames"]), "--tracks-csv", str(out["tracks"]), "--summary",
                 str(out["summary"]), "--summary-csv", str(out["sum_csv"]), "--subtitles",
                 str(out["ass"]), "--annotate", str(tmp_path / "ann"), "--timeline",
                 str(out["html"])]) == 0
    tracks = _csv(out["tracks"])
    assert sorted((t["label"], float(t["start"]), float(t["end"]), float(t["seconds"]))
                  for t in tracks) == [("female", 0.0, 6.0, 6.0), ("male", 0.0, 4.0, 3.0),
                                       ("male", 4.0, 6.0, 2.0)]
    assert all(t["unsure"] == "False" for t in tracks)
    man = next(t for t in tracks if t["label"] == "male" and t["start"] == "0.0")
    assert man["segments"] == "2"  # away 1.5-2.5 s, the same track when he is back

    s = json.loads(out["summary"].read_text())
    v = s["videos"][0]
    assert v["tracks"] == {"total": 3, "female": 1, "male": 2, "unsure": 0}
    assert v["screen_time"] == {"female": 6.0, "male": 5.0, "unsure": 0.0, "any": 6.0}
    assert v["person_seconds"] == {"female": 6.0, "male": 5.0, "unsure": 0.0}
    assert v["unsure_share"] == 0.0 and v["female_share"] == round(6 / 11, 4)
    lo, hi = v["intervals"]["screen_time_female"]
    assert lo <= 6.0 <= hi
    assert s["total"]["screen_time"] == v["screen_time"]
    rows = _csv(out["sum_csv"])
    assert [r["path"] for r in rows] == [str(clip), "TOTAL"]
    assert float(rows[0]["screen_time_male"]) == 5.0

    frames = _csv(out["frames"])
    faces = [r for r in frames if r["face_source"] == "detector"]
    assert len(faces) == 12 + 6 + 4 and all(r["track_id"] for r in faces)
    by_track: dict[str, set] = {}
    for r in faces:
        by_track.setdefault(r["track_id"], set()).add(r["track_label"])
    assert all(len(labels) == 1 for labels in by_track.values())  # never flips in a track

    ass = out["ass"].read_text()
    assert "PlayResX: 384" in ass and ass.count("Dialogue:") == 2 * len(faces)
    assert "#1 female" in ass or "#2 female" in ass
    page = out["html"].read_text()
    assert page.count('<image href="data:image/jpeg;base64,') == 3  # a face per track
    assert page.count("<rect ") == 2 + 2 + 1  # the stretches on screen: man away, cut
    assert page.count("cut at 4 s") == 1 and "<td>6</td>" in page  # 6 s of video
    with av.open(str(tmp_path / "ann" / "scene.tracks.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == FPS * SECONDS


def test_detect_period_gives_every_frame_a_row(clip):
    from facegender import summarize_tracks, track
    from facegender.infer.video_tracks import frame_rows

    (v,) = track(clip, period=5)
    assert sorted(v.labels[t.id].label for t in v.tracks) == ["female", "male", "male"]
    rows = list(frame_rows(v))
    assert {r["frame"] for r in rows} == set(range(FPS * SECONDS))
    tracked = [r for r in rows if r["face_source"] == "tracked"]
    assert tracked and all(r["track_id"] and r["label"] == r["track_label"] for r in tracked)
    # a tracked box lies between the two detections around it (the woman moves right)
    woman = next(t for t in v.tracks if v.labels[t.id].label == "female")
    d0, d1 = woman.detections[0], woman.detections[1]
    mid = next(r for r in tracked if r["track_id"] == woman.id and r["frame"] == 2)
    assert d0.box[0] < mid["box"]["x"] < d1.box[0]
    st = summarize_tracks([v], n_boot=50)["videos"][0]["screen_time"]
    assert abs(st["female"] - 6.0) <= 0.5 and abs(st["male"] - 5.0) <= 0.5
    # one frame a second, 10 frames apart: frames nothing refers to are not even decoded
    (v,) = track(clip, every=1.0, min_frames=2)  # the second man is on screen for 2 s
    assert len(v.times) == SECONDS and sorted(v.labels[t.id].label for t in v.tracks) == [
        "female", "male", "male"]
    st = summarize_tracks([v], n_boot=0)["videos"][0]["screen_time"]
    assert abs(st["female"] - 6.0) <= 1.0 and abs(st["male"] - 5.0) <= 1.0


def _zero_size_avi(path: Path) -> Path:
    with av.open(str(path), "w", format="avi") as out:
        s = out.add_stream("rawvideo", rate=5)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for _ in range(5):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 100, np.uint8), format="rgb24")
            for packet in s.encode(f.reformat(format="yuv420p")):
                out.mux(packet)
    data = bytearray(path.read_bytes())
    i = data.find(b"strf") + 8  # BITMAPINFOHEADER: size, width, height
    data[i + 4:i + 12] = struct.pack("<ii", 0, 0)
    j = data.find(b"avih") + 8  # main header: width and height are its 9th and 10th fields
    data[j + 32:j + 40] = struct.pack("<II", 0, 0)
    path.write_bytes(bytes(data))
    return path


def test_bad_videos_in_a_batch(clip, tmp_path, capsys):
    """No frames, a corrupt stretch, variable frame rate, a 0x0 stream: each a clear row, and
    the good video in the same folder is still tracked."""
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "scene.mp4").write_bytes(clip.read_bytes())
    with av.open(str(folder / "empty.mp4"), "w") as out:  # a header, no frame
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        out.start_encoding()
    data = bytearray(clip.read_bytes())
    rng = np.random.default_rng(0)
    at = data.find(b"mdat") + len(data) // 3
    data[at:at + 4000] = rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
    (folder / "corrupt.mp4").write_bytes(bytes(data))
    _zero_size_avi(folder / "zero.avi")
    woman = _photos()["woman"]
    times = [0, 100, 200, 300, 1000, 1050, 1100, 2000, 2500, 3000]  # ms, irregular
    imgs = []
    for _ in times:
        img = _background(0).copy()
        img.paste(woman, (100, 40))
        imgs.append(img)
    _encode(folder / "vfr.mp4", imgs, pts=times)

    # without --track: one failed row each for the unreadable ones, frames for the rest
    assert main(["predict", str(folder), "--every", "1", "-q", "--format", "json"]) == 1
    rows = json.loads(capsys.readouterr().out)
    errors = {Path(r["path"]).name: r["error"] for r in rows if r["error"]}
    # (seeking into the corrupt stretch fails that frame: its row says so)
    assert errors.pop("corrupt.mp4", "cannot decode the frame at").startswith(
        "cannot decode the frame at")
    assert errors == {"empty.mp4": "no video stream in the file",
                      "zero.avi": "the video stream has no picture size (0x0)"}
    assert {Path(r["path"]).name for r in rows} == {"scene.mp4", "empty.mp4", "corrupt.mp4",
                                                    "zero.avi", "vfr.mp4"}

    assert main(["predict", str(folder), "--track", "--every", "0.5", "-q", "--format", "json",
                 "--tracks-csv", str(tmp_path / "t.csv")]) == 1
    cap = capsys.readouterr()
    rows = json.loads(cap.out)
    by = {name: [r for r in rows if Path(r["path"]).name == name]
          for name in ("scene.mp4", "empty.mp4", "corrupt.mp4", "zero.avi", "vfr.mp4")}
    assert by["empty.mp4"][0]["error"] == "no video stream in the file"
    assert by["zero.avi"][0]["error"] == "the video stream has no picture size (0x0)"
    assert len(by["empty.mp4"]) == len(by["zero.avi"]) == 1
    assert [r["error"] for r in by["corrupt.mp4"] if r["error"]] == []  # frames kept ...
    assert "corrupt packets skipped" in cap.err.split("corrupt.mp4: ")[1].splitlines()[0]
    assert len({r["frame"] for r in by["corrupt.mp4"]}) >= 4
    # variable rate: frames chosen by their own times, the woman on screen from 0 to the end
    assert sorted({r["timestamp"] for r in by["vfr.mp4"]}) == [0.0, 1.0, 2.0, 2.5, 3.0]
    vfr = [t for t in _csv(tmp_path / "t.csv") if t["path"].endswith("vfr.mp4")]
    assert [t["label"] for t in vfr] == ["female"] and float(vfr[0]["start"]) == 0.0
    assert 3.0 < float(vfr[0]["seconds"]) <= 3.5
    assert len({r["track_id"] for r in by["scene.mp4"] if r["track_id"]}) == 3


def test_fps_is_every_one_over_n(clip, capsys):
    """--fps N samples like --every 1/N, tracked or not."""
    assert main(["predict", str(clip), "--fps", "2", "--format", "json", "-q"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted({r["timestamp"] for r in rows}) == [0.5 * i for i in range(12)]
    assert "track_id" not in rows[0]
    assert main(["predict", str(clip), "--fps", "2", "--track", "--format", "json", "-q"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted({r["timestamp"] for r in rows}) == [0.5 * i for i in range(12)]
    with pytest.raises(SystemExit):  # argparse: must be a number > 0
        main(["predict", str(clip), "--fps", "0"])


def test_between_detections_no_detector_pass_and_the_frames_view_from_the_decoder(clip,
                                                                                    monkeypatch):
    """With a detection period, the detector runs on the sampled frames only (the frames in
    between get rows from the tracks, not a detector pass); a sampled frame reaches the wide
    detector as pixels with the decoder's own scaled view, which finds what PIL's resize does."""
    from facegender import Predictor
    from facegender.faces.wide import WideFaceDetector
    from facegender.infer.video_tracks import frame_rows, track_video
    from facegender.io.video_stream import VideoStream

    pred = Predictor("fast")
    calls = []
    real = Predictor._detect
    monkeypatch.setattr(Predictor, "_detect", lambda self, img, video_frame=False, scaled=None:
                        calls.append(scaled is not None) or real(self, img, video_frame, scaled))
    v = track_video(pred, clip, period=5)
    assert len(v.times) == FPS * SECONDS // 5 == len(calls) and all(calls)
    assert {r["frame"] for r in frame_rows(v)} == set(range(FPS * SECONDS))

    sample = next(iter(VideoStream(str(clip), period=20)))
    img = sample.read_image()
    view = sample.scaled(200, 112)
    assert view.size == (200, 112)
    ref = np.asarray(img.resize((200, 112), Image.BILINEAR, reducing_gap=2.0), np.float32)
    assert np.abs(np.asarray(view, np.float32) - ref).mean() < 4  # same picture, other filter
    det = WideFaceDetector(tile=192)  # 384 px wide: the fine pass runs (scale 256/192)
    plain, fast = det.detect(img), det.detect(img, scaled=sample.scaled)
    assert len(plain) == len(fast) == 2
    assert all(min(abs(np.subtract(a.box, b.box)).max() for b in fast) < 3 for a in plain)
    sample.release()
    assert sample.scaled(200, 112) is None  # the decoded frame is gone once released
