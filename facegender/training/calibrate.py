"""Calibration that holds for ordinary photos: temperature and unsure band fitted on several
views of each validation face (the face, its mirror image and degraded copies: smaller,
re-compressed, sometimes gray), every source weighted alike.

Degraded copies weigh as much as clean crops, so the fit does not rest on the clean crops
validation sets hold. Measured on the shipped accurate model (2,904 celeba + 1,014 AAF val
faces x 3 views): temperature 0.746 -> 0.765, so its clean-crop calibration already held for
such copies; its off-CelebA miscalibration (ECE 0.14 on fairface540) comes from confident
mistakes no temperature fixes. `calibrate` re-fits an existing model folder this way (ONNX
Runtime or torch, no training); the head/tail recipe uses `fit_calibration` directly on its
stored features.
"""

from __future__ import annotations

import io
import json
import shutil
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from ..errors import FaceGenderError, ImageError
from ..infer.preprocess import softmax, to_array
from ..io.images import decode_bytes
from ..io.progress import progress_bar
from ..io.sources import Sample
from ..models import modelfile
from ..report.metrics import choose_unsure_band, expected_calibration_error, fit_temperature
from .multisource import as_specs, dropped, gather, parse_drop
from .sampling import balanced_weights
from .small_faces import fit_small_faces

# Training crops are tight: detect on the image padded by half its side (all 1,000 celeba val
# crops found this way, see faces.detect_and_crop).
TRAIN_PAD = 0.5


def degrade(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A copy as an ordinary phone or web photo would give it: smaller, re-compressed, sometimes
    gray. Seeded, so a view is reproducible."""
    if rng.random() < 0.7:
        s = rng.uniform(0.35, 0.8)
        img = img.resize((max(8, round(img.width * s)), max(8, round(img.height * s))),
                         Image.Resampling.BILINEAR)
    if rng.random() < 0.3:
        img = ImageOps.grayscale(img).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(rng.integers(30, 85)))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def fit_calibration(logits: np.ndarray, y: np.ndarray, weights: np.ndarray, male: int,
                    seed: int = 0) -> tuple[float, float]:
    """(temperature, unsure band) from logits of shape (faces, views, classes).

    Faces are resampled by `weights` (seeded; e.g. every source alike) and each drawn face
    counts with all of its views, so degraded copies weigh as much as clean crops."""
    n, views = logits.shape[:2]
    if n == 0:
        raise FaceGenderError("no validation faces to calibrate on")
    draw = np.random.default_rng(seed).choice(n, size=n, p=weights / weights.sum())
    z = logits[draw].reshape(n * views, -1)
    yy = np.repeat(y[draw], views)
    temperature = round(fit_temperature(z, yy), 4)
    p = softmax(z, temperature)[:, male]
    return temperature, choose_unsure_band((yy == male).astype(int), p)


class ViewMaker:
    """Sample -> (views, C, H, W) model input of its largest face, framed by the model's crop
    policy exactly as prediction frames it; None when no face is found."""

    def __init__(self, cfg: modelfile.ModelConfig, views: int, seed: int, threads: int | None):
        from ..faces import CropPolicy, FaceDetector

        self.cfg, self.views, self.seed = cfg, views, seed
        self.policy = CropPolicy.from_dict(cfg.crop)
        self.detector = FaceDetector(threads=threads) if self.policy.detect else None

    def face(self, img: Image.Image) -> Image.Image | None:
        # Prediction's own rule (the image itself, then padded and whole for crop-shaped inputs):
        # detecting on the padded image alone moves BlazeFace's landmarks, and so the crop.
        from ..faces.framing import find_faces

        found = find_faces(img, self.detector, self.policy, self.cfg.framing, largest=True)
        return found[0][1] if found else None

    def __call__(self, s: Sample) -> np.ndarray | None:
        return self.of(decode_bytes(s.read_bytes(), s.ref), s.ref)

    def of(self, img: Image.Image, ref: str) -> np.ndarray | None:
        return face_views(img, self.face, self.cfg, self.views, self.seed, ref)


def reads_whole_images(cfg: modelfile.ModelConfig) -> bool:
    """Does prediction ever read a whole image as the face with this model (faces.framing: a
    model trained on face crops, given an input shaped like them with no face found)?"""
    return bool(cfg.crop.get("detect")) and cfg.framing.get("kind") == "face_crops"


def whole_views(img: Image.Image, cfg: modelfile.ModelConfig) -> np.ndarray:
    """(2, C, H, W): the whole image as the model's input, and its mirror image, as prediction
    reads a crop the detector finds no face in (face_source "whole_image")."""
    a = to_array(img.convert("RGB"), cfg)
    return np.stack([a, np.ascontiguousarray(a[:, :, ::-1])])


def face_views(img: Image.Image, find: Callable[[Image.Image], Image.Image | None],
               cfg: modelfile.ModelConfig, views: int, seed: int, ref: str) -> np.ndarray | None:
    """(views, C, H, W) model input: 0 = the face `find` crops from `img`, 1 = its mirror
    image, 2.. = the face found in degraded copies (seeded by `seed` and `ref`; the clean face
    stands in where a copy has none). None when `img` has no face."""
    face = find(img)
    if face is None:
        return None
    arrays = [to_array(face, cfg)]
    if views > 1:
        arrays.append(np.ascontiguousarray(arrays[0][:, :, ::-1]))
    rng = np.random.default_rng([seed, zlib.crc32(ref.encode("utf-8", "surrogateescape"))])
    for _ in range(2, views):
        degraded = find(degrade(img, rng))
        arrays.append(to_array(degraded, cfg) if degraded is not None else arrays[0])
    return np.stack(arrays)


def calibrate(model: str | Path, data: str | Path | Sequence[str | Path], out: str | Path | None
              = None, *, views: int = 3, limit: int | None = 3000, drop: Sequence[str] = (),
              val_fraction: float = 0.1, backend: str = "auto", threads: int | None = None,
              seed: int = 0, keep_temperature: bool = False, small_faces: bool = False,
              progress: bool = True) -> dict[str, Any]:
    """Re-fit a model's temperature and unsure band on the validation faces of `data` (each
    source's val split, else a stratified `val_fraction` of its train split; never a test split;
    at most `limit` faces a source), `views` views of each, every source weighted alike. A model
    that reads whole crops when the detector finds no face (`reads_whole_images`) also gets its
    own temperature for those reads, fitted on the same images read whole (and mirrored).
    `small_faces`: also fit the small-face shift (training/small_faces.py) on the same faces
    shown smaller. `keep_temperature`: keep the model's temperature and unsure band and fit only
    those two.

    Writes the model folder to `out` (a copy; the weights are untouched) or, when `out` is None,
    updates `model` in place (refused for the models shipped in the package). Returns the old
    and new temperature, unsure band and ECE on the calibration faces, clean and degraded."""
    from ..infer.backends import make_backend

    if views < 1:
        raise FaceGenderError(f"views must be >= 1, got {views}")
    src_dir = modelfile.resolve_model_dir(model)
    if out is None and src_dir.resolve().is_relative_to(modelfile.WEIGHTS_DIR.resolve()):
        raise FaceGenderError(f"{src_dir} is a model shipped in the package: give --out DIR "
                              "for the recalibrated copy")
    cfg = modelfile.load_config(src_dir)
    whole = reads_whole_images(cfg)
    if keep_temperature and not (whole or small_faces):
        raise FaceGenderError(f"{src_dir} never reads a whole image as the face (it is not a "
                              "model of face crops) and --small-faces is off: nothing to fit")
    rules = parse_drop(drop)
    split = gather(as_specs(data), drop=rules, val_fraction=val_fraction, val_per_source=limit,
                   limit=None, seed=seed)
    val = [s for s in split.val if not dropped(s, rules)]
    engine = make_backend(src_dir, backend, threads)
    z, zw, kept, skipped = _validation_logits(val, engine, ViewMaker(cfg, views, seed, threads),
                                              cfg if whole else None, progress)
    male = cfg.male_index
    y = np.array([cfg.labels.index(s.label) for s in kept])
    weights = balanced_weights(kept, ["source"], 1.0)
    sources = sorted({s.groups.get("source", "") for s in kept})
    if keep_temperature:
        before, after = {}, {}
    else:
        before, after = refit_calibration(cfg, z, y, weights, male, seed)
        cfg.recipe = {**(cfg.recipe or {}), "calibration": (
            f"temperature and unsure band on {views} views of each validation face (face, mirror, "
            f"degraded), sources weighted alike: {', '.join(sources)}; {len(kept)} faces")}
    if whole:
        before["whole_image"], after["whole_image"] = refit_whole_image(cfg, zw, y, weights, seed)
        cfg.recipe = {**(cfg.recipe or {}), "calibration_whole_image": (
            f"temperature of whole-image reads on the same {len(kept)} validation images read "
            "whole and mirrored, sources weighted alike")}
    dest = Path(out) if out is not None else src_dir
    if out is not None:
        if dest.exists() and any(dest.iterdir()):
            raise FaceGenderError(f"{dest} already exists and is not empty; choose another --out")
        shutil.copytree(src_dir, dest, dirs_exist_ok=True)
    if small_faces:  # fitted on the folder as calibrated so far, without a shift
        cfg.small_face_shift = None
    modelfile.save_config(cfg, dest)
    if small_faces:
        fit = fit_small_faces(dest, kept, threads, progress)
        before["small_faces"], after["small_faces"] = fit["before"], fit["after"]
        cfg.small_face_shift = after["small_faces"]["shift"] = fit["shift"]
        cfg.recipe = {**(cfg.recipe or {}), "calibration_small_faces": (
            f"small-face shift on the same {len(kept)} validation faces shown at 1/1, 1/2 and "
            "1/3 of their size, sources weighted alike (least log loss)")}
        modelfile.save_config(cfg, dest)
    result = {"model": str(dest), "faces": len(kept), "views": views, "skipped": len(skipped),
              "sources": sources, "before": before, "after": after}
    (dest / "calibration.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _validation_logits(val: list[Sample], engine: Callable[[np.ndarray], np.ndarray],
                       make_views: ViewMaker, whole_cfg: modelfile.ModelConfig | None,
                       progress: bool):
    """Logits (faces, views, classes) of each validation face found, those of the whole images
    read whole (faces, 2, classes; empty unless `whole_cfg` is given), the samples kept and
    {ref: reason} for those skipped."""
    logits, whole, kept, skipped = [], [], [], {}
    for s in progress_bar(val, progress, "calibrate", unit="face"):
        try:
            img = decode_bytes(s.read_bytes(), s.ref)
            x = make_views.of(img, s.ref)
        except (ImageError, OSError) as exc:
            skipped[s.ref] = getattr(exc, "reason", None) or str(exc)
            continue
        if x is None:
            skipped[s.ref] = "no face found"
            continue
        logits.append(np.asarray(engine(x), dtype=np.float64))
        if whole_cfg is not None:
            whole.append(np.asarray(engine(whole_views(img, whole_cfg)), dtype=np.float64))
        kept.append(s)
    if not kept:
        raise FaceGenderError("no face found in any validation image: nothing to calibrate on")
    return np.stack(logits), np.stack(whole) if whole else np.empty((0, 2, 2)), kept, skipped


def refit_whole_image(cfg: modelfile.ModelConfig, zw: np.ndarray, y: np.ndarray,
                      weights: np.ndarray, seed: int = 0) -> tuple[dict[str, float], dict[str, float]]:
    """Set cfg.whole_image_temperature from whole-image logits zw (faces, views, classes);
    returns it with the ECE of those reads (view 0), before and after."""
    male = cfg.male_index

    def state() -> dict[str, float]:
        t = cfg.whole_image_temperature or cfg.temperature
        ece = expected_calibration_error((y == male).astype(int), softmax(zw[:, 0], t)[:, male])
        return {"temperature": t, "ece": round(float(ece), 4)}

    before = state()
    cfg.whole_image_temperature = fit_calibration(zw, y, weights, male, seed)[0]
    return before, state()


def refit_calibration(cfg: modelfile.ModelConfig, z: np.ndarray, y: np.ndarray,
                      weights: np.ndarray, male: int, seed: int = 0
                      ) -> tuple[dict[str, float], dict[str, float]]:
    """Set cfg's temperature and unsure band from logits z (faces, views, classes) with
    fit_calibration; returns both settings with their ECEs (clean, degraded), before and after."""
    def state() -> dict[str, float]:
        return {"temperature": cfg.temperature, "unsure_band": cfg.unsure_band,
                **calibration_eces(z, y, male, cfg.temperature)}

    before = state()
    cfg.temperature, cfg.unsure_band = fit_calibration(z, y, weights, male, seed)
    return before, state()


def calibration_eces(z: np.ndarray, y: np.ndarray, male: int, temperature: float) -> dict[str, float]:
    """ECE of the clean crops (view 0) and of the degraded copies (views 2..) at `temperature`."""
    out = {"ece_clean": expected_calibration_error(
        (y == male).astype(int), softmax(z[:, 0], temperature)[:, male])}
    if z.shape[1] > 2:
        zd = z[:, 2:].reshape(-1, z.shape[2])
        out["ece_degraded"] = expected_calibration_error(
            (np.repeat(y, z.shape[1] - 2) == male).astype(int), softmax(zd, temperature)[:, male])
    return {k: round(float(v), 4) for k, v in out.items()}
