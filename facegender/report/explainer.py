"""Grad-CAM for every face: where in its crop the model looked for the label it predicted.

Faces are found and cropped exactly as the Predictor does (the model's crop policy), the crop is
preprocessed with the model's own config, and Grad-CAM (pytorch-grad-cam) runs on the last
convolutional block for the class the model predicted after calibration and threshold. The
heatmap comes back at the crop's size and can be mapped back onto the photo through the crop's
box and rotation. Needs torch (the [train] extra); the weights come from model.safetensors, so a
model evaluated on ONNX Runtime is explained with the same weights.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import FaceGenderError, ImageError, require
from ..faces import CropGeometry, crop_geometry
from ..io.targets import folder_target
from ..models import modelfile
from ..models.modelfile import ModelConfig

# Last convolutional block per registered architecture: the deepest layer that still has a
# spatial map, which is what Grad-CAM needs (the heads after it pool the map away).
TARGET_LAYERS: dict[str, Callable[[Any], Any]] = {
    "mobilenetv3_small": lambda m: m.features[-1],
    "mobilenetv3_large": lambda m: m.features[-1],
    "efficientnet_b0": lambda m: m.features[-1],
    "resnet18": lambda m: m.layer4[-1],
    "mobilenetv3_small_se": lambda m: m.features[-1],  # before the SE head, not inside it
    "mobilenetv2": lambda m: m.features[-1],
    "alexnet": lambda m: m.features[-2],  # the last conv's ReLU, before the final max pool
    # dlib's ResNet: its last block is 2x2; the one before (end of alevel1) keeps a 4x4 map.
    "dlib_resnet": lambda m: m.backbone.blocks[-2],
    "dlib_resnet_mlp": lambda m: m.backbone.blocks[-2],
    # The main network's map; the second opinion (a 32 px chip of the same crop) adds its logit
    # without passing through it.
    "dlib_resnet_cydral": lambda m: m.base.backbone.blocks[-2],
    # dlib's gender classifier alone: its last convolution, 16x16 before the final pooling.
    "cydral_gender": lambda m: m.convs[-1],
    # The fast pair: the student's map (dlib's classifier adds its logit from the same crop).
    "mobilenetv3_small_cydral": lambda m: m.student.features[-1],
    # FaceRes-deep: its last separable block, 7x7 at 224 px, before the global pooling.
    "faceres": lambda m: m.blocks[-1],
    # The fused accurate model: FaceRes' map (the dlib part and dlib's classifier add logits
    # computed from the same crop, resampled inside the network).
    "faceres_fusion": lambda m: m.faceres.blocks[-1],
}


@dataclass
class Explanation:
    """One face: its prediction, crop and Grad-CAM heatmap (or the reason there is none)."""

    ref: str
    face: int | None
    box: tuple[float, float, float, float] | None  # detected face box x, y, w, h in the photo
    det_score: float | None
    label: str | None  # the predicted label (what the heatmap explains unless a target was set)
    prob_male: float | None
    target_index: int | None  # model output index the heatmap explains (config.json order)
    heatmap: np.ndarray | None  # float32 (crop height, crop width) in [0, 1]
    crop: Image.Image | None = field(default=None, repr=False)
    geometry: CropGeometry | None = None
    image: Image.Image | None = field(default=None, repr=False)  # the upright photo
    error: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    unsure: bool | None = None  # |p(male) - 0.5| below the model's unsure band
    face_source: str | None = None  # "detector" or "whole_image", as in the face record

    @property
    def ok(self) -> bool:
        return self.heatmap is not None

    def photo_heatmap(self) -> np.ndarray:
        """The heatmap in photo coordinates (photo height x width), 0 outside the crop."""
        if self.heatmap is None or self.image is None or self.geometry is None:
            raise FaceGenderError(f"{self.ref}: no heatmap to map ({self.error})")
        return map_to_photo(self.heatmap, self.geometry, self.image.size)

    def overlay(self, alpha: float = 0.5) -> Image.Image:
        """The crop with the heatmap drawn over it."""
        if self.heatmap is None or self.crop is None:
            raise FaceGenderError(f"{self.ref}: no heatmap ({self.error})")
        return overlay_heatmap(self.crop, self.heatmap, alpha)

    def mass_in_box(self, box: tuple[float, float, float, float] | None = None) -> float:
        """Fraction of the photo heatmap's mass inside `box` (default: the detected face box)."""
        box = box or self.box
        if box is None:
            raise FaceGenderError(f"{self.ref}: no face box")
        return mass_inside(self.photo_heatmap(), box)

    def face_record(self) -> dict[str, Any]:
        """The face record (infer/records.py) that predict gives for this face."""
        from ..infer.records import face_record

        return face_record(self.ref, face=self.face, box=self.box, det_score=self.det_score,
                           label=self.label, prob_male=self.prob_male, unsure=self.unsure,
                           face_source=self.face_source, error=self.error)

    def record(self) -> dict[str, Any]:
        """JSON-ready: the face record plus what Grad-CAM adds (no arrays)."""
        return {**self.face_record(), "target_index": self.target_index,
                "crop_size": None if self.crop is None else list(self.crop.size),
                "mass_in_box": None if not self.ok or self.box is None else round(
                    self.mass_in_box(), 4),
                "error": self.error, "files": self.files}


# --------------------------------------------------------------------------- geometry


def face_geometry(face: Any, policy: Any) -> CropGeometry:
    """Where the classifier's input for `face` came from: the detector crop (faces.crop_geometry)
    or, without detection, the whole box as it is."""
    if not policy.detect:
        x, y, w, h = face.box
        return CropGeometry(x + w / 2, y + h / 2, max(1, round(w)), max(1, round(h)), 0.0)
    return crop_geometry(face, policy)


def map_to_photo(heatmap: np.ndarray, geom: CropGeometry, size: tuple[int, int]) -> np.ndarray:
    """Warp a crop-sized heatmap into a photo of `size` (w, h) with the crop's inverse transform."""
    hmap = np.asarray(heatmap, dtype=np.float32)
    if hmap.shape != (geom.height, geom.width):
        hmap = resize_map(hmap, (geom.width, geom.height))
    c, s = math.cos(geom.angle), math.sin(geom.angle)
    hw, hh = geom.width / 2, geom.height / 2
    # PIL's AFFINE maps each output (photo) pixel to an input (crop) position:
    # (u, v) = R(-a) (p - centre) + half size.
    coeffs = (c, s, hw - c * geom.cx - s * geom.cy, -s, c, hh + s * geom.cx - c * geom.cy)
    # Pad by one zero pixel so bilinear sampling fades to 0 outside instead of smearing edges.
    padded = np.pad(hmap, 1)
    coeffs = (coeffs[0], coeffs[1], coeffs[2] + 1, coeffs[3], coeffs[4], coeffs[5] + 1)
    img = Image.fromarray(padded, mode="F")
    return np.asarray(img.transform(tuple(size), Image.Transform.AFFINE, coeffs,
                                    resample=Image.Resampling.BILINEAR, fillcolor=0.0),
                      dtype=np.float32)


def mass_inside(heatmap: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """Fraction of a non-negative map's total inside box (x, y, w, h); nan for an all-zero map."""
    hm = np.asarray(heatmap, dtype=np.float64)
    total = hm.sum()
    if total <= 0:
        return float("nan")
    x, y, w, h = box
    x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
    x1, y1 = min(hm.shape[1], int(round(x + w))), min(hm.shape[0], int(round(y + h)))
    return float(hm[y0:y1, x0:x1].sum() / total)


def resize_map(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float map to size (w, h)."""
    img = Image.fromarray(np.asarray(m, dtype=np.float32), mode="F")
    return np.asarray(img.resize(tuple(size), Image.Resampling.BILINEAR), dtype=np.float32)


def overlay_heatmap(img: Image.Image, heatmap: np.ndarray, alpha: float = 0.5,
                    mask: np.ndarray | None = None) -> Image.Image:
    """Colour the heatmap (jet, as Grad-CAM papers do) over `img`; where the map is cold the
    photo shows through more, so the face stays readable. `mask` limits where colour goes."""
    import matplotlib

    rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255
    hm = np.asarray(heatmap, dtype=np.float32)
    if hm.shape != rgb.shape[:2]:
        hm = resize_map(hm, img.size)
    hm = np.clip(hm, 0, 1)
    colour = matplotlib.colormaps["jet"](hm)[..., :3]
    a = alpha * (0.35 + 0.65 * hm)[..., None]
    if mask is not None:
        a = a * mask[..., None]
    out = rgb * (1 - a) + colour * a
    return Image.fromarray((out * 255).round().astype(np.uint8))


# --------------------------------------------------------------------------- model side


def target_layer(net: Any, arch: str, layer: str | None = None) -> Any:
    """The module Grad-CAM hooks: `layer` (a dotted name such as 'features.9') when given, else
    the table above, else a timm model's last feature stage."""
    if layer:
        try:
            return net.get_submodule(layer)
        except AttributeError:
            raise FaceGenderError(f"model '{arch}' has no layer {layer!r}") from None
    if arch in TARGET_LAYERS:
        return TARGET_LAYERS[arch](net)
    info = getattr(net, "feature_info", None)
    if arch.startswith("timm:") and info:
        last = info[-1] if isinstance(info, list) else info.get_dicts()[-1]
        module = net.get_submodule(last["module"])
        # A transformer's last block feeds the head only through its class token, so gradients
        # at its output are zero on the patch tokens; hook the block's first norm instead (as
        # pytorch-grad-cam's ViT example does).
        return getattr(module, "norm1", module)
    raise FaceGenderError(f"no Grad-CAM target layer known for architecture '{arch}'; "
                          "pass layer='<dotted module name>'")


def _tokens_to_map(t: Any) -> Any:
    """Vision transformers give (B, tokens, C): drop class/register tokens, make a square map."""
    if t.ndim != 3:
        return t
    n = t.shape[1]
    side = int(math.isqrt(n))
    while side > 0 and n - side * side > 8:  # at most a few prefix tokens
        side -= 1
    grid = t[:, n - side * side:, :]
    return grid.reshape(t.shape[0], side, side, t.shape[2]).permute(0, 3, 1, 2)


class GradCamExplainer:
    """A loaded model + Grad-CAM on its target layer; `explain_crops` does the work."""

    def __init__(self, model: str | Path | None = None, layer: str | None = None,
                 threads: int | None = None, device: str | None = None) -> None:
        self.torch = require("torch")
        require("pytorch_grad_cam")
        from ..models import modelfile

        if threads:
            self.torch.set_num_threads(threads)
        self.model_dir = modelfile.resolve_model_dir(model)
        from ..infer.device import torch_device

        self.device = torch_device(device)
        self.net, self.config = modelfile.load_torch_model(self.model_dir)
        self.net.to(self.device)
        self.layer = target_layer(self.net, self.config.arch, layer)
        self.layer_name = next((n for n, mod in self.net.named_modules() if mod is self.layer), "?")
        self.feature_size: tuple[int, int] | None = None  # (h, w) of the hooked map, once run

    def explain_crops(self, crops: list[Image.Image], batch_size: int = 32,
                      targets: list[str] | None = None, progress: bool = False
                      ) -> list[tuple[str, float, int, np.ndarray]]:
        """Crops -> (predicted label, p(male), explained output index, heatmap at crop size).
        `targets` names the label to explain per crop; default the predicted one."""
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        from ..infer.preprocess import softmax, to_array
        from ..io.progress import progress_bar

        cfg: ModelConfig = self.config
        out = []
        bar = progress_bar(len(crops), progress, "Grad-CAM", unit="face")
        for i in range(0, len(crops), batch_size):
            chunk = crops[i:i + batch_size]
            bar.update(len(chunk))
            x = self.torch.from_numpy(np.stack([to_array(c, cfg) for c in chunk])).to(self.device)
            with self.torch.no_grad():
                logits = self.net(x).float().cpu().numpy()
            # The label is decided as the Predictor decides it: calibrated p(male) vs threshold.
            p_male = softmax(logits, cfg.temperature)[:, cfg.male_index]
            labels = ["male" if p >= cfg.threshold else "female" for p in p_male]
            explain = labels if targets is None else targets[i:i + batch_size]
            idx = [cfg.labels.index(lb) for lb in explain]  # config order, never assumed
            with GradCAM(model=self.net, target_layers=[self.layer],
                         reshape_transform=_tokens_to_map) as cam:
                maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(k) for k in idx])
                acts = cam.activations_and_grads.activations
                if acts:
                    a = _tokens_to_map(self.torch.as_tensor(acts[-1]))
                    self.feature_size = (int(a.shape[-2]), int(a.shape[-1]))
            for crop, lb, pm, k, m in zip(chunk, labels, p_male, idx, maps, strict=True):
                out.append((lb, float(pm), k, resize_map(m, crop.size)))
        bar.close()
        return out


# --------------------------------------------------------------------------- public API


def find_faces(images: Any, config: ModelConfig, *, detect: bool | None = None,
               largest: bool = False, min_face: int | None = None, threads: int | None = None,
               max_pixels: int | None = None, progress: bool = False) -> list[Explanation]:
    """Decode `images` and cut each face's crop with the model's crop policy, without torch:
    Explanations with crop and geometry but no heatmap yet (failed images carry `error`)."""
    from ..faces import CropPolicy, FaceDetector, find_faces
    from ..infer.predictor import FailedInput, expand_inputs
    from ..io.images import decode_bytes, load_image
    from ..io.progress import progress_bar
    from ..io.sources import Sample

    crop_cfg = dict(config.crop)
    if detect is not None:
        crop_cfg["detect"] = bool(detect)
    policy = CropPolicy.from_dict(crop_cfg)
    detector = None
    if policy.detect:
        detector = FaceDetector(threads=threads, **({"min_face": min_face} if min_face else {}))
    results: list[Explanation] = []
    items = list(expand_inputs(images))
    for ref, src in progress_bar(items, progress, "find faces"):
        try:
            if isinstance(src, FailedInput):
                raise ImageError(ref, src.reason)
            if isinstance(src, Sample):
                img = decode_bytes(src.read_bytes(), ref, max_pixels)
            else:
                img = load_image(src, name=ref, max_pixels=max_pixels)
        except ImageError as exc:
            results.append(_failed(ref, exc.reason))
            continue
        except OSError as exc:
            results.append(_failed(ref, f"cannot read ({exc.strerror or exc})"))
            continue
        found = find_faces(img, detector, policy, config.framing, largest=largest)
        if not found:
            results.append(_failed(ref, None, img, label="no_face"))
        for j, (face, crop, source) in enumerate(found):
            whole = source == "whole_image"
            results.append(Explanation(
                ref=ref, face=j, box=tuple(float(v) for v in face.box),
                det_score=None if whole else float(face.score), label=None,
                prob_male=None, target_index=None, heatmap=None, crop=crop,
                geometry=face_geometry(face, CropPolicy(detect=False) if whole else policy),
                image=img, face_source=source))
    return results


def explain(images: Any, model: str | Path | None = None, out: str | Path | None = None, *,
            detect: bool | None = None, largest: bool = False, min_face: int | None = None,
            target: str | None = None, layer: str | None = None, threads: int | None = None,
            batch_size: int = 32, max_pixels: int | None = None,
            explainer: GradCamExplainer | None = None, progress: bool = False,
            device: str | None = None, strict: bool = False) -> list[Explanation]:
    """Grad-CAM for every face in `images` (paths, folders, globs, tars, manifests, PIL images,
    bytes or lists of them, as for predict).

    detect: None follows the model's crop policy; True finds faces with the detector and cuts
        the policy's crop even for a model whose policy is whole-image; False treats each image
        as one face crop. largest: only the largest face per image.
    target: explain this label ('male' or 'female') instead of the predicted one.
    layer: override the Grad-CAM target layer (dotted module name, e.g. 'features.8').
    out: also write, per image, `<name>_face<i>.png` (crop beside crop with heatmap) and
        `<name>_overlay.png` (heatmaps and boxes on the photo), plus explanations.json.
    progress: bars on stderr (finding faces, then Grad-CAM) when it is a terminal.
    device: where torch runs Grad-CAM (cpu, cuda, cuda:N).
    strict: refuse a model folder without an integrity record (else it loads with a warning).
    Returns one Explanation per face, heatmap at the crop's size; an image that failed gives one
    entry with `error` set and no heatmap, an image without a face one with label 'no_face'.
    """
    if out is not None:  # a file there, or an input folder: refused before any work
        out = folder_target(out, "output folder", images if isinstance(images, list) else [images])
    if strict and explainer is None:
        modelfile.verify_files(model, strict=True)
    ex = explainer or GradCamExplainer(model, layer=layer, threads=threads, device=device)
    if target is not None and target not in ex.config.labels:
        raise FaceGenderError(f"target must be one of {ex.config.labels}, got {target!r}")
    results = find_faces(images, ex.config, detect=detect, largest=largest, min_face=min_face,
                         threads=threads, max_pixels=max_pixels, progress=progress)
    pending = [e for e in results if e.crop is not None]
    targets = None if target is None else [target] * len(pending)
    cams = ex.explain_crops([e.crop for e in pending], batch_size, targets, progress)
    for e, (lb, pm, k, hm) in zip(pending, cams, strict=True):
        e.label, e.prob_male, e.target_index, e.heatmap = lb, pm, k, hm
        e.unsure = abs(pm - 0.5) < ex.config.unsure_band
    if out is not None:
        write_explanations(results, Path(out))
    return results


def _failed(ref: str, reason: str | None, img: Image.Image | None = None,
            label: str | None = None) -> Explanation:
    """An image without a heatmap: unreadable (`reason`) or without a face (label no_face)."""
    return Explanation(ref=ref, face=None, box=None, det_score=None, label=label,
                       prob_male=None, target_index=None, heatmap=None, image=img, error=reason)


def photo_overlay(explanations: list[Explanation], alpha: float = 0.5) -> Image.Image:
    """All faces of one photo: heatmaps inside their crops, boxes and labels drawn on top."""
    faces = [e for e in explanations if e.ok]
    img = faces[0].image
    heat = np.zeros((img.height, img.width), np.float32)
    mask = np.zeros_like(heat)
    for e in faces:
        heat = np.maximum(heat, e.photo_heatmap())
        ones = np.ones((e.geometry.height, e.geometry.width), np.float32)
        mask = np.maximum(mask, map_to_photo(ones, e.geometry, img.size))
    out = overlay_heatmap(img, heat, alpha, mask=mask)
    draw = ImageDraw.Draw(out)
    lw = max(1, round(max(img.size) / 300))
    try:
        font = ImageFont.load_default(size=max(11, round(max(img.size) / 28)))
    except TypeError:  # Pillow < 10.1 has one fixed-size default font
        font = ImageFont.load_default()
    for e in faces:
        draw.polygon(e.geometry.corners(), outline=(255, 255, 255), width=lw)
        x, y, w, h = e.box
        draw.rectangle((x, y, x + w, y + h), outline=(255, 220, 0), width=lw)
        text = f"{e.label} {max(e.prob_male, 1 - e.prob_male):.0%}"
        if e.unsure:  # the mark predict --annotate and the web page show
            text = f"unsure ({text})"
        x0, t, x1, b = draw.textbbox((0, 0), text, font=font)
        ty = y - (b - t) - 3 * lw if y - (b - t) - 3 * lw >= 0 else y + h + lw
        draw.rectangle((x, ty, x + x1 - x0 + 4, ty + b - t + 2 * lw), fill=(0, 0, 0))
        draw.text((x + 2 - x0, ty + lw - t), text, fill=(255, 220, 0), font=font)
    return out


def _stem(ref: str, used: set[str]) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(ref.split("::")[-1]).stem).strip("_.")[:60]
    name = name or "image"
    stem, k = name, 1
    while stem in used:
        k += 1
        stem = f"{name}-{k}"
    used.add(stem)
    return stem


def write_explanations(results: list[Explanation], out: Path) -> Path:
    """PNG per face (crop beside its overlay), one photo overlay per image, explanations.json."""
    out.mkdir(parents=True, exist_ok=True)
    by_image: dict[int, list[Explanation]] = {}
    for e in results:
        by_image.setdefault(id(e.image) if e.image is not None else id(e), []).append(e)
    used: set[str] = set()
    for group in by_image.values():
        stem = _stem(group[0].ref, used)
        for e in group:
            if not e.ok:
                continue
            pair = Image.new("RGB", (e.crop.width * 2, e.crop.height), "white")
            pair.paste(e.crop.convert("RGB"), (0, 0))
            pair.paste(e.overlay(), (e.crop.width, 0))
            p = out / f"{stem}_face{e.face}.png"
            pair.save(p)
            e.files["face"] = str(p)
        if any(e.ok for e in group):
            p = out / f"{stem}_overlay.png"
            photo_overlay(group).save(p)
            for e in group:
                e.files["overlay"] = str(p)
    (out / "explanations.json").write_text(
        json.dumps([e.record() for e in results], indent=2) + "\n")
    return out
