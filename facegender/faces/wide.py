"""The wide-shot face detector: MediaPipe BlazeFace back-camera over overlapping tiles.

Short-range BlazeFace (detector.py) is made for faces that fill much of a selfie; in a TV frame
faces of 20-60 px are the norm. The back-camera model (Apache-2.0, Google; converted by
tools/convert_mediapipe_detectors.py, shipped in ``weights/detector/``) looks at 256 px and
finds faces from about 17 px of its input, so tiles of 480 px (scale 0.53) reach faces of about
24-32 px in the frame, and one letterboxed pass over the whole image finds the large ones.
Measured by benchmarks/detection.py (recall by face size, the 4-face collage, face-free images).

Same output as FaceDetector: ``Face`` records (box, score, six landmarks in LANDMARKS order)
best first. Which detector runs is chosen by ``choose_detector`` (``--detector``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import FaceGenderError
from .detector import (
    MODEL_DIR,
    SURE_SCORE,
    Face,
    FaceDetector,
    axis_tiles,
    context_window,
    detector_session,
    match_box,
    weighted_nms,
)
from .kinds import DETECTORS

MODEL = "blazeface_back.onnx"
_INPUT = 256  # back-camera input side
# Anchor grids (MediaPipe ssd_anchors_calculator for face_detection_back: strides 16, 32, 32,
# 32; the three stride-32 layers share one 8x8 grid): 16x16 x 2 anchors, then 8x8 x 6.
_GRIDS = ((16, 2), (32, 6))
# Tile side for images up to REF_SIDE px long: 10 tiles for 1280x720. Longer images get tiles
# in proportion (1080p: 720 px, again 10 tiles), so a frame costs the same at any resolution and
# faces are found down to the same share of the frame (~24 px at 720p, ~36 px at 1080p).
TILE = 480
REF_SIDE = 1280
# Modes of --detector: short-range only, back-camera tiles only, or chosen per image.
# `auto` uses the wide-shot detector on video frames, and on stills whose short-range result
# has no face of _BIG or more of the longer side when the still is wide (aspect >= _WIDE_ASPECT)
# or large (longer side >= _LARGE px); a one-face photo keeps the short-range cost.
_BIG = 0.2
_WIDE_ASPECT = 2.0
_LARGE = 1000
# Confirmation by short-range BlazeFace in a window where the face fills 40% of its 128 px
# input (detector.py's refine window). On benchmarks/detection.py's frames, real faces of
# 24-96 px found by back-camera score 0.58-0.9 there (16 px: from 0.51); the false faces it
# finds on blurred colour blobs and photo texture score 0 or 0.55.
_CONFIRM = 0.56


@lru_cache(maxsize=1)
def _anchors() -> np.ndarray:
    """Anchor centres in input pixels, in the model's output order (row, column, anchor)."""
    out = []
    for stride, per_cell in _GRIDS:
        n = _INPUT // stride
        c = (np.arange(n, dtype=np.float32) + 0.5) * stride
        xx, yy = np.meshgrid(c, c)
        out.append(np.repeat(np.stack([xx.ravel(), yy.ravel()], 1), per_cell, axis=0))
    return np.concatenate(out)  # (896, 2)


class WideFaceDetector:
    """Finds faces, small ones included, in RGB images; ``detect`` returns them best first.

    tile: side in image pixels of the overlapping tiles (50% overlap) searched besides one pass
        over the whole image, for images up to REF_SIDE px long (longer ones: in proportion);
        smaller tiles find smaller faces and cost more (a pass each, ~6 ms of CPU).
    score_threshold: minimum detector confidence.
    gate: keep a face only if short-range BlazeFace confirms it (score >= _CONFIRM) in a
        window where it fills 40% of a 128 px pass (~1 ms a face); the face then gets
        short-range's box, score and landmarks there, which the crop policy was measured on.
    min_face: drop faces whose box is smaller than this many pixels.
    """

    def __init__(self, tile: int = TILE, score_threshold: float = 0.5,
                 threads: int | None = None, min_face: int | None = None, gate: bool = True,
                 model_path: str | Path | None = None) -> None:
        if tile < 64:
            raise FaceGenderError(f"tile must be at least 64 px, got {tile}")
        if not 0.0 <= score_threshold <= 1.0:
            raise FaceGenderError(f"score_threshold must be in [0, 1], got {score_threshold}")
        self.tile, self.score_threshold, self.min_face, self.gate = \
            int(tile), float(score_threshold), min_face, gate
        self.model_path = Path(model_path) if model_path else MODEL_DIR / MODEL
        if not self.model_path.is_file():
            raise FaceGenderError(f"wide-shot face detector model not found: {self.model_path}"
                                  " (an incomplete facegender install, or a wrong model_path)")
        # one thread by default: the Predictor detects in a thread per core
        self._session = detector_session(self.model_path, threads)
        self._input = self._session.get_inputs()[0].name
        # Short-range without its tiles: the probe of `detect(probe=True)` and the gate.
        self._short = FaceDetector(threads=threads, score_threshold=score_threshold,
                                   auto_tiles=False)

    def regions(self, w: int, h: int) -> list[tuple[int, int, int, int]]:
        """The whole image, then tiles of `tile` px with 50% overlap (none if it fits one)."""
        regions = [(0, 0, w, h)]
        t = max(self.tile, round(self.tile * max(w, h) / REF_SIDE))
        if max(w, h) > t:
            regions += [(x, y, min(x + t, w), min(y + t, h))
                        for y in axis_tiles(h, t) for x in axis_tiles(w, t)]
        return regions

    def _run(self, image: Image.Image, region: tuple[float, float, float, float]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One letterboxed pass over `region` -> boxes (x0, y0, x1, y1), scores, keypoints in
        image pixels, above the threshold."""
        x0, y0, x1, y1 = region
        rw, rh = x1 - x0, y1 - y0
        s = _INPUT / max(rw, rh)
        nw, nh = max(1, round(rw * s)), max(1, round(rh * s))
        part = image.resize((nw, nh), Image.BILINEAR, box=(x0, y0, x1, y1), reducing_gap=2.0)
        batch = np.zeros((_INPUT, _INPUT, 3), np.uint8)
        ox, oy = (_INPUT - nw) // 2, (_INPUT - nh) // 2
        batch[oy:oy + nh, ox:ox + nw] = np.asarray(part)
        x = (batch.astype(np.float32).transpose(2, 0, 1)[None] * (1 / 127.5) - 1.0)
        raw, logits = self._session.run(None, {self._input: x})
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[0, :, 0], -80, 80)))
        keep = np.nonzero(scores >= self.score_threshold)[0]
        r, a = raw[0, keep], _anchors()[keep]
        sx, sy = rw / nw, rh / nh
        cx, cy = (r[:, 0] + a[:, 0] - ox) * sx + x0, (r[:, 1] + a[:, 1] - oy) * sy + y0
        bw, bh = r[:, 2] * sx, r[:, 3] * sy
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        kps = (r[:, 4:16].reshape(-1, 6, 2) + a[:, None, :] - (ox, oy)) * (sx, sy) + (x0, y0)
        return boxes, scores[keep], kps

    def _tile_pass(self, image: Image.Image, region: tuple[int, int, int, int]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A tile keeps only the faces it sees whole and small: a face cut by its edge, or big
        for it, is another tile's or the whole pass's (as in FaceDetector._candidates)."""
        boxes, sc, kps = self._run(image, region)
        w, h = image.size
        rx0, ry0, rx1, ry1 = region
        if region == (0, 0, w, h):
            return boxes, sc, kps
        tol = 0.02 * (rx1 - rx0)
        size = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        ok = (size <= 0.6 * max(rx1 - rx0, ry1 - ry0)) \
            & ((boxes[:, 0] > rx0 + tol) | (rx0 == 0)) & ((boxes[:, 1] > ry0 + tol) | (ry0 == 0)) \
            & ((boxes[:, 2] < rx1 - tol) | (rx1 == w)) & ((boxes[:, 3] < ry1 - tol) | (ry1 == h))
        return boxes[ok], sc[ok], kps[ok]

    def _confirm(self, image: Image.Image, merged: list) -> list:
        """Short-range's look at each face in its 40% window: its box, score and landmarks
        where it confirms the face (score >= _CONFIRM), nothing where it does not."""
        if not merged:
            return []
        looks = self._short.run_windows(image, [context_window(b) for b, _, _ in merged])
        out = []
        for (b, _, _), (boxes, sc, kps) in zip(merged, looks, strict=True):
            j = match_box(b, boxes, sc)
            if j is not None and sc[j] >= _CONFIRM:
                out.append((boxes[j], float(sc[j]), kps[j]))
        if len(out) < 2:
            return out
        # Two candidates of one face (a tile's and the whole pass's) confirm as one box.
        return weighted_nms(np.stack([b for b, _, _ in out]), np.array([s for _, s, _ in out]),
                             np.stack([k for _, _, k in out]))

    def detect(self, image: Image.Image | np.ndarray, probe: bool = False) -> list[Face]:
        """RGB PIL image (other modes are converted) or HxWx3 uint8 array -> faces, best first.
        probe: first one short-range pass (~2 ms); if it finds a big face it is sure of (a
        portrait), that is the answer and the tiles are not searched."""
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise FaceGenderError(f"expected an HxWx3 uint8 RGB array, got {image.shape} "
                                      f"{image.dtype}")
            image = Image.fromarray(image)
        if image.mode != "RGB":
            image = image.convert("RGB")
        w, h = image.size
        if w < 1 or h < 1:
            return []
        if probe:
            found = self._short.detect(image)
            if has_big_face(found, (w, h)):
                return found
        parts = [self._tile_pass(image, r) for r in self.regions(w, h)]
        boxes = np.concatenate([p[0] for p in parts])
        if not len(boxes):
            return []
        found = (boxes, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]))
        merged = weighted_nms(*found)
        if self.gate:
            merged = self._confirm(image, merged)
        faces = []
        for b, s, k in merged:
            x0, y0, x1, y1 = (float(v) for v in b)
            if x1 <= x0 or y1 <= y0 or (self.min_face and max(x1 - x0, y1 - y0) < self.min_face):
                continue
            faces.append(Face((x0, y0, x1 - x0, y1 - y0), float(s), k.astype(np.float32)))
        faces.sort(key=lambda f: -f.score)
        return faces

    __call__ = detect


def choose(mode: str, size: tuple[int, int], video_frame: bool = False) -> str:
    """Which detector `mode` (one of DETECTORS) runs on an image of `size`: "short", "wide",
    or "probe" (auto on a wide or large still: one short-range pass first, and the wide-shot
    detector unless that pass finds a big face it is sure of; WideFaceDetector.detect). auto
    sends video frames to "wide" and keeps other stills, the one-face photo, on "short"."""
    if mode not in DETECTORS:
        raise FaceGenderError(f"unknown face detector {mode!r}; choose from {', '.join(DETECTORS)}")
    if mode != "auto":
        return mode
    if video_frame:
        return "wide"
    long, short = max(size), max(1, min(size))
    return "probe" if long >= _LARGE or long / short >= _WIDE_ASPECT else "short"


def has_big_face(faces: list[Face], size: tuple[int, int]) -> bool:
    """Whether `faces` hold one of _BIG or more of the longer side with a sure score (a false
    big box, which short-range sometimes draws on texture, scores under SURE_SCORE)."""
    return any(max(f.box[2], f.box[3]) >= _BIG * max(size) and f.score >= SURE_SCORE for f in faces)
