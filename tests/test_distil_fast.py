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
