"""Distillation moves a student towards its teacher: with 40 labelled faces and 400 unlabelled
ones, the student that learns the teacher's probabilities on the unlabelled faces agrees with the
teacher on held-out faces (rank correlation of p(male)) far more than the same student trained
on the labelled faces alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import CELEBA, extract_members, first_members

pytest.importorskip("torch")

from facegender import Predictor, train  # noqa: E402

STUDENT = dict(arch="mobilenetv3_small", input_size=48, epochs=3, batch_size=32, lr=3e-3,
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


def _agreement(student: Path, teacher: Path, held: Path) -> float:
    """Rank correlation of the student's p(male) with the teacher's on held-out faces (a
    3-epoch student on so few faces is not calibrated yet, so labels would say little)."""
    pt = np.array([r.faces[0].prob_male for r in Predictor(teacher, detect=False).predict(held)])
    ps = np.array([r.faces[0].prob_male for r in Predictor(student, detect=False).predict(held)])
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    return float(np.corrcoef(rank(pt), rank(ps))[0, 1])


def test_distillation_moves_the_student_towards_the_teacher(faces, trained_model: Path):
    val = faces["held"]
    alone = train(faces["labelled"], faces["root"] / "alone", val=val, **STUDENT)
    taught = train(faces["labelled"], faces["root"] / "taught", val=val, teacher=trained_model,
                   distill_weight=0.8, unlabelled=faces["unlabelled"], **STUDENT)
    assert taught.metrics["val"]["n"] == 200
    recipe = __import__("json").loads((taught.model_dir / "config.json").read_text())["recipe"]
    assert recipe["teacher"] == str(trained_model) and recipe["teacher_faces"] == 440
    a_alone = _agreement(alone.model_dir, trained_model, val)
    a_taught = _agreement(taught.model_dir, trained_model, val)
    assert a_taught >= a_alone + 0.2 and a_taught > 0.4, (a_alone, a_taught)
    assert (taught.model_dir / "teacher.npz").is_file()  # --resume reuses the teacher's answers


def test_unlabelled_faces_need_a_teacher(faces):
    from facegender.errors import FaceGenderError

    with pytest.raises(FaceGenderError, match="teacher"):
        train(faces["labelled"], faces["root"] / "x", val=faces["held"],
              unlabelled=faces["unlabelled"], **STUDENT)
