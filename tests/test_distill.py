"""Distillation moves a student towards its teacher. The teacher here is the session model with
its labels swapped in config.json, so it says the opposite of the truth: a student that starts
from the session model (truthful) and sees 40 labelled + 400 unlabelled faces agrees with that teacher
on held-out faces only if it learned from the teacher rather than from the labels (measured:
agreement 0.115 trained on the labels alone, 0.745 distilled)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import CELEBA, extract_members, first_members

pytest.importorskip("torch")

from facegender import Predictor, train  # noqa: E402
from facegender.models.modelfile import load_config, save_config  # noqa: E402

STUDENT = dict(arch="mobilenetv3_small", input_size=64, epochs=4, batch_size=32, lr=3e-3,
               augment="light", seed=0, progress=False, workers=0)


@pytest.fixture(scope="module")
def faces(celeba, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("distill")
    labelled = first_members(celeba / "train.tar", 20, ("train/female/", "train/male/"))
    extract_members(celeba / "train.tar", labelled, root / "labelled")
    # Unlabelled: a flat folder of faces (no class folders), the kind a user adds.
    names = first_members(celeba / "train.tar", 220, ("train/female/", "train/male/"))[40:]
    for p in extract_members(celeba / "train.tar", names, root / "tmp"):
        dest = root / "unlabelled" / f"{p.parent.name[0]}{p.name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        p.rename(dest)
    held = first_members(CELEBA / "val.tar", 100, ("val/female/", "val/male/"))
    extract_members(CELEBA / "val.tar", held, root / "held")
    return {"labelled": root / "labelled" / "train", "unlabelled": root / "unlabelled",
            "held": root / "held" / "val", "root": root}


@pytest.fixture(scope="module")
def contrarian(trained_model: Path, faces) -> Path:
    """The session model with its output order declared the other way round."""
    out = faces["root"] / "contrarian"
    shutil.copytree(trained_model, out, ignore=shutil.ignore_patterns("checkpoints"))
    cfg = json.loads((out / "config.json").read_text())
    cfg["labels"] = cfg["labels"][::-1]
    (out / "config.json").write_text(json.dumps(cfg))
    # Declared the other way round on purpose: record the folder anew, as save_config does (a
    # label order edited by hand alone is refused on load).
    save_config(load_config(out), out)
    return out


def _agreement(student: Path, teacher: Path, held: Path) -> float:
    pt = np.array([r.faces[0].prob_male for r in Predictor(teacher, detect=False).predict(held)])
    ps = np.array([r.faces[0].prob_male for r in Predictor(student, detect=False).predict(held)])
    return float(np.mean((pt >= 0.5) == (ps >= 0.5)))


def test_distillation_moves_the_student_towards_the_teacher(faces, contrarian: Path,
                                                           trained_model: Path):
    val = faces["held"]
    # Both students start from the session model, which says the truth: the contrarian teacher
    # is that model with its labels swapped.
    student = {**STUDENT, "init": str(trained_model)}
    alone = train(faces["labelled"], faces["root"] / "alone", val=val, **student)
    taught = train(faces["labelled"], faces["root"] / "taught", val=val, teacher=contrarian,
                   distill_weight=0.9, unlabelled=faces["unlabelled"], **student)
    recipe = json.loads((taught.model_dir / "config.json").read_text())["recipe"]
    assert recipe["teacher"] == str(contrarian) and recipe["teacher_faces"] == 440
    a_alone = _agreement(alone.model_dir, contrarian, val)
    a_taught = _agreement(taught.model_dir, contrarian, val)
    assert a_alone < 0.3 and a_taught >= a_alone + 0.3, (a_alone, a_taught)
    print(f"agreement with the contrarian teacher: alone {a_alone:.3f}, taught {a_taught:.3f}")
    assert (taught.model_dir / "teacher.npz").is_file()  # --resume reuses the teacher's answers


def test_unlabelled_faces_need_a_teacher(faces):
    from facegender.errors import FaceGenderError

    with pytest.raises(FaceGenderError, match="teacher"):
        train(faces["labelled"], faces["root"] / "x", val=faces["held"],
              unlabelled=faces["unlabelled"], **STUDENT)
