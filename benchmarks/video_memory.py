"""Does memory stay flat over a long video? Peak RSS of `facegender.track` on the same scene
at several lengths (default 5 and 60 minutes), each in a fresh process.

    python benchmarks/video_memory.py [--minutes 5,60] [--height 360] [--model fast]
                                      [--every 1] [--work DIR]

The videos are made here (not timed): 10 fps H.264 (libx264 ultrafast, keyframe every 2 s),
two FairFace faces from examples/ moving over a gradient with grain, the man leaving for 10 s
of every minute, so a long video holds many tracks. Frames are streamed from the decoder, so
peak RSS should not grow with the video's length beyond the tracks' own records (a few hundred
bytes a face). The table gives the CPU model, each length's peak RSS, wall time, frames read
and tracks.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from video import cpu_model  # benchmarks/video.py

ROOT = Path(__file__).resolve().parents[1]
FPS = 10
# One process, one video: its peak RSS after tracking it. VmHWM, not ru_maxrss: Linux carries
# ru_maxrss over fork and exec, so it would count this script's own frames.
CHILD = """
import json, sys, time
import facegender
t = time.perf_counter()
(v,) = facegender.track(sys.argv[1], sys.argv[2], every=float(sys.argv[3]))
hwm = next(ln for ln in open("/proc/self/status") if ln.startswith("VmHWM"))
print(json.dumps({"seconds": time.perf_counter() - t, "frames": len(v.times),
                  "tracks": len(v.tracks), "error": v.error,
                  "peak_mb": int(hwm.split()[1]) / 1024}))
"""


def make_video(path: Path, minutes: float, height: int) -> Path:
    """`minutes` of a two-person scene; one minute of frames is drawn and looped."""
    import av

    width = height * 16 // 9
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(0)
    bg = Image.fromarray((np.stack([60 + 90 * x / width, 90 + 60 * y / height,
                                    120 + 40 * np.sin(x / 97)], -1)
                          + rng.normal(0, 6, (height, width, 3))).clip(0, 255).astype(np.uint8))
    side = height // 3
    woman, man = (Image.open(ROOT / "examples" / f).convert("RGB").resize((side, side))
                  for f in ("fairface_0027.jpg", "fairface_0010.jpg"))
    minute = []
    for i in range(60 * FPS):
        img = bg.copy()
        img.paste(woman, (int(width * (0.05 + 0.3 * i / (60 * FPS))), height // 6))
        if i >= 10 * FPS:  # the man is away for the first 10 s of every minute
            img.paste(man, (int(width * 0.6), height // 3))
        minute.append(av.VideoFrame.from_image(img))
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"crf": "26", "preset": "ultrafast", "g": str(2 * FPS)}
        for i in range(int(minutes * 60 * FPS)):
            for packet in s.encode(minute[i % len(minute)]):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", default="5,60")
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--model", default="fast")
    ap.add_argument("--every", type=float, default=1.0)
    ap.add_argument("--work", default=None)
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="fg-video-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"CPU: {cpu_model()}; model {a.model}; {a.height}p, {FPS} fps, a frame every "
          f"{a.every} s\n")
    print("| video | peak RSS MB | wall s | frames read | tracks |")
    print("| --- | --- | --- | --- | --- |")
    for minutes in (float(m) for m in a.minutes.split(",")):
        path = work / f"scene-{minutes:g}min-{a.height}p.mp4"
        if not path.exists():
            t = time.perf_counter()
            make_video(path, minutes, a.height)
            print(f"(made {path.name}, {path.stat().st_size / 1e6:.1f} MB, in "
                  f"{time.perf_counter() - t:.0f} s)", file=sys.stderr)
        out = subprocess.run([sys.executable, "-c", CHILD, str(path), a.model, str(a.every)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {minutes:g} min | {r['peak_mb']:.0f} | {r['seconds']:.0f} | {r['frames']} | "
              f"{r['tracks']} |", flush=True)


if __name__ == "__main__":
    main()
