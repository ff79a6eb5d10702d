"""Read and write the model folder: config.json + model.safetensors (+ model card, ONNX files).

The class order lives only in config.json, so training, prediction and reports cannot disagree
about which output is 'male'. Weights are safetensors: loading a model never unpickles.

config.json is validated on load against CONFIG_SCHEMA (JSON Schema); each failure is a
FaceGenderError naming the file and the key. `save_config` records the sha256 of every weight
file in the folder, the config values the engines read (ENGINE_KEYS) and a digest over them and
the label order (`integrity`); `verify_files` checks it before an engine loads weights, so a
label order or input size edited by hand, or a weight file replaced or damaged after saving, is
refused instead of inverting every answer in silence. A folder without that record loads with a
warning naming what is unverified, or not at all with strict=True. The digest guards against
accidents (a hand edit, a partial copy, a file from another model), not against someone who can
rewrite the folder: they can rewrite the record too.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import FaceGenderError
from ..labels import DEFAULT_LABELS

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
ONNX_NAME = "model.onnx"
ONNX_INT8_NAME = "model.int8.onnx"
CARD_NAME = "README.md"
HISTORY_NAME = "history.csv"
FORMAT = "facegender-model"
FORMAT_VERSION = 1
# The files whose sha256 `integrity` records (the ones an engine loads).
WEIGHT_FILES = (WEIGHTS_NAME, ONNX_NAME, ONNX_INT8_NAME)
# The config values an engine reads beside the label order, bound to the weights by
# `integrity.config`. The crop policy is not: it is a framing the user may tune (Predictor's
# `crop`), checked for consistency only.
ENGINE_KEYS = ("arch", "input_size", "mean", "std")
MAX_CONFIG_BYTES = 16 * 1024 * 1024

_NUMBER = {"type": "number"}
_POLICY_KEYS = ["detect", "margin", "aspect", "align", "offset_y"]
CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["format", "arch", "labels", "input_size", "mean", "std", "crop", "threshold",
                 "temperature"],
    "properties": {
        "format": {"const": FORMAT},
        "format_version": {"type": "integer", "minimum": 1, "maximum": FORMAT_VERSION},
        "arch": {"type": "string", "minLength": 1, "maxLength": 200},
        "labels": {"type": "array", "minItems": 2, "maxItems": 2, "uniqueItems": True,
                   "items": {"enum": ["female", "male"]}},
        "input_size": {"type": "integer", "minimum": 16, "maximum": 1024},
        "mean": {"type": "array", "minItems": 3, "maxItems": 3,
                 "items": {**_NUMBER, "minimum": -10, "maximum": 10}},
        "std": {"type": "array", "minItems": 3, "maxItems": 3,
                "items": {**_NUMBER, "exclusiveMinimum": 0, "maximum": 100}},
        "crop": {
            "type": "object",
            "required": ["detect"],
            "properties": {
                "detect": {"type": "boolean"},
                "margin": {**_NUMBER, "exclusiveMinimum": -1, "maximum": 10},
                "aspect": {**_NUMBER, "exclusiveMinimum": 0, "maximum": 10},
                "align": {"type": "boolean"},
                "offset_y": {**_NUMBER, "minimum": -5, "maximum": 5},
                "template": {"type": ["array", "null"], "minItems": 4, "maxItems": 5,
                             "items": {"type": "array", "minItems": 2, "maxItems": 2,
                                       "items": _NUMBER}},
                # what the template aligns on (faces/crop.py); absent in older models: detector
                "landmarks": {"enum": ["detector", "dlib5"]},
            },
            "additionalProperties": False,
            # A detecting policy must say how to cut the face: no key may fall back silently.
            "if": {"properties": {"detect": {"const": True}}},
            "then": {"required": _POLICY_KEYS},
        },
        # How the training images were framed (faces/framing.py); decides the whole-image rule.
        "framing": {
            "type": "object",
            "properties": {
                "kind": {"enum": ["face_crops", "photos"]},
                "images": {"type": "integer", "minimum": 0},
                "faces_found": {"type": "integer", "minimum": 0},
                "image_aspect": {"type": "array", "minItems": 2, "maxItems": 2,
                                 "items": {**_NUMBER, "exclusiveMinimum": 0}},
                "image_side": {"type": "integer", "minimum": 1},
                "margin": _NUMBER, "aspect": _NUMBER, "offset_y": _NUMBER,
            },
        },
        "threshold": {**_NUMBER, "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "temperature": {**_NUMBER, "exclusiveMinimum": 0, "maximum": 1000},
        "unsure_band": {**_NUMBER, "minimum": 0, "maximum": 0.5},
        "whole_image_temperature": {"type": ["number", "null"], "exclusiveMinimum": 0,
                                    "maximum": 1000},
        "small_face_shift": {"type": ["object", "null"], "required": ["below_px", "per_octave"],
                             "properties": {"below_px": {**_NUMBER, "minimum": 1},
                                            "per_octave": {**_NUMBER, "minimum": -5,
                                                           "maximum": 5}}},
        "tta": {"type": "boolean"},
        "recipe": {"type": "object"},
        "data": {"type": "object"},
        "metrics": {"type": "object"},
        "facegender_version": {"type": "string"},
        "integrity": {
            "type": "object",
            "required": ["files", "digest"],
            "properties": {
                "files": {"type": "object", "additionalProperties": {
                    "type": "string", "pattern": "^[0-9a-f]{64}$"}},
                "digest": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "config": {"type": "object"},
            },
        },
    },
}


@dataclass
class ModelConfig:
    arch: str
    labels: list[str] = field(default_factory=lambda: list(DEFAULT_LABELS))
    input_size: int = 96
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    # How a face becomes the model's input; see faces.CropPolicy. {"detect": False} = whole image.
    crop: dict[str, Any] = field(default_factory=lambda: {"detect": False})
    # How the training images were framed (faces/framing.py: measure_framing): tight face crops
    # or photos, their crop-to-box relation and shape. Empty for models made before it existed.
    framing: dict[str, Any] = field(default_factory=dict)
    threshold: float = 0.5  # p(male) >= threshold -> male
    temperature: float = 1.0  # logits are divided by this before softmax (calibration)
    unsure_band: float = 0.0  # |p(male) - 0.5| < band -> flagged unsure
    # The temperature of faces read as the whole image (face_source "whole_image": a crop the
    # detector found no face in is framed unlike the policy's crops, so its logits are scaled
    # apart); None: `temperature`.
    whole_image_temperature: float | None = None
    # {"below_px": R, "per_octave": a}: a face whose box side is under R px gets a male logits
    # per halving below R (infer.preprocess.shift_small_faces; fitted by calibrate
    # --small-faces). None: no shift.
    small_face_shift: dict[str, float] | None = None
    # Classify each face and its mirror image and average, unless the caller says otherwise:
    # a model whose benchmark is better that way carries it, as it carries its crop policy.
    tta: bool = False
    recipe: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    # sha256 of each weight file + a digest binding them to `labels` (written by save_config).
    integrity: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    facegender_version: str = ""

    def __post_init__(self) -> None:
        if sorted(self.labels) != ["female", "male"]:
            raise FaceGenderError(f"config.json labels must be 'female' and 'male', got {self.labels}")

    @property
    def male_index(self) -> int:
        return self.labels.index("male")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        kwargs = {k: v for k, v in d.items() if k in known}
        cfg = cls(**kwargs)
        if unknown:
            cfg.recipe.setdefault("_unknown_config_keys", unknown)
        return cfg


WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
# The models that ship inside the package, by name; "default" is the fast one.
SHIPPED = {"fast": "fast", "accurate": "accurate", "default": "fast"}


def default_model_dir() -> Path:
    """The model that ships inside the package and is used when none is named (fast)."""
    return WEIGHTS_DIR / SHIPPED["default"]


def shipped_model_dir(name: str) -> Path:
    """A shipped model by name: fast (the default) or accurate."""
    if name not in SHIPPED:
        raise FaceGenderError(f"no shipped model named {name!r}; choose from {sorted(SHIPPED)}")
    return WEIGHTS_DIR / SHIPPED[name]


def resolve_model_dir(model: str | Path | None) -> Path:
    """A model folder from a path, or a shipped model's name (a folder of that name wins)."""
    if model in (None, ""):
        path = default_model_dir()
    elif isinstance(model, str) and model in SHIPPED and not Path(model).is_dir():
        path = shipped_model_dir(model)
    else:
        path = Path(model)
    if not path.is_dir():
        if path.suffix in (".pt", ".pth", ".pkl", ".ckpt"):
            raise FaceGenderError(
                f"{path}: pickle checkpoints are not loaded (they can run code); "
                "give a model folder with config.json + model.safetensors"
            )
        raise FaceGenderError(f"model folder not found: {path}")
    if not os.path.lexists(path / CONFIG_NAME):  # a config that is not a file: load_config says
        raise FaceGenderError(f"{path}: not a facegender model folder (no {CONFIG_NAME})")
    return path


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def _key(path) -> str:
    """A jsonschema error path as the config key it names, e.g. crop.margin or mean[1]."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(the whole file)"


@lru_cache(maxsize=1)
def _fast_validator() -> Callable[[Any], Any]:
    import fastjsonschema

    return fastjsonschema.compile(CONFIG_SCHEMA)


def config_is_valid(data: Any) -> bool:
    """The quick check of CONFIG_SCHEMA (fastjsonschema: compiled once, ~6 ms to import, where
    jsonschema takes ~50 ms, a tenth of a one-photo CLI call)."""
    import fastjsonschema

    try:
        _fast_validator()(data)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def validate_config(data: Any, path: str | Path) -> None:
    """Raise FaceGenderError naming `path` and the key for the first way `data` breaks
    CONFIG_SCHEMA (the most specific error jsonschema finds). A config that passes the quick
    check never imports jsonschema; tests/test_faults.py checks that both validators agree."""
    if not isinstance(data, dict):
        raise FaceGenderError(f"{path}: key (the whole file): must be a JSON object, not "
                              f"{type(data).__name__}")
    if data.get("format") != FORMAT:
        raise FaceGenderError(f"{path}: key 'format': not a facegender config "
                              f"(format={str(data.get('format'))[:80]!r})")
    if config_is_valid(data):
        return
    import jsonschema

    validator = jsonschema.Draft202012Validator(CONFIG_SCHEMA)
    err = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if err is None:
        return
    key = _key(err.absolute_path)
    if err.validator == "required":
        missing = [k for k in err.validator_value if k not in (err.instance or {})]
        key = ".".join(x for x in (_key(err.absolute_path) if err.absolute_path else "",
                                   missing[0] if missing else "") if x)
        raise FaceGenderError(f"{path}: key '{key}' is missing")
    raise FaceGenderError(f"{path}: key '{key}': {err.message[:300]}")


def load_config(model: str | Path | None) -> ModelConfig:
    """config.json of a model folder, validated (CONFIG_SCHEMA); weights are not touched."""
    from ..io.files import read_file

    path = resolve_model_dir(model) / CONFIG_NAME
    try:
        raw = read_file(path, str(path), cap=MAX_CONFIG_BYTES)
    except FaceGenderError as exc:
        raise FaceGenderError(f"{path}: {getattr(exc, 'reason', exc)}") from None
    try:
        data = json.loads(raw.decode("utf-8-sig"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise FaceGenderError(f"{path}: key (the whole file): not UTF-8 text (a binary file?)"
                              ) from None
    except (json.JSONDecodeError, ValueError, RecursionError) as exc:
        raise FaceGenderError(f"{path}: invalid JSON ({str(exc)[:200]})") from None
    validate_config(data, path)
    return ModelConfig.from_dict(data)


# sha256 of files already hashed in this process, by (path, size, mtime, inode).
_HASHES: dict[tuple, str] = {}
_HASH_LOCK = threading.Lock()


def file_sha256(path: Path) -> str:
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    with _HASH_LOCK:
        if key in _HASHES:
            return _HASHES[key]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(2**20), b""):
            h.update(block)
    digest = h.hexdigest()
    with _HASH_LOCK:
        _HASHES[key] = digest
    return digest


def _digest(labels: list[str], files: dict[str, str], config: dict | None = None) -> str:
    """sha256 over the label order, the weight files' hashes and (records written since
    ENGINE_KEYS existed) the engine values; older records hash without `config`."""
    record: dict[str, Any] = {"labels": list(labels), "files": dict(sorted(files.items()))}
    if config is not None:
        record["config"] = config
    blob = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _engine_values(cfg: ModelConfig) -> dict[str, Any]:
    """The ENGINE_KEYS of `cfg` as JSON stores them (tuples become lists)."""
    return json.loads(json.dumps({k: getattr(cfg, k) for k in ENGINE_KEYS}))


def integrity_record(folder: str | Path, cfg: ModelConfig) -> dict[str, Any]:
    """The `integrity` entry for the weight files now in `folder` and `cfg`'s label order and
    engine values."""
    folder = Path(folder)
    check_weight_files(folder)
    files = {name: file_sha256(folder / name) for name in WEIGHT_FILES
             if (folder / name).is_file()}
    config = _engine_values(cfg)
    return {"files": files, "config": config, "digest": _digest(cfg.labels, files, config)}


def check_weight_files(folder: Path) -> None:
    """Refuse a weight file that is not a regular file (after symlinks): a FIFO would block the
    reader, /dev/zero never ends, and neither may be passed over for another backend."""
    from ..io.files import special_kind

    for name in WEIGHT_FILES:
        path = folder / name
        if not os.path.lexists(path):
            continue
        try:
            kind = special_kind(os.stat(path).st_mode)
        except OSError as exc:  # a broken symlink, a loop, no permission
            raise FaceGenderError(f"{path}: cannot be read ({exc.strerror or exc}); weights are "
                                  "loaded only from regular files") from None
        if kind:
            what = kind.split(";")[0].split(", not")[0]  # "is a named pipe (FIFO)", ...
            raise FaceGenderError(f"{path}: {what}, not a regular file; weights are loaded only "
                                  "from regular files")


def _unverified(folder: Path, cfg: ModelConfig) -> str | None:
    """What the folder's integrity record leaves unchecked, or None when it covers it all."""
    if not cfg.integrity:
        present = [n for n in WEIGHT_FILES if (folder / n).is_file()]
        return (f"{folder / CONFIG_NAME} has no integrity record: the label order "
                f"{cfg.labels}, {', '.join(ENGINE_KEYS)} and {', '.join(present) or 'the weights'}"
                " are unverified")
    if "config" not in cfg.integrity:
        return (f"{folder / CONFIG_NAME}: its integrity record predates engine values: "
                f"{', '.join(ENGINE_KEYS)} are unverified")
    return None


_WARNED: set[str] = set()  # folders already warned about in this process


def verify_files(model: str | Path | None, names: tuple[str, ...] = WEIGHT_FILES,
                 strict: bool = False) -> ModelConfig:
    """Check a model folder before its weights are used: config.json valid, weight files regular
    files, label order, engine values (ENGINE_KEYS) and recorded files unchanged since
    save_config (`integrity`), each of `names` that exists matching its recorded sha256,
    model.safetensors a readable safetensors file, the crop policy consistent. A folder whose
    record is missing (or older, without engine values) loads with a warning naming what is
    unverified; `strict` refuses it. Returns the config."""
    folder = resolve_model_dir(model)
    cfg = load_config(folder)
    check_weight_files(folder)
    _check_crop(folder, cfg)
    gap = _unverified(folder, cfg)
    if gap and strict:
        raise FaceGenderError(f"{gap}; refused in strict mode (re-save the folder with "
                              "modelfile.save_config once you trust it)")
    if gap and str(folder.resolve()) not in _WARNED:  # once per folder, whichever engine asks
        _WARNED.add(str(folder.resolve()))
        warnings.warn(f"{gap} (re-save it with modelfile.save_config once you trust it; "
                      "--strict refuses such a folder)", stacklevel=3)
    if cfg.integrity:
        _check_integrity(folder, cfg, names)
    if WEIGHTS_NAME in names and (folder / WEIGHTS_NAME).is_file():
        check_safetensors(folder / WEIGHTS_NAME)
    return cfg


def _check_integrity(folder: Path, cfg: ModelConfig, names: tuple[str, ...]) -> None:
    rec = cfg.integrity
    files, sealed = rec.get("files", {}), rec.get("config")
    if sealed is not None:  # name the value that moved before the digest says "something"
        now = _engine_values(cfg)
        for key in ENGINE_KEYS:
            if key in sealed and sealed[key] != now[key]:
                raise FaceGenderError(
                    f"{folder / CONFIG_NAME}: key '{key}' is {now[key]!r} but the weights were "
                    f"saved with {sealed[key]!r} (integrity.config): config.json was edited "
                    "by hand or belongs to other weights")
    if _digest(cfg.labels, files, sealed) != rec.get("digest"):
        raise FaceGenderError(
            f"{folder / CONFIG_NAME}: key 'labels': the label order {cfg.labels} (or "
            "integrity.files) is not what was recorded with the weights (integrity.digest): "
            "config.json was edited by hand; restore it, or re-save the folder with "
            "modelfile.save_config if the weights really were changed to match")
    for name in names:
        if name in files and (folder / name).is_file() \
                and file_sha256(folder / name) != files[name]:
            raise FaceGenderError(
                f"{folder / name}: its sha256 is not the one recorded in config.json "
                f"(integrity.files['{name}']): the file was replaced or damaged after the "
                "model was saved")


def _check_crop(folder: Path, cfg: ModelConfig) -> None:
    """The crop policy as the engines will build it (faces.CropPolicy), or one line naming
    config.json's key 'crop' and what is wrong."""
    from ..faces.crop import CropPolicy

    try:
        CropPolicy.from_dict(cfg.crop)
    except FaceGenderError as exc:
        raise FaceGenderError(f"{folder / CONFIG_NAME}: key 'crop': {exc}") from None


def check_safetensors(path: Path) -> None:
    """Refuse a file that is not a complete safetensors file (a pickle renamed, truncated)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            fh.keys()
    except Exception as exc:  # the Rust reader raises SafetensorError and OSError alike
        raise FaceGenderError(f"{path}: not a readable safetensors file ({str(exc)[:200]}); "
                              "weights are never unpickled") from None


def save_config(cfg: ModelConfig, folder: str | Path) -> Path:
    """Write config.json, recording the integrity of the weight files now in `folder`: call it
    after the weights are written."""
    from ..version import __version__

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg.facegender_version = __version__
    cfg.integrity = integrity_record(folder, cfg)
    data = cfg.to_dict()
    validate_config(json.loads(json.dumps(data)), folder / CONFIG_NAME)
    out = folder / CONFIG_NAME
    tmp = out.with_name(f".{CONFIG_NAME}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, out)  # a reader never sees half a config
    return out


def save_weights(state_dict: dict, folder: str | Path, metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / WEIGHTS_NAME
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    save_file(tensors, str(out), metadata=metadata or {})
    return out


def _check_arch_values(folder: Path, cfg: ModelConfig) -> None:
    """An architecture that fixes its preprocessing (registry.arch_defaults: dlib's chip size,
    mean and std) refuses a config that says otherwise, naming the key."""
    from .registry import arch_defaults

    fixed = json.loads(json.dumps(arch_defaults(cfg.arch)))
    now = _engine_values(cfg)
    for key in ENGINE_KEYS:
        if key in fixed and fixed[key] != now[key]:
            raise FaceGenderError(f"{folder / CONFIG_NAME}: key '{key}' is {now[key]!r} but "
                                  f"architecture '{cfg.arch}' needs {fixed[key]!r}")


def load_torch_model(model: str | Path | None):
    """Build the architecture named in config.json and load model.safetensors into it (eval mode)."""
    from safetensors.torch import load_file

    from .registry import build_model

    folder = resolve_model_dir(model)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise FaceGenderError(f"{folder}: no {WEIGHTS_NAME}")
    cfg = verify_files(folder, (WEIGHTS_NAME,))
    _check_arch_values(folder, cfg)
    net = build_model(cfg.arch, num_classes=len(cfg.labels), pretrained=False)
    state = load_file(str(weights))
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise FaceGenderError(
            f"{weights}: weights do not match architecture '{cfg.arch}' "
            f"(missing {len(missing)}, unexpected {len(unexpected)} tensors)"
        )
    net.eval()
    return net, cfg
