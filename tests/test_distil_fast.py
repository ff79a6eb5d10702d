"""tools/distil_fast.py: its splits never touch a test split and keep a person on one side, folding
dlib's frozen batch norms keeps the network's function, and its smear measure tells tight crops
(edge pixels repeated past the image) from loose ones on real faces."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from conftest import DATA, ROOT

from facegender.infer.preprocess import to_array
from facegender.io.images import decode_bytes
from facegender.io.sources import read_source
from facegender.models import modelfile
from facegender.models.cydral_gender import load_expert
from facegender.training.torchdata import PolicyCrop


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("distil_fast", ROOT / "tools" / "distil_fast.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_splits_hold_out_tests_and_identities(tool):
    if not all((DATA / p).parent.is_dir() for p in ("kinfacew/labels.csv", "fiw/labels.csv")):
        pytest.skip("kin sources not found")
    train, val, provenance = tool.faces(2000, 300, 0)
    assert {p["name"] for p in provenance} == {"celeba-gender", "aaf", "kinfacew", "fiw"}
    assert all(s.split != "test" for s in train + val)
    assert not any(s.groups.get("disputed") == "1" for s in train + val)
    for name in ("kinfacew", "fiw"):
        ids = [{s.groups["identity"] for s in part if s.groups["source"] == name}
               for part in (train, val)]
        assert ids[0] and ids[1] and not ids[0] & ids[1], name
    assert sum(s.groups["source"] == "celeba-gender" for s in train) == 2000


def test_folding_batch_norms_keeps_the_function(tool):
    net = load_expert()
    x = torch.randn(4, 3, 32, 32) * 0.3
    before = net(x)
    tool.fold_affine(net)
    assert torch.allclose(net(x), before, atol=1e-4)
    assert all(float(s.detach().abs().max()) == 1.0 for s in net.scales)


def test_smear_tells_tight_crops_from_loose(tool):
    cfg = modelfile.load_config("fast")
    crop = PolicyCrop(cfg.crop, framing=cfg.framing)
    medians = {}
    for spec in ("kinfacew/labels.csv", "aaf/labels.csv"):
        if not (DATA / spec).is_file():
            pytest.skip(f"{spec} not found")
        samples = [s for s in read_source(DATA / spec).samples if s.split == "train"][::97][:12]
        x = np.stack([to_array(crop.find(decode_bytes(s.read_bytes(), s.ref)), cfg)
                      for s in samples])
        medians[spec.split("/")[0]] = float(np.median(tool.smear(x)))
    assert medians["kinfacew"] > 2 * medians["aaf"], medians


def test_init_from_another_normalisation_keeps_the_function(tool):
    """A MobileNet trained on ImageNet-normalised inputs, moved to the fast crop's normalisation,
    gives the same logits on the same pixels (its first convolution and batch norm adjusted)."""
    from facegender.models.registry import build_model

    torch.manual_seed(0)
    old_mean, old_std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    cfg = modelfile.load_config("fast")
    net = build_model("mobilenetv3_small", 2).eval()
    for m in net.modules():  # running statistics away from 0/1, so the shift is exercised
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2)
    pixels = torch.rand(3, 3, 64, 64) * 0.6 + 0.2  # away from the border, where padding differs
    norm = lambda m, s: (pixels - torch.tensor(m).view(1, 3, 1, 1)) / torch.tensor(s).view(1, 3, 1, 1)  # noqa: E731
    with torch.inference_mode():
        before = net(norm(old_mean, old_std))
    tool.renormalise_first_conv(net, old_mean, old_std, cfg.mean, cfg.std)
    with torch.inference_mode():
        after = net(norm(cfg.mean, cfg.std))
    assert torch.allclose(after, before, atol=0.02 * float(before.abs().max()))


def test_strong_augmentation_keeps_faces_in_range(tool):
    cfg = modelfile.load_config("fast")
    gen = torch.Generator().manual_seed(0)
    pixels = torch.rand(32, 3, 64, 64) * 0.6 + 0.2
    x = (pixels - torch.tensor(cfg.mean).view(1, 3, 1, 1)) / torch.tensor(cfg.std).view(1, 3, 1, 1)
    y = tool.photometric(tool.jitter(x, gen, 1.5), gen, cfg.mean, cfg.std)
    assert y.shape == x.shape and torch.isfinite(y).all()
    raw = y * torch.tensor(cfg.std).view(1, 3, 1, 1) + torch.tensor(cfg.mean).view(1, 3, 1, 1)
    assert -0.3 < float(raw.min()) and float(raw.max()) < 1.3  # still pixels, not noise
    assert float((y - x).abs().mean()) > 0.01  # and changed
