"""The wide-shot detector (faces/wide.py): it finds the small real faces of a wide frame that
short-range misses, nothing on noise, and `auto` keeps a one-face photo on short-range; the
conversion tool refuses a wheel whose sha256 is not the pinned one."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from facegender.errors import FaceGenderError
from facegender.faces import Face, FaceDetector, wide
from facegender.faces.wide import WideFaceDetector, choose, has_big_face

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
PHOTOS = ("fairface_0004.jpg", "fairface_0010.jpg", "fairface_0027.jpg", "fairface_0061.jpg")
FACE = 36  # face box side in the frame: ~3% of a 1280 px frame's width


@pytest.fixture(scope="module")
def wide_frame() -> tuple[Image.Image, list[tuple[float, float, float, float]]]:
    """A 960x400 frame, a real photo's corner upscaled as background, with the four example
    faces pasted so each face box is FACE px; their boxes (x0, y0, x1, y1) from short-range
    BlazeFace on the 224 px photos."""
    probe = FaceDetector(auto_tiles=False)
    photos = [Image.open(EXAMPLES / p).convert("RGB") for p in PHOTOS]
    frame = photos[0].crop((0, 0, 48, 20)).resize((960, 400), Image.BICUBIC)
    truth = []
    for i, p in enumerate(photos):
        x, y, w, h = max(probe.detect(p), key=lambda f: f.score).box
        s = FACE / max(w, h)
        ox, oy = 80 + i * 220, 60 + (i % 2) * 180
        frame.paste(p.resize((round(224 * s), round(224 * s))), (ox, oy))
        truth.append((ox + x * s, oy + y * s, ox + (x + w) * s, oy + (y + h) * s))
    return frame, truth


def _iou(a, b) -> float:
    iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return iw * ih / (a[2] * a[3] + b[2] * b[3] - iw * ih)


def _hits(truth, faces) -> int:
    return sum(any(f.box[0] <= (t[0] + t[2]) / 2 <= f.box[0] + f.box[2]
                   and f.box[1] <= (t[1] + t[3]) / 2 <= f.box[1] + f.box[3]
                   and 0.5 < f.box[2] / (t[2] - t[0]) < 2 for f in faces) for t in truth)


def test_wide_detector_finds_the_small_faces_of_a_wide_frame(wide_frame):
    frame, truth = wide_frame
    faces = WideFaceDetector().detect(frame)
    assert _hits(truth, faces) == 4
    assert len(faces) == 4  # no second box on a face, no false face on the background
    assert all(f.landmarks.shape == (6, 2) for f in faces)
    # The reason it exists: short-range, with its automatic tiles, misses faces this small.
    assert _hits(truth, FaceDetector().detect(frame)) < 4


def test_wide_detector_finds_nothing_on_noise():
    rng = np.random.default_rng(0)
    det = WideFaceDetector()
    assert det.detect(rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)) == []
    smooth = Image.fromarray(rng.integers(0, 256, (45, 80, 3), dtype=np.uint8))
    assert det.detect(smooth.resize((1280, 720), Image.BICUBIC)) == []


def _blobs(seed: int) -> Image.Image:
    """Blurred flat colour discs on a 1280x720 canvas, as benchmarks/detection.py draws them."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (1280, 720), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(30):
        x, y, r = rng.integers(0, 1280), rng.integers(0, 720), rng.integers(10, 120)
        draw.ellipse((x - r, y - r, x + r, y + r),
                     fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return img.filter(ImageFilter.GaussianBlur(6))


def test_blurred_colour_discs_are_no_face(monkeypatch):
    """Short-range confirmed these discs (seeds 4, 34: a flat middle; 48, 54: overlapping
    discs coloured like noise); the wide detector's checks turn all of them down."""
    det = WideFaceDetector()
    frames = [_blobs(seed) for seed in (4, 34, 48, 54)]
    assert all(det.detect(f) == [] for f in frames)
    monkeypatch.setattr(wide, "_MIN_MIDDLE_LUMA_STD", 0.0)
    monkeypatch.setattr(wide, "looks_colour_noise", lambda image, b: False)
    assert all(det.detect(f) for f in frames)  # what the two checks remove


def test_auto_choice():
    assert choose("auto", (640, 480)) == "short"  # a plain photo stays short-range
    assert choose("auto", (640, 360), video_frame=True) == "wide"
    assert choose("auto", (900, 300)) == "probe"  # a wide collage
    assert choose("auto", (1600, 1200)) == "probe"  # a large photo
    assert choose("wide", (64, 64)) == "wide" and choose("short", (1280, 720), True) == "short"
    with pytest.raises(FaceGenderError, match="unknown face detector"):
        choose("full", (640, 480))
    portrait = [Face((600.0, 300.0, 400.0, 400.0), 0.9)]
    assert has_big_face(portrait, (1600, 1200))
    assert not has_big_face([Face((0.0, 0.0, 700.0, 700.0), 0.52)], (1280, 720))  # unsure
    assert not has_big_face([Face((0.0, 0.0, 100.0, 100.0), 0.99)], (1280, 720))  # small


def test_probe_keeps_a_portrait_on_short_range():
    big = Image.open(EXAMPLES / "fairface_0004.jpg").convert("RGB").resize((1200, 1200))
    faces = WideFaceDetector().detect(big, probe=True)
    assert len(faces) == 1 and faces[0].box[2] > 240


def test_predictor_auto_keeps_a_one_face_photo_on_short_range():
    from facegender import Predictor

    pred = Predictor("fast")
    (res,) = pred.predict(EXAMPLES / "fairface_0004.jpg", workers=1)
    assert len(res.faces) == 1 and pred._wide is None  # the wide detector was never built
    (res,) = pred.predict(EXAMPLES / "group.jpg", workers=1)  # 640x640: short-range, 4 faces
    assert len(res.faces) == 4 and pred._wide is None
    (wide,) = Predictor("fast", detector="wide").predict(EXAMPLES / "group.jpg", workers=1)
    # The four faces, each once; the wide detector also finds the fifth real face there (a
    # child half hidden at the right edge of the bottom-right photo, 63 px), nothing else.
    assert all(sum(_iou(f.box, g.box) > 0.5 for g in wide.faces) == 1 for f in res.faces)
    assert len(wide.faces) == 5
    extra = next(g for g in wide.faces if all(_iou(f.box, g.box) <= 0.5 for f in res.faces))
    assert 540 < extra.box[0] < 570 and 350 < extra.box[1] < 380
    with pytest.raises(FaceGenderError, match="unknown face detector"):
        Predictor("fast", detector="yunet")


def _tool():
    spec = importlib.util.spec_from_file_location(
        "convert_mediapipe_detectors", ROOT / "tools" / "convert_mediapipe_detectors.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tool_refuses_a_wheel_with_another_sha256(tmp_path):
    tool = _tool()
    wheel = tmp_path / tool.WHEEL_FILE
    wheel.write_bytes(b"not the wheel")
    with pytest.raises(tool.ChecksumError, match="is not the expected"):
        tool.check_wheel(wheel)
    assert tool.check_wheel(wheel, hashlib.sha256(b"not the wheel").hexdigest()) == wheel
