"""Evaluate a model folder on labelled faces: metrics, per-group table, JSON/Markdown/plots.

Predictions come from the same Predictor users call, so an evaluation measures exactly what
`facegender predict` would say (crop policy, calibration and threshold included)."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .data import read_source, stratified_limit
from .errors import DataError
from .metrics import compute_metrics
from .predict import Predictor


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    groups: dict[str, list[dict[str, Any]]]
    refs: list[str]
    y_male: np.ndarray
    p_male: np.ndarray
    errors: list[tuple[str, str]] = field(default_factory=list)
    no_face: list[str] = field(default_factory=list)
    out: Path | None = None

    def summary(self) -> str:
        m = self.metrics
        s = (f"{m['n']} faces: accuracy {m['accuracy']:.2%}")
        if m.get("balanced_accuracy") is not None:
            s += f", balanced {m['balanced_accuracy']:.2%}, ROC-AUC {m['roc_auc']:.4f}"
        if self.errors or self.no_face:
            s += f"; {len(self.errors)} unreadable, {len(self.no_face)} without a detected face"
        return s


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for k successes out of n."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def group_table(groups: list[dict], y: np.ndarray, p: np.ndarray, threshold: float,
                min_n: int = 30) -> dict[str, list[dict[str, Any]]]:
    """Per attribute and value: n, accuracy with 95% interval, per-class recall."""
    pred = (p >= threshold).astype(int)
    out: dict[str, list[dict[str, Any]]] = {}
    keys = sorted({k for g in groups for k in g})
    for key in keys:
        idx: dict[str, list[int]] = defaultdict(list)
        for i, g in enumerate(groups):
            if key in g:
                idx[str(g[key])].append(i)
        rows = []
        for value in sorted(idx, key=_natural):
            ii = np.array(idx[value])
            correct = int((pred[ii] == y[ii]).sum())
            lo, hi = wilson(correct, len(ii))
            row = {"group": value, "n": len(ii), "accuracy": correct / len(ii),
                   "ci95": [lo, hi], "too_small": len(ii) < min_n}
            for cls, name in ((0, "female"), (1, "male")):
                m = y[ii] == cls
                row[f"{name}_recall"] = float((pred[ii][m] == cls).mean()) if m.any() else None
                row[f"{name}_n"] = int(m.sum())
            rows.append(row)
        out[key] = rows
    return out


def _natural(v: str):
    import re

    m = re.match(r"(\d+)", v)
    return (0, int(m.group(1)), v) if m else (1, 0, v)


def evaluate(
    data: Any,
    model: str | Path | None = None,
    *,
    split: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    backend: str = "auto",
    detect: bool | None = None,
    tta: bool = False,
    batch_size: int = 64,
    threads: int | None = None,
    predictor: Predictor | None = None,
) -> EvalResult:
    """Evaluate `model` (default: the shipped model) on labelled `data`.

    `split` picks a split of the source (default: test, else val, else everything); `limit`
    takes a stratified seeded subset. With `out`, writes metrics.json, report.md,
    predictions.csv, confusion.png and roc.png there.
    """
    pred = predictor or Predictor(model, backend=backend, detect=detect, tta=tta,
                                  threads=threads, largest=True)
    source = read_source(data, labelled=True)
    splits = source.splits()
    chosen = split or next((s for s in ("test", "val") if s in splits), None)
    samples = [s for s in source.samples if chosen is None or s.split == chosen]
    if not samples:
        raise DataError(f"{data}: no images in split '{chosen}' (splits: {splits or 'none'})")
    samples = stratified_limit(samples, limit, seed)

    refs, y, p, groups, errors, no_face = [], [], [], [], [], []
    errors += [(sk.ref, sk.reason) for sk in source.skipped]
    for res in pred.iter_predict(samples, batch_size=batch_size):
        s = res.sample
        if res.error:
            errors.append((res.path, res.error))
            continue
        if not res.faces:
            no_face.append(res.path)
            continue
        face = max(res.faces, key=lambda f: (f.box[2] * f.box[3]) if f.box else 0)
        refs.append(res.path)
        y.append(1 if s.label == "male" else 0)
        p.append(face.prob_male)
        groups.append(s.groups)
    if not refs:
        raise DataError(f"{data}: no image could be evaluated ({len(errors)} unreadable, "
                        f"{len(no_face)} without a face)")
    y_arr, p_arr = np.array(y), np.array(p)
    metrics = compute_metrics(y_arr, p_arr, pred.config.threshold)
    metrics.update({
        "model": str(pred.model_dir), "data": str(data), "split": chosen,
        "backend": pred.backend.name, "detect": pred.detect, "tta": pred.tta,
        "unreadable": len(errors), "no_face": len(no_face),
        "accuracy_counting_misses": (metrics["accuracy"] * len(refs)) / (len(refs) + len(no_face)),
    })
    result = EvalResult(metrics, group_table(groups, y_arr, p_arr, pred.config.threshold),
                        refs, y_arr, p_arr, errors, no_face)
    if out is not None:
        result.out = write_report(result, Path(out), pred.config.labels)
    return result


def write_report(result: EvalResult, out: Path, labels: list[str]) -> Path:
    from .plots import plot_confusion, plot_roc

    out.mkdir(parents=True, exist_ok=True)
    m = result.metrics
    (out / "metrics.json").write_text(json.dumps({**m, "groups": result.groups}, indent=2) + "\n")
    with open(out / "predictions.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "true", "prob_male", "predicted", "correct"])
        for ref, yy, pp in zip(result.refs, result.y_male, result.p_male, strict=True):
            predicted = "male" if pp >= m["threshold"] else "female"
            w.writerow([ref, "male" if yy else "female", f"{pp:.6f}", predicted,
                        int(predicted == ("male" if yy else "female"))])
        for ref, reason in result.errors:
            w.writerow([ref, "", "", f"error: {reason}", ""])
        for ref in result.no_face:
            w.writerow([ref, "", "", "no_face", ""])
    cm = m["confusion_matrix"]["rows_true_cols_pred"]
    plot_confusion(cm, m["confusion_matrix"]["labels"], out / "confusion.png")
    if m.get("roc_auc") is not None:
        plot_roc(result.y_male, result.p_male, out / "roc.png")
    (out / "report.md").write_text(markdown_report(result))
    return out


def markdown_report(result: EvalResult) -> str:
    m = result.metrics
    pc = m["per_class"]

    def f(x):
        return "n/a" if x is None else f"{x:.4f}"

    lines = [
        "# Evaluation report", "",
        f"- model: `{m['model']}` (backend {m['backend']}, detect={m['detect']}, tta={m['tta']})",
        f"- data: `{m['data']}` split {m['split']}: {m['n']} faces evaluated, "
        f"{m['unreadable']} unreadable, {m['no_face']} without a detected face", "",
        "| metric | value |", "| --- | --- |",
        f"| accuracy | {f(m['accuracy'])} |",
        f"| balanced accuracy | {f(m['balanced_accuracy'])} |",
        f"| ROC-AUC | {f(m['roc_auc'])} |",
        f"| log loss | {f(m['log_loss'])} |",
        f"| expected calibration error | {f(m['ece'])} |", "",
        "| class | precision | recall | F1 | support |", "| --- | --- | --- | --- | --- |",
        *[f"| {c} | {f(v['precision'])} | {f(v['recall'])} | {f(v['f1'])} | {v['support']} |"
          for c, v in pc.items()], "",
        "![confusion matrix](confusion.png)", "",
    ]
    if m.get("roc_auc") is not None:
        lines += ["![ROC curve](roc.png)", ""]
    for key, rows in result.groups.items():
        lines += [f"## By {key}", "",
                  "| group | n | accuracy | 95% CI | female recall | male recall |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in rows:
            lo, hi = r["ci95"]
            flag = " (small)" if r["too_small"] else ""
            lines.append(f"| {r['group']}{flag} | {r['n']} | {r['accuracy']:.3f} | "
                         f"{lo:.3f}–{hi:.3f} | {f(r['female_recall'])} | {f(r['male_recall'])} |")
        lines.append("")
    lines += ["## Classification report", "", "```", m["classification_report"], "```", ""]
    return "\n".join(lines)
