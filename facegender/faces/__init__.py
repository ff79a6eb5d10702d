"""Face detection (BlazeFace short-range; back-camera for wide shots; ONNX Runtime) and the
crop policy: the classifier's input contract.

Imports `errors` only; never torch.
"""

from .crop import CropGeometry, CropPolicy, crop_face, crop_geometry, detect_and_crop, eye_angle
from .detector import LANDMARKS, Face, FaceDetector
from .framing import find_faces, measure_framing
from .wide import WideFaceDetector

__all__ = ["LANDMARKS", "CropGeometry", "CropPolicy", "Face", "FaceDetector", "crop_face", "crop_geometry",
           "detect_and_crop", "eye_angle", "find_faces", "measure_framing",
           "WideFaceDetector"]
