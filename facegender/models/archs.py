"""The architecture names the registry builds, without importing torch: the CLI's --arch
choices and help come from here, and registry.py checks it builds exactly these."""

from __future__ import annotations

from ..errors import FaceGenderError

ARCHITECTURES: dict[str, str] = {
    "mobilenetv3_small": "torchvision MobileNetV3-Small (the fast model's)",
    "mobilenetv2": "torchvision MobileNetV2",
    "mobilenetv3_large": "torchvision MobileNetV3-Large",
    "efficientnet_b0": "torchvision EfficientNet-B0",
    "resnet18": "torchvision ResNet-18",
    "mobilenetv3_small_se": "MobileNetV3-Small with a squeeze-and-excitation head",
    "alexnet": "the baseline of older tutorials (57M parameters)",
    "dlib_resnet": "dlib's face-recognition ResNet (CC0) with a linear head",
    "dlib_resnet_mlp": "dlib_resnet with a 256-unit MLP head",
    "dlib_resnet_cydral": "dlib_resnet plus dlib's gender classifier as a second opinion",
    "cydral_gender": "dlib's CC0 gender classifier alone (32 px chip)",
    "mobilenetv3_small_cydral": "MobileNetV3-Small on dlib's chip at 48-80 px plus dlib's gender "
                                "classifier, logits mixed (tools/distil_fast.py --pair)",
    "faceres": "HSE FaceRes-deep (MobileNet-v1 on VGGFace2 identities, 224 px) with a linear head",
    "faceres_fusion": "FaceRes-deep + dlib_resnet_cydral fused by one head (the accurate model; "
                      "assembled by tools/make_fusion_model.py)",
}
TIMM_PREFIX = "timm:"


def available() -> list[str]:
    return sorted(ARCHITECTURES) + [f"{TIMM_PREFIX}<any timm model name>"]


def check_arch(name: str) -> str:
    """A registered architecture or timm:<name>; anything else is a one-line error."""
    if name in ARCHITECTURES or (name.startswith(TIMM_PREFIX) and len(name) > len(TIMM_PREFIX)):
        return name
    raise FaceGenderError(f"unknown architecture '{name}'; choose one of: {', '.join(available())}")
