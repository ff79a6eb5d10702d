"""The numpy metrics of the base install match scikit-learn's definitions exactly."""

from __future__ import annotations

import numpy as np
import pytest

from facegender.report.metrics import compute_metrics

skm = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("n, decimals", [(7, 1), (60, 2), (2000, 3), (2000, 8)])
def test_metrics_match_scikit_learn(n, decimals):
    rng = np.random.default_rng(n + decimals)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    # Rounded scores: many ties, which is where rank-based AUC and AP are easy to get wrong.
    p = np.round(np.clip(rng.normal(0.35 + 0.3 * y, 0.25), 0, 1), decimals)
    m = compute_metrics(y, p)
    pred = (p >= 0.5).astype(int)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred), abs=1e-12)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert m["average_precision_male"] == pytest.approx(skm.average_precision_score(y, p), abs=1e-12)
    assert m["confusion_matrix"]["rows_true_cols_pred"] == skm.confusion_matrix(y, pred).tolist()
    prec, rec, f1, sup = skm.precision_recall_fscore_support(y, pred, labels=[0, 1], zero_division=0)
    for i, name in enumerate(("female", "male")):
        row = m["per_class"][name]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx(
            (prec[i], rec[i], f1[i], sup[i]), abs=1e-12)
    ours = m["classification_report"].split()
    theirs = skm.classification_report(y, pred, target_names=["female", "male"], digits=4,
                                       zero_division=0).split()
    assert ours == theirs


def test_one_class_and_empty_inputs_do_not_crash():
    m = compute_metrics(np.array([1, 1, 1]), np.array([0.9, 0.2, 0.6]))
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["roc_auc"] is None and m["balanced_accuracy"] is None
    assert m["per_class"]["female"]["support"] == 0
    assert compute_metrics(np.array([], dtype=int), np.array([]))["n"] == 0
