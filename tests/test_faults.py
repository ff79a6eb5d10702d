"""Faults a user or the machine throws at a run: Ctrl-C mid-run, a tampered model folder, threads
sharing one Predictor, file names that are not UTF-8. Uses the shipped fast model (no training)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facegender import Predictor
from facegender.cli import main
from facegender.errors import FaceGenderError
from facegender.io.writers import PARTIAL_PREFIX, RowWriter
from facegender.models import modelfile

ROOT = Path(__file__).resolve().parents[1]
FACE = ROOT / "examples" / "fairface_0004.jpg"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


# --------------------------------------------------------------------------- output survives


def test_writer_streams_to_a_temp_file_and_swaps_it_in(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("stale,old\n1,2\n")
    w = RowWriter(target, "csv", ["path", "error"])
    w.write([{"path": "a.jpg", "error": None}])
    # Before close: the rows are on disk in the temp file, the target is untouched.
    assert "a.jpg" in Path(w.temp_path).read_text() and target.read_text().startswith("stale")
    w.close()
    assert not Path(w.temp_path).exists()
    assert list(csv.DictReader(target.open())) == [{"path": "a.jpg", "error": ""}]
    assert oct(target.stat().st_mode & 0o777) != oct(0o600)  # not mkstemp's private mode


def test_writer_marks_partial_output(tmp_path):
    for fmt in ("csv", "json"):
        target = tmp_path / f"out.{fmt}"
        with pytest.raises(KeyboardInterrupt), RowWriter(target, fmt, ["path", "label", "error"]) as w:
            w.write([{"path": "a.jpg", "label": "male", "error": None}])
            raise KeyboardInterrupt
        rows = (json.loads(target.read_text()) if fmt == "json"
                else list(csv.DictReader(target.open())))
        assert rows[0]["path"] == "a.jpg"
        assert rows[-1]["error"].startswith(PARTIAL_PREFIX) and "interrupted after 1" in rows[-1]["error"]


def test_names_that_are_not_utf8_are_written(tmp_path):
    """os.fsdecode of a name with bytes 0xff 0xfe gives lone surrogates: the old CSV writer
    raised UnicodeEncodeError on them and lost every later row."""
    name = os.fsdecode(b"/photos/bad\xff\xfe.jpg")
    bad_surrogate = "x\ud800y.jpg"  # not even a file name: a lone surrogate from JSON
    rows = [{"path": name, "error": None}, {"path": bad_surrogate, "error": "e"},
            {"path": "line\nbreak.jpg", "error": None}]
    for fmt in ("csv", "json"):
        target = tmp_path / f"o.{fmt}"
        with RowWriter(target, fmt) as w:
            w.write(rows)
        text = target.read_bytes().decode("utf-8")  # valid UTF-8, whatever the names
        back = json.loads(text) if fmt == "json" else list(csv.DictReader(io.StringIO(text)))
        assert back[0]["path"] == "/photos/bad\\xff\\xfe.jpg"
        assert len(back) == 3 and back[2]["path"] == "line\nbreak.jpg"


def _wait_for_rows(folder: Path, n: int, proc: subprocess.Popen, timeout: float = 60) -> int:
    """Rows in the CSV's temporary file once it holds at least n."""
    end = time.time() + timeout
    while time.time() < end:
        assert proc.poll() is None, proc.communicate()
        for tmp in folder.glob(".out.csv.*.tmp"):
            rows = tmp.read_text().count("\n") - 1
            if rows >= n:
                return rows
        time.sleep(0.05)
    raise AssertionError("no rows appeared")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_predict_keeps_finished_rows(tmp_path, sig):
    photos = tmp_path / "photos"
    photos.mkdir()
    n = 4000  # hard links: many inputs for the cost of one file; the run must outlast the wait
    face = tmp_path / "face.jpg"  # linked from a copy: the repo's file stays under the link limit
    shutil.copyfile(FACE, face)
    for i in range(n):
        os.link(face, photos / f"p{i:04d}.jpg")
    out = tmp_path / "out"
    out.mkdir()
    (out / "out.csv").write_text("path,label\nold.jpg,male\n")  # must not survive looking current
    proc = subprocess.Popen(
        [sys.executable, "-m", "facegender", "predict", str(photos), "--csv", str(out / "out.csv"),
         "--batch-size", "4", "--format", "csv", "--threads", "1"],
        cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # A shell's background job (`pytest ... &`) ignores SIGINT and its children inherit
        # that; the CLI rightly keeps an inherited SIG_IGN, so give it the terminal's default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = _wait_for_rows(out, 8, proc)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "marked partial" in stderr and "Traceback" not in stderr
    rows = list(csv.DictReader((out / "out.csv").open()))
    assert rows[-1]["error"].startswith(PARTIAL_PREFIX)
    done = rows[:-1]
    assert seen <= len(done) < n and all(r["path"].endswith(".jpg") for r in done)
    assert "old.jpg" not in (out / "out.csv").read_text()
    assert not list(out.glob(".out.csv.*"))  # no temp file left behind
    assert PARTIAL_PREFIX in stdout.splitlines()[-1]  # stdout's CSV says so too


# --------------------------------------------------------------------------- threads


def test_threads_sharing_a_predictor_keep_their_own_options():
    """Half the calls ask for flip TTA, half not, on one shared Predictor from 6 threads: each
    call's result equals a single-threaded call with its own option."""
    img = Image.open(FACE).convert("RGB")
    p = Predictor("fast", threads=1)
    ref = {tta: p.predict([img], tta=tta, workers=1)[0].faces[0].prob_male for tta in (False, True)}
    assert abs(ref[True] - ref[False]) > 1e-4  # otherwise the test could not tell them apart
    got: list[tuple[bool, float]] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        for i in range(10):
            tta = (i + k) % 2 == 0
            pm = p.predict([img], tta=tta, workers=1)[0].faces[0].prob_male
            with lock:
                got.append((tta, pm))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(got) == 60
    wrong = [(tta, pm) for tta, pm in got if abs(pm - ref[tta]) > 1e-6]
    assert not wrong, f"{len(wrong)} of 60 calls got another call's option"
    assert p.tta is False  # per-call options never touch the defaults


# --------------------------------------------------------------------------- model folder


@pytest.fixture(scope="module")
def sealed(tmp_path_factory) -> Path:
    """A copy of the fast model saved through save_config, so it carries its integrity record."""
    folder = tmp_path_factory.mktemp("model") / "fast"
    shutil.copytree(modelfile.shipped_model_dir("fast"), folder)
    modelfile.save_config(modelfile.load_config(folder), folder)
    return folder


def _edit_config(folder: Path, change) -> None:
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    change(cfg)
    path.write_text(json.dumps(cfg))


def _swap(cfg):
    cfg["labels"] = cfg["labels"][::-1]


def _set(key, value):
    def change(cfg):
        cfg[key] = value
    return change


def _drop(*keys):
    def change(cfg):
        d = cfg
        for k in keys[:-1]:
            d = d[k]
        del d[keys[-1]]
    return change


def _file(name, data):
    def damage(folder):
        (folder / name).write_bytes(data(folder / name) if callable(data) else data)
    return damage


TAMPERED = {
    # case: (damage the folder, words the error must contain)
    "labels_swapped": (lambda f: _edit_config(f, _swap), ["labels", "edited by hand"]),
    "labels_wrong": (lambda f: _edit_config(f, _set("labels", ["man", "woman"])), ["labels"]),
    "labels_three": (lambda f: _edit_config(f, _set("labels", ["female", "male", "x"])), ["labels"]),
    "threshold_2": (lambda f: _edit_config(f, _set("threshold", 2)), ["threshold"]),
    "threshold_0": (lambda f: _edit_config(f, _set("threshold", 0)), ["threshold"]),
    "temperature_0": (lambda f: _edit_config(f, _set("temperature", 0)), ["temperature"]),
    "temperature_negative": (lambda f: _edit_config(f, _set("temperature", -1)), ["temperature"]),
    "temperature_string": (lambda f: _edit_config(f, _set("temperature", "1")), ["temperature"]),
    "mean_one_number": (lambda f: _edit_config(f, _set("mean", [0.5])), ["mean"]),
    "mean_scalar": (lambda f: _edit_config(f, _set("mean", 0.5)), ["mean"]),
    "std_zero": (lambda f: _edit_config(f, _set("std", [0.2, 0, 0.2])), ["std[1]"]),
    "crop_missing": (lambda f: _edit_config(f, _drop("crop")), ["crop", "missing"]),
    "crop_margin_missing": (lambda f: _edit_config(f, _drop("crop", "margin")), ["crop.margin"]),
    "crop_unknown_key": (lambda f: _edit_config(f, lambda c: c["crop"].update(zoom=2)), ["crop"]),
    "arch_missing": (lambda f: _edit_config(f, _drop("arch")), ["arch", "missing"]),
    "input_size_missing": (lambda f: _edit_config(f, _drop("input_size")), ["input_size"]),
    "input_size_huge": (lambda f: _edit_config(f, _set("input_size", 10**6)), ["input_size"]),
    "unsure_band_1": (lambda f: _edit_config(f, _set("unsure_band", 1)), ["unsure_band"]),
    "config_list": (_file("config.json", b"[1, 2, 3]"), ["must be a JSON object"]),
    "config_binary": (_file("config.json", bytes(range(256)) * 4), ["not UTF-8"]),
    "config_nan": (lambda f: (f / "config.json").write_text(re.sub(
        r'"temperature": [0-9.eE+-]+', '"temperature": NaN', (f / "config.json").read_text())),
        ["invalid JSON"]),
    "config_truncated": (_file("config.json", lambda p: p.read_bytes()[:100]), ["invalid JSON"]),
    "config_is_fifo": (lambda f: ((f / "config.json").unlink(), os.mkfifo(f / "config.json")),
                       ["named pipe"]),
    "pickle_as_safetensors": (_file("model.safetensors", b"\x80\x04\x95" + b"\0" * 64 + b"."),
                              ["model.safetensors"]),
    "truncated_safetensors": (_file("model.safetensors", lambda p: p.read_bytes()[:5000]),
                              ["model.safetensors"]),
    "garbage_onnx": (_file("model.onnx", b"this is not a protobuf" * 100), ["model.onnx"]),
    "onnx_replaced": (lambda f: shutil.copy(f / "model.int8.onnx", f / "model.onnx"),
                      ["model.onnx", "replaced or damaged"]),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_tampered_model_folder_is_refused(sealed, tmp_path, case):
    folder = tmp_path / "m"
    shutil.copytree(sealed, folder)
    damage, words = TAMPERED[case]
    damage(folder)
    with pytest.raises(FaceGenderError) as exc:
        Predictor(folder)
    msg = str(exc.value)
    assert str(folder) in msg, msg  # names the file
    for w in words:
        assert w in msg, msg


def test_tampered_folder_through_the_cli_is_one_line(sealed, tmp_path, capsys):
    folder = tmp_path / "m"
    shutil.copytree(sealed, folder)
    _edit_config(folder, _swap)
    code = main(["predict", str(FACE), "--model", str(folder)])
    err = capsys.readouterr().err
    assert code == 2 and "edited by hand" in err and "Traceback" not in err


def test_sealed_folder_loads_and_predicts_as_the_original(sealed):
    img = Image.open(FACE)
    a = Predictor("fast").predict([img])[0]
    b = Predictor(sealed).predict([img])[0]
    assert [f.label for f in a.faces] == [f.label for f in b.faces]
    np.testing.assert_allclose([f.prob_male for f in a.faces], [f.prob_male for f in b.faces])


def test_shipped_models_carry_their_integrity():
    for name in ("fast", "accurate"):
        cfg = modelfile.verify_files(name)
        assert cfg.integrity["files"].keys() >= {"model.safetensors", "model.onnx"}


def _paths(node, prefix=()):
    """Every key path and list index in a config, the config itself first."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def test_quick_config_check_never_passes_what_jsonschema_refuses():
    # validate_config trusts fastjsonschema's "valid" without asking jsonschema (start-up time);
    # so over many seeded breakages of both shipped configs, a config the quick check passes
    # must also pass jsonschema. (The other way round is harmless: jsonschema then decides.)
    jsonschema = pytest.importorskip("jsonschema")
    ref = jsonschema.Draft202012Validator(modelfile.CONFIG_SCHEMA)
    rng = np.random.default_rng(0)
    values = [None, True, False, -1, 0, 1, 2, 0.5, 1.0, 1e9, -0.5, "", "x", "male", [], {},
              [0.5], [0.5, 0.5, 0.5], ["female", "male"], {"x": 1}, 10**6, "detector"]
    seen = {"both_valid": 0, "both_invalid": 0, "quick_stricter": 0}
    for name in ("fast", "accurate"):
        base = json.loads((modelfile.shipped_model_dir(name) / "config.json").read_text())
        # Paths the schema constrains (recipe, data and metrics are free-form records).
        paths = [p for p in _paths(base) if p and p[0] not in ("recipe", "data", "metrics")]
        for _ in range(600):
            cfg = json.loads(json.dumps(base))
            for _ in range(int(rng.integers(1, 3))):
                path = paths[int(rng.integers(len(paths)))]
                parent = cfg
                try:
                    for k in path[:-1]:
                        parent = parent[k]
                    if rng.random() < 0.25 and isinstance(parent, dict):
                        parent.pop(path[-1], None)
                    else:
                        parent[path[-1]] = values[int(rng.integers(len(values)))]
                except (KeyError, IndexError, TypeError):
                    continue  # an earlier change removed or replaced this path
            quick, full = modelfile.config_is_valid(cfg), ref.is_valid(cfg)
            assert full or not quick, f"quick check passed a config jsonschema refuses: {cfg}"
            seen["both_valid" if quick else "quick_stricter" if full else "both_invalid"] += 1
    # The breakages reached both verdicts, so the agreement above was tested, not assumed.
    assert seen["both_valid"] >= 50 and seen["both_invalid"] >= 500, seen
    assert seen["quick_stricter"] <= 0.02 * sum(seen.values()), seen
