"""Evaluate a model folder on labelled faces: metrics, per-group table, JSON/Markdown/plots.

Predictions come from the same Predictor users call, so an evaluation measures exactly what
`facegender predict` would say (crop policy, calibration and threshold included)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, FaceGenderError, MissingDependency
from ..infer.predictor import Predictor
from ..io.sources import read_source, stratified_limit
from ..io.targets import folder_target
from . import plots
from .metrics import compute_metrics
from .results import EvalResult, write_report

log = logging.getLogger(__name__)


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
    """Per attribute and value: n, accuracy and per-class recall, each with a 95% Wilson
    interval. Uses fairlearn's MetricFrame when it is installed (same numbers either way)."""
    pred = (np.asarray(p) >= threshold).astype(int)
    y = np.asarray(y, dtype=int)
    out: dict[str, list[dict[str, Any]]] = {}
    keys = sorted({k for g in groups for k in g})
    for key in keys:
        idx = np.array([i for i, g in enumerate(groups) if key in g], dtype=int)
        values = [str(groups[i][key]) for i in idx]
        counts = _group_counts(y[idx], pred[idx], values)
        rows = []
        for value in sorted(counts, key=_natural):
            c = counts[value]
            n = c["n"]
            row: dict[str, Any] = {"group": value, "n": n, "accuracy": c["correct"] / n,
                                   "ci95": list(wilson(c["correct"], n)), "too_small": n < min_n}
            for name in ("female", "male"):
                k, m = c[f"{name}_hit"], c[f"{name}_n"]
                row[f"{name}_recall"] = k / m if m else None
                row[f"{name}_recall_ci95"] = list(wilson(k, m)) if m else None
                row[f"{name}_n"] = m
            rows.append(row)
        out[key] = rows
    return out


def _group_counts(y: np.ndarray, pred: np.ndarray, values: list[str]) -> dict[str, dict[str, int]]:
    """Counts per group (n, correct, per-class n and hits): the Wilson intervals need counts,
    not rates. fairlearn's MetricFrame when available, else plain numpy."""
    try:
        from fairlearn.metrics import MetricFrame
    except ImportError:
        MetricFrame = None  # noqa: N806
    metrics = {
        "n": lambda t, _: len(t),
        "correct": lambda t, q: int((t == q).sum()),
        "female_n": lambda t, _: int((t == 0).sum()),
        "female_hit": lambda t, q: int(((t == 0) & (q == 0)).sum()),
        "male_n": lambda t, _: int((t == 1).sum()),
        "male_hit": lambda t, q: int(((t == 1) & (q == 1)).sum()),
    }
    if MetricFrame is not None and len(values):
        mf = MetricFrame(metrics=metrics, y_true=y, y_pred=pred,
                         sensitive_features=np.asarray(values, dtype=object))
        table = mf.by_group
        return {str(g): {k: int(table.loc[g, k]) for k in metrics} for g in table.index}
    out: dict[str, dict[str, int]] = {}
    vals = np.asarray(values, dtype=object)
    for v in dict.fromkeys(values):
        m = vals == v
        out[v] = {k: int(f(y[m], pred[m])) for k, f in metrics.items()}
    return out


def audit_groups(table: dict[str, list[dict[str, Any]]], min_n: int = 30, min_class_n: int = 10
                 ) -> dict[str, dict]:
    """Per attribute: the worst group, the largest accuracy and recall gaps between groups (with
    whether their 95% intervals overlap, i.e. whether the gap could be chance) and warnings
    about groups too small to judge. Groups under `min_n` faces are left out of worst/gaps, and
    a class's recall gap only compares groups with at least `min_class_n` faces of that class."""
    audit: dict[str, dict] = {}
    for key, rows in table.items():
        judged = [r for r in rows if not r["too_small"]]
        small = [r["group"] for r in rows if r["too_small"]]
        warnings = []
        if small:
            warnings.append(f"{len(small)} group(s) with fewer than {min_n} faces are too small "
                            f"to judge and are left out of the worst group and gaps: "
                            f"{', '.join(small)}")
        entry: dict[str, Any] = {"groups": len(rows), "judged": len(judged), "min_n": min_n,
                                 "too_small": small, "worst": None, "gaps": {},
                                 "warnings": warnings}
        if judged:
            w = min(judged, key=lambda r: r["accuracy"])
            entry["worst"] = {"group": w["group"], "accuracy": w["accuracy"], "ci95": w["ci95"],
                              "n": w["n"]}
        if len(judged) >= 2:
            for metric, ci in (("accuracy", "ci95"), ("female_recall", "female_recall_ci95"),
                               ("male_recall", "male_recall_ci95")):
                cls = metric.split("_")[0]
                have = [r for r in judged if r.get(metric) is not None
                        and (metric == "accuracy" or r[f"{cls}_n"] >= min_class_n)]
                if len(have) < 2:
                    continue
                lo = min(have, key=lambda r: r[metric])
                hi = max(have, key=lambda r: r[metric])
                entry["gaps"][metric] = {
                    "gap": hi[metric] - lo[metric], "lowest": lo["group"], "highest": hi["group"],
                    "low": lo[metric], "high": hi[metric],
                    # Overlapping 95% intervals: the data cannot tell the two groups apart.
                    "intervals_overlap": lo[ci][1] >= hi[ci][0]}
        elif rows:
            warnings.append("fewer than two groups large enough to compare")
        audit[key] = entry
    return audit


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
    tta: bool | None = None,
    batch_size: int = 64,
    threads: int | None = None,
    predictor: Predictor | None = None,
    report: bool | str | Path = False,
    gallery: int = 8,
    min_group: int = 30,
    progress: bool = False,
    device: str | None = None,
    strict: bool = False,
) -> EvalResult:
    """Evaluate `model` (default: the shipped model) on labelled `data`.

    `split` picks a split of the source (default: test, else val, else everything); `limit`
    takes a stratified seeded subset. With `out`, writes metrics.json, report.md,
    predictions.csv, confusion.png and roc.png there.

    `report` (True with `out`, or the report folder itself) writes the full report instead:
    report.html (self-contained, opens offline) and report.md with ROC/PR curves, reliability
    diagram, training curves, the per-group audit and a gallery of the `gallery` most confident
    errors of each kind with Grad-CAM overlays (see facegender.report). Groups under
    `min_group` faces are reported but flagged as too small to judge. `progress` draws a bar on
    stderr when it is a terminal; `device` is where the classifier runs (cpu, cuda, cuda:N);
    `strict` refuses a model folder without an integrity record.
    """
    if report and not isinstance(report, bool):
        out = report
    if report and out is None:
        raise FaceGenderError("report=True needs a folder: pass out=DIR or report=DIR")
    if report and (why := plots.missing()):  # fail before the (long) predictions, not after
        raise MissingDependency(why)
    if out is not None:  # a file there, or the data's own folder: refused before any work
        out = folder_target(out, "report folder" if report else "output folder", [data])
    pred = predictor or Predictor(model, backend=backend, detect=detect, tta=tta,
                                  threads=threads, largest=True, device=device,
                                  strict=strict)
    source = read_source(data, labelled=True)
    splits = source.splits()
    chosen = split or next((s for s in ("test", "val") if s in splits), None)
    samples = [s for s in source.samples if chosen is None or s.split == chosen]
    if not samples:
        raise DataError(f"{data}: no images in split '{chosen}' (splits: {splits or 'none'})")
    samples = stratified_limit(samples, limit, seed)

    refs, y, p, groups, errors, no_face, kept = [], [], [], [], [], [], []
    whole = 0  # images classified whole: no face detected in an input shaped like a face crop
    errors += [(sk.ref, sk.reason) for sk in source.skipped]
    for res in pred.iter_predict(samples, batch_size=batch_size, progress=progress):
        s = res.sample
        if res.error:
            errors.append((res.path, res.error))
            continue
        if not res.faces:
            no_face.append(res.path)
            continue
        face = max(res.faces, key=lambda f: (f.box[2] * f.box[3]) if f.box else 0)
        whole += face.face_source == "whole_image"
        refs.append(res.path)
        y.append(1 if s.label == "male" else 0)
        p.append(face.prob_male)
        groups.append(s.groups)
        kept.append(s)
    if not refs:
        raise DataError(f"{data}: no image could be evaluated ({len(errors)} unreadable, "
                        f"{len(no_face)} without a face)")
    y_arr, p_arr = np.array(y), np.array(p)
    metrics = compute_metrics(y_arr, p_arr, pred.config.threshold)
    metrics.update({
        "model": str(pred.model_dir), "data": str(data), "split": chosen,
        "backend": pred.backend.name, "detect": pred.detect, "tta": pred.tta,
        "unreadable": len(errors), "no_face": len(no_face), "whole_image": whole,
        "accuracy_counting_misses": (metrics["accuracy"] * len(refs)) / (len(refs) + len(no_face)),
    })
    table = group_table(groups, y_arr, p_arr, pred.config.threshold, min_group)
    result = EvalResult(metrics, table, refs, y_arr, p_arr, errors, no_face, samples=kept,
                        audit=audit_groups(table, min_group))
    if report:
        from .html import write_full_report

        result.out = write_full_report(result, Path(out), pred, gallery=gallery)
    elif out is not None:
        result.out = write_report(result, Path(out), pred.config.labels)
    return result
