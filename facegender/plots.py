"""Matplotlib figures (Agg backend: no display needed), titled and labelled for a quick read."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "axes.spines.top": False,
                         "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3})
    return plt


def plot_history(rows: list[dict], out: Path) -> Path:
    plt = _plt()
    ep = [r["epoch"] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    a1.plot(ep, [r["train_loss"] for r in rows], "o-", label="train")
    if rows and rows[0].get("val_loss") is not None:
        a1.plot(ep, [r["val_loss"] for r in rows], "o-", label="val")
    a1.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    a1.legend()
    a2.plot(ep, [r["train_accuracy"] for r in rows], "o-", label="train accuracy")
    if rows and rows[0].get("val_accuracy") is not None:
        a2.plot(ep, [r["val_accuracy"] for r in rows], "o-", label="val accuracy")
        a2.plot(ep, [r["val_balanced_accuracy"] for r in rows], "s--", label="val balanced acc.")
    a2.set(title="Accuracy", xlabel="epoch", ylabel="accuracy")
    a2.legend()
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
    from sklearn.metrics import auc, roc_curve

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
