"""Progress bars: on stderr while it is a terminal, never on stdout, never with --quiet."""

from __future__ import annotations

import io
import sys

from facegender.cli import main

EXAMPLES = "examples"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_on_a_terminal_only(monkeypatch, capsys):
    from facegender import load

    pred = load("fast")
    tty = _Terminal()
    monkeypatch.setattr(sys, "stderr", tty)
    pred.predict(EXAMPLES, progress=True)
    assert "predict: 6img" in tty.getvalue() and "img/s" in tty.getvalue()

    tty = _Terminal()
    monkeypatch.setattr(sys, "stderr", tty)
    pred.predict(EXAMPLES, progress=False)
    assert tty.getvalue() == ""

    plain = io.StringIO()  # a pipe or a log file: no bar even when asked
    monkeypatch.setattr(sys, "stderr", plain)
    pred.predict(EXAMPLES, progress=True)
    assert plain.getvalue() == ""


def test_cli_quiet_and_stdout_clean(monkeypatch, capsys):
    tty = _Terminal()
    monkeypatch.setattr(sys, "stderr", tty)
    assert main(["predict", EXAMPLES, "--json", "-"]) == 0
    assert "predict: 6img" in tty.getvalue()
    assert "\r" not in capsys.readouterr().out  # the bar never reaches stdout
    tty = _Terminal()
    monkeypatch.setattr(sys, "stderr", tty)
    assert main(["predict", EXAMPLES, "--json", "-", "--quiet"]) == 0
    assert "predict:" not in tty.getvalue() and "6 images" in tty.getvalue()


def test_one_bar_rule_for_every_verb():
    """train, qat, calibrate, shard, feature caching and the Ray engine draw through the same
    io.progress.progress_bar as predict: no module builds its own tqdm, so none draws into a
    pipe or a log file."""
    import ast
    from pathlib import Path

    pkg = Path(__file__).resolve().parents[1] / "facegender"
    own = []
    for f in pkg.rglob("*.py"):
        if f == pkg / "io" / "progress.py":
            continue
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tqdm"):
                own.append(str(f.relative_to(pkg)))
            if isinstance(node, ast.Import) and any(a.name.startswith("tqdm") for a in node.names):
                own.append(str(f.relative_to(pkg)))
    assert not own, f"tqdm used outside io/progress.py: {own}"


def test_bar_with_options_follows_the_rule(monkeypatch):
    from facegender.io.progress import count, progress_bar

    plain = io.StringIO()  # what train's epoch bar (leave=False, unit=batch) sees in a log file
    monkeypatch.setattr(sys, "stderr", plain)
    for _ in progress_bar(range(3), True, "epoch 1/1", unit="batch", leave=False):
        pass
    assert plain.getvalue() == ""
    tty = _Terminal()
    monkeypatch.setattr(sys, "stderr", tty)
    for _ in progress_bar(range(3), True, "epoch 1/1", unit="batch", leave=False):
        pass
    assert "epoch 1/1" in tty.getvalue()
    assert [count(n, "image") for n in (0, 1, 2)] == ["0 images", "1 image", "2 images"]


def test_first_few_keeps_the_first_and_counts_all():
    from facegender.io.progress import FirstFew

    kept = FirstFew(3)
    for i in range(10):
        kept.append(i)
    assert kept == [0, 1, 2] and kept.total == 10 and bool(kept)
