"""Training and calibration see the pixels prediction feeds the model: faces cut by prediction's
own rule (faces/framing.py find_faces) give the exact input array the predictor builds, on real
faces of every training source (kinfacew's 64 px squares, fiw, CelebA, AAF). Detecting on the
padded image instead, as training did before, moves the 32 px chip by a visible amount."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DATA

from facegender.infer.predictor import Predictor
from facegender.infer.preprocess import to_array
from facegender.io.images import decode_bytes
from facegender.io.sources import read_source
from facegender.models import modelfile
from facegender.training.calibrate import ViewMaker
from facegender.training.features import extract_features
from facegender.training.torchdata import PolicyCrop

SOURCES = ("kinfacew/labels.csv", "fiw/labels.csv", "celeba-gender/labels.csv", "aaf/labels.csv")


@pytest.fixture(scope="module")
def faces():
    out = []
    for spec in SOURCES:
        path = DATA / spec
        if not path.is_file():
            pytest.skip(f"{path} not found")
        train = [s for s in read_source(path).samples if s.split == "train"]
        out += train[:: max(1, len(train) // 3)][:3]
    return out


def _predicted_input(pred: Predictor, sample) -> np.ndarray:
    _, found = pred._prepare((sample.ref, sample))
    assert found, sample.ref
    return found[0][2]


def test_training_crop_is_what_prediction_feeds(faces):
    cfg = modelfile.load_config("fast")
    pred = Predictor("fast", backend="torch")
    rule, padded = PolicyCrop(cfg.crop, framing=cfg.framing), PolicyCrop(cfg.crop)
    views = ViewMaker(cfg, 1, 0, 1)
    moved = []
    for s in faces:
        img = decode_bytes(s.read_bytes(), s.ref)
        want = _predicted_input(pred, s)
        assert np.array_equal(to_array(rule.find(img), cfg), want), s.ref
        assert np.array_equal(views(s)[0], want), s.ref
        moved.append(float(np.abs(to_array(padded.find(img), cfg) - want).mean()))
    assert np.median(moved) > 0.01  # why the rule matters: the padded detector moves the chip


def test_feature_store_can_be_read_without_computing(faces, tmp_path):
    cfg = modelfile.load_config("fast")
    kw = dict(weights_id="pixels", encoder="identity", views=2, workers=0, progress=False,
              framing=cfg.framing)
    first = extract_features(faces[:2], lambda x: x, cfg, tmp_path, **kw)
    assert first.ok.all() and first.features.shape == (2, 2, 3, 32, 32)
    read = extract_features(faces[:4], lambda x: x, cfg, tmp_path, compute=False, **kw)
    assert read.ok.tolist() == [True, True, False, False]
    assert set(read.reasons.values()) == {"not in the store"}
    assert np.array_equal(read.features[:2], first.features)
