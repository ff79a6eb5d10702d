"""The kin-derived sources (../shared/data/kinfacew, fiw) load through the same manifests as
celeba-gender and aaf, with their ``group`` and ``identity`` columns, and every split drawn from
them keeps a person on one side."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from facegender.io.sources import read_source, stratified_limit, stratified_split

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KIN = {"kinfacew": 2769, "fiw": 2941}


def _manifest(name: str) -> Path:
    path = DATA / name / "labels.csv"
    if not path.is_file():
        pytest.skip(f"{name} not found at {path.parent}")
    return path


def _identities(samples) -> set[str]:
    return {s.groups["identity"] for s in samples}


@pytest.mark.parametrize("name", sorted(KIN))
def test_kin_source_loads_with_groups_and_disjoint_splits(name):
    data = read_source(_manifest(name))
    assert len(data.samples) == KIN[name] and not data.skipped
    assert all("identity" in s.groups for s in data.samples)
    assert set(Counter(s.split for s in data.samples)) == {"train", "test"}
    train = [s for s in data.samples if s.split == "train"]
    test = [s for s in data.samples if s.split == "test"]
    assert not _identities(train) & _identities(test)
    assert min(Counter(s.label for s in test).values()) > 100
    # the image bytes are read from the tar beside the manifest
    assert data.samples[0].read_bytes()[:2] == b"\xff\xd8"
    if name == "kinfacew":  # parents and children, both genders among each
        cells = Counter((s.groups["group"], s.label) for s in data.samples)
        assert set(cells) == {(g, lb) for g in ("parent", "child") for lb in ("female", "male")}
        assert min(cells.values()) > 200


@pytest.mark.parametrize("name", sorted(KIN))
def test_validation_drawn_from_train_is_identity_disjoint(name):
    train = [s for s in read_source(_manifest(name)).samples if s.split == "train"]
    keep, held = stratified_split(train, 0.15, seed=3)
    assert len(keep) + len(held) == len(train)
    assert not _identities(keep) & _identities(held)
    assert abs(len(held) / len(train) - 0.15) < 0.03
    share = Counter(s.label for s in held)["male"] / len(held)
    assert abs(share - Counter(s.label for s in train)["male"] / len(train)) < 0.05
    # seeded: the same call draws the same persons
    assert [s.ref for s in stratified_split(train, 0.15, seed=3)[1]] == [s.ref for s in held]
    # a face limit still takes exactly that many faces
    assert len(stratified_limit(train, 500, seed=0)) == 500


def test_gather_balances_kin_sources_by_group_with_disjoint_validation():
    from facegender.training.multisource import as_specs, gather
    from facegender.training.sampling import balanced_weights

    specs = as_specs([str(_manifest("kinfacew")), str(_manifest("fiw")) + "@2"])
    split = gather(specs, drop=[], val_fraction=0.1, val_per_source=None, limit=None, seed=0)
    prov = {p["name"]: p for p in split.provenance}
    assert set(prov) == {"kinfacew", "fiw"} and prov["fiw"]["weight"] == 2.0
    assert prov["kinfacew"]["test_split_unused"] == 558 and prov["fiw"]["test_split_unused"] == 590
    for src in ("kinfacew", "fiw"):
        tr = [s for s in split.train if s.groups["source"] == src]
        va = [s for s in split.val if s.groups["source"] == src]
        assert va and not _identities(tr) & _identities(va)
    kin = [s for s in split.train if s.groups["source"] == "kinfacew"]
    w = balanced_weights(kin, ["group"], power=1.0)
    mass = Counter()
    for s, wi in zip(kin, w, strict=True):
        mass[(s.label, s.groups["group"])] += wi
    assert max(mass.values()) - min(mass.values()) < 1e-9  # four equal cells
