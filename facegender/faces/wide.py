"""The wide-shot face detector: MediaPipe BlazeFace back-camera, one pass over the whole frame.

Short-range BlazeFace (detector.py) is made for faces that fill much of a selfie; in a TV frame
faces of 20-60 px are the norm. The back-camera model (Apache-2.0, Google; converted by
tools/convert_mediapipe_detectors.py, shipped in ``weights/detector/``) was trained at 256 px and
finds faces from about 17 px of its input. Scaled by 256/480 (0.53 at 720p), a frame's faces of
about 24-32 px reach that size; the graph is convolutional with dynamic height and width, so the
whole scaled frame (683x384, padded to multiples of 32) is searched in one pass: what overlapping
480 px tiles letterboxed to 256 saw (10 of them at 720p), for 40% of their pixels and half the
CPU, with the same recall (see _FINE_SHARE for the one difference). Short-range's letterboxed
128 px pass over the whole image finds the large faces (an image that fits one tile: one
back-camera 256 px pass). Measured by benchmarks/detection.py (recall by face size, the 4-face
collage, face-free images) and docs/performance.md (Videos: speed).

Same output as FaceDetector: ``Face`` records (box, score, six landmarks in LANDMARKS order)
best first. Which detector runs is chosen by ``choose`` (``--detector``).
"""

from __future__ import annotations

from collections.abc import Callable
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
    context_window,
    detector_session,
    looks_colour_noise,
    match_box,
    middle_luma_std,
    weighted_nms,
)
from .kinds import DETECTORS

MODEL = "blazeface_back.onnx"
_INPUT = 256  # back-camera input side
# Anchor grids (MediaPipe ssd_anchors_calculator for face_detection_back: strides 16, 32, 32,
# 32; the three stride-32 layers share one grid): (H/16)x(W/16) x 2 anchors, then (H/32)x(W/32)
# x 6; 16x16 and 8x8 at 256 px.
_GRIDS = ((16, 2), (32, 6))
_ALIGN = 32  # the fine pass's sides are padded to a multiple of the coarsest stride
# The fine pass looks at the image scaled as a tile of TILE px was letterboxed into 256 px, for
# images up to REF_SIDE px long; longer images in proportion (1080p: as 720 px tiles), so a frame
# costs the same at any resolution and faces are found down to the same share of the frame
# (~24 px at 720p, ~36 px at 1080p). It keeps faces up to 0.6 TILE (as a tile kept the faces
# small for it); bigger ones are the whole-image pass's.
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
# The one-pass search sees more around each face than a 480 px tile did, and scores small faces
# lower: at the tiles' threshold (0.5) it found 21/24 faces of 24 px and 22/24 of 32 px where
# tiles found 23 and 24 (benchmarks/detection.py frames). So it keeps candidates from this share
# of score_threshold (0.3), and one that scored under score_threshold, which short-range
# confirms without being sure of it (< SURE_SCORE), must also pass short-range's face-quality
# gate (mirror look, colouring, a look with context; detector.py): with it, 23/24 and 24/24
# again and still no face on the face-free images (without it, one on blurred colour blobs).
_FINE_SHARE = 0.6
# A confirmed face must show some brightness variation in its middle (eyes, brows, mouth):
# blurred flat colour discs passed every other check (3 of 100 face-free frames of
# benchmarks/detection.py; middle luma std 0-5.1) where real faces found by either detector on
# fairface540, AAF, kinfacew, fiw test photos and the benchmark's 16-96 px frames gave >= 7.8.
_MIN_MIDDLE_LUMA_STD = 6.5


@lru_cache(maxsize=8)
def _anchors(height: int = _INPUT, width: int = _INPUT) -> np.ndarray:
    """Anchor centres in input pixels for an input of height x width (multiples of 32), in the
    model's output order (grid, row, column, anchor); (896, 2) at 256x256."""
    out = []
    for stride, per_cell in _GRIDS:
        cx = (np.arange(width // stride, dtype=np.float32) + 0.5) * stride
        cy = (np.arange(height // stride, dtype=np.float32) + 0.5) * stride
        xx, yy = np.meshgrid(cx, cy)
        out.append(np.repeat(np.stack([xx.ravel(), yy.ravel()], 1), per_cell, axis=0))
    return np.concatenate(out)


class WideFaceDetector:
    """Finds faces, small ones included, in RGB images; ``detect`` returns them best first.

    tile: the fine pass sees the image as a tile of this many pixels was seen in 256 (scale
        256 / tile), for images up to REF_SIDE px long (longer ones: in proportion), besides
        one pass over the whole image at 256 px; smaller tiles find smaller faces and cost
        more (CPU in proportion to the scaled image's pixels: ~30 ms at 720p here).
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

    def fine_scale(self, w: int, h: int) -> float | None:
        """The scale of the fine pass over a w x h image (256 / the tile side), or None when the
        image fits one tile and the whole-image pass is as fine."""
        t = max(self.tile, round(self.tile * max(w, h) / REF_SIDE))
        return _INPUT / t if max(w, h) > t else None

    def _pass(self, pixels: np.ndarray, ox: int, oy: int, sx: float, sy: float,
              threshold: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One pass over `pixels` (HxWx3 uint8, sides multiples of 32) -> boxes (x0, y0, x1, y1),
        scores, keypoints above the threshold, in image pixels: input pixel (u, v) is image
        pixel ((u - ox) * sx, (v - oy) * sy)."""
        # to [-1, 1] NCHW in one pass over the pixels (half the time of astype, then scale)
        x = np.empty((1, 3, *pixels.shape[:2]), np.float32)
        np.multiply(pixels.transpose(2, 0, 1), np.float32(1 / 127.5), out=x[0], casting="unsafe")
        x -= 1.0
        raw, logits = self._session.run(None, {self._input: x})
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[0, :, 0], -80, 80)))
        keep = np.nonzero(scores >= (self.score_threshold if threshold is None else threshold))[0]
        r, a = raw[0, keep], _anchors(*pixels.shape[:2])[keep]
        cx, cy = (r[:, 0] + a[:, 0] - ox) * sx, (r[:, 1] + a[:, 1] - oy) * sy
        bw, bh = r[:, 2] * sx, r[:, 3] * sy
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        kps = (r[:, 4:16].reshape(-1, 6, 2) + a[:, None, :] - (ox, oy)) * (sx, sy)
        return boxes, scores[keep], kps

    def _whole_pass(self, view: Image.Image, size: tuple[int, int]
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The large faces: the whole image letterboxed (centred on black, as MediaPipe does)
        into one pass; `view` is the image or a smaller copy of it (the fine pass's), `size` the
        image's. An image that fits one tile gets back-camera's 256 px pass (it is also the
        finest); a larger one short-range's 128 px pass (1.7 ms of CPU against 8.5 for
        back-camera's at 720p), which finds faces from about 1/7 of the longer side: the fine
        pass finds them up to 0.6 tile (0.22 of it), and every face is short-range's to confirm
        anyway. Recall on benchmarks/detection.py frames and on faces of 200-450 px pasted into
        720p frames was the same with either."""
        w, h = size
        if self.fine_scale(w, h) is not None:
            ((boxes, sc, kps),) = self._short.run_windows(view, [(0, 0, *view.size)])
            fx, fy = w / view.size[0], h / view.size[1]
            return boxes * (fx, fy, fx, fy), sc, kps * (fx, fy)
        s = _INPUT / max(w, h)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        batch = np.zeros((_INPUT, _INPUT, 3), np.uint8)
        ox, oy = (_INPUT - nw) // 2, (_INPUT - nh) // 2
        batch[oy:oy + nh, ox:ox + nw] = np.asarray(
            view.resize((nw, nh), Image.BILINEAR, reducing_gap=2.0))
        return self._pass(batch, ox, oy, w / nw, h / nh)

    def _fine_pass(self, view: Image.Image, size: tuple[int, int]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`view` (the image of `size` at fine_scale) in one pass, padded with black on the
        right and bottom to multiples of 32. With the gate on, candidates from _FINE_SHARE of
        the threshold (see there). Faces over 0.6 tile (as a tile dropped the faces big for
        it) are left to the whole-image pass."""
        nw, nh = view.size
        pw, ph = (-(-max(n, _ALIGN) // _ALIGN) * _ALIGN for n in (nw, nh))
        batch = np.zeros((ph, pw, 3), np.uint8)
        batch[:nh, :nw] = np.asarray(view)
        sx, sy = size[0] / nw, size[1] / nh
        thr = self.score_threshold * (_FINE_SHARE if self.gate else 1.0)
        boxes, sc, kps = self._pass(batch, 0, 0, sx, sy, thr)
        ok = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) \
            <= 0.6 * _INPUT * max(sx, sy)  # (detect's fine_max)
        return boxes[ok], sc[ok], kps[ok]

    def _confirm(self, image: Image.Image, merged: list, fine_max: float) -> list:
        """Short-range's look at each face in its 40% window: its box, score and landmarks
        where it confirms the face (score >= _CONFIRM), nothing where it does not. A face
        short-range is not sure of there (< SURE_SCORE) must also pass its face-quality gate
        (mirror look, colouring, a look with context; detector.py) if it is a weak candidate
        of the fine pass (_FINE_SHARE), bigger than `fine_max` (so short-range's own whole
        pass found it: as short-range alone, which draws false big boxes on texture) or
        coloured like noise in its middle (overlapping colour discs). A face whose middle is
        flat (_MIN_MIDDLE_LUMA_STD) is no face."""
        if not merged:
            return []
        looks = self._short.run_windows(image, [context_window(b) for b, _, _ in merged])
        out = []
        for (b, s, _), (boxes, sc, kps) in zip(merged, looks, strict=True):
            j = match_box(b, boxes, sc)
            if j is None or sc[j] < _CONFIRM or \
                    middle_luma_std(image, boxes[j]) < _MIN_MIDDLE_LUMA_STD:
                continue
            strict = s < self.score_threshold or max(b[2] - b[0], b[3] - b[1]) > fine_max \
                or looks_colour_noise(image, boxes[j])
            if strict and sc[j] < SURE_SCORE and \
                    not self._short._plausible(image, boxes[j], kps[j], None):
                continue
            out.append((boxes[j], float(sc[j]), kps[j]))
        if len(out) < 2:
            return out
        # Two candidates of one face (the fine pass's and the whole pass's) confirm as one.
        return weighted_nms(np.stack([b for b, _, _ in out]), np.array([s for _, s, _ in out]),
                             np.stack([k for _, _, k in out]))

    def detect(self, image: Image.Image | np.ndarray, probe: bool = False,
               scaled: Callable[[int, int], Image.Image | None] | None = None) -> list[Face]:
        """RGB PIL image (other modes are converted) or HxWx3 uint8 array -> faces, best first.
        probe: first one short-range pass (~2 ms); if it finds a big face it is sure of (a
        portrait), that is the answer and the wide-shot passes are not run.
        scaled: a faster way to the whole image at (width, height) than PIL's resize, where the
        caller has one (a video frame: the decoder's scaler, 1-2.6 ms for 1080p against 7.7);
        None, or its None, means PIL's."""
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
        scale = self.fine_scale(w, h)
        if scale is None:
            parts = [self._whole_pass(image, (w, h))]
        else:  # the whole-image pass is made from the fine pass's smaller view
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            view = scaled(*size) if scaled is not None else None
            if view is None or view.size != size:
                view = image.resize(size, Image.BILINEAR, reducing_gap=2.0)
            parts = [self._whole_pass(view, (w, h)), self._fine_pass(view, (w, h))]
        boxes = np.concatenate([p[0] for p in parts])
        if not len(boxes):
            return []
        found = (boxes, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]))
        merged = weighted_nms(*found)
        if self.gate:
            merged = self._confirm(image, merged, np.inf if scale is None else 0.6 * _INPUT / scale)
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
