"""Prediction: the Predictor and its results, engines (ONNX Runtime, torch), preprocessing,
annotated outputs, export to ONNX/INT8 and the latency benchmark.

Imports `io`, `faces`, `models`; torch only in the torch backend and `export`.
"""
