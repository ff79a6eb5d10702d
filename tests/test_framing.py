"""A model trained on tight face crops records their framing, then finds and crops faces in
photos to match: in the Python API, the CLI and the REST API alike. An input that is itself a face
crop, in which no face is detected, is classified whole and says so."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from facegender.cli import main
from facegender.faces.framing import MAX_CROP_MARGIN, find_faces, policy_for

ROOT = Path(__file__).resolve().parents[1]
GROUP = ROOT / "examples" / "group.jpg"


def _valid(validator, records):
    for r in records:
        assert validator.is_valid(r), list(validator.iter_errors(r))
    return records


def _celeba_images(celeba: Path, n: int) -> list[tuple[str, Image.Image]]:
    out = []
    with tarfile.open(celeba / "val.tar") as tf:
        for m in tf:
            if m.isfile() and len(out) < n:
                out.append((m.name, Image.open(io.BytesIO(tf.extractfile(m).read())).convert("RGB")))
    return out


def test_celeba_crops_measure_as_the_default_crop_policy(celeba, fairface):
    """Measured on 200 celeba training crops, the framing is the default CropPolicy (which was
    fitted by hand on 1,000 celeba val crops: margin 0.135, aspect 0.78, offset_y -0.09);
    fairface540's loose 224 px photos measure as photos, fed whole."""
    torch = pytest.importorskip("torch")  # noqa: F841  (the trainer module needs it)
    from facegender.io.sources import read_source
    from facegender.training.trainer import measure_training_framing

    f = measure_training_framing(read_source(celeba / "train.tar").samples, seed=0)
    assert f["kind"] == "face_crops" and f["images"] == 200 and f["faces_found"] >= 195
    assert f["margin"] == pytest.approx(0.135, abs=0.04)
    assert f["aspect"] == pytest.approx(0.78, abs=0.03)
    assert f["offset_y"] == pytest.approx(-0.09, abs=0.03)
    lo, hi = f["image_aspect"]
    assert 0.65 < lo < 0.78 < hi < 0.9
    assert policy_for(f)["detect"] is True and policy_for(f)["margin"] == f["margin"]

    ff = measure_training_framing(read_source(fairface / "labels.csv").samples, seed=0)
    assert ff["kind"] == "photos" and ff["margin"] > MAX_CROP_MARGIN
    assert policy_for(ff) == {"detect": False}


def test_model_trained_on_crops_finds_every_face_in_a_group_photo(trained_model, validator,
                                                                    capsys):
    """The session model (celeba tight crops) on a photo of several people: the same faces and
    boxes the shipped model finds, in the API, the CLI and REST, every record valid."""
    from facegender import load

    cfg = json.loads((trained_model / "config.json").read_text())
    assert cfg["framing"]["kind"] == "face_crops" and cfg["crop"]["detect"] is True

    mine = load(trained_model).predict(GROUP)[0]
    shipped = load("fast").predict(GROUP)[0]
    assert len(mine.faces) == len(shipped.faces) >= 4
    for a, b in zip(mine.faces, shipped.faces, strict=True):
        assert all(abs(u - v) < 1 for u, v in zip(a.box, b.box, strict=True))
        assert a.face_source == "detector" and a.box.w < mine.width / 3  # a face, not the photo
    api = _valid(validator, mine.records())

    assert main(["predict", str(GROUP), "--model", str(trained_model), "--json", "-"]) == 0
    cli = _valid(validator, json.loads(capsys.readouterr().out))
    assert [r["box"] for r in cli] == [r["box"] for r in api]

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from facegender.serve.app import create_app

    with TestClient(create_app(trained_model, workers=1)) as c:
        (res,) = c.post("/v1/predict", files=[("files", ("g.jpg", GROUP.read_bytes()))]
                        ).json()["results"]
    rest = _valid(validator, res["faces"])
    assert [r["box"] for r in rest] == [r["box"] for r in api]
    assert [r["prob_male"] for r in rest] == pytest.approx([r["prob_male"] for r in api], abs=1e-5)


def _pixelated_crop(celeba: Path) -> Image.Image:
    """A celeba crop pixelated to 6x8 blocks (an anonymised face): shaped like the training
    crops, and BlazeFace finds no face in it even padded (49 of 50 such crops)."""
    from facegender.faces import CropPolicy, FaceDetector, detect_and_crop

    det = FaceDetector()
    for _, img in _celeba_images(celeba, 20):
        pix = img.resize((6, 8)).resize(img.size, Image.NEAREST)
        if not detect_and_crop(pix, det, CropPolicy(), pad=0.5):
            return pix
    raise AssertionError("every pixelated crop still had a detected face")


def test_face_crop_without_a_detected_face_is_classified_whole(trained_model, celeba, validator,
                                                               tmp_path):
    from facegender import load

    crop = _pixelated_crop(celeba)
    blank = Image.new("RGB", (640, 480), (128, 128, 128))  # a photo, not shaped like a crop
    found, empty = load(trained_model).predict([crop, blank])
    (face,) = found.faces
    assert face.face_source == "whole_image" and face.det_score is None
    assert tuple(face.box) == (0, 0, crop.width, crop.height)
    (rec,) = _valid(validator, found.records())
    assert rec["face_source"] == "whole_image" and rec["label"] in ("male", "female")
    (rec,) = _valid(validator, empty.records())
    assert rec["label"] == "no_face" and rec["face_source"] is None

    # The shipped fast model measured its framing too (celeba crops): the same rule applies.
    (shipped,) = load("fast").predict(crop)[0].faces
    assert shipped.face_source == "whole_image"
    # A model whose config predates framing makes no guess: the crop has no face.
    import shutil

    from facegender.models.modelfile import load_config, resolve_model_dir, save_config

    old = tmp_path / "no-framing"
    shutil.copytree(resolve_model_dir("fast"), old)
    cfg = load_config(old)
    cfg.framing = {}
    save_config(cfg, old)
    assert load(old).predict(crop)[0].faces == []

    # A real crop is still cut by the detector, not taken whole.
    (name, real), = _celeba_images(celeba, 1)
    (got,) = find_faces(real, *_detector_and_policy(trained_model))
    assert got[2] == "detector"


def _detector_and_policy(model: Path):
    from facegender.faces import CropPolicy, FaceDetector
    from facegender.models.modelfile import load_config

    cfg = load_config(model)
    return FaceDetector(), CropPolicy.from_dict(cfg.crop), cfg.framing


def test_explain_and_evaluate_follow_the_same_rule(trained_model, celeba, tmp_path):
    pytest.importorskip("pytorch_grad_cam")
    from facegender.report.evaluate import evaluate
    from facegender.report.explainer import explain

    crop = _pixelated_crop(celeba)
    (e,) = explain(crop, trained_model)
    assert e.ok and e.face_source == "whole_image" and e.det_score is None
    assert e.face_record()["face_source"] == "whole_image"
    (g, *rest) = explain(GROUP, trained_model)
    assert g.face_source == "detector" and len(rest) >= 3

    from conftest import extract_members, first_members

    tar = celeba / "val.tar"
    extract_members(tar, first_members(tar, 2, ("val/female/", "val/male/")), tmp_path)
    crop.save(tmp_path / "val" / "male" / "pixelated.png")
    r = evaluate(tmp_path / "val", trained_model)
    assert r.metrics["n"] == 5 and r.metrics["whole_image"] == 1 and r.metrics["no_face"] == 0


def test_only_what_could_be_a_face_is_read_whole():
    """Real crops pass the whole-image check; flat colours, raw and blurred noise do not."""
    import numpy as np
    from conftest import DATA, need_data
    from PIL import ImageFilter

    from facegender.faces.detector import could_be_a_face

    need_data()
    with tarfile.open(DATA / "kinfacew" / "kinfacew.tar") as tf:
        crops = [Image.open(io.BytesIO(tf.extractfile(m).read())).convert("RGB")
                 for m in tf.getmembers()[:400] if m.isfile()][:200]
    assert len(crops) == 200 and all(could_be_a_face(c) for c in crops)
    rng = np.random.default_rng(0)

    def jpeg(img: Image.Image) -> Image.Image:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")

    noise = Image.fromarray(rng.integers(0, 256, (160, 160, 3), dtype=np.uint8))
    fakes = [Image.new("RGB", (112, 112), (128, 128, 128)), jpeg(noise),
             jpeg(noise.filter(ImageFilter.GaussianBlur(4)))]
    assert [could_be_a_face(f) for f in fakes] == [False, False, False]
