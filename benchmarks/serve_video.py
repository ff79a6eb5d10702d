"""Time of one video request to the HTTP service (in process, FastAPI's TestClient): a clip
made here from two real faces of examples/ (a woman and a man on a gradient, H.264, 10 fps),
posted at several sampling intervals; prints the frames classified, the median of --repeat
requests and the real-time factor (seconds of video per second of wall time).

    python benchmarks/serve_video.py [--seconds 10] [--size 320x180] [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import av
import numpy as np
from fastapi.testclient import TestClient
from PIL import Image
from video import cpu_model  # benchmarks/video.py

from facegender.serve import create_app

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FPS = 10


def clip(seconds: int, width: int, height: int) -> bytes:
    side = height * 11 // 18
    woman = Image.open(EXAMPLES / "fairface_0027.jpg").convert("RGB").resize((side, side))
    man = Image.open(EXAMPLES / "fairface_0010.jpg").convert("RGB").resize((side, side))
    y, x = np.mgrid[0:height, 0:width]
    bg = Image.fromarray(np.stack([40 + x * 0.3 * 320 / width, 80 + y * 0.5 * 180 / height,
                                   140 + 0 * x], -1).clip(0, 255).astype(np.uint8))
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        s = out.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        for i in range(FPS * seconds):
            img = bg.copy()
            img.paste(woman, (width // 32 + i, height // 6))
            img.paste(man, (width * 6 // 10, height * 2 // 9))
            for packet in s.encode(av.VideoFrame.from_image(img)):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--size", default="320x180")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    data = clip(a.seconds, w, h)
    print(f"{cpu_model()}; a {a.seconds} s {w}x{h} clip, {len(data):,} bytes")
    with TestClient(create_app(None, workers=1)) as c:
        for every in (1.0, 0.5, 0.1):
            times = []
            for _ in range(a.repeat):
                t = time.perf_counter()
                r = c.post("/v1/predict", params={"every": every},
                           files=[("files", ("clip.mp4", data))])
                times.append(time.perf_counter() - t)
                if r.status_code != 200:
                    raise SystemExit(f"HTTP {r.status_code}: {r.text[:200]}")
            v = r.json()["results"][0]
            med = sorted(times)[len(times) // 2]
            print(f"every {every:g} s: {v['frames']} frames, {len(v['tracks'])} tracks, "
                  f"median {med * 1000:.0f} ms a request, {a.seconds / med:.1f}x real time")


if __name__ == "__main__":
    main()
