"""How faithfully `facegender qat`'s torch simulation reproduces ONNX Runtime's INT8 model.

    python benchmarks/qat_simulation.py [MODEL_DIR] [--n-calib 1000] [--n-val 3000]

Calibrates the simulation and ONNX Runtime's static quantization on the same training faces,
matches each quantized ONNX tensor to its simulated quantizer (by the fp32 values flowing into
it), and prints how many scales agree, then the rms difference of the calibrated logit margin
and the label flips on held-out celeba val faces: real INT8 vs fp32, simulation vs fp32, real
vs simulation. Faces come from ../shared/data beside the repository.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=None, help="model folder (default: shipped)")
    ap.add_argument("--n-calib", type=int, default=1000, help="training faces for calibration")
    ap.add_argument("--n-val", type=int, default=3000, help="held-out val faces compared")
    ap.add_argument("--float-stride", type=int, default=None,
                    help="INT8 fp32 front, as export's --int8-float-stride (default: export's)")
    a = ap.parse_args()

    import onnx
    import onnxruntime as ort
    import torch
    from onnx import helper, numpy_helper

    from facegender.infer.export import (
        FLOAT_STRIDE,
        calibration_batches,
        calibration_faces,
        export_onnx_graph,
        quantize_int8,
    )
    from facegender.models import modelfile
    from facegender.training.quantaware import act_quants, observe_ranges, prepare, set_mode, to_original

    torch.set_num_threads(2)
    if a.float_stride is None:
        a.float_stride = FLOAT_STRIDE
    net, cfg = modelfile.load_torch_model(a.model)
    celeba = DATA / "celeba-gender"
    x_cal = calibration_faces(celeba / "train.tar", cfg, a.n_calib)
    x_val = calibration_faces(celeba / "val.tar", cfg, a.n_val, seed=3)
    sim = prepare(copy.deepcopy(net), a.float_stride, cfg.input_size)
    observe_ranges(sim, [torch.from_numpy(b) for b in calibration_batches(x_cal)])
    tmp = Path(tempfile.mkdtemp())
    export_onnx_graph(to_original(sim, cfg.arch, len(cfg.labels)), torch.from_numpy(x_cal[:2]),
                 tmp / "fp32.onnx", 18)
    quantize_int8(tmp / "fp32.onnx", tmp / "int8.onnx", x_cal, tmp, float_stride=a.float_stride)

    # Scales: feed a few faces through the fp32 graph with every quantized tensor as an output,
    # and through the simulation (quantizers off), then pair tensors by their values.
    int8 = onnx.load(str(tmp / "int8.onnx"))
    consts = {i.name: numpy_helper.to_array(i) for i in int8.graph.initializer}
    pre = onnx.load(str(tmp / "pre.onnx"))
    produced = {o for n in pre.graph.node for o in n.output} | {"input"}
    qnodes = [n for n in int8.graph.node
              if n.op_type == "QuantizeLinear" and n.input[0] in produced]
    outputs = {o.name for o in pre.graph.output}
    pre.graph.output.extend(helper.make_tensor_value_info(n.input[0], onnx.TensorProto.FLOAT, None)
                            for n in qnodes if n.input[0] not in outputs | {"input"})
    few = x_val[:8]
    session = ort.InferenceSession(pre.SerializeToString(), providers=["CPUExecutionProvider"])
    values = dict(zip([o.name for o in session.get_outputs()],
                      session.run(None, {"input": few}), strict=True))
    values["input"] = few
    quants = act_quants(sim)
    seen: dict[int, np.ndarray] = {}
    hooks = [q.register_forward_pre_hook(
        lambda _m, inp, i=i: seen.__setitem__(i, inp[0].detach().numpy().reshape(len(few), -1)))
        for i, q in enumerate(quants)]
    set_mode(sim, "off")
    with torch.no_grad():
        sim(torch.from_numpy(few))
    for h in hooks:
        h.remove()
    equal = within = 0
    for n in qnodes:
        t = values[n.input[0]].reshape(len(few), -1)
        candidates = [i for i, v in seen.items() if v.shape == t.shape]
        i = min(candidates, key=lambda i: np.abs(seen[i] - t).max())
        s_ort, s_sim = float(consts[n.input[1]]), float(quants[i].scale)
        equal += round(s_ort, 5) == round(s_sim, 5) and \
            int(consts[n.input[2]]) == int(quants[i].zero_point)
        within += abs(s_sim / s_ort - 1) <= 1e-3
    print(f"quantized tensors matched: {len(qnodes)}; scale and zero point equal to 5 decimals: "
          f"{equal}; scale within 0.1%: {within}")

    def margins(z: np.ndarray) -> np.ndarray:
        m = cfg.male_index
        return (z[:, m] - z[:, 1 - m]) / cfg.temperature

    def ort_margins(path: Path) -> np.ndarray:
        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return margins(np.concatenate([s.run(None, {"input": x_val[i:i + 500]})[0]
                                       for i in range(0, len(x_val), 500)]))

    fp32, real = ort_margins(tmp / "fp32.onnx"), ort_margins(tmp / "int8.onnx")
    set_mode(sim, "quant")
    with torch.no_grad():
        simulated = margins(np.concatenate([sim(torch.from_numpy(x_val[i:i + 500])).numpy()
                                            for i in range(0, len(x_val), 500)]))
    print(f"{len(x_val)} val faces: rms margin difference / label flips")
    for name, u, v in (("ONNX Runtime INT8 vs fp32", real, fp32),
                       ("simulation vs fp32", simulated, fp32),
                       ("ONNX Runtime INT8 vs simulation", real, simulated)):
        print(f"  {name:<32} {np.sqrt(np.mean((u - v) ** 2)):.4f} / {int(np.sum((u > 0) != (v > 0)))}")


if __name__ == "__main__":
    main()
