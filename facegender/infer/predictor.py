"""The Predictor: images in, one record per face out, on any backend.

decode (images.py) -> faces (faces.py, or the whole image for crops) -> preprocess.py ->
backend -> temperature-scaled softmax -> FacePrediction. Evaluation uses this same path.
"""

from __future__ import annotations

import inspect
import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from ..errors import FaceGenderError, ImageError
from ..faces.detector import looks_doubtful
from ..io.files import byte_cap
from ..io.images import EncodedImage, load_image
from ..io.inputs import iter_input
from ..io.progress import progress_bar
from ..io.sources import Sample, SourceData
from ..io.video import DEFAULT_EVERY
from ..models import modelfile
from ..models.modelfile import ModelConfig
from .backends import make_backend
from .pipeline import choose_processes, run_processes, run_threads
from .preprocess import shift_small_faces, softmax, to_array
from .records import face_record

# The detector sees the image at 1/2..1/8 (JPEG draft decoding, else box-averaged) as long as
# its longer side keeps this many pixels. BlazeFace looks at 128 px and its refine pass at a
# window 2.5 face sizes wide, so 480 px would do; 1,000 costs a 12-MP JPEG 1.4 ms more to
# decode (1/4 instead of 1/8), already holds most face crops at the classifier's input size (no
# second, finer decode), and is the detector's own "large photo" size for its automatic tiled
# pass, so a view reaches that decision as the full-size photo would.
DETECT_SIDE = 1000


class FaceBox(NamedTuple):
    """x, y, w, h in pixels of the upright image (still a plain 4-tuple to unpack)."""

    x: float
    y: float
    w: float
    h: float


@dataclass
class FacePrediction:
    index: int
    box: FaceBox | None  # x, y, w, h in the (upright) image
    det_score: float | None
    label: str
    prob_male: float
    prob_female: float
    unsure: bool
    face_source: str = "detector"  # or "whole_image": no face detected, the image is the face

    @property
    def score(self) -> float:
        """Calibrated probability of the label."""
        return self.prob_male if self.label == "male" else self.prob_female

    def to_record(self, path: str, *, frame: int | None = None,
                  timestamp: float | None = None) -> dict[str, Any]:
        """This face as the one face record (records.RECORD) of the image at `path`."""
        return face_record(path, face=self.index, box=self.box, det_score=self.det_score,
                           label=self.label, prob_male=self.prob_male, unsure=self.unsure,
                           face_source=self.face_source, frame=frame, timestamp=timestamp)


@dataclass
class ImageResult:
    path: str
    faces: list[FacePrediction] = field(default_factory=list)
    error: str | None = None
    width: int | None = None
    height: int | None = None
    sample: Sample | None = field(default=None, repr=False)
    frame: int | None = None  # video inputs: frame number and time in seconds
    timestamp: float | None = None
    # Left out by policy (a hidden file, __MACOSX): `error` says why; not counted as a failure.
    ignored: bool = False
    # Kept only when asked (keep_images=True): the decoded photo and each face's crop.
    image: Image.Image | None = field(default=None, repr=False)
    crops: list[Image.Image] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def records(self) -> list[dict[str, Any]]:
        """Face records (infer/records.py: RECORD), one per face; an image with no face or
        an error still gets one row, with `face` null."""
        at = self.sample.groups if self.sample is not None else {}  # video frames say where
        where = {"frame": self.frame if self.frame is not None else at.get("frame"),
                 "timestamp": self.timestamp if self.timestamp is not None else at.get("timestamp")}
        if self.error or not self.faces:
            return [face_record(self.path, label=None if self.error else "no_face",
                                error=self.error, **where)]
        return [f.to_record(self.path, **where) for f in self.faces]


@dataclass(frozen=True)
class PredictOptions:
    """Options of one prediction call. Immutable: a call works on its own copy, so threads
    sharing one Predictor with different options never see each other's."""

    tta: bool = False
    largest: bool = False
    unsure_band: float = 0.0
    max_pixels: int | None = None
    max_bytes: int | None = None  # cap on one image's encoded bytes (io.files.byte_cap)
    keep_images: bool = False
    include_hidden: bool = False  # read hidden files and __MACOSX/ in folders and archives
    # Decode a JPEG only as finely as detection and each crop need (1/2..1/8 scale); False:
    # decode at full size and box-average for the detector, as every other format is.
    draft: bool = True
    # Seconds between the classified frames of a video (a video given directly or in a folder).
    video_every: float = DEFAULT_EVERY

    def replace(self, **changes: Any) -> PredictOptions:
        unknown = sorted(set(changes) - set(self.__dataclass_fields__))
        if unknown:
            raise FaceGenderError(f"unknown prediction option(s): {', '.join(unknown)}")
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _option(name: str) -> property:
    """An attribute that reads/replaces one field of the Predictor's default options."""
    def get(self: Predictor) -> Any:
        return getattr(self.options, name)

    def put(self: Predictor, value: Any) -> None:
        self.options = replace(self.options, **{name: value})

    return property(get, put, doc=f"default `{name}` of later calls (see PredictOptions)")


class Predictor:
    """Loads a model folder once; `predict` takes paths, folders, globs, tars, manifests, PIL
    images, bytes or lists of them. The model's crop policy decides how faces are found;
    `detect=False` treats every image as one face crop, and `crop` overrides policy keys.

    Per-call options (tta, largest, unsure_band, max_pixels, max_bytes, keep_images,
    include_hidden, draft) may be given to `predict`/`iter_predict`; the constructor's values are the
    defaults (`self.options`). One Predictor may serve several threads at once. `device` (cpu,
    cuda, cuda:N) is where the classifier runs (infer/device.py). `strict` refuses a model
    folder without an integrity record (otherwise it loads with a warning). `detector` (auto,
    short, wide) picks the face detector per image (faces/wide.py: `choose`)."""

    tta = _option("tta")
    largest = _option("largest")
    unsure_band = _option("unsure_band")
    max_pixels = _option("max_pixels")
    keep_images = _option("keep_images")
    draft = _option("draft")

    def __init__(self, model: str | Path | None = None, *, backend: str = "auto",
                 threads: int | None = None, tta: bool | None = None, detect: bool | None = None,
                 largest: bool = False, min_face: int | None = None,
                 score_threshold: float = 0.5, unsure_band: float | None = None,
                 max_pixels: int | None = None, keep_images: bool = False,
                 crop: dict[str, Any] | None = None, max_bytes: int | None = None,
                 include_hidden: bool = False, draft: bool = True, device: str | None = None,
                 strict: bool = False, detector: str = "auto"):
        from ..faces.kinds import DETECTORS

        if detector not in DETECTORS:
            raise FaceGenderError(f"unknown face detector {detector!r}; choose from "
                                  f"{', '.join(DETECTORS)}")
        # Which face detector runs (faces/wide.py: choose): "short" (BlazeFace short-range,
        # made for photos), "wide" (back-camera tiles, small faces of wide shots) or "auto".
        self.detector_mode = detector
        self._wide = None
        self.model_dir = modelfile.resolve_model_dir(model)
        self.config: ModelConfig = modelfile.load_config(self.model_dir)
        self.backend_name = backend
        self.device = device
        self.backend = make_backend(self.model_dir, backend, threads, device, strict)
        self.threads = threads
        self.min_face = min_face
        self.score_threshold = score_threshold
        self.options = PredictOptions(
            tta=self.config.tta if tta is None else bool(tta), largest=bool(largest),
            unsure_band=self.config.unsure_band if unsure_band is None else float(unsure_band),
            max_pixels=max_pixels, max_bytes=max_bytes, keep_images=bool(keep_images),
            include_hidden=bool(include_hidden), draft=bool(draft))
        self.detect = bool(self.config.crop.get("detect", False)) if detect is None else detect
        self._detector = None
        self._policy = None
        if self.detect:
            from ..faces import CropPolicy

            # detect=True on a model whose policy is "whole image" uses the default crop style.
            # `crop` overrides single policy keys (e.g. {"margin": 0.3}) to try other crops.
            self._policy = CropPolicy.from_dict({**self.config.crop, **(crop or {}),
                                                 "detect": True})
            self._detector = self._make_detector()

    def _make_detector(self):
        from ..faces import FaceDetector

        return FaceDetector(min_face=self.min_face, score_threshold=self.score_threshold,
                            threads=self.threads)

    # A worker process gets the Predictor by pickle and builds its own engines from the same
    # settings (ONNX Runtime sessions are not shared across processes).
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["backend"] = state["_detector"] = state["_wide"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.backend = make_backend(self.model_dir, self.backend_name, self.threads,
                                    self.__dict__.get("device"))
        if self.detect:
            self._detector = self._make_detector()

    def _wide_detector(self):
        """The wide-shot detector, built on first use (a one-face photo never needs it)."""
        if self._wide is None:
            from ..faces.wide import WideFaceDetector

            self._wide = WideFaceDetector(score_threshold=self.score_threshold,
                                          threads=self.threads, min_face=self.min_face)
        return self._wide

    def _detect(self, img: Image.Image, video_frame: bool = False, scaled: Any = None) -> list:
        """Faces of `img` by the detector `detector_mode` picks for it (faces.wide.choose):
        "auto" keeps a plain photo on short-range, so a one-face photo costs what it did."""
        from ..faces.wide import choose

        kind = choose(self.detector_mode, img.size, video_frame)
        if kind == "short":
            return self._detector.detect(img)
        return self._wide_detector().detect(img, probe=kind == "probe", scaled=scaled)

    @property
    def labels(self) -> list[str]:
        return self.config.labels

    # -- core
    def classify_arrays(self, x: np.ndarray, tta: bool | None = None,
                        whole: np.ndarray | None = None) -> np.ndarray:
        """Preprocessed NCHW batch -> calibrated p(male) per face (flip TTA when enabled).
        `whole`: a mask of the faces read as the whole image, which take the model's
        whole-image temperature where it has one."""
        t: float | np.ndarray = self.config.temperature
        if whole is not None and self.config.whole_image_temperature and np.any(whole):
            t = np.where(whole, self.config.whole_image_temperature, t)
        if not (self.options.tta if tta is None else tta):
            return softmax(self.backend(x), t)[:, self.config.male_index]
        # Mirror the width axis; classes keep their order, so probabilities average directly.
        # One engine call on faces + mirrors: at batch 1 that saves a call's fixed cost.
        probs = softmax(self.backend(np.concatenate([x, x[..., ::-1]])),
                        np.tile(t, 2) if np.ndim(t) else t)
        return ((probs[:len(x)] + probs[len(x):]) / 2)[:, self.config.male_index]

    def _faces(self, img: Image.Image, largest: bool = False
               ) -> list[tuple[tuple, float | None, Image.Image]]:
        if not self.detect:
            return [((0.0, 0.0, float(img.width), float(img.height)), None, img)]
        from ..faces.framing import find_faces

        # A whole-image fallback (an input shaped like the training crops, no face found) has no
        # detector score, which is how _finish marks it face_source "whole_image".
        detector = self._wide_detector() if self.detector_mode == "wide" else self._detector
        found = find_faces(img, detector, self._policy, self.config.framing, largest)
        return [(tuple(float(v) for v in f.box), float(f.score) if src == "detector" else None,
                 crop) for f, crop, src in found]

    def _faces_scaled(self, enc: EncodedImage, largest: bool = False, finest: int = 8,
                      video_frame: bool = False, scaled: Any = None
                      ) -> list[tuple[tuple, float | None, Image.Image]]:
        """_faces from the least the image needs decoded. The detector sees it at 1/k with at
        least DETECT_SIDE px on the longer side; each crop comes from the coarsest scale in
        which it still has the model's input size on both sides, never coarser than that view
        or than `finest`, never finer than the file. A JPEG decodes straight at those scales
        (draft mode); other images are decoded whole and box-averaged, so both detect alike.
        Boxes are in full-size pixels, as _faces gives them."""
        from ..faces import Face, crop_face, crop_geometry
        from ..faces.framing import looks_like_training_crop

        size = self.config.input_size
        if not self.detect:  # the whole image is the face: decode it no larger than needed
            img = enc.decode(min(finest, enc.reduction_for(min_short=size)))
            return [((0.0, 0.0, float(enc.size[0]), float(enc.size[1])), None, img)]
        k_view = enc.reduction_for(min_long=DETECT_SIDE)
        # `scaled` (a source's own scaler, Sample.scaled) works on the full-size image
        found = self._detect(enc.decode(k_view), video_frame, scaled if k_view == 1 else None)
        if not found and looks_like_training_crop(enc.size, self.config.framing):
            # An input shaped like the training crops: padded detection, else the whole image.
            return self._faces(enc.decode(1), largest)
        if largest and found:
            found = [max(found, key=lambda f: f.area)]
        # A pixel at 1/k covers exactly k x k pixels of the file, so coordinates scale by k.
        full = [Face(tuple(float(v) * k_view for v in f.box), f.score,
                     None if f.landmarks is None else f.landmarks * k_view) for f in found]
        k = min(k_view, finest)
        for f in full:
            g = crop_geometry(f, self._policy)
            while k > 1 and min(g.width, g.height) < size * k:
                k //= 2
        img = enc.decode(k)
        out = []
        for f in full:
            at_k = Face(tuple(v / k for v in f.box), f.score,
                        None if f.landmarks is None else f.landmarks / k)
            out.append((f.box, float(f.score), crop_face(img, at_k, self._policy)))
        return out

    def _prepare(self, item: tuple[str, Any], opts: PredictOptions | None = None
                 ) -> tuple[ImageResult, list]:
        opts = opts or self.options
        ref, src = item
        if isinstance(src, FailedInput):
            return ImageResult(path=ref, error=src.reason, ignored=src.ignored), []
        res = ImageResult(path=ref, sample=src if isinstance(src, Sample) else None)
        sample = src if isinstance(src, Sample) else None
        try:
            pixels = sample.read_image(opts.max_pixels) if sample is not None else None
            if pixels is not None:  # decoded already (a video frame): not encoded again
                enc = EncodedImage.from_image(pixels, ref)
            elif isinstance(src, (Sample, bytes)):
                data = (src.read_bytes(byte_cap(opts.max_pixels, opts.max_bytes))
                        if isinstance(src, Sample) else src)
                enc = EncodedImage(data, ref, opts.max_pixels, opts.max_bytes, draft=opts.draft)
                del data
            else:
                enc = EncodedImage.from_image(load_image(
                    src, name=ref, max_pixels=opts.max_pixels, max_bytes=opts.max_bytes), ref)
            if self.detect and self.min_face is not None:
                faces = self._faces(enc.decode(1), opts.largest)  # tiles search full size
            else:  # kept crops (--save-crops) are cut at full size
                video = sample is not None and "frame" in sample.groups
                faces = self._faces_scaled(enc, opts.largest, 1 if opts.keep_images else 8, video,
                                           sample.scaled if pixels is not None else None)
            res.width, res.height = enc.size  # only once the pixels decoded
        except ImageError as exc:
            res.error = exc.reason
            return res, []
        except OSError as exc:
            res.error = f"cannot read ({exc.strerror or exc})"
            return res, []
        finally:
            if sample is not None:
                sample.release()
        if opts.keep_images:
            res.image = enc.decode(1)
            res.crops = [crop for _, _, crop in faces]
        # A weak detection coloured like noise keeps its row but not a confident answer.
        return res, [(box, score, to_array(crop, self.config), looks_doubtful(score, crop))
                     for box, score, crop in faces]

    def _finish(self, prepared: list[tuple[ImageResult, list]], batch_size: int,
                opts: PredictOptions | None = None) -> list[ImageResult]:
        opts = opts or self.options
        arrays = [a for _, faces in prepared for _, _, a, _ in faces]
        whole = np.array([score is None for _, faces in prepared for _, score, _, _ in faces])
        p_all = np.concatenate([
            self.classify_arrays(np.stack(arrays[i:i + batch_size]), opts.tta,
                                 whole[i:i + batch_size])
            for i in range(0, len(arrays), batch_size)]) if arrays else []
        if arrays and self.config.small_face_shift:
            sides = [(box[2] + box[3]) / 2 for _, faces in prepared for box, _, _, _ in faces]
            p_all = shift_small_faces(p_all, np.array(sides), self.config.small_face_shift)
        k = 0
        thr = self.config.threshold
        for res, faces in prepared:
            for j, (box, score, _, doubtful) in enumerate(faces):
                pm = float(p_all[k])
                k += 1
                # No detector score means no detector found it: the whole image is the face. When
                # the detector was asked and found nothing, that is a guess on an image that may
                # hold no face at all (blurred noise, a blob): never a confident answer; nor is
                # a weak detection coloured like noise (faces.detector.looks_doubtful).
                guessed = (score is None and self.detect) or doubtful
                res.faces.append(FacePrediction(
                    index=j, box=FaceBox(*box), det_score=score,
                    label="male" if pm >= thr else "female", prob_male=pm, prob_female=1 - pm,
                    unsure=guessed or abs(pm - 0.5) < opts.unsure_band,
                    face_source="detector" if score is not None else "whole_image"))
        return [r for r, _ in prepared]

    def iter_predict(self, inputs: Any, batch_size: int = 64, workers: int | None = None,
                     processes: int | None = None, *, options: PredictOptions | None = None,
                     progress: bool = False, **overrides: Any) -> Iterator[ImageResult]:
        """Yield one ImageResult per input image, in input order, as soon as its batch is done.

        Decoding and detection run in `workers` threads (default: one per usable core); faces
        are classified in batches of `batch_size` across images. `processes` > 1 runs that many
        worker processes instead, each with its own engines. With neither given, many small
        image files (pipeline.choose_processes: 200 or more, median size <= 1 MB) go to one
        process per usable core, anything else to threads; `processes=1` forces threads. Inputs
        are read as they are needed, so memory stays bounded however many there are. `options`
        / keyword overrides (tta=..., largest=...) apply to this call only. `progress`: a tqdm
        bar on stderr (images done and their rate) while stderr is a terminal."""
        opts = (options or self.options).replace(**overrides)
        items = expand_inputs(inputs, include_hidden=opts.include_hidden,
                              every=opts.video_every)
        if processes is None and workers is None:  # neither asked for: choose by the input
            processes, items = choose_processes(iter(items), opts.keep_images)
        if processes is not None and processes > 1:
            results = run_processes(self, items, batch_size, processes, opts)
        else:
            results = run_threads(self, items, batch_size, workers, opts)
        return iter(progress_bar(results, progress, "predict")) if progress else results

    def predict(self, inputs: Any, batch_size: int = 64, workers: int | None = None,
                processes: int | None = None, *, options: PredictOptions | None = None,
                progress: bool = False, **overrides: Any) -> list[ImageResult]:
        return list(self.iter_predict(inputs, batch_size, workers, processes, options=options,
                                      progress=progress, **overrides))


@dataclass
class FailedInput:
    """An input that could not be read (its reason is reported, the batch goes on), or one
    left out by policy (`ignored`: a hidden file)."""

    reason: str
    ignored: bool = False


def expand_inputs(inputs: Any, include_hidden: bool = False,
                  every: float = DEFAULT_EVERY) -> Iterable[tuple[str, Any]]:
    """Normalise every accepted input kind to (ref, Sample | PIL image | bytes | FailedInput)."""
    if isinstance(inputs, SourceData):
        for s in inputs.samples:
            yield s.ref, s
        for sk in inputs.skipped:
            yield sk.ref, FailedInput(sk.reason)
        for sk in inputs.ignored:
            yield sk.ref, FailedInput(sk.reason, ignored=True)
        return
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    elif isinstance(inputs, (Image.Image, bytes, bytearray, np.ndarray, Sample)):
        inputs = [inputs]
    for n, item in enumerate(inputs):
        if isinstance(item, Sample):
            yield item.ref, item
        elif isinstance(item, Image.Image):
            yield getattr(item, "filename", "") or f"<image {n}>", item
        elif isinstance(item, np.ndarray):
            yield f"<array {n}>", Image.fromarray(item.astype(np.uint8))
        elif isinstance(item, (bytes, bytearray)):
            yield f"<bytes {n}>", bytes(item)
        elif isinstance(item, io.IOBase):  # read no further than the byte cap (/dev/zero...)
            yield str(getattr(item, "name", f"<stream {n}>")), item.read(byte_cap() + 1)
        else:  # read as a stream: a long manifest or archive is never held whole
            try:
                for x in iter_input(item, include_hidden=include_hidden, every=every):
                    yield (x.ref, x) if isinstance(x, Sample) else (
                        x.ref, FailedInput(x.reason, ignored=x.ignored))
            except FaceGenderError as exc:
                yield str(item), FailedInput(str(exc).split(": ", 1)[-1])


def load(model: str | Path | None = None, **kwargs: Any) -> Predictor:
    """Load a model folder (default: the model shipped in the package) as a Predictor."""
    return Predictor(model, **kwargs)


def predict(inputs: Any, model: str | Path | None = None, *, batch_size: int = 64,
            **kwargs: Any) -> list[ImageResult]:
    """One call: load the model and predict every face in `inputs`."""
    return Predictor(model, **kwargs).predict(inputs, batch_size=batch_size)


def _with_predictor_options(function: Any) -> None:
    # load/predict pass their keywords on to Predictor: their signatures show Predictor's own
    # options (derived from its __init__, so they cannot drift) instead of **kwargs.
    own = [p for p in inspect.signature(function).parameters.values()
           if p.kind is not inspect.Parameter.VAR_KEYWORD]
    options = [p for p in inspect.signature(Predictor.__init__).parameters.values()
               if p.kind is inspect.Parameter.KEYWORD_ONLY]
    function.__signature__ = inspect.signature(function).replace(parameters=own + options)


_with_predictor_options(load)
_with_predictor_options(predict)
