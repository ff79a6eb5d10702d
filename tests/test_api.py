"""The public API shows its real parameters (help(), editors, inspect.signature), while
`import facegender` stays free of torch until a verb that needs it is called."""

from __future__ import annotations

import inspect
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import pytest

import facegender

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# public name -> (module, function) it is, and parameters it must show.
REAL = {
    "train": ("facegender.training.trainer", "train", {"data", "out", "epochs", "lr", "arch"}),
    "qat": ("facegender.training.quantaware", "finetune", {"model", "data", "out", "epochs"}),
    "calibrate": ("facegender.training.calibrate", "calibrate", {"model", "data", "out", "views"}),
    "export": ("facegender.infer.export", "export", {"model_dir", "formats", "float_stride"}),
    "benchmark": ("facegender.infer.bench", "benchmark", {"model_dir", "data", "backends"}),
    "shard": ("facegender.io.shards", "write_shards", {"source", "out", "maxcount"}),
    "evaluate": ("facegender.report.evaluate", "evaluate", {"data", "model", "limit"}),
    "explain": ("facegender.report.explainer", "explain", {"images", "model", "out"}),
    "info": ("facegender.models.info", "info", {"model"}),
}
NEEDS = {"train": "torch", "qat": "torch", "calibrate": "torch", "export": "torch",
         "explain": "torch"}


@pytest.mark.parametrize("name", sorted(REAL))
def test_signature_is_the_real_one(name):
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])
    module, attr, must = REAL[name]
    public = getattr(facegender, name)
    real = getattr(import_module(module), attr)
    assert inspect.signature(public) == inspect.signature(real)
    assert must <= set(inspect.signature(public).parameters)
    assert not any(p.kind is p.VAR_POSITIONAL for p in inspect.signature(public).parameters.values())
    assert public.__doc__ == real.__doc__ and real.__doc__


def test_predict_ray_signature():
    pytest.importorskip("ray")
    params = inspect.signature(facegender.predict_ray).parameters
    assert {"source", "out", "model", "workers"} <= set(params)


@pytest.mark.parametrize("name", ["load", "predict"])
def test_load_and_predict_show_predictor_options(name):
    params = inspect.signature(getattr(facegender, name)).parameters
    init = inspect.signature(facegender.Predictor.__init__).parameters
    options = {n for n, p in init.items() if p.kind is p.KEYWORD_ONLY}
    assert options <= set(params) and {"tta", "backend", "device", "largest"} <= options
    assert not any(p.kind is p.VAR_KEYWORD for p in params.values())
    for option in options:  # the same defaults as the Predictor that receives them
        assert params[option].default == init[option].default
    # and the signature is honest: a keyword it lists is accepted, one it does not is refused
    inspect.signature(getattr(facegender, name)).bind(*(["x"] if name == "predict" else []),
                                                     tta=True, backend="onnx")
    with pytest.raises(TypeError):
        inspect.signature(getattr(facegender, name)).bind(no_such_option=1)


def test_predict_with_an_option_from_the_signature():
    faces = facegender.predict(EXAMPLES / "group.jpg", largest=True)[0].faces
    assert len(faces) == 1 and faces[0].label in ("male", "female")


def test_import_and_star_import_do_not_load_torch():
    code = ("import sys, inspect, facegender\nfrom facegender import *\n"
            "help_text = repr(facegender.train)\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "print(facegender.shard.__name__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "shard"
