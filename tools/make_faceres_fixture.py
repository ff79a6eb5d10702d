"""Build tests/fixtures/faceres_reference.npz: FaceRes-deep's own outputs (the TF.js graph run
by tools/faceres_reference.js under node's pure-JS tfjs backend) on real faces, so
tests/test_faceres.py checks the PyTorch port without node.

    python tools/make_faceres_fixture.py SCRATCH/package/models/faceres-deep.json SCRATCH

Faces: the photos in examples/ (FairFace images, CC BY 4.0, see examples/ATTRIBUTION.md), cut
with FaceRes' crop policy (BlazeFace + dlib's five landmarks, get_face_chip padding 0.4) and
resized to 224 px; the fixture keeps each crop as lossless PNG bytes and the graph's outputs.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from facegender.faces import CropPolicy, FaceDetector, detect_and_crop
from facegender.infer.preprocess import resize
from facegender.models.faceres import FACERES_CROP, INPUT_SIZE

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "faceres_reference.npz"
MAX_FACES = 5


def crops() -> tuple[list[str], list[np.ndarray]]:
    detector, policy = FaceDetector(threads=1), CropPolicy.from_dict(FACERES_CROP)
    names, arrays = [], []
    for path in sorted((ROOT / "examples").glob("*.jpg")):
        img = Image.open(path).convert("RGB")
        for k, (_, face) in enumerate(detect_and_crop(img, detector, policy)[:2]):
            names.append(f"{path.name}#{k}")
            arrays.append(np.asarray(resize(face, INPUT_SIZE), np.uint8))
    return names[:MAX_FACES], arrays[:MAX_FACES]


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def main(graph_json: Path, scratch: Path) -> None:
    names, arrays = crops()
    with tempfile.TemporaryDirectory() as tmp:
        raw, ref = Path(tmp) / "crops.u8", Path(tmp) / "ref.json"
        raw.write_bytes(np.stack(arrays).tobytes())
        subprocess.run(["node", str(ROOT / "tools" / "faceres_reference.js"), str(graph_json),
                        str(raw), str(len(arrays)), str(ref)], check=True,
                       env={"NODE_PATH": str(scratch / "node_modules"), "PATH": "/usr/bin:/bin"})
        out = json.loads(ref.read_text())
    blobs = [png(a) for a in arrays]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUT, names=np.array(names), png=np.frombuffer(b"".join(blobs), np.uint8),
        png_sizes=np.array([len(b) for b in blobs]),
        p_male=np.array(out["p_male"], np.float32),
        descriptor=np.array(out["descriptor"], np.float32),
        source=np.array(f"{out['model']} under @tensorflow/tfjs {out['tfjs']} ({out['backend']})"))
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes): {len(names)} faces")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
