"""Group-balanced sampling: draw faces so that groups the data under-represents (older women, men
with make-up, children, a small second source) are seen at a chosen rate, not at their share.

A face's group is its label plus the values of the balance keys it has (manifest columns such as
CelebA's ``Young`` and ``Wearing_Lipstick`` or AAF's ``age_group``; ``source`` is set for every
face when several sources are merged). With ``power`` p a group of n faces gets total weight
``n ** (1 - p)``: p = 0 keeps the data's own mix, p = 1 gives every group the same share, and
``max_repeat`` caps how often one face is expected per epoch, so a 500-face group is not
repeated 40 times. The draw is one seeded stream split across ranks (``rank``/``world``), so
distributed training draws exactly what one process would.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence

import numpy as np

from ..errors import FaceGenderError
from ..io.sources import Sample

MISSING = "?"  # group value of a face that lacks a balance key


def group_of(sample: Sample, keys: Sequence[str]) -> tuple[str, ...]:
    return (sample.label or MISSING, *(str(sample.groups.get(k, MISSING)) for k in keys))


def balanced_weights(samples: Sequence[Sample], keys: Sequence[str], power: float = 1.0,
                     source_weights: dict[str, float] | None = None,
                     max_repeat: float | None = None) -> np.ndarray:
    """Per-face draw probabilities (sum 1): groups by `keys` evened out by `power`, each
    source's total scaled by `source_weights`, no face above `max_repeat` expected draws in
    len(samples) draws."""
    if not 0.0 <= power <= 1.0:
        raise FaceGenderError(f"balance power must be in [0, 1], got {power}")
    if max_repeat is not None and max_repeat < 1:
        raise FaceGenderError(f"max_repeat must be >= 1, got {max_repeat}")
    n = len(samples)
    if n == 0:
        raise FaceGenderError("no samples to balance")
    groups = [group_of(s, keys) for s in samples]
    counts = Counter(groups)
    w = np.array([counts[g] ** -power for g in groups], dtype=np.float64)
    if source_weights:
        src = [str(s.groups.get("source", MISSING)) for s in samples]
        unknown = set(source_weights) - set(src)
        if unknown:
            raise FaceGenderError(f"source weights for unknown sources {sorted(unknown)}; "
                                  f"sources: {sorted(set(src))}")
        # Scale each source's total mass (not each face) by its weight.
        totals = Counter()
        for s_name, wi in zip(src, w, strict=True):
            totals[s_name] += wi
        w = np.array([wi * source_weights.get(s_name, 1.0) / totals[s_name]
                      for s_name, wi in zip(src, w, strict=True)])
    w /= w.sum()
    if max_repeat is not None:
        # Clip to max_repeat / n and hand the excess to the rest, until nothing is over the cap.
        cap = max_repeat / n
        for _ in range(100):
            over = w > cap
            if not over.any():
                break
            excess = (w[over] - cap).sum()
            w[over] = cap
            under = ~over
            if not under.any():
                break
            w[under] += excess * w[under] / w[under].sum()
    return w / w.sum()


def rank_share(stream: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Rank `rank`'s part of one stream: every world-th item from its rank on. With several
    ranks the stream is first padded from its start to a multiple of `world`, so every rank
    gets the same count and DDP's ranks step in lockstep (as torch's DistributedSampler pads)."""
    if world > 1 and len(stream) % world:
        stream = np.concatenate([stream, stream[:world - len(stream) % world]])
    return stream[rank::world]


class _RankSampler:
    """One seeded stream an epoch, seeded by (seed, epoch), split across ranks by rank_share.
    A torch Sampler by duck type (DataLoader takes any iterable with a length)."""

    def __init__(self, num_samples: int, seed: int = 0, rank: int = 0, world: int = 1) -> None:
        if not 0 <= rank < world:
            raise FaceGenderError(f"rank {rank} is outside world size {world}")
        self.num_samples = int(num_samples)
        self.seed, self.rank, self.world, self.epoch = seed, rank, world, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def stream(self) -> np.ndarray:
        raise NotImplementedError

    def draw(self) -> np.ndarray:
        return rank_share(self.stream(), self.rank, self.world)

    def __iter__(self) -> Iterator[int]:
        return iter(self.draw().tolist())

    def __len__(self) -> int:
        return -(-self.num_samples // self.world)


class BalancedSampler(_RankSampler):
    """Indices drawn with replacement by `weights`, `num_samples` an epoch, seeded by (seed,
    epoch); rank r of `world` takes every world-th draw of the same stream."""

    def __init__(self, weights: np.ndarray, num_samples: int | None = None, seed: int = 0,
                 rank: int = 0, world: int = 1) -> None:
        self.weights = np.asarray(weights, dtype=np.float64)
        super().__init__(int(num_samples or len(self.weights)), seed, rank, world)

    def stream(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        return rng.choice(len(self.weights), size=self.num_samples, replace=True, p=self.weights)


class ShuffleSampler(_RankSampler):
    """Every index once an epoch in a seeded order, split across ranks: what a shuffled
    DataLoader draws in one process, for distributed training without group balancing."""

    def stream(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
