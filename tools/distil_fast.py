"""Distil the fast model: dlib's 32 px gender network (arch `cydral_gender`, started from its
published weights) fine-tuned on the training faces of our four sources with the shipped
`accurate` model as teacher, then calibrated on their validation faces.

    nice -n 5 python tools/distil_fast.py --out runs/fast-distil [--name main]
        [--celeba-train 20000] [--epochs 14] [--distill-weight 0.7]
        [--arch mobilenetv3_small --input-size 64 --init MODEL_DIR --augment strong] [--pair]
        [--stage store|teacher|train|finish|all]

--arch/--input-size/--init train a larger student on the same crop cut at its size (the store
is keyed by size; the teacher's probabilities are reused); --pair makes finish write the student
plus dlib's published network as one model (arch mobilenetv3_small_cydral, OUT/NAME/pair), their
logits' weights fitted on the validation faces.

Stages, each cached under --out so a stopped run continues where it stopped (rerun the same
command):
1. store: every train and val face cut exactly as prediction cuts it (faces/framing.py
   find_faces with the framing of all four sources' training images: BlazeFace on the image,
   then padded, then the whole crop; the fast model's crop policy, 32 px; training/features.py),
   four views each: the face, its mirror image and two
   degraded copies (smaller, re-compressed, sometimes gray).
2. teacher: the accurate model's calibrated P(male) on every training face, from its own crop
   (a second feature store: its logits), computed once.
3. train: AdamW + cosine on views drawn with every source the same share of each epoch and,
   inside a source, every (label, group) cell evened out (kinfacew parent/child, AAF age group,
   CelebA Young); random view, flip, small shift/scale/rotation; loss (1 - w) x labels (label
   smoothing) + w x the teacher's probabilities. The epoch kept is the best by the worst source's
   balanced accuracy on validation (celeba val, a 15% share of AAF train, identity-disjoint 15%
   of kinfacew and fiw train). Checkpointed every epoch.
4. finish: the model folder (safetensors + config, framing measured on all four sources'
   training images so crop-shaped inputs such as kinfacew's 64 px squares are read whole when
   the detector misses), calibrated (temperature + unsure band) on three views of the
   validation faces, sources weighted alike. Never a test split; never FairFace, UTKFace, LFW.
Package with `python tools/make_shipped_model.py OUT/NAME/model --name fast`.

Measured 2026-12-06 (`python benchmarks/accuracy.py OUT/NAME/model fast --previous none
--celeba-limit 2000`; not shipped): every variant tried (lr 5e-5..2e-4, teacher share 0.7 or 1,
dense layers only, sources reweighted, tight crops left out) gains on the training sources' test
splits (fiw 92.8 -> 93.4-94.1%, celeba undisputed 98.3 -> 98.7-99.0%, every kinfacew crop read)
but loses fairface540 (76.8 -> 72.6-74.3%): its ROC-AUC there stays 0.86-0.87 (0.869 before)
while women's mean P(male) rises 0.26 -> 0.37-0.38, so the 32 px network learns no better
ranking off our sources, only a shifted decision. A MobileNetV3-Small student at 64 px (3 epochs,
from the 80 px fast of 2026-12-03) read fairface540 68.5%, paired with the peer 75.0% (worst
race group 65.9% vs 70.7%): not shipped either; docs/models.md has the table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from facegender.models import modelfile
from facegender.models.cydral_gender import PROVENANCE, load_expert
from facegender.training import features
from facegender.training.features import extract_features
from facegender.training.multisource import as_specs, gather, metrics_by_group, parse_drop
from facegender.training.sampling import balanced_weights

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SOURCES = [str(DATA / p) for p in ("celeba-gender/attributes.csv", "aaf/labels.csv",
                                   "kinfacew/labels.csv", "fiw/labels.csv")]
DROP = ["disputed=1"]
VAL_FRACTION = 0.15  # of the sources without a val split (AAF; kinfacew/fiw by identity)
BALANCE = ["source", "group", "age_group", "Young"]
VIEWS = 4
TEACHER_ENCODER = "accurate.onnx"
PAIR_ARCH = "mobilenetv3_small_cydral"  # the student + dlib's network (models/cydral_gender.py)


def faces(celeba_train: int | None, val_limit: int, seed: int):
    """(train, val) samples: every source's train faces (CelebA's a stratified subset, its
    disputed labels left out), val as calibrate() will draw it (same fraction and seed)."""
    from facegender.io.sources import stratified_limit

    split = gather(as_specs(SOURCES), drop=parse_drop(DROP), val_fraction=VAL_FRACTION,
                   val_per_source=val_limit, limit=None, seed=seed)
    celeba = [s for s in split.train if s.groups["source"] == "celeba-gender"]
    rest = [s for s in split.train if s.groups["source"] != "celeba-gender"]
    train = rest + stratified_limit(celeba, celeba_train, seed)  # small sources first
    val = [s for s in split.val if str(s.groups.get("disputed", "0")) != "1"]
    return train, val, split.provenance


def student_config(out: Path, input_size: int = 32) -> modelfile.ModelConfig:
    """Today's fast model's preprocessing and crop (dlib's chip from BlazeFace's landmarks) at
    `input_size` px, with the framing of all four sources' training images (measured once,
    kept in OUT)."""
    from make_fusion_model import training_framing

    cfg = modelfile.load_config("fast")
    cfg.input_size = input_size
    path = out / "framing.json"
    if not path.is_file():
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(training_framing(), indent=1))
    cfg.framing = json.loads(path.read_text())
    return cfg


def pixel_store(samples, out: Path, seed: int, input_size: int = 32,
                compute: bool = True) -> features.FeatureSet:
    """The student's input views of every face (the 'feature' is the normalised crop itself),
    cut by prediction's own rule with the new framing, so training sees what prediction feeds."""
    cfg = student_config(out, input_size)
    features.CHUNK = 512
    return extract_features(samples, lambda x: x.half(), cfg, out / "store" / "pixels",
                            weights_id="pixels", encoder="identity", views=VIEWS, batch_size=64,
                            workers=0, seed=seed, progress=False, what="student views",
                            framing=cfg.framing, compute=compute)


def teacher_store(samples, out: Path, threads: int, compute: bool = True) -> np.ndarray:
    """The accurate model's calibrated P(male) per face (NaN where it finds no face, or, with
    compute=False, where the store does not hold it yet: those faces learn from labels alone)."""
    import onnxruntime as ort

    folder = modelfile.shipped_model_dir("accurate")
    cfg = modelfile.load_config(folder)
    wid = modelfile.file_sha256(folder / "model.onnx")

    def encode(x: torch.Tensor) -> torch.Tensor:
        xn = x.numpy()
        return torch.from_numpy(np.concatenate([sess.run(None, {"input": xn[i:i + 1]})[0]
                                                for i in range(len(xn))]))

    if compute:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(folder / "model.onnx"), so,
                                    providers=["CPUExecutionProvider"])
    features.CHUNK = 256
    fs = extract_features(samples, encode, cfg, out / "store" / "teacher", weights_id=wid,
                          encoder=TEACHER_ENCODER, views=1, batch_size=16, workers=0,
                          progress=False, what="teacher", compute=compute)
    z, ok = fs.features[:, 0].astype(np.float32), fs.ok
    z = z / cfg.temperature
    p = 1 / (1 + np.exp(z[:, 1 - cfg.male_index] - z[:, cfg.male_index]))
    p[~ok] = np.nan
    return p


def smear(x: np.ndarray, band: int = 3, flat: float = 0.006) -> np.ndarray:
    """Share of each chip's outer `band` pixels that repeat their neighbour (the edge pixels
    crop_face repeats where the chip reaches past the image): about 0.08 on AAF's loose crops,
    0.42 on celeba-gender's tight ones, 0.31 kinfacew, 0.19 fiw. x: (n, C, H, W)."""
    gx = np.abs(np.diff(x, axis=3)).max(1)
    gy = np.abs(np.diff(x, axis=2)).max(1)
    sides = [gx[:, :, :band], gx[:, :, -band:], gy[:, :band], gy[:, -band:]]
    return np.mean([(g < flat).mean((1, 2)) for g in sides], axis=0)


def fold_affine(net) -> None:
    """Fold dlib's frozen batch norms (a per-channel scale up to 140 and an offset) into the
    convolutions, so the same function trains with weights of a sane size (Adam's steps are
    the same size for every weight; next to a scale of 140 they wreck the first layer)."""
    with torch.no_grad():
        for conv, scale, offset in zip(net.convs, net.scales, net.offsets, strict=True):
            s = scale.view(-1)
            offset.add_(conv.bias.view(1, -1, 1, 1) * scale)
            conv.weight.mul_(s.view(-1, 1, 1, 1))
            conv.bias.zero_()
            scale.fill_(1.0)


def renormalise_first_conv(net, old_mean, old_std, new_mean, new_std) -> None:
    """Make a torchvision MobileNet trained on (x - old_mean) / old_std compute the same on
    (x - new_mean) / new_std: the first convolution's weights rescaled per input channel and the
    constant it then adds moved into its batch norm's running mean (exact but at the border)."""
    conv, bn = net.features[0][0], net.features[0][1]
    ratio = torch.tensor(new_std) / torch.tensor(old_std)
    shift = (torch.tensor(new_mean) - torch.tensor(old_mean)) / torch.tensor(old_std)
    with torch.no_grad():
        added = (conv.weight * shift.view(1, 3, 1, 1)).sum((1, 2, 3))
        conv.weight.mul_(ratio.view(1, 3, 1, 1))
        bn.running_mean.sub_(added)


def init_provenance(a) -> dict | None:
    """Where the student's starting weights come from (the model card's record)."""
    if a.arch == "cydral_gender":
        return PROVENANCE
    if a.init is None:
        return None
    init = modelfile.load_config(a.init)
    return {"init": str(a.init),
            "init_weights_sha256": modelfile.file_sha256(Path(a.init) / modelfile.WEIGHTS_NAME),
            "init_recipe": init.recipe.get("command", "")}


def make_student(a, cfg):
    """The network to train: dlib's published 32 px network (its affine layers folded), or a
    registered arch started from a model folder's weights (--init) or from scratch."""
    if a.arch == "cydral_gender":
        net = load_expert().train()
        fold_affine(net)
        return net
    from facegender.models.registry import build_model

    net = build_model(a.arch, 2, pretrained=False)
    if a.init is None:
        return net.train()
    init = modelfile.load_config(a.init)
    if init.arch != a.arch or list(init.labels) != list(cfg.labels):
        raise SystemExit(f"--init {a.init}: arch {init.arch} labels {init.labels}, not {a.arch}")
    from safetensors.torch import load_file

    net.load_state_dict(load_file(str(Path(a.init) / modelfile.WEIGHTS_NAME)))
    renormalise_first_conv(net, init.mean, init.std, cfg.mean, cfg.std)
    return net.train()


def jitter(x: torch.Tensor, gen: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Flip, small scale/rotation/shift and brightness/contrast of a batch of model inputs
    (`strength` scales the geometric ranges)."""
    n = len(x)
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=gen)  # noqa: E731
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    g = strength
    s, r = u(1 - 0.08 * g, 1 + 0.08 * g), u(-0.1 * g, 0.1 * g)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = s * torch.cos(r) * flip, -s * torch.sin(r)
    theta[:, 1, 0], theta[:, 1, 1] = s * torch.sin(r) * flip, s * torch.cos(r)
    theta[:, 0, 2], theta[:, 1, 2] = u(-0.07 * g, 0.07 * g), u(-0.07 * g, 0.07 * g)
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    x = torch.nn.functional.grid_sample(x, grid, padding_mode="border", align_corners=False)
    c, b = u(0.8, 1.2).view(n, 1, 1, 1), u(-0.08, 0.08).view(n, 1, 1, 1)
    return x * c + b


def photometric(x: torch.Tensor, gen: torch.Generator, mean, std) -> torch.Tensor:
    """The rest of the strong augmentation, on normalised inputs: colour (per-channel gain,
    saturation; 10% gray), blur by downscaling (30%: to 35-80% of the side and back), noise
    (20%). JPEG re-compression comes from the store's degraded views."""
    n, side = len(x), x.shape[-1]
    m, sd = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=gen)  # noqa: E731
    raw = x * sd + m  # 0..1 pixels
    gray = (raw * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    sat = torch.where(torch.rand(n, generator=gen) < 0.1, 0.0, u(0.6, 1.4)).view(n, 1, 1, 1)
    warm = u(0.9, 1.1).view(n, 1, 1, 1)  # white balance: red up, blue down or the reverse
    raw = (gray + sat * (raw - gray)) * torch.cat([warm, torch.ones_like(warm), 1 / warm], 1)
    blur = torch.flatten(torch.nonzero(torch.rand(n, generator=gen) < 0.3))
    for i in blur.tolist():
        k = max(8, int(side * float(u(0.35, 0.8)[0])))
        small = torch.nn.functional.interpolate(raw[i:i + 1], size=(k, k), mode="bilinear",
                                                antialias=True, align_corners=False)
        raw[i:i + 1] = torch.nn.functional.interpolate(small, size=(side, side), mode="bilinear",
                                                       align_corners=False)
    noisy = (torch.rand(n, generator=gen) < 0.2).float().view(n, 1, 1, 1)
    raw = raw + noisy * 0.02 * torch.randn(raw.shape, generator=gen)
    return (raw - m) / sd


def val_score(net, x: np.ndarray, val, y: np.ndarray) -> dict:
    """Per-source and per-group validation metrics of the clean view (P(male) = class 1)."""
    net.eval()
    with torch.inference_mode():
        p = torch.softmax(net(torch.from_numpy(x.astype(np.float32))), 1)[:, 1].numpy()
    net.train()
    return metrics_by_group(val, BALANCE, y, p, 0.5)


def fit(a, train, val) -> None:
    """Fine-tune the published network on the stored views (resumable by epoch)."""
    from facegender.training.checkpoint import load_checkpoint, save_checkpoint
    from facegender.training.trainer import distillation_loss, lr_lambda

    store = pixel_store(val + train, a.out, a.seed, a.input_size, not a.stored_only)
    nv = len(val)
    vok = np.flatnonzero(store.ok[:nv])
    xv, val_ok = store.features[vok, 0], [val[i] for i in vok]
    yv = np.array([s.label == "male" for s in val_ok], np.int64)
    xt, keep = store.features[nv:], np.flatnonzero(store.ok[nv:])
    if a.max_smear < 1:  # photo-like chips only: tight crops teach the network to ignore hair
        keep = keep[smear(xt[keep, 0].astype(np.float32)) <= a.max_smear]
    y = np.array([s.label == "male" for s in train], np.int64)
    pm = teacher_store(train, a.out, a.threads, not a.stored_only) if a.distill_weight > 0 \
        else np.full(len(train), np.nan, np.float32)
    soft = np.stack([1 - pm, pm], 1).astype(np.float32)
    names = {train[i].groups["source"] for i in keep}
    share = dict.fromkeys(names, 1.0)
    for rule in a.source_weight:
        name, _, value = rule.partition("=")
        share[name] = float(value)
    w = balanced_weights([train[i] for i in keep], BALANCE, a.balance_power, share, 8.0)
    cfg = student_config(a.out, a.input_size)
    net = make_student(a, cfg)
    if a.freeze_convs:  # the published network's features kept: only its two dense layers train
        for p in [*net.convs.parameters(), *net.scales, *net.offsets]:
            p.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=a.lr,
                            weight_decay=a.weight_decay)
    steps = math.ceil(a.epoch_faces / a.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(a.epochs * steps, steps // 3))
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=a.label_smoothing)
    ckpt = a.out / a.name / "checkpoints" / "last"
    state = {"epoch": 0, "best": None, "best_epoch": -1, "history": []}
    if (ckpt / "state.json").is_file():
        state = load_checkpoint(ckpt, net, opt, sched)
    print(f"training on {len(keep)} faces ({int(np.isfinite(pm[keep]).sum())} with the teacher), "
          f"validating on {len(vok)}; from epoch {state['epoch']}", file=sys.stderr, flush=True)
    state["teacher_faces"] = int(np.isfinite(pm[keep]).sum())
    if state["epoch"] == 0:
        m = val_score(net, xv, val_ok, yv)
        print(json.dumps({"epoch": 0, "worst_source": round(m["worst_source"], 4),
                          "per_source": {k: round(v["balanced_accuracy"], 4)
                                         for k, v in m["per_source"].items()}}),
              file=sys.stderr, flush=True)
    for epoch in range(state["epoch"], a.epochs):
        t0, rng = time.perf_counter(), np.random.default_rng([a.seed, epoch])
        gen = torch.Generator().manual_seed(a.seed * 1000 + epoch)
        idx = keep[rng.choice(len(keep), a.epoch_faces, p=w)]
        view = rng.integers(0, VIEWS, len(idx))
        total = 0.0
        for lo in range(0, len(idx), a.batch_size):
            i = idx[lo:lo + a.batch_size]
            x = torch.from_numpy(xt[i, view[lo:lo + a.batch_size]].astype(np.float32))
            x = jitter(x, gen, 1.5 if a.augment == "strong" else 1.0)
            if a.augment == "strong":
                x = photometric(x, gen, cfg.mean, cfg.std)
            loss = distillation_loss(net(x), torch.from_numpy(y[i]), torch.from_numpy(i), loss_fn,
                                     soft, a.distill_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(i)
        m = val_score(net, xv, val_ok, yv)
        row = {"epoch": epoch + 1, "loss": round(total / len(idx), 4),
               "worst_source": round(m["worst_source"], 4), "accuracy": round(m["accuracy"], 4),
               "per_source": {k: round(v["balanced_accuracy"], 4)
                              for k, v in m["per_source"].items()},
               "seconds": round(time.perf_counter() - t0, 1)}
        state["history"].append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        if state["best"] is None or m["worst_source"] > state["best"]:
            state["best"], state["best_epoch"] = m["worst_source"], epoch + 1
            state["best_metrics"] = {k: m[k] for k in ("accuracy", "balanced_accuracy", "roc_auc",
                                                       "ece", "per_class", "per_source")}
            modelfile.save_weights(net.state_dict(), a.out / a.name / "best")
        state["epoch"] = epoch + 1
        save_checkpoint(ckpt, net, opt, sched, state)
    print(f"best epoch {state['best_epoch']}: worst source {state['best']:.4f}", file=sys.stderr)


def logit_gap(net, x: np.ndarray) -> np.ndarray:
    """male - female logit of each stored (clean) chip."""
    net.eval()
    with torch.inference_mode():
        z = torch.cat([net(torch.from_numpy(x[lo:lo + 512].astype(np.float32)))
                       for lo in range(0, len(x), 512)])
    return (z[:, 1] - z[:, 0]).numpy()


def pair_state(a, val) -> tuple[dict, dict]:
    """The best student and dlib's published network as one StudentWithCydral, their logits'
    weights fitted by a logistic regression on the clean validation chips (sources and
    genders weighted alike); the validation scores of each alone and of the pair."""
    from sklearn.linear_model import LogisticRegression

    from facegender.models.cydral_gender import StudentWithCydral

    store = pixel_store(val, a.out, a.seed, a.input_size, compute=False)
    vok = np.flatnonzero(store.ok)
    x, val_ok = store.features[vok, 0], [val[i] for i in vok]
    y = np.array([s.label == "male" for s in val_ok], np.int64)
    student = make_student(argparse.Namespace(**{**vars(a), "init": None}), None)
    from safetensors.torch import load_file

    student.load_state_dict(load_file(str(a.out / a.name / "best" / modelfile.WEIGHTS_NAME)))
    pair = StudentWithCydral(student, load_expert())
    gaps = np.stack([logit_gap(student, x), logit_gap(pair.expert, pair.chip(torch.from_numpy(
        x.astype(np.float32))).numpy())], 1)
    cell = np.array([f"{s.groups['source']}/{s.label}" for s in val_ok])
    w = np.array([1 / (cell == v).mean() for v in cell])  # every source and gender alike
    score = lambda z: metrics_by_group(val_ok, BALANCE, y, 1 / (1 + np.exp(-z)), 0.5)  # noqa: E731
    fits = [LogisticRegression(C=1e4, fit_intercept=b).fit(gaps, y, sample_weight=w / w.mean())
            for b in (False, True)]  # an offset only where it raises the worst source
    lr = max(fits, key=lambda f: score(gaps @ f.coef_[0] + f.intercept_[0])["worst_source"])
    (ws, we), c = lr.coef_[0], float(lr.intercept_[0])
    with torch.no_grad():
        pair.student_weight.fill_(float(ws))
        pair.weight.fill_(float(we))
        pair.offset.copy_(torch.tensor([0.0, c]))
    fits = {name: score(z) for name, z in (("student", gaps[:, 0]), ("cydral", gaps[:, 1]),
                                            ("pair", gaps @ lr.coef_[0] + c))}
    info = {"student_weight": round(float(ws), 4), "cydral_weight": round(float(we), 4),
            "offset": round(c, 4), **{f"val_{k}": {"worst_source": round(m["worst_source"], 4),
                                                   "accuracy": round(m["accuracy"], 4),
                                                   "per_source": {s: round(v["balanced_accuracy"], 4)
                                                                  for s, v in m["per_source"].items()}}
                                      for k, m in fits.items()}}
    print(json.dumps(info), file=sys.stderr, flush=True)
    return pair.state_dict(), info


def whole_run(argv: list[str]) -> list[str]:
    """The command line without --stage: the one command that makes the model from scratch."""
    out, skip = [], False
    for x in argv:
        if skip or x.startswith("--stage="):
            skip = False
            continue
        skip = x == "--stage"
        if not skip:
            out.append(x)
    return out


def finish(a, provenance: list[dict], val: list) -> None:
    """The model folder from the best epoch, calibrated on val faces, its card's data."""
    import shutil

    from facegender.training.calibrate import calibrate

    run = a.out / a.name
    state = json.loads((run / "checkpoints" / "last" / "state.json").read_text())
    base = student_config(a.out, a.input_size)
    init = init_provenance(a)
    arch, pair = a.arch, {}
    if a.pair:
        weights, pair = pair_state(a, val)
        arch = PAIR_ARCH
    used = {p["name"]: p["train"] for p in provenance}
    used["celeba-gender"] = min(used["celeba-gender"], a.celeba_train or used["celeba-gender"])
    recipe = ("dlib's gender network fine-tuned on four sources" if a.arch == "cydral_gender" else
              f"{a.arch} at {a.input_size} px trained on four sources") + \
        ", distilled from the accurate model" + \
        (", plus dlib's published gender network on the same chip at 32 px, logits mixed by "
         "weights fitted on validation faces" if a.pair else "")
    cfg = modelfile.ModelConfig(
        arch=arch, labels=base.labels, input_size=base.input_size, mean=base.mean,
        std=base.std, crop=base.crop, framing=base.framing, threshold=0.5,
        temperature=1.0, unsure_band=0.1,
        recipe={"recipe": recipe, "arch": arch, "student_arch": a.arch, "init": init,
                **({"pair": pair, "cydral": PROVENANCE} if a.pair else {}),
                "teacher": "accurate (faceres_fusion): its calibrated P(male) on its own crop",
                "made_by": "python tools/distil_fast.py " + " ".join(whole_run(sys.argv[1:])),
                **{k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()
                   if k not in ("out", "stage", "name")},
                "views": VIEWS, "balance": BALANCE, "val_fraction": VAL_FRACTION,
                "selection": "best epoch by the worst source's balanced accuracy on val "
                             "(fairface540 never looked at)",
                "teacher_faces": state["teacher_faces"], "best_epoch": state["best_epoch"],
                "val_worst_source": round(state["best"], 4)},
        data={"train": {"source": sorted(used), "images": sum(used.values()), "classes": used,
                        "drop": DROP},
              "val": {"source": "celeba-gender val (subset), 15% of AAF train, identity-disjoint "
                                "15% of kinfacew and fiw train", "images": len(val)}},
        metrics={"val": state["best_metrics"], "history": state["history"],
                 "train_seconds": round(sum(r["seconds"] for r in state["history"]))})
    raw, dest = (run / "raw-pair", run / "pair") if a.pair else (run / "raw", run / "model")
    for d in (raw, dest):
        if d.exists():
            shutil.rmtree(d)
    raw.mkdir(parents=True)
    if a.pair:
        modelfile.save_weights(weights, raw)
    else:
        shutil.copy(run / "best" / modelfile.WEIGHTS_NAME, raw / modelfile.WEIGHTS_NAME)
    modelfile.save_config(cfg, raw)
    res = calibrate(raw, SOURCES, dest, views=3, limit=a.val_limit, drop=DROP,
                    val_fraction=VAL_FRACTION, backend="torch", seed=a.seed, progress=False)
    cfg = modelfile.load_config(dest)
    cfg.metrics["val"].update(ece_before_calibration=res["before"]["ece_clean"],
                              ece_after_calibration=res["after"]["ece_clean"])
    modelfile.save_config(cfg, dest)
    print({k: res[k] for k in ("faces", "before", "after")}, file=sys.stderr)

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="run folder (the face and teacher stores)")
    ap.add_argument("--name", default="main",
                    help="this training variant: its checkpoints and model go in OUT/NAME")
    ap.add_argument("--stage", choices=["store", "teacher", "train", "finish", "all"], default="all")
    ap.add_argument("--arch", default="cydral_gender",
                    help="the student: cydral_gender (dlib's network, its published weights) or "
                         "a registered arch such as mobilenetv3_small")
    ap.add_argument("--init", type=Path, default=None,
                    help="a model folder of the same arch to start from (its normalisation is "
                         "converted to the fast crop's); default for cydral_gender: dlib's weights")
    ap.add_argument("--pair", action="store_true",
                    help="finish: the student plus dlib's published 32 px network in one model "
                         f"({PAIR_ARCH}), written to OUT/NAME/pair")
    ap.add_argument("--augment", choices=["light", "strong"], default="light",
                    help="strong: wider geometry, colour, gray, blur by downscaling, noise")
    ap.add_argument("--input-size", type=int, default=32,
                    help="the student's chip side in px (the same crop, cut at this size)")
    ap.add_argument("--celeba-train", type=int, default=20000, help="CelebA train faces (subset)")
    ap.add_argument("--val-limit", type=int, default=1500, help="val faces a source")
    ap.add_argument("--epochs", type=int, default=14)
    ap.add_argument("--epoch-faces", type=int, default=24000, help="faces drawn an epoch")
    ap.add_argument("--batch-size", type=int, default=128)
    # Adam moves every weight by about lr a step whatever its size: 1e-3 wrecks the published
    # network within a few batches (AAF val 95 -> 72%), even with its batch norms folded.
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--distill-weight", type=float, default=0.7,
                    help="share of the loss from the teacher's probabilities")
    ap.add_argument("--source-weight", action="append", default=[], metavar="NAME=W",
                    help="a source's share of each epoch relative to the others' 1, e.g. "
                         "celeba-gender=0.5 (repeatable)")
    ap.add_argument("--max-smear", type=float, default=1.0,
                    help="train only on chips with at most this share of repeated edge pixels "
                         "(see smear(); 1: all)")
    ap.add_argument("--freeze-convs", action="store_true",
                    help="train only the two dense layers (the convolutions stay dlib's)")
    ap.add_argument("--stored-only", action="store_true",
                    help="train on the faces and teacher probabilities stored so far (faces "
                         "without the teacher's learn from their labels alone) instead of "
                         "computing the rest")
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--balance-power", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    train, val, provenance = faces(a.celeba_train, a.val_limit, a.seed)
    print(f"{len(train)} train faces, {len(val)} val faces", file=sys.stderr, flush=True)
    stages = ["store", "teacher", "train", "finish"] if a.stage == "all" else [a.stage]
    if "store" in stages:
        pixel_store(val + train, a.out, a.seed, a.input_size)
    if "teacher" in stages:
        teacher_store(train, a.out, a.threads)
    if "train" in stages:
        fit(a, train, val)
    if "finish" in stages:
        finish(a, provenance, val)
    return 0


if __name__ == "__main__":
    sys.exit(main())
