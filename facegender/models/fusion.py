"""Two face backbones on one crop: HSE FaceRes-deep (models/faceres.py) and the dlib-ResNet
gender model with dlib's gender classifier (models/dlib_resnet.py + cydral_gender.py), fused by
one linear head.

Both read faces aligned on dlib's five landmarks; FaceRes at get_face_chip padding 0.4 and 224
px, the dlib networks at padding 0.25 and 150 px. The model's input is FaceRes' crop; the dlib
crop is its centre (1.5 / 1.8 of the side) resampled to 150 px by two fixed matrix products and
renormalised inside the network, so training, the feature store and the ONNX export see the same
computation.

``features(x)`` is what the feature store caches and the head reads (FEATURE_LAYOUT): FaceRes'
1024-d descriptor and gender logit, the dlib model's 256-d pooled features, its gender logit
(with dlib's classifier added, as the shipped accurate model computes it) and dlib's classifier's
logit alone. The head is linear on those, with the feature standardisation folded into it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .cydral_gender import WithCydral
from .dlib_format import DLIB_RGB_MEAN
from .dlib_resnet import FEATURES as DLIB_FEATURES
from .dlib_resnet import INPUT_SIZE as DLIB_SIZE
from .dlib_resnet import DlibGenderNet
from .faceres import (
    CAFFE_BGR_MEAN,
    DESCRIPTOR,
    FACERES_CROP,
    FACERES_MEAN,
    FACERES_STD,
    INPUT_SIZE,
    FaceResNet,
)

DLIB_PADDING, FACERES_PADDING = 0.25, 0.4
# (name, width) of each block of features(x), in order.
FEATURE_LAYOUT = [("faceres_descriptor", DESCRIPTOR), ("faceres_logit", 1),
                  ("dlib_features", DLIB_FEATURES), ("accurate_logit", 1), ("cydral_logit", 1)]
N_FEATURES = sum(w for _, w in FEATURE_LAYOUT)


def feature_slices() -> dict[str, slice]:
    out, at = {}, 0
    for name, width in FEATURE_LAYOUT:
        out[name] = slice(at, at + width)
        at += width
    return out


def bilinear_matrix(n_in: int, n_out: int, start: float, length: float) -> torch.Tensor:
    """(n_out, n_in) weights sampling the window [start, start + length) of n_in pixels at n_out
    pixel centres, bilinearly (a 1.2x reduction: no antialiasing needed)."""
    a = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        x = start + (i + 0.5) * length / n_out - 0.5
        lo = int(np.floor(x))
        f = x - lo
        for j, w in ((lo, 1 - f), (lo + 1, f)):
            a[i, min(max(j, 0), n_in - 1)] += w
    return torch.from_numpy(a)


class FaceResFusion(nn.Module):
    """FaceRes crop (normalised as FACERES_MEAN / FACERES_STD) -> logits of (female, male)."""

    def __init__(self, faceres: FaceResNet | None = None, dlib: WithCydral | None = None) -> None:
        super().__init__()
        self.faceres = faceres if faceres is not None else FaceResNet()
        self.dlib = dlib if dlib is not None else WithCydral(DlibGenderNet(2, hidden=0))
        side = INPUT_SIZE * (1 + 2 * DLIB_PADDING) / (1 + 2 * FACERES_PADDING)
        self.register_buffer("resample", bilinear_matrix(INPUT_SIZE, DLIB_SIZE,
                                                         (INPUT_SIZE - side) / 2, side))
        # FaceRes input is rgb - caffe mean (0-255); dlib's is (rgb - dlib mean) / 256.
        shift = [c - d for c, d in zip(reversed(CAFFE_BGR_MEAN), DLIB_RGB_MEAN, strict=True)]
        self.register_buffer("dlib_shift", torch.tensor(shift).view(1, 3, 1, 1))
        self.head = nn.Linear(N_FEATURES, 1)

    def dlib_input(self, x: torch.Tensor) -> torch.Tensor:
        return (self.resample @ x @ self.resample.T + self.dlib_shift) / 256.0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(n, N_FEATURES): the blocks of FEATURE_LAYOUT, concatenated."""
        d, z_fr, _ = self.faceres.outputs(x)
        xd = self.dlib_input(x)
        f_dlib = self.dlib.base.backbone.features(xd)
        base = self.dlib.base.head(f_dlib)
        cyd = self.dlib.expert(self.dlib.chip(xd))
        acc = base + self.dlib.weight * cyd
        return torch.cat([d, z_fr[:, None], f_dlib, (acc[:, 1] - acc[:, 0])[:, None],
                          (cyd[:, 1] - cyd[:, 0])[:, None]], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.head(self.features(x))
        return torch.cat([-z / 2, z / 2], dim=1)


def fusion_config_fields() -> dict:
    """config.json preprocessing of a FaceResFusion model (as registry.arch_defaults gives)."""
    return {"input_size": INPUT_SIZE, "mean": FACERES_MEAN, "std": FACERES_STD,
            "crop": dict(FACERES_CROP)}
