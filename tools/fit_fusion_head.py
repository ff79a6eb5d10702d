"""Fit the fused accurate candidate's head on the feature store (tools/extract_fusion_features.py)
and score it, today's accurate and FaceRes' own head side by side on every stored set.

    python tools/fit_fusion_head.py --cache runs/fusion-store [--out runs/fusion-model]

Training: celeba-gender train (undisputed subset), AAF train, kinfacew train and fiw train;
validation (choice of C, temperature, unsure band): celeba-gender val (subset) and an
identity-disjoint 15% of kinfacew and fiw train (io/sources.stratified_split), every source
weighted alike; AAF train is all training (the shipped accurate model, whose features the head
reads, trained on it, so its faces would flatter it on validation). Each source gets the same
total weight in the fit, and inside a source each (label, group) cell the same share (group:
kinfacew parent/child, AAF age group, CelebA Young). Test sets (never fitted on): fairface540,
AAF test, kinfacew test, fiw test.
With --out, writes a faceres_fusion model folder (weights, config, card inputs) for
tools/make_fusion_model.py to export and document.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from extract_fusion_features import sets  # noqa: E402

from facegender.io.sources import Sample, stratified_split
from facegender.models.fusion import feature_slices
from facegender.report.metrics import expected_calibration_error

GROUP_KEY = {"kinfacew": "group", "aaf": "age_group", "celeba": "Young", "fiw": None}


def load_store(cache: Path) -> dict[str, np.ndarray]:
    """ref -> (views, features) float32, from every part of the (single) store under cache."""
    roots = [p for p in cache.iterdir() if p.is_dir()]
    if len(roots) != 1:
        raise SystemExit(f"{cache}: expected one feature store, found {roots}")
    known = {}
    for part in sorted(roots[0].glob("part-*.npz")):
        with np.load(part) as z:
            refs = json.loads(str(z["refs"]))
            feats, ok = z["features"], z["ok"]
        for i, ref in enumerate(refs):
            if ok[i]:
                known[ref] = feats[i].astype(np.float32)
    return known


def source_of(name: str) -> str:
    return name.split("-")[0]


def arrays(samples: list[Sample], store: dict, views: int = 1):
    """(features (n, views, d), y_male (n,), kept samples) of the faces the store has."""
    kept = [s for s in samples if s.ref in store]
    if not kept:
        return np.zeros((0, views, 1)), np.zeros(0, int), []
    f = np.stack([np.repeat(store[s.ref], views, axis=0)[:views] if len(store[s.ref]) < views
                  else store[s.ref][:views] for s in kept])
    return f, np.array([s.label == "male" for s in kept], int), kept


def cell_key(sample: Sample, src: str) -> tuple:
    """(source, label, group): the cell a face is balanced in."""
    return src, sample.label, sample.groups.get(GROUP_KEY[src]) if GROUP_KEY[src] else None


def fit_weights(samples: list[Sample], source: list[str], scale: dict[str, float] | None = None
                ) -> np.ndarray:
    """Every source the same total (times `scale`); inside a source every (label, group) cell
    the same share."""
    cells = [cell_key(s, src) for s, src in zip(samples, source, strict=True)]
    n_cell = Counter(cells)
    n_cells_in = Counter(c[0] for c in n_cell)
    scale = scale or {}
    return np.array([scale.get(c[0], 1.0) / (n_cell[c] * n_cells_in[c[0]]) for c in cells]
                    ) * len(samples) / len(n_cells_in)


def splits(store: dict, seed: int = 0, val_sources: tuple[str, ...] = ("celeba", "kinfacew", "fiw")
           ) -> dict[str, list[Sample]]:
    """train / val / test lists of samples (each with groups['source']). A source outside
    `val_sources` gives all its train faces to training: AAF's train split trained the shipped
    accurate model whose features and logit the head reads, so its faces would flatter that
    model on validation."""
    out: dict[str, list[Sample]] = defaultdict(list)
    for name, samples in sets(10**9, 10**9, seed):
        src = source_of(name)
        for s in samples:
            s.groups["source"] = src
        if name == "fairface540":
            out["test:fairface540"] += samples
        elif name == "celeba-val":
            out["val"] += samples
        elif name == "celeba-train":
            out["train"] += [s for s in samples if s.ref in store]
        else:
            train = [s for s in samples if s.split == "train"]
            keep, held = stratified_split(train, 0.15, seed) if src in val_sources else (train, [])
            out["train"] += keep
            out["val"] += held
            out[f"test:{src}"] += [s for s in samples if s.split == "test"]
    return out


def logits_of(kind: str, f: np.ndarray, head=None) -> np.ndarray:
    """(n, views) male logits of one reader."""
    sl = feature_slices()
    if kind == "accurate":
        return f[..., sl["accurate_logit"]][..., 0]
    if kind == "faceres":
        return f[..., sl["faceres_logit"]][..., 0]
    if kind == "cydral":
        return f[..., sl["cydral_logit"]][..., 0]
    w, b, cols = head
    return f[..., cols] @ w + b


def columns(spec: str) -> tuple[np.ndarray, np.ndarray]:
    """Feature indices of "block+block*factor+...", and each column's factor: a block scaled by
    f < 1 after standardisation carries an L2 penalty 1 / f^2 times the others'."""
    sl = feature_slices()
    idx, scale = [], []
    for item in spec.split("+"):
        name, _, factor = item.partition("*")
        s = sl[name]
        idx += list(range(s.start, s.stop))
        scale += [float(factor or 1.0)] * (s.stop - s.start)
    return np.array(idx), np.array(scale)


def fit_head(f: np.ndarray, y: np.ndarray, w: np.ndarray, spec: tuple, c: float):
    """Logistic regression on standardised (and block-scaled) features of every stored view,
    folded back to raw features: (weights (d,), bias, cols)."""
    from sklearn.linear_model import LogisticRegression

    cols, factor = spec
    x = f[:, :, cols].reshape(-1, len(cols))
    yy = np.repeat(y, f.shape[1])
    ww = np.repeat(w, f.shape[1])
    mu, sd = x.mean(0), (x.std(0) + 1e-6) / factor
    lr = LogisticRegression(C=c, max_iter=3000)
    lr.fit((x - mu) / sd, yy, sample_weight=ww)
    coef = lr.coef_[0] / sd
    return coef, float(lr.intercept_[0] - (lr.coef_[0] * mu / sd).sum()), cols


def score(y: np.ndarray, z: np.ndarray, t: float, tta: bool) -> dict:
    p = 1 / (1 + np.exp(-z / t))
    p = p.mean(1) if tta else p[:, 0]
    pred = p >= 0.5
    conf = np.abs(p - 0.5) >= 0.45
    return {"n": len(y), "accuracy": float((pred == y).mean()),
            "female_recall": float((~pred[y == 0]).mean()) if (y == 0).any() else None,
            "ece": expected_calibration_error(y, p, bins=10),
            "confident_95": float((pred[conf] == y[conf]).mean()) if conf.any() else None,
            "confident_share": float(conf.mean()), "p": p}


def by_group(samples: list[Sample], y: np.ndarray, p: np.ndarray, key: str) -> dict[str, tuple]:
    groups = defaultdict(list)
    for i, s in enumerate(samples):
        groups[str(s.groups.get(key))].append(i)
    return {g: (float(((p[v] >= 0.5) == y[v]).mean()), len(v)) for g, v in sorted(groups.items())}


HEADS = {
    "faceres_desc": "faceres_descriptor",
    "desc+logits": "faceres_descriptor+faceres_logit+accurate_logit+cydral_logit",
    "all": "faceres_descriptor+faceres_logit+dlib_features+accurate_logit+cydral_logit",
    "all-dlib/3": "faceres_descriptor+faceres_logit+dlib_features*0.33+accurate_logit+cydral_logit",
}


def source_accuracies(samples: list[Sample], y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    src = np.array([s.groups["source"] for s in samples])
    return {k: float(((p[src == k] >= 0.5) == y[src == k]).mean()) for k in sorted(set(src))}


def unseen_source_accuracies(f_tr, y_tr, w_tr, s_tr, f_va, y_va, s_va, cols, c: float
                             ) -> dict[str, float]:
    """Each val source's accuracy (first view) from a head fitted without that source's
    training faces: a stand-in for faces of a kind no source holds."""
    src_tr = np.array([s.groups["source"] for s in s_tr])
    src_va = np.array([s.groups["source"] for s in s_va])
    out = {}
    for k in sorted(set(src_va)):
        keep = src_tr != k
        head = fit_head(f_tr[keep], y_tr[keep], w_tr[keep], cols, c)
        z = logits_of("head", f_va[src_va == k], head)[:, 0]
        out[k] = float(((z >= 0) == (y_va[src_va == k] == 1)).mean())
    return out


def calibrate(samples: list[Sample], z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from facegender.training.calibrate import fit_calibration

    src = [s.groups["source"] for s in samples]
    n = Counter(src)
    w = np.array([1.0 / n[k] for k in src])
    logits = np.stack([-z / 2, z / 2], axis=-1)
    return fit_calibration(logits, y, w, male=1)


def report(name: str, results: dict[str, dict], tests: dict) -> None:
    print(f"\n## {name}")
    cols = list(results)
    print("| set | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for t in tests:
        cells = []
        for c in cols:
            r = results[c][t]
            cells.append(f"{r['accuracy']:.1%} (ECE {r['ece']:.3f}, c95 "
                         f"{'n/a' if r['confident_95'] is None else format(r['confident_95'], '.1%')})")
        print(f"| {t} | " + " | ".join(cells) + " |")
    ff = tests["test:fairface540"]
    for key in ("race", "age_group"):
        print(f"\nfairface540 by {key}: | group | n | " + " | ".join(cols) + " |")
        for g, (_, n) in by_group(ff[2], ff[1], results[cols[0]]["test:fairface540"]["p"], key).items():
            accs = [by_group(ff[2], ff[1], results[c]["test:fairface540"]["p"], key)[g][0] for c in cols]
            print(f"| {g} | {n} | " + " | ".join(f"{a:.1%}" for a in accs) + " |")
    print("\nfairface540 female recall by race: | race | " + " | ".join(cols) + " |")
    fem = [s for s, yy in zip(ff[2], ff[1], strict=True) if yy == 0]
    idx = np.array([i for i, yy in enumerate(ff[1]) if yy == 0])
    for g in sorted({s.groups["race"] for s in fem}):
        accs = []
        for c in cols:
            p = results[c]["test:fairface540"]["p"][idx]
            sel = np.array([s.groups["race"] == g for s in fem])
            accs.append(float((p[sel] < 0.5).mean()))
        print(f"| {g} | " + " | ".join(f"{a:.1%}" for a in accs) + " |")
    if "test:kinfacew" not in tests:
        return
    kin = tests["test:kinfacew"]
    print("\nkinfacew test by group: " + "; ".join(
        f"{c}: " + ", ".join(f"{g} {a:.1%} ({n})" for g, (a, n) in
                             by_group(kin[2], kin[1], results[c]["test:kinfacew"]["p"], "group").items())
        for c in cols))


def stability(readers: dict[str, tuple], tests: dict[str, np.ndarray]) -> None:
    """Share of faces whose label on the stored degraded copy (view 3: smaller, re-compressed,
    sometimes gray) is the label of the clean face, per reader and test set."""
    tests = {k: f for k, f in tests.items() if f.shape[1] >= 3 and np.abs(f[:, 2]).sum() > 0}
    if not tests:
        return
    print("\nsame label on the degraded copy: | reader | " + " | ".join(tests) + " |")
    for name, (kind, head) in readers.items():
        z = {k: logits_of(kind, f, head) for k, f in tests.items()}
        print(f"| {name} | " + " | ".join(f"{((v[:, 0] >= 0) == (v[:, 2] >= 0)).mean():.1%}"
                                         for v in z.values()) + " |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path("runs/fusion-store"))
    ap.add_argument("--c", type=float, nargs="*", default=[0.003, 0.01, 0.03, 0.1])
    ap.add_argument("--heads", nargs="*", default=list(HEADS))
    ap.add_argument("--out", type=Path, help="write the chosen head (json) here")
    ap.add_argument("--choose", default="all", help="head whose fit --out writes")
    ap.add_argument("--tta", action="store_true", help="also score face + mirror image averaged "
                    "(where the store holds mirror images: its first faces of fairface540 and "
                    "kinfacew)")
    ap.add_argument("--source-weight", nargs="*", default=[], metavar="SOURCE=W",
                    help="scale a source's total weight in the fit (default 1 each)")
    ap.add_argument("--val-sources", nargs="*", default=["celeba", "kinfacew", "fiw"])
    ap.add_argument("--select", choices=["worst", "mean", "unseen"], default="worst",
                    help="C by the worst source's val accuracy (default), their mean, or "
                    "'unseen': the worst val accuracy of each val source when the head is fitted "
                    "without that source's faces (how it reads a source it never saw)")
    ap.add_argument("--train-views", type=int, default=1, help="stored views of each training "
                    "and validation face the fit and the choice of C use: 1 the face, 2 and its "
                    "mirror image, 3 and a degraded copy (smaller, re-compressed; a store "
                    "extracted with --views 3)")
    a = ap.parse_args(argv)
    store = load_store(a.cache)
    sp = splits(store, val_sources=tuple(a.val_sources))
    f_tr, y_tr, s_tr = arrays(sp["train"], store, a.train_views)
    f_va, y_va, s_va = arrays(sp["val"], store, a.train_views)
    tests = {k: arrays(v, store) for k, v in sp.items() if k.startswith("test:")}
    tests = {k: (f, y, s) for k, (f, y, s) in tests.items() if len(y)}
    tests_tta = {k: arrays(sp[k], store, 2) for k in tests} if a.tta else tests
    print("train", dict(Counter(s.groups["source"] for s in s_tr)), "val",
          dict(Counter(s.groups["source"] for s in s_va)),
          "test", {k: len(v[1]) for k, v in tests.items()}, file=sys.stderr)
    scale = {k: float(v) for k, v in (x.split("=") for x in a.source_weight)}
    w_tr = fit_weights(s_tr, [s.groups["source"] for s in s_tr], scale)
    readers: dict[str, tuple] = {"accurate (today)": ("accurate", None),
                                 "faceres head": ("faceres", None)}
    for h in a.heads:
        cols = columns(HEADS[h])
        best = None
        for c in a.c:
            head = fit_head(f_tr, y_tr, w_tr, cols, c)
            if a.select == "unseen":
                per = unseen_source_accuracies(f_tr, y_tr, w_tr, s_tr, f_va, y_va, s_va, cols, c)
            else:
                z = logits_of("head", f_va, head)
                per = source_accuracies(s_va * z.shape[1], np.tile(y_va, z.shape[1]),
                                        1 / (1 + np.exp(-z.T.ravel())))
            val = float(np.mean(list(per.values()))) if a.select == "mean" else min(per.values())
            print(f"head {h} C={c}: val {a.select} source {val:.4f} "
                  + " ".join(f"{k} {v:.3f}" for k, v in per.items()), file=sys.stderr)
            if best is None or val > best[0]:
                best = (val, c, head)
        readers[f"head {h} (C={best[1]})"] = ("head", best[2])
    results: dict[str, dict] = {}
    for tta in (False, True) if a.tta else (False,):  # --tta: sets stored with mirror images
        for name, (kind, head) in readers.items():
            t, band = calibrate(s_va, logits_of(kind, f_va, head), y_va)
            key = f"{name}{' +TTA' if tta else ''} T={t:.2f}"
            results[key] = {k: score(y, logits_of(kind, f, head), t, tta)
                            for k, (f, y, _) in tests_tta.items()}
            results[key]["val"] = score(y_va, logits_of(kind, f_va, head), t, False)
            results[key]["_cal"] = (t, band, head)
    tests_v = {**tests, "val": (f_va[:, :1], y_va, s_va)}
    report("all readers", {k: v for k, v in results.items()}, tests_v)
    stability(readers, {k: arrays(sp[k], store, 3)[0] for k in tests})
    if a.out:
        key = next(k for k in results if k.startswith(f"head {a.choose} (") and "+TTA" not in k)
        t, band, (w, b, cols) = results[key]["_cal"]
        full = np.zeros(sum(1 for _ in range(max(feature_slices().values(), key=lambda s: s.stop).stop)))
        full[cols] = w
        a.out.parent.mkdir(parents=True, exist_ok=True)
        v = results[key]["val"]
        val_metrics = {"accuracy": v["accuracy"], "ece_after_calibration": v["ece"],
                       "per_class": {"female": {"recall": v["female_recall"]}}}
        a.out.write_text(json.dumps({"weights": full.tolist(), "bias": b, "temperature": t,
                                     "val_metrics": val_metrics,
                                     "unsure_band": band, "reader": key,
                                     "train": dict(Counter(s.groups["source"] for s in s_tr)),
                                     "val": dict(Counter(s.groups["source"] for s in s_va))}))
        print(f"wrote {a.out} ({key})", file=sys.stderr)


if __name__ == "__main__":
    main()
