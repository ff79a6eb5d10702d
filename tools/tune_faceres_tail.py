"""Fine-tune FaceRes-deep's last blocks and gender head (the fused accurate model's FaceRes part)
on stored activations, then score readers built on the tuned network against today's head.

    python tools/tune_faceres_tail.py --acts runs/faceres-acts --cache runs/fusion-store \
        --out runs/faceres-tail [--epochs 6 --lr 1e-4 --dro 0.05]

1. Activations (resumable, training/features.py's store): every face of the fusion store's sets
   (tools/extract_fusion_features.py `sets`, its default sizes) cut by the fused model's crop,
   run through FaceRes' stem and first 11 blocks (ONNX Runtime): 512 x 14 x 14 at the input of
   block 12, float16 (200 KB a face).
2. Tail: blocks 12-13 (or the last one, --blocks 1) and the dense + gender layers fine-tuned
   from FaceRes' weights on the training faces of fit_fusion_head.splits (same sources, the
   same identity-disjoint validation and per-source / per-cell weights), a one-cycle AdamW
   schedule, a random shift of the activation map by one cell, dropout on the descriptor; the
   epoch kept by the worst validation source. --dro reweights (source, label, group) cells by
   their running loss (group DRO, Sagawa et al. 2020) so the worst cells weigh more.
3. Readers scored on every test set with fit_fusion_head's report: today's head, the tuned
   FaceRes head alone, logistic heads over the tuned descriptor and logit plus the stored
   dlib-model and dlib-classifier logits. Tuned weights: OUT/faceres-tail.safetensors.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from extract_fusion_features import ort_encoder, sets
from fit_fusion_head import (
    HEADS,
    arrays,
    calibrate,
    cell_key,
    columns,
    fit_head,
    fit_weights,
    load_store,
    logits_of,
    report,
    score,
    source_accuracies,
    splits,
)

from facegender.models.faceres import WEIGHTS_FILE, load_faceres
from facegender.models.fusion import feature_slices, fusion_config_fields
from facegender.models.modelfile import ModelConfig, file_sha256
from facegender.training import features
from facegender.training.features import extract_features

CUT = 11  # blocks run frozen before the store; FaceRes has 13
BATCH = 64


class _Trunk(torch.nn.Module):
    def __init__(self, net) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.trunk(x, CUT)


def store_activations(acts: Path, threads: int, celeba_train: int, aaf_train: int
                      ) -> dict[str, np.ndarray]:
    """Stage 1: the trunk's activations of every face of the fusion store's sets, computed or
    read from the store at `acts` (ref -> (512, 14, 14) float16)."""
    encode = ort_encoder(lambda: _Trunk(load_faceres()), acts / "trunk.onnx", threads)
    features.CHUNK = 256
    cfg = ModelConfig(arch="faceres_fusion", **fusion_config_fields())
    wid = f"{file_sha256(WEIGHTS_FILE)[:16]}-cut{CUT}"
    # one call: the store is read once (it is several GB), not once per set
    samples = [s for _, part in sets(celeba_train, 1500, aaf_train=aaf_train, aaf_test=1000)
               for s in part]
    fs = extract_features(samples, encode, cfg, acts, weights_id=wid, encoder="faceres.trunk",
                          views=1, batch_size=32, workers=1, progress=False, what="faces")
    print(f"activations: {int(fs.ok.sum())} of {len(samples)} faces", file=sys.stderr, flush=True)
    return {s.ref: fs.features[i, 0] for i, s in enumerate(samples) if fs.ok[i]}


class Tail(torch.nn.Module):
    """FaceRes from block CUT + 1 on: frozen blocks, then the tuned ones, dense and gender."""

    def __init__(self, tuned_blocks: int) -> None:
        super().__init__()
        net = load_faceres()
        self.frozen = copy.deepcopy(net.blocks[CUT:len(net.blocks) - tuned_blocks]).requires_grad_(False)
        self.tuned = copy.deepcopy(net.blocks[len(net.blocks) - tuned_blocks:])
        self.feats, self.gender = copy.deepcopy(net.feats), copy.deepcopy(net.gender)

    def forward(self, a: torch.Tensor, drop: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(descriptor (n, 1024), gender logit (n,)) of stored activations."""
        d = self.tuned(self.frozen(a)).mean(dim=(2, 3))
        h = torch.relu(self.feats(F.dropout(d, drop, self.training)))
        return d, self.gender(h)[:, 0]

    def read(self, acts: np.ndarray, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
        self.eval()
        with torch.inference_mode():
            out = [self(torch.from_numpy(acts[i:i + batch].astype(np.float32)))
                   for i in range(0, len(acts), batch)]
        return (torch.cat([d for d, _ in out]).numpy(), torch.cat([z for _, z in out]).numpy())


def cells_of(samples) -> np.ndarray:
    """Index of each face's (source, label, group) cell: fit_weights' cells."""
    keys = [cell_key(s, s.groups["source"]) for s in samples]
    index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    return np.array([index[k] for k in keys])


def train_tail(tail: Tail, data: dict, a: argparse.Namespace) -> list[dict]:
    """Stage 2, in place: the epoch with the best worst-source validation accuracy is kept."""
    x, y, w, cell = data["acts"], data["y"], data["w"], data["cell"]
    params = [p for p in tail.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=a.weight_decay)
    steps = max(1, a.epochs * (len(y) // BATCH))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=steps, pct_start=0.15)
    q = np.ones(cell.max() + 1) / (cell.max() + 1)
    rng = np.random.default_rng(a.seed)

    def val_worst() -> float:
        z = tail.read(data["val_acts"])[1]
        return min(source_accuracies(data["val_samples"], data["val_y"], 1 / (1 + np.exp(-z))).values())

    best = (val_worst(), 0, copy.deepcopy(tail.state_dict()))
    history = [{"epoch": 0, "val_worst": best[0]}]
    for epoch in range(1, a.epochs + 1):
        tail.train()
        total = 0.0
        for b in np.array_split(rng.permutation(len(y)), len(y) // BATCH):
            batch = torch.roll(torch.from_numpy(x[b].astype(np.float32)),
                               tuple(int(v) for v in rng.integers(-1, 2, 2)), dims=(2, 3))
            loss = F.binary_cross_entropy_with_logits(tail(batch, a.dropout)[1],
                                                      torch.from_numpy(y[b]).float(), reduction="none")
            wb = w[b]
            if a.dro:  # group DRO: a cell's weight grows with its loss
                for g in np.unique(cell[b]):
                    q[g] *= np.exp(a.dro * float(loss.detach()[torch.from_numpy(cell[b] == g)].mean()))
                q /= q.sum()
                wb = wb * q[cell[b]] * len(q)
            loss = (loss * torch.from_numpy(wb.astype(np.float32))).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(b)
        history.append({"epoch": epoch, "train_loss": total / len(y), "val_worst": val_worst()})
        print(f"tail epoch {epoch}: loss {history[-1]['train_loss']:.4f}, val worst source "
              f"{history[-1]['val_worst']:.4f}", file=sys.stderr, flush=True)
        if history[-1]["val_worst"] >= best[0]:
            best = (history[-1]["val_worst"], epoch, copy.deepcopy(tail.state_dict()))
    tail.load_state_dict(best[2])
    print(f"kept epoch {best[1]} (val worst source {best[0]:.4f})", file=sys.stderr)
    return history


def tuned_store(tail: Tail, f: np.ndarray, acts: np.ndarray) -> np.ndarray:
    """The fusion store's rows (n, 1, d) with FaceRes' descriptor and logit from the tuned tail."""
    sl = feature_slices()
    d, z = tail.read(acts)
    out = f.copy()
    out[:, 0, sl["faceres_descriptor"]] = d
    out[:, 0, sl["faceres_logit"]] = z[:, None]
    return out


def readers(f_tr, y_tr, w_tr, c: float) -> dict[str, tuple]:
    """name -> (kind, head) over tuned features (logits_of's readers)."""
    def head(spec: str, c: float) -> tuple:
        return ("head", fit_head(f_tr, y_tr, w_tr, columns(spec), c))

    return {"tuned FaceRes head": ("faceres", None),
            f"tuned desc+logits (C={c})": head(HEADS["desc+logits"], c),
            "tuned logits + dlib logits (C=1)": head("faceres_logit+accurate_logit+cydral_logit", 1.0)}


def with_acts(samples, store: dict, acts: dict):
    """(fusion features (n, 1, d), y, samples, activations (n, 512, 14, 14)) of faces in both."""
    f, y, kept = arrays([s for s in samples if s.ref in acts], store, 1)
    return f, y, kept, np.stack([acts[s.ref] for s in kept])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--acts", type=Path, required=True, help="activation store (stage 1)")
    ap.add_argument("--cache", type=Path, required=True, help="fusion feature store")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--blocks", type=int, default=2, choices=[1, 2], help="blocks to tune")
    ap.add_argument("--dro", type=float, default=0.0, help="group DRO step (0: off)")
    ap.add_argument("--c", type=float, default=0.003, help="L2 inverse strength, desc head")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--celeba-train", type=int, default=5000, help="stage 1: CelebA train faces")
    ap.add_argument("--aaf-train", type=int, default=4000, help="stage 1: AAF train faces")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    acts = store_activations(a.acts, a.threads, a.celeba_train, a.aaf_train)
    torch.manual_seed(a.seed)  # after stage 1: the same tail however much it had to compute
    store = load_store(a.cache)
    sp = splits(store)
    f_tr, y_tr, s_tr, x_tr = with_acts(sp["train"], store, acts)
    f_va, y_va, s_va, x_va = with_acts(sp["val"], store, acts)
    tests = {k: with_acts(v, store, acts) for k, v in sp.items() if k.startswith("test:")}
    del acts
    w_tr = fit_weights(s_tr, [s.groups["source"] for s in s_tr])
    tail = Tail(a.blocks)
    history = train_tail(tail, {"acts": x_tr, "y": y_tr, "w": w_tr, "cell": cells_of(s_tr),
                                "val_acts": x_va, "val_y": y_va, "val_samples": s_va}, a)
    a.out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in tail.state_dict().items()},
              str(a.out / "faceres-tail.safetensors"), metadata={"history": str(history)})
    tuned = {"train": tuned_store(tail, f_tr, x_tr), "val": tuned_store(tail, f_va, x_va),
             **{k: tuned_store(tail, v[0], v[3]) for k, v in tests.items()}}
    base = {"today's head (desc+logits, C=0.003)":
            ("head", fit_head(f_tr, y_tr, w_tr, columns(HEADS["desc+logits"]), 0.003))}
    results = {}
    for group, feats in ((base, {"val": f_va, **{k: v[0] for k, v in tests.items()}}),
                         (readers(tuned["train"], y_tr, w_tr, a.c), tuned)):
        for name, (kind, head) in group.items():
            t, _ = calibrate(s_va, logits_of(kind, feats["val"], head), y_va)
            results[f"{name} T={t:.2f}"] = {
                k: score(v[1], logits_of(kind, feats[k], head), t, False) for k, v in tests.items()}
            per = source_accuracies(s_va, y_va, 1 / (1 + np.exp(-logits_of(kind, feats["val"], head)[:, 0])))
            print(f"{name}: val worst source {min(per.values()):.4f}", file=sys.stderr)
    report("today's head and readers on the tuned FaceRes", results,
           {k: (v[0], v[1], v[2]) for k, v in tests.items()})


if __name__ == "__main__":
    main()
