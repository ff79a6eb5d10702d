"""Read and write the model folder: config.json + model.safetensors (+ model card, ONNX files).

The class order lives only in config.json, so training, prediction and reports cannot disagree
about which output is 'male'. Weights are safetensors: loading a model never unpickles.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
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


@dataclass
class ModelConfig:
    arch: str
    labels: list[str] = field(default_factory=lambda: list(DEFAULT_LABELS))
    input_size: int = 96
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    # How a face becomes the model's input; see faces.CropPolicy. {"detect": False} = whole image.
    crop: dict[str, Any] = field(default_factory=lambda: {"detect": False})
    threshold: float = 0.5  # p(male) >= threshold -> male
    temperature: float = 1.0  # logits are divided by this before softmax (calibration)
    unsure_band: float = 0.0  # |p(male) - 0.5| < band -> flagged unsure
    recipe: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
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
    if not (path / CONFIG_NAME).is_file():
        raise FaceGenderError(f"{path}: not a facegender model folder (no {CONFIG_NAME})")
    return path


def load_config(model: str | Path | None) -> ModelConfig:
    path = resolve_model_dir(model) / CONFIG_NAME
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise FaceGenderError(f"{path}: invalid JSON ({exc})") from None
    if data.get("format") != FORMAT:
        raise FaceGenderError(f"{path}: not a facegender config (format={data.get('format')!r})")
    return ModelConfig.from_dict(data)


def save_config(cfg: ModelConfig, folder: str | Path) -> Path:
    from ..version import __version__

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg.facegender_version = __version__
    out = folder / CONFIG_NAME
    out.write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    return out


def save_weights(state_dict: dict, folder: str | Path, metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / WEIGHTS_NAME
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    save_file(tensors, str(out), metadata=metadata or {})
    return out


def load_torch_model(model: str | Path | None):
    """Build the architecture named in config.json and load model.safetensors into it (eval mode)."""
    from safetensors.torch import load_file

    from .registry import build_model

    folder = resolve_model_dir(model)
    cfg = load_config(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise FaceGenderError(f"{folder}: no {WEIGHTS_NAME}")
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
