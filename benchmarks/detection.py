"""Face detection where media frames need it: recall by face size in wide frames, the 4-face
collage, and false faces on face-free images, for each `--detector` setting, with ms per frame.

    python benchmarks/detection.py [--faces 24] [--sizes 16,24,32,48,64,96] [--empty 100]
                                   [--detectors short,wide,auto]

Frames (made here, not timed): 1280x720, a background cut from a real photo (the corner of a
fairface540 photo: hair, wall, cloth; upscaled, so it has photo texture but no face of its own at frame
scale), `--faces` real fairface540 photos pasted in a grid, each scaled so that its face box
(short-range BlazeFace on the 224 px photo) is S px. A face counts as found when a detection's
centre lies in its box and the sizes agree within 2x; detections of the other people some
fairface photos hold are not counted either way. Collage: 4 fairface photos side by side at
900x300; contact sheet: 36 fairface photos in 80 px cells, 480x480 (faces ~29 px). Face-free:
uniform and Gaussian noise, smooth colour blobs, and background crops. Each image goes through
the public API (`Predictor(detector=...)`; `fast` model), one thread; the time is detection + classification
per frame (median), as wall time and as the process's CPU time (all threads: on a machine shared
with other work the wall time grows with the load, the CPU time much less). The table records
the CPU model and the load average.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tarfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
FAIRFACE = ROOT.parent / "shared" / "data" / "fairface540" / "fairface540.tar"
W, H = 1280, 720


def fairface(n: int, skip: int = 0) -> list[Image.Image]:
    with tarfile.open(FAIRFACE) as tf:
        names = sorted(m for m in tf.getnames() if m.endswith(".jpg"))[skip::7][:n]
        return [Image.open(io.BytesIO(tf.extractfile(m).read())).convert("RGB") for m in names]


def backgrounds(photos: list[Image.Image]) -> list[Image.Image]:
    """Face-free 1280x720 backgrounds: a corner of a real photo (hair, wall, cloth) upscaled."""
    return [p.crop((0, 0, 56, 40)).resize((W, H), Image.BICUBIC) for p in photos]


def wide_frames(size: int, n: int, bgs: list[Image.Image], faces: list, boxes: list
                ) -> list[tuple[Image.Image, list]]:
    """Frames with `n` faces of `size` px each in a grid; ground truth boxes x0, y0, x1, y1."""
    per_frame = 12
    out = []
    for start in range(0, n, per_frame):
        img = bgs[start // per_frame % len(bgs)].copy()
        gts = []
        for i, (face, b) in enumerate(zip(faces[start:start + per_frame],
                                          boxes[start:start + per_frame], strict=True)):
            s = size / max(b[2], b[3])
            x, y = 60 + (i % 6) * 200, 90 + (i // 6) * 330
            img.paste(face.resize((round(224 * s), round(224 * s))), (x, y))
            gts.append((x + b[0] * s, y + b[1] * s, x + (b[0] + b[2]) * s, y + (b[1] + b[3]) * s))
        out.append((img, gts))
    return out


def face_free(n: int, bgs: list[Image.Image]) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            a = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
            out.append(Image.fromarray(a))
        elif kind == 1:
            a = rng.normal(128, 40, (H // 8, W // 8, 3)).clip(0, 255).astype(np.uint8)
            out.append(Image.fromarray(a).resize((W, H), Image.BICUBIC))
        elif kind == 2:
            img = Image.new("RGB", (W, H), tuple(int(v) for v in rng.integers(0, 256, 3)))
            d = ImageDraw.Draw(img)
            for _ in range(30):
                x, y, r = rng.integers(0, W), rng.integers(0, H), rng.integers(10, 120)
                d.ellipse((x - r, y - r, x + r, y + r),
                          fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
            out.append(img.filter(ImageFilter.GaussianBlur(6)))
        else:
            out.append(bgs[i % len(bgs)])
    return out


def contact_sheet(photos: list[Image.Image], probe) -> tuple[Image.Image, list]:
    """36 photos in 80 px cells (6x6, 480x480), as tests/test_hostile.py builds its sheet."""
    cell, side = 80, 72
    sheet, truth = Image.new("RGB", (6 * cell, 6 * cell), (240, 240, 240)), []
    for k, p in enumerate(photos):
        x, y = (k % 6) * cell + 4, (k // 6) * cell + 4
        sheet.paste(p.resize((side, side)), (x, y))
        b = max(probe.detect(p), key=lambda q: q.score).box
        s = side / 224
        truth.append((x + b[0] * s, y + b[1] * s, x + (b[0] + b[2]) * s, y + (b[1] + b[3]) * s))
    return sheet, truth


def recall(gts: list, faces: list) -> int:
    n = 0
    for g in gts:
        cx, cy, gs = (g[0] + g[2]) / 2, (g[1] + g[3]) / 2, g[2] - g[0]
        n += any(f.box.x <= cx <= f.box.x + f.box.w and f.box.y <= cy <= f.box.y + f.box.h
                 and 0.5 < f.box.w / gs < 2 for f in faces)
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", type=int, default=24, help="faces per size")
    ap.add_argument("--sizes", default="16,24,32,48,64,96")
    ap.add_argument("--empty", type=int, default=100, help="face-free images")
    ap.add_argument("--detectors", default="short,wide,auto")
    a = ap.parse_args()
    from video import cpu_flags, cpu_model

    from facegender import Predictor
    from facegender.faces import FaceDetector

    faces = fairface(a.faces)
    probe = FaceDetector(auto_tiles=False)
    boxes = [max(probe.detect(f), key=lambda q: q.score).box for f in faces]
    bgs = backgrounds(fairface(8, skip=3))
    collage = Image.new("RGB", (900, 300))
    truth = []
    for i, p in enumerate(fairface(4, skip=5)):
        collage.paste(p.resize((225, 225)), (i * 225, 37))
        b = max(probe.detect(p), key=lambda q: q.score).box
        truth.append((i * 225 + b[0] * 225 / 224, 37 + b[1] * 225 / 224,
                      i * 225 + (b[0] + b[2]) * 225 / 224, 37 + (b[1] + b[3]) * 225 / 224))
    sheet, sheet_truth = contact_sheet(fairface(36, skip=2), probe)
    empty = face_free(a.empty, bgs)
    sizes = [int(s) for s in a.sizes.split(",")]
    print(f"CPU: {cpu_model()} ({cpu_flags()}); fast model, one detector thread; "
          f"{a.faces} fairface faces per size in {W}x{H} frames; load average at the start: "
          f"{os.getloadavg()[0]:.1f}")
    print("\n| detector | " + " | ".join(f"{s} px" for s in sizes) +
          " | collage 4 | contact sheet 36 | face-free: images with a face (faces) | ms / 720p frame "
          "| CPU ms / 720p frame |")
    print("| --- |" + " ---: |" * (len(sizes) + 5))
    for mode in a.detectors.split(","):
        pred = Predictor("fast", detector=mode, threads=1)
        cells, times, cpus = [], [], []
        for s in sizes:
            hit = 0
            for img, gts in wide_frames(s, a.faces, bgs, faces, boxes):
                t, c = time.perf_counter(), time.process_time()
                (res,) = pred.predict(img, workers=1)
                times.append(time.perf_counter() - t)
                cpus.append(time.process_time() - c)
                hit += recall(gts, [f for f in res.faces if f.box])
            cells.append(f"{hit}/{a.faces}")
        (res,) = pred.predict(collage, workers=1)
        cells.append(f"{recall(truth, res.faces)}/4")
        (res,) = pred.predict(sheet, workers=1)
        cells.append(f"{recall(sheet_truth, res.faces)}/36")
        fp = [sum(f.det_score is not None for f in pred.predict(img, workers=1)[0].faces)
              for img in empty]
        cells.append(f"{sum(1 for n in fp if n)}/{len(empty)} ({sum(fp)})")
        print(f"| {mode} | " + " | ".join(cells) +
              f" | {statistics.median(times) * 1000:.0f} | {statistics.median(cpus) * 1000:.0f} |",
              flush=True)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
