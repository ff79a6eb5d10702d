"""Face detection (BlazeFace on ONNX Runtime) and the crop policy: the classifier's input contract.

Imports `io` and `errors`; never torch.
"""

from .detector import (
    LANDMARKS,
    CropGeometry,
    CropPolicy,
    Face,
    FaceDetector,
    crop_face,
    crop_geometry,
    detect_and_crop,
)

__all__ = ["LANDMARKS", "CropGeometry", "CropPolicy", "Face", "FaceDetector", "crop_face", "crop_geometry",
           "detect_and_crop"]
