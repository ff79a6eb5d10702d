"""An evaluation's result and its plain files (metrics.json, predictions.csv, report.md, plots).

Shared by ``evaluate`` and the HTML report, so neither imports the other's writer.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io.sources import Sample
from ..io.writers import neutralise_formula
from . import plots

log = logging.getLogger(__name__)


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
    samples: list[Sample] = field(default_factory=list, repr=False)  # parallel to refs
    audit: dict[str, dict] = field(default_factory=dict)  # see audit_groups

    def summary(self) -> str:
        m = self.metrics
        s = (f"{m['n']} faces: accuracy {m['accuracy']:.2%}")
        if m.get("balanced_accuracy") is not None:
            s += f", balanced {m['balanced_accuracy']:.2%}, ROC-AUC {m['roc_auc']:.4f}"
        if self.errors or self.no_face:
            s += f"; {len(self.errors)} unreadable, {len(self.no_face)} without a detected face"
        if m.get("whole_image"):
            s += f"; {m['whole_image']} classified as whole images (no face detected in a crop)"
        return s



def write_report(result: EvalResult, out: Path, labels: list[str]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    m = result.metrics
    (out / "metrics.json").write_text(json.dumps(
        {**m, "groups": result.groups, "audit": result.audit}, indent=2, default=_json) + "\n")
    with open(out / "predictions.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "true", "prob_male", "predicted", "correct"])
        for ref, yy, pp in zip(result.refs, result.y_male, result.p_male, strict=True):
            predicted = "male" if pp >= m["threshold"] else "female"
            w.writerow([neutralise_formula(ref), "male" if yy else "female", f"{pp:.6f}", predicted,
                        int(predicted == ("male" if yy else "female"))])
        for ref, reason in result.errors:
            w.writerow([neutralise_formula(ref), "", "", f"error: {reason}", ""])
        for ref in result.no_face:
            w.writerow([neutralise_formula(ref), "", "", "no_face", ""])
    why = plots.missing()  # plots need the [report] extra; the numbers above never do
    if why:
        log.warning("no plots in %s: %s", out, why)
    else:
        cm = m["confusion_matrix"]["rows_true_cols_pred"]
        plots.plot_confusion(cm, m["confusion_matrix"]["labels"], out / "confusion.png")
        if m.get("roc_auc") is not None:
            plots.plot_roc(result.y_male, result.p_male, out / "roc.png")
    (out / "report.md").write_text(markdown_report(result, with_plots=not why))
    return out


def _json(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def markdown_report(result: EvalResult, with_plots: bool = True) -> str:
    m = result.metrics
    pc = m["per_class"]

    def f(x):
        return "n/a" if x is None else f"{x:.4f}"

    lines = [
        "# Evaluation report", "",
        f"- model: `{m['model']}` (backend {m['backend']}, detect={m['detect']}, tta={m['tta']})",
        f"- data: `{m['data']}` split {m['split']}: {m['n']} faces evaluated, "
        f"{m['unreadable']} unreadable, {m['no_face']} without a detected face, "
        f"{m.get('whole_image', 0)} classified as whole images (no face detected in a crop)", "",
        "| metric | value |", "| --- | --- |",
        f"| accuracy | {f(m['accuracy'])} |",
        f"| balanced accuracy | {f(m['balanced_accuracy'])} |",
        f"| ROC-AUC | {f(m['roc_auc'])} |",
        f"| log loss | {f(m['log_loss'])} |",
        f"| expected calibration error | {f(m['ece'])} |", "",
        "| class | precision | recall | F1 | support |", "| --- | --- | --- | --- | --- |",
        *[f"| {c} | {f(v['precision'])} | {f(v['recall'])} | {f(v['f1'])} | {v['support']} |"
          for c, v in pc.items()], "",
    ]
    if not with_plots:
        lines += ['(No plots: install `pip install "facegender[report]"` for them.)', ""]
    else:
        lines += ["![confusion matrix](confusion.png)", ""]
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
