"""Every numeric option is checked when the command line is parsed (a one-line message naming the
option, exit 2, no traceback), and every option's --help says its default."""

from __future__ import annotations

import argparse

import pytest

from facegender import verbs
from facegender.cli import Number, build_parser, main

TEXT_TYPES = (verbs.comma_list, verbs.json_object, verbs.arch_name)

REJECTED = [
    ("predict", "--batch-size", "0"), ("predict", "--batch-size", "-1"),
    ("predict", "--unsure-band", "2"), ("predict", "--unsure-band", "-0.1"),
    ("predict", "--score-threshold", "1.5"), ("predict", "--threads", "0"),
    ("predict", "--min-face", "2"), ("predict", "--batch-size", "abc"),
    ("predict", "--unsure-band", "nan"),
    ("evaluate", "--limit", "0"), ("evaluate", "--gallery", "-1"), ("evaluate", "--min-group", "0"),
    ("evaluate", "--batch-size", "0"), ("val", "--limit", "-5"),
    ("train", "--epochs", "0"), ("train", "--lr", "0"), ("train", "--lr", "-1e-3"),
    ("train", "--input-size", "8"), ("train", "--val-fraction", "1"),
    ("train", "--label-smoothing", "1"), ("train", "--limit", "0"), ("train", "--batch-size", "0"),
    ("train", "--balance-power", "1.5"), ("train", "--distill-weight", "-0.1"),
    ("train", "--max-repeat", "0"), ("train", "--workers", "-1"), ("train", "--patience", "0"),
    ("train", "--views", "0"), ("train", "--weight-decay", "-1"),
    ("explain", "--threads", "0"), ("explain", "--min-face", "0"),
    ("serve", "--port", "70000"), ("serve", "--workers", "0"), ("serve", "--max-files", "0"),
    ("serve", "--max-upload-mb", "0"), ("serve", "--max-pending", "0"),
    ("export", "--opset", "5"), ("export", "--calib-size", "0"), ("export", "--parity-size", "0"),
    ("export", "--int8-float-stride", "-1"),
    ("qat", "--consistency", "-1"), ("qat", "--epochs", "0"), ("qat", "--recalibrate-every", "-1"),
    ("benchmark", "--n-eval", "0"), ("benchmark", "--threads", "0"),
    ("predict", "--every", "0"), ("predict", "--device", "gpu"), ("train", "--device", "cuda:x"),
    ("explain", "--device", "cpu:1"), ("evaluate", "--device", "tpu"),
]
POSITIONAL = {"predict": ["x.jpg"], "evaluate": ["data"], "val": ["data"], "train": ["data", "--out", "o"],
              "explain": ["x.jpg", "--out", "o"], "serve": [], "export": [], "qat": ["data", "--out", "o"],
              "benchmark": []}


def _verbs() -> dict[str, argparse.ArgumentParser]:
    return build_parser()._subparsers._group_actions[0].choices


@pytest.mark.parametrize(("verb", "option", "value"), REJECTED)
def test_rejected_at_parse_time(verb, option, value, capsys):
    with pytest.raises(SystemExit) as exc:
        main([verb, *POSITIONAL[verb], f"{option}={value}"])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert f"argument {option}: must be" in err and repr(value) in err, err
    assert "Traceback" not in err


def test_boundaries_are_accepted():
    ns = build_parser().parse_args(["predict", "x", "--unsure-band", "0.5", "--batch-size", "1",
                                    "--score-threshold", "0"])
    assert (ns.unsure_band, ns.batch_size, ns.score_threshold) == (0.5, 1, 0.0)
    ns = build_parser().parse_args(["train", "d", "--out", "o", "--lr", "1e-4", "--workers", "0"])
    assert ns.lr == 1e-4 and ns.workers == 0


def test_every_numeric_option_has_a_range():
    for verb, parser in _verbs().items():
        for action in parser._actions:
            if action.option_strings and action.type in (int, float):
                raise AssertionError(f"{verb} {action.option_strings}: no range check")
            if action.option_strings and action.type is not None and action.dest != "device":
                # a type is a range check, or one of the text converters verbs.py declares
                assert isinstance(action.type, Number) or action.type in TEXT_TYPES, \
                    (verb, action.option_strings)


@pytest.mark.parametrize("verb", ["train", "evaluate", "predict", "explain", "serve", "export",
                                  "qat", "benchmark"])
def test_help_shows_every_default(verb, capsys):
    parser = _verbs()[verb]
    with pytest.raises(SystemExit):
        main([verb, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for action in parser._actions:
        if not action.option_strings or action.dest == "help" or action.required \
                or isinstance(action.default, bool):
            continue
        text = " ".join(parser.formatter_class(verb)._get_help_string(action).split())
        assert "default" in text.lower(), (verb, action.option_strings)
        if action.default not in (None, []) and "%(default)" in text:
            assert f"default: {action.default}" in out, (verb, action.option_strings)
    if verb == "train":  # the ones the issue found hidden
        assert "--input-size" in out and "(default: 96" in out and "(default: 0.002)" in out
