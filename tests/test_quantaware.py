"""Quantization-aware fine-tuning: the torch simulation sits where ONNX Runtime quantizes, the
saved weights lie on ONNX Runtime's int8 grid, and `facegender qat` writes a working model folder
whose INT8 export is checked against it on real faces."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
from facegender.cli import main  # noqa: E402
from facegender.infer.export import export_onnx_graph, quantize_int8  # noqa: E402
from facegender.models import modelfile  # noqa: E402
from facegender.models.registry import build_model  # noqa: E402
from facegender.training.quantaware import (  # noqa: E402
    W_QMAX,
    act_quants,
    fold_batchnorm,
    observe_ranges,
    prepare,
    set_mode,
    to_original,
)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = build_model("mobilenetv3_small", 2)
    # Non-trivial BatchNorm statistics, as a trained model has.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def x():
    return torch.randn(40, 3, 48, 48, generator=torch.Generator().manual_seed(1))


def test_folding_batchnorm_keeps_outputs(net, x):
    folded = fold_batchnorm(copy.deepcopy(net))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        assert torch.allclose(folded(x), net(x), atol=1e-4)


@pytest.mark.parametrize("stride,points", [(0, 127), (8, None)])
def test_quant_points_match_onnxruntime(net, x, tmp_path, stride, points):
    """One simulated quantizer per tensor ONNX Runtime's QDQ quantizer quantizes, with every
    layer quantized and with export's fp32 front."""
    onnx = pytest.importorskip("onnx")
    q = prepare(copy.deepcopy(net), stride, x.shape[-1])
    fp32, int8 = tmp_path / "f.onnx", tmp_path / "q.onnx"
    export_onnx_graph(net, x[:2], fp32, 18)
    quantize_int8(fp32, int8, x.numpy(), tmp_path, float_stride=stride)
    ort_points = sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(int8)).graph.node)
    assert len(act_quants(q)) == ort_points == (points or ort_points)
    assert stride == 0 or ort_points < 127


def test_simulation_switches_and_weights_lie_on_the_int8_grid(net, x):
    q = prepare(copy.deepcopy(net))
    observe_ranges(q, [x[:20], x[20:]])
    with torch.no_grad():
        z_quant = q(x)
        set_mode(q, "off")
        z_off = q(x)
    assert not torch.equal(z_quant, z_off)  # activation quantization really acts...
    assert (z_quant - z_off).abs().max() < 0.5 * z_off.abs().max()  # ...as small noise
    restored = to_original(q, "mobilenetv3_small", 2)
    with torch.no_grad():
        assert torch.allclose(restored(x), z_off, atol=1e-4)
    convs = [m for m in restored.modules() if isinstance(m, torch.nn.Conv2d)]
    for conv in convs:
        w = conv.weight.detach().flatten(1)
        steps = w / (w.abs().amax(1, keepdim=True) / W_QMAX)
        assert torch.allclose(steps, steps.round(), atol=1e-3)  # integer multiples of the scale


def test_qat_cli_writes_a_model_whose_int8_export_agrees(trained_model, celeba, tmp_path):
    out = tmp_path / "qat"
    rc = main(["qat", str(trained_model), str(celeba / "train.tar"), "--out", str(out),
               "--val", str(celeba / "val.tar"), "--epochs", "1", "--limit", "384",
               "--val-limit", "300", "--calib-size", "100", "--workers", "0",
               "--no-progress"])
    assert rc == 0
    cfg = modelfile.load_config(out)
    src = modelfile.load_config(trained_model)
    assert cfg.labels == src.labels and cfg.input_size == src.input_size
    assert cfg.recipe["qat"]["epochs"] == 1 and cfg.metrics["before_qat"]["val"]
    # A plain model folder of the same architecture: it loads and separates the classes.
    assert cfg.metrics["val"]["roc_auc"] > 0.85
    rows = list(csv.DictReader(open(out / "qat_history.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    int8 = json.loads((out / "config.json").read_text())["metrics"]["export"]["int8"]
    assert int8["parity"]["faces"] == 300
    assert int8["parity"]["agreement"] >= 0.98
    assert (out / modelfile.ONNX_INT8_NAME).is_file() and (out / modelfile.ONNX_NAME).is_file()
    assert "Quantization-aware fine-tuning" in (out / modelfile.CARD_NAME).read_text()
    net, _ = modelfile.load_torch_model(out)
    assert isinstance(net, torch.nn.Module)


def test_qat_refuses_an_existing_model_folder(trained_model, celeba):
    from facegender.errors import FaceGenderError
    from facegender.training.quantaware import finetune

    with pytest.raises(FaceGenderError, match="already holds a model folder"):
        finetune(trained_model, celeba / "train.tar", Path(trained_model))


def test_simulated_int8_tracks_onnxruntime(trained_model, celeba, tmp_path):
    """On a trained model and real faces, ONNX Runtime's INT8 output is nearer the torch
    simulation than the fp32 model: the simulation models the real quantization error."""
    from facegender.infer.backends import OrtBackend
    from facegender.infer.export import calibration_batches, calibration_faces

    net, cfg = modelfile.load_torch_model(trained_model)
    x_cal = calibration_faces(celeba / "train.tar", cfg, 100)
    x_val = calibration_faces(celeba / "val.tar", cfg, 200, seed=5)  # held-out faces
    q = prepare(copy.deepcopy(net))
    observe_ranges(q, [torch.from_numpy(b) for b in calibration_batches(x_cal)])
    fp32, int8 = tmp_path / "f.onnx", tmp_path / "q.onnx"
    export_onnx_graph(to_original(q, cfg.arch, 2), torch.from_numpy(x_cal[:2]), fp32, 18)
    quantize_int8(fp32, int8, x_cal, tmp_path, float_stride=0)
    # The input's range is computed from the same faces by both: it must be ORT's exactly.
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    graph = onnx.load(str(int8)).graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    q_in = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
    assert float(q.actquant_0.scale) == pytest.approx(float(consts[q_in.input[1]]), rel=1e-6)
    assert int(q.actquant_0.zero_point) == int(consts[q_in.input[2]])
    z_ort = OrtBackend(int8)(x_val)
    with torch.no_grad():
        z_sim = q(torch.from_numpy(x_val)).numpy()
        set_mode(q, "off")
        z_fp = q(torch.from_numpy(x_val)).numpy()
    sim_err, fp_err = np.abs(z_ort - z_sim).mean(), np.abs(z_ort - z_fp).mean()
    assert sim_err < 0.6 * fp_err, (sim_err, fp_err)


def test_models_it_cannot_prepare_get_a_clear_error():
    from facegender.errors import FaceGenderError

    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            y = self.conv(x)
            return y if y.sum() > 0 else -y  # data-dependent: torch.fx cannot trace it

    with pytest.raises(FaceGenderError, match="cannot trace"):
        prepare(Branchy())
    lone_bn = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4),
                                  torch.nn.BatchNorm1d(4))
    with pytest.raises(FaceGenderError, match="cannot fold 2"):
        prepare(lone_bn)
