"""Compare the inference backends of a model folder: latency, throughput, accuracy, memory.

    python benchmarks/speed.py [MODEL_DIR] [--n-eval 2000] [--export]

Run from anywhere; the faces come from ../shared/data beside the repository (celeba val crops
for accuracy, a fairface face on a 640x480 canvas for the detection and end-to-end columns).
--export first writes model.onnx and model.int8.onnx into the folder if they are missing.
"""

from __future__ import annotations

import argparse
import sys
import tarfile
from pathlib import Path

from PIL import Image

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VAL = DATA / "celeba-gender" / "val.tar"
TRAIN = DATA / "celeba-gender" / "train.tar"
FAIRFACE = DATA / "fairface540" / "fairface540.tar"


def fairface_photo() -> bytes | None:
    """The first fairface face (a loose 224 px crop) on a 640x480 canvas, or None."""
    from facegender.infer.bench import make_photo

    if not FAIRFACE.is_file():
        return None
    with tarfile.open(FAIRFACE) as tf:
        for m in tf:
            if m.isfile() and m.name.lower().endswith((".jpg", ".jpeg", ".png")):
                return make_photo(Image.open(tf.extractfile(m)), face_height=0.6)
    return None


def main(argv: list[str] | None = None) -> int:
    from facegender.errors import FaceGenderError
    from facegender.infer.bench import benchmark, format_table

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", nargs="?", default=None, help="model folder (default: shipped model)")
    ap.add_argument("--n-eval", type=int, default=2000, help="celeba val faces for accuracy")
    ap.add_argument("--backends", default=None, help="comma list of torch,onnx,int8")
    ap.add_argument("--export", action="store_true", help="export missing ONNX files first")
    a = ap.parse_args(argv)
    try:
        if a.export:
            from facegender.infer.export import export, format_export_summary
            from facegender.models import modelfile

            folder = modelfile.resolve_model_dir(a.model)
            missing = [f for f, name in (("onnx", modelfile.ONNX_NAME),
                                         ("int8", modelfile.ONNX_INT8_NAME))
                       if not (folder / name).is_file()]
            if missing:
                res = export(folder, missing, calib_data=TRAIN if TRAIN.is_file() else None,
                             parity_data=VAL if VAL.is_file() else None)
                print(format_export_summary(res), file=sys.stderr)
        rows = benchmark(a.model, data=VAL if VAL.is_file() else None, n_eval=a.n_eval,
                         photo=fairface_photo(),
                         backends=a.backends.split(",") if a.backends else None)
    except FaceGenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
