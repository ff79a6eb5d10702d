"""Prediction on photos as users send them: several faces, EXIF rotation, broken files mixed in."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from test_faces import collage  # noqa: F401  (fixture: 2x2 grid of four fairface540 faces)
from test_images import BAD

from facegender import Predictor
from facegender.cli import main


def _inside(box, cell, slack=0.15):
    x, y, w, h = box
    x0, y0, x1, y1 = cell
    s = (x1 - x0) * slack
    return x0 - s <= x and y0 - s <= y and x + w <= x1 + s and y + h <= y1 + s


@pytest.fixture(scope="module")
def predictor(trained_model):
    return Predictor(trained_model, detect=True, keep_images=True)


def test_collage_gives_four_face_records(predictor, collage, tmp_path):  # noqa: F811
    img, cells = collage
    path = tmp_path / "group.jpg"
    img.save(path, quality=95)
    (res,) = predictor.predict(path)
    assert res.ok and len(res.faces) == 4
    for cell in cells:  # one box around each pasted face
        assert sum(_inside(f.box, cell) for f in res.faces) == 1, (cell, [f.box for f in res.faces])
    rows = res.records()
    assert [r["face"] for r in rows] == [0, 1, 2, 3]
    assert all(r["det_score"] > 0.5 and r["label"] in ("male", "female") for r in rows)


def test_exif_rotation_gives_same_faces_and_labels(predictor, collage, tmp_path):  # noqa: F811
    img, _ = collage
    upright = tmp_path / "upright.jpg"
    img.save(upright, quality=95)
    # Store the pixels turned 90 degrees with an EXIF tag saying "rotate back" (orientation 6).
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    img.transpose(Image.Transpose.ROTATE_90).save(rotated, quality=95, exif=exif)
    a, b = predictor.predict([upright, rotated])
    assert (b.width, b.height) == (a.width, a.height)
    assert len(a.faces) == len(b.faces) == 4
    key = lambda f: (round(f.box[1] / 50), round(f.box[0] / 50))  # noqa: E731
    for fa, fb in zip(sorted(a.faces, key=key), sorted(b.faces, key=key), strict=True):
        assert fa.label == fb.label
        assert abs(fa.prob_male - fb.prob_male) < 0.1
        assert all(abs(u - v) < 12 for u, v in zip(fa.box, fb.box, strict=True))


def test_blank_photo_gives_a_no_face_record(predictor, tmp_path):
    path = tmp_path / "wall.png"
    Image.new("RGB", (640, 480), (200, 190, 180)).save(path)
    (res,) = predictor.predict(path)
    assert res.ok and res.faces == []
    (row,) = res.records()
    assert row["label"] == "no_face" and row["prob_male"] is None  # never a guessed label


def test_folder_with_broken_corpus(trained_model, collage, tmp_path, capsys):  # noqa: F811
    """Every good photo predicted, every one of 30+ bad files listed with its reason, exit 1."""
    img, _ = collage
    folder = tmp_path / "inbox"
    folder.mkdir()
    for i in range(3):
        img.save(folder / f"good_{i}.jpg", quality=90)
    bad = {}
    for name, (build, words, kwargs) in BAD.items():
        if build is None or kwargs:  # directories / missing paths / per-call limits: not files
            continue
        (folder / name).write_bytes(build())
        bad[name] = words
    assert len(bad) >= 30
    out = tmp_path / "rows.json"
    code = main(["predict", str(folder), "--model", str(trained_model), "--format", "csv",
                 "--json", str(out), "--detect", "--annotate", str(tmp_path / "ann"),
                 "--save-crops", str(tmp_path / "crops")])
    err = capsys.readouterr().err
    rows = json.loads(out.read_text())
    by_file: dict[str, list] = {}
    for r in rows:
        by_file.setdefault(r["path"].rsplit("/", 1)[-1], []).append(r)
    assert code == 1
    for i in range(3):
        good = by_file[f"good_{i}.jpg"]
        assert len(good) == 4 and all(r["error"] is None for r in good)
    for name, words in bad.items():
        (row,) = by_file[name]
        assert row["error"] and any(w.lower() in row["error"].lower() for w in words), (name, row)
        assert name in err
    assert f"{len(bad)} failed" in err
    assert len(list((tmp_path / "ann").iterdir())) == 3
    assert len(list((tmp_path / "crops").iterdir())) == 12
