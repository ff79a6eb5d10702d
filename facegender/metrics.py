"""Classification metrics and calibration on (is_male, p_male) arrays. numpy + scikit-learn."""

from __future__ import annotations

from typing import Any

import numpy as np


def compute_metrics(y_male: np.ndarray, p_male: np.ndarray, threshold: float = 0.5
                    ) -> dict[str, Any]:
    """y_male: 1 for male, 0 for female. Returns JSON-ready metrics (class names as keys)."""
    from sklearn import metrics as skm  # imported here: `import facegender` stays light

    y = np.asarray(y_male, dtype=int)
    p = np.asarray(p_male, dtype=float)
    pred = (p >= threshold).astype(int)
    names = ["female", "male"]
    out: dict[str, Any] = {
        "n": int(len(y)),
        "accuracy": float(skm.accuracy_score(y, pred)) if len(y) else float("nan"),
        "threshold": float(threshold),
    }
    both = len(np.unique(y)) == 2
    out["balanced_accuracy"] = float(skm.balanced_accuracy_score(y, pred)) if both else None
    out["roc_auc"] = float(skm.roc_auc_score(y, p)) if both else None
    out["average_precision_male"] = float(skm.average_precision_score(y, p)) if both else None
    eps = 1e-7
    pc = np.clip(p, eps, 1 - eps)
    out["log_loss"] = float(-np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc))) if len(y) else None
    out["brier"] = float(np.mean((p - y) ** 2)) if len(y) else None
    out["ece"] = expected_calibration_error(y, p)
    prec, rec, f1, sup = skm.precision_recall_fscore_support(
        y, pred, labels=[0, 1], zero_division=0)
    out["per_class"] = {
        names[i]: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
                   "support": int(sup[i])}
        for i in range(2)
    }
    cm = skm.confusion_matrix(y, pred, labels=[0, 1])
    out["confusion_matrix"] = {"labels": names, "rows_true_cols_pred": cm.tolist()}
    out["classification_report"] = skm.classification_report(
        y, pred, labels=[0, 1], target_names=names, digits=4, zero_division=0)
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
    from scipy.optimize import minimize_scalar

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
