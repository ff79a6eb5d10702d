"""The face detectors a caller can choose (`--detector`, `Predictor(detector=...)`), without
importing any of them: "short" (BlazeFace short-range, made for photos), "wide" (back-camera
BlazeFace over tiles, small faces of wide shots) and "auto" (faces/wide.py: `choose`)."""

DETECTORS = ("auto", "short", "wide")
