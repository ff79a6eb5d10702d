"""Held-out accuracy of a model, as the model cards and docs/models.md report it: fairface540
(540 loose photos, detector + the model's crop policy), All-Age-Faces test (3,185, the dataset's
own split, never trained or calibrated on) and celeba val (11,649 tight crops; a model whose
crop policy aligns on landmarks detects them, the others read the crops as they are), with the
undisputed labels (attributes.csv `disputed` = 0) for accuracy and the worst gender x Young x
Wearing_Lipstick group (groups under MIN_GROUP faces not counted). Robustness: fairface540
re-saved as JPEG q75, as WebP (q80) and halved in size; the share of faces given the same label
as the original. Used by benchmarks/accuracy.py and tools/make_shipped_model.py.
"""

from __future__ import annotations

import io
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from ..infer.predictor import Predictor
from ..io.sources import read_source
from ..models import modelfile
from .evaluate import evaluate
from .metrics import expected_calibration_error

MIN_GROUP = 30


def confident(y: np.ndarray, p: np.ndarray, level: float = 0.95) -> tuple[float | None, int]:
    sure = np.maximum(p, 1 - p) >= level
    return (float(((p[sure] >= 0.5) == (y[sure] == 1)).mean()) if sure.any() else None,
            int(sure.sum()))


def acc(y: np.ndarray, p: np.ndarray, mask: np.ndarray | None = None) -> float | None:
    if mask is not None:
        y, p = y[mask], p[mask]
    return float(((p >= 0.5) == (y == 1)).mean()) if len(y) else None


def recall_female(y, p, mask=None) -> float | None:
    m = y == 0 if mask is None else mask & (y == 0)
    return float((p[m] < 0.5).mean()) if m.any() else None


def resaved(data: bytes) -> dict[str, bytes]:
    img = Image.open(io.BytesIO(data)).convert("RGB")
    out = {}
    for name, kw in (("jpeg75", {"format": "JPEG", "quality": 75}),
                     ("webp", {"format": "WEBP", "quality": 80})):
        buf = io.BytesIO()
        img.save(buf, **kw)
        out[name] = buf.getvalue()
    buf = io.BytesIO()
    img.resize((img.width // 2, img.height // 2), Image.Resampling.BILINEAR).save(
        buf, "JPEG", quality=95)
    out["halved"] = buf.getvalue()
    return out


def robustness(model: str | Path, data: Path, tta: bool | None = None) -> dict[str, float]:
    """Share of fairface540 faces whose label survives each re-save (largest face each)."""
    pred = Predictor(model, largest=True, tta=tta)
    samples = read_source(data / "fairface540" / "labels.csv").samples
    base = {r.path: (r.faces[0].prob_male >= 0.5) for r in pred.predict(samples) if r.faces}
    same = defaultdict(list)
    for s in samples:
        if s.ref not in base:
            continue
        variants = resaved(s.read_bytes())
        for name, res in zip(variants, pred.predict(list(variants.values())), strict=True):
            same[name].append(bool(res.faces) and (res.faces[0].prob_male >= 0.5) == base[s.ref])
    return {k: float(np.mean(v)) for k, v in same.items()}


def measure(model: str | Path, data: str | Path, celeba_limit: int | None = None,
            tta: bool | None = None) -> dict:
    """The held-out figures of one model: fairface540, AAF test and celeba val under `data`
    (the folder holding those sets), calibration and re-save robustness. Runs the model as its
    config says unless `tta` forces flip test-time augmentation on or off."""
    data = Path(data)
    cfg = modelfile.load_config(model)
    aligned = bool(cfg.crop.get("template"))
    out: dict = {"model": str(model), "arch": cfg.arch}
    t0 = time.perf_counter()

    ff = evaluate(data / "fairface540" / "labels.csv", model, detect=True, tta=tta)
    out["tta"] = ff.metrics["tta"]  # as the Predictor resolved it (the config's, unless forced)
    y, p = ff.y_male, ff.p_male
    age = np.array([s.groups.get("age_group") for s in ff.samples])
    groups = sorted({a for a in age if a != "0-2"}, key=lambda g: int(g.split("-")[0].rstrip("+")))
    old = np.isin(age, ["60-69", "70+"])
    out["fairface"] = {
        "n": len(y), "no_face": len(ff.no_face), "accuracy": acc(y, p),
        "by_age": {g: acc(y, p, age == g) for g in ["0-2", *groups]},
        "worst_age_3_up": min(acc(y, p, age == g) for g in groups),
        "female_recall": recall_female(y, p), "female_recall_60_up": recall_female(y, p, old),
        "ece": expected_calibration_error(y, p, bins=10), "confident_95": confident(y, p),
    }

    aaf = evaluate(data / "aaf" / "labels.csv", model, split="test", detect=True, tta=tta)
    y, p = aaf.y_male, aaf.p_male
    years = np.array([int(s.groups.get("age", -1)) for s in aaf.samples])
    out["aaf_test"] = {
        "n": len(y), "no_face": len(aaf.no_face), "accuracy": acc(y, p),
        "under_13": acc(y, p, years < 13), "60_up": acc(y, p, years >= 60),
        "female_recall": recall_female(y, p), "ece": expected_calibration_error(y, p, bins=10),
        "confident_95": confident(y, p),
    }

    cel = evaluate(data / "celeba-gender" / "attributes.csv", model, split="val", detect=aligned,
                   limit=celeba_limit, tta=tta)
    y, p = cel.y_male, cel.p_male
    g = [s.groups for s in cel.samples]
    undisputed = np.array([x.get("disputed") == "0" for x in g])
    cells = defaultdict(list)
    for i, x in enumerate(g):
        if undisputed[i]:
            cells[("male" if y[i] else "female", x.get("Young"), x.get("Wearing_Lipstick"))].append(i)
    cell_acc = {f"{k[0]} Young={k[1]} Lipstick={k[2]}": (acc(y[v], p[v]), len(v))
                for k, v in cells.items()}
    counted = {k: a for k, (a, n) in cell_acc.items() if n >= MIN_GROUP}
    worst = min(counted, key=counted.get)
    out["celeba_val"] = {
        "n": len(y), "no_face": len(cel.no_face), "detect": aligned, "accuracy": acc(y, p),
        "accuracy_undisputed": acc(y, p, undisputed), "worst_group": counted[worst],
        "worst_group_name": worst, "groups": cell_acc,
    }
    out["robustness_fairface"] = robustness(model, data, tta)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def table(results: list[tuple[str, dict]]) -> str:
    """Markdown: one column per (name, figures) of `measure`, then fairface540 by age group."""
    rows = [
        ("fairface540 accuracy (detector + crop policy)", lambda r: _pct(r["fairface"]["accuracy"])),
        ("fairface540 worst age group, 3-9 and up", lambda r: _pct(r["fairface"]["worst_age_3_up"])),
        ("fairface540 female recall", lambda r: _pct(r["fairface"]["female_recall"])),
        ("fairface540 female recall, 60+", lambda r: _pct(r["fairface"]["female_recall_60_up"])),
        ("AAF test accuracy (3,185)", lambda r: _pct(r["aaf_test"]["accuracy"])),
        ("AAF test, under 13", lambda r: _pct(r["aaf_test"]["under_13"])),
        ("AAF test, 60+", lambda r: _pct(r["aaf_test"]["60_up"])),
        ("celeba val, undisputed labels", lambda r: _pct(r["celeba_val"]["accuracy_undisputed"])),
        ("celeba val, all labels", lambda r: _pct(r["celeba_val"]["accuracy"])),
        ("celeba val worst group (gender x Young x Lipstick)",
         lambda r: f"{_pct(r['celeba_val']['worst_group'])} ({r['celeba_val']['worst_group_name']})"),
        ("ECE fairface540 / AAF test",
         lambda r: f"{r['fairface']['ece']:.3f} / {r['aaf_test']['ece']:.3f}"),
        ("accuracy when >= 95% confident, fairface540 (n)",
         lambda r: f"{_pct(r['fairface']['confident_95'][0])} ({r['fairface']['confident_95'][1]})"),
        ("accuracy when >= 95% confident, AAF test (n)",
         lambda r: f"{_pct(r['aaf_test']['confident_95'][0])} ({r['aaf_test']['confident_95'][1]})"),
        ("same label after JPEG q75 / WebP / halved (fairface540)",
         lambda r: " / ".join(_pct(r["robustness_fairface"][k]) for k in ("jpeg75", "webp", "halved"))),
        ("no face found: fairface540 / AAF test / celeba val",
         lambda r: f"{r['fairface']['no_face']} / {r['aaf_test']['no_face']} / "
                   f"{r['celeba_val']['no_face']}"),
    ]
    head = "| set | " + " | ".join(name for name, _ in results) + " |"
    lines = [head, "|" + " --- |" * (len(results) + 1)]
    lines += [f"| {label} | " + " | ".join(f(r) for _, r in results) + " |" for label, f in rows]
    lines += ["", "fairface540 by age group:", "",
              "| age | " + " | ".join(n for n, _ in results) + " |", "|" + " --- |" * (len(results) + 1)]
    for g in results[0][1]["fairface"]["by_age"]:
        lines.append(f"| {g} | " + " | ".join(_pct(r["fairface"]["by_age"][g]) for _, r in results) + " |")
    return "\n".join(lines)
