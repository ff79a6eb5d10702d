"""Face detection (BlazeFace short-range; back-camera for wide shots; ONNX Runtime) and the
crop policy: the classifier's input contract.

Imports `errors` and `io` only; never torch. The names below are imported on first use (PEP
562), so `facegender.faces.kinds` (the detector names the CLI offers) costs no numpy.
"""

from __future__ import annotations

from ..lazy import lazy_names

_LAZY = {"CropGeometry": "crop", "CropPolicy": "crop", "crop_face": "crop",
         "crop_geometry": "crop", "detect_and_crop": "crop", "eye_angle": "crop",
         "LANDMARKS": "detector", "Face": "detector", "FaceDetector": "detector",
         "find_faces": "framing", "measure_framing": "framing", "WideFaceDetector": "wide"}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
