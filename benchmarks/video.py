"""Video speed as a media study needs it: the real-time factor (seconds of video per second of
wall time) of `facegender.track` and of plain `predict` on videos, at 720p and 1080p.

    PYTHONPATH=. python benchmarks/video.py [--seconds 20] [--sizes 720,1080] [--models fast,accurate]
                               [--rounds 1] [--gop 2] [--work DIR]

The videos are made here (not timed): `--seconds` of 25 fps H.264 (libx264, CRF 23, keyframe
every `--gop` seconds: 2 as web video is often cut, 0.5 as broadcast), three FairFace faces
(examples/) moving over a
photographic-looking background (smooth gradients and grain), one leaving and coming back, a
cut halfway. Scenarios, each timed from the API call to its last result (model already loaded):
- `1 fps, predict`: `Predictor.predict(video, video_every=1.0)`: one row per face a second,
  each frame found by seeking (the untracked path);
- `1 fps, track`: `track_video(..., every=1.0)`: one decoding pass, tracks and labels;
- `25 fps, track, detect every 5th`: `track_video(..., period=5)`: every frame decoded and
  given rows, detection and classification on every 5th, boxes moved along tracks between;
- `keyframes, track`: `track_video(..., keyframes=True)`: only keyframes decoded.
The table records the CPU model and the cores this process may use. The real-time factor
divides the video's length by the wall time; `--rounds` > 1 gives the median. CPU s is the
process's CPU time (all its threads) for the same call: on a machine shared with other work the
wall time grows with the load, the CPU time much less, so it is the figure to compare between
runs; the CPU-bound factor (video seconds per CPU second, times the usable cores) is what the
same code reaches where it has the cores to itself and the work splits evenly over them.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
FPS = 25


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines()
                  if ln.startswith("flags")), [])
    return ", ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
                     if f in flags) or "none of avx2/avx512/vnni/amx"


def make_video(path: Path, height: int, seconds: float, gop: float = 2.0) -> Path:
    import av

    width = height * 16 // 9
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    bgs = []
    for shot in range(2):
        base = np.stack([60 + 90 * x / width, 90 + 60 * y / height, 120 + 40 * np.sin(x / 97)],
                        -1) if shot == 0 else np.stack(
            [150 + 60 * y / height, 110 + 50 * np.cos(x / 131), 70 + 80 * x / width], -1)
        bgs.append(Image.fromarray((base + rng.normal(0, 6, base.shape)).clip(0, 255)
                                   .astype(np.uint8)))
    side = height // 4  # the photo's face is ~40% of it: faces of ~70 px at 720p
    faces = [Image.open(ROOT / "examples" / f).convert("RGB").resize((side, side))
             for f in ("fairface_0027.jpg", "fairface_0010.jpg", "fairface_0061.jpg")]
    n = int(seconds * FPS)
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"crf": "23", "preset": "veryfast", "g": str(max(1, round(gop * FPS)))}
        for i in range(n):
            t = i / FPS
            shot = int(t >= seconds / 2)
            img = bgs[shot].copy()
            img.paste(faces[0], (int(width * (0.05 + 0.4 * t / seconds)), height // 6))
            if not (0.2 * seconds <= t < 0.3 * seconds):  # leaves and comes back
                img.paste(faces[1], (int(width * 0.6), height // 3))
            if shot:
                img.paste(faces[2], (int(width * 0.3), height // 2))
            for packet in s.encode(av.VideoFrame.from_image(img)):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)
    return path


def scenarios(pred, path: str) -> dict:
    from facegender.infer.video_tracks import track_video

    def plain():
        return sum(len(r.faces) for r in pred.predict(path, video_every=1.0))

    def tracked(**kw):
        v = track_video(pred, path, **kw)
        return f"{len(v.times)} frames, {len(v.tracks)} tracks"

    return {"1 fps, predict": plain,
            "1 fps, track": lambda: tracked(every=1.0),
            "25 fps, track, detect every 5th": lambda: tracked(period=5),
            "keyframes, track": lambda: tracked(keyframes=True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--sizes", default="720,1080")
    ap.add_argument("--models", default="fast,accurate")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--only", default=None, help="run only scenarios whose name contains this")
    ap.add_argument("--gop", type=float, default=2.0, help="seconds between keyframes")
    ap.add_argument("--work", default=None)
    ap.add_argument("--detectors", default="auto",
                    help="face detector settings to compare (Predictor(detector=...)), e.g. "
                         "short,auto: each gets its own rows, in the same run")
    a = ap.parse_args()
    from facegender import Predictor

    work = Path(a.work or tempfile.mkdtemp(prefix="fg-video-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"CPU: {cpu_model()} ({cores} usable cores; {cpu_flags()})")
    print(f"video: {a.seconds:g} s at {FPS} fps, H.264 CRF 23, keyframe every {a.gop:g} s; load "
          f"average at the start: {os.getloadavg()[0]:.1f} (other work on the machine slows "
          "every figure)\n")
    print("| model | detector | size | scenario | wall s | real-time factor | CPU s | "
          "CPU-bound factor | result |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- |")
    for model, detector in ((m, d) for m in a.models.split(",") for d in a.detectors.split(",")):
        pred = Predictor(model, detector=detector)
        for size in (int(s) for s in a.sizes.split(",")):
            gop = "" if a.gop == 2.0 else f"_gop{a.gop:g}"  # (the 2-s name as before)
            path = work / f"bench_{size}p_{a.seconds:g}s{gop}.mp4"
            if not path.exists():
                make_video(path, size, a.seconds, a.gop)
            for name, run in scenarios(pred, str(path)).items():
                if a.only and a.only not in name:
                    continue
                walls, cpus, result = [], [], None
                for _ in range(a.rounds):
                    t, c = time.perf_counter(), time.process_time()
                    result = run()
                    walls.append(time.perf_counter() - t)
                    cpus.append(time.process_time() - c)
                w, c = statistics.median(walls), statistics.median(cpus)
                print(f"| {model} | {detector} | {size}p | {name} | {w:.2f} | {a.seconds / w:.1f}x | "
                      f"{c:.2f} | {a.seconds / c * cores:.1f}x | {result} |", flush=True)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
