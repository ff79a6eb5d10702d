"""Several labelled sources in one training run: each keeps its own val split (or gives a
stratified share of its train split; a test split is never touched), faces carry their
source's name as the group ``source``, drop rules take disputed labels out of training, and
validation is scored per source and per group, so the worst group can pick the model.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, FaceGenderError
from ..io.sources import Sample, read_source, stratified_limit, stratified_split
from ..report.metrics import compute_metrics
from .sampling import group_of

MIN_GROUP = 20  # smallest validation group that counts for the worst-group monitor


@dataclass
class SourceSpec:
    """One training source: where it is, how much of each epoch it gets, what it is called."""

    spec: str
    weight: float = 1.0
    name: str = ""

    @classmethod
    def parse(cls, text: str | Path) -> SourceSpec:
        """``PATH`` or ``PATH@WEIGHT`` (weight: this source's share of each epoch, relative)."""
        s = str(text)
        weight = 1.0
        if "@" in s and not Path(s).exists():
            s, _, w = s.rpartition("@")
            try:
                weight = float(w)
            except ValueError:
                raise FaceGenderError(f"{text}: the weight after '@' must be a number") from None
            if not (weight > 0 and math.isfinite(weight)):
                raise FaceGenderError(f"{text}: source weight must be > 0")
        p = Path(s)
        name = p.parent.name if p.suffix == ".csv" else p.stem
        return cls(s, weight, name or s)


def as_specs(data: str | Path | Sequence[str | Path]) -> list[SourceSpec]:
    """One source or several, each ``PATH`` or ``PATH@WEIGHT``."""
    items = data if isinstance(data, (list, tuple)) else [data]
    if not items:
        raise DataError("no training source given")
    return [SourceSpec.parse(d) for d in items]


@dataclass
class Split:
    train: list[Sample] = field(default_factory=list)
    val: list[Sample] = field(default_factory=list)
    provenance: list[dict] = field(default_factory=list)


def parse_drop(rules: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for r in rules:
        key, eq, value = r.partition("=")
        if not eq or not key:
            raise FaceGenderError(f"--drop {r!r}: expected COLUMN=VALUE (e.g. disputed=1)")
        out.append((key.strip(), value.strip()))
    return out


def dropped(sample: Sample, rules: Sequence[tuple[str, str]]) -> bool:
    """Whether a drop rule (COLUMN, VALUE) from parse_drop matches the face."""
    return any(str(sample.groups.get(k)) == v for k, v in rules)


def gather(sources: Sequence[SourceSpec], *, drop: Sequence[tuple[str, str]], val_fraction: float,
           val_per_source: int | None, limit: int | None, seed: int,
           hold_out: bool = True) -> Split:
    """Train and validation faces from every source. A source's own val split is used, else a
    stratified `val_fraction` of its train split; a test split is never touched. Faces matching
    a drop rule leave training (they stay in val, where metrics are also given without them).
    hold_out=False (a separate validation source is given) keeps every train face for training."""
    out = Split()
    names = Counter(s.name for s in sources)
    for i, src in enumerate(sources):
        name = src.name if names[src.name] == 1 else f"{src.name}{i}"
        data = read_source(src.spec, labelled=True)
        for s in data.samples:
            s.groups["source"] = name
        by_split = defaultdict(list)
        for s in data.samples:
            by_split[s.split or "train"].append(s)
        train = by_split.get("train", [])
        val = by_split.get("val") or []
        if not val and hold_out:
            train, val = stratified_split(train, val_fraction, seed)
        n_dropped = sum(dropped(s, drop) for s in train)
        train = [s for s in train if not dropped(s, drop)]
        train = stratified_limit(train, limit, seed)
        val = stratified_limit(val, val_per_source, seed)
        out.train += train
        out.val += val
        out.provenance.append({
            "source": src.spec, "name": name, "weight": src.weight, "train": len(train),
            "val": len(val), "dropped": n_dropped, "classes": dict(Counter(s.label for s in train)),
            "test_split_unused": len(by_split.get("test", [])),
        })
    if not out.train or (hold_out and not out.val):
        raise DataError("no training or no validation faces in the given sources")
    return out


def group_accuracies(samples: Sequence[Sample], keys: Sequence[str], y: np.ndarray, p: np.ndarray,
                     threshold: float) -> dict[str, dict[str, float]]:
    """Accuracy per (source, label, balance keys the face has) group, with its size."""
    acc: dict[str, list[int]] = defaultdict(list)
    for s, yy, pp in zip(samples, y, p, strict=True):
        present = [k for k in keys if k in s.groups and k != "source"]
        g = (s.groups.get("source", "?"), *group_of(s, present))
        acc[" / ".join(f"{k}={v}" for k, v in zip(("source", "label", *present), g, strict=True))
            ].append(int((pp >= threshold) == bool(yy)))
    return {g: {"n": len(v), "accuracy": float(np.mean(v))} for g, v in sorted(acc.items())}


def metrics_by_group(samples, keys, y, p, threshold) -> dict[str, Any]:
    m = compute_metrics(y, p, threshold)
    groups = group_accuracies(samples, keys, y, p, threshold)
    counted = {g: v for g, v in groups.items() if v["n"] >= MIN_GROUP}
    worst = min(counted.items(), key=lambda kv: kv[1]["accuracy"]) if counted else (None, {})
    src = Counter(s.groups.get("source") for s in samples)
    per_source = {}
    for name in src:
        idx = [i for i, s in enumerate(samples) if s.groups.get("source") == name]
        ms = compute_metrics(y[idx], p[idx], threshold)
        undisputed = [i for i in idx if str(samples[i].groups.get("disputed", "0")) != "1"]
        per_source[name] = {
            "n": len(idx), "accuracy": ms["accuracy"], "balanced_accuracy": ms["balanced_accuracy"],
            "female_recall": ms["per_class"]["female"]["recall"],
            "accuracy_undisputed": compute_metrics(y[undisputed], p[undisputed], threshold)["accuracy"]
            if len(undisputed) < len(idx) else None,
        }
    return {"accuracy": m["accuracy"], "balanced_accuracy": m["balanced_accuracy"],
            "roc_auc": m["roc_auc"], "ece": m["ece"], "per_class": m["per_class"],
            "worst_group": worst[1].get("accuracy"),
            "worst_source": min(v["balanced_accuracy"] for v in per_source.values()),
            "worst_group_name": worst[0], "per_source": per_source, "groups": groups}
