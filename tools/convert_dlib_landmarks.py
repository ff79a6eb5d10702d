"""Convert dlib's 5-point face landmark model (shape_predictor_5_face_landmarks.dat, CC0, from
the PyPI package face-recognition-models 0.3.0) into the safetensors file the package ships:

    python tools/convert_dlib_landmarks.py [DAT] [--out facegender/weights/landmarks/dlib5.safetensors]

The .dat is parsed in Python (facegender/models/dlib_format.py: no dlib, nothing executed from
the file), its sha256 checked, and the arrays stored with their source in the metadata. Trees
are kept exactly (float32 thresholds and leaves, int32 feature indices).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from safetensors.numpy import save_file

from facegender.models.dlib_format import DLIB_LANDMARKS5_FILE, read_shape_predictor
from facegender.models.pretrained import package_dir

OUT = Path(__file__).resolve().parents[1] / "facegender" / "weights" / "landmarks" / "dlib5.safetensors"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dat", nargs="?", help=f"the .dat (default: {DLIB_LANDMARKS5_FILE} from "
                    "face-recognition-models)")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    dat = Path(a.dat) if a.dat else package_dir("face_recognition_models") / "models" / DLIB_LANDMARKS5_FILE
    arrays, meta = read_shape_predictor(dat)
    meta["package"] = "face-recognition-models 0.3.0 (CC0)"
    a.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.copy() for k, v in arrays.items()}, str(a.out), metadata=meta)
    print(f"{a.out}: {a.out.stat().st_size / 1e6:.1f} MB, " + ", ".join(
        f"{k} {tuple(v.shape)}" for k, v in arrays.items()))


if __name__ == "__main__":
    main()
