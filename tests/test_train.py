"""The backbone on real faces: train -> save -> reload -> evaluate/predict, and exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import first_members
from safetensors.numpy import load_file

from facegender import evaluate, predict, train
from facegender.cli import main
from facegender.errors import FaceGenderError


def test_trained_model_separates_held_out_faces(trained_model, celeba):
    """Criterion 1: 4,000 faces x 2 epochs, then >= 85% on 1,000 val faces it never saw."""
    r = evaluate(celeba / "val.tar", trained_model, limit=1000, detect=False)
    assert r.metrics["n"] == 1000
    assert r.metrics["accuracy"] >= 0.85, r.summary()
    assert r.metrics["roc_auc"] >= 0.90
    cfg = json.loads((trained_model / "config.json").read_text())
    assert cfg["labels"] == ["female", "male"]
    assert cfg["data"]["train"]["images"] == 4000
    assert (trained_model / "history.csv").is_file() and (trained_model / "curves.png").is_file()
    assert 0.05 < cfg["temperature"] < 20


def test_predict_gives_higher_prob_male_to_men(trained_model, celeba, tmp_path):
    """Criterion 2: label order pinned end to end, through the saved folder and the CLI."""
    from conftest import extract_members

    names = first_members(celeba / "val.tar", 40, ("val/male/", "val/female/"))
    extract_members(celeba / "val.tar", names, tmp_path)
    out = tmp_path / "pred.csv"
    code = main(["predict", str(tmp_path / "val"), "--model", str(trained_model),
                 "--no-detect", "--format", "csv", "--csv", str(out)])
    assert code == 0
    import csv

    rows = {r["path"].split(str(tmp_path) + "/")[1]: r for r in csv.DictReader(open(out))}
    male = [float(rows[n]["prob_male"]) for n in names if "/male/" in n]
    female = [float(rows[n]["prob_male"]) for n in names if "/female/" in n]
    assert np.mean(male) > np.mean(female) + 0.2
    for n in names:  # the label column agrees with the probabilities
        r = rows[n]
        assert r["label"] == ("male" if float(r["prob_male"]) >= 0.5 else "female")
        assert abs(float(r["prob_male"]) + float(r["prob_female"]) - 1) < 1e-5


def test_python_api_returns_objects(trained_model, celeba):
    names = first_members(celeba / "val.tar", 2, ("val/male/",))
    from facegender.io.sources import read_source

    samples = [s for s in read_source(celeba / "val.tar").samples if s.ref.split("::")[1] in names]
    results = predict(samples, trained_model, detect=False)
    assert len(results) == 2 and all(r.ok and len(r.faces) == 1 for r in results)
    assert results[0].faces[0].label in ("male", "female")


def _tiny(tmp_path, name, **kw):
    from conftest import CELEBA

    args = dict(arch="mobilenetv3_small", input_size=32, epochs=2, batch_size=32, limit=192,
                val_limit=64, seed=3, workers=1, progress=False, val=CELEBA / "val.tar")
    args.update(kw)
    return train(CELEBA / "train.tar", tmp_path / name, **args)


def test_resume_gives_identical_weights(tmp_path, celeba):
    """Criterion 3: interrupt after epoch 1, resume, and land on the uninterrupted weights."""
    _tiny(tmp_path, "straight")

    def stop_after_first(epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt

    part = _tiny(tmp_path, "resumed", callbacks=[stop_after_first])
    assert part.interrupted and len(part.history) == 1
    done = _tiny(tmp_path, "resumed", resume=True)
    assert [r["epoch"] for r in done.history] == [1, 2]
    a = load_file(str(tmp_path / "straight/checkpoints/last/model.safetensors"))
    b = load_file(str(tmp_path / "resumed/checkpoints/last/model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_refuses_to_overwrite_a_run(tmp_path, celeba):
    _tiny(tmp_path, "run", epochs=1)
    with pytest.raises(FaceGenderError, match="--resume"):
        _tiny(tmp_path, "run", epochs=1)


def test_broken_training_images_are_skipped_and_listed(tmp_path, celeba):
    from conftest import extract_members

    names = first_members(celeba / "train.tar", 24, ("train/male/", "train/female/"))
    extract_members(celeba / "train.tar", names, tmp_path / "data")
    (tmp_path / "data/train/male/broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (tmp_path / "data/train/female/empty.jpg").write_bytes(b"")
    res = train(tmp_path / "data" / "train", tmp_path / "m", input_size=32, epochs=1,
                batch_size=16, val_fraction=0.25, progress=False, workers=0)
    reasons = dict(res.skipped)
    assert any(k.endswith("broken.jpg") for k in reasons) or len(reasons) >= 1
    assert (tmp_path / "m" / "skipped.csv").is_file()
    assert "empty" in " ".join(reasons.values()) or "corrupt" in " ".join(reasons.values()) \
        or "truncated" in " ".join(reasons.values())


def test_single_class_training_is_a_clear_error(tmp_path, celeba, capsys):
    from conftest import extract_members

    names = first_members(celeba / "train.tar", 10, ("train/male/",))
    extract_members(celeba / "train.tar", names, tmp_path / "data")
    code = main(["train", str(tmp_path / "data"), "--out", str(tmp_path / "m"), "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "no 'female' images" in err and "Traceback" not in err
