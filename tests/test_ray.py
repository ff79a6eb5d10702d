"""Batch prediction on Ray (loopback, one local Ray session of 2 CPUs for the module): 2,000
real faces as 20 shards plus a folder (with a broken file) and a missing path, on 2 workers.
The Parquet rows equal single-process predict's, and a driver killed midway then restarted on
the same folder ends with exactly the same rows: none lost, none twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import extract_members, first_members

from facegender import Predictor, predict_ray
from facegender.cli import main
from facegender.errors import FaceGenderError
from facegender.infer.records import CSV_FIELDS, flatten
from facegender.io.shards import write_shards
from facegender.io.sources import read_source, stratified_limit

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def inputs(celeba, tmp_path_factory) -> list[str]:
    tmp = tmp_path_factory.mktemp("raydata")
    faces = stratified_limit(read_source(celeba / "val.tar").samples, 2000, 1)
    res = write_shards(faces, tmp / "shards", maxcount=100)
    assert len(res.files) == 20
    folder = tmp / "folder"
    extract_members(celeba / "val.tar", first_members(celeba / "val.tar", 15,
                                                      ("val/male/", "val/female/")), folder)
    (folder / "val" / "male" / "broken.jpg").write_bytes(b"<html>not a photo</html>")
    (folder / "val" / "male" / ".hidden.jpg").write_bytes(b"")  # ignored, with its own row
    return [res.pattern, str(folder), str(tmp / "missing.jpg")]


def _key(r: dict) -> tuple:
    return r["path"], r["face"]


def _parquet_rows(out: Path) -> list[dict]:
    files = sorted(out.glob("part-*.parquet"))
    assert files
    for f in files:
        assert pq.read_schema(f).names == CSV_FIELDS  # the single-process CSV's columns
    return [r for f in files for r in pq.read_table(f).to_pylist()]


@pytest.fixture(scope="module")
def single(inputs) -> list[dict]:
    """Single-process predict, flattened like the CSV (full precision)."""
    return [flatten(r) for res in Predictor().iter_predict(inputs) for r in res.records()]


@pytest.fixture(scope="module")
def ray_run(ray_address, inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("rayout") / "out"
    res = predict_ray(inputs, out, workers=2, partition_size=100, progress=False)
    return out, res


def test_ray_rows_equal_single_process_rows(single, ray_run):
    out, res = ray_run
    rows = _parquet_rows(out)
    assert len(rows) == len(single) == res.rows
    by_key = {_key(r): r for r in rows}
    assert len(by_key) == len(rows)  # one row per face (or per faceless / failed image)
    assert by_key.keys() == {_key(r) for r in single}
    # 2,000 shard faces, 30 folder faces + the HTML file + the hidden one, the missing path
    assert res.images == 2000 + 32 + 1 and res.failed == 2  # the HTML file and the missing path
    for s in single:
        r = by_key[_key(s)]
        for k in ("label", "unsure", "face_source", "error"):
            assert r[k] == s[k], (k, s["path"])
        for k in ("prob_male", "prob_female", "score", "det_score", "box_x", "box_y", "box_w",
                  "box_h"):
            assert (r[k] is None) == (s[k] is None), (k, s["path"])
            if s[k] is not None:
                assert abs(r[k] - s[k]) <= 1e-6, (k, s["path"], r[k], s[k])
    missing = [r for r in rows if r["path"].endswith("missing.jpg")]
    assert len(missing) == 1 and "no such file" in missing[0]["error"]


def test_two_workers_each_held_one_model(ray_run):
    _, res = ray_run
    assert res.partitions == 21 and res.skipped_partitions == 0  # 20 shards + the folder's
    pids = {w["pid"] for w in res.workers}
    assert len(pids) == 2
    assert sorted(w["partition"] for w in res.workers) == list(range(21))


def test_killed_run_restarts_without_loss_or_duplicates(ray_address, inputs, ray_run, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "facegender", "predict", "--engine", "ray", *inputs,
         "--out", str(out), "--ray-address", ray_address, "--ray-workers", "2",
         "--partition-size", "100"], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not list(out.glob("part-*.parquet")) and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # the driver dies mid-job, as a lost node or kill -9 does
    proc.wait(30)
    done_before = len(list(out.glob("part-*.parquet")))
    assert 1 <= done_before < 21, proc.stderr.read().decode()[-2000:]

    res = predict_ray(inputs, out, workers=2, partition_size=100, progress=False)
    assert res.skipped_partitions >= done_before
    assert res.skipped_partitions + len(res.workers) == 21
    rows = _parquet_rows(out)
    reference = _parquet_rows(ray_run[0])
    assert len(rows) == len(reference)
    assert sorted(map(_key, rows)) == sorted(map(_key, reference))  # exactly one row per face
    assert not list(out.glob(".part-*.tmp"))  # a killed writer's temp file is cleared


def test_finished_run_is_not_redone_and_options_must_match(ray_run, inputs, tmp_path, capsys):
    out, _ = ray_run
    again = predict_ray(inputs, out, workers=2, partition_size=100, progress=False)
    assert again.skipped_partitions == 21 and again.images == 0
    with pytest.raises(FaceGenderError, match="other options"):
        predict_ray(inputs, out, tta=True, partition_size=100, progress=False)
    with pytest.raises(FaceGenderError, match="other inputs"):
        predict_ray(inputs[:1], out, partition_size=100, progress=False)
    csv_path = tmp_path / "all.csv"
    code = main(["predict", "--engine", "ray", *inputs, "--out", str(out), "--partition-size",
                 "100", "--csv", str(csv_path)])
    assert code == 0  # nothing was redone, so nothing failed in this run
    lines = csv_path.read_text().splitlines()
    assert lines[0].split(",") == CSV_FIELDS and len(lines) == 1 + len(_parquet_rows(out))
    assert main(["predict", "--engine", "ray", *inputs]) == 2  # no --out: a clear error
    assert "give --out DIR" in capsys.readouterr().err
