"""Command line: one verb per API function; the CLI only parses arguments and formats results.

Exit status: 0 ok, 1 some inputs could not be used (listed), 2 a user error (message, no
traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .errors import FaceGenderError


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", default=None,
                   help="model folder (config.json + model.safetensors), or a shipped model: "
                        "fast (the default) or accurate")
    _add_strict(p)


def _add_strict(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strict", action="store_true",
                   help="refuse a model folder whose config.json has no integrity record "
                        "(by default it loads with a warning naming what is unverified)")


def _add_face_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--largest", action="store_true", help="only the largest face per image")
    p.add_argument("--min-face", type=int, default=None,
                   help="also search tiles for faces down to this many pixels (slower; default: "
                        "one pass, faces down to ~1/7 of the image side)")


def _add_limits(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-pixels", type=int, default=None,
                   help="largest image in pixels; larger ones are refused as possible "
                        "decompression bombs (default: 50 MP, or FACEGENDER_MAX_PIXELS)")
    p.add_argument("--max-mb", type=float, default=None,
                   help="largest image file in MB, refused before it is read (default: what "
                        "--max-pixels allows uncompressed, or FACEGENDER_MAX_BYTES)")


def _add_detect(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-detect", dest="detect", action="store_const", const=False,
                   default=None, help="treat each image as one face crop (skip the detector)")
    p.add_argument("--detect", dest="detect", action="store_const", const=True,
                   help="find faces with the detector even if the model's crop policy says the "
                        "inputs are crops (default: the model's policy)")


def _device(text: str) -> str:
    from .infer.device import DeviceError, parse_device

    try:
        parse_device(text)
    except DeviceError:
        raise argparse.ArgumentTypeError(f"must be cpu, cuda or cuda:N, got {text!r}") from None
    return text


def _add_device(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--device", default="cpu", metavar="cpu|cuda[:N]", type=_device,
                   help=f"where {what} runs: cpu or a CUDA GPU (default: %(default)s)")


def _add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress bar (it is drawn on stderr only when that is a terminal)")


def _add_runtime(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="auto", choices=["auto", "onnx", "int8", "torch"],
                   help="inference engine (auto: ONNX Runtime when the model has model.onnx, "
                        "else torch)")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads of each engine (default: the classifier uses every "
                        "core and the detector one, running in a thread per core)")
    p.add_argument("--batch-size", type=int, default=64, help="faces per inference batch")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="average the probabilities of each face and its mirror image "
                        "(default: as the model's config says; accurate does)")
    _add_device(p, "the classifier (torch, or ONNX Runtime's CUDA provider with "
                   "onnxruntime-gpu)")
    _add_detect(p)


# -- option checks: every numeric option is checked when the command line is parsed, with a message
class Number:
    """An argparse type: int or float within [lo, hi] (open ends with lo_open / hi_open)."""

    def __init__(self, kind: type, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False, hi_open: bool = False):
        self.kind, self.lo, self.hi, self.lo_open, self.hi_open = kind, lo, hi, lo_open, hi_open
        self.__name__ = kind.__name__  # argparse names the type in its messages

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {self.lo:g}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {self.hi:g}")
        return f"{what} {' and '.join(parts)}".strip()

    def __call__(self, text: str) -> int | float:
        try:
            v = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}") from None
        if self.kind is float and v != v:  # nan passes every comparison
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}")
        low = self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo)
        high = self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi)
        if low or high:
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}")
        return v


COUNT = Number(int, 1)  # sizes, counts, epochs, threads
ZERO_OR_MORE = Number(int, 0)
PROBABILITY = Number(float, 0, 1)
# Per option (argparse dest); VERB_RULES overrides where a verb means something else by it.
NUMBER_RULES: dict[str, Number] = {
    "batch_size": COUNT, "limit": COUNT, "val_limit": COUNT, "threads": COUNT, "epochs": COUNT,
    "workers": ZERO_OR_MORE, "tail_epochs": ZERO_OR_MORE, "freeze_epochs": ZERO_OR_MORE,
    "patience": COUNT, "views": COUNT, "input_size": Number(int, 16, 1024), "seed": ZERO_OR_MORE,
    "balance_power": PROBABILITY, "max_repeat": Number(float, 0, lo_open=True),
    "distill_weight": PROBABILITY, "lr": Number(float, 0, 1, lo_open=True),
    "weight_decay": Number(float, 0), "warmup": Number(float, 0),
    "label_smoothing": Number(float, 0, 1, hi_open=True),
    "val_fraction": Number(float, 0, 1, lo_open=True, hi_open=True),
    "gallery": ZERO_OR_MORE, "min_group": COUNT, "min_face": Number(int, 8),
    "score_threshold": PROBABILITY, "unsure_band": Number(float, 0, 0.5),
    "port": Number(int, 0, 65535), "max_upload_mb": Number(float, 0, lo_open=True),
    "max_files": COUNT, "max_pixels": COUNT, "max_pending": COUNT,
    "calib_size": COUNT, "parity_size": COUNT, "opset": Number(int, 13, 23),
    "int8_float_stride": ZERO_OR_MORE, "consistency": Number(float, 0),
    "recalibrate_every": ZERO_OR_MORE, "n_eval": COUNT,
    "every": Number(float, 0, lo_open=True), "max_mb": Number(float, 0, lo_open=True),
    "ray_workers": COUNT, "partition_size": COUNT, "maxcount": COUNT,
    "maxsize_mb": Number(float, 0, lo_open=True), "shuffle": ZERO_OR_MORE,
    "rate_limit": Number(float, 0), "per_client": ZERO_OR_MORE,
    "body_timeout": Number(float, 0, lo_open=True), "idle_timeout": Number(float, 0, lo_open=True),
}
VERB_RULES: dict[tuple[str, str], Number] = {("serve", "workers"): COUNT, ("predict", "workers"): COUNT}


# What a None default means, for options whose help does not say it.
NONE_MEANS = {"threads": "all cores", "workers": "chosen from the core count", "limit": "all",
              "val_limit": "all"}


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Adds '(default: X)' to every option whose help does not already say its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        if (not action.option_strings or "%(default)" in text or "default" in text.lower()
                or d is argparse.SUPPRESS or d is True or d is False):
            return text
        if d is None or d == []:
            return text + f" (default: {NONE_MEANS.get(action.dest, 'none')})"
        return text + " (default: %(default)s)"


def _check_numbers(verbs: dict[str, argparse.ArgumentParser]) -> None:
    """Give every int/float option its range check (NUMBER_RULES), once the parser is built."""
    for verb, parser in verbs.items():
        parser.formatter_class = DefaultsHelpFormatter
        for action in parser._actions:
            if action.type in (int, float):
                rule = VERB_RULES.get((verb, action.dest)) or NUMBER_RULES.get(action.dest)
                if rule is not None and rule.kind is action.type:
                    action.type = rule  # (tests/test_options.py fails for one left without)



def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="facegender",
        description="Male/female face classification with calibrated probabilities.",
        formatter_class=DefaultsHelpFormatter)
    from .faces.wide import DETECTORS
    from .version import __version__

    ap.add_argument("--version", action="version", version=f"facegender {__version__}")
    sub = ap.add_subparsers(dest="verb", required=True, metavar="VERB")

    t = sub.add_parser("train", help="train a classifier on labelled faces -> model folder",
                       description="Train on a labelled source (folder tree ROOT/{male,female}/ "
                       "or ROOT/{train,val,test}/{male,female}/, a .tar of such a tree, a CSV "
                       "manifest path,label[,groups...], or hf:NAME / a local HF dataset). "
                       "Writes a model folder to --out.")
    t.add_argument("data", nargs="+", help="training source(s); PATH@WEIGHT gives a source its "
                   "relative share of each epoch")
    t.add_argument("--out", "-o", required=True, help="output model folder")
    t.add_argument("--recipe", choices=["full", "head", "tail"], default="full",
                   help="full: train the whole network; head: store a pretrained face "
                        "backbone's trunk output (dlib_resnet*) and train only a head on it; "
                        "tail: head, then fine-tune the backbone's last blocks too "
                        "(default: %(default)s)")
    t.add_argument("--tail-epochs", type=int, default=4,
                   help="fine-tuning epochs of the backbone's last blocks (--recipe tail)")
    t.add_argument("--balance", default=None,
                   help="comma-separated group columns to even out when drawing faces, e.g. "
                        "source,Young,Wearing_Lipstick,age_group (the label is always one; "
                        "default: source when several sources are given)")
    t.add_argument("--balance-power", type=float, default=0.5,
                   help="0 keeps the data's mix, 1 gives every group the same share "
                        "(default: %(default)s)")
    t.add_argument("--max-repeat", type=float, default=8.0,
                   help="most draws of one face an epoch, expected (default: %(default)s)")
    t.add_argument("--drop", action="append", default=[], metavar="COLUMN=VALUE",
                   help="leave faces out of training where a manifest column has this value, "
                        "e.g. disputed=1 (repeatable)")
    t.add_argument("--teacher", default=None,
                   help="distil from this model (folder or shipped name, e.g. accurate): the "
                        "student learns its calibrated probabilities as well as the labels")
    t.add_argument("--distill-weight", type=float, default=0.7,
                   help="share of the loss from the teacher's probabilities (default: %(default)s)")
    t.add_argument("--unlabelled", default=None,
                   help="faces without labels that learn from the --teacher alone")
    t.add_argument("--init", default=None,
                   help="start from this model folder's weights (same --arch), e.g. fast")
    t.add_argument("--crop-training", action="store_true",
                   help="cut training faces with --crop's policy (detector on the padded image), "
                        "so training sees what prediction will")
    t.add_argument("--views", type=int, default=3,
                   help="feature views per training face: 1 the face, 2 + its mirror, 3+ "
                        "degraded copies (--recipe head; default: %(default)s)")
    t.add_argument("--cache", default=None,
                   help="feature store folder (--recipe head; default: OUT/cache)")
    t.add_argument("--val", default=None, help="validation source (default: the source's own "
                   "val split, else a stratified --val-fraction of it)")
    t.add_argument("--arch", default="mobilenetv3_small",
                   help="architecture: mobilenetv3_small, mobilenetv3_large, efficientnet_b0, "
                        "resnet18, mobilenetv3_small_se, or timm:<name> (default: %(default)s)")
    t.add_argument("--input-size", type=int, default=96,
                   help="square input side in pixels (default: %(default)s; the shipped fast "
                        "model uses 80, dlib_resnet always 150)")
    t.add_argument("--epochs", type=int, default=None,
                   help="maximum epochs (default: 10, or 30 with --recipe head)")
    t.add_argument("--batch-size", type=int, default=64, help="images per step (default: %(default)s)")
    t.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate (default: %(default)s)")
    t.add_argument("--weight-decay", type=float, default=0.05,
                   help="AdamW weight decay (default: %(default)s)")
    t.add_argument("--schedule", choices=["cosine", "plateau"], default="cosine",
                   help="warmup + cosine per step, or reduce-on-plateau per epoch")
    t.add_argument("--warmup", type=float, default=0.3,
                   help="warmup length in epochs (cosine) (default: %(default)s)")
    t.add_argument("--label-smoothing", type=float, default=0.1,
                   help="cross-entropy label smoothing (default: %(default)s)")
    t.add_argument("--no-class-weights", dest="class_weights", action="store_false",
                   help="do not weight the loss by inverse class frequency")
    t.add_argument("--augment", choices=["default", "strong", "light", "none"], default="default",
                   help="face augmentations: default (flip, crop jitter, rotation, colour, grayscale, "
                        "blur, JPEG), strong (wider ranges + low-resolution faces, for photos unlike "
                        "the training set), light (flip + small jitter, for very short runs), none")
    t.add_argument("--pretrained", nargs="?", const="offline", default=None,
                   choices=["offline", "download"],
                   help="start from ImageNet weights already on this machine (torch hub cache or "
                        "a weight package, sha256-checked); 'download' may fetch them (internet)")
    t.add_argument("--freeze-epochs", type=int, default=0,
                   help="train only the head for this many epochs first (use with --pretrained)")
    t.add_argument("--patience", type=int, default=5,
                   help="early-stopping patience in epochs (default: %(default)s)")
    t.add_argument("--monitor", default=None,
                   choices=["balanced_accuracy", "accuracy", "roc_auc", "loss", "worst_group",
                            "worst_source"],
                   help="validation metric for best checkpoint and early stopping; worst_group "
                        "is the least accurate validation group (20+ faces), worst_source the "
                        "lowest balanced accuracy of one source (several sources) "
                        "(default: balanced_accuracy, or worst_group with --recipe head)")
    t.add_argument("--val-fraction", type=float, default=0.1,
                   help="held-out fraction when the source has no val split and no --val")
    t.add_argument("--limit", type=int, default=None, help="use a stratified subset of N faces")
    t.add_argument("--val-limit", type=int, default=None, help="use a stratified subset of N val faces")
    t.add_argument("--workers", type=int, default=None, help="data-loading processes")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    t.add_argument("--seed", type=int, default=0, help="seed for splits, sampling, init and augmentation")
    t.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    t.add_argument("--crop", default=None,
                   help="crop policy for prediction as JSON, e.g. '{\"margin\": 0.2}' (default: "
                        "measured on the training images: tight face crops make prediction "
                        "detect faces and cut them alike, photos are fed whole)")
    t.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    _add_device(t, "torch trains (every recipe: full, head, tail)")

    e = sub.add_parser("evaluate", aliases=["val"], help="metrics and report on labelled faces",
                       description="Evaluate a model on a labelled source; prints a summary, "
                       "writes metrics.json, report.md, predictions.csv and plots with --out.")
    e.add_argument("data", help="labelled source (as for train)")
    _add_model(e)
    e.add_argument("--split", default=None, help="split to use (default: test, else val, else all)")
    e.add_argument("--limit", type=int, default=None, help="stratified subset of N faces")
    e.add_argument("--seed", type=int, default=0, help="seed for --limit sampling")
    e.add_argument("--out", "-o", default=None,
                   help="folder for metrics.json, report.md, predictions.csv and plots")
    e.add_argument("--report", default=None, metavar="DIR",
                   help="full report folder: also a self-contained report.html with curves, "
                        "reliability diagram, per-group audit and a Grad-CAM error gallery")
    e.add_argument("--gallery", type=int, default=8,
                   help="most confident errors of each kind shown in the report (0: none)")
    e.add_argument("--min-group", type=int, default=30,
                   help="groups with fewer faces are flagged too small to judge")
    e.add_argument("--json", action="store_true", help="print all metrics as JSON")
    _add_runtime(e)
    _add_quiet(e)

    p = sub.add_parser("predict", help="label every face in images",
                       description="Predict on a file, folder, glob, .tar, CSV manifest or "
                       "several of them. One record per face (docs/face-record.schema.json): "
                       "path, face, box (x, y, w, h), det_score, label, score, prob_male, "
                       "prob_female, unsure, face_source, frame, timestamp, error.")
    p.add_argument("inputs", nargs="+",
                   help="images, folders, globs, tars, manifests, http(s) URLs, video files, or - "
                        "(stdin: paths one per line, or one image's bytes)")
    p.add_argument("--every", type=float, default=1.0, metavar="SECONDS",
                   help="videos (given directly or found in a folder): classify one frame every "
                        "this many seconds (needs the [video] extra)")
    _add_model(p)
    p.add_argument("--format", choices=["table", "csv", "json"], default="table",
                   help="what to print on stdout")
    p.add_argument("--csv", dest="csv_out", default=None,
                   help="also write the records to this CSV file ('-': stdout)")
    p.add_argument("--json", dest="json_out", default=None,
                   help="also write the records to this JSON file ('-': stdout)")
    _add_face_options(p)
    p.add_argument("--score-threshold", type=float, default=0.5,
                   help="minimum face-detector confidence (default: %(default)s)")
    p.add_argument("--detector", choices=DETECTORS, default="auto",
                   help="face detector: short (BlazeFace short-range, for photos), wide "
                        "(back-camera BlazeFace over tiles: faces from ~24 px in 720p wide "
                        "shots, ~3-4x the detector's CPU a frame) or auto (wide on video "
                        "frames and on wide or large images without a big face; default)")
    p.add_argument("--save-crops", default=None, metavar="DIR",
                   help="write each face crop the classifier saw to DIR")
    p.add_argument("--annotate", default=None, metavar="DIR",
                   help="write each photo with face boxes and labels drawn to DIR")
    p.add_argument("--unsure-band", type=float, default=None,
                   help="flag |p(male) - 0.5| below this as unsure (default: the model's)")
    p.add_argument("--include-hidden", action="store_true",
                   help="also read hidden files ('.name') and __MACOSX/ inside folders and "
                        "archives (default: listed as ignored)")
    _add_limits(p)
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="N worker processes, each with its own engines; 1: one process that "
                        "decodes and detects in a thread per core (default: processes, one per "
                        "core, for 200+ image files of 1 MB or less, else threads)")
    _add_runtime(p)
    r = p.add_argument_group("scaling out (--engine ray; the [scale] extra)")
    r.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this process; ray: a pool of Ray workers, one model each, "
                        "writing OUT/part-*.parquet (rerun to finish a killed job)")
    r.add_argument("--out", default=None, metavar="DIR",
                   help="--engine ray: folder for the Parquet partitions (required)")
    r.add_argument("--ray-address", default=None,
                   help="a running Ray cluster (e.g. 10.0.0.1:6379, or auto); default: start "
                        "Ray locally for this command")
    r.add_argument("--ray-workers", type=int, default=2,
                   help="Ray actors, each with one model and --threads threads (default: "
                        "%(default)s)")
    r.add_argument("--partition-size", type=int, default=1000,
                   help="images per output partition when the source is not shards (a shard "
                        "is one partition) (default: %(default)s)")
    _add_video_tracking(p)
    _add_quiet(p)

    x = sub.add_parser("explain", help="Grad-CAM: where the model looked, for every face",
                       description="Grad-CAM for each face (needs the [train] extra): writes "
                       "<name>_face<i>.png (crop and heatmap), <name>_overlay.png (heatmaps on "
                       "the photo) and explanations.json to --out.")
    x.add_argument("images", nargs="+", help="images, folders, globs, tars or manifests")
    _add_model(x)
    x.add_argument("--out", "-o", required=True, help="output folder")
    _add_face_options(x)
    x.add_argument("--target", choices=["male", "female"], default=None,
                   help="explain this class instead of the predicted one")
    x.add_argument("--layer", default=None,
                   help="Grad-CAM target layer as a dotted module name (default: the last conv "
                        "block of the architecture)")
    x.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    _add_device(x, "torch computes Grad-CAM")
    _add_detect(x)
    _add_quiet(x)

    s = sub.add_parser("serve", help="HTTP API and upload page",
                       description="Serve POST /v1/predict, GET /v1/model, /healthz, OpenAPI "
                       "docs at /docs and a drag-and-drop page at / (in the base install).")
    s.add_argument("model", nargs="?", default=None,
                   help="model folder, or a shipped model: fast (default) or accurate")
    _add_strict(s)
    s.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    s.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    s.add_argument("--backend", default="auto", choices=["auto", "onnx", "int8", "torch"],
                   help="inference engine, as for predict")
    s.add_argument("--workers", type=int, default=2,
                   help="model threads, each with its own predictor (default: %(default)s)")
    s.add_argument("--threads", type=int, default=None, help="engine threads per worker")
    _add_detect(s)
    s.add_argument("--max-upload-mb", type=float, default=20.0,
                   help="largest request body in MiB (413 above; default: %(default)s)")
    s.add_argument("--max-files", type=int, default=16,
                   help="most images per request (413 above; default: %(default)s)")
    s.add_argument("--max-pixels", type=int, default=None,
                   help="largest image in pixels (a per-image error above; default 50 MP)")
    s.add_argument("--max-pending", type=int, default=64,
                   help="requests in flight before 503 + Retry-After (default: %(default)s)")
    s.add_argument("--api-key", default=None,
                   help="require this key on every route but /healthz (X-API-Key, Bearer, or "
                        "the password of HTTP Basic, which the page's browser asks for once); "
                        "at least 16 characters, not one repeated; 'generate' makes a strong "
                        "one and prints it once; default: the FACEGENDER_API_KEY environment "
                        "variable, which other users of this machine cannot read from the "
                        "process list")
    s.add_argument("--no-auth", action="store_true",
                   help="allow a --host beyond loopback without an API key (only behind "
                        "another layer that keeps strangers out)")
    s.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="another web site allowed to call the API from a browser, e.g. "
                        "https://app.example.org (repeatable; default: none)")
    s.add_argument("--rate-limit", type=float, default=50.0,
                   help="requests a second per client address to /v1/ (bursts of twice "
                        "that; 0: no limit; default: %(default)s)")
    s.add_argument("--per-client", type=int, default=8,
                   help="requests of one client address in flight at once (429 above; 0: no "
                        "limit; default: %(default)s)")
    s.add_argument("--body-timeout", type=float, default=60.0,
                   help="seconds a request body may take to arrive in all (408 after; "
                        "default: %(default)s)")
    s.add_argument("--idle-timeout", type=float, default=10.0,
                   help="seconds a request body may pause without data (408 after; default: "
                        "%(default)s)")
    s.add_argument("--log-level", default="info", help="uvicorn log level")
    _add_device(s, "the classifier (torch, or ONNX Runtime's CUDA provider with "
                   "onnxruntime-gpu)")

    xp = sub.add_parser("export", help="write ONNX / INT8 / TorchScript files into a model folder",
                        description="Export a model folder (needs the [train] extra) and check "
                        "each format against torch on held-out faces: max |delta p(male)| and label "
                        "agreement go to config.json under metrics.export.")
    xp.add_argument("model", nargs="?", default=None,
                    help="model folder, or a shipped model: fast (default) or accurate")
    xp.add_argument("--format", "-f", dest="formats", action="append",
                    choices=["onnx", "int8", "torchscript"],
                    help="format to write; repeat for several (default: onnx)")
    xp.add_argument("--calib-data", default=None,
                    help="faces for INT8 calibration (default: the training source in config.json)")
    xp.add_argument("--calib-size", type=int, default=1000, help="INT8 calibration faces")
    xp.add_argument("--parity-data", default=None,
                    help="held-out faces for the parity check (default: the val source in "
                         "config.json)")
    xp.add_argument("--parity-size", type=int, default=500, help="faces in the parity check")
    xp.add_argument("--opset", type=int, default=18, help="ONNX opset")
    xp.add_argument("--int8-float-stride", type=int, default=8,
                    help="INT8: keep in fp32 the layers whose output stride is at most this "
                         "(the high-resolution front, where quantization flips labels); 0 "
                         "quantizes every layer (default: %(default)s)")
    _add_device(xp, "the torch reference of the parity check (graphs are traced on the CPU, so "
                    "the files run anywhere)")

    qa = sub.add_parser("qat", help="fine-tune a model so its INT8 export agrees with it",
                        description="Quantization-aware fine-tuning (needs the [train] extra): "
                        "simulates ONNX Runtime's INT8 quantization in torch while training, "
                        "re-fits the temperature on val, writes a new model folder to --out and "
                        "exports it (ONNX + INT8 with parity checks).")
    qa.add_argument("model", nargs="?", default=None,
                    help="model folder to start from, or fast (default) / accurate")
    qa.add_argument("data", help="training source (also the INT8 calibration faces)")
    qa.add_argument("--out", "-o", required=True, help="output model folder")
    qa.add_argument("--val", default=None,
                    help="validation source (default: the source's own val split)")
    qa.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs (default: %(default)s)")
    qa.add_argument("--lr", type=float, default=1e-4,
                    help="peak AdamW learning rate (cosine) (default: %(default)s)")
    qa.add_argument("--batch-size", type=int, default=64, help="images per step")
    qa.add_argument("--consistency", type=float, default=2.0,
                    help="weight of the fp32-vs-int8 logit-margin agreement term")
    qa.add_argument("--calib-size", type=int, default=1000, help="activation-range calibration faces")
    qa.add_argument("--recalibrate-every", type=int, default=200,
                    help="steps between activation-range calibrations (0: once per epoch)")
    qa.add_argument("--augment", choices=["default", "strong", "light", "none"], default="default",
                    help="face augmentations while fine-tuning")
    qa.add_argument("--limit", type=int, default=None, help="use a stratified subset of N faces")
    qa.add_argument("--val-limit", type=int, default=None, help="use N val faces")
    qa.add_argument("--int8-float-stride", type=int, default=8,
                    help="as export's: layers at output stride <= this stay fp32 in the INT8 "
                         "model, so the simulation leaves them unquantized (default: %(default)s)")
    qa.add_argument("--no-export", dest="export", action="store_false",
                    help="do not export ONNX + INT8 at the end")
    qa.add_argument("--workers", type=int, default=None, help="data-loading processes")
    qa.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    qa.add_argument("--seed", type=int, default=0, help="seed for sampling and augmentation")
    qa.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")

    bm = sub.add_parser("benchmark", help="latency, throughput, accuracy and memory per backend",
                        description="Measure every available backend of a model folder in one "
                        "run: batch-1 latency p50/p95 on one thread, batch-64 throughput on all "
                        "cores, face detection and end-to-end time on a 640x480 photo, peak RSS, "
                        "and accuracy on celeba val faces.")
    bm.add_argument("model", nargs="?", default=None,
                    help="model folder, or a shipped model: fast (default) or accurate")
    bm.add_argument("--data", default=None,
                    help="labelled face crops for the accuracy column (default: "
                         "../shared/data/celeba-gender/val.tar when present)")
    bm.add_argument("--n-eval", type=int, default=2000, help="faces for the accuracy column")
    bm.add_argument("--backends", default=None,
                    help="comma-separated subset of torch,onnx,int8 (default: all available)")
    bm.add_argument("--photo", default=None,
                    help="a one-face photo for the end-to-end column (default: a synthetic "
                         "640x480 photo made from a data face)")
    bm.add_argument("--threads", type=int, default=None,
                    help="threads for the throughput column (default: all cores)")

    sh = sub.add_parser("shard", help="write any source as WebDataset tar shards",
                        description="Write a source (folder tree, .tar, CSV manifest, HF dataset, "
                        "shards, glob) as tar shards OUT/000000.tar, ... in WebDataset layout: "
                        "KEY.jpg (the bytes unchanged) + KEY.json (label, split, groups, original "
                        "path). train, evaluate and predict read them back, by folder, glob or "
                        "brace range (OUT/{000000..000009}.tar).")
    sh.add_argument("data", nargs="+", help="source(s) to write")
    sh.add_argument("--out", "-o", required=True, help="folder for the shards")
    sh.add_argument("--maxcount", type=int, default=10_000,
                    help="images per shard at most (default: %(default)s)")
    sh.add_argument("--maxsize-mb", type=float, default=1000,
                    help="megabytes per shard at most (default: %(default)s)")
    sh.add_argument("--shuffle", type=int, default=None, metavar="SEED",
                    help="write the images in a seeded random order (default: source order)")
    sh.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")

    ca = sub.add_parser("calibrate", help="re-fit a model's temperature and unsure band",
                        description="Re-fit the temperature and unsure band of a model folder on "
                        "the validation faces of one or more labelled sources (each source's val "
                        "split, else a stratified share of its train split; never a test split), "
                        "several views of each face (the face, its mirror, degraded copies as "
                        "phone and web photos give them), every source weighted alike. The "
                        "weights are not touched.")
    ca.add_argument("model", help="model folder, or a shipped model (then --out is required)")
    ca.add_argument("data", nargs="+", help="labelled source(s): folder tree, tar, CSV manifest")
    ca.add_argument("--out", "-o", default=None,
                    help="write a recalibrated copy here (default: update MODEL in place)")
    ca.add_argument("--views", type=int, default=3,
                    help="views per face: 1 = the face, 2 = + mirror, 3+ = + degraded copies "
                         "(default: %(default)s)")
    ca.add_argument("--limit", type=int, default=3000,
                    help="validation faces per source at most (default: %(default)s)")
    ca.add_argument("--drop", action="append", default=[], metavar="COLUMN=VALUE",
                    help="leave out faces whose manifest column has this value (e.g. disputed=1)")
    ca.add_argument("--backend", default="auto", help="onnx, int8, torch or auto (default)")
    ca.add_argument("--threads", type=int, default=None, help="engine threads (default: all)")
    ca.add_argument("--seed", type=int, default=0, help="seed for the views and the draw")
    ca.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")

    i = sub.add_parser("info", help="show a model folder's config and files")
    i.add_argument("model", nargs="?", default=None,
                   help="model folder, or a shipped model: fast (default) or accurate")
    _check_numbers({v: sp for v, sp in sub.choices.items() if v != "val"})
    return ap


def _print_table(rows: list[dict]) -> None:
    from .infer.table import print_table

    print_table(rows)


def cmd_train(a: argparse.Namespace) -> int:
    if a.recipe in ("head", "tail"):
        return _train_head(a)
    from .training.trainer import train

    crop = json.loads(a.crop) if a.crop else None
    balance = [k.strip() for k in a.balance.split(",") if k.strip()] if a.balance else None
    data = a.data if len(a.data) > 1 else a.data[0]
    res = train(data, a.out, val=a.val, arch=a.arch, input_size=a.input_size,
                epochs=a.epochs or 10, monitor=a.monitor or "balanced_accuracy",
                batch_size=a.batch_size, lr=a.lr, weight_decay=a.weight_decay,
                schedule=a.schedule, warmup=a.warmup, label_smoothing=a.label_smoothing,
                class_weights=a.class_weights, augment=a.augment, pretrained=a.pretrained,
                freeze_epochs=a.freeze_epochs, patience=a.patience,
                val_fraction=a.val_fraction, limit=a.limit, val_limit=a.val_limit,
                workers=a.workers, threads=a.threads, seed=a.seed, resume=a.resume, crop=crop,
                crop_training=a.crop_training, balance=balance, balance_power=a.balance_power,
                max_repeat=a.max_repeat, drop=a.drop, teacher=a.teacher,
                distill_weight=a.distill_weight, unlabelled=a.unlabelled, init=a.init,
                progress=a.progress, device=a.device)
    v = res.metrics.get("val")
    if v is None:  # a torchrun process other than rank 0, which reports for the job
        return 130 if res.interrupted else 0
    print(f"model folder: {res.model_dir} (best epoch {res.best_epoch}: val accuracy "
          f"{v['accuracy']:.2%}, balanced {v['balanced_accuracy']:.2%}, ECE "
          f"{v['ece_before_calibration']:.3f} -> {v['ece_after_calibration']:.3f})")
    return 130 if res.interrupted else (1 if res.skipped else 0)


def _train_head(a: argparse.Namespace) -> int:
    from .training.heads import train_head

    arch = a.arch if a.arch.startswith("dlib_resnet") else "dlib_resnet"
    if arch != a.arch and a.arch != "mobilenetv3_small":  # only the default may be replaced
        raise FaceGenderError(f"--recipe head/tail needs --arch dlib_resnet or dlib_resnet_mlp, not {a.arch}")
    balance = [k.strip() for k in a.balance.split(",") if k.strip()] if a.balance else ["source"]
    m = train_head(a.data, a.out, arch=arch, recipe=a.recipe, tail_epochs=a.tail_epochs,
                   balance=balance, balance_power=a.balance_power,
                   max_repeat=a.max_repeat, drop=a.drop,
                   monitor=a.monitor or "worst_group", views=a.views, epochs=a.epochs or 30,
                   val_fraction=a.val_fraction, limit=a.limit, cache=a.cache,
                   val_per_source=a.val_limit or 3000,
                   workers=a.workers if a.workers is not None else 1, threads=a.threads,
                   seed=a.seed, progress=a.progress, device=a.device)
    v = m["val"]
    print(f"model folder: {a.out} (val accuracy {v['accuracy']:.2%}, worst group "
          f"{v['worst_group']:.2%} {v['worst_group_name']}, ECE {v['ece']:.3f})")
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    from .report.evaluate import evaluate

    r = evaluate(a.data, a.model, split=a.split, limit=a.limit, seed=a.seed, out=a.out,
                 backend=a.backend, detect=a.detect, tta=a.tta, batch_size=a.batch_size,
                 threads=a.threads, report=a.report or False, gallery=a.gallery,
                 min_group=a.min_group, progress=not a.quiet, device=a.device)
    if a.json:
        print(json.dumps({**r.metrics, "groups": r.groups}, indent=2))
    else:
        print(r.summary())
        print(r.metrics["classification_report"])
        for key, rows in r.groups.items():
            print(f"by {key}: " + ", ".join(f"{g['group']} {g['accuracy']:.1%} (n={g['n']})"
                                            for g in rows))
    for ref, reason in r.errors[:20]:
        print(f"skipped {ref}: {reason}", file=sys.stderr)
    if r.out:
        print(f"report: {r.out}", file=sys.stderr)
    return 1 if r.errors else 0


def cmd_predict(a: argparse.Namespace) -> int:
    if a.engine == "ray":
        return _predict_ray(a)
    if a.track or a.keyframes or a.detect_period:
        return _predict_tracks(a)
    import signal

    from .infer.annotate import save_outputs
    from .infer.predictor import Predictor
    from .infer.table import Table
    from .io.files import display_name
    from .io.progress import FirstFew, count

    keep = bool(a.save_crops or a.annotate)
    pred = Predictor(a.model, backend=a.backend, threads=a.threads, tta=a.tta, detect=a.detect,
                     largest=a.largest, min_face=a.min_face, score_threshold=a.score_threshold,
                     unsure_band=a.unsure_band, keep_images=keep, max_pixels=a.max_pixels,
                     max_bytes=None if a.max_mb is None else int(a.max_mb * 2**20),
                     include_hidden=a.include_hidden, device=a.device, detector=a.detector)
    # Rows are streamed and flushed as they come; files are swapped in whole at the end.
    # '-' puts that file alone on stdout, so it can be piped.
    to_stdout = "-" in (a.csv_out, a.json_out)
    writers = [_row_writer(sys.stdout, a.format)] if a.format != "table" and not to_stdout \
        else []
    writers += [_row_writer(sys.stdout if path == "-" else path, fmt)
                for path, fmt in ((a.csv_out, "csv"), (a.json_out, "json")) if path]
    # the stderr summary lists the first 1,000 failed and 20 ignored inputs; all are rows
    table, failed, ignored, n_img, faces = Table(), FirstFew(1000), FirstFew(20), 0, 0
    # A scheduler's SIGTERM ends the run like Ctrl-C: finished rows kept, files marked partial.
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    stopped: str | None = None
    try:
        for res in pred.iter_predict(a.inputs, batch_size=a.batch_size, processes=a.workers,
                                     progress=not a.quiet, video_every=_video_every(a)):
            n_img += 1
            if keep:
                save_outputs(res, n_img, Path(a.save_crops) if a.save_crops else None,
                             Path(a.annotate) if a.annotate else None)
            rows = res.records()
            for w in writers:
                w.write(rows)
            if a.format == "table" and not to_stdout:
                table.add(rows)
            faces += len(res.faces)
            if res.ignored:
                ignored.append((res.path, res.error))
            elif res.error:
                failed.append((res.path, res.error))
    except KeyboardInterrupt:
        stopped = f"interrupted after {n_img} images"
    except BaseException as exc:
        _close_all(writers, f"stopped by an error after {n_img} images ({type(exc).__name__})")
        raise
    finally:
        signal.signal(signal.SIGTERM, old_term)
    written = _close_all(writers, stopped)
    if a.format == "table" and not to_stdout:
        table.print()
    print(f"{count(n_img, 'image')}, {count(faces, 'face')}, {failed.total} failed"
          + (f", {ignored.total} ignored (hidden, __MACOSX or documentation; --include-hidden "
             "reads hidden files)"
             if ignored else ""), file=sys.stderr)
    for path, reason in failed:
        print(f"  failed: {display_name(path)}: {reason}", file=sys.stderr)
    if failed.total > len(failed):
        print(f"  ... and {failed.total - len(failed)} more failed (all are rows in the output)",
              file=sys.stderr)
    for path, _ in ignored:
        print(f"  ignored: {display_name(path)}", file=sys.stderr)
    if ignored.total > len(ignored):
        print(f"  ... and {ignored.total - len(ignored)} more ignored (all are rows in the output)",
              file=sys.stderr)
    if stopped:
        files = ", ".join(str(p) for p in written if p) or "stdout"
        print(f"interrupted: {n_img} images done; {files} keeps their rows and is marked "
              "partial (last row)", file=sys.stderr)
        return 130
    return 1 if failed else 0


def _predict_ray(a: argparse.Namespace) -> int:
    from .scale.ray_predict import predict_ray, read_records

    if not a.out:
        raise FaceGenderError("--engine ray writes Parquet partitions: give --out DIR")
    if a.save_crops or a.annotate:
        raise FaceGenderError("--save-crops / --annotate run with the local engine only")
    res = predict_ray(a.inputs if len(a.inputs) > 1 else a.inputs[0], a.out, a.model,
                      workers=a.ray_workers, ray_address=a.ray_address, batch_size=a.batch_size,
                      partition_size=a.partition_size, threads=a.threads or 1,
                      backend=a.backend, tta=a.tta, detect=a.detect, largest=a.largest,
                      min_face=a.min_face, score_threshold=a.score_threshold,
                      unsure_band=a.unsure_band, detector=a.detector)
    for path, fmt in ((a.csv_out, "csv"), (a.json_out, "json")):
        if path:  # one file from every partition, as the local engine writes it
            w = _row_writer(sys.stdout if path == "-" else path, fmt)
            w.write(list(read_records(a.out)))
            w.close()
    print(f"{res.partitions} partitions in {a.out} ({res.skipped_partitions} already there); "
          f"this run: {res.images} images, {res.rows} rows, {res.failed} failed, "
          f"{res.seconds:.1f} s", file=sys.stderr)
    return 1 if res.failed else 0


# -- predict --track: videos as tracks (a self-contained block: its options, then its verb path)
def _add_video_tracking(p: argparse.ArgumentParser) -> None:
    v = p.add_argument_group("videos as tracks (--track; the [video] extra)")
    v.add_argument("--track", action="store_true",
                   help="link each video's faces across frames into tracks, one label per "
                        "track; rows gain track_id, track_label, track_prob_male, track_unsure")
    v.add_argument("--fps", type=Number(float, 0, lo_open=True), default=None,
                   help="videos: classify this many frames a second (instead of --every)")
    v.add_argument("--keyframes", action="store_true",
                   help="classify the keyframes only, nothing else is decoded (implies --track)")
    v.add_argument("--detect-period", type=COUNT, default=None, metavar="N",
                   help="detect on every N-th frame and give every frame a row, the boxes "
                        "moved along each track in between (implies --track)")
    v.add_argument("--min-track", type=COUNT, default=3, metavar="FRAMES",
                   help="--track: frames a track needs before it gets a label (else unsure)")
    v.add_argument("--tracks-csv", default=None, metavar="PATH",
                   help="--track: write one row per track here")
    v.add_argument("--summary", default=None, metavar="PATH",
                   help="--track: write the JSON summary (screen time, person-seconds, "
                        "tracks by label, with bootstrap intervals; per video and in total)")
    v.add_argument("--summary-csv", default=None, metavar="PATH",
                   help="--track: write the summary as one CSV row per video and a TOTAL row")
    v.add_argument("--timeline", default=None, metavar="PATH",
                   help="--track: write an HTML page: the summary, and per video who is on "
                        "screen when (a row per track, coloured by label, with its face)")
    v.add_argument("--subtitles", default=None, metavar="PATH",
                   help="--track: write ASS subtitles (boxes, labels, track ids over the "
                        "video); several videos: PATH_<video>.ass, or PATH/<video>.ass for a "
                        "folder")


def _video_every(a: argparse.Namespace) -> float:
    return 1.0 / a.fps if a.fps else a.every


def _chunks(rows: Any, n: int) -> Any:
    """Lists of at most n rows from an iterator of rows."""
    from itertools import islice

    it = iter(rows)
    while chunk := list(islice(it, n)):
        yield chunk


def _is_ass(spec: str) -> bool:
    return Path(spec).suffix.lower() == ".ass"


def _track_target(spec: str, video: str, n_videos: int) -> Path:
    """Where a per-video export goes: PATH itself for one video, else one file per video."""
    path, stem = Path(spec), Path(video).stem
    if not _is_ass(spec):
        return path / f"{stem}.ass"
    return path if n_videos == 1 else path.with_name(f"{path.stem}_{stem}{path.suffix}")


def _predict_tracks(a: argparse.Namespace) -> int:
    import signal

    from .infer.predictor import Predictor
    from .infer.records import CSV_FIELDS, RECORD_FIELDS, flatten
    from .infer.video_export import write_annotated_video, write_ass
    from .infer.video_summary import SUMMARY_CSV_FIELDS, summarize_videos, summary_csv_row
    from .infer.video_tracks import (
        TRACK_COLUMNS,
        TRACK_ROW_FIELDS,
        frame_rows,
        split_videos,
        track_rows,
        track_video,
    )
    from .io.files import display_name
    from .io.targets import file_target, folder_target
    from .io.writers import RowWriter, write_text

    if a.keyframes and a.detect_period:
        raise FaceGenderError("--keyframes and --detect-period choose frames differently: "
                              "give one")
    videos, others = split_videos(a.inputs, a.include_hidden)
    if not videos:
        raise FaceGenderError("--track: no video file among the inputs")
    # (check_targets has refused every other output file that is an input or cannot be written)
    if a.subtitles and _is_ass(a.subtitles):
        file_target(a.subtitles, "--subtitles", a.inputs)
    for folder in (a.annotate, a.subtitles if a.subtitles and not _is_ass(a.subtitles) else None):
        if folder:
            folder_target(folder, inputs=a.inputs).mkdir(parents=True, exist_ok=True)
    pred = Predictor(a.model, backend=a.backend, threads=a.threads, tta=a.tta, detect=a.detect,
                     min_face=a.min_face, score_threshold=a.score_threshold,
                     unsure_band=a.unsure_band, max_pixels=a.max_pixels,
                     include_hidden=a.include_hidden, device=a.device, detector=a.detector)
    every = None if a.keyframes or a.detect_period else _video_every(a)
    to_stdout = "-" in (a.csv_out, a.json_out)

    def frame_writer(target: Any, fmt: str) -> RowWriter:
        if fmt == "csv":
            return RowWriter(target, fmt, CSV_FIELDS + TRACK_COLUMNS, csv_row=lambda r: {
                **flatten(r, digits=1), **{k: r[k] for k in TRACK_COLUMNS}})
        return RowWriter(target, fmt, RECORD_FIELDS + TRACK_COLUMNS)

    writers = [frame_writer(sys.stdout, a.format)] if a.format in ("csv", "json") \
        and not to_stdout else []
    writers += [frame_writer(sys.stdout if p == "-" else p, f)
                for p, f in ((a.csv_out, "csv"), (a.json_out, "json")) if p]
    tracks_out = RowWriter(a.tracks_csv, "csv", TRACK_ROW_FIELDS) if a.tracks_csv else None
    done, stopped = [], None
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        for path in videos:
            v = track_video(pred, path, every=every, period=a.detect_period,
                            keyframes=a.keyframes, min_frames=a.min_track,
                            batch_size=a.batch_size)
            done.append(v)
            for chunk in _chunks(frame_rows(v), 1000):  # a long video's rows never all in memory
                for w in writers:
                    w.write(chunk)
            if tracks_out:
                tracks_out.write(list(track_rows(v)))
            if a.subtitles and v.times:
                write_ass(v, _track_target(a.subtitles, path, len(videos)))
            if a.annotate and v.times:
                write_annotated_video(v, Path(a.annotate) / f"{Path(path).stem}.tracks.mp4")
            labels = [v.labels[t.id] for t in v.tracks]
            print(f"{display_name(path)}: " + (f"failed: {v.error}" if v.error and not v.times
                  else f"{len(v.times)} frames, {len(v.tracks)} tracks ("
                  + ", ".join(f"{sum((lb.label == k and not lb.unsure) for lb in labels)} {k}"
                              for k in ("female", "male"))
                  + f", {sum(lb.unsure for lb in labels)} unsure)"
                  + (f"; {v.error}" if v.error else "")), file=sys.stderr)
    except KeyboardInterrupt:
        stopped = f"interrupted after {len(done)} videos"
    finally:
        signal.signal(signal.SIGTERM, old_term)
    _close_all(writers + ([tracks_out] if tracks_out else []), stopped)
    summary = summarize_videos(done)
    if a.summary:
        write_text(a.summary, json.dumps(summary, indent=2) + "\n")
    if a.timeline:
        from .report.video_html import write_timeline

        write_timeline(done, a.timeline, summary)
    if a.summary_csv:
        with RowWriter(a.summary_csv, "csv", SUMMARY_CSV_FIELDS) as w:
            w.write([summary_csv_row(s) for s in summary["videos"]]
                    + [summary_csv_row({**summary["total"], "path": "TOTAL"})])
    if a.format == "table" and not to_stdout:
        print(json.dumps(summary["total"] if len(done) > 1 else summary["videos"][0]
                         if done else {}, indent=2))
    left = [str(x) if isinstance(x, (str, Path)) else s.ref for x in others
            for s in ([x] if isinstance(x, (str, Path)) else x.samples)]
    for x in left[:20]:
        print(f"  not a video, left out by --track: {display_name(str(x))}", file=sys.stderr)
    if stopped:
        return 130
    return 1 if any(v.error and not v.times for v in done) else 0


def _row_writer(target: Any, fmt: str):
    """A streaming writer of face records: JSON as they are, CSV with the box in four columns."""
    from .infer.records import CSV_FIELDS, RECORD_FIELDS, flatten
    from .io.writers import RowWriter

    if fmt == "csv":
        return RowWriter(target, fmt, CSV_FIELDS, csv_row=lambda r: flatten(r, digits=1))
    return RowWriter(target, fmt, RECORD_FIELDS)


def _close_all(writers: list, partial: str | None) -> list[Path | None]:
    """Close every writer; a closed stdout (| head) must not keep the files from closing."""
    out = []
    for w in writers:
        try:
            out.append(w.close(partial=partial))
        except OSError:
            if w.path is not None:
                raise
            out.append(None)
    return out


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def cmd_explain(a: argparse.Namespace) -> int:
    from .report.explainer import explain

    results = explain(a.images, a.model, a.out, detect=a.detect, largest=a.largest,
                      target=a.target, layer=a.layer, threads=a.threads, min_face=a.min_face,
                      progress=not a.quiet, device=a.device)
    _print_table([e.face_record() for e in results])
    failed = [e for e in results if e.error]
    print(f"{sum(e.ok for e in results)} faces explained into {a.out}; {len(failed)} failed",
          file=sys.stderr)
    return 1 if failed else 0


def cmd_serve(a: argparse.Namespace) -> int:
    from .serve.app import serve

    serve(a.model, a.host, a.port, log_level=a.log_level, backend=a.backend, workers=a.workers,
          threads=a.threads, detect=a.detect, max_upload_bytes=int(a.max_upload_mb * 2**20),
          max_files=a.max_files, max_pixels=a.max_pixels, max_pending=a.max_pending,
          api_key=a.api_key, no_auth=a.no_auth, cors_origins=tuple(a.cors_origin),
          rate_limit=a.rate_limit, per_client=a.per_client, body_timeout=a.body_timeout,
          idle_timeout=a.idle_timeout, device=a.device)
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from .infer.export import export, format_export_summary

    res = export(a.model, a.formats or ["onnx"], calib_data=a.calib_data,
                 calib_size=a.calib_size, parity_data=a.parity_data, parity_size=a.parity_size,
                 opset=a.opset, float_stride=a.int8_float_stride, device=a.device)
    print(format_export_summary(res))
    return 0


def cmd_qat(a: argparse.Namespace) -> int:
    from .infer.export import format_export_summary
    from .training.quantaware import finetune

    res = finetune(a.model, a.data, a.out, val=a.val, epochs=a.epochs, lr=a.lr,
                   batch_size=a.batch_size, consistency=a.consistency,
                   calib_size=a.calib_size, recalibrate_every=a.recalibrate_every or None,
                   limit=a.limit, val_limit=a.val_limit, augment=a.augment, workers=a.workers,
                   threads=a.threads, seed=a.seed, export_formats=("onnx", "int8") if a.export
                   else (), float_stride=a.int8_float_stride, progress=a.progress)
    v, last = res["metrics"]["val"], res["history"][-1]
    print(f"model folder: {res['model_dir']} (val accuracy {v['accuracy']:.2%}; simulated INT8 "
          f"agreement {last['agreement']:.2%} on {v['n']} val faces)")
    if res["export"]:
        print(format_export_summary(res["export"]))
    for ref, reason in res["skipped"][:20]:
        print(f"skipped {ref}: {reason}", file=sys.stderr)
    return 1 if res["skipped"] else 0


def cmd_benchmark(a: argparse.Namespace) -> int:
    from .infer.bench import benchmark, format_table

    data = a.data
    if data is None:
        default = Path.cwd().parent / "shared" / "data" / "celeba-gender" / "val.tar"
        data = default if default.is_file() else None
    rows = benchmark(a.model, data, a.n_eval,
                     backends=a.backends.split(",") if a.backends else None, photo=a.photo,
                     threads=a.threads)
    print(format_table(rows))
    return 0


def cmd_shard(a: argparse.Namespace) -> int:
    from .io.progress import count
    from .io.shards import write_shards

    res = write_shards(a.data if len(a.data) > 1 else a.data[0], a.out, maxcount=a.maxcount,
                       maxsize=a.maxsize_mb * 1e6, shuffle=a.shuffle, progress=a.progress)
    labels = ", ".join(f"{k}={v}" for k, v in sorted(res.labels.items())) or "unlabelled"
    print(f"{count(res.samples, 'image')} ({labels}) in {count(len(res.files), 'shard')}: "
          f"{res.pattern}")
    for sk in res.skipped[:20]:
        print(f"skipped {sk.ref}: {sk.reason}", file=sys.stderr)
    if len(res.skipped) > 20:
        print(f"... {len(res.skipped) - 20} more skipped", file=sys.stderr)
    return 1 if res.skipped else 0


def cmd_calibrate(a: argparse.Namespace) -> int:
    from .training.calibrate import calibrate

    res = calibrate(a.model, a.data, a.out, views=a.views, limit=a.limit, drop=a.drop,
                    backend=a.backend, threads=a.threads, seed=a.seed, progress=a.progress)
    b, n = res["before"], res["after"]
    print(f"{res['model']}: {res['faces']} faces x {res['views']} views from "
          f"{', '.join(res['sources'])} ({res['skipped']} without a face)")
    for key in ("temperature", "unsure_band", "ece_clean", "ece_degraded"):
        if key in n:
            print(f"  {key:12s} {b[key]} -> {n[key]}")
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    from .models.info import info

    print(json.dumps(info(a.model), indent=2))
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
            "explain": cmd_explain, "export": cmd_export, "qat": cmd_qat, "benchmark": cmd_benchmark,
            "serve": cmd_serve, "info": cmd_info, "val": cmd_evaluate, "shard": cmd_shard,
            "calibrate": cmd_calibrate}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import warnings

    # A warning is one line for the user, as an error is (not Python's file:line + source).
    warnings.formatwarning = lambda message, *_, **__: f"warning: {message}\n"
    try:
        from .io.targets import check_targets

        check_targets(args)  # a target that must not be written is refused before any work
        if getattr(args, "strict", False):  # before any work: the verb then loads it as usual
            from .models.modelfile import verify_files

            verify_files(args.model, strict=True)
        return COMMANDS[args.verb](args)
    except FaceGenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
