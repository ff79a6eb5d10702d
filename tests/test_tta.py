"""Flip test-time augmentation as a model's own default: config.json's `tta` turns it on, every
caller (Python, evaluate, CLI --tta / --no-tta) can override it, and it averages each face with
its mirror image. A model folder's config says whether it runs by default (neither shipped model
turns it on)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from facegender import Predictor, evaluate
from facegender.cli import main
from facegender.errors import FaceGenderError
from facegender.models import modelfile

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PHOTO = EXAMPLES / "fairface_0004.jpg"


def _fast_with_tta(tmp_path: Path, value: bool) -> Path:
    d = tmp_path / f"fast-tta-{value}"
    shutil.copytree(modelfile.shipped_model_dir("fast"), d)
    cfg = modelfile.load_config(d)
    cfg.tta = value
    modelfile.save_config(cfg, d)
    return d


def test_config_tta_is_the_default_and_callers_override_it(tmp_path):
    d = _fast_with_tta(tmp_path, True)
    on, off = Predictor(d), Predictor(d, tta=False)
    assert on.tta is True and off.tta is False
    n = on.config.input_size
    x = np.random.default_rng(0).normal(size=(3, 3, n, n)).astype(np.float32)
    plain = off.classify_arrays(x)
    mirrored = off.classify_arrays(np.ascontiguousarray(x[..., ::-1]))
    assert np.abs(plain - mirrored).max() > 1e-3  # the mirror image is a second opinion
    np.testing.assert_allclose(on.classify_arrays(x), (plain + mirrored) / 2, atol=1e-6)
    np.testing.assert_allclose(on.classify_arrays(x, tta=False), plain, atol=1e-7)
    # predict on a real photo: the config's default, and the per-call override
    p_on = on.predict(PHOTO)[0].faces[0].prob_male
    p_off = on.predict(PHOTO, tta=False)[0].faces[0].prob_male
    assert p_on == pytest.approx(Predictor(d, tta=True).predict(PHOTO)[0].faces[0].prob_male)
    assert p_off == pytest.approx(off.predict(PHOTO)[0].faces[0].prob_male)
    assert p_on != pytest.approx(p_off, abs=1e-4)


def test_cli_tta_and_no_tta(tmp_path, capsys):
    d = _fast_with_tta(tmp_path, True)
    probs = {}
    for flag in ([], ["--tta"], ["--no-tta"]):
        assert main(["predict", str(PHOTO), "--model", str(d), "--json", "-", "--quiet",
                     *flag]) == 0
        probs[" ".join(flag)] = json.loads(capsys.readouterr().out)[0]["prob_male"]
    assert probs[""] == pytest.approx(probs["--tta"], abs=1e-6)
    assert probs["--no-tta"] != pytest.approx(probs[""], abs=1e-4)


def test_evaluate_follows_the_config(tmp_path):
    d = _fast_with_tta(tmp_path, True)
    labels = {"fairface_0004.jpg": "female", "fairface_0010.jpg": "male"}
    for name in labels:
        shutil.copy(EXAMPLES / name, tmp_path / name)
    manifest = tmp_path / "labels.csv"
    manifest.write_text("file,gender\n" + "".join(f"{n},{g}\n" for n, g in labels.items()))
    assert evaluate(manifest, d).metrics["tta"] is True
    assert evaluate(manifest, d, tta=False).metrics["tta"] is False


def test_shipped_defaults_and_a_bad_value(tmp_path):
    # neither shipped model carries it: fast puts speed first, and the accurate model of
    # 2026-12-06 (FaceRes + dlib) read fairface540 no better with the mirror image
    assert Predictor("accurate").tta is False
    assert Predictor("fast").tta is False  # speed first: the caller may turn it on
    d = _fast_with_tta(tmp_path, False)
    cfg = json.loads((d / "config.json").read_text())
    cfg["tta"] = "yes"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FaceGenderError, match="'tta'.*boolean"):
        Predictor(d)


def test_server_follows_the_config_unless_the_request_says(tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("python_multipart")
    from fastapi.testclient import TestClient

    from facegender.serve.app import create_app

    d = _fast_with_tta(tmp_path, True)
    data = PHOTO.read_bytes()

    def prob(c, **params) -> float:
        r = c.post("/v1/predict", params=params, files=[("files", (PHOTO.name, data))])
        assert r.status_code == 200, r.text
        return r.json()["results"][0]["faces"][0]["prob_male"]

    with TestClient(create_app(str(d), workers=1)) as c:
        assert c.get("/v1/model").json()["tta"] is True
        default, on, off = prob(c), prob(c, tta="true"), prob(c, tta="false")
    assert default == pytest.approx(on, abs=1e-6) and off != pytest.approx(on, abs=1e-4)
