"""Build the model that ships in the package from a finished training run.

    facegender train ../shared/data/celeba-gender/train.tar --val ../shared/data/celeba-gender/val.tar \
        --arch mobilenetv3_small --input-size 80 --epochs 10 --batch-size 64 --lr 3e-3 \
        --patience 10 --workers 1 --threads 2 --out runs/default
    python tools/make_default_model.py runs/default

Copies the run's model folder into facegender/weights/fast (no checkpoints), sets the crop
policy to the detector defaults measured in faces.CropPolicy, exports ONNX + INT8 with parity
checks, evaluates on all of celeba val (crops as they are) and fairface540 (detector + crop
policy, per age group), benchmarks the backends and writes the model card from those figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from facegender import evaluate
from facegender.faces import CropPolicy
from facegender.infer.bench import benchmark, format_table
from facegender.infer.export import export, format_export_summary
from facegender.models import modelfile
from facegender.models.card import write_card

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DEST = ROOT / "facegender" / "weights" / "fast"
KEEP = ("config.json", "model.safetensors", "history.csv", "curves.png")
QAT_HISTORY = "qat_history.csv"  # present when the run came from `facegender qat`


def _portable(cfg: modelfile.ModelConfig) -> modelfile.ModelConfig:
    """Paths as a user of the repository sees them, not as this machine mounts them."""
    text = json.dumps(cfg.to_dict()).replace(str(DATA), "../shared/data")
    text = text.replace(str(ROOT) + "/", "").replace(str(ROOT), ".")
    return modelfile.ModelConfig.from_dict(json.loads(text))


def _metrics_row(r) -> dict:
    m = r.metrics
    keep = ("n", "accuracy", "balanced_accuracy", "roc_auc", "ece", "log_loss", "no_face",
            "accuracy_counting_misses", "per_class", "confusion_matrix", "detect", "backend")
    return {k: m[k] for k in keep if k in m}


def held_out_section(celeba, fair, bench_rows) -> str:
    def line(name, r):
        m = r.metrics
        return (f"| {name} | {m['n']} | {m['accuracy']:.2%} | {m['balanced_accuracy']:.2%} | "
                f"{m['roc_auc']:.4f} | {m['per_class']['female']['recall']:.2%} | "
                f"{m['per_class']['male']['recall']:.2%} | {m['ece']:.3f} |")

    out = ["## Held-out results (`python benchmarks/accuracy.py`)", "",
           "| data | faces | accuracy | balanced | ROC-AUC | female recall | male recall | ECE |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |",
           line("celeba val (crops as they are; also used for model selection)", celeba),
           line("fairface540 (out of domain; detector + crop policy)", fair), "",
           f"fairface540: {fair.metrics['no_face']} of 540 photos had no detected face "
           "(counted out of the table above).", "",
           "### fairface540 by age group (95% Wilson intervals; 60 faces per group)", "",
           "| age | n | accuracy | 95% CI | female recall | male recall |",
           "| --- | --- | --- | --- | --- | --- |"]
    for g in fair.groups.get("age_group", []):
        lo, hi = g["ci95"]
        out.append(f"| {g['group']} | {g['n']} | {g['accuracy']:.1%} | {lo:.1%}–{hi:.1%} | "
                   f"{g['female_recall']:.1%} | {g['male_recall']:.1%} |")
    out += ["", "## Speed (`facegender benchmark`, this model, 2-core CPU)", "",
            format_table(bench_rows), "",
            "## Known weaknesses", "",
            "- Trained on celebrity photos: mostly young adults, few children or elderly faces; "
            "check the age table above before using it on such faces.",
            "- Children (0-9) are hard for every gender classifier and for this one; their faces "
            "carry few gendered cues and the training data has almost none."]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="finished training output folder")
    ap.add_argument("--n-eval", type=int, default=2000, help="faces for the benchmark accuracy")
    ap.add_argument("--dest", type=Path, default=DEST,
                    help="where to build it (default: the package; elsewhere to compare candidates)")
    a = ap.parse_args()
    build(a.run, a.dest, a.n_eval)


def build(run: Path, dest: Path, n_eval: int) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in KEEP:
        shutil.copy2(run / name, dest / name)
    if (run / QAT_HISTORY).exists():
        shutil.copy2(run / QAT_HISTORY, dest / QAT_HISTORY)
    cfg = _portable(modelfile.load_config(dest))
    cfg.crop = CropPolicy().to_dict()
    cfg.recipe["crop_policy_note"] = (
        "trained on celeba tight crops as they are (with crop jitter); at prediction time faces "
        "are detected and cut with CropPolicy defaults measured to match celeba crops")
    cfg.recipe["packaged_by"] = "python tools/make_default_model.py RUN"
    modelfile.save_config(cfg, dest)

    res = export(dest, ["onnx", "int8"], calib_data=DATA / "celeba-gender" / "train.tar",
                 parity_data=DATA / "celeba-gender" / "val.tar", parity_size=20000)  # all of val
    print(format_export_summary(res))

    celeba = evaluate(DATA / "celeba-gender" / "val.tar", dest, detect=False)
    fair = evaluate(DATA / "fairface540" / "labels.csv", dest, detect=True)
    print(celeba.summary())
    print(fair.summary())
    rows = benchmark(dest, DATA / "celeba-gender" / "val.tar", n_eval)
    print(format_table(rows))

    cfg = _portable(modelfile.load_config(dest))  # export recorded this machine's paths
    cfg.metrics["celeba_val"] = _metrics_row(celeba)
    cfg.metrics["fairface540"] = {**_metrics_row(fair), "age_group": fair.groups.get("age_group")}
    cfg.metrics["benchmark"] = rows
    modelfile.save_config(cfg, dest)
    write_card(dest, cfg, held_out_section(celeba, fair, rows))
    total = sum(p.stat().st_size for p in dest.iterdir())
    print(f"{dest}: {total / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
