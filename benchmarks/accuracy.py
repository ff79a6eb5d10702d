"""Accuracy of a model (default: the shipped one) on celeba val and fairface540.

    python benchmarks/accuracy.py [MODEL] [--celeba-limit N] [--backend auto] [--tta]

celeba val: 11,649 tight crops, classified as they are (--no-detect: they are already crops).
fairface540: 540 loose crops through the face detector and the model's crop policy, with
per-age-group accuracy, 95% Wilson intervals and per-class recall.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from facegender import evaluate

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _line(name: str, r) -> str:
    m = r.metrics
    return (f"| {name} | {m['n']} | {m['accuracy']:.2%} | {m['balanced_accuracy']:.2%} | "
            f"{m['roc_auc']:.4f} | {m['per_class']['female']['recall']:.2%} | "
            f"{m['per_class']['male']['recall']:.2%} | {m['ece']:.3f} | {m['no_face']} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("--celeba-limit", type=int, default=None, help="stratified subset of val")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--tta", action="store_true")
    a = ap.parse_args()

    t0 = time.perf_counter()
    celeba = evaluate(DATA / "celeba-gender" / "val.tar", a.model, detect=False,
                      limit=a.celeba_limit, backend=a.backend, tta=a.tta)
    fair = evaluate(DATA / "fairface540" / "labels.csv", a.model, detect=True, backend=a.backend,
                    tta=a.tta)
    print(f"model: {celeba.metrics['model']} (backend {celeba.metrics['backend']}, "
          f"tta={a.tta}); {time.perf_counter() - t0:.0f} s\n")
    print("| data | faces | accuracy | balanced | ROC-AUC | female recall | male recall | ECE "
          "| no face |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print(_line("celeba val (crops as they are)", celeba))
    print(_line("fairface540 (detector + crop policy)", fair))
    print("\nfairface540 by age group:\n")
    print("| age | n | accuracy | 95% CI | female recall | male recall |")
    print("| --- | --- | --- | --- | --- | --- |")
    for g in fair.groups.get("age_group", []):
        lo, hi = g["ci95"]
        print(f"| {g['group']} | {g['n']} | {g['accuracy']:.1%} | {lo:.1%}-{hi:.1%} | "
              f"{g['female_recall']:.1%} | {g['male_recall']:.1%} |")


if __name__ == "__main__":
    main()
