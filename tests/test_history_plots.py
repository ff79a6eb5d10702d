"""Reports draw what a model's training history holds and leave out what it lacks: every
shipped model and the history shape of every recipe goes through the training-curve plot, and
`evaluate --report` with the accurate model (whose head/tail history has no train accuracy,
once a KeyError) writes its report."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from facegender.models.modelfile import HISTORY_NAME, SHIPPED, resolve_model_dir
from facegender.report.html import read_history

pytest.importorskip("matplotlib")
from facegender.report.plots import plot_history  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FAIRFACE = ROOT.parent / "shared" / "data" / "fairface540" / "labels.csv"


def _drawn(rows: list[dict], out: Path) -> None:
    plot_history(rows, out)
    with Image.open(out) as im:
        im.verify()


@pytest.mark.parametrize("name", sorted(set(SHIPPED) - {"default"}))
def test_every_shipped_models_history_is_drawn(name, tmp_path):
    rows = read_history(resolve_model_dir(name) / HISTORY_NAME)
    if not rows:  # a model without history.csv: the report says so, nothing to draw
        return
    _drawn(rows, tmp_path / "training.png")


# One history row of each recipe, with the columns it records (trainer.py: full; heads.py:
# head, then tail from epoch 0 with no train loss at first; quantaware.py: qat).
RECIPE_ROWS = {
    "full": lambda e: {"epoch": e, "lr": 1e-3, "train_loss": 0.5 / e, "train_accuracy": 0.8,
                       "val_loss": 0.4, "val_accuracy": 0.85, "val_balanced_accuracy": 0.84,
                       "val_roc_auc": 0.9, "val_worst_group": None, "train_img_per_s": 100.0,
                       "epoch_seconds": 1.0},
    "head": lambda e: {"epoch": e, "stage": "head", "train_loss": 0.3, "val_accuracy": 0.9,
                       "val_balanced_accuracy": 0.9, "val_worst_group": 0.7,
                       "val_worst_source": 0.8, "epoch_seconds": 0.1, "best": e == 1},
    "tail": lambda e: {"epoch": e - 1, "stage": "tail", "train_loss": None if e == 1 else 0.2,
                       "val_accuracy": 0.91, "val_balanced_accuracy": 0.9,
                       "val_worst_group": 0.75, "val_worst_source": 0.8,
                       "epoch_seconds": None if e == 1 else 30.0, "best": True},
    "qat": lambda e: {"epoch": e - 1, "train_loss": None if e == 1 else 0.3,
                      "consistency": None if e == 1 else 0.01, "val_accuracy": 0.9,
                      "val_accuracy_int8": 0.89, "agreement": 0.99, "max_abs_dp": 0.05,
                      "mean_abs_dp": 0.01, "epoch_seconds": 5.0},
    "nothing": lambda e: {"epoch": e, "epoch_seconds": 1.0},
}


@pytest.mark.parametrize("recipe", ["full", "head", "head+tail", "qat", "nothing"])
def test_every_recipes_history_shape_is_drawn(recipe, tmp_path):
    rows = [RECIPE_ROWS[part](e) for part in recipe.split("+") for e in (1, 2, 3)]
    _drawn(rows, tmp_path / "training.png")


@pytest.mark.skipif(not FAIRFACE.is_file(), reason="needs ../shared/data/fairface540")
def test_evaluate_report_with_the_accurate_model(tmp_path):
    from facegender.cli import main

    out = tmp_path / "report"
    assert main(["evaluate", str(FAIRFACE), "--model", "accurate", "--report", str(out),
                 "--limit", "24", "--gallery", "0", "--threads", "1", "-q"]) in (0, 1)
    assert (out / "report.html").is_file()
    # the curves are drawn from what the model's history holds, and left out without one
    from facegender.models import modelfile

    has_history = (modelfile.resolve_model_dir("accurate") / "history.csv").is_file()
    assert (out / "training.png").is_file() == has_history
