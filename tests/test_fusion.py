"""The fused model (models/fusion.py): FaceRes-deep and the dlib gender networks read one
FaceRes crop; the dlib networks' crop is resampled inside the network, and must give what the
dlib model gives on its own crop of the same face."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from facegender.faces import CropPolicy, FaceDetector, detect_and_crop  # noqa: E402
from facegender.infer.preprocess import to_array  # noqa: E402
from facegender.models import modelfile  # noqa: E402
from facegender.models.dlib_resnet import DLIB_CROP, DLIB_MEAN, DLIB_STD  # noqa: E402
from facegender.models.faceres import load_faceres  # noqa: E402
from facegender.models.fusion import (  # noqa: E402
    N_FEATURES,
    FaceResFusion,
    feature_slices,
    fusion_config_fields,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _dlib_part():
    net, cfg = modelfile.load_torch_model("accurate")
    return net.dlib if cfg.arch == "faceres_fusion" else net


def test_in_network_dlib_crop_reads_as_the_dlib_models_own_crop():
    torch.set_num_threads(1)
    dlib = _dlib_part()
    net = FaceResFusion(load_faceres(), dlib).eval()
    fcfg = modelfile.ModelConfig(arch="faceres_fusion", **fusion_config_fields())
    dcfg = modelfile.ModelConfig(arch="dlib_resnet_cydral", input_size=150, mean=DLIB_MEAN,
                                 std=DLIB_STD, crop=DLIB_CROP)
    det = FaceDetector(threads=1)
    z_own, z_fused = [], []
    for path in sorted(EXAMPLES.glob("fairface_*.jpg")):
        img = Image.open(path).convert("RGB")
        own = detect_and_crop(img, det, CropPolicy.from_dict(DLIB_CROP), largest=True)[0][1]
        fused = detect_and_crop(img, det, CropPolicy.from_dict(fcfg.crop), largest=True)[0][1]
        with torch.inference_mode():
            lo = dlib(torch.from_numpy(to_array(own, dcfg))[None])
            f = net.features(torch.from_numpy(to_array(fused, fcfg))[None])
        assert f.shape == (1, N_FEATURES)
        z_own.append(float(lo[0, 1] - lo[0, 0]))
        z_fused.append(float(f[0, feature_slices()["accurate_logit"]][0]))
    z_own, z_fused = np.array(z_own), np.array(z_fused)
    # measured on 30 fairface540 faces: correlation 0.9996, mean |dz| 0.11 at mean |z| 4.5
    assert np.all(np.sign(z_own) == np.sign(z_fused)), (z_own, z_fused)
    assert np.abs(z_own - z_fused).max() < 0.6, (z_own, z_fused)
    assert np.ptp(z_own) > 2  # the faces differ


def test_fusion_head_reads_its_features_and_registry_builds_it():
    from facegender.models.registry import arch_defaults, build_model

    net = build_model("faceres_fusion").eval()
    assert arch_defaults("faceres_fusion")["input_size"] == 224
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.zero_()
        net.head.weight[0, feature_slices()["faceres_logit"]] = 1.0
        x = torch.randn(2, 3, 224, 224) * 40
        logits = net(x)
        _, z, _ = net.faceres.outputs(x)
    assert torch.allclose(logits[:, 1] - logits[:, 0], z, atol=1e-4)
