"""`train --recipe head|tail` on real faces from two sources: a model folder that carries the dlib
crop and preprocessing, predicts photos through the detector, exports to ONNX, and a feature
store that a second run reuses instead of recomputing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import DATA, ROOT, need_data

pytest.importorskip("torch")

from facegender import Predictor  # noqa: E402
from facegender.models.pretrained import package_dir  # noqa: E402
from facegender.training.heads import train_head  # noqa: E402

if package_dir("face_recognition_models") is None:  # its __init__ needs pkg_resources: no import
    pytest.skip("face-recognition-models (the dlib backbone's weights) is not installed",
                allow_module_level=True)

SOURCES = [str(DATA / "celeba-gender" / "attributes.csv") + "@2", str(DATA / "aaf" / "labels.csv")]
RECIPE = dict(limit=120, val_per_source=100, views=2, epochs=4, drop=["disputed=1"],
              balance=["source", "Young", "age_group"], progress=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    need_data()
    root = tmp_path_factory.mktemp("heads")
    train_head(SOURCES, root / "tail", recipe="tail", tail_epochs=1, cache=root / "store", **RECIPE)
    return root / "tail", root / "store"


def test_model_folder_carries_its_input_contract(run):
    folder, _ = run
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["arch"] == "dlib_resnet" and cfg["input_size"] == 150
    assert len(cfg["crop"]["template"]) == 5 and cfg["crop"]["landmarks"] == "dlib5" \
        and cfg["crop"]["detect"] is True  # aligned as dlib aligns (faces/landmarks.py)
    assert cfg["recipe"]["recipe"] == "tail" and cfg["recipe"]["frozen_blocks"] == 10
    assert cfg["recipe"]["pretrained"]["source_sha256"].startswith("55533b28")
    sources = {s["name"]: s for s in cfg["data"]["sources"]}
    assert sources["celeba-gender"]["weight"] == 2.0 and sources["aaf"]["test_split_unused"] == 3185
    assert sources["celeba-gender"]["dropped"] > 0  # disputed labels left training
    val = cfg["metrics"]["val"]
    assert set(val["per_source"]) == {"celeba-gender", "aaf"}
    # 240 training faces are enough for an identity backbone to read gender well.
    assert val["accuracy"] > 0.8, val
    assert 0 < cfg["temperature"] < 10


def test_predicts_a_group_photo_and_exports(run):
    folder, _ = run
    res = Predictor(folder, backend="torch").predict(ROOT / "examples" / "group.jpg")[0]
    assert len(res.faces) == 4 and all(f.label in ("male", "female") for f in res.faces)
    from facegender.infer.export import export

    out = export(folder, ["onnx"], parity_data=DATA / "celeba-gender" / "val.tar", parity_size=50)
    assert out["onnx"]["parity"]["agreement"] == 1.0
    onnx = Predictor(folder, backend="onnx").predict(ROOT / "examples" / "group.jpg")[0]
    assert [f.prob_male for f in onnx.faces] == pytest.approx([f.prob_male for f in res.faces],
                                                               abs=1e-4)


def test_a_second_run_reuses_the_feature_store(run, tmp_path, capsys):
    _, store = run
    parts = sorted(store.rglob("part-*.npz"))
    train_head(SOURCES, tmp_path / "head", recipe="head", cache=store, **RECIPE)
    assert sorted(store.rglob("part-*.npz")) == parts  # nothing recomputed
    assert "features:" not in capsys.readouterr().err
