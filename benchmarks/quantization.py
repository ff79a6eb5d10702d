"""INT8 quantization variants of a model folder, compared with its fp32 ONNX file.

    python benchmarks/quantization.py [MODEL_DIR] [--n-parity 2000] [--n-calib 1000]

For each variant: label agreement with fp32 on held-out celeba val faces (all of them, and the
ones the model labels outright, outside its unsure band), max |dp(male)|, accuracy, and batch-1
latency on one thread. `facegender export -f int8` uses the variant marked "(chosen)". Faces
come from ../shared/data beside the repository; the model folder needs model.onnx.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def variants(pre_model: Path) -> dict[str, dict]:
    """quantize_static overrides per variant; node lists come from the pre-processed graph."""
    import onnx
    from onnxruntime import quantization as q

    nodes = onnx.load(str(pre_model)).graph.node
    made_by = {o: n for n in nodes for o in n.output}

    def parent(n, op):
        p = made_by.get(n.input[0])
        return p if p is not None and p.op_type == op else None

    convs = [n for n in nodes if n.op_type == "Conv"]
    depthwise = [n.name for n in convs
                 if next((a.i for a in n.attribute if a.name == "group"), 1) > 1]
    se_in = [n for n in convs if parent(n, "ReduceMean")]  # squeeze-excite: pool -> fc1
    se_out = [n for n in convs if (r := parent(n, "Relu")) is not None
              and made_by.get(r.input[0]) in se_in]  # fc1 -> relu -> fc2
    heads = [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")]
    pct = q.CalibrationMethod.Percentile
    chosen = {}  # export's own settings
    return {
        "MinMax, 7-bit weights": dict(calibrate_method=q.CalibrationMethod.MinMax, extra_options={}),
        "MinMax, 8-bit weights": dict(calibrate_method=q.CalibrationMethod.MinMax, extra_options={},
                                      reduce_range=False),
        "Percentile 99.99, 7-bit weights (chosen)": chosen,
        "Percentile 99.99, 8-bit weights": dict(reduce_range=False),
        "Percentile 99.999": dict(calibrate_method=pct, extra_options={"CalibPercentile": 99.999}),
        "Percentile 99.9": dict(calibrate_method=pct, extra_options={"CalibPercentile": 99.9}),
        "squeeze-excite convs left fp32": dict(nodes_to_exclude=[n.name for n in se_in + se_out]),
        "first conv + classifier left fp32": dict(nodes_to_exclude=[convs[0].name] + heads),
        "depthwise convs left fp32": dict(nodes_to_exclude=depthwise),
        # 16 bits hold the full range: no need to clip outliers.
        "16-bit activations, 8-bit weights, MinMax": dict(
            activation_type=q.QuantType.QUInt16, reduce_range=False,
            calibrate_method=q.CalibrationMethod.MinMax, extra_options={"UseQDQContribOps": True}),
    }


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from facegender import modelfile
    from facegender.bench import _timed
    from facegender.data import read_source
    from facegender.export import INPUT_NAME, _arrays, _parity, _pick, _quantize
    from facegender.preprocess import softmax

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=None, help="model folder (default: shipped)")
    ap.add_argument("--n-parity", type=int, default=2000, help="held-out val faces compared")
    ap.add_argument("--n-calib", type=int, default=1000, help="training faces for calibration")
    a = ap.parse_args(argv)

    folder = modelfile.resolve_model_dir(a.model)
    cfg = modelfile.load_config(folder)
    fp32 = folder / modelfile.ONNX_NAME
    if not fp32.is_file() or not (DATA / "celeba-gender").is_dir():
        print(f"needs {fp32} and {DATA / 'celeba-gender'}", file=sys.stderr)
        return 2
    x_cal, _ = _arrays(_pick(read_source(DATA / "celeba-gender" / "train.tar"), ("train",),
                             a.n_calib, 0, set()), cfg)
    x, y = _arrays(_pick(read_source(DATA / "celeba-gender" / "val.tar"), ("val",),
                         a.n_parity, 1, set()), cfg)
    one = ort.SessionOptions()
    one.intra_op_num_threads = 1

    def run(path: Path) -> tuple[np.ndarray, float]:
        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        z = np.concatenate([s.run(None, {INPUT_NAME: x[i:i + 256]})[0]
                            for i in range(0, len(x), 256)])
        s1 = ort.InferenceSession(str(path), one, providers=["CPUExecutionProvider"])
        ms = float(np.median(_timed(lambda: s1.run(None, {INPUT_NAME: x[:1]}), 300, 30)))
        return softmax(z, cfg.temperature)[:, cfg.male_index], ms

    p32, ms32 = run(fp32)
    male = y == cfg.male_index
    ref = _parity(p32, p32, male, 0.5, cfg.unsure_band)
    print(f"{folder}: {len(x)} val faces ({ref['sure_faces']} outside the unsure band "
          f"{cfg.unsure_band}), {len(x_cal)} calibration faces; fp32 accuracy "
          f"{ref['accuracy']:.2%}, batch-1 {ms32:.3f} ms\n")
    print("| variant | agreement | outside unsure band | max abs dp | accuracy | batch-1 ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        pre = tmpdir / "pre.onnx"
        quant_pre_process(str(fp32), str(pre))
        for name, options in variants(pre).items():
            out = tmpdir / "q.onnx"
            _quantize(fp32, out, x_cal, tmpdir, options)
            p8, ms = run(out)
            par = _parity(p8, p32, male, 0.5, cfg.unsure_band)
            print(f"| {name} | {par['agreement']:.2%} | {par['agreement_sure']:.2%} | "
                  f"{par['max_abs_dp']:.3f} | {par['accuracy']:.2%} | {ms:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
