"""Each option of each verb is declared once (facegender/verbs.py): the CLI parser, the Python
API's signature and the recipe saved in config.json agree on names and defaults because they
are generated from that one declaration (or, for verbs whose API keeps its own keywords, are
checked against it here)."""

from __future__ import annotations

import argparse
import inspect
import json

import pytest

from facegender import options, verbs
from facegender.cli import build_parser


def _parsers() -> dict[str, argparse.ArgumentParser]:
    return build_parser()._subparsers._group_actions[0].choices


def _parser_defaults(parser: argparse.ArgumentParser) -> dict[str, object]:
    return {a.dest: a.default for a in parser._actions if a.dest != "help"}


@pytest.mark.parametrize("verb", sorted(verbs.VERBS))
def test_parser_is_built_from_the_declaration(verb):
    declared = verbs.VERBS[verb]
    parser = _parsers()[verb]
    got = _parser_defaults(parser)
    names = [f.name for f in options.fields(declared)]
    assert set(got) == set(names), (verb, set(got) ^ set(names))
    for name, default in options.defaults(declared).items():
        assert got[name] == default, (verb, name, got[name], default)
    # every flag's spelling is the declared one (its first spelling leads the action)
    for f in options.fields(declared):
        flags = options.flags_of(f)
        if flags[0].startswith("-"):
            assert any(flags[0] in a.option_strings for a in parser._actions), (verb, flags)


def test_progress_has_one_spelling_and_the_old_one_still_works():
    for verb, parser in _parsers().items():
        dests = {a.dest: a for a in parser._actions}
        if "progress" not in dests:
            continue
        spellings = {s for a in parser._actions if a.dest == "progress" for s in a.option_strings}
        assert spellings == {"--no-progress", "--quiet", "-q"}, (verb, spellings)
        helps = [a.help for a in parser._actions if "--quiet" in a.option_strings]
        assert helps == ["deprecated spelling of --no-progress"], verb
    ns = build_parser().parse_args(["predict", "x.jpg", "--quiet"])
    assert ns.progress is False
    ns = build_parser().parse_args(["train", "d", "--out", "o", "--no-progress"])
    assert ns.progress is False


def test_arch_choices_come_from_the_registry(capsys):
    pytest.importorskip("torch")
    from facegender.models.registry import REGISTRY

    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for name in REGISTRY:
        assert name in out, name
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "d", "--out", "o", "--arch", "nonesuch"])
    assert "unknown architecture 'nonesuch'" in capsys.readouterr().err
    assert build_parser().parse_args(["train", "d", "-o", "o", "--arch", "timm:x"]).arch == "timm:x"


# The Python functions each verb calls, whose keywords its options feed: "module:attribute".
API_OF = {
    "train": ["training.trainer:train"], "qat": ["training.quantaware:finetune"],
    "evaluate": ["report.evaluate:evaluate"], "explain": ["report.explainer:explain"],
    "export": ["infer.export:export"], "benchmark": ["infer.bench:benchmark"],
    "shard": ["io.shards:write_shards"], "calibrate": ["training.calibrate:calibrate"],
    "predict": ["infer.predictor:Predictor.__init__", "infer.predictor:Predictor.iter_predict"],
    "serve": ["serve.app:serve", "serve.app:create_app"], "info": ["models.info:info"],
}


def _api(verb: str) -> list:
    """The Python functions a verb calls, whose keywords its options feed."""
    from importlib import import_module

    out = []
    for where in API_OF[verb]:
        module, attr = where.split(":")
        value = import_module(f"facegender.{module}")
        for part in attr.split("."):
            value = getattr(value, part)
        out.append(value)
    return out


# Where the CLI and the Python API mean to differ, and why (anything else must agree).
DIFFERENT_ON_PURPOSE = {
    # the CLI draws a bar on a terminal; a library stays silent unless asked
    ("evaluate", "progress"), ("predict", "progress"), ("explain", "progress"),
    ("shard", "progress"),
    # `append` options start at None on the command line; the verb fills in the API default
    ("export", "formats"),
    # --report DIR or nothing; the API also takes True (a folder beside --out)
    ("evaluate", "report"),
}
# Options only the command line has (output formatting, or a unit the CLI converts).
CLI_ONLY = {
    "evaluate": {"json"}, "serve": {"max_upload_mb", "cors_origin"}, "shard": {"maxsize_mb"},
    "predict": {"every", "format", "csv_out", "json_out", "save_crops", "annotate", "max_mb",
                "engine", "out", "ray_address", "ray_workers", "partition_size",
                # predict --track's own outputs and frame choice (Python: facegender.track)
                "track", "fps", "keyframes", "detect_period", "min_track", "tracks_csv",
                "summary", "summary_csv", "timeline", "subtitles"},
    "export": {"model"}, "benchmark": {"model"}, "qat": {"export"},
}


@pytest.mark.parametrize("verb", sorted(verbs.VERBS))
def test_api_keywords_agree_with_the_declaration(verb):
    pytest.importorskip("torch")
    params: dict[str, inspect.Parameter] = {}
    for func in _api(verb):
        params |= inspect.signature(func).parameters
    for name, default in options.defaults(verbs.VERBS[verb]).items():
        if name in CLI_ONLY.get(verb, set()) or (verb, name) in DIFFERENT_ON_PURPOSE:
            continue
        assert name in params, f"{verb}: option {name} is no keyword of the API"
        api_default = params[name].default
        if api_default is inspect.Parameter.empty:
            continue  # a positional argument the CLI makes optional (e.g. qat's MODEL)
        same = list(api_default) == list(default) if isinstance(default, list) \
            else api_default == default
        assert same, f"{verb} {name}: CLI {default!r}, API {api_default!r}"


@pytest.mark.parametrize("verb", ["train", "qat"])
def test_signature_is_generated_from_the_declaration(verb):
    pytest.importorskip("torch")
    func = _api(verb)[0]
    declared = verbs.VERBS[verb]
    params = inspect.signature(func).parameters
    api_only = {"callbacks", "export_formats"}  # Python objects, not options
    assert set(params) - api_only == {f.name for f in options.fields(declared)}
    for name, default in options.defaults(declared).items():
        if params[name].default is not inspect.Parameter.empty:
            assert params[name].default == default, (verb, name)


def test_unknown_and_out_of_range_api_options_are_refused(tmp_path):
    pytest.importorskip("torch")
    from facegender.errors import FaceGenderError
    from facegender.training.trainer import train

    with pytest.raises(TypeError, match="epochz"):
        train(tmp_path, tmp_path / "m", epochz=3)
    with pytest.raises(FaceGenderError, match="lr must be a number > 0"):
        train(tmp_path, tmp_path / "m", lr=0)
    with pytest.raises(FaceGenderError, match="monitor must be one of"):
        train(tmp_path, tmp_path / "m", monitor="speed")


def test_per_recipe_defaults_live_in_the_declaration():
    o = verbs.TrainOptions(data="d", out="o")
    full = options.resolve_by_recipe(o, "full")
    head = options.resolve_by_recipe(verbs.TrainOptions(data="d", out="o", recipe="head"), "head")
    assert (full.epochs, full.monitor, full.val_limit, full.arch) == \
        (10, "balanced_accuracy", None, "mobilenetv3_small")
    assert (head.epochs, head.monitor, head.val_limit, head.workers, head.arch, head.balance) == \
        (30, "worst_group", 3000, 1, "dlib_resnet", ["source"])
    # a value given is kept
    assert options.resolve_by_recipe(verbs.TrainOptions(data="d", out="o", epochs=3), "head") \
        .epochs == 3


def test_saved_recipe_is_the_declared_options(trained_model):
    """The tiny model of conftest (TINY_RECIPE): every option the declaration marks for the
    recipe is saved under its key, with the value the run used."""
    from conftest import TINY_RECIPE

    recipe = json.loads((trained_model / "config.json").read_text())["recipe"]
    used = options.resolve_by_recipe(verbs.TrainOptions(data="d", out="o", **TINY_RECIPE), "full")
    expected = options.to_recipe(used)
    assert set(expected) <= set(recipe)
    # the trainer writes these four from what it derived (None where they do not apply)
    derived = {"balance", "balance_power", "teacher", "distill_weight", "init"}
    for key, value in expected.items():
        if key not in derived:
            assert recipe[key] == value, (key, recipe[key], value)
    assert recipe["warmup_epochs"] == 0.3 and recipe["epochs"] == 2
