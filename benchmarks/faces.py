"""Face detector benchmark: detection rate on real faces and speed on a 640x480 photo.

    python benchmarks/faces.py [--threads 1] [--celeba 1000] [--runs 30]

Reads ../shared/data next to the repository (tar members are read in memory, never extracted).
- fairface540: 540 loose 224x224 crops; a face counts as found when a box contains the centre.
- celeba val: evenly spaced tight crops (~83x107); found when a box centre lies inside the
  crop. Shown without padding and with detect_and_crop's pad=0.5 (black border).
- ms: median and best wall time of detect() on 640x480 photos (one fairface face pasted at
  224 px on a plain background, so its box is ~13% of the width and gets refined), 1 thread.
Then the crop calibration behind CropPolicy's defaults: how the celeba crop relates to the
detector box (pad=0.5). dlib's HOG detector is added to the table when dlib is installed.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from facegender.faces import Face, FaceDetector

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"


Detect = Callable[[Image.Image], list[Face]]


def read_tar(path: Path, limit: int | None = None) -> list[Image.Image]:
    """RGB images of a tar's .jpg members in name order; `limit` takes evenly spaced ones."""
    with tarfile.open(path) as tf:
        members = sorted((m for m in tf.getmembers() if m.isfile() and m.name.endswith(".jpg")),
                         key=lambda m: m.name)
        if limit and limit < len(members):
            step = len(members) / limit
            members = [members[int(i * step)] for i in range(limit)]
        return [Image.open(io.BytesIO(tf.extractfile(m).read())).convert("RGB") for m in members]


def pad_black(img: Image.Image, frac: float) -> tuple[Image.Image, int]:
    p = round(frac * max(img.size))
    out = Image.new("RGB", (img.width + 2 * p, img.height + 2 * p))
    out.paste(img, (p, p))
    return out, p


def centre_hit(faces: list[Face], x: float, y: float) -> bool:
    return any(f.box[0] <= x <= f.box[0] + f.box[2] and f.box[1] <= y <= f.box[1] + f.box[3]
               for f in faces)


def inside(f: Face, p: int, w: int, h: int) -> bool:
    cx, cy = f.box[0] + f.box[2] / 2, f.box[1] + f.box[3] / 2
    return p <= cx <= p + w and p <= cy <= p + h


def fairface_rate(detect: Detect, images: list[Image.Image]) -> float:
    return sum(centre_hit(detect(im), im.width / 2, im.height / 2) for im in images) / len(images)


def celeba_rate(detect: Detect, images: list[Image.Image], pad: float) -> float:
    hits = 0
    for im in images:
        src, p = pad_black(im, pad) if pad else (im, 0)
        hits += any(inside(f, p, im.width, im.height) for f in detect(src))
    return hits / len(images)


def photo_ms(detect: Detect, faces: list[Image.Image], runs: int) -> tuple[float, float]:
    """Median and best ms per photo; the best shows the cost without CPU contention."""
    photos = []
    for k, face in enumerate(faces):
        bg = Image.new("RGB", (640, 480), (200, 200, 200))
        bg.paste(face, (60 + 40 * k % 300, 40 + 25 * k % 200))
        photos.append(bg)
    for p in photos:
        detect(p)  # warm-up
    times = []
    for _ in range(runs):
        for p in photos:
            t = time.perf_counter()
            detect(p)
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), min(times)


def dlib_hog() -> Detect | None:
    try:
        import dlib
    except ImportError:
        return None
    hog = dlib.get_frontal_face_detector()

    def detect(img: Image.Image) -> list[Face]:
        rects, scores, _ = hog.run(np.asarray(img), 0, 0.0)
        return [Face((r.left(), r.top(), r.width(), r.height()), float(s), None)
                for r, s in zip(rects, scores, strict=True)]

    return detect


def calibration(detector: FaceDetector, images: list[Image.Image]) -> None:
    """How a celeba tight crop relates to the detector box: CropPolicy's margin/aspect/offset."""
    rows = []
    for im in images:
        src, p = pad_black(im, 0.5)
        found = [f for f in detector.detect(src) if inside(f, p, im.width, im.height)]
        if not found:
            continue
        x, y, w, h = found[0].box
        base = (w + h) / 2
        rows.append((im.height / base, im.width / im.height,
                     (p + im.width / 2 - x - w / 2) / base, (p + im.height / 2 - y - h / 2) / base))
    a = np.array(rows)
    print(f"\ncrop calibration on {len(a)} celeba val crops (pad=0.5), box size = (w + h) / 2")
    names = ["crop height / box size (1 + margin)", "crop width / height (aspect)",
             "crop centre x - box centre x, / size", "crop centre y - box centre y, / size"]
    print(f"{'quantity':40s} {'p25':>7s} {'median':>7s} {'p75':>7s}")
    for i, name in enumerate(names):
        q25, q50, q75 = np.percentile(a[:, i], [25, 50, 75])
        print(f"{name:40s} {q25:7.3f} {q50:7.3f} {q75:7.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--celeba", type=int, default=1000, help="celeba val faces to use")
    ap.add_argument("--runs", type=int, default=10, help="timing rounds over 10 photos")
    ap.add_argument("--model", default=None, help="classifier for the crop-policy accuracy table "
                    "(default: the shipped model)")
    a = ap.parse_args()
    if not (DATA / "fairface540" / "fairface540.tar").is_file():
        sys.exit(f"data not found at {DATA.resolve()}")
    fairface = read_tar(DATA / "fairface540" / "fairface540.tar")
    celeba = read_tar(DATA / "celeba-gender" / "val.tar", a.celeba)
    timing_faces = fairface[::54][:10]

    detectors: dict[str, Detect] = {
        "blazeface (default)": FaceDetector(threads=a.threads).detect,
        "blazeface refine=False": FaceDetector(threads=a.threads, refine=False).detect,
        "blazeface min_face=40": FaceDetector(threads=a.threads, min_face=40).detect,
    }
    hog = dlib_hog()
    if hog is not None:
        detectors["dlib HOG (upsample 0)"] = hog

    ms_head = f"ms/640x480, {a.threads} thread"
    print(f"{'detector':26s} {'fairface540':>11s} {'celeba':>8s} {'celeba':>8s} {ms_head:>22s}")
    print(f"{'':26s} {'':>11s} {'no pad':>8s} {'pad 0.5':>8s} {'median':>11s} {'best':>10s}")
    for name, detect in detectors.items():
        ff = fairface_rate(detect, fairface)
        cb0 = celeba_rate(detect, celeba, 0.0)
        cb5 = celeba_rate(detect, celeba, 0.5)
        med, best = photo_ms(detect, timing_faces, a.runs)
        print(f"{name:26s} {ff:11.1%} {cb0:8.1%} {cb5:8.1%} {med:11.2f} {best:10.2f}", flush=True)
    print(f"(fairface540: {len(fairface)} faces; celeba val: {len(celeba)} faces)")
    calibration(FaceDetector(threads=a.threads), celeba)
    crop_policy_accuracy(a.model)


# Crop policies tried with the classifier: the whole 224 px photo, a fixed centre crop, and the
# detector with the default policy and variations of its margin, offset and alignment.
POLICIES: dict[str, dict | None] = {
    "whole image (no detector)": None,
    "centre crop 60% (no detector)": {"centre": 0.6},
    "detector, default policy": {},
    "detector, margin 0.0": {"margin": 0.0},
    "detector, margin 0.3": {"margin": 0.3},
    "detector, no vertical offset": {"offset_y": 0.0},
    "detector, not aligned": {"align": False},
}


def crop_policy_accuracy(model: str | None) -> None:
    """Gender accuracy of `model` (default: the shipped one) on fairface540 per crop policy."""
    from facegender import evaluate
    from facegender.infer.predictor import Predictor
    from facegender.io.sources import read_source

    source = read_source(DATA / "fairface540" / "labels.csv")
    print(f"\ngender accuracy on fairface540 by crop policy (model: {model or 'default'})")
    print(f"{'policy':34s} {'faces':>6s} {'accuracy':>9s} {'female rec.':>12s} {'male rec.':>10s}")
    for name, policy in POLICIES.items():
        if policy is not None and "centre" in policy:
            pred = Predictor(model, detect=False)
            samples = [_centre(s, policy["centre"]) for s in source.samples]
        else:
            pred = Predictor(model, detect=policy is not None, crop=policy, largest=True)
            samples = source.samples
        r = evaluate(samples, predictor=pred)
        pc = r.metrics["per_class"]
        print(f"{name:34s} {r.metrics['n']:6d} {r.metrics['accuracy']:9.1%} "
              f"{pc['female']['recall']:12.1%} {pc['male']['recall']:10.1%}", flush=True)


def _centre(sample, frac: float):
    """The sample with its image replaced by the central `frac` of it (a fixed, detector-free
    crop, as a tool without a detector would do)."""
    from dataclasses import replace

    img = Image.open(io.BytesIO(sample.read_bytes())).convert("RGB")
    w, h = img.size
    cw, ch = w * frac, h * frac
    box = (round((w - cw) / 2), round((h - ch) / 2), round((w + cw) / 2), round((h + ch) / 2))
    buf = io.BytesIO()
    img.crop(box).save(buf, "PNG")
    return replace(sample, data=buf.getvalue(), path=None, offset=None, size=None)


if __name__ == "__main__":
    main()
