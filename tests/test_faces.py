"""Face detector and crop policy on real faces: a collage of four fairface540 faces."""

from __future__ import annotations

import io
import json
import math
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facegender.errors import FaceGenderError
from facegender.faces import (
    LANDMARKS,
    CropPolicy,
    Face,
    FaceDetector,
    crop_face,
    detect_and_crop,
    eye_angle,
)

DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()
FAIRFACE = DATA / "fairface540" / "fairface540.tar"
CELEBA_VAL = DATA / "celeba-gender" / "val.tar"

# Two women and two men, each the only face in its fairface crop.
NAMES = ["female/fairface_0002.jpg", "male/fairface_0011.jpg",
         "female/fairface_0003.jpg", "male/fairface_0012.jpg"]
FACE = 200  # px each face crop is pasted at
GAP = 40


def read_members(tar: Path, names: list[str]) -> list[Image.Image]:
    if not tar.is_file():
        pytest.skip(f"real data not found at {DATA}")
    with tarfile.open(tar) as tf:
        return [Image.open(io.BytesIO(tf.extractfile(n).read())).convert("RGB") for n in names]


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(threads=1)


@pytest.fixture(scope="module")
def collage() -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """2x2 grid of faces on grey with gaps; returns the image and each cell's (x0, y0, x1, y1)."""
    faces = read_members(FAIRFACE, NAMES)
    side = 2 * FACE + 3 * GAP
    img = Image.new("RGB", (side, side), (128, 128, 128))
    cells = []
    for k, face in enumerate(faces):
        x, y = GAP + (k % 2) * (FACE + GAP), GAP + (k // 2) * (FACE + GAP)
        img.paste(face.resize((FACE, FACE), Image.BILINEAR), (x, y))
        cells.append((x, y, x + FACE, y + FACE))
    return img, cells


def assert_one_face_per_cell(faces: list[Face], cells: list, dx: int = 0, dy: int = 0) -> None:
    assert len(faces) == len(cells), [f.box for f in faces]
    for x0, y0, x1, y1 in cells:
        x0, y0, x1, y1 = x0 + dx, y0 + dy, x1 + dx, y1 + dy
        inside = [f for f in faces if x0 <= f.box[0] and f.box[0] + f.box[2] <= x1
                  and y0 <= f.box[1] and f.box[1] + f.box[3] <= y1]
        assert len(inside) == 1, ((x0, y0, x1, y1), [f.box for f in faces])
        # A face box, not a sliver: BlazeFace boxes are ~0.37-0.5 of a fairface crop.
        assert 0.25 * FACE < inside[0].box[2] < 0.7 * FACE


def test_collage_four_faces_in_their_cells(detector, collage):
    img, cells = collage
    faces = detector.detect(img)
    assert_one_face_per_cell(faces, cells)
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
    for f in faces:
        assert 0.5 <= f.score <= 1.0
        assert f.landmarks is not None and f.landmarks.shape == (len(LANDMARKS), 2)
        x, y, w, h = f.box
        (rx, ry), (lx, ly) = f.landmarks[0], f.landmarks[1]
        # Subject's right eye is on the image's left; both eyes in the upper part of the box.
        assert x < rx < lx < x + w and y < ry < y + 0.6 * h and y < ly < y + 0.6 * h


def test_small_faces_need_min_face_tiles(collage):
    img, cells = collage
    big = Image.new("RGB", (1200, 900), (128, 128, 128))
    big.paste(img, (500, 300))
    # 74 px faces in a 1200 px photo are below what one whole-image pass finds (~1/7 side)...
    assert FaceDetector(threads=1, auto_tiles=False).detect(big) == []
    # ...so when one pass finds no face (or only small ones), tiles look closer by themselves.
    assert_one_face_per_cell(FaceDetector(threads=1).detect(big), cells, dx=500, dy=300)
    faces = FaceDetector(threads=1, min_face=50).detect(big)
    assert_one_face_per_cell(faces, cells, dx=500, dy=300)


def test_blank_image_has_no_faces(detector):
    assert detector.detect(Image.new("RGB", (640, 480), (128, 128, 128))) == []
    assert detector.detect(Image.new("L", (300, 200), 0)) == []  # non-RGB modes are converted


def test_rotation_round_trip_gives_same_boxes(detector, collage):
    img, _ = collage
    back = img.rotate(90, expand=True).rotate(-90, expand=True)
    a, b = detector.detect(img), detector.detect(back)
    assert len(a) == len(b) == 4
    np.testing.assert_allclose([f.box for f in a], [f.box for f in b], atol=0.5)


def test_numpy_input_matches_pil(detector, collage):
    img, _ = collage
    a, b = detector.detect(img), detector.detect(np.asarray(img))
    np.testing.assert_allclose([f.box for f in a], [f.box for f in b])


@pytest.mark.parametrize("policy", [CropPolicy(), CropPolicy(align=False),
                                    CropPolicy(margin=0.5, aspect=1.0, offset_y=0.0)])
def test_crop_face_has_policy_aspect(detector, collage, policy):
    img, _ = collage
    for face in detector.detect(img):
        crop = crop_face(img, face, policy)
        assert abs(crop.width / crop.height - policy.aspect) < 0.02
        # Crop height is (1 + margin) box sizes.
        assert abs(crop.height - (1 + policy.margin) * face.box[3]) < 2
    assert crop_face(img, face, policy, size=(78, 100)).size == (78, 100)


def test_align_levels_the_eyes(detector):
    """A face tilted by 20 degrees comes out level when aligned, still tilted when not."""
    face = read_members(FAIRFACE, NAMES[:1])[0]
    tilted = face.rotate(20, resample=Image.BILINEAR, expand=True, fillcolor=(128, 128, 128))
    found = detector.detect(tilted)[0]
    assert -30 < math.degrees(eye_angle(found)) < -12  # PIL turns counter-clockwise

    def eye_angle_in(crop: Image.Image) -> float:
        canvas = Image.new("RGB", (crop.width * 3, crop.height * 3))
        canvas.paste(crop, (crop.width, crop.height))
        return math.degrees(eye_angle(detector.detect(canvas)[0]))

    assert abs(eye_angle_in(crop_face(tilted, found, CropPolicy()))) < 6
    assert eye_angle_in(crop_face(tilted, found, CropPolicy(align=False))) < -12


def test_crop_at_border_repeats_edges(detector):
    face = Face((-20.0, -20.0, 60.0, 60.0), 0.9, None)  # half outside the top-left corner
    img = Image.new("RGB", (100, 100), (10, 200, 30))
    crop = crop_face(img, face, CropPolicy())
    assert np.all(np.asarray(crop) == (10, 200, 30))  # no black fill
    with pytest.raises(FaceGenderError):
        crop_face(img, Face((500.0, 500.0, 50.0, 50.0), 0.9, None), CropPolicy())


def test_detect_and_crop(detector, collage):
    img, cells = collage
    found = detect_and_crop(img, detector, CropPolicy())
    assert len(found) == 4
    largest = detect_and_crop(img, detector, CropPolicy(), largest=True)
    assert len(largest) == 1 and largest[0][0].area == max(f.area for f, _ in found)
    whole = detect_and_crop(img, detector, CropPolicy(detect=False))
    assert len(whole) == 1 and whole[0][1].size == img.size
    assert whole[0][0].box == (0.0, 0.0, float(img.width), float(img.height))


def test_tight_celeba_crop_with_pad():
    """A celeba-style tight crop is found through pad=0.5 and boxed in its own coordinates."""
    img = read_members(CELEBA_VAL, ["val/female/112944.jpg"])[0]
    found = detect_and_crop(img, FaceDetector(threads=1), CropPolicy(), pad=0.5)
    assert len(found) >= 1
    face, crop = found[0]
    x, y, w, h = face.box
    assert 0 <= x + w / 2 <= img.width and 0 <= y + h / 2 <= img.height
    assert 0.5 * img.height < w < 1.2 * img.height  # a tight crop is mostly face
    # The default policy reproduces a celeba crop: about the same size and aspect.
    assert abs(crop.width / crop.height - 0.78) < 0.02
    assert 0.8 < crop.height / img.height < 1.25


def test_crop_policy_round_trip():
    p = CropPolicy(detect=True, margin=0.2, aspect=0.8, align=False, offset_y=-0.05)
    d = json.loads(json.dumps(p.to_dict()))  # stored in config.json
    assert CropPolicy.from_dict(d) == p
    assert CropPolicy.from_dict({"detect": False}) == CropPolicy(detect=False)
    assert CropPolicy.from_dict(None) == CropPolicy()
    with pytest.raises(FaceGenderError):
        CropPolicy.from_dict({"margn": 0.1})
    with pytest.raises(FaceGenderError):
        CropPolicy.from_dict({"aspect": 0})


def test_user_errors_are_facegender_errors(detector):
    with pytest.raises(FaceGenderError):
        FaceDetector(backend="nope")
    with pytest.raises(FaceGenderError):
        FaceDetector(min_face=0)
    with pytest.raises(FaceGenderError):
        detector.detect("photo.jpg")
    with pytest.raises(FaceGenderError):
        detector.detect(np.zeros((10, 10), np.uint8))
    with pytest.raises(FaceGenderError):
        detect_and_crop(Image.new("RGB", (10, 10)), None, CropPolicy())


def test_one_face_photo_pays_no_tiled_pass(monkeypatch):
    """The benchmark's one-face 640x480 photo (face 16% of the side): its only small candidates
    are its own face, so no tiled pass runs (it cost 33-53 ms a photo instead of ~5)."""
    from facegender.infer.bench import make_photo

    face = read_members(FAIRFACE, ["female/fairface_0002.jpg"])[0]
    photo = Image.open(io.BytesIO(make_photo(face, face_height=0.6))).convert("RGB")
    det = FaceDetector(threads=1)
    calls = []
    real = det._candidates
    monkeypatch.setattr(det, "_candidates", lambda img, regions: calls.append(len(regions))
                        or real(img, regions))
    faces = det.detect(photo)
    assert len(faces) == 1 and len(calls) == 1, calls
