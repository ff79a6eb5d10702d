"""Full fine-tuning (and distillation from a teacher): AdamW, warmup + cosine (or plateau)
schedule, class-weighted loss with label smoothing, face augmentations, optional frozen-backbone
first phase, early stopping, best/last checkpoints, exact resume, history CSV + curves,
temperature calibration on val. `train()` is also the door to the head/tail recipes (heads.py).

Output folder = a model folder (config.json, model.safetensors with the best weights, README.md
model card) plus history.csv, curves.png, skipped.csv and checkpoints/last/ for --resume.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FaceGenderError, ImageError, require
from ..faces.framing import policy_for
from ..infer.device import torch_device
from ..io.progress import progress_bar
from ..io.sources import Sample, read_source, require_both_classes
from ..io.targets import as_inputs, folder_target
from ..labels import DEFAULT_LABELS
from ..models import modelfile
from ..models.modelfile import ModelConfig
from ..options import build, resolve_by_recipe, signature, to_recipe
from ..report.metrics import compute_metrics
from ..verbs import HEAD_RECIPES, TrainOptions
from .checkpoint import load_checkpoint, save_checkpoint
from .data import train_val_sets
from .distributed import Dist, from_env
from .multisource import metrics_by_group
from .recipe import (
    Recipe,
    TrainResult,
    calibrate_on_val,
    command_line,
    predict_logits,
    write_history,
    write_skipped,
)
from .sampling import BalancedSampler, ShuffleSampler, balanced_weights

torch = require("torch")

__all__ = ["TrainResult", "measure_training_framing", "train", "write_history"]


def train(data: Any, out: Any, *, callbacks: Sequence[Callable[[int, dict], None]] = (),
          **options: Any) -> TrainResult:
    """Train a male/female classifier on labelled faces and write a model folder to `out`.

    The options, their defaults and ranges are declared once in facegender.verbs.TrainOptions
    (`facegender train --help` lists them; this function's signature is built from it). Options
    left at None take their recipe's default (epochs 10 full / 30 head, monitor
    balanced_accuracy / worst_group, ...). `recipe` head or tail trains on a pretrained face
    backbone's stored features (training/heads.py); full trains the whole network.

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
    opts = build(TrainOptions, {"data": data, "out": out, **options}, "train")
    opts = resolve_by_recipe(opts, opts.recipe)
    if opts.recipe in HEAD_RECIPES:
        from .heads import HeadRecipe

        return HeadRecipe(opts.data, opts.out, opts).run()
    return FullRecipe(opts, callbacks).run()


train.__signature__ = signature(train, TrainOptions, leading=("data", "out"),  # type: ignore[attr-defined]
                                trailing={"callbacks": ()})


def lr_lambda(total_steps: int, warmup_steps: int, final: float = 0.01) -> Callable[[int], float]:
    """Linear warmup to the peak rate, then cosine down to `final` of it."""
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


def _say(*args, **kwargs) -> None:
    print(*args, **kwargs)


def _quiet(*args, **kwargs) -> None:
    """What ranks other than 0 print: nothing (rank 0 speaks for the job)."""


class FullRecipe(Recipe):
    """The whole network trained on decoded faces: setup (faces, config, model, optimiser,
    resume), fit (epochs with validation and early stopping), finish (calibrate, save)."""

    def __init__(self, opts: TrainOptions, callbacks: Sequence[Callable[[int, dict], None]] = ()):
        self.o, self.callbacks = opts, callbacks
        # A file there, or the training data's own folder: refused before any work.
        self.out = folder_target(opts.out, "model folder", as_inputs(opts.data))
        self.dist = from_env()
        self.say = _say if self.dist.main else _quiet
        self.progress = opts.progress and self.dist.main
        self.interrupted = False
        self.best_val: dict[str, Any] = {}

    def check_out(self) -> None:
        """Checked once the model exists (setup), since --resume continues a run in place."""

    # ---- setup
    def setup(self) -> None:
        o, dist = self.o, self.dist
        if not dist.active:  # one process: --device picks it (torchrun gives each rank its GPU)
            dist.device = str(torch_device(o.device))  # a missing GPU is said before any work
        if o.threads:
            torch.set_num_threads(o.threads)
        if o.workers is None:
            from .torchdata import default_workers

            o.workers = default_workers()
        self.by_source = (isinstance(o.data, (list, tuple))
                          and not all(isinstance(x, Sample) for x in o.data)) \
            or bool(o.balance) or bool(o.drop) or o.teacher is not None
        if o.monitor in ("worst_group", "worst_source") and not self.by_source:
            raise FaceGenderError("--monitor worst_group needs groups: give --balance or several sources")
        self.sets = train_val_sets(o.data, o.val, limit=o.limit, val_limit=o.val_limit,
                                   val_fraction=o.val_fraction, seed=o.seed,
                                   by_source=self.by_source, drop=o.drop)
        self.counts = require_both_classes(self.sets.train, f"training data {o.data}")
        self.labels = list(DEFAULT_LABELS)
        n = sum(self.counts[c] for c in self.labels)
        self.class_weights = [n / (len(self.labels) * self.counts[c]) if o.class_weights else 1.0
                              for c in self.labels]
        self._add_unlabelled()
        self.cfg = self._config()
        self._setup_model()
        self._setup_optimiser()
        self._start_or_resume()

    def _add_unlabelled(self) -> None:
        o = self.o
        if o.unlabelled is None:
            return
        if o.teacher is None:
            raise FaceGenderError("unlabelled faces need a --teacher to learn from")
        extra = read_source(o.unlabelled, labelled=False).samples
        for x in extra:
            x.label = None
            x.groups.setdefault("source", "unlabelled")
        self.sets.train = self.sets.train + extra
        self.sets.train_provenance["unlabelled"] = {"source": str(o.unlabelled),
                                                    "images": len(extra)}

    def _config(self) -> ModelConfig:
        """The model folder's config: preprocessing, framing measured on the training faces, the
        recipe (every option, from TrainOptions) and where the data came from."""
        o, sets = self.o, self.sets
        # Unless a crop policy is given, prediction detects faces in photos and cuts them to
        # look like the training faces (faces/framing.py).
        framing = measure_training_framing(sets.train, o.seed, o.threads)
        cfg = ModelConfig(arch=o.arch, labels=self.labels, input_size=o.input_size,
                          crop=o.crop or policy_for(framing), framing=framing)
        cfg.recipe = {"command": command_line("train"), **to_recipe(o), "optimizer": "AdamW",
                      "class_weights": dict(zip(self.labels, [round(w, 4) for w in
                                                              self.class_weights], strict=True)),
                      "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "balance": list(o.balance or []),
                      "balance_power": o.balance_power if o.balance else None,
                      "init": str(o.init) if o.init else None,
                      "teacher": str(o.teacher) if o.teacher else None,
                      "distill_weight": o.distill_weight if o.teacher else None,
                      "world_size": self.dist.world}
        cfg.data = {"train": sets.train_provenance, "val": sets.val_provenance}
        return cfg

    def _setup_model(self) -> None:
        from ..models.registry import backbone_and_head, build_model
        from .augment import face_augmentation
        from .torchdata import FaceDataset, PolicyCrop

        o, cfg, dist = self.o, self.cfg, self.dist
        torch.manual_seed(o.seed)  # every rank builds the same weights (DDP broadcasts rank 0's)
        self.model = build_model(o.arch, num_classes=len(self.labels),
                                 pretrained="download" if o.pretrained == "download"
                                 else bool(o.pretrained))
        if o.pretrained:  # which file the weights came from (registry builds record it)
            cfg.recipe["pretrained_weights"] = getattr(self.model, "pretrained_from", None)
        if o.init is not None and not o.resume:
            start, start_cfg = modelfile.load_torch_model(o.init)
            if start_cfg.arch != o.arch or start_cfg.labels != self.labels:
                raise FaceGenderError(f"--init {o.init}: its arch/labels ({start_cfg.arch}, "
                                      f"{start_cfg.labels}) differ from this run's ({o.arch}, "
                                      f"{self.labels})")
            self.model.load_state_dict(start.state_dict())
        face_crop = PolicyCrop(cfg.crop) if o.crop_training and cfg.crop.get("detect") else None
        train_s = self.sets.train
        self.train_ds = FaceDataset(train_s, cfg, augment=face_augmentation(o.augment),
                                    crop=face_crop)
        self.val_ds = FaceDataset(self.sets.val, cfg, crop=face_crop)
        self.sampler = None
        if o.balance or self.by_source:
            sources = self.sets.train_provenance.get("sources", [])
            self.sampler = BalancedSampler(balanced_weights(
                train_s, list(o.balance or ["source"]), o.balance_power,
                {p["name"]: p["weight"] for p in sources} or None, o.max_repeat),
                len(train_s), o.seed, dist.rank, dist.world)
        elif dist.active:
            self.sampler = ShuffleSampler(len(train_s), o.seed, dist.rank, dist.world)
        self.soft = self._teacher_soft_labels()
        self.backbone, _ = backbone_and_head(self.model)

    def _teacher_soft_labels(self) -> np.ndarray | None:
        o, dist = self.o, self.dist
        if o.teacher is None:
            return None
        if not dist.main:  # rank 0 computes and stores them; the others read its file
            dist.barrier()
        soft = teacher_probs(o.teacher, self.sets.train, self.out, self.cfg.male_index,
                             self.progress)
        if dist.main:
            dist.barrier()
        self.cfg.recipe["teacher_faces"] = int(np.isfinite(soft[:, 0]).sum())
        return soft

    def _setup_optimiser(self) -> None:
        o, dist = self.o, self.dist
        self.rank_batch = -(-o.batch_size // dist.world)  # the global batch on any world size
        steps_per_epoch = math.ceil(len(self.sampler) / self.rank_batch) if dist.active \
            else math.ceil(len(self.train_ds) / o.batch_size)
        self.model.to(dist.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=o.lr,
                                           weight_decay=o.weight_decay)
        if o.schedule == "cosine":
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(
                o.epochs * steps_per_epoch, max(1, int(o.warmup * steps_per_epoch))))
        else:
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="min" if o.monitor == "loss" else "max", factor=0.3,
                patience=1)
        loss_fn = torch.nn.CrossEntropyLoss(
            weight=torch.tensor(self.class_weights, dtype=torch.float32),
            label_smoothing=o.label_smoothing)
        self.val_loss_fn = loss_fn  # validation figures are computed on the CPU
        self.loss_fn = loss_fn.to(dist.device) if dist.device != "cpu" else loss_fn

    def _start_or_resume(self) -> None:
        o, dist, out = self.o, self.dist, self.out
        self.state: dict[str, Any] = {"epoch": 0, "best_metric": None, "best_epoch": -1,
                                      "bad_epochs": 0, "history": [], "skipped": {}}
        self.ckpt_dir = out / "checkpoints" / "last"
        if o.resume:
            self.state = load_checkpoint(self.ckpt_dir, self.model, self.optimizer, self.scheduler)
            if self.state.get("world_size", 1) != dist.world:
                self.say(f"resuming a run of {self.state.get('world_size', 1)} process(es) on "
                         f"{dist.world}: same global batch and schedule", file=sys.stderr)
            self.say(f"resuming from epoch {self.state['epoch']} ({self.ckpt_dir})", file=sys.stderr)
        elif (out / modelfile.CONFIG_NAME).exists() or self.ckpt_dir.exists():
            raise FaceGenderError(f"{out} already holds a training run; use --resume to continue "
                                  "it or choose another --out")
        dist.barrier()  # every rank has looked before rank 0 writes
        if dist.main:
            out.mkdir(parents=True, exist_ok=True)
        self.net = dist.wrap(self.model)  # trains; `model` (same weights) validates, is saved

    # ---- fit
    def fit(self) -> None:
        o, dist = self.o, self.dist
        self.say(f"training {o.arch} @ {o.input_size}px on {len(self.sets.train)} faces "
                 f"({', '.join(f'{k}={v}' for k, v in sorted(self.counts.items()))}), "
                 f"validating on {len(self.sets.val)}; workers={o.workers}, "
                 f"threads={torch.get_num_threads()}"
                 + (f"; {dist.world} processes ({dist.backend}), {self.rank_batch} images a "
                    "step each" if dist.active else ""), file=sys.stderr)
        try:
            for epoch in range(self.state["epoch"], o.epochs):
                row = self._train_epoch(epoch)
                if self._validate_and_keep(epoch, row):
                    break
        except KeyboardInterrupt:
            self.interrupted = True
            self.say(f"interrupted after epoch {self.state['epoch']}; continue with --resume "
                     f"(checkpoint: {self.ckpt_dir})", file=sys.stderr)
        if self.state["best_epoch"] < 1:
            raise FaceGenderError("training stopped before the first epoch finished; nothing saved")

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        """One pass over the drawn faces; returns the epoch's training figures."""
        from .torchdata import make_loader

        o, dist, state = self.o, self.dist, self.state
        # Everything random in an epoch derives from (seed, epoch): resume needs no replay.
        torch.manual_seed(o.seed * 100_003 + epoch + 7919 * dist.rank)
        frozen = epoch < o.freeze_epochs
        for p in self.backbone:
            p.requires_grad_(not frozen)
        self.model.train()
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        loader = make_loader(self.train_ds, self.rank_batch, self.sampler is None, o.workers,
                             o.seed * 100_003 + epoch, sampler=self.sampler)
        tot_loss = tot_correct = tot_n = 0
        t0 = time.perf_counter()
        bar = progress_bar(loader, self.progress, f"epoch {epoch + 1}/{o.epochs}"
                           + (" (frozen)" if frozen else ""), unit="batch", leave=False)
        for x, y, idx, failed in bar:
            for i, reason in failed:
                state["skipped"][self.sets.train[i].ref] = reason
            # Under DDP every rank must step together: a batch none of whose images could be
            # read on any one rank is skipped by all.
            if not dist.all_agree(x is not None):
                continue
            if dist.device != "cpu":
                x, y = x.to(dist.device), y.to(dist.device)
            logits = self.net(x)
            loss = distillation_loss(logits, y, idx, self.loss_fn, self.soft, o.distill_weight)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if o.schedule == "cosine":
                self.scheduler.step()
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
        return {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"],
                "train_loss": tot_loss / max(tot_n, 1),
                "train_accuracy": tot_correct / max(tot_n, 1),
                "train_img_per_s": tot_n / max(train_time, 1e-9), "epoch_seconds": train_time}

    def _validate_and_keep(self, epoch: int, train_row: dict[str, Any]) -> bool:
        """Validate, keep the best weights, write the checkpoint; True to stop early."""
        o, dist, state = self.o, self.dist, self.state
        val_out = predict_logits(self.model, self.val_ds, o.batch_size, o.workers,
                                 state["skipped"], self.sets.val, dist)
        vm = val_metrics(val_out, self.cfg, self.val_loss_fn, self.sets.val, o.balance)
        row = {k: train_row[k] for k in ("epoch", "lr", "train_loss", "train_accuracy")}
        row |= {"val_loss": vm["loss"], "val_accuracy": vm["accuracy"],
                "val_balanced_accuracy": vm["balanced_accuracy"], "val_roc_auc": vm["roc_auc"],
                "val_worst_group": vm.get("worst_group"),
                "train_img_per_s": train_row["train_img_per_s"],
                "epoch_seconds": train_row["epoch_seconds"]}
        state["history"].append(row)
        score = -vm["loss"] if o.monitor == "loss" else vm[o.monitor]
        if o.schedule == "plateau":
            self.scheduler.step(vm["loss"] if o.monitor == "loss" else score)
        improved = state["best_metric"] is None or score > state["best_metric"]
        if improved:
            state.update(best_metric=score, best_epoch=epoch + 1, bad_epochs=0)
            if dist.main:
                modelfile.save_weights(self.model.state_dict(), self.out)
            self.best_val = val_out
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        state["world_size"] = dist.world
        if dist.main:
            save_checkpoint(self.ckpt_dir, self.model, self.optimizer, self.scheduler, state)
            write_history(state["history"], self.out)
        self.say(f"epoch {epoch + 1}/{o.epochs}: loss {row['train_loss']:.4f} "
                 f"acc {row['train_accuracy']:.4f} | val acc {vm['accuracy']:.4f} "
                 f"bal {vm['balanced_accuracy']:.4f} auc {vm['roc_auc']:.4f} | "
                 f"{row['train_img_per_s']:.0f} img/s{' *' if improved else ''}", file=sys.stderr)
        for cb in self.callbacks:
            cb(epoch + 1, row)
        if state["bad_epochs"] >= o.patience:
            self.say(f"early stop: no {o.monitor} gain for {o.patience} epochs", file=sys.stderr)
            return True
        return False

    # ---- finish
    def finish(self) -> TrainResult:
        """The model folder from the best epoch: calibration, metrics, card, plots."""
        from safetensors.torch import load_file

        from ..models.card import write_card
        from ..report.plots import plot_history

        o, dist, state, out, cfg = self.o, self.dist, self.state, self.out, self.cfg
        if not dist.main:  # rank 0 finishes the folder; the others return once it is complete
            dist.barrier()
            dist.close()
            return TrainResult(out, state["best_epoch"], state["best_metric"], {},
                               state["history"], [], self.interrupted)
        self.model.load_state_dict(load_file(str(out / modelfile.WEIGHTS_NAME),
                                             device=dist.device))
        best_val = self.best_val or predict_logits(self.model, self.val_ds, o.batch_size,
                                                   o.workers, state["skipped"], self.sets.val,
                                                   Dist(device=dist.device))
        cfg.metrics = calibrate_on_val(cfg, best_val)
        cfg.metrics["best_epoch"] = state["best_epoch"]
        cfg.metrics["train_seconds"] = round(sum(r["epoch_seconds"] for r in state["history"]), 1)
        modelfile.save_config(cfg, out)
        if state["history"]:
            plot_history(state["history"], out / "curves.png")
        skipped = sorted(state["skipped"].items())
        write_skipped(skipped, out)
        write_card(out, cfg)
        dist.barrier()
        dist.close()
        return TrainResult(out, state["best_epoch"], state["best_metric"], cfg.metrics,
                           state["history"], skipped, self.interrupted)


def val_metrics(val_out: dict, cfg: ModelConfig, loss_fn, samples: Sequence[Sample] = (),
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


def distillation_loss(logits, y, idx, loss_fn, soft: np.ndarray | None, weight: float):
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


def teacher_probs(teacher, samples: Sequence[Sample], out: Path, male: int, progress: bool
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
