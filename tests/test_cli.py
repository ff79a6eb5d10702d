"""CLI = API: every verb documented, user errors are one clear line, the model folder is safe."""

from __future__ import annotations

import json
import shutil

import pytest

from facegender.cli import build_parser, main
from facegender.models.modelfile import load_config, save_config


@pytest.mark.parametrize("verb", ["train", "evaluate", "predict", "explain", "export", "benchmark", "serve",
                                  "info"])
def test_help_is_complete(verb, capsys):
    with pytest.raises(SystemExit) as exc:
        main([verb, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    # every option of the verb carries a help text
    sub = build_parser()._subparsers._group_actions[0].choices[verb]
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{verb} {action.option_strings} has no help"
            assert action.option_strings[0] in out


def test_info(trained_model, capsys):
    assert main(["info", str(trained_model)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["labels"] == ["female", "male"] and "model.safetensors" in info["files"]


def test_missing_model_folder_is_one_clear_line(tmp_path, capsys):
    code = main(["predict", str(tmp_path), "--model", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert code == 2 and "model folder not found" in err and "Traceback" not in err


def test_pickle_checkpoint_is_refused(tmp_path, capsys):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"\x80\x04K\x01.")  # a pickle: never loaded
    code = main(["info", str(bad)])
    assert code == 2 and "pickle" in capsys.readouterr().err


def test_labels_are_read_from_config_not_assumed(trained_model, tmp_path, celeba):
    """Swap the class order in config.json together with the head's rows: predictions stay put.
    A project that hard-codes the order would flip every label here."""
    import numpy as np
    from conftest import first_members
    from safetensors.numpy import load_file, save_file

    from facegender import predict
    from facegender.io.sources import read_source

    swapped = tmp_path / "swapped"
    shutil.copytree(trained_model, swapped, ignore=shutil.ignore_patterns("checkpoints"))
    cfg = json.loads((swapped / "config.json").read_text())
    cfg["labels"] = cfg["labels"][::-1]
    (swapped / "config.json").write_text(json.dumps(cfg))
    w = load_file(str(swapped / "model.safetensors"))
    last = sorted(k for k in w if k.startswith("classifier.") and w[k].shape[0] == 2)
    for k in last:
        w[k] = np.ascontiguousarray(w[k][::-1])
    save_file(w, str(swapped / "model.safetensors"))
    # Weights and labels changed together on purpose: record the folder anew, as save_config
    # does (a label order edited alone is refused: tests/test_hostile.py).
    cfg = load_config(swapped)
    save_config(cfg, swapped)
    assert load_config(swapped).labels == ["male", "female"]

    names = set(first_members(celeba / "val.tar", 8, ("val/male/", "val/female/")))
    samples = [s for s in read_source(celeba / "val.tar").samples if s.ref.split("::")[1] in names]
    a = predict(samples, trained_model, detect=False, backend="torch")
    b = predict(samples, swapped, detect=False, backend="torch")
    for ra, rb in zip(a, b, strict=True):
        assert ra.faces[0].label == rb.faces[0].label
        assert abs(ra.faces[0].prob_male - rb.faces[0].prob_male) < 1e-5


def test_predict_reports_bad_files_and_goes_on(trained_model, celeba, tmp_path, capsys):
    from conftest import extract_members, first_members

    names = first_members(celeba / "val.tar", 2, ("val/male/",))
    extract_members(celeba / "val.tar", names, tmp_path)
    folder = tmp_path / "val" / "male"
    (folder / "page.jpg").write_text("<!doctype html><html></html>")
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    (folder / "README.md").write_text("# where these faces come from")
    code = main(["predict", str(folder), "--model", str(trained_model), "--no-detect",
                 "--format", "json"])
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert code == 1  # some inputs failed
    by_name = {r["path"].rsplit("/", 1)[-1]: r for r in rows}
    assert len(by_name) == 6  # documentation is a row too, ignored: no failed image
    assert by_name["README.md"]["error"] == "documentation, not an image"
    assert "HTML" in by_name["page.jpg"]["error"]
    assert "empty" in by_name["zero.jpg"]["error"]
    assert "not a recognised image" in by_name["notes.txt"]["error"]
    good = [r for r in rows if r["error"] is None]
    assert len(good) == 2 and all(r["label"] in ("male", "female") for r in good)
    assert "3 failed, 1 ignored" in captured.err
