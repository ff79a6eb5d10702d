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
# Result keys of the sets every model is scored on, in table order.
SETS = ("fairface", "aaf_test", "kinfacew_test", "fiw_test", "celeba_val")


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


def kin_set(name: str, model: str | Path, data: Path, tta: bool | None) -> dict:
    """kinfacew / fiw test split (never trained or calibrated on): accuracy, per `group`
    (kinfacew: parent / child), female recall, ECE, confident calls, no-face count."""
    r = evaluate(data / name / "labels.csv", model, split="test", detect=True, tta=tta)
    y, p = r.y_male, r.p_male
    group = np.array([s.groups.get("group", "") for s in r.samples])
    return {"n": len(y), "no_face": len(r.no_face), "accuracy": acc(y, p),
            "by_group": {g: acc(y, p, group == g) for g in sorted(set(group)) if g},
            "female_recall": recall_female(y, p), "ece": expected_calibration_error(y, p, bins=10),
            "confident_95": confident(y, p)}


def measure(model: str | Path, data: str | Path, celeba_limit: int | None = None,
            tta: bool | None = None, with_robustness: bool = True) -> dict:
    """The held-out figures of one model: fairface540 (by age, race and race x gender), AAF
    test, kinfacew and fiw test, celeba val under `data` (the folder holding those sets),
    calibration and (unless `with_robustness` is False) re-save robustness. Runs the model as
    its config says unless `tta` forces flip test-time augmentation on or off."""
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
    race = np.array([s.groups.get("race") for s in ff.samples])
    out["fairface"] = {
        "n": len(y), "no_face": len(ff.no_face), "accuracy": acc(y, p),
        "by_age": {g: acc(y, p, age == g) for g in ["0-2", *groups]},
        "by_race": {r: acc(y, p, race == r) for r in sorted(set(race))},
        "by_race_gender": {f"{r} {gn}": acc(y, p, (race == r) & (y == int(gn == "male")))
                           for r in sorted(set(race)) for gn in ("female", "male")},
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

    for name in ("kinfacew", "fiw"):
        out[f"{name}_test"] = kin_set(name, model, data, tta)
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
        "ece_undisputed": expected_calibration_error(y[undisputed], p[undisputed], bins=10),
        "confident_95_undisputed": confident(y[undisputed], p[undisputed]),
        "worst_group_name": worst, "groups": cell_acc,
    }
    out["robustness_fairface"] = robustness(model, data, tta) if with_robustness else None
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def table(results: list[tuple[str, dict]]) -> str:
    rows = [
        ("fairface540 accuracy (detector + crop policy)", lambda r: _pct(r["fairface"]["accuracy"])),
        ("fairface540 worst age group, 3-9 and up", lambda r: _pct(r["fairface"]["worst_age_3_up"])),
        ("fairface540 female recall", lambda r: _pct(r["fairface"]["female_recall"])),
        ("fairface540 female recall, 60+", lambda r: _pct(r["fairface"]["female_recall_60_up"])),
        ("AAF test accuracy (3,185)", lambda r: _pct(r["aaf_test"]["accuracy"])),
        ("AAF test, under 13", lambda r: _pct(r["aaf_test"]["under_13"])),
        ("AAF test, 60+", lambda r: _pct(r["aaf_test"]["60_up"])),
        ("kinfacew test accuracy (558)", lambda r: _pct(r["kinfacew_test"]["accuracy"])),
        ("kinfacew test, children / parents",
         lambda r: " / ".join(_pct(r["kinfacew_test"]["by_group"].get(g)) for g in ("child", "parent"))),
        ("fiw test accuracy (590)", lambda r: _pct(r["fiw_test"]["accuracy"])),
        ("celeba val, undisputed labels", lambda r: _pct(r["celeba_val"]["accuracy_undisputed"])),
        ("celeba val, all labels", lambda r: _pct(r["celeba_val"]["accuracy"])),
        ("celeba val worst group (gender x Young x Lipstick)",
         lambda r: f"{_pct(r['celeba_val']['worst_group'])} ({r['celeba_val']['worst_group_name']})"),
        ("ECE fairface540 / AAF / kinfacew / fiw / celeba undisputed",
         lambda r: " / ".join(f"{r[k]['ece']:.3f}" for k in SETS[:4])
                   + f" / {r['celeba_val']['ece_undisputed']:.3f}"),
        *[(f"accuracy when >= 95% confident, {label} (n)",
           lambda r, k=k: f"{_pct(r[k]['confident_95'][0])} ({r[k]['confident_95'][1]})")
          for k, label in zip(SETS[:4], ("fairface540", "AAF test", "kinfacew test", "fiw test"),
                              strict=True)],
        ("accuracy when >= 95% confident, celeba val undisputed (n)",
         lambda r: f"{_pct(r['celeba_val']['confident_95_undisputed'][0])} "
                   f"({r['celeba_val']['confident_95_undisputed'][1]})"),
        ("same label after JPEG q75 / WebP / halved (fairface540)",
         lambda r: "not run" if r["robustness_fairface"] is None else
         " / ".join(_pct(r["robustness_fairface"][k]) for k in ("jpeg75", "webp", "halved"))),
        ("no face found: fairface540 / AAF test / kinfacew / fiw / celeba val",
         lambda r: " / ".join(str(r[k]["no_face"]) for k in SETS)),
    ]
    head = "| set | " + " | ".join(name for name, _ in results) + " |"
    lines = [head, "|" + " --- |" * (len(results) + 1)]
    lines += [f"| {label} | " + " | ".join(f(r) for _, r in results) + " |" for label, f in rows]
    lines += ["", "fairface540 by age group:", "",
              "| age | " + " | ".join(n for n, _ in results) + " |", "|" + " --- |" * (len(results) + 1)]
    for g in results[0][1]["fairface"]["by_age"]:
        lines.append(f"| {g} | " + " | ".join(_pct(r["fairface"]["by_age"][g]) for _, r in results) + " |")
    for key, title in (("by_race", "race"), ("by_race_gender", "race x gender (recall)")):
        lines += ["", f"fairface540 by {title}:", "",
                  f"| {title} | " + " | ".join(n for n, _ in results) + " |",
                  "|" + " --- |" * (len(results) + 1)]
        for g in results[0][1]["fairface"][key]:
            lines.append(f"| {g} | " + " | ".join(_pct(r["fairface"][key][g]) for _, r in results)
                         + " |")
    return "\n".join(lines)
