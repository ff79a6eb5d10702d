"""Matplotlib figures (Agg backend: no display needed), titled and labelled for a quick read.
matplotlib and scikit-learn's curves come with the [report] (and [train]) extra, not the base install."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import MissingDependency, require


def _plt():
    matplotlib = require("matplotlib", "report")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "axes.spines.top": False,
                         "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3})
    return plt


def missing() -> str | None:
    """Why plots cannot be drawn in this install (with the pip command), or None if they can."""
    for module in ("matplotlib", "sklearn.metrics"):
        try:
            require(module, "report")
        except MissingDependency as exc:
            return str(exc)
    return None


def _sk(*names: str):
    skm = require("sklearn.metrics", "report")
    return [getattr(skm, n) for n in names]


# What a training history may hold, per panel: (column, legend, line style). Each recipe
# records its own subset (full: train and val; head/tail: no train accuracy or val loss, a
# stage column with epochs counted from 0 or 1 in each stage); a column a history lacks, or
# holds no number in, is left out, never assumed.
HISTORY_PANELS = (
    ("Loss", "cross-entropy", (("train_loss", "train", "o-"), ("val_loss", "val", "o-"))),
    ("Accuracy", "accuracy", (("train_accuracy", "train accuracy", "o-"),
                              ("val_accuracy", "val accuracy", "o-"),
                              ("val_balanced_accuracy", "val balanced acc.", "s--"),
                              ("val_worst_group", "val worst group", "^:"))),
)


def _number(v) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan


def plot_history(rows: list[dict], out: Path) -> Path:
    """Training curves of whatever the history holds (HISTORY_PANELS); with several stages
    (head then tail), epochs are numbered on across stages and each stage is marked."""
    plt = _plt()
    stages = [r.get("stage") for r in rows]
    staged = len({s for s in stages if s}) > 1
    ep = list(range(1, len(rows) + 1)) if staged else [r.get("epoch", i + 1)
                                                         for i, r in enumerate(rows)]
    panels = [(title, unit, [(k, name, style) for k, name, style in series
                             if any(not np.isnan(_number(r.get(k))) for r in rows)])
              for title, unit, series in HISTORY_PANELS]
    panels = [p for p in panels if p[2]] or [("Training", "", [])]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4), squeeze=False)
    from matplotlib.ticker import MaxNLocator

    for ax, (title, unit, series) in zip(axes[0], panels, strict=True):
        for k, name, style in series:
            ax.plot(ep, [_number(r.get(k)) for r in rows], style, label=name)
        if staged:
            for i in range(1, len(rows)):
                if stages[i] != stages[i - 1]:
                    ax.axvline(ep[i] - 0.5, color="grey", lw=0.8, ls="--")
                    ax.annotate(str(stages[i]), (ep[i] - 0.5, 1), xycoords=("data", "axes fraction"),
                                fontsize=8, color="grey", ha="left", va="top")
        ax.set(title=title, xlabel="epoch (all stages)" if staged else "epoch", ylabel=unit)
        if series:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "no curves recorded", ha="center", va="center",
                    transform=ax.transAxes)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_confusion(cm: list[list[int]], labels: list[str], out: Path) -> Path:
    plt = _plt()
    m = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    ax.grid(False)
    ax.imshow(m, cmap="Blues")
    row = m.sum(axis=1, keepdims=True).clip(min=1)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{m[i, j]}\n{m[i, j] / row[i, 0]:.1%}", ha="center", va="center",
                    color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=labels,
           yticklabels=labels, xlabel="predicted", ylabel="true", title="Confusion matrix")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_roc(y_male: np.ndarray, p_male: np.ndarray, out: Path) -> Path:
    auc, roc_curve = _sk("auc", "roc_curve")

    plt = _plt()
    fpr, tpr, _ = roc_curve(y_male, p_male)
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    ax.plot(fpr, tpr, lw=2, label=f"AUC = {auc(fpr, tpr):.4f}")
    ax.plot([0, 1], [0, 1], "k--", lw=1, alpha=0.5)
    ax.set(xlabel="false male rate (females called male)", ylabel="true male rate",
           title="ROC (positive = male)", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_pr(y_male: np.ndarray, p_male: np.ndarray, out: Path,
            labels: tuple[str, str] = ("female", "male")) -> Path:
    """Precision-recall for each class as the positive one (the dashed line is chance: the
    class's share of the data), so neither class's errors hide behind the other's."""
    average_precision_score, precision_recall_curve = _sk("average_precision_score", "precision_recall_curve")

    plt = _plt()
    y = np.asarray(y_male, dtype=int)
    p = np.asarray(p_male, dtype=float)
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    for name, yy, score, colour in ((labels[1], y, p, "C0"), (labels[0], 1 - y, 1 - p, "C3")):
        prec, rec, _ = precision_recall_curve(yy, score)
        ap = average_precision_score(yy, score)
        ax.plot(rec, prec, lw=2, color=colour, label=f"{name}: AP = {ap:.3f}")
        ax.axhline(yy.mean(), color=colour, ls="--", lw=1, alpha=0.5)
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall per class",
           xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_reliability(y_male: np.ndarray, p_male: np.ndarray, out: Path, bins: int = 10,
                     ece: float | None = None) -> Path:
    """Reliability diagram of the predicted label's confidence: bars at each bin's accuracy,
    red gaps to the diagonal (perfect calibration), and how many faces fall in each bin."""
    from .metrics import expected_calibration_error, reliability_bins

    plt = _plt()
    mc, acc, cnt = reliability_bins(y_male, p_male, bins)
    ece = expected_calibration_error(y_male, p_male) if ece is None else ece
    edges = np.linspace(0.5, 1.0, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    has = cnt > 0
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(3.8, 4.4), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1]})
    ax.bar(centres[has], acc[has], width=width * 0.95, color="C0", alpha=0.8, label="accuracy")
    # Gap from each bin's mean confidence to its accuracy: over- or under-confidence.
    ax.bar(centres[has], mc[has] - acc[has], bottom=acc[has], width=width * 0.95, color="C3",
           alpha=0.35, hatch="//", edgecolor="C3", label="gap to confidence")
    ax.plot([0.5, 1], [0.5, 1], "k--", lw=1, label="perfectly calibrated")
    ax.set(ylabel="accuracy", title=f"Reliability (ECE = {ece:.3f})", xlim=(0.5, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=8)
    ax2.bar(centres, cnt, width=width * 0.95, color="0.5")
    ax2.set(xlabel="confidence of the predicted label", ylabel="faces")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_groups(rows: list[dict], key: str, out: Path, overall: float | None = None) -> Path:
    """Accuracy and per-class recall per group with their 95% Wilson intervals."""
    plt = _plt()
    names = [str(r["group"]) for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(5.2, 0.62 * len(rows) + 2.8), 3.4))
    series = (("accuracy", "ci95", "k", "o", 0.0), ("female_recall", "female_recall_ci95", "C3",
                                                    "v", -0.18),
              ("male_recall", "male_recall_ci95", "C0", "^", 0.18))
    for col, ci, colour, marker, dx in series:
        v = np.array([np.nan if r.get(col) is None else r[col] for r in rows], dtype=float)
        lo = np.array([np.nan if r.get(ci) is None else r[ci][0] for r in rows], dtype=float)
        hi = np.array([np.nan if r.get(ci) is None else r[ci][1] for r in rows], dtype=float)
        # Clipped at 0: at a rate of exactly 0 or 1 the interval's end can sit a rounding error
        # past the point, which matplotlib refuses as a negative error bar.
        yerr = np.clip([v - lo, hi - v], 0, None)
        ax.errorbar(x + dx, v, yerr=yerr, fmt=marker, color=colour, capsize=3,
                    ms=5, lw=1.2, label=col.replace("_", " "))
    if overall is not None:
        ax.axhline(overall, color="k", lw=0.8, ls=":", label="overall accuracy")
    ax.set_xticks(x, names, rotation=30 if max(map(len, names)) > 4 else 0)
    ax.set(ylim=(0, 1.02), ylabel="rate (95% Wilson interval)", xlabel=key,
           title=f"By {key}")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_error_gallery(tiles: list[dict], out: Path, title: str) -> Path:
    """A strip of faces: each column is one error, its crop on top and, when there is one, its
    Grad-CAM overlay below. tiles: {"crop": PIL image, "overlay": PIL image | None,
    "caption": str}."""
    plt = _plt()
    n = max(1, len(tiles))
    rows = 2 if any(t.get("overlay") is not None for t in tiles) else 1
    fig, axes = plt.subplots(rows, n, figsize=(1.2 * n + 0.3, 1.5 * rows + 0.45), squeeze=False,
                             dpi=80)
    for j in range(n):
        for i in range(rows):
            ax = axes[i][j]
            ax.axis("off")
            if j >= len(tiles):
                continue
            img = tiles[j]["crop"] if i == 0 else tiles[j].get("overlay")
            if img is not None:
                ax.imshow(img)
            if i == 0:
                ax.set_title(tiles[j].get("caption", ""), fontsize=7)
    if rows == 2:
        axes[0][0].text(-0.08, 0.5, "face crop", rotation=90, transform=axes[0][0].transAxes,
                        ha="right", va="center", fontsize=8)
        axes[1][0].text(-0.08, 0.5, "Grad-CAM", rotation=90, transform=axes[1][0].transAxes,
                        ha="right", va="center", fontsize=8)
    if not tiles:
        axes[0][0].text(0.5, 0.5, "none", ha="center", va="center")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
