"""The shipped BlazeFace graph is the rewritten one (tools/optimize_blazeface.py), and the rewrite
is exact: on a small graph built like BlazeFace's blocks (channel counts that are not multiples
of 8, a channel Pad on the residual branch, a stride-2 block with MaxPool, a head feeding a
Transpose) the rewritten graph gives the same outputs, with no Pad left and every body
convolution 8-channel aligned."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "facegender" / "weights" / "detector" / "blazeface_short_range.onnx"


def _tool():
    spec = importlib.util.spec_from_file_location("optimize_blazeface",
                                                  ROOT / "tools" / "optimize_blazeface.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _block_graph() -> onnx.ModelProto:
    """input (N,3,16,16) -> conv 3->12 -> block 12->20 (Pad +8) -> stride-2 block 20->28 (MaxPool,
    Pad +8) -> block 28->32 (Pad +4) -> head conv 32->6 -> Transpose: channel counts 12, 20, 28
    like BlazeFace's 28/36/42."""
    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def const(name, a):
        inits.append(numpy_helper.from_array(np.asarray(a), name))
        return name

    def conv(x, out, cin, cout, k=1, group=1, stride=1, pads=(0, 0, 0, 0)):
        w = rng.normal(0, 0.3, (cout, cin // group, k, k)).astype(np.float32)
        b = rng.normal(0, 0.1, cout).astype(np.float32)
        nodes.append(helper.make_node("Conv", [x, const(out + "_w", w), const(out + "_b", b)],
                                      [out], kernel_shape=[k, k], group=group,
                                      strides=[stride, stride], pads=list(pads)))
        return out

    def block(x, name, cin, cout, stride=1):
        dw = conv(x, name + "_dw", cin, cin, k=3, group=cin, stride=stride,
                  pads=(1, 1, 1, 1) if stride == 1 else (0, 0, 1, 1))
        pw = conv(dw, name + "_pw", cin, cout)
        short = x
        if stride == 2:
            nodes.append(helper.make_node("MaxPool", [x], [name + "_pool"], kernel_shape=[2, 2],
                                          strides=[2, 2], auto_pad="SAME_UPPER"))
            short = name + "_pool"
        pads = const(name + "_pads", np.array([0, 0, 0, 0, 0, cout - cin, 0, 0], np.int64))
        nodes.append(helper.make_node("Pad", [short, pads], [name + "_padded"], mode="constant"))
        nodes.append(helper.make_node("Add", [name + "_padded", pw], [name + "_sum"]))
        nodes.append(helper.make_node("Relu", [name + "_sum"], [name + "_out"]))
        return name + "_out"

    x = conv("input", "stem", 3, 12, k=3, pads=(1, 1, 1, 1))
    nodes.append(helper.make_node("Relu", [x], ["stem_relu"]))
    x = block("stem_relu", "b1", 12, 20)
    x = block(x, "b2", 20, 28, stride=2)
    x = block(x, "b3", 28, 32)  # the widened 28 (32) already holds the pad: Pad disappears
    head = conv(x, "head", 32, 6)
    nodes.append(helper.make_node("Transpose", [head], ["output"], perm=[0, 2, 3, 1]))
    graph = helper.make_graph(
        nodes, "blocks", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                        ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 8, 8, 6])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])


def _run(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def test_rewrite_keeps_the_outputs_and_aligns_the_channels():
    tool = _tool()
    before = _block_graph()
    onnx.checker.check_model(before)
    after = tool.optimize(_block_graph())
    onnx.checker.check_model(after)
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)
    a, b = _run(before, x), _run(after, x)
    assert a.shape == b.shape == (2, 8, 8, 6)
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    assert not [n for n in after.graph.node if n.op_type == "Pad"]
    inits = {i.name: numpy_helper.to_array(i) for i in after.graph.initializer}
    widths = {n.output[0]: inits[n.input[1]].shape[0] for n in after.graph.node
              if n.op_type == "Conv"}
    assert widths.pop("head") == 6  # a head feeding the output keeps its channel count
    assert all(w % 8 == 0 for w in widths.values()), widths


def test_shipped_detector_is_the_rewritten_graph():
    m = onnx.load(str(SHIPPED))
    meta = {p.key: p.value for p in m.metadata_props}
    assert "optimize_blazeface" in meta.get("optimized", ""), meta
    assert meta.get("license") == "Apache-2.0"
    assert not [n for n in m.graph.node if n.op_type == "Pad"]
    # Same interface as the converted tflite model: (N, 896, 16) boxes and (N, 896, 1) scores.
    out = _run(m, np.zeros((1, 3, 128, 128), np.float32))
    assert out.shape == (1, 896, 16)
