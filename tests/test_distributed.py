"""Training under torchrun: 2 processes (gloo, loopback) on 2,000 real faces read from tar
shards, group-balanced draws split over the ranks. The ranks hold identical weights after every
optimizer step, rank 0 alone speaks and writes, the model folder is the single-process one, and
a run resumes on a different number of processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from facegender.io.shards import write_shards
from facegender.io.sources import read_source, stratified_limit

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "ddp_worker.py"
RECIPE = dict(arch="mobilenetv3_small", input_size=64, epochs=1, batch_size=32, lr=3e-3,
              augment="light", balance=["source"], workers=0, threads=1, progress=False)


@pytest.fixture(scope="module")
def faces(tmp_path_factory, celeba) -> str:
    """2,000 training + 400 validation celeba faces as 5 shuffled shards; the brace pattern."""
    train = stratified_limit(read_source(celeba / "train.tar").samples, 2000, 0)
    val = stratified_limit(read_source(celeba / "val.tar").samples, 400, 0)
    res = write_shards(train + val, tmp_path_factory.mktemp("shards") / "faces", maxcount=500,
                       shuffle=0)
    assert res.samples == 2400 and len(res.files) == 5
    return res.pattern


@pytest.fixture(scope="module")
def two_ranks(faces, tmp_path_factory) -> tuple[Path, str]:
    """One torchrun job of 2 processes; (its folder, its stderr)."""
    run = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RANK", None)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(WORKER), faces, str(run / "model"), json.dumps(RECIPE)],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run, proc.stderr


def test_ranks_hold_identical_weights_after_every_step(two_ranks):
    run, _ = two_ranks
    steps = [json.loads((run / f"steps-{r}.json").read_text()) for r in (0, 1)]
    # 2,000 draws split over 2 ranks, 16 images a step each (global batch 32): 63 steps
    assert len(steps[0]) == len(steps[1]) == 63
    assert steps[0] == steps[1]
    assert len(set(steps[0])) == 63  # the weights moved at every step


def test_only_rank_zero_speaks_and_writes(two_ranks):
    run, err = two_ranks
    assert err.count("epoch 1/1:") == 1
    assert "2 processes (gloo), 16 images a step each" in err
    cfg = json.loads((run / "model" / "config.json").read_text())
    assert cfg["recipe"]["world_size"] == 2
    history = (run / "model" / "history.csv").read_text().splitlines()
    assert len(history) == 2  # header + the one epoch, written once


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def _shapes(weights: Path) -> dict[str, tuple]:
    with safe_open(str(weights), "np") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118


def test_model_folder_is_the_single_process_contract(two_ranks, trained_model, celeba):
    """The session model was trained by one process with the same architecture and size."""
    from facegender import Predictor

    model = two_ranks[0] / "model"
    optional = {"skipped.csv", "model.onnx", "model.int8.onnx"}  # data- or export-dependent
    assert _files(model) - optional == _files(trained_model) - optional
    a = json.loads((model / "config.json").read_text())
    b = json.loads((trained_model / "config.json").read_text())
    assert a.keys() == b.keys()
    assert a["labels"] == b["labels"] and a["input_size"] == b["input_size"] == 64
    assert a["metrics"]["val"].keys() == b["metrics"]["val"].keys()
    assert _shapes(model / "model.safetensors") == _shapes(trained_model / "model.safetensors")
    face = read_source(celeba / "val.tar").samples[0]
    res = Predictor(model, backend="torch").predict([face])[0]
    assert res.ok and len(res.faces) == 1 and 0 <= res.faces[0].prob_male <= 1


def test_resume_on_a_changed_world_size(two_ranks, faces, tmp_path, capsys):
    """The 2-process run's checkpoint goes on for a second epoch in one process."""
    from facegender import train

    run = tmp_path / "model"
    shutil.copytree(two_ranks[0] / "model", run)
    first = (run / "history.csv").read_text().splitlines()
    res = train(faces, run, **{**RECIPE, "epochs": 2}, resume=True)
    err = capsys.readouterr().err
    assert "resuming a run of 2 process(es) on 1" in err
    assert "resuming from epoch 1" in err
    lines = (run / "history.csv").read_text().splitlines()
    assert lines[:2] == first and len(lines) == 3
    assert [r["epoch"] for r in res.history] == [1, 2]
    state = json.loads((run / "checkpoints" / "last" / "state.json").read_text())
    assert state["epoch"] == 2 and state["world_size"] == 1
