"""Rewrite the BlazeFace ONNX graph so ONNX Runtime's blocked (NCHWc) CPU kernels run all of it.

    python tools/optimize_blazeface.py IN.onnx OUT.onnx

Reproducible dev-time step after tools/convert_blazeface.py (not run by the package). The
converted graph has channel counts of 28, 36 and 42 and pads its residual branches with a
channel Pad; both make ONNX Runtime reorder tensors between its blocked layout and NCHW around
most blocks (19 ReorderOutput + 14 ReorderInput nodes, a sixth of the run time here). Two exact
rewrites remove them:
- every convolution gets zero filters up to a multiple of 8 output channels (the heads feeding
  the output Transposes keep theirs), and the layers that read those channels zero weights
  for them: the added channels are 0 everywhere, so the outputs do not change;
- a channel Pad becomes a 1x1 convolution with identity weights (zero rows for the padding),
  or disappears where the widening already gave the channels, so Add + Relu fuse into the
  convolutions.
The result is checked against the input graph on random inputs (outputs equal to float
rounding) and timed, one thread, before it is written.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

BLOCK = 8  # AVX2's NCHWc block (AVX-512: 16; a multiple of 16 would suit both, at more work)


def _ceil(c: int) -> int:
    return -(-c // BLOCK) * BLOCK


def make_batch_dynamic(m: onnx.ModelProto) -> onnx.ModelProto:
    """A tflite2onnx BlazeFace graph with a symbolic batch dim: the inputs/outputs get "N" and
    the Reshapes' fixed 1 becomes 0 ("copy the input's dim", ONNX Reshape since opset 5)."""
    del m.graph.value_info[:]  # stale batch-1 intermediate shapes
    for v in list(m.graph.input) + list(m.graph.output):
        v.type.tensor_type.shape.dim[0].dim_param = "N"
    for i, t in enumerate(m.graph.initializer):
        if t.name.startswith("TFLITE2ONNX_Vector_int64"):
            a = numpy_helper.to_array(t).copy()
            if a.ndim == 1 and a.size == 3 and a[0] == 1:
                a[0] = 0
                m.graph.initializer[i].CopyFrom(numpy_helper.from_array(a, t.name))
    return m


def make_spatial_dynamic(m: onnx.ModelProto) -> onnx.ModelProto:
    """The input's height and width symbolic ("H", "W"), the outputs' anchor count ("A"): the
    graph is convolutional, its stride-2 pads are TF's SAME for even sides and its Reshapes
    keep -1 for the anchors, so it runs unchanged on any side that is a multiple of 32 (one
    pass over a whole frame instead of overlapping tiles; faces/wide.py). At 256x256 the
    outputs are the same bytes as before."""
    del m.graph.value_info[:]
    dims = m.graph.input[0].type.tensor_type.shape.dim
    for d, name in ((2, "H"), (3, "W")):
        dims[d].ClearField("dim_value")
        dims[d].dim_param = name
    for v in m.graph.output:
        v.type.tensor_type.shape.dim[1].ClearField("dim_value")
        v.type.tensor_type.shape.dim[1].dim_param = "A"
    return m


def optimize(model: onnx.ModelProto) -> onnx.ModelProto:
    g = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    # For every tensor: its channel count in the rewritten graph and in the original.
    width = {g.input[0].name: 3}
    orig = {g.input[0].name: 3}
    rename: dict[str, str] = {}  # a Pad that became a no-op: its output is its input
    nodes = []
    for n in g.node:
        n.input[:] = [rename.get(i, i) for i in n.input]
        x = n.input[0]
        if n.op_type == "Conv":
            w, b = inits[n.input[1]], inits[n.input[2]]
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            cin = width[x]
            if group > 1:  # depthwise: one filter per input channel
                assert group == w.shape[0] == orig[x], n.name
                cout, ocout = cin, group
                for a in n.attribute:
                    if a.name == "group":
                        a.i = cin
                w2 = np.zeros((cout,) + w.shape[1:], np.float32)
                w2[:group] = w
            else:
                ocout = w.shape[0]
                head = any(c.op_type == "Transpose" for c in consumers.get(n.output[0], []))
                cout = ocout if head else _ceil(ocout)
                w2 = np.zeros((cout, cin) + w.shape[2:], np.float32)
                w2[:ocout, :w.shape[1]] = w
            b2 = np.zeros(cout, np.float32)
            b2[:ocout] = b
            inits[n.input[1]], inits[n.input[2]] = w2, b2
            width[n.output[0]], orig[n.output[0]] = cout, ocout
        elif n.op_type == "Pad":
            pads = inits[n.input[1]]
            # Only channel padding at the end (N, C, H, W begins then ends) is expected here.
            assert pads.tolist()[:5] == [0] * 5 and pads.tolist()[6:] == [0, 0], n.name
            target = orig[x] + int(pads[5])
            cout = _ceil(target)
            width[n.output[0]], orig[n.output[0]] = cout, target
            if cout == width[x]:
                rename[n.output[0]] = x
                continue
            eye = np.zeros((cout, width[x], 1, 1), np.float32)
            eye[np.arange(width[x]), np.arange(width[x])] = 1
            wn, bn = n.output[0] + "/identity_w", n.output[0] + "/identity_b"
            inits[wn], inits[bn] = eye, np.zeros(cout, np.float32)
            n = helper.make_node("Conv", [x, wn, bn], [n.output[0]], name=n.name,
                                 kernel_shape=[1, 1])
        elif n.op_type in ("Relu", "MaxPool", "Add"):
            # An Add whose padded branch was renamed away reads the wider original count
            # from its other input.
            width[n.output[0]] = max(width[i] for i in n.input)
            orig[n.output[0]] = max(orig[i] for i in n.input)
        nodes.append(n)
    used = {i for n in nodes for i in n.input}
    g.ClearField("node")
    g.node.extend(nodes)
    g.ClearField("initializer")
    g.initializer.extend(numpy_helper.from_array(a, k) for k, a in inits.items() if k in used)
    g.ClearField("value_info")
    return model


def _session(model: onnx.ModelProto):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def _ms_per_run(sess, x: np.ndarray, runs: int = 300) -> float:
    for _ in range(30):
        sess.run(None, {"input": x})
    times = []
    for _ in range(5):
        t = time.process_time()
        for _ in range(runs // 5):
            sess.run(None, {"input": x})
        times.append((time.process_time() - t) / (runs // 5) * 1e3)
    return float(np.median(times))


def main(src: Path, dst: Path) -> None:
    before = onnx.load(str(src))
    after = optimize(onnx.load(str(src)))
    p = after.metadata_props.add()
    p.key, p.value = "optimized", ("channels widened to multiples of 8 with zero filters, "
                                   "channel Pads as identity 1x1 convolutions "
                                   "(tools/optimize_blazeface.py); outputs unchanged")
    onnx.checker.check_model(after)
    a, b = _session(before), _session(after)
    x = np.random.default_rng(0).uniform(-1, 1, (4, 3, 128, 128)).astype(np.float32)
    for ra, rb in zip(a.run(None, {"input": x}), b.run(None, {"input": x}), strict=True):
        scale = float(np.abs(ra).max())
        err = float(np.abs(ra - rb).max())
        assert err <= 1e-5 * max(scale, 1.0), (err, scale)
        print(f"output {ra.shape}: max |diff| {err:.2e} (largest value {scale:.1f})")
    one = x[:1]
    print(f"one 128-px pass, one thread: {_ms_per_run(a, one):.3f} -> "
          f"{_ms_per_run(b, one):.3f} ms of CPU")
    onnx.save(after, str(dst))
    print(f"wrote {dst}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
