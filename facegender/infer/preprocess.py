"""Face crop -> model input array. numpy + PIL only, so the torch-free predictor shares it with
training (training's augmentations run before this, on the PIL image)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..models.modelfile import ModelConfig


def resize(img: Image.Image, size: int) -> Image.Image:
    # Squash to a square: crops already have the policy's aspect, so train and predict distort alike.
    if img.size == (size, size):
        return img
    return img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)


def to_array(img: Image.Image, cfg: ModelConfig) -> np.ndarray:
    """RGB PIL face crop -> float32 CHW array, resized and normalised as the model expects."""
    arr = np.asarray(resize(img, cfg.input_size), dtype=np.float32) / 255.0
    arr = (arr - np.asarray(cfg.mean, np.float32)) / np.asarray(cfg.std, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def softmax(logits: np.ndarray, temperature: float | np.ndarray = 1.0) -> np.ndarray:
    """Class probabilities of (N, C) logits divided by `temperature` (one, or one per row)."""
    t = np.maximum(np.asarray(temperature, dtype=np.float64), 1e-6)
    z = logits.astype(np.float64) / (t[:, None] if t.ndim else t)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
