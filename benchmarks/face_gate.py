"""Face-quality gate benchmark: what it keeps of real faces and of smooth colour noise.

    python benchmarks/face_gate.py [--blobs 3600] [--seed 0]

- blobs: seeded smooth colour-noise images (random RGB noise blurred by sigma 4-30 px per 256
  px and contrast restored, or 3-11 px noise upsampled bicubic; 128-640 px, some portrait),
  the "smooth_blobs" of the hostile corpus. Printed: images in which the bare detector
  (gate=False) and the gated one find a face.
- fairface540 (540 photos) and kinfacew (2,769 64 px crops): images in which the bare and the
  gated detector find a face, and how many the gate takes away.
- predict: the shipped fast model over both sets: images with a face, face rows, unsure rows.
Reads ../shared/data next to the repository (tar members in memory).
"""

from __future__ import annotations

import argparse
import io
import tarfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from facegender import load
from facegender.faces import FaceDetector

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"


SETS = {"fairface540": DATA / "fairface540" / "fairface540.tar",
        "kinfacew": DATA / "kinfacew" / "kinfacew.tar"}


def smooth_blob(rng: np.random.Generator, k: int) -> Image.Image:
    side = int(rng.choice([128, 256, 320, 480, 640]))
    w, h = (side, side) if rng.random() < 0.5 else (side, int(side * rng.uniform(1.1, 1.4)))
    if k % 4 == 0:  # upsampled coarse noise
        lo = int(rng.integers(3, 12))
        return Image.fromarray(rng.integers(0, 256, (lo, lo, 3), dtype=np.uint8)).resize(
            (w, h), Image.BICUBIC)
    sigma = float(rng.uniform(4, 30)) * side / 256
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    a = np.asarray(Image.fromarray(arr).filter(ImageFilter.GaussianBlur(sigma)), np.float32)
    a = (a - a.mean()) / (a.std() + 1e-6) * 60 + 128
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def tar_images(path: Path):
    with tarfile.open(path) as tf:
        for m in tf:
            if m.isfile() and m.name.endswith(".jpg"):
                yield Image.open(io.BytesIO(tf.extractfile(m).read())).convert("RGB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blobs", type=int, default=3600)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    raw, gated = FaceDetector(threads=1, gate=False), FaceDetector(threads=1)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    fired = kept = 0
    for k in range(args.blobs):
        img = smooth_blob(rng, k)
        if raw.detect(img):
            fired += 1
            kept += bool(gated.detect(img))
    print(f"smooth blobs: {args.blobs} images, bare detector fires on {fired}, gated on {kept} "
          f"({time.perf_counter() - t0:.0f} s)")
    for name, path in SETS.items():
        if not path.exists():
            print(f"{name}: {path} not found, skipped")
            continue
        n = bare = both = 0
        for img in tar_images(path):
            n += 1
            if raw.detect(img):
                bare += 1
                both += bool(gated.detect(img))
        print(f"{name}: {n} images, bare detector finds a face in {bare}, gated in {both} "
              f"({bare - both} taken away by the gate)")
    pred = load("fast", threads=1)
    for name, path in SETS.items():
        if path.exists():
            res = pred.predict([str(path)])
            faces = [f for r in res for f in r.faces]
            print(f"predict fast, {name}: {sum(bool(r.faces) for r in res)}/{len(res)} images "
                  f"with a face, {len(faces)} face rows, {sum(f.unsure for f in faces)} unsure")


if __name__ == "__main__":
    main()
