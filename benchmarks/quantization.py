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


def variants() -> dict[str, dict]:
    """quantize_static overrides per variant; "float_stride" picks export's fp32 front."""
    from onnxruntime import quantization as q

    pct = q.CalibrationMethod.Percentile
    every = {"float_stride": 0}
    return {
        "every layer INT8, MinMax": dict(every, calibrate_method=q.CalibrationMethod.MinMax,
                                         extra_options={}),
        "every layer INT8, Percentile 99.99": every,
        "every layer INT8, Percentile 99.99, 8-bit weights": dict(every, reduce_range=False),
        "every layer INT8, Percentile 99.999": dict(every, calibrate_method=pct,
                                                    extra_options={"CalibPercentile": 99.999}),
        "fp32 at output stride <= 2 (stem)": {"float_stride": 2},
        "fp32 at output stride <= 4": {"float_stride": 4},
        "fp32 at output stride <= 8 (chosen)": {},
        "fp32 at output stride <= 16": {"float_stride": 16},
        # 16 bits hold the full range: no need to clip outliers.
        "every layer 16-bit activations, 8-bit weights, MinMax": dict(
            every, activation_type=q.QuantType.QUInt16, reduce_range=False,
            calibrate_method=q.CalibrationMethod.MinMax, extra_options={"UseQDQContribOps": True}),
    }


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort

    from facegender.infer.bench import timed
    from facegender.infer.export import (
        FLOAT_STRIDE,
        INPUT_NAME,
        face_arrays,
        parity_figures,
        pick_samples,
        quantize_int8,
    )
    from facegender.infer.preprocess import softmax
    from facegender.io.sources import read_source
    from facegender.models import modelfile

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
    x_cal, _ = face_arrays(pick_samples(read_source(DATA / "celeba-gender" / "train.tar"), ("train",),
                             a.n_calib, 0, set()), cfg)
    x, y = face_arrays(pick_samples(read_source(DATA / "celeba-gender" / "val.tar"), ("val",),
                         a.n_parity, 1, set()), cfg)
    one = ort.SessionOptions()
    one.intra_op_num_threads = 1

    def run(path: Path) -> tuple[np.ndarray, float]:
        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        z = np.concatenate([s.run(None, {INPUT_NAME: x[i:i + 256]})[0]
                            for i in range(0, len(x), 256)])
        s1 = ort.InferenceSession(str(path), one, providers=["CPUExecutionProvider"])
        ms = float(np.median(timed(lambda: s1.run(None, {INPUT_NAME: x[:1]}), 300, 30)))
        return softmax(z, cfg.temperature)[:, cfg.male_index], ms

    p32, ms32 = run(fp32)
    male = y == cfg.male_index
    ref = parity_figures(p32, p32, male, 0.5, cfg.unsure_band)
    print(f"{folder}: {len(x)} val faces ({ref['sure_faces']} outside the unsure band "
          f"{cfg.unsure_band}), {len(x_cal)} calibration faces; fp32 accuracy "
          f"{ref['accuracy']:.2%}, batch-1 {ms32:.3f} ms\n")
    print("| variant | agreement | outside unsure band | max abs dp | accuracy | batch-1 ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        for name, options in variants().items():
            out = tmpdir / "q.onnx"
            options = dict(options)
            stride = options.pop("float_stride", FLOAT_STRIDE)
            quantize_int8(fp32, out, x_cal, tmpdir, options, float_stride=stride)
            p8, ms = run(out)
            par = parity_figures(p8, p32, male, 0.5, cfg.unsure_band)
            print(f"| {name} | {par['agreement']:.2%} | {par['agreement_sure']:.2%} | "
                  f"{par['max_abs_dp']:.3f} | {par['accuracy']:.2%} | {ms:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
