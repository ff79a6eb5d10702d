"""Calibration on several views of validation faces: the fit recovers a known temperature on
synthetic logits and weighs sources as asked; `facegender calibrate` repairs a badly calibrated
model folder on real faces without touching its weights; shipped models are never edited."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import DATA, need_data

pytest.importorskip("scipy")

from facegender.cli import main  # noqa: E402
from facegender.errors import FaceGenderError  # noqa: E402
from facegender.training.calibrate import calibrate, fit_calibration  # noqa: E402

SOURCES = [str(DATA / "celeba-gender" / "attributes.csv"), str(DATA / "aaf" / "labels.csv")]


def _overconfident(n: int, factor: float, rng: np.random.Generator, views: int = 3):
    """Labels drawn from sigmoid(t); logits that say factor * t (two classes: female, male)."""
    t = rng.normal(0, 2.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-t))).astype(int)
    z = np.stack([np.zeros(n), factor * t], axis=1)
    return np.repeat(z[:, None, :], views, axis=1), y


def test_fit_recovers_the_temperature_and_weighs_sources():
    rng = np.random.default_rng(0)
    za, ya = _overconfident(4000, 2.0, rng)  # source a: twice too sure
    zb, yb = _overconfident(4000, 0.5, rng)  # source b: half as sure as it should be
    t_a, band = fit_calibration(za, ya, np.ones(len(ya)), male=1)
    assert t_a == pytest.approx(2.0, rel=0.1)
    assert 0 <= band <= 0.3
    z, y = np.concatenate([za, zb]), np.concatenate([ya, yb])
    only_b = np.r_[np.zeros(len(ya)), np.ones(len(yb))]
    assert fit_calibration(z, y, only_b, male=1)[0] == pytest.approx(0.5, rel=0.1)
    both = fit_calibration(z, y, np.ones(len(y)), male=1)[0]
    assert 0.5 < both < 2.0


def test_calibrate_repairs_a_model_and_keeps_its_weights(trained_model, tmp_path, capsys):
    need_data()
    broken = tmp_path / "broken"
    shutil.copytree(trained_model, broken)
    cfg = json.loads((broken / "config.json").read_text())
    cfg["temperature"] = 0.05  # twenty times too sure of itself
    (broken / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "fixed"
    rc = main(["calibrate", str(broken), *SOURCES, "--out", str(out), "--limit", "40",
               "--drop", "disputed=1", "--views", "3", "--threads", "1", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "temperature  0.05 ->" in printed and "ece_degraded" in printed
    res = json.loads((out / "calibration.json").read_text())
    assert set(res["sources"]) == {"celeba-gender", "aaf"} and res["views"] == 3
    assert 40 <= res["faces"] + res["skipped"] <= 80
    assert res["after"]["temperature"] > 0.3
    assert res["after"]["ece_clean"] < res["before"]["ece_clean"]
    new = json.loads((out / "config.json").read_text())
    assert new["temperature"] == res["after"]["temperature"]
    assert "3 views" in new["recipe"]["calibration"]
    assert (out / "model.safetensors").read_bytes() == (broken / "model.safetensors").read_bytes()
    assert json.loads((broken / "config.json").read_text())["temperature"] == 0.05  # copy only
    with pytest.raises(FaceGenderError, match="not empty"):
        calibrate(broken, SOURCES, out, limit=10, progress=False)


def test_shipped_models_are_never_recalibrated_in_place():
    with pytest.raises(FaceGenderError, match="--out"):
        calibrate("fast", SOURCES)


# A fiw test crop (112 x 112) BlazeFace finds no face in, even padded: read whole.
WHOLE_CROP = "test/female/F0238_MID3_P02525_face1.jpg"
FOUND_CROP = "test/male/F0109_MID1_P01122_face1.jpg"


def _crop_model(tmp_path):
    """The fast model with square crops inside its framing (as kinfacew and fiw crops are)."""
    from facegender.models.modelfile import WEIGHTS_DIR

    model = tmp_path / "fast"
    shutil.copytree(WEIGHTS_DIR / "fast", model)
    cfg = json.loads((model / "config.json").read_text())
    cfg["framing"]["image_aspect"] = [0.72, 1.0]
    (model / "config.json").write_text(json.dumps(cfg))
    return model


def test_whole_image_reads_take_their_own_temperature(tmp_path):
    from conftest import extract_members

    from facegender import Predictor

    need_data()
    model = _crop_model(tmp_path)
    crops = extract_members(DATA / "fiw" / "fiw.tar", [WHOLE_CROP, FOUND_CROP], tmp_path / "in")

    def read() -> list:
        return [r.faces[0] for r in Predictor(model, largest=True).predict(crops)]

    whole, found = read()
    assert (whole.face_source, found.face_source) == ("whole_image", "detector")
    cfg = json.loads((model / "config.json").read_text())
    cfg["whole_image_temperature"] = 100.0  # whole reads all but undecided; found faces as before
    (model / "config.json").write_text(json.dumps(cfg))
    whole2, found2 = read()
    assert abs(whole2.prob_male - 0.5) < 0.01 < abs(whole.prob_male - 0.5)
    assert found2.prob_male == pytest.approx(found.prob_male, abs=1e-6)
    assert whole2.unsure  # a whole-image read is never a confident answer


def test_calibrate_fits_whole_image_reads_alone(tmp_path):
    need_data()
    model = _crop_model(tmp_path)
    before = json.loads((model / "config.json").read_text())
    out = tmp_path / "out"
    res = calibrate(model, [str(DATA / "fiw" / "labels.csv")], out, views=1, limit=40,
                    threads=1, keep_temperature=True, progress=False)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["whole_image_temperature"] == res["after"]["whole_image"]["temperature"] > 0
    assert res["before"]["whole_image"]["temperature"] == (before["whole_image_temperature"]
                                                          or before["temperature"])
    assert res["after"]["whole_image"]["ece"] <= res["before"]["whole_image"]["ece"] + 0.02
    assert (cfg["temperature"], cfg["unsure_band"]) == (before["temperature"],
                                                          before["unsure_band"])
    assert "whole-image reads" in cfg["recipe"]["calibration_whole_image"]


def test_small_face_shift_moves_only_small_faces():
    from facegender.infer.preprocess import shift_small_faces

    p = np.array([0.5, 0.5, 0.5, 0.2])
    side = np.array([100.0, 64.0, 32.0, 16.0])
    out = shift_small_faces(p, side, {"below_px": 64, "per_octave": 1.0})
    logit = np.log(out / (1 - out))
    assert logit[:2] == pytest.approx([0, 0], abs=1e-5)  # at or above 64 px: as it was
    assert logit[2] == pytest.approx(1.0, abs=1e-4)  # one halving below: one male logit
    assert logit[3] == pytest.approx(np.log(0.2 / 0.8) + 2.0, abs=1e-4)
    assert shift_small_faces(p, side, None) is p


def test_fit_recovers_a_known_small_face_shift():
    from facegender.training.small_faces import fit_small_face_shift

    rng = np.random.default_rng(1)
    n = 6000
    side = rng.choice([120.0, 60.0, 40.0, 30.0], n)
    t = rng.normal(0, 2.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-t))).astype(int)
    # the model's logit loses 0.6 male logits per halving below 80 px
    z = t - 0.6 * np.clip(np.log2(80 / side), 0, None)
    views = {"p": 1 / (1 + np.exp(-z)), "side": side, "y": y, "face": np.arange(n)}
    fit = fit_small_face_shift(views, np.ones(n))
    assert fit["below_px"] == 80 and fit["per_octave"] == pytest.approx(0.6, abs=0.1)


def test_calibrate_fits_the_small_face_shift_and_prediction_applies_it(tmp_path):
    from conftest import extract_members

    from facegender import Predictor

    need_data()
    model = _crop_model(tmp_path)
    out = tmp_path / "out"
    res = calibrate(model, [str(DATA / "fiw" / "labels.csv")], out, views=1, limit=30,
                    threads=1, keep_temperature=True, small_faces=True, progress=False)
    shift = json.loads((out / "config.json").read_text())["small_face_shift"]
    assert shift == res["after"]["small_faces"]["shift"]
    rows = res["after"]["small_faces"]
    assert [rows[k]["side_px"] > rows[k + 1]["side_px"] for k in (1, 2)] == [True, True]
    assert all(rows[k]["faces"] == res["before"]["small_faces"][k]["faces"] for k in (1, 2, 3))
    # A large shift on the same folder: a small face reads more male, a large one as before.
    cfg = json.loads((out / "config.json").read_text())
    (face,) = extract_members(DATA / "fiw" / "fiw.tar", [FOUND_CROP], tmp_path / "in")
    big = face.parent / "big.png"
    from PIL import Image

    Image.open(face).resize((448, 448)).save(big)

    def p_male() -> list[float]:
        return [r.faces[0].prob_male for r in Predictor(out, largest=True).predict([face, big])]

    cfg["small_face_shift"] = None
    (out / "config.json").write_text(json.dumps(cfg))
    small0, big0 = p_male()
    cfg["small_face_shift"] = {"below_px": 200, "per_octave": 2.0}
    (out / "config.json").write_text(json.dumps(cfg))
    small1, big1 = p_male()
    assert small1 > small0 + 0.05 and big1 == pytest.approx(big0, abs=1e-6)
