"""Tiny videos made in a test from real faces of examples/ (a woman, fairface_0027; a man,
fairface_0010) on a gradient, H.264 at 10 fps: the server's and the Ray engine's video tests."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
W, H, FPS, SIDE = 320, 180, 10, 110


def encode_clip(frames: list[Image.Image], rate: int = FPS) -> bytes:
    """H.264 MP4 bytes of `frames`, made in memory."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        s = out.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt = frames[0].width, frames[0].height, "yuv420p"
        s.options = {"crf": "16", "preset": "veryfast"}
        for img in frames:
            for packet in s.encode(av.VideoFrame.from_image(img)):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)
    return buf.getvalue()


def two_people(seconds: int = 3, man: bool = True) -> list[Image.Image]:
    """Every frame: a woman on the left, drifting right, and (`man`) a man on the right."""
    woman = Image.open(EXAMPLES / "fairface_0027.jpg").convert("RGB").resize((SIDE, SIDE))
    him = Image.open(EXAMPLES / "fairface_0010.jpg").convert("RGB").resize((SIDE, SIDE))
    y, x = np.mgrid[0:H, 0:W]
    bg = Image.fromarray(np.stack([40 + x * 0.3, 80 + y * 0.5, 140 + 0 * x], -1)
                         .clip(0, 255).astype(np.uint8))
    frames = []
    for i in range(FPS * seconds):
        img = bg.copy()
        img.paste(woman, (10 + i, 30))
        if man:
            img.paste(him, (195, 40))
        frames.append(img)
    return frames
