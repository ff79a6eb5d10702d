"""Training-time augmentations for faces, on PIL images, before the shared preprocessing.

They cover what the detector and real photos vary: crop position/scale (detector jitter), mirror,
lighting and colour, grayscale photos, blur and JPEG artefacts. Randomness comes from torch's
RNG so that a seeded run (and a resumed one) sees the same augmentations.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

from ..errors import require

torch = require("torch")
T = require("torchvision.transforms")


def _rand(lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand(()).item()


class CropJitter:
    """Re-crop the face box with random scale and shift; edges are replicated when zooming out,
    so a looser detector crop still looks like a plausible face photo."""

    def __init__(self, scale: tuple[float, float] = (0.85, 1.15), shift: float = 0.06):
        self.scale, self.shift = scale, shift

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        s = _rand(*self.scale)
        cw, ch = w * s, h * s
        cx = w / 2 + _rand(-self.shift, self.shift) * w
        cy = h / 2 + _rand(-self.shift, self.shift) * h
        x0, y0 = int(round(cx - cw / 2)), int(round(cy - ch / 2))
        x1, y1 = int(round(cx + cw / 2)), int(round(cy + ch / 2))
        pad = max(0, -x0, -y0, x1 - w, y1 - h)
        if pad:
            arr = np.pad(np.asarray(img), ((pad, pad), (pad, pad), (0, 0)), mode="edge")
            img = Image.fromarray(arr)
            x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
        return img.crop((x0, y0, x1, y1))


class JPEGRecompress:
    """Re-encode at a random quality: the compression artefacts of web and phone photos."""

    def __init__(self, quality: tuple[int, int] = (30, 90)):
        self.quality = quality

    def __call__(self, img: Image.Image) -> Image.Image:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(_rand(*self.quality)))
        buf.seek(0)
        return Image.open(buf).convert("RGB")


class Blur:
    """Gaussian blur with a random radius in pixels (PIL's, so it scales with small crops)."""

    def __init__(self, radius: tuple[float, float] = (0.3, 1.5)):
        self.radius = radius

    def __call__(self, img: Image.Image) -> Image.Image:
        return img.filter(ImageFilter.GaussianBlur(_rand(*self.radius)))


class LowResolution:
    """Shrink to a random fraction of the side and scale back up: the soft, small faces of group
    photos and webcams, which celebrity crops rarely show."""

    def __init__(self, fraction: tuple[float, float] = (0.35, 0.8)):
        self.fraction = fraction

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        f = _rand(*self.fraction)
        small = img.resize((max(8, round(w * f)), max(8, round(h * f))), Image.BILINEAR)
        return small.resize((w, h), Image.BILINEAR)


AUGMENTATIONS = ("default", "strong", "light", "none")


def face_augmentation(strength: str = "default"):
    """A PIL -> PIL callable. 'none' disables augmentation; 'light' keeps only flip + small jitter;
    'strong' widens every range and adds low-resolution faces, trading some in-domain accuracy for
    robustness to photos unlike the training set (other ages, cameras, framings)."""
    if strength not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {strength!r}; choose from {', '.join(AUGMENTATIONS)}")
    if strength == "none":
        return None
    if strength == "light":
        return T.Compose([T.RandomHorizontalFlip(), CropJitter((0.92, 1.08), 0.03)])
    if strength == "strong":
        return T.Compose([
            T.RandomHorizontalFlip(),
            CropJitter((0.8, 1.25), 0.08),
            T.RandomRotation(15, interpolation=T.InterpolationMode.BILINEAR),
            T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.5, hue=0.05),
            T.RandomGrayscale(0.2),
            T.RandomApply([LowResolution()], p=0.25),
            T.RandomApply([Blur((0.3, 2.0))], p=0.2),
            T.RandomApply([JPEGRecompress((20, 90))], p=0.3),
        ])
    return T.Compose([
        T.RandomHorizontalFlip(),
        CropJitter(),
        T.RandomRotation(10, interpolation=T.InterpolationMode.BILINEAR),
        T.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03),
        T.RandomGrayscale(0.1),
        T.RandomApply([Blur()], p=0.15),
        T.RandomApply([JPEGRecompress()], p=0.3),
    ])
