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


def shift_small_faces(p_male: np.ndarray, side: np.ndarray, shift: dict | None) -> np.ndarray:
    """p(male) of faces whose detector box side (px in the image) is under shift["below_px"],
    moved by shift["per_octave"] male logits per halving of that side. Small faces lose the
    cues that read male (stubble, brows), so an uncorrected model calls small men women; the
    shift is fitted on validation faces shown smaller (training/small_faces.py)."""
    if not shift:
        return p_male
    octaves = np.log2(shift["below_px"] / np.maximum(np.asarray(side, np.float64), 1.0))
    z = np.clip(np.asarray(p_male, np.float64), 1e-7, 1 - 1e-7)
    z = np.log(z / (1 - z)) + shift["per_octave"] * np.clip(octaves, 0.0, None)
    return (1 / (1 + np.exp(-z))).astype(np.float32)
