"""The base install predicts without torch: a fresh venv gets `pip install facegender` (base
dependencies only) and runs `facegender predict` on an exported model and a real face."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import extract_members, first_members

ROOT = Path(__file__).resolve().parents[1]
# pip's messages when it cannot reach an index: an offline machine, not a bug in the package.
OFFLINE_SIGNS = ("No matching distribution", "Could not find a version", "NewConnectionError",
                 "Temporary failure in name resolution", "Network is unreachable")


@pytest.fixture(scope="module")
def venv_bin(tmp_path_factory) -> Path:
    """bin/ of a new venv holding the base install (measured: ~30 s with a warm pip cache)."""
    work = tmp_path_factory.mktemp("torchfree")
    # Build from a clean copy: an in-tree build leaves build/ behind, and a stale build/lib
    # could ship modules that no longer exist.
    src = work / "src"
    shutil.copytree(ROOT / "facegender", src / "facegender",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).is_file():
            shutil.copy(ROOT / name, src / name)
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    r = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                        "--disable-pip-version-check", str(src)],
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        if any(s in r.stderr for s in OFFLINE_SIGNS):
            pytest.skip(f"pip cannot reach a package index: {r.stderr.strip()[-300:]}")
        pytest.fail(f"pip install of the base package failed:\n{r.stderr[-3000:]}")
    return venv / "bin"


@pytest.fixture(scope="module")
def onnx_model(trained_model: Path, celeba: Path, tmp_path_factory) -> Path:
    """The session model with model.onnx, stripped of its torch weights."""
    pytest.importorskip("torch")
    from facegender.infer.export import export
    from facegender.models import modelfile

    folder = tmp_path_factory.mktemp("torchfree-model") / "model"
    folder.mkdir()
    for name in (modelfile.CONFIG_NAME, modelfile.WEIGHTS_NAME):
        shutil.copy(trained_model / name, folder / name)
    export(folder, ["onnx"], parity_data=celeba / "val.tar", parity_size=50)
    (folder / modelfile.WEIGHTS_NAME).unlink()  # proves the ONNX file alone is enough
    return folder


def _face(celeba: Path, dest: Path, folder: str) -> Path:
    with tarfile.open(celeba / "val.tar") as tf:
        for m in tf:
            if m.isfile() and m.name.startswith(f"val/{folder}/"):
                out = dest / Path(m.name).name
                out.write_bytes(tf.extractfile(m).read())
                return out
    raise AssertionError(f"no val/{folder} image in the tar")


@pytest.mark.slow  # 42-75 s measured on a busy 2-core machine: a fresh venv + pip install
def test_predict_without_torch(venv_bin: Path, onnx_model: Path, celeba: Path, tmp_path: Path):
    py = str(venv_bin / "python")
    no_torch = subprocess.run([py, "-c", "import torch"], capture_output=True, text=True)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr

    male, female = _face(celeba, tmp_path, "male"), _face(celeba, tmp_path, "female")
    r = subprocess.run([str(venv_bin / "facegender"), "predict", "--model", str(onnx_model),
                        str(male), str(female), "--no-detect", "--format", "json"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["error"] for row in rows] == [None, None]
    assert all(row["label"] in ("male", "female") for row in rows)
    assert abs(rows[0]["prob_male"] + rows[0]["prob_female"] - 1) < 1e-5
    # The same figures as the ONNX backend gives in this process.
    from facegender.infer.predictor import Predictor

    ref = Predictor(onnx_model, backend="onnx", detect=False).predict([male, female])
    assert [row["prob_male"] for row in rows] == pytest.approx(
        [res.faces[0].prob_male for res in ref], abs=1e-5)

    # The predict path, imported in the venv, never pulls torch in.
    probe = ("import sys, facegender.infer.predictor, facegender.infer.backends, facegender.cli; "
             "print('torch' in sys.modules)")
    r = subprocess.run([py, "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr


@pytest.mark.slow
def test_clear_error_without_onnx_or_torch(venv_bin: Path, trained_model: Path, celeba: Path,
                                           tmp_path: Path):
    from facegender.models import modelfile

    folder = tmp_path / "model"
    folder.mkdir()
    for name in (modelfile.CONFIG_NAME, modelfile.WEIGHTS_NAME):
        shutil.copy(trained_model / name, folder / name)
    face = _face(celeba, tmp_path, "male")
    r = subprocess.run([str(venv_bin / "facegender"), "predict", "--model", str(folder),
                        str(face), "--no-detect"], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path)
    assert r.returncode == 2
    assert "torch is not installed" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("model", [None, "accurate"])
def test_shipped_models_predict_example_photo_without_torch(venv_bin: Path, tmp_path: Path, model):
    """A fresh base install, no torch, no file outside the package: each shipped model (the
    default, and `--model accurate`) labels every face of the example group photo."""
    photo = ROOT / "examples" / "group.jpg"
    extra = ["--model", model] if model else []
    r = subprocess.run([str(venv_bin / "facegender"), "predict", str(photo), "--format", "json",
                        *extra], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == 4 and all(row["error"] is None for row in rows)
    assert all(row["label"] in ("male", "female") and 0 <= row["prob_male"] <= 1 for row in rows)
    info = subprocess.run([str(venv_bin / "facegender"), "info", *(extra[1:] or [])],
                          capture_output=True, text=True, cwd=tmp_path)
    assert info.returncode == 0 and "site-packages" in json.loads(info.stdout)["path"]
    if model:
        assert json.loads(info.stdout)["arch"] == "faceres_fusion"


@pytest.mark.slow
def test_evaluate_without_torch_or_sklearn(venv_bin: Path, celeba: Path, tmp_path: Path):
    """`facegender evaluate` works on the base install (no torch, scikit-learn, scipy or
    matplotlib) and gives the same numbers as the full install."""
    py = str(venv_bin / "python")
    for heavy in ("torch", "sklearn", "scipy", "matplotlib"):
        r = subprocess.run([py, "-c", f"import {heavy}"], capture_output=True, text=True)
        assert r.returncode != 0, f"{heavy} is in the base install"
    names = first_members(celeba / "val.tar", 20, ("val/female/", "val/male/"))
    extract_members(celeba / "val.tar", names, tmp_path / "faces")
    data, out = tmp_path / "faces" / "val", tmp_path / "eval"
    r = subprocess.run([str(venv_bin / "facegender"), "evaluate", str(data), "--no-detect",
                        "--json", "--out", str(out)],
                       capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["n"] == 40
    assert "no plots" in r.stderr and "facegender[report]" in r.stderr
    assert (out / "metrics.json").is_file() and (out / "predictions.csv").is_file()
    assert "facegender[report]" in (out / "report.md").read_text()
    # The full report needs the [report] extra: said at once, before any prediction work.
    r = subprocess.run([str(venv_bin / "facegender"), "evaluate", str(data), "--no-detect",
                        "--report", str(tmp_path / "report")],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2 and 'pip install "facegender[report]"' in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "report").exists()

    from facegender.report.evaluate import evaluate

    ref = evaluate(data=data, detect=False, backend="onnx").metrics
    for key in ("accuracy", "balanced_accuracy", "roc_auc", "average_precision_male", "ece"):
        assert got[key] == pytest.approx(ref[key], abs=1e-6), key
    assert got["confusion_matrix"] == ref["confusion_matrix"]


@pytest.mark.slow
def test_base_install_size(venv_bin: Path):
    """The torch-free install (every package in the venv, pip included) stays under 300 MB.
    (The accurate model's ONNX file stores its weights in fp16 since it gained a second face
    network, 2026-12-06: 309 MB measured before that.)"""
    site = next((venv_bin.parent / "lib").glob("python*/site-packages"))
    total = sum(f.stat().st_size for f in site.rglob("*") if f.is_file() and not f.is_symlink())
    assert total < 300e6, f"base install is {total / 1e6:.0f} MB"
