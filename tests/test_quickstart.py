"""The README's Quickstart, read from the README itself and run top to bottom with smaller sizes
(fewer faces, one epoch), so the commands a new user copies cannot rot: every command exits 0,
its outputs exist, and the Python block runs against the model the commands trained."""

from __future__ import annotations

import ast
import inspect
import re
import shlex
from pathlib import Path

import pytest

from facegender.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
DATA = (ROOT / ".." / "shared" / "data").resolve()

# Smaller sizes for the test: option -> value replaced, then options added, per verb.
SHRINK = {
    "train": ({"--limit": "200", "--val-limit": "100", "--epochs": "1"},
              ["--workers", "0", "--no-progress"]),
    "evaluate": ({}, ["--limit", "60", "--gallery", "2", "-q"]),
    "export": ({}, ["--calib-size", "64", "--parity-size", "64"]),
    "benchmark": ({"--n-eval": "64"}, ["--backends", "onnx"]),
}


def quickstart_blocks() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)


def commands(block: str) -> list[list[str]]:
    joined = block.replace("\\\n", " ")
    return [argv for line in joined.splitlines() if (argv := shlex.split(line, comments=True))]


def localise(arg: str) -> str:
    """Repository-relative paths of the README, made absolute (the test runs in a temp dir)."""
    for rel, real in (("examples/", ROOT / "examples"), ("../shared/data", DATA)):
        if arg.startswith(rel):
            return str(real) + arg[len(rel.rstrip("/")):]
    return arg


def shrink(argv: list[str]) -> list[str]:
    verb = argv[0]
    replace, extra = SHRINK.get(verb, ({}, []))
    out = [localise(a) for a in argv]
    for opt, value in replace.items():
        assert opt in out, f"the README's {verb} line lost {opt}"
        out[out.index(opt) + 1] = value
    return out + extra


def test_quickstart_blocks_are_there():
    kinds = [k for k, _ in quickstart_blocks()]
    assert kinds == ["bash", "bash", "python"], kinds
    first = commands(quickstart_blocks()[0][1])
    assert all(c[0] == "facegender" for c in first)
    assert [c[1] for c in first] == ["predict", "predict", "predict", "train", "evaluate",
                                     "explain", "export", "benchmark", "serve"]
    full = commands(quickstart_blocks()[1][1])
    assert len(full) == 1 and "--limit" not in full[0]
    build_parser().parse_args(full[0][1:])  # the full recipe parses as written


@pytest.mark.slow
def test_quickstart_runs_top_to_bottom(celeba, tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("pytorch_grad_cam")
    monkeypatch.chdir(tmp_path)
    (_, run), _, (_, python) = quickstart_blocks()
    for argv in commands(run):
        args = shrink(argv[1:])
        if args[0] == "serve":  # a server runs until stopped: build it and ask it once instead
            from fastapi.testclient import TestClient

            from facegender.serve.app import create_app

            ns = build_parser().parse_args(args)
            with TestClient(create_app(ns.model, workers=1)) as c:
                assert c.get("/healthz").json()["status"] == "ok"
            continue
        code = main(args)
        out = capsys.readouterr()
        assert code == 0, (args, out.err[-2000:])
        if args[0] == "predict" and "--csv" in args:
            assert "0 failed" in out.err  # ATTRIBUTION.md beside the photos is no failed image
    assert (tmp_path / "out.csv").is_file() and len(list((tmp_path / "annotated").iterdir())) == 5
    assert any((tmp_path / "crops").iterdir())
    model = tmp_path / "my-model"
    assert "face_crops" in (model / "config.json").read_text()
    assert (tmp_path / "report" / "report.html").is_file()
    assert (tmp_path / "cams" / "explanations.json").is_file()
    assert (model / "model.onnx").is_file() and (model / "model.int8.onnx").is_file()

    # The Python block, against the model made above; its train call is checked, not rerun.
    tree = ast.parse(python)
    import facegender

    calls = [n for n in tree.body if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)
             and ast.unparse(n.value.func) == "facegender.train"]
    assert len(calls) == 1
    call = calls[0].value
    inspect.signature(facegender.train).bind(
        *[ast.literal_eval(a) for a in call.args],
        **{k.arg: ast.literal_eval(k.value) for k in call.keywords})
    tree.body.remove(calls[0])
    code = ast.unparse(tree).replace("limit=200", "limit=60")
    for rel in ("examples/", "../shared/data"):
        code = code.replace(f"'{rel}", f"'{localise(rel)}")
    scope: dict = {}
    exec(compile(code, "README.md quickstart", "exec"), scope)  # noqa: S102
    assert scope["rows"] and scope["report"].metrics["n"] > 0
