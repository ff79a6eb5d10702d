"""Group-balanced sampling draws groups at the asked-for rates (counted over seeded draws)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from facegender.errors import FaceGenderError
from facegender.io.sources import Sample
from facegender.training.sampling import (
    BalancedSampler,
    ShuffleSampler,
    balanced_weights,
    group_of,
)


def _faces() -> list[Sample]:
    """CelebA's skew in miniature: 870 made-up young women, 130 older women without make-up,
    1,000 men; plus a second source of 200 faces."""
    out = []
    for i in range(870):
        out.append(Sample(f"w{i}", "female", {"Young": "1", "source": "celeba"}))
    for i in range(130):
        out.append(Sample(f"o{i}", "female", {"Young": "0", "source": "celeba"}))
    for i in range(1000):
        out.append(Sample(f"m{i}", "male", {"Young": "1" if i % 3 else "0", "source": "celeba"}))
    for i in range(200):
        out.append(Sample(f"a{i}", "female" if i % 2 else "male", {"age_group": "3-9", "source": "aaf"}))
    return out


def _rates(samples, idx, keys) -> dict[tuple, float]:
    c = Counter(group_of(samples[i], keys) for i in idx)
    return {g: n / len(idx) for g, n in c.items()}


def test_power_one_gives_every_group_the_same_share():
    s = [x for x in _faces() if x.groups["source"] == "celeba"]
    w = balanced_weights(s, ["Young"], power=1.0)
    idx = BalancedSampler(w, 40_000, seed=1).draw()
    rates = _rates(s, idx, ["Young"])
    assert len(rates) == 4
    for g, r in rates.items():
        assert r == pytest.approx(0.25, abs=0.01), (g, r)


def test_power_zero_keeps_the_data_mix_and_half_is_in_between():
    s = [x for x in _faces() if x.groups["source"] == "celeba"]
    for power, older_women in ((0.0, 130 / 2000), (0.5, None)):
        w = balanced_weights(s, ["Young"], power=power)
        idx = BalancedSampler(w, 40_000, seed=2).draw()
        got = _rates(s, idx, ["Young"])[("female", "0")]
        if older_women is None:  # n ** 0.5 shares: 130 older women among groups 870/130/667/333
            sizes = np.array([870, 130, 667, 333]) ** 0.5
            older_women = sizes[1] / sizes.sum()
        assert got == pytest.approx(older_women, abs=0.01)


def test_source_weights_set_each_source_share():
    s = _faces()
    w = balanced_weights(s, ["source"], power=0.0, source_weights={"celeba": 3.0, "aaf": 1.0})
    idx = BalancedSampler(w, 40_000, seed=3).draw()
    share = Counter(s[i].groups["source"] for i in idx)
    assert share["aaf"] / len(idx) == pytest.approx(0.25, abs=0.01)
    with pytest.raises(FaceGenderError, match="unknown sources"):
        balanced_weights(s, ["source"], source_weights={"lfw": 1.0})


def test_max_repeat_caps_how_often_one_face_is_drawn():
    s = _faces()
    w = balanced_weights(s, ["source", "Young"], power=1.0)
    assert w.max() * len(s) > 3  # without a cap a face of a small group comes back often
    capped = balanced_weights(s, ["source", "Young"], power=1.0, max_repeat=2.0)
    assert capped.max() * len(s) <= 2.0 + 1e-9
    assert capped.sum() == pytest.approx(1.0)


def test_draws_are_seeded_and_ranks_split_one_stream():
    w = balanced_weights(_faces(), ["Young"], power=1.0)
    a, b = BalancedSampler(w, 1000, seed=5), BalancedSampler(w, 1000, seed=5)
    a.set_epoch(2)
    b.set_epoch(2)
    assert np.array_equal(a.draw(), b.draw())
    b.set_epoch(3)
    assert not np.array_equal(a.draw(), b.draw())
    ranks = [BalancedSampler(w, 1000, seed=5, rank=r, world=3) for r in range(3)]
    for r in ranks:
        r.set_epoch(2)
    # 1000 draws over 3 ranks: padded from the stream's start to 1002, 334 each (lockstep)
    merged = np.empty(1002, dtype=int)
    for r, sampler in enumerate(ranks):
        merged[r::3] = sampler.draw()
        assert len(sampler) == len(sampler.draw()) == 334
    assert np.array_equal(merged[:1000], a.draw())
    assert np.array_equal(merged[1000:], a.draw()[:2])


def test_shuffle_sampler_gives_every_face_once_across_ranks():
    one = ShuffleSampler(10, seed=1)
    one.set_epoch(4)
    assert sorted(one.draw()) == list(range(10))
    parts = [ShuffleSampler(10, seed=1, rank=r, world=4) for r in range(4)]
    for p in parts:
        p.set_epoch(4)
    drawn = [p.draw() for p in parts]
    assert {len(d) for d in drawn} == {3}  # 10 padded to 12: lockstep
    merged = np.empty(12, dtype=int)
    for r, d in enumerate(drawn):
        merged[r::4] = d
    assert np.array_equal(merged[:10], one.draw())
    one.set_epoch(5)
    assert not np.array_equal(merged[:10], one.draw())


def test_bad_settings_are_refused():
    s = _faces()
    with pytest.raises(FaceGenderError, match="power"):
        balanced_weights(s, ["Young"], power=2.0)
    with pytest.raises(FaceGenderError, match="max_repeat"):
        balanced_weights(s, ["Young"], max_repeat=0.5)
    with pytest.raises(FaceGenderError, match="rank"):
        BalancedSampler(np.ones(3) / 3, rank=3, world=2)
