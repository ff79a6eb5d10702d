"""Classification metrics and calibration on (is_male, p_male) arrays, in plain numpy.

The base install (predict, evaluate, serve) must stay small, and scikit-learn + scipy alone are
~200 MB on disk, so the handful of binary metrics evaluate reports are computed here, with
scikit-learn's definitions (tests check them against scikit-learn). Curves for the plots and the
temperature fit, which only the [report] and [train] extras need, use scikit-learn and scipy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

NAMES = ("female", "male")  # indexed by y_male (0/1), whatever a model's own label order


def confusion(y_male: np.ndarray, pred_male: np.ndarray) -> np.ndarray:
    """2x2 counts, rows = true (female, male), columns = predicted."""
    cm = np.zeros((2, 2), dtype=int)
    np.add.at(cm, (np.asarray(y_male, dtype=int), np.asarray(pred_male, dtype=int)), 1)
    return cm


def roc_auc(y_male: np.ndarray, p_male: np.ndarray) -> float:
    """Area under the ROC curve as the Mann-Whitney statistic (ties count one half)."""
    y = np.asarray(y_male, dtype=bool)
    p = np.asarray(p_male, dtype=float)
    n1, n0 = int(y.sum()), int((~y).sum())
    order = np.argsort(p, kind="mergesort")
    _, inv, counts = np.unique(p[order], return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = np.empty(len(p))
    ranks[order] = ((ends - counts + 1 + ends) / 2)[inv]  # average 1-based rank of each tie run
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def average_precision(y_male: np.ndarray, p_male: np.ndarray) -> float:
    """Average precision for 'male' as scikit-learn defines it: sum over distinct thresholds of
    precision x recall increment (no interpolation)."""
    y = np.asarray(y_male, dtype=int)
    p = np.asarray(p_male, dtype=float)
    order = np.argsort(-p, kind="mergesort")
    ys, ps = y[order], p[order]
    last = np.r_[np.flatnonzero(np.diff(ps)), len(ps) - 1]  # last index of each distinct score
    tp = np.cumsum(ys)[last]
    precision = tp / (last + 1)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _report_text(cm: np.ndarray, prec: np.ndarray, rec: np.ndarray, f1: np.ndarray) -> str:
    """A plain-text per-class table in the layout of scikit-learn's classification_report."""
    sup = cm.sum(axis=1)
    n = int(sup.sum())
    rows = [f"{'':>12}{'precision':>10}{'recall':>10}{'f1-score':>10}{'support':>10}", ""]
    rows += [f"{NAMES[i]:>12}{prec[i]:10.4f}{rec[i]:10.4f}{f1[i]:10.4f}{sup[i]:10d}" for i in range(2)]
    acc = np.trace(cm) / n if n else float("nan")
    w = sup / n if n else np.zeros(2)
    rows += ["", f"{'accuracy':>12}{'':>20}{acc:10.4f}{n:10d}",
             f"{'macro avg':>12}{prec.mean():10.4f}{rec.mean():10.4f}{f1.mean():10.4f}{n:10d}",
             f"{'weighted avg':>12}{(prec * w).sum():10.4f}{(rec * w).sum():10.4f}"
             f"{(f1 * w).sum():10.4f}{n:10d}"]
    return "\n".join(rows) + "\n"


def compute_metrics(y_male: np.ndarray, p_male: np.ndarray, threshold: float = 0.5
                    ) -> dict[str, Any]:
    """y_male: 1 for male, 0 for female. Returns JSON-ready metrics (class names as keys)."""
    y = np.asarray(y_male, dtype=int)
    p = np.asarray(p_male, dtype=float)
    pred = (p >= threshold).astype(int)
    cm = confusion(y, pred)
    with np.errstate(invalid="ignore", divide="ignore"):
        rec = np.nan_to_num(np.diag(cm) / cm.sum(axis=1))
        prec = np.nan_to_num(np.diag(cm) / cm.sum(axis=0))
        f1 = np.nan_to_num(2 * prec * rec / (prec + rec))
    out: dict[str, Any] = {
        "n": int(len(y)),
        "accuracy": float(np.trace(cm) / len(y)) if len(y) else float("nan"),
        "threshold": float(threshold),
    }
    both = len(np.unique(y)) == 2
    out["balanced_accuracy"] = float(rec.mean()) if both else None
    out["roc_auc"] = roc_auc(y, p) if both else None
    out["average_precision_male"] = average_precision(y, p) if both else None
    eps = 1e-7
    pc = np.clip(p, eps, 1 - eps)
    out["log_loss"] = float(-np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc))) if len(y) else None
    out["brier"] = float(np.mean((p - y) ** 2)) if len(y) else None
    out["ece"] = expected_calibration_error(y, p)
    out["per_class"] = {
        NAMES[i]: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
                   "support": int(cm[i].sum())}
        for i in range(2)
    }
    out["confusion_matrix"] = {"labels": list(NAMES), "rows_true_cols_pred": cm.tolist()}
    out["classification_report"] = _report_text(cm, prec, rec, f1)
    return out


def expected_calibration_error(y_male: np.ndarray, p_male: np.ndarray, bins: int = 15) -> float:
    """ECE of the predicted label's confidence (the usual top-label definition), equal-width bins."""
    y = np.asarray(y_male, dtype=int)
    p = np.asarray(p_male, dtype=float)
    if len(y) == 0:
        return float("nan")
    conf = np.maximum(p, 1 - p)
    correct = ((p >= 0.5).astype(int) == y).astype(float)
    edges = np.linspace(0.5, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def reliability_bins(y_male: np.ndarray, p_male: np.ndarray, bins: int = 10
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean confidence, accuracy, count) per equal-width confidence bin over [0.5, 1]."""
    y = np.asarray(y_male, dtype=int)
    p = np.asarray(p_male, dtype=float)
    conf = np.maximum(p, 1 - p)
    correct = ((p >= 0.5).astype(int) == y).astype(float)
    edges = np.linspace(0.5, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    mc, acc, cnt = np.zeros(bins), np.zeros(bins), np.zeros(bins, dtype=int)
    for b in range(bins):
        m = idx == b
        cnt[b] = int(m.sum())
        if cnt[b]:
            mc[b], acc[b] = conf[m].mean(), correct[m].mean()
    return mc, acc, cnt


def fit_temperature(logits: np.ndarray, y_index: np.ndarray) -> float:
    """Temperature T minimising validation NLL of softmax(logits / T) (Guo et al. 2017).
    One parameter, so a bounded 1-D search is exact enough and cannot diverge."""
    from ..errors import require

    minimize_scalar = require("scipy.optimize", "train").minimize_scalar

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y_index, dtype=int)

    def nll(log_t: float) -> float:
        s = z / np.exp(log_t)
        s = s - s.max(axis=1, keepdims=True)
        logp = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
        return float(-logp[np.arange(len(y)), y].mean())

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))


def choose_unsure_band(y_male: np.ndarray, p_male: np.ndarray, max_accuracy: float = 0.8,
                       min_count: int = 20, cap: float = 0.3) -> float:
    """The widest band around 0.5 whose predictions are right less than `max_accuracy` of the
    time on validation data (at least `min_count` faces in it): there the model is near a coin
    flip and says 'unsure' rather than a label."""
    y = np.asarray(y_male, dtype=int)
    p = np.asarray(p_male, dtype=float)
    dist = np.abs(p - 0.5)
    order = np.argsort(dist)
    correct = ((p >= 0.5).astype(int) == y)[order].astype(float)
    cum_acc = np.cumsum(correct) / np.arange(1, len(correct) + 1)
    band = 0.0
    for k in range(min_count, len(order) + 1):
        d = dist[order[k - 1]]
        if d > cap:
            break
        if cum_acc[k - 1] < max_accuracy:
            band = float(d)
    return round(band, 3)
