"""Small faces read more female: a face shown at half or a third of its size loses the cues
that read male (stubble, brows, the jaw's shading) and keeps those that read female, so an
uncorrected model calls small men women. Measured on the accurate model of 2026-12-06 (AAF,
FiW, KinFaceW test and fairface540 faces shown at 1/1, 1/2, 1/3 of their size): the male logit
falls by 0.2-0.6 on average, male recall from 98.6% to 92.4% on FiW at 1/3 while female recall
stays. In wide shots, where faces are small, that would inflate women's screen time.

The fit: each validation face (never a test split) is shown at its size and at 1/2 and 1/3 of
it (box-filtered, as a smaller photo or a wide shot gives it) and read by the Predictor exactly
as prediction reads it; the shift (`below_px`, `per_octave`: male logits added per halving of
the face's box side below `below_px`, infer.preprocess.shift_small_faces) is the one that
minimises the log loss over all those views, every source weighted alike.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import FaceGenderError
from ..infer.preprocess import shift_small_faces
from ..io.sources import Sample
from .sampling import balanced_weights

SCALES = (1, 2, 3)
BELOW_PX = (48.0, 64.0, 80.0, 96.0, 128.0)
PER_OCTAVE = tuple(round(float(a), 2) for a in np.arange(-1.0, 2.001, 0.05))


def shrunk(data: bytes, k: int) -> bytes:
    """The image 1/k of its size (box filter), as PNG bytes; k = 1 gives `data` itself."""
    if k == 1:
        return data
    img = Image.open(io.BytesIO(data)).convert("RGB")
    small = img.resize((max(8, img.width // k), max(8, img.height // k)), Image.Resampling.BOX)
    buf = io.BytesIO()
    small.save(buf, "PNG")
    return buf.getvalue()


def small_face_views(model: str | Path, samples: Sequence[Sample], threads: int | None = None,
                     progress: bool = False) -> dict[str, np.ndarray]:
    """Each sample read at every scale of SCALES by the Predictor (largest face; faces not found
    at a scale are left out): arrays p (calibrated p(male), unshifted), side (box side px),
    y (1 = male), scale, and face (the sample's index)."""
    from ..infer.predictor import Predictor

    pred = Predictor(model, largest=True, threads=threads)
    if pred.config.small_face_shift:
        raise FaceGenderError(f"{model} already shifts small faces: fit on a folder without one")
    if not pred.detect:
        raise FaceGenderError(f"{model} reads whole images: it has no face size to correct for")
    raw = [s.read_bytes() for s in samples]
    rows: list[tuple[float, float, int, int, int]] = []
    for k in SCALES:
        results = pred.predict([shrunk(b, k) for b in raw], progress=progress)
        for i, (s, r) in enumerate(zip(samples, results, strict=True)):
            if r.faces:
                f = r.faces[0]
                # the box is in the shrunk image's pixels: the face's side as the model saw it
                rows.append((f.prob_male, (f.box.w + f.box.h) / 2, int(s.label == "male"), k, i))
    if not rows:
        raise FaceGenderError("no face found in any validation image: nothing to fit on")
    a = np.array(rows, dtype=np.float64)
    return {"p": a[:, 0], "side": a[:, 1], "y": a[:, 2].astype(int),
            "scale": a[:, 3].astype(int), "face": a[:, 4].astype(int)}


def _log_loss(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-(w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum() / w.sum())


def fit_small_face_shift(views: dict[str, np.ndarray], weights: np.ndarray) -> dict[str, float]:
    """The (below_px, per_octave) of the grid with the least log loss over all views, each
    view weighted by its face's weight (`weights`, one per sample)."""
    w = weights[views["face"]]
    best = min((_log_loss(shift_small_faces(views["p"], views["side"],
                                             {"below_px": r, "per_octave": a}), views["y"], w),
                 r, a) for r in BELOW_PX for a in PER_OCTAVE)
    return {"below_px": best[1], "per_octave": best[2]}


def shift_report(views: dict[str, np.ndarray], shift: dict[str, float] | None
                 ) -> dict[int, dict[str, float]]:
    """Per scale: faces, median box side, accuracy, male and female recall with `shift`."""
    p = shift_small_faces(views["p"], views["side"], shift)
    out = {}
    for k in SCALES:
        m = views["scale"] == k
        y, call = views["y"][m], p[m] >= 0.5
        out[k] = {"faces": int(m.sum()), "side_px": round(float(np.median(views["side"][m])), 1),
                  "accuracy": round(float((call == (y == 1)).mean()), 4),
                  "male_recall": round(float(call[y == 1].mean()), 4),
                  "female_recall": round(float((~call[y == 0]).mean()), 4)}
    return out


def fit_small_faces(model: str | Path, samples: Sequence[Sample], threads: int | None = None,
                    progress: bool = False) -> dict[str, Any]:
    """Fit the small-face shift of `model` on `samples` (validation faces of several sources);
    returns the shift and the per-scale figures before and after it."""
    views = small_face_views(model, samples, threads, progress)
    shift = fit_small_face_shift(views, balanced_weights(list(samples), ["source"], 1.0))
    return {"shift": shift, "before": shift_report(views, None),
            "after": shift_report(views, shift)}
