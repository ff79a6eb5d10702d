"""The trainer: AdamW, warmup + cosine (or plateau) schedule, class-weighted loss with label
smoothing, face augmentations, optional frozen-backbone first phase, early stopping, best/last
checkpoints, exact resume, history CSV + curves, temperature calibration on val.

Output folder = a model folder (config.json, model.safetensors with the best weights, README.md
model card) plus history.csv, curves.png, skipped.csv and checkpoints/last/ for --resume.
"""

from __future__ import annotations

import csv
import math
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, FaceGenderError, ImageError, require
from ..faces.framing import policy_for
from ..infer.device import torch_device
from ..io.progress import progress_bar
from ..io.sources import (
    Sample,
    read_source,
    require_both_classes,
    stratified_limit,
    stratified_split,
)
from ..io.targets import folder_target
from ..io.writers import neutralise_formula
from ..labels import DEFAULT_LABELS
from ..models import modelfile
from ..models.modelfile import ModelConfig
from ..report.metrics import (
    choose_unsure_band,
    compute_metrics,
    expected_calibration_error,
    fit_temperature,
)
from .checkpoint import load_checkpoint, save_checkpoint
from .distributed import Dist, from_env
from .multisource import as_specs, gather, metrics_by_group, parse_drop
from .sampling import BalancedSampler, ShuffleSampler, balanced_weights

torch = require("torch")


@dataclass
class TrainResult:
    model_dir: Path
    best_epoch: int
    best_metric: float
    metrics: dict[str, Any]
    history: list[dict] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    interrupted: bool = False


def _source_samples(source, split: str | None, limit: int | None, seed: int, what: str
                    ) -> tuple[list[Sample], list[Sample] | None, dict]:
    data = read_source(source, labelled=True)
    for note in data.notes:
        if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
            print(f"note: {note}", file=sys.stderr)
    splits = data.splits()
    if split and split in splits:
        samples = [s for s in data.samples if s.split == split]
    else:
        samples = data.samples
    held = None
    if split == "train" and "val" in splits:
        held = [s for s in data.samples if s.split == "val"]
    samples = stratified_limit(samples, limit, seed)
    prov = {"source": str(source), "images": len(samples), "classes": dict(Counter(
        s.label for s in samples)), "skipped_at_listing": len(data.skipped)}
    return samples, held, prov


def _given_val(data, val, own_val: list[Sample] | None, val_limit: int | None, seed: int
               ) -> tuple[list[Sample], dict] | None:
    """Validation faces from `val`, else from the data's own val split; None when neither."""
    if val is not None:
        val_s, _, vprov = _source_samples(val, "val", val_limit, seed, "validation data")
        return val_s, vprov
    if own_val:
        val_s = stratified_limit(own_val, val_limit, seed)
        return val_s, {"source": f"{data} (its own val split)", "images": len(val_s)}
    return None


def _lr_lambda(total_steps: int, warmup_steps: int, final: float = 0.01):
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return f



FRAMING_SAMPLE = 200  # training images the detector looks at to measure their framing (~2 s)


def measure_training_framing(samples: Sequence[Sample], seed: int,
                             threads: int | None = None) -> dict[str, Any]:
    """faces.framing.measure_framing on a seeded sample of up to FRAMING_SAMPLE training images
    (unreadable ones are left out here; training reports them)."""
    from ..faces import FaceDetector, measure_framing
    from ..io.images import decode_bytes

    rng = random.Random(seed)
    picked = rng.sample(list(samples), min(FRAMING_SAMPLE, len(samples)))

    def images():
        for s in picked:
            try:
                yield decode_bytes(s.read_bytes(), s.ref)
            except (ImageError, OSError):
                continue

    return measure_framing(images(), FaceDetector(threads=threads))


def train(
    data: str | Path | Sequence,
    out: str | Path,
    *,
    val: str | Path | Sequence | None = None,
    arch: str = "mobilenetv3_small",
    input_size: int = 96,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 0.05,
    schedule: str = "cosine",
    warmup: float = 0.3,
    label_smoothing: float = 0.1,
    class_weights: bool = True,
    augment: str = "default",
    pretrained: bool | str = False,
    freeze_epochs: int = 0,
    patience: int = 5,
    monitor: str = "balanced_accuracy",
    val_fraction: float = 0.1,
    limit: int | None = None,
    val_limit: int | None = None,
    workers: int | None = None,
    threads: int | None = None,
    seed: int = 0,
    resume: bool = False,
    crop: dict | None = None,
    crop_training: bool = False,
    balance: Sequence[str] | None = None,
    balance_power: float = 0.5,
    max_repeat: float | None = 8.0,
    drop: Sequence[str] = (),
    teacher: str | Path | None = None,
    distill_weight: float = 0.7,
    unlabelled: str | Path | Sequence | None = None,
    init: str | Path | None = None,
    progress: bool = True,
    callbacks: Sequence[Callable[[int, dict], None]] = (),
    device: str | None = None,
) -> TrainResult:
    """Train a male/female classifier on labelled faces and write a model folder to `out`.

    `data` is any source read_source understands; its own train/val split is used when it has
    one, else `val` if given, else a stratified seeded `val_fraction` of it. `limit`/`val_limit`
    take a stratified seeded subset. `resume=True` continues out/checkpoints/last exactly.
    `callbacks` are called after each epoch with (epoch, history row); raising KeyboardInterrupt
    there stops cleanly after the checkpoint is written (as Ctrl-C does).

    Several sources (a list, each ``PATH@WEIGHT`` optionally), `balance`, `drop` or `teacher`
    switch to per-source splits (training/multisource.py) and group-balanced draws
    (training/sampling.py). `teacher` (a model folder or shipped name) distils: the student
    learns `distill_weight` x the teacher's calibrated probabilities + the rest from the labels,
    and `unlabelled` faces (no labels needed) learn from the teacher alone. `crop_training`
    cuts every training face with the model's crop policy (detector on the padded image, the
    whole image where none is found), so training sees what prediction will. `init` starts
    from a model folder's weights (same architecture). `device`: cpu (default), cuda or cuda:N.

    Under torchrun (RANK / WORLD_SIZE set, training/distributed.py) every process runs this
    same call: DDP, each rank drawing its share of one seeded stream with `batch_size` split
    over the ranks (so the global batch and the schedule do not depend on the world size, and
    `resume` works across a changed one), validation split over the ranks and gathered, and
    rank 0 alone printing and writing checkpoints and the model folder.
    """
    from ..models.card import write_card
    from ..models.registry import backbone_and_head, build_model
    from ..report.plots import plot_history
    from .augment import face_augmentation
    from .torchdata import FaceDataset, PolicyCrop, default_workers, make_loader

    # A file there, or the training data's own folder: refused before any work.
    out = folder_target(out, "model folder", list(data) if isinstance(data, (list, tuple)) else [data])
    dist = from_env()
    say = _say if dist.main else _quiet
    progress = progress and dist.main
    if not dist.active:  # one process: --device picks it (torchrun gives each rank its GPU)
        dist.device = str(torch_device(device))  # a missing GPU is said before any work
    if threads:
        torch.set_num_threads(threads)
    if workers is None:
        workers = default_workers()
    if monitor not in ("balanced_accuracy", "accuracy", "roc_auc", "loss", "worst_group",
                       "worst_source"):
        raise FaceGenderError(f"unknown monitor '{monitor}'")
    if schedule not in ("cosine", "plateau"):
        raise FaceGenderError(f"unknown schedule '{schedule}' (cosine or plateau)")

    # ---- data
    multi = (isinstance(data, (list, tuple)) and not all(isinstance(x, Sample) for x in data)) \
        or bool(balance) or bool(drop) or teacher is not None
    if multi:
        split = gather(as_specs(data), drop=parse_drop(drop), val_fraction=val_fraction,
                       val_per_source=val_limit, limit=limit, seed=seed, hold_out=val is None)
        train_s, val_s = split.train, split.val
        if val is not None:
            val_s, _, _ = _source_samples(val, "val", val_limit, seed, "validation data")
        prov = {"source": [p["source"] for p in split.provenance], "images": len(train_s),
                "classes": dict(Counter(s.label for s in train_s)), "sources": split.provenance}
        vprov = {"source": str(val) if val is not None else "each source's val split (or a "
                 f"stratified {val_fraction:.0%} of its train split)", "images": len(val_s)}
    else:
        train_s, own_val, prov = _source_samples(data, "train", limit, seed, "training data")
        given = _given_val(data, val, own_val, val_limit, seed)
        if given is not None:
            val_s, vprov = given
        else:
            train_s, val_s = stratified_split(train_s, val_fraction, seed)
            vprov = {"source": f"{data} (stratified {val_fraction:.0%} held out, seed {seed})",
                     "images": len(val_s)}
            val_s = stratified_limit(val_s, val_limit, seed)
    if monitor in ("worst_group", "worst_source") and not multi:
        raise FaceGenderError("--monitor worst_group needs groups: give --balance or several sources")
    counts = require_both_classes(train_s, f"training data {data}")
    if not val_s:
        raise DataError("no validation images: give --val or a larger source")
    vprov["classes"] = dict(Counter(s.label for s in val_s))
    labels = list(DEFAULT_LABELS)
    n = sum(counts[c] for c in labels)
    weights = [n / (len(labels) * counts[c]) if class_weights else 1.0 for c in labels]

    n_unlabelled = 0
    if unlabelled is not None:
        if teacher is None:
            raise FaceGenderError("unlabelled faces need a --teacher to learn from")
        extra = read_source(unlabelled, labelled=False).samples
        for x in extra:
            x.label = None
            x.groups.setdefault("source", "unlabelled")
        train_s = train_s + extra
        n_unlabelled = len(extra)
        prov["unlabelled"] = {"source": str(unlabelled), "images": n_unlabelled}
    # Record how the training faces are framed; unless a crop policy is given, prediction then
    # detects faces in photos and cuts them to look like these (faces/framing.py).
    framing = measure_training_framing(train_s, seed, threads)
    cfg = ModelConfig(arch=arch, labels=labels, input_size=input_size,
                      crop=crop or policy_for(framing), framing=framing)
    recipe = {
        "command": "facegender train " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["train"]
        else None,
        "arch": arch, "input_size": input_size, "epochs": epochs, "batch_size": batch_size,
        "optimizer": "AdamW", "lr": lr, "weight_decay": weight_decay, "schedule": schedule,
        "warmup_epochs": warmup, "label_smoothing": label_smoothing,
        "class_weights": dict(zip(labels, [round(w, 4) for w in weights], strict=True)),
        "augment": augment, "pretrained": pretrained, "freeze_epochs": freeze_epochs,
        "patience": patience, "monitor": monitor, "seed": seed, "limit": limit,
        "val_limit": val_limit, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "crop_training": crop_training, "balance": list(balance or []),
        "balance_power": balance_power if balance else None, "max_repeat": max_repeat,
        "drop": list(drop), "init": str(init) if init else None,
        "teacher": str(teacher) if teacher else None,
        "distill_weight": distill_weight if teacher else None, "world_size": dist.world,
    }
    cfg.recipe = recipe
    cfg.data = {"train": prov, "val": vprov}

    # ---- model, optimiser, schedule
    torch.manual_seed(seed)  # every rank builds the same weights (DDP broadcasts rank 0's too)
    model = build_model(arch, num_classes=len(labels),
                        pretrained="download" if pretrained == "download" else bool(pretrained))
    if pretrained:  # which file the weights came from (registry builds record it)
        cfg.recipe["pretrained_weights"] = getattr(model, "pretrained_from", None)
    if init is not None and not resume:
        start, start_cfg = modelfile.load_torch_model(init)
        if start_cfg.arch != arch or start_cfg.labels != labels:
            raise FaceGenderError(f"--init {init}: its arch/labels ({start_cfg.arch}, "
                                  f"{start_cfg.labels}) differ from this run's ({arch}, {labels})")
        model.load_state_dict(start.state_dict())
    aug = face_augmentation(augment)
    face_crop = PolicyCrop(cfg.crop) if crop_training and cfg.crop.get("detect") else None
    train_ds = FaceDataset(train_s, cfg, augment=aug, crop=face_crop)
    val_ds = FaceDataset(val_s, cfg, crop=face_crop)
    sampler = None
    if balance or multi:
        sampler = BalancedSampler(balanced_weights(
            train_s, list(balance or ["source"]), balance_power,
            {p["name"]: p["weight"] for p in prov.get("sources", [])} or None, max_repeat),
            len(train_s), seed, dist.rank, dist.world)
    elif dist.active:
        sampler = ShuffleSampler(len(train_s), seed, dist.rank, dist.world)
    soft = None
    if teacher is not None:
        if not dist.main:  # rank 0 computes and stores them; the others read its file
            dist.barrier()
        soft = _teacher_probs(teacher, train_s, out, cfg.male_index, progress)
        if dist.main:
            dist.barrier()
        cfg.recipe["teacher_faces"] = int(np.isfinite(soft[:, 0]).sum())
    rank_batch = -(-batch_size // dist.world)  # the global batch is batch_size on any world size
    steps_per_epoch = math.ceil(len(sampler) / rank_batch) if dist.active \
        else math.ceil(len(train_ds) / batch_size)
    model.to(dist.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    if schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(
            epochs * steps_per_epoch, max(1, int(warmup * steps_per_epoch))))
    else:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min" if monitor == "loss" else "max", factor=0.3, patience=1)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32),
                                        label_smoothing=label_smoothing)
    val_loss_fn = loss_fn  # validation figures are computed on the CPU
    loss_fn = loss_fn.to(dist.device) if dist.device != "cpu" else loss_fn
    backbone, _ = backbone_and_head(model)

    state: dict[str, Any] = {"epoch": 0, "best_metric": None, "best_epoch": -1,
                             "bad_epochs": 0, "history": [], "skipped": {}}
    ckpt_dir = out / "checkpoints" / "last"
    if resume:
        state = load_checkpoint(ckpt_dir, model, optimizer, scheduler)
        if state.get("world_size", 1) != dist.world:
            say(f"resuming a run of {state.get('world_size', 1)} process(es) on {dist.world}: "
                "same global batch and schedule", file=sys.stderr)
        say(f"resuming from epoch {state['epoch']} ({ckpt_dir})", file=sys.stderr)
    elif (out / modelfile.CONFIG_NAME).exists() or ckpt_dir.exists():
        raise FaceGenderError(f"{out} already holds a training run; use --resume to continue it "
                              "or choose another --out")
    dist.barrier()  # every rank has looked before rank 0 writes
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
    net = dist.wrap(model)  # trains; `model` (the same weights) validates and is saved

    say(f"training {arch} @ {input_size}px on {len(train_s)} faces "
          f"({', '.join(f'{k}={v}' for k, v in sorted(counts.items()))}), "
        f"validating on {len(val_s)}; workers={workers}, threads={torch.get_num_threads()}"
        + (f"; {dist.world} processes ({dist.backend}), {rank_batch} images a step each"
           if dist.active else ""), file=sys.stderr)
    interrupted = False
    best_val: dict[str, Any] = {}
    try:
        for epoch in range(state["epoch"], epochs):
            # Everything random in an epoch derives from (seed, epoch): resume needs no replay.
            torch.manual_seed(seed * 100_003 + epoch + 7919 * dist.rank)
            frozen = epoch < freeze_epochs
            for p in backbone:
                p.requires_grad_(not frozen)
            model.train()
            if sampler is not None:
                sampler.set_epoch(epoch)
            loader = make_loader(train_ds, rank_batch, sampler is None, workers,
                                 seed * 100_003 + epoch, sampler=sampler)
            tot_loss = tot_correct = tot_n = 0
            t0 = time.perf_counter()
            bar = progress_bar(loader, progress, f"epoch {epoch + 1}/{epochs}"
                               + (" (frozen)" if frozen else ""), unit="batch", leave=False)
            for x, y, idx, failed in bar:
                for i, reason in failed:
                    state["skipped"][train_s[i].ref] = reason
                # Under DDP every rank must step together: a batch none of whose images could
                # be read on any one rank is skipped by all.
                if not dist.all_agree(x is not None):
                    continue
                if dist.device != "cpu":
                    x, y = x.to(dist.device), y.to(dist.device)
                logits = net(x)
                loss = _loss(logits, y, idx, loss_fn, soft, distill_weight)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if schedule == "cosine":
                    scheduler.step()
                tot_loss += loss.item() * len(y)
                tot_correct += (logits.argmax(1) == y).sum().item()  # unlabelled: y = -1
                tot_n += len(y)
                bar.set_postfix(loss=f"{tot_loss / tot_n:.4f}", acc=f"{tot_correct / tot_n:.3f}",
                                img_s=f"{tot_n / (time.perf_counter() - t0):.0f}")
            tot_loss, tot_correct, tot_n = dist.sum([tot_loss, tot_correct, tot_n])
            if dist.active:  # every rank's unreadable images, for skipped.csv
                for part in dist.gather(state["skipped"]):
                    state["skipped"].update(part)
            train_time = time.perf_counter() - t0
            val_out = _predict_logits(model, val_ds, batch_size, workers, state["skipped"], val_s,
                                      dist)
            vm = _val_metrics(val_out, cfg, val_loss_fn, val_s, balance)
            row = {
                "epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
                "train_loss": tot_loss / max(tot_n, 1), "train_accuracy": tot_correct / max(tot_n, 1),
                "val_loss": vm["loss"], "val_accuracy": vm["accuracy"],
                "val_balanced_accuracy": vm["balanced_accuracy"], "val_roc_auc": vm["roc_auc"],
                "val_worst_group": vm.get("worst_group"),
                "train_img_per_s": tot_n / max(train_time, 1e-9), "epoch_seconds": train_time,
            }
            state["history"].append(row)
            score = -vm["loss"] if monitor == "loss" else vm[monitor]
            if schedule == "plateau":
                scheduler.step(vm["loss"] if monitor == "loss" else score)
            improved = state["best_metric"] is None or score > state["best_metric"]
            if improved:
                state.update(best_metric=score, best_epoch=epoch + 1, bad_epochs=0)
                if dist.main:
                    modelfile.save_weights(model.state_dict(), out)
                best_val = val_out
            else:
                state["bad_epochs"] += 1
            state["epoch"] = epoch + 1
            state["world_size"] = dist.world
            if dist.main:
                save_checkpoint(ckpt_dir, model, optimizer, scheduler, state)
                write_history(state["history"], out)
            say(f"epoch {epoch + 1}/{epochs}: loss {row['train_loss']:.4f} "
                  f"acc {row['train_accuracy']:.4f} | val acc {vm['accuracy']:.4f} "
                  f"bal {vm['balanced_accuracy']:.4f} auc {vm['roc_auc']:.4f} | "
                  f"{row['train_img_per_s']:.0f} img/s{' *' if improved else ''}",
                  file=sys.stderr)
            for cb in callbacks:
                cb(epoch + 1, row)
            if state["bad_epochs"] >= patience:
                say(f"early stop: no {monitor} gain for {patience} epochs", file=sys.stderr)
                break
    except KeyboardInterrupt:
        interrupted = True
        say(f"interrupted after epoch {state['epoch']}; continue with --resume "
              f"(checkpoint: {ckpt_dir})", file=sys.stderr)

    if state["best_epoch"] < 1:
        raise FaceGenderError("training stopped before the first epoch finished; nothing saved")
    if not dist.main:  # rank 0 finishes the folder; the others return once it is complete
        dist.barrier()
        dist.close()
        return TrainResult(out, state["best_epoch"], state["best_metric"], {},
                           state["history"], [], interrupted)

    # ---- finish the model folder from the best epoch: calibration, metrics, card, plots
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(out / modelfile.WEIGHTS_NAME), device=dist.device))
    if not best_val:
        best_val = _predict_logits(model, val_ds, batch_size, workers, state["skipped"], val_s,
                                   Dist(device=dist.device))
    cfg.metrics = _calibrate(cfg, best_val)
    cfg.metrics["best_epoch"] = state["best_epoch"]
    cfg.metrics["train_seconds"] = round(sum(r["epoch_seconds"] for r in state["history"]), 1)
    modelfile.save_config(cfg, out)
    if state["history"]:
        plot_history(state["history"], out / "curves.png")
    skipped = sorted(state["skipped"].items())
    if skipped:
        with open(out / "skipped.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["image", "reason"])
            w.writerows((neutralise_formula(ref), why) for ref, why in skipped)
        print(f"{len(skipped)} images could not be used (listed in {out / 'skipped.csv'}), e.g. "
              f"{skipped[0][0]}: {skipped[0][1]}", file=sys.stderr)
    write_card(out, cfg)
    dist.barrier()
    dist.close()
    return TrainResult(out, state["best_epoch"], state["best_metric"], cfg.metrics,
                       state["history"], skipped, interrupted)


def _predict_logits(model, ds, batch_size: int, workers: int, skipped: dict, samples,
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


def _val_metrics(val_out: dict, cfg: ModelConfig, loss_fn, samples: Sequence[Sample] = (),
                 balance: Sequence[str] | None = None) -> dict:
    from ..infer.preprocess import softmax

    z, y = val_out["logits"], val_out["y"]
    loss = float(loss_fn(torch.from_numpy(z), torch.from_numpy(y)).item())
    p_male = softmax(z)[:, cfg.male_index]
    m = compute_metrics((y == cfg.male_index).astype(int), p_male)
    out = {"loss": loss, "accuracy": m["accuracy"], "balanced_accuracy": m["balanced_accuracy"],
           "roc_auc": m["roc_auc"]}
    if samples and "source" in samples[0].groups:
        g = metrics_by_group([samples[i] for i in val_out["idx"]], list(balance or []),
                             (y == cfg.male_index).astype(int), p_male, 0.5)
        out["worst_group"] = g["worst_group"] if g["worst_group"] is not None else m["accuracy"]
        out["worst_source"] = g["worst_source"]
        out["worst_group_name"] = g["worst_group_name"]
    return out


def _loss(logits, y, idx, loss_fn, soft: np.ndarray | None, weight: float):
    """Cross-entropy on the labelled faces; with a teacher, mixed with the cross-entropy against
    its probabilities (faces it found no face in learn from their labels alone)."""
    labelled = y >= 0
    hard = loss_fn(logits[labelled], y[labelled]) if labelled.any() else logits.sum() * 0
    if soft is None:
        return hard
    t = torch.from_numpy(soft[idx.numpy()]).to(logits.device)
    has = torch.isfinite(t[:, 0])
    if not has.any():
        return hard
    soft_loss = -(t[has] * torch.log_softmax(logits[has], 1)).sum(1).mean()
    if not labelled.any():
        return soft_loss
    return (1 - weight) * hard + weight * soft_loss


def _teacher_probs(teacher, samples: Sequence[Sample], out: Path, male: int, progress: bool
                   ) -> np.ndarray:
    """The teacher's calibrated (p_class0, p_class1) per training face, in the student's label
    order; NaN where it found no face. Kept in OUT/teacher.npz so --resume does not redo it."""
    from ..infer.predictor import Predictor

    cache = out / "teacher.npz"
    refs = [s.ref for s in samples]
    if cache.exists():
        z = np.load(cache)
        if list(z["refs"]) == refs:
            return z["probs"]
    pred = Predictor(teacher, largest=True)
    probs = np.full((len(samples), 2), np.nan, np.float32)
    pos = {r: i for i, r in enumerate(refs)}
    t0 = time.perf_counter()
    for n, res in enumerate(pred.iter_predict(list(samples)), start=1):
        if res.faces:
            pm = res.faces[0].prob_male
            probs[pos[res.path], male], probs[pos[res.path], 1 - male] = pm, 1 - pm
        if progress and n % 5000 == 0:
            print(f"teacher: {n}/{len(samples)} faces ({n / (time.perf_counter() - t0):.0f}/s)",
                  file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(cache, refs=np.array(refs), probs=probs)
    return probs


def _calibrate(cfg: ModelConfig, val_out: dict) -> dict:
    """Fit the temperature and the unsure band on val; keep before/after figures for the card."""
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


def _say(*args, **kwargs) -> None:
    print(*args, **kwargs)


def _quiet(*args, **kwargs) -> None:
    """What ranks other than 0 print: nothing (rank 0 speaks for the job)."""


def write_history(rows: list[dict], out: Path) -> None:
    """history.csv: one row per epoch; columns are every key any row has, epoch first."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / modelfile.HISTORY_NAME, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
