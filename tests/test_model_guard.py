"""A model folder is checked before any work (issue 25, item 7): every config value an engine
reads is checked against the weights, a folder without an integrity record loads only with a
warning (and --strict refuses it), a weight file that is not a regular file is refused rather
than passed over for another backend. Each case builds its own folder from the shipped fast
model in a temp folder."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import pytest

from facegender import Predictor
from facegender.cli import main
from facegender.errors import FaceGenderError
from facegender.models import modelfile

ROOT = Path(__file__).resolve().parents[1]
FACE = ROOT / "examples" / "fairface_0004.jpg"


def _copy(tmp_path: Path, name: str = "m") -> Path:
    folder = tmp_path / name
    shutil.copytree(modelfile.shipped_model_dir("fast"), folder)
    return folder


def _edit(folder: Path, change) -> None:
    path = folder / modelfile.CONFIG_NAME
    cfg = json.loads(path.read_text())
    change(cfg)
    path.write_text(json.dumps(cfg, indent=2))


def _older_record(cfg: dict) -> None:
    """The integrity record as folders saved before engine values were bound carry it."""
    rec = cfg["integrity"]
    rec.pop("config")
    rec["digest"] = modelfile._digest(cfg["labels"], rec["files"])


def _refused(folder: Path, *words: str, backend: str = "auto") -> str:
    with pytest.raises(FaceGenderError) as exc:
        Predictor(folder, backend=backend)
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


def test_shipped_models_bind_their_engine_values():
    for name in ("fast", "accurate"):
        cfg = modelfile.verify_files(name, strict=True)
        assert set(cfg.integrity["config"]) == set(modelfile.ENGINE_KEYS)
        assert cfg.integrity["config"]["input_size"] == cfg.input_size


@pytest.mark.parametrize("key,value", [("input_size", 224), ("mean", [0.5, 0.5, 0.5]),
                                       ("std", [0.2, 0.2, 0.2]), ("arch", "mobilenetv2")])
def test_an_engine_value_edited_by_hand_names_config_json_and_the_key(tmp_path, key, value):
    folder = _copy(tmp_path)
    _edit(folder, lambda c: c.update({key: value}))
    msg = _refused(folder, str(folder / "config.json"), f"'{key}'", "integrity.config")
    assert repr(value) in msg


@pytest.mark.parametrize("backend,engine_file", [("onnx", "model.onnx"),
                                                 ("int8", "model.int8.onnx")])
def test_input_size_against_the_onnx_graph_without_the_engine_record(tmp_path, backend,
                                                                      engine_file):
    """A folder saved before integrity.config (or a hand-made one): the graph's own input size
    is the check, one line naming config.json and the key, not ONNX Runtime's traceback."""
    folder = _copy(tmp_path)
    _edit(folder, lambda c: (_older_record(c), c.update(input_size=224)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the older record warns; tested below
        _refused(folder, str(folder / "config.json"), "'input_size' is 224",
                 f"{engine_file} takes 32x32", backend=backend)


def test_input_size_against_the_architecture_on_torch(tmp_path):
    pytest.importorskip("torch")
    folder = _copy(tmp_path)
    _edit(folder, lambda c: (_older_record(c), c.update(input_size=224)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _refused(folder, str(folder / "config.json"), "'input_size'", "cydral_gender",
                 backend="torch")


def test_input_size_edit_through_the_cli_is_one_line(tmp_path, capsys):
    folder = _copy(tmp_path)
    _edit(folder, lambda c: c.update(input_size=224))
    assert main(["predict", str(FACE), "--model", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "config.json" in err and "input_size" in err


def test_crop_policy_is_checked_before_any_work(tmp_path):
    folder = _copy(tmp_path)
    _edit(folder, lambda c: c["crop"].update(landmarks="dlib5"))  # a 4-point template
    _refused(folder, str(folder / "config.json"), "'crop'", "template")


def test_folder_without_integrity_warns_and_strict_refuses(tmp_path, capsys):
    folder = _copy(tmp_path)
    # The attack the record is there for: labels swapped and the record deleted.
    _edit(folder, lambda c: (c.pop("integrity"), c.update(labels=c["labels"][::-1])))
    with pytest.warns(UserWarning) as caught:
        Predictor(folder)
    msg = " ".join(str(w.message) for w in caught)
    assert str(folder / "config.json") in msg and "no integrity record" in msg
    for unverified in ("label order", "input_size", "mean", "model.onnx", "model.safetensors"):
        assert unverified in msg, msg
    with pytest.raises(FaceGenderError, match="no integrity record.*strict"):
        Predictor(folder, strict=True)
    assert main(["predict", str(FACE), "--model", str(folder), "--strict"]) == 2
    err = capsys.readouterr().err
    assert "no integrity record" in err and "Traceback" not in err
    # Re-sealed on purpose, it loads quietly even in strict mode.
    modelfile.save_config(modelfile.load_config(folder), folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Predictor(folder, strict=True)


def test_an_older_record_warns_about_the_engine_values_only(tmp_path):
    folder = _copy(tmp_path)
    _edit(folder, _older_record)
    with pytest.warns(UserWarning, match="input_size, mean, std are unverified"):
        Predictor(folder)
    with pytest.raises(FaceGenderError, match="strict"):
        Predictor(folder, strict=True)


def _devzero(path: Path) -> None:
    path.unlink()
    os.symlink("/dev/zero", path)


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _dangling(path: Path) -> None:
    path.unlink()
    os.symlink(path.parent / "nowhere.onnx", path)


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


@pytest.mark.parametrize("name", ["model.onnx", "model.safetensors", "model.int8.onnx"])
@pytest.mark.parametrize("make,words", [(_devzero, "character device"), (_fifo, "named pipe"),
                                        (_dangling, "cannot be read"),
                                        (_directory, "directory")])
def test_weight_file_that_is_not_a_regular_file_is_refused(tmp_path, name, make, words):
    """Never read (a FIFO would block, /dev/zero never ends), never passed over for torch."""
    folder = _copy(tmp_path)
    make(folder / name)
    _refused(folder, str(folder / name), words, "regular files")


def test_a_symlink_to_a_regular_weight_file_is_fine(tmp_path):
    folder = _copy(tmp_path)
    real = tmp_path / "elsewhere.onnx"
    shutil.move(folder / "model.onnx", real)
    os.symlink(real, folder / "model.onnx")
    assert Predictor(folder).backend.name == "onnx"
