"""Face detection (BlazeFace short-range; back-camera for wide shots; ONNX Runtime) and the
crop policy: the classifier's input contract.

Imports `errors` and `io` only; never torch. The names below are imported on first use (PEP
562), so `facegender.faces.kinds` (the detector names the CLI offers) costs no numpy.
"""

from __future__ import annotations

from typing import Any

_LAZY = {"CropGeometry": "crop", "CropPolicy": "crop", "crop_face": "crop",
         "crop_geometry": "crop", "detect_and_crop": "crop", "eye_angle": "crop",
         "LANDMARKS": "detector", "Face": "detector", "FaceDetector": "detector",
         "find_faces": "framing", "measure_framing": "framing", "WideFaceDetector": "wide"}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'facegender.faces' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
