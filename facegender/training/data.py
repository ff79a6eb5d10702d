"""One path from the sources named on the command line to training and validation faces, for
every recipe (full, head/tail, quantization-aware fine-tuning, distillation).

One source: its own train/val split, else the `val` source, else a stratified `val_fraction`.
Several sources (or group balancing / drop rules): training/multisource.py's per-source splits,
every face tagged with its source's name.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import DataError, FaceGenderError
from ..io.sources import (
    Sample,
    read_source,
    require_both_classes,
    stratified_limit,
    stratified_split,
)
from .multisource import as_specs, gather, parse_drop


@dataclass
class TrainVal:
    """Training and validation faces and where they came from (config.json's `data`)."""

    train: list[Sample]
    val: list[Sample]
    train_provenance: dict[str, Any]
    val_provenance: dict[str, Any]
    sources: list[dict] = field(default_factory=list)  # per source, when read by source


def read_split(source: Any, split: str | None, limit: int | None, seed: int
               ) -> tuple[list[Sample], list[Sample] | None, dict]:
    """The faces of one labelled source's `split` (all when it has none), a stratified `limit`
    of them, its own val split when `split` is 'train', and their provenance."""
    data = read_source(source, labelled=True)
    for note in data.notes:
        if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
            print(f"note: {note}", file=sys.stderr)
    splits = data.splits()
    samples = [s for s in data.samples if s.split == split] if split and split in splits \
        else data.samples
    held = [s for s in data.samples if s.split == "val"] \
        if split == "train" and "val" in splits else None
    samples = stratified_limit(samples, limit, seed)
    prov = {"source": str(source), "images": len(samples), "classes": dict(Counter(
        s.label for s in samples)), "skipped_at_listing": len(data.skipped)}
    return samples, held, prov


def _one_source(data: Any, val: Any, *, limit: int | None, val_limit: int | None,
                val_fraction: float | None, seed: int) -> TrainVal:
    train_s, own_val, prov = read_split(data, "train", limit, seed)
    if val is not None:
        val_s, _, vprov = read_split(val, "val", val_limit, seed)
    elif own_val:
        val_s = stratified_limit(own_val, val_limit, seed)
        vprov = {"source": f"{data} (its own val split)", "images": len(val_s)}
    elif val_fraction is None:
        raise FaceGenderError(f"{data} has no val split: give val / --val (faces to re-fit the "
                              "temperature and measure agreement on)")
    else:
        train_s, val_s = stratified_split(train_s, val_fraction, seed)
        vprov = {"source": f"{data} (stratified {val_fraction:.0%} held out, seed {seed})",
                 "images": len(val_s)}
        val_s = stratified_limit(val_s, val_limit, seed)
    return TrainVal(train_s, val_s, prov, vprov)


def _by_source(data: Any, val: Any, *, limit: int | None, val_limit: int | None,
               val_fraction: float, seed: int, drop: Sequence[str]) -> TrainVal:
    split = gather(as_specs(data), drop=parse_drop(drop), val_fraction=val_fraction,
                   val_per_source=val_limit, limit=limit, seed=seed, hold_out=val is None)
    val_s = split.val
    if val is not None:
        val_s, _, _ = read_split(val, "val", val_limit, seed)
    prov = {"source": [p["source"] for p in split.provenance], "images": len(split.train),
            "classes": dict(Counter(s.label for s in split.train)), "sources": split.provenance}
    vprov = {"source": str(val) if val is not None else "each source's val split (or a "
             f"stratified {val_fraction:.0%} of its train split)", "images": len(val_s)}
    return TrainVal(split.train, val_s, prov, vprov, split.provenance)


def train_val_sets(data: Any, val: Any = None, *, limit: int | None = None,
                   val_limit: int | None = None, val_fraction: float | None = 0.1, seed: int = 0,
                   by_source: bool = False, drop: Sequence[str] = ()) -> TrainVal:
    """Training and validation faces from `data` (one source, or several with `by_source`:
    each ``PATH@WEIGHT`` optionally, `drop` rules applied, `val_limit` per source) and `val`.
    `val_fraction=None`: a source without a val split and no `val` is an error (nothing may be
    held out of it). Raises DataError when a class is missing from training or no validation
    faces remain."""
    if by_source:
        sets = _by_source(data, val, limit=limit, val_limit=val_limit,
                          val_fraction=0.1 if val_fraction is None else val_fraction, seed=seed,
                          drop=drop)
    else:
        sets = _one_source(data, val, limit=limit, val_limit=val_limit,
                           val_fraction=val_fraction, seed=seed)
    require_both_classes(sets.train, f"training data {data}")
    if not sets.val:
        raise DataError("no validation images: give --val or a larger source")
    sets.val_provenance["classes"] = dict(Counter(s.label for s in sets.val))
    return sets
