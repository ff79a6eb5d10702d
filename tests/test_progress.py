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
