"""Pictures of what was classified: the photo with boxes and labels, and the face crops."""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..io.targets import replace_file
from .predictor import ImageResult

COLOURS = {"male": (33, 118, 255), "female": (232, 62, 140), "unsure": (160, 160, 160)}


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size bitmap font
        return ImageFont.load_default()


def draw_faces(result: ImageResult) -> Image.Image:
    """A copy of the photo with each face's box and 'label p' drawn on it."""
    if result.image is None:
        raise ValueError("the result holds no image; predict with keep_images=True")
    img = result.image.copy()
    draw = ImageDraw.Draw(img)
    side = max(img.size)
    width = max(2, side // 250)
    font = _font(max(12, side // 40))
    for f in result.faces:
        if f.box is None:
            continue
        x, y, w, h = f.box
        kind = "unsure" if f.unsure else f.label
        colour = COLOURS[kind]
        draw.rectangle([x, y, x + w, y + h], outline=colour, width=width)
        p = f.prob_male if f.label == "male" else f.prob_female
        text = f"{f.index}: {kind} {p:.0%}" if not f.unsure else f"{f.index}: unsure ({f.label} {p:.0%})"
        tb = draw.textbbox((0, 0), text, font=font)
        tw, th = tb[2] - tb[0], tb[3] - tb[1]
        ty = y - th - 2 * width if y - th - 2 * width >= 0 else y + h
        draw.rectangle([x, ty, x + tw + 2 * width, ty + th + 2 * width], fill=colour)
        draw.text((x + width, ty + width - tb[1]), text, fill=(255, 255, 255), font=font)
    return img


def safe_stem(path: str) -> str:
    """A file-name-safe stem for an input reference (paths, tar members, '<bytes 3>')."""
    name = path.split("::")[-1]
    stem = Path(name).stem or "image"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[:80]


def save_outputs(result: ImageResult, n: int, crops_dir: Path | None, annotate_dir: Path | None
                 ) -> None:
    """Write face crops and/or the annotated photo; `n` keeps names unique across inputs. Each
    file goes in through a temporary file (io.targets.replace_file): a link or FIFO at the name
    is replaced, never followed. The folders themselves were checked before the run
    (io.targets.folder_target)."""
    if result.image is None:
        return
    stem = f"{n:05d}_{safe_stem(result.path)}"
    if crops_dir is not None:
        for f, crop in zip(result.faces, result.crops, strict=True):
            replace_file(crops_dir / f"{stem}_face{f.index}_{f.label}.png",
                         lambda tmp, crop=crop: crop.save(tmp, "PNG"))
    if annotate_dir is not None:
        drawn = draw_faces(result)
        replace_file(annotate_dir / f"{stem}.jpg", lambda tmp: drawn.save(tmp, "JPEG", quality=90))
