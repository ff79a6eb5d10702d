"""What each CLI verb accepts, declared once (facegender/options.py): default, range, choices,
help and spelling per option. cli.py builds its parsers from these classes; `train` and `qat`
take their Python signatures from them too, and a test checks the other verbs' API defaults
agree. A new flag is one `opt(...)` line in its verb's class.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

from .errors import FaceGenderError
from .faces.kinds import DETECTORS
from .models.archs import ARCHITECTURES, check_arch
from .options import COUNT, POSITIVE, PROBABILITY, REQUIRED, ZERO_OR_MORE, Number, opt

# -- argparse types for options whose API value is not the text itself ---------------------------


def device_name(text: str) -> str:
    from .infer.device import DeviceError, parse_device

    try:
        parse_device(text)
    except DeviceError:
        raise argparse.ArgumentTypeError(f"must be cpu, cuda or cuda:N, got {text!r}") from None
    return text


def arch_name(text: str) -> str:
    try:
        return check_arch(text)
    except FaceGenderError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def comma_list(text: str) -> list[str]:
    return [k.strip() for k in text.split(",") if k.strip()]


def json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {text!r} ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {text!r}")
    return value


# -- options shared by several verbs (each a function, so every verb gets its own field) --------
NO_PROGRESS = "no progress bar (it is drawn on stderr only when that is a terminal)"
MODEL_HELP = "model folder, or a shipped model: fast (default) or accurate"
AUGMENTS = ["default", "strong", "light", "none"]
BACKENDS = ["auto", "onnx", "int8", "torch"]
SCALE_OUT = "scaling out (--engine ray; the [scale] extra)"
GPU_CLASSIFIER = "the classifier (torch, or ONNX Runtime's CUDA provider with onnxruntime-gpu)"


def progress_opt() -> Any:
    """One spelling on every verb: --no-progress; --quiet / -q kept as its deprecated alias."""
    return opt(True, NO_PROGRESS, "--no-progress", action="store_false",
               deprecated=("--quiet", "-q"))


def device_opt(what: str) -> Any:
    return opt(None, f"where {what} runs: cpu or a CUDA GPU (default: cpu)",
               type=device_name, metavar="cpu|cuda[:N]")


STRICT_HELP = ("refuse a model folder whose config.json has no integrity record (by default it "
               "loads with a warning naming what is unverified)")
TRACKS = "videos as tracks (--track; the [video] extra)"


def strict_opt() -> Any:
    return opt(False, STRICT_HELP, action="store_true")


def model_opt() -> Any:
    return opt(None, MODEL_HELP, "--model", "-m")


def model_positional(help: str = MODEL_HELP) -> Any:
    return opt(None, help, "model", nargs="?")


def threads_opt(help: str = "torch CPU threads") -> Any:
    return opt(None, help, type=COUNT)


def detect_opt() -> Any:
    return opt(None, "--no-detect: treat each image as one face crop (skip the detector); "
               "--detect: find faces with the detector even if the model's crop policy says the "
               "inputs are crops (default: the model's policy)", "--detect",
               action=argparse.BooleanOptionalAction)


def backend_opt(help: str = "inference engine (auto: ONNX Runtime when the model has model.onnx, "
                "else torch)") -> Any:
    return opt("auto", help, choices=BACKENDS)


def engine_threads_opt() -> Any:
    return opt(None, "intra-op threads of each engine (default: the classifier uses every core "
               "and the detector one, running in a thread per core)", type=COUNT)


def batch_size_opt() -> Any:
    return opt(64, "faces per inference batch", type=COUNT)


def tta_opt() -> Any:
    return opt(None, "average the probabilities of each face and its mirror image (default: as "
               "the model's config says; accurate does)", action=argparse.BooleanOptionalAction)


def largest_opt() -> Any:
    return opt(False, "only the largest face per image", action="store_true")


def detector_opt(where: str = "") -> Any:
    return opt("auto", "face detector: short (BlazeFace short-range, for photos), wide "
               "(back-camera BlazeFace over tiles: faces from ~24 px in 720p wide shots, ~3-4x "
               "the detector's CPU a frame) or auto (wide on video frames and on wide or large "
               f"images without a big face){where}", choices=DETECTORS)


def min_face_opt() -> Any:
    return opt(None, "also search tiles for faces down to this many pixels (slower; default: "
               "one pass, faces down to ~1/7 of the image side)", type=Number(int, 8))


# -- training ----------------------------------------------------------------------------------
RECIPES = ["full", "head", "tail"]
HEAD_RECIPES = ("head", "tail")  # trained on a pretrained face backbone's stored features
MONITORS = ["balanced_accuracy", "accuracy", "roc_auc", "loss", "worst_group", "worst_source"]


@dataclass(kw_only=True)
class TrainOptions:
    """`facegender train` and facegender.train(data, out, **options)."""

    data: Any = opt(REQUIRED, "training source(s); PATH@WEIGHT gives a source its relative share "
                    "of each epoch", "data", nargs="+")
    out: Any = opt(REQUIRED, "output model folder", "--out", "-o", required=True)
    recipe: str = opt("full", "full: train the whole network; head: store a pretrained face "
                      "backbone's trunk output (dlib_resnet*) and train only a head on it; tail: "
                      "head, then fine-tune the backbone's last blocks too (default: %(default)s)",
                      choices=RECIPES, recipe=True)
    tail_epochs: int = opt(4, "fine-tuning epochs of the backbone's last blocks (--recipe tail)",
                           type=ZERO_OR_MORE)
    balance: list[str] | None = opt(
        None, "comma-separated group columns to even out when drawing faces, e.g. "
        "source,Young,Wearing_Lipstick,age_group (the label is always one; default: source when "
        "several sources are given or --recipe head/tail)", type=comma_list, recipe=True,
        by_recipe={"head": ["source"], "tail": ["source"]})
    balance_power: float = opt(0.5, "0 keeps the data's mix, 1 gives every group the same share "
                               "(default: %(default)s)", type=PROBABILITY, recipe=True)
    max_repeat: float | None = opt(8.0, "most draws of one face an epoch, expected (default: "
                                   "%(default)s)", type=POSITIVE, recipe=True)
    drop: list[str] = opt([], "leave faces out of training where a manifest column has this "
                          "value, e.g. disputed=1 (repeatable)", action="append",
                          metavar="COLUMN=VALUE", recipe=True)
    teacher: str | None = opt(None, "distil from this model (folder or shipped name, e.g. "
                              "accurate): the student learns its calibrated probabilities as well "
                              "as the labels", recipe=True)
    distill_weight: float = opt(0.7, "share of the loss from the teacher's probabilities "
                                "(default: %(default)s)", type=PROBABILITY, recipe=True)
    unlabelled: Any = opt(None, "faces without labels that learn from the --teacher alone")
    init: str | None = opt(None, "start from this model folder's weights (same --arch), e.g. fast",
                           recipe=True)
    crop_training: bool = opt(False, "cut training faces with --crop's policy (detector on the "
                              "padded image), so training sees what prediction will",
                              action="store_true", recipe=True)
    views: int = opt(3, "feature views per training face: 1 the face, 2 + its mirror, 3+ "
                     "degraded copies (--recipe head; default: %(default)s)", type=COUNT)
    cache: str | None = opt(None, "feature store folder (--recipe head; default: OUT/cache)")
    val: Any = opt(None, "validation source (default: the source's own val split, else a "
                   "stratified --val-fraction of it)")
    arch: str | None = opt(None, "architecture: " + ", ".join(ARCHITECTURES) + ", or timm:<name> "
                           "(default: mobilenetv3_small; dlib_resnet with --recipe head/tail)",
                           type=arch_name, recipe=True,
                           by_recipe={"full": "mobilenetv3_small", "head": "dlib_resnet",
                                      "tail": "dlib_resnet"})
    input_size: int = opt(96, "square input side in pixels (default: %(default)s; the shipped fast "
                          "model uses 80, dlib_resnet always 150)", type=Number(int, 16, 1024),
                          recipe=True)
    epochs: int | None = opt(None, "maximum epochs", type=COUNT, recipe=True,
                             by_recipe={"full": 10, "head": 30, "tail": 30})
    batch_size: int = opt(64, "images per step, --recipe full (default: %(default)s)", type=COUNT,
                          recipe=True)
    lr: float = opt(2e-3, "peak AdamW learning rate, --recipe full (default: %(default)s)",
                    type=Number(float, 0, 1, lo_open=True), recipe=True)
    weight_decay: float = opt(0.05, "AdamW weight decay (default: %(default)s)",
                              type=Number(float, 0), recipe=True)
    schedule: str = opt("cosine", "warmup + cosine per step, or reduce-on-plateau per epoch",
                        choices=["cosine", "plateau"], recipe=True)
    warmup: float = opt(0.3, "warmup length in epochs (cosine) (default: %(default)s)",
                        type=Number(float, 0), recipe="warmup_epochs")
    label_smoothing: float = opt(0.1, "cross-entropy label smoothing (default: %(default)s)",
                                 type=Number(float, 0, 1, hi_open=True), recipe=True)
    class_weights: bool = opt(True, "do not weight the loss by inverse class frequency",
                              "--no-class-weights", action="store_false")
    augment: str = opt("default", "face augmentations: default (flip, crop jitter, rotation, "
                       "colour, grayscale, blur, JPEG), strong (wider ranges + low-resolution "
                       "faces, for photos unlike the training set), light (flip + small jitter, "
                       "for very short runs), none", choices=AUGMENTS, recipe=True)
    pretrained: bool | str = opt(False, "start from ImageNet weights already on this machine "
                                 "(torch hub cache or a weight package, sha256-checked); "
                                 "'download' may fetch them (internet)", nargs="?",
                                 const="offline", choices=["offline", "download"], recipe=True)
    freeze_epochs: int = opt(0, "train only the head for this many epochs first (use with "
                             "--pretrained)", type=ZERO_OR_MORE, recipe=True)
    patience: int = opt(5, "early-stopping patience in epochs (default: %(default)s)", type=COUNT,
                        recipe=True)
    monitor: str | None = opt(None, "validation metric for best checkpoint and early stopping; "
                              "worst_group is the least accurate validation group (20+ faces), "
                              "worst_source the lowest balanced accuracy of one source (several "
                              "sources)", choices=MONITORS, recipe=True,
                              by_recipe={"full": "balanced_accuracy", "head": "worst_group",
                                         "tail": "worst_group"})
    val_fraction: float = opt(0.1, "held-out fraction when the source has no val split and no --val",
                              type=Number(float, 0, 1, lo_open=True, hi_open=True))
    limit: int | None = opt(None, "use a stratified subset of N faces (default: all)", type=COUNT,
                            recipe=True)
    val_limit: int | None = opt(None, "use a stratified subset of N val faces (per source with "
                                "several sources; default: all, 3000 with --recipe head/tail)",
                                type=COUNT, recipe=True, by_recipe={"head": 3000, "tail": 3000})
    workers: int | None = opt(None, "data-loading processes (default: chosen from the core count; "
                              "1 with --recipe head/tail)", type=ZERO_OR_MORE,
                              by_recipe={"head": 1, "tail": 1})
    threads: int | None = threads_opt()
    seed: int = opt(0, "seed for splits, sampling, init and augmentation", type=ZERO_OR_MORE,
                    recipe=True)
    resume: bool = opt(False, "continue the run in --out exactly", action="store_true")
    crop: dict | None = opt(None, "crop policy for prediction as JSON, e.g. '{\"margin\": 0.2}' "
                            "(default: measured on the training images: tight face crops make "
                            "prediction detect faces and cut them alike, photos are fed whole)",
                            type=json_object)
    progress: bool = progress_opt()
    device: str | None = device_opt("torch trains (every recipe: full, head, tail)")


@dataclass(kw_only=True)
class QatOptions:
    """`facegender qat` and facegender.qat(model, data, out, **options)."""

    model: Any = model_positional("model folder to start from, or fast (default) / accurate")
    data: Any = opt(REQUIRED, "training source (also the INT8 calibration faces)", "data")
    out: Any = opt(REQUIRED, "output model folder", "--out", "-o", required=True)
    val: Any = opt(None, "validation source (default: the source's own val split)")
    epochs: int = opt(2, "fine-tuning epochs (default: %(default)s)", type=COUNT, recipe=True)
    lr: float = opt(1e-4, "peak AdamW learning rate (cosine) (default: %(default)s)",
                    type=Number(float, 0, 1, lo_open=True), recipe=True)
    batch_size: int = opt(64, "images per step", type=COUNT, recipe=True)
    consistency: float = opt(2.0, "weight of the fp32-vs-int8 logit-margin agreement term",
                             type=Number(float, 0), recipe=True)
    calib_size: int = opt(1000, "activation-range calibration faces", type=COUNT)
    recalibrate_every: int | None = opt(200, "steps between activation-range calibrations (0 or "
                                        "None: once per epoch)", type=ZERO_OR_MORE, recipe=True)
    augment: str = opt("default", "face augmentations while fine-tuning", choices=AUGMENTS,
                       recipe=True)
    limit: int | None = opt(None, "use a stratified subset of N faces", type=COUNT)
    val_limit: int | None = opt(None, "use N val faces", type=COUNT)
    float_stride: int = opt(8, "as export's: layers at output stride <= this stay fp32 in the "
                            "INT8 model, so the simulation leaves them unquantized (default: "
                            "%(default)s)", "--int8-float-stride", type=ZERO_OR_MORE, recipe=True)
    export: bool = opt(True, "do not export ONNX + INT8 at the end", "--no-export",
                       action="store_false")
    workers: int | None = opt(None, "data-loading processes", type=ZERO_OR_MORE)
    threads: int | None = threads_opt()
    seed: int = opt(0, "seed for sampling and augmentation", type=ZERO_OR_MORE, recipe=True)
    progress: bool = progress_opt()


@dataclass(kw_only=True)
class CalibrateOptions:
    """`facegender calibrate` (training/calibrate.py's calibrate)."""

    model: Any = opt(REQUIRED, "model folder, or a shipped model (then --out is required)", "model")
    data: Any = opt(REQUIRED, "labelled source(s): folder tree, tar, CSV manifest", "data",
                    nargs="+")
    out: Any = opt(None, "write a recalibrated copy here (default: update MODEL in place)",
                   "--out", "-o")
    views: int = opt(3, "views per face: 1 = the face, 2 = + mirror, 3+ = + degraded copies "
                     "(default: %(default)s)", type=COUNT)
    limit: int = opt(3000, "validation faces per source at most (default: %(default)s)", type=COUNT)
    drop: list[str] = opt([], "leave out faces whose manifest column has this value (e.g. "
                          "disputed=1)", action="append", metavar="COLUMN=VALUE")
    backend: str = opt("auto", "onnx, int8, torch or auto (default)")
    threads: int | None = threads_opt("engine threads (default: all)")
    seed: int = opt(0, "seed for the views and the draw", type=ZERO_OR_MORE)
    small_faces: bool = opt(False, "also fit the male-logit shift of small faces, on the same "
                            "faces shown at 1/2 and 1/3 of their size", action="store_true")
    keep_temperature: bool = opt(False, "keep the temperature and unsure band; fit only the "
                                 "whole-image temperature and, with --small-faces, the shift",
                                 action="store_true")
    progress: bool = progress_opt()


# -- prediction, evaluation, explanation -------------------------------------------------------
@dataclass(kw_only=True)
class ClassifierOptions:
    """How evaluate and predict run the classifier on the faces they find (declared once for
    both; each verb's own options follow in its class)."""

    backend: str = backend_opt()
    threads: int | None = engine_threads_opt()
    batch_size: int = batch_size_opt()
    tta: bool | None = tta_opt()
    device: str | None = device_opt(GPU_CLASSIFIER)
    detect: bool | None = detect_opt()


@dataclass(kw_only=True)
class EvaluateOptions(ClassifierOptions):
    """`facegender evaluate` / `val` (report/evaluate.py's evaluate)."""

    data: Any = opt(REQUIRED, "labelled source (as for train)", "data")
    model: str | None = model_opt()
    strict: bool = strict_opt()
    split: str | None = opt(None, "split to use (default: test, else val, else all)")
    limit: int | None = opt(None, "stratified subset of N faces (default: all)", type=COUNT)
    seed: int = opt(0, "seed for --limit sampling", type=ZERO_OR_MORE)
    out: str | None = opt(None, "folder for metrics.json, report.md, predictions.csv and plots",
                          "--out", "-o")
    report: str | None = opt(None, "full report folder: also a self-contained report.html with "
                             "curves, reliability diagram, per-group audit and a Grad-CAM error "
                             "gallery", metavar="DIR")
    gallery: int = opt(8, "most confident errors of each kind shown in the report (0: none)",
                       type=ZERO_OR_MORE)
    min_group: int = opt(30, "groups with fewer faces are flagged too small to judge", type=COUNT)
    json: bool = opt(False, "print all metrics as JSON", action="store_true")
    progress: bool = progress_opt()


@dataclass(kw_only=True)
class PredictOptions(ClassifierOptions):
    """`facegender predict` (infer/predictor.py's Predictor and iter_predict; the output options
    are the CLI's own). A new flag is one line here."""

    inputs: Any = opt(REQUIRED, "images, folders, globs, tars, manifests, http(s) URLs, video "
                      "files, or - (stdin: paths one per line, or one image's bytes)", "inputs",
                      nargs="+")
    every: float = opt(1.0, "videos (given directly or found in a folder): classify one frame "
                       "every this many seconds (needs the [video] extra)", type=POSITIVE,
                       metavar="SECONDS")
    model: str | None = model_opt()
    strict: bool = strict_opt()
    format: str = opt("table", "what to print on stdout", choices=["table", "csv", "json"])
    csv_out: str | None = opt(None, "also write the records to this CSV file ('-': stdout)", "--csv")
    json_out: str | None = opt(None, "also write the records to this JSON file ('-': stdout)",
                               "--json")
    largest: bool = largest_opt()
    min_face: int | None = min_face_opt()
    score_threshold: float = opt(0.5, "minimum face-detector confidence (default: %(default)s)",
                                 type=PROBABILITY)
    detector: str = detector_opt()
    save_crops: str | None = opt(None, "write each face crop the classifier saw to DIR",
                                 metavar="DIR")
    annotate: str | None = opt(None, "write each photo with face boxes and labels drawn to DIR",
                               metavar="DIR")
    unsure_band: float | None = opt(None, "flag |p(male) - 0.5| below this as unsure (default: "
                                    "the model's)", type=Number(float, 0, 0.5))
    include_hidden: bool = opt(False, "also read hidden files ('.name') and __MACOSX/ inside "
                               "folders and archives (default: listed as ignored)",
                               action="store_true")
    max_pixels: int | None = opt(None, "largest image in pixels; larger ones are refused as "
                                 "possible decompression bombs (default: 50 MP, or "
                                 "FACEGENDER_MAX_PIXELS)", type=COUNT)
    max_mb: float | None = opt(None, "largest image file in MB, refused before it is read "
                               "(default: what --max-pixels allows uncompressed, or "
                               "FACEGENDER_MAX_BYTES)", type=POSITIVE)
    workers: int | None = opt(None, "N worker processes, each with its own engines; 1: one "
                              "process that decodes and detects in a thread per core (default: "
                              "processes, one per core, for 200+ image files of 1 MB or less, "
                              "else threads)", type=COUNT, metavar="N")
    engine: str = opt("local", "local: this process; ray: a pool of Ray workers, one model each, "
                      "writing OUT/part-*.parquet (rerun to finish a killed job)",
                      choices=["local", "ray"], group=SCALE_OUT)
    out: str | None = opt(None, "--engine ray: folder for the Parquet partitions (required)",
                          metavar="DIR", group=SCALE_OUT)
    ray_address: str | None = opt(None, "a running Ray cluster (e.g. 10.0.0.1:6379, or auto); "
                                  "default: start Ray locally for this command", group=SCALE_OUT)
    ray_workers: int = opt(2, "Ray actors, each with one model and --threads threads (default: "
                           "%(default)s)", type=COUNT, group=SCALE_OUT)
    partition_size: int = opt(1000, "images per output partition when the source is not shards "
                              "(a shard is one partition) (default: %(default)s)", type=COUNT,
                              group=SCALE_OUT)
    track: bool = opt(False, "link each video's faces across frames into tracks, one label per "
                      "track; rows gain track_id, track_label, track_prob_male, track_unsure",
                      action="store_true", group=TRACKS)
    fps: float | None = opt(None, "videos: classify this many frames a second (instead of "
                            "--every)", type=POSITIVE, group=TRACKS)
    keyframes: bool = opt(False, "classify the keyframes only, nothing else is decoded (implies "
                          "--track)", action="store_true", group=TRACKS)
    detect_period: int | None = opt(None, "detect on every N-th frame and give every frame a "
                                    "row, the boxes moved along each track in between (implies "
                                    "--track)", type=COUNT, metavar="N", group=TRACKS)
    min_track: int = opt(3, "--track: frames a track needs before it gets a label (else "
                         "unsure)", type=COUNT, metavar="FRAMES", group=TRACKS)
    tracks_csv: str | None = opt(None, "--track: write one row per track here", metavar="PATH",
                                 group=TRACKS)
    summary: str | None = opt(None, "--track: write the JSON summary (screen time, "
                              "person-seconds, tracks by label, with bootstrap intervals; per "
                              "video and in total)", metavar="PATH", group=TRACKS)
    summary_csv: str | None = opt(None, "--track: write the summary as one CSV row per video "
                                  "and a TOTAL row", metavar="PATH", group=TRACKS)
    timeline: str | None = opt(None, "--track: write an HTML page: the summary, and per video "
                               "who is on screen when (a row per track, coloured by label, with "
                               "its face)", metavar="PATH", group=TRACKS)
    subtitles: str | None = opt(None, "--track: write ASS subtitles (boxes, labels, track ids "
                                "over the video); several videos: PATH_<video>.ass, or "
                                "PATH/<video>.ass for a folder", metavar="PATH", group=TRACKS)
    progress: bool = progress_opt()


@dataclass(kw_only=True)
class ExplainOptions:
    """`facegender explain` (report/explainer.py's explain)."""

    images: Any = opt(REQUIRED, "images, folders, globs, tars or manifests", "images", nargs="+")
    model: str | None = model_opt()
    strict: bool = strict_opt()
    out: Any = opt(REQUIRED, "output folder", "--out", "-o", required=True)
    largest: bool = largest_opt()
    min_face: int | None = min_face_opt()
    target: str | None = opt(None, "explain this class instead of the predicted one",
                             choices=["male", "female"])
    layer: str | None = opt(None, "Grad-CAM target layer as a dotted module name (default: the "
                            "last conv block of the architecture)")
    threads: int | None = threads_opt()
    device: str | None = device_opt("torch computes Grad-CAM")
    detect: bool | None = detect_opt()
    progress: bool = progress_opt()


# -- serving, export, measuring, data --------------------------------------------------------
@dataclass(kw_only=True)
class ServeOptions:
    """`facegender serve` (serve/app.py's serve)."""

    model: str | None = model_positional()
    strict: bool = strict_opt()
    host: str = opt("127.0.0.1", "bind address (default: %(default)s)")
    port: int = opt(8000, "port (default: %(default)s)", type=Number(int, 0, 65535))
    backend: str = backend_opt("inference engine, as for predict")
    workers: int = opt(2, "model threads, each with its own predictor (default: %(default)s)",
                       type=COUNT)
    threads: int | None = opt(None, "engine threads per worker", type=COUNT)
    detect: bool | None = detect_opt()
    max_upload_mb: float = opt(20.0, "largest request body in MiB (413 above; default: "
                               "%(default)s)", type=POSITIVE)
    max_files: int = opt(16, "most images per request (413 above; default: %(default)s)",
                         type=COUNT)
    max_pixels: int | None = opt(None, "largest image in pixels (a per-image error above; "
                                 "default 50 MP)", type=COUNT)
    max_pending: int = opt(64, "requests in flight before 503 + Retry-After (default: "
                           "%(default)s)", type=COUNT)
    detector: str = detector_opt("; a request may choose its own with detector=")
    max_video_frames: int = opt(600, "most video frames one request may have classified, its "
                                "videos' length over their sampling interval (413 above; "
                                "default: %(default)s, 10 minutes at one frame a second)",
                                type=COUNT)
    api_key: str | None = opt(None, "require this key on every route but /healthz (X-API-Key, "
                              "Bearer, or the password of HTTP Basic, which the page's browser "
                              "asks for once); at least 16 characters, not one repeated; "
                              "'generate' makes a strong one and prints it once; default: the "
                              "FACEGENDER_API_KEY environment variable, which other users of "
                              "this machine cannot read from the process list")
    no_auth: bool = opt(False, "allow a --host beyond loopback without an API key (only behind "
                        "another layer that keeps strangers out)", action="store_true")
    cors_origin: list[str] = opt([], "another web site allowed to call the API from a browser, "
                                 "e.g. https://app.example.org (repeatable; default: none)",
                                 action="append", metavar="ORIGIN")
    rate_limit: float = opt(50.0, "requests a second per client address to /v1/ (bursts of "
                            "twice that; 0: no limit; default: %(default)s)", type=Number(float, 0))
    per_client: int = opt(8, "requests of one client address in flight at once (429 above; 0: "
                          "no limit; default: %(default)s)", type=ZERO_OR_MORE)
    body_timeout: float = opt(60.0, "seconds a request body may take to arrive in all (408 "
                              "after; default: %(default)s)", type=POSITIVE)
    idle_timeout: float = opt(10.0, "seconds a request body may pause without data (408 after; "
                              "default: %(default)s)", type=POSITIVE)
    log_level: str = opt("info", "uvicorn log level")
    device: str | None = device_opt(GPU_CLASSIFIER)


@dataclass(kw_only=True)
class ExportOptions:
    """`facegender export` (infer/export.py's export)."""

    model: str | None = model_positional()
    formats: list[str] | None = opt(None, "format to write; repeat for several (default: onnx)",
                                    "--format", "-f", action="append",
                                    choices=["onnx", "int8", "torchscript"])
    calib_data: str | None = opt(None, "faces for INT8 calibration (default: the training source "
                                 "in config.json)")
    calib_size: int = opt(1000, "INT8 calibration faces", type=COUNT)
    parity_data: str | None = opt(None, "held-out faces for the parity check (default: the val "
                                  "source in config.json)")
    parity_size: int = opt(500, "faces in the parity check", type=COUNT)
    opset: int = opt(18, "ONNX opset", type=Number(int, 13, 23))
    float_stride: int = opt(8, "INT8: keep in fp32 the layers whose output stride is at most this "
                            "(the high-resolution front, where quantization flips labels); 0 "
                            "quantizes every layer (default: %(default)s)", "--int8-float-stride",
                            type=ZERO_OR_MORE)
    device: str | None = device_opt("the torch reference of the parity check (graphs are traced "
                                    "on the CPU, so the files run anywhere)")


@dataclass(kw_only=True)
class BenchmarkOptions:
    """`facegender benchmark` (infer/bench.py's benchmark)."""

    model: str | None = model_positional()
    data: str | None = opt(None, "labelled face crops for the accuracy column (default: the "
                           "validation source recorded in the model's config.json)")
    n_eval: int = opt(2000, "faces for the accuracy column", type=COUNT)
    backends: list[str] | None = opt(None, "comma-separated subset of torch,onnx,int8 (default: "
                                     "all available)", type=comma_list)
    photo: str | None = opt(None, "a one-face photo for the end-to-end column (default: a "
                            "synthetic 640x480 photo made from a data face)")
    threads: int | None = opt(None, "threads for the throughput column (default: all cores)",
                              type=COUNT)


@dataclass(kw_only=True)
class ShardOptions:
    """`facegender shard` (io/shards.py's write_shards)."""

    data: Any = opt(REQUIRED, "source(s) to write", "data", nargs="+")
    out: Any = opt(REQUIRED, "folder for the shards", "--out", "-o", required=True)
    maxcount: int = opt(10_000, "images per shard at most (default: %(default)s)", type=COUNT)
    maxsize_mb: float = opt(1000, "megabytes per shard at most (default: %(default)s)",
                            type=POSITIVE)
    shuffle: int | None = opt(None, "write the images in a seeded random order (default: source "
                              "order)", type=ZERO_OR_MORE, metavar="SEED")
    progress: bool = progress_opt()


@dataclass(kw_only=True)
class InfoOptions:
    """`facegender info` (models/info.py's info)."""

    model: str | None = model_positional()


# verb -> (its options, one-line help, description)
VERBS: dict[str, type] = {
    "train": TrainOptions, "evaluate": EvaluateOptions, "predict": PredictOptions,
    "explain": ExplainOptions, "serve": ServeOptions, "export": ExportOptions, "qat": QatOptions,
    "benchmark": BenchmarkOptions, "shard": ShardOptions, "calibrate": CalibrateOptions,
    "info": InfoOptions,
}
