"""The skeleton every training recipe follows, and what they share.

A recipe (full fine-tuning and distillation in trainer.py, head/tail on stored features in
heads.py, quantization-aware fine-tuning in quantaware.py) is a `Recipe`: `run()` checks the
output folder, gathers the faces (training/data.py), builds the model, fits it epoch by epoch,
then calibrates on validation faces and saves the model folder; each step is a hook the recipe
fills. Every recipe returns a `TrainResult`.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, FaceGenderError, require
from ..io.writers import neutralise_formula
from ..models import modelfile
from ..models.modelfile import ModelConfig
from ..report.metrics import (
    choose_unsure_band,
    compute_metrics,
    expected_calibration_error,
    fit_temperature,
)
from .distributed import Dist

torch = require("torch")


@dataclass
class TrainResult:
    """What every recipe returns: the model folder, the epoch kept and its figures."""

    model_dir: Path
    best_epoch: int | str
    best_metric: float | None
    metrics: dict[str, Any]
    history: list[dict] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    interrupted: bool = False
    export: dict[str, Any] = field(default_factory=dict)  # qat: the exported files' figures

    def __getitem__(self, key: str) -> Any:
        """Kept for callers of the dicts two recipes returned before this: quantaware.finetune's
        result["metrics"] (a field) and heads.train_head's metrics["val"] (a key of metrics)."""
        if key in self.__dataclass_fields__:
            return getattr(self, key)
        return self.metrics[key]


class Recipe:
    """setup -> fit -> finish. Subclasses fill the hooks; `run` is the one order they run in."""

    out: Path

    def run(self) -> TrainResult:
        self.check_out()
        self.setup()
        self.fit()
        return self.finish()

    def check_out(self) -> None:
        """Never overwrite a model folder (resuming recipes override this)."""
        if (self.out / modelfile.CONFIG_NAME).exists():
            raise FaceGenderError(f"{self.out} already holds a model folder; choose another --out")

    def setup(self) -> None:  # faces, model, optimiser
        raise NotImplementedError

    def fit(self) -> None:  # the epochs, keeping the best
        raise NotImplementedError

    def finish(self) -> TrainResult:  # calibrate on val, save the model folder
        raise NotImplementedError


def command_line(verb: str) -> str | None:
    """The command that started this run, for config.json's recipe (None from Python)."""
    return f"facegender {verb} " + " ".join(sys.argv[2:]) if sys.argv[1:2] == [verb] else None


def predict_logits(model, ds, batch_size: int, workers: int, skipped: dict, samples,
                   dist: Dist | None = None) -> dict:
    """Logits of every face of `ds`. Under DDP each rank takes every world-th face and the parts
    are gathered on every rank, back in the dataset's order (what one process would give)."""
    from .torchdata import make_loader

    dist = dist or Dist()
    part = ds if not dist.active else torch.utils.data.Subset(
        ds, range(dist.rank, len(ds), dist.world))
    model.eval()
    logits, ys, idxs, bad = [], [], [], []
    with torch.inference_mode():
        for x, y, idx, failed in make_loader(part, batch_size * 2, False, workers):
            bad += failed
            if x is None:
                continue
            logits.append(model(x.to(dist.device)).float().cpu().numpy())
            ys.append(y.numpy())
            idxs.append(idx.numpy())
    mine = {"logits": np.concatenate(logits) if logits else np.zeros((0, 2), np.float32),
            "y": np.concatenate(ys) if ys else np.zeros(0, np.int64),
            "idx": np.concatenate(idxs) if idxs else np.zeros(0, np.int64), "failed": bad}
    parts = dist.gather(mine)
    for p in parts:
        for i, reason in p["failed"]:
            skipped[samples[i].ref] = reason
    out = {k: np.concatenate([p[k] for p in parts]) for k in ("logits", "y", "idx")}
    if not len(out["idx"]):
        raise DataError("no validation image could be read")
    if dist.active:  # back in the dataset's order
        order = np.argsort(out["idx"], kind="stable")
        out = {k: v[order] for k, v in out.items()}
    return out


def calibrate_on_val(cfg: ModelConfig, val_out: dict) -> dict:
    """Fit the temperature and the unsure band on val logits (sets them on `cfg`); returns
    {"val": figures before/after} for config.json's metrics and the card."""
    from ..infer.preprocess import softmax

    z, y = val_out["logits"], val_out["y"]
    is_male = (y == cfg.male_index).astype(int)
    p_raw = softmax(z)[:, cfg.male_index]
    cfg.temperature = round(fit_temperature(z, y), 4)
    p_cal = softmax(z, cfg.temperature)[:, cfg.male_index]
    cfg.unsure_band = choose_unsure_band(is_male, p_cal)
    m = compute_metrics(is_male, p_cal, cfg.threshold)
    m.pop("classification_report")
    m["ece_before_calibration"] = expected_calibration_error(is_male, p_raw)
    m["ece_after_calibration"] = m.pop("ece")
    unsure = np.abs(p_cal - 0.5) < cfg.unsure_band
    m["unsure_rate"] = float(unsure.mean())
    m["accuracy_when_sure"] = float(((p_cal >= 0.5) == is_male)[~unsure].mean()) \
        if (~unsure).any() else None
    return {"val": m}


def write_history(rows: list[dict], out: Path, name: str = modelfile.HISTORY_NAME) -> None:
    """history.csv: one row per epoch; columns are every key any row has, epoch first."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / name, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def write_skipped(skipped: Sequence[tuple[str, str]], out: Path) -> None:
    """skipped.csv: the images a run could not use, and why (said once on stderr)."""
    if not skipped:
        return
    with open(out / "skipped.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "reason"])
        w.writerows((neutralise_formula(ref), why) for ref, why in skipped)
    print(f"{len(skipped)} images could not be used (listed in {out / 'skipped.csv'}), e.g. "
          f"{skipped[0][0]}: {skipped[0][1]}", file=sys.stderr)
