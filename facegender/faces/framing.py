"""How a model's training faces were framed, measured, and the one rule for finding faces that
follows from it (predict, explain, evaluate and serve all call `find_faces`).

A model trained on tight face crops learns that framing. `measure_framing` runs the detector on a
sample of training images (padded, as tight crops need) and relates each image to its face box
the way CropPolicy's defaults were measured on celeba: the median crop-height/box ratio, aspect
and vertical offset become the model's crop policy, so a detected face in a photo is cut to look
like the training crops. The record also keeps the training images' own shape (aspect range,
size), which is how prediction recognises an input that is itself such a crop.

`find_faces`: detect; when nothing is found in an image shaped like the training crops, detect
again on the padded image; when still nothing is found there, the whole image is classified as
one face and says so (face_source "whole_image"), unless it is a flat colour or colour noise
(detector.could_be_a_face). Anything else without a face stays no-face.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from PIL import Image

from .crop import CropPolicy, detect_and_crop
from .detector import Face, FaceDetector, could_be_a_face

# Training images in which the detector finds a face in at least this share, with the crop at
# most this many box sizes tall, are face crops; otherwise they are photos, and the model is
# fed whole images as it was trained.
MIN_FOUND_SHARE = 0.8
MAX_CROP_MARGIN = 1.0
PAD = 0.5  # tight crops need room around the face for BlazeFace (1,000/1,000 celeba with 0.5)
ASPECT_SLACK = 1.1  # an input's aspect may lie this factor outside the training images' range
MIN_CROP_SIDE = 512  # the longer side a crop-like input may have: 4x the training side, >= this


def _relation(size: tuple[int, int], face: Face) -> tuple[float, float, float]:
    """(margin, aspect, offset_y) of an image around its face box, as CropPolicy defines them."""
    w, h = size
    x, y, bw, bh = face.box
    base = (bw + bh) / 2
    return h / base - 1.0, w / h, (h / 2 - (y + bh / 2)) / base


def measure_framing(images: Iterable[Image.Image], detector: FaceDetector) -> dict[str, Any]:
    """The training images' framing: how many show a face, the median crop-to-box relation
    (margin, aspect, offset_y), and the images' aspect range (p5-p95) and median longer side.
    `kind` is "face_crops" when they are tight crops, else "photos"."""
    rel, aspects, sides, n = [], [], [], 0
    for img in images:
        n += 1
        aspects.append(img.width / img.height)
        sides.append(max(img.size))
        found = detect_and_crop(img, detector, CropPolicy(), largest=True, pad=PAD)
        if found:
            rel.append(_relation(img.size, found[0][0]))
    out: dict[str, Any] = {"images": n, "faces_found": len(rel)}
    if n:
        out.update(image_aspect=[round(float(np.percentile(aspects, q)), 3) for q in (5, 95)],
                   image_side=int(np.median(sides)))
    if rel:
        m = np.median(np.asarray(rel), axis=0)
        out.update(margin=round(float(m[0]), 3), aspect=round(float(m[1]), 3),
                   offset_y=round(float(m[2]), 3))
    crops = n > 0 and len(rel) >= MIN_FOUND_SHARE * n and out.get("margin", 1e9) <= MAX_CROP_MARGIN
    out["kind"] = "face_crops" if crops else "photos"
    return out


def policy_for(framing: dict[str, Any]) -> dict[str, Any]:
    """The crop policy (config.json "crop") a model trained on these images predicts with:
    detect and cut like the training crops, or whole images for a model trained on photos."""
    if framing.get("kind") != "face_crops":
        return {"detect": False}
    return CropPolicy(detect=True, margin=framing["margin"], aspect=framing["aspect"],
                      offset_y=framing["offset_y"]).to_dict()


def looks_like_training_crop(size: tuple[int, int], framing: dict[str, Any] | None) -> bool:
    """Is an image of this size shaped like the model's training crops (aspect within their
    p5-p95 range, widened by ASPECT_SLACK, and not much larger)?"""
    if not framing or framing.get("kind") != "face_crops" or "image_aspect" not in framing:
        return False
    w, h = size
    lo, hi = framing["image_aspect"]
    aspect_ok = lo / ASPECT_SLACK <= w / h <= hi * ASPECT_SLACK
    return aspect_ok and max(w, h) <= max(MIN_CROP_SIDE, 4 * framing.get("image_side", 0))


def find_faces(image: Image.Image, detector: FaceDetector | None, policy: CropPolicy,
               framing: dict[str, Any] | None = None, largest: bool = False
               ) -> list[tuple[Face, Image.Image, str]]:
    """Faces with their policy crops and where each came from ("detector" or "whole_image"),
    by the rule in this module's docstring."""
    if not policy.detect:
        return [(f, c, "whole_image") for f, c in detect_and_crop(image, None, policy)]
    found = detect_and_crop(image, detector, policy, largest=largest)
    if found or not looks_like_training_crop(image.size, framing):
        return [(f, c, "detector") for f, c in found]
    found = detect_and_crop(image, detector, policy, largest=largest, pad=PAD)
    if found:
        return [(f, c, "detector") for f, c in found]
    if not could_be_a_face(image):  # a flat colour or colour noise is no face, whatever its shape
        return []
    whole = Face((0.0, 0.0, float(image.width), float(image.height)), math.nan, None)
    return [(whole, image.convert("RGB"), "whole_image")]
