"""The full evaluation report on fairface540 (9 age groups): report.html is self-contained, every
section is there, every embedded image decodes, and the per-group audit is honest."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facegender import Predictor, evaluate
from facegender.errors import FaceGenderError, MissingDependency
from facegender.report.evaluate import _group_counts, audit_groups, group_table, wilson

AGE_GROUPS = ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+"]
SECTIONS = ["metrics", "confusion", "curves", "calibration", "training", "groups", "errors"]
DATA_URI = re.compile(r'src="data:image/(png|jpeg);base64,([A-Za-z0-9+/=]+)"')


def detector_available() -> bool:
    from facegender.faces import FaceDetector

    try:
        FaceDetector(threads=1)
        return True
    except FaceGenderError:
        return False


def with_detector_policy(model: Path, dest: Path) -> Path:
    """A copy of `model` whose config asks for detector crops (the policy's defaults are
    fitted to celeba-style tight crops, which is what the session model was trained on)."""
    from facegender.faces import CropPolicy

    shutil.copytree(model, dest, ignore=shutil.ignore_patterns("checkpoints"))
    cfg = json.loads((dest / "config.json").read_text())
    cfg["crop"] = CropPolicy().to_dict()
    (dest / "config.json").write_text(json.dumps(cfg, indent=2))
    return dest


@pytest.fixture(scope="module")
def report(trained_model, fairface, tmp_path_factory):
    """All 540 faces (60 per age group, so each group is large enough to judge), through the
    face detector when it is installed (fairface photos are loose crops)."""
    out = tmp_path_factory.mktemp("report")
    detect = detector_available()
    model = trained_model
    if detect:
        model = with_detector_policy(trained_model, tmp_path_factory.mktemp("m") / "tiny")
    # threads=1: on a busy 2-core machine more threads make torch several times slower
    result = evaluate(fairface / "labels.csv", model, report=out, backend="torch", gallery=8,
                      threads=1)
    html = (out / "report.html").read_text()
    return result, out, html, detect


def test_report_files_and_sections(report):
    result, out, html, detect = report
    assert result.out == out
    for name in ("metrics.json", "report.md", "report.html", "predictions.csv", "confusion.png",
                 "roc.png", "pr.png", "reliability.png", "training.png",
                 "groups_age_group.png", "errors_female_as_male.png",
                 "errors_male_as_female.png"):
        assert (out / name).is_file(), name
    for sec in SECTIONS:
        assert f'<section id="{sec}">' in html, sec
    assert 'alt="confusion matrix"' in html and 'alt="ROC curve"' in html
    assert 'alt="precision-recall curves"' in html and 'alt="reliability diagram"' in html
    assert "ECE" in html or "calibration error" in html
    assert 'alt="training curves"' in html  # the model folder has history.csv
    assert result.metrics["detect"] is detect
    md = (out / "report.md").read_text()
    for heading in ("## Metrics", "## Confusion matrix", "## ROC and precision-recall",
                    "## Calibration", "## Training", "## Per-group audit", "### By age_group",
                    "## Most confident errors"):
        assert heading in md, heading


def test_html_is_self_contained_and_every_image_decodes(report):
    _, _, html, _ = report
    assert "<script" not in html and "<link" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert not re.search(r"url\(", html)
    imgs = DATA_URI.findall(html)
    # confusion, ROC, PR, reliability, training, groups + gallery tiles
    assert len(imgs) >= 6 + 2
    assert html.count("<img ") == len(imgs)
    for kind, b64 in imgs:
        img = Image.open(io.BytesIO(base64.b64decode(b64, validate=True)))
        img.load()
        assert img.format == kind.upper() and min(img.size) > 10


def test_error_gallery_shows_confident_errors_with_gradcam(report):
    result, out, html, _ = report
    meta = json.loads((out / "metrics.json").read_text())
    thr = result.metrics["threshold"]
    for kind, true, wrong in (("female_as_male", "female", "male"),
                              ("male_as_female", "male", "female")):
        assert f'id="errors-{kind}"' in html
        shown = meta["gallery"][kind]
        y = 0 if true == "female" else 1
        wrong_mask = (result.y_male == y) & ((result.p_male >= thr) == (wrong == "male"))
        assert len(shown) == min(8, int(wrong_mask.sum()))
        p = [s["prob_male"] for s in shown]
        # most confident first: the errors with p(male) furthest on the wrong side
        assert p == sorted(p, reverse=(wrong == "male"))
        if shown:
            worst = result.p_male[wrong_mask].max() if wrong == "male" else \
                result.p_male[wrong_mask].min()
            assert abs(p[0] - worst) < 1e-9
            assert all("age_group" in s["groups"] for s in shown)
            # The gallery re-cut the very crops that were scored: one torch pass on them gives
            # the evaluation's probability back.
            for s in shown:
                assert abs(s["gradcam_prob_male"] - s["prob_male"]) < 1e-3, s
    tiles = html.count('<figure class="tile">')
    assert tiles == len(meta["gallery"]["female_as_male"]) + len(meta["gallery"]["male_as_female"])
    assert html.count("Grad-CAM\"") == tiles  # one overlay per tile (alt text ends in Grad-CAM)
    assert "feature map" in meta["gallery_note"]


def test_per_age_group_table_with_wilson_intervals(report):
    result, out, html, _ = report
    rows = result.groups["age_group"]
    assert [r["group"] for r in rows] == AGE_GROUPS  # natural order, every group present
    assert sum(r["n"] for r in rows) == result.metrics["n"]
    for r in rows:
        lo, hi = r["ci95"]
        assert lo <= r["accuracy"] <= hi and 0 <= lo < hi <= 1
        assert (lo, hi) == pytest.approx(wilson(round(r["accuracy"] * r["n"]), r["n"]))
        for cls in ("female", "male"):
            flo, fhi = r[f"{cls}_recall_ci95"]
            assert flo <= r[f"{cls}_recall"] <= fhi
        assert r["female_n"] + r["male_n"] == r["n"]
        assert not r["too_small"]  # 60 faces each
    table = html[html.index('<section id="groups">'):html.index('<section id="errors">')]
    assert "95% CI" in table and "female recall" in table and "male recall" in table
    for g in AGE_GROUPS:
        assert f"<td>{g}</td>" in table
    audit = result.audit["age_group"]
    worst = min(rows, key=lambda r: r["accuracy"])
    assert audit["worst"]["group"] == worst["group"]
    assert f"Worst group by age_group: {worst['group']}" in table
    gap = audit["gaps"]["accuracy"]
    accs = [r["accuracy"] for r in rows]
    assert gap["gap"] == pytest.approx(max(accs) - min(accs))
    assert "Largest accuracy gap" in table
    meta = json.loads((out / "metrics.json").read_text())
    assert meta["audit"]["age_group"]["worst"]["group"] == worst["group"]


def test_gallery_without_torch_shows_crops_and_says_why(report, monkeypatch, tmp_path):
    result, _, _, detect = report
    import facegender.report.explainer as ex

    def no_torch(*a, **k):
        raise MissingDependency("'torch' is not installed; install it with: pip install "
                                "\"facegender[train]\"")

    monkeypatch.setattr(ex, "GradCamExplainer", no_torch)
    from facegender.report.html import write_full_report

    pred = Predictor(result.metrics["model"], backend="torch", detect=detect)
    write_full_report(result, tmp_path, pred, gallery=2)
    html = (tmp_path / "report.html").read_text()
    assert "Grad-CAM overlays are missing" in html and "torch" in html
    n = html.count('<figure class="tile">')
    assert n >= 1 and html.count("Grad-CAM\"") == 0
    assert len(DATA_URI.findall(html)) >= 6 + n


def test_report_needs_a_folder(fairface, trained_model):
    with pytest.raises(FaceGenderError, match="report=True needs a folder"):
        evaluate(fairface / "labels.csv", trained_model, report=True)


# --------------------------------------------------------------------------- audit logic


def test_wilson_interval_known_values():
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson(27, 30) == pytest.approx((0.7438, 0.9654), abs=1e-4)
    assert all(np.isnan(wilson(0, 0)))


def test_small_groups_are_flagged_and_left_out_of_worst_and_gap():
    rng = np.random.default_rng(0)
    n_big, n_small = 200, 12
    y = rng.integers(0, 2, n_big * 2 + n_small)
    p = np.where(rng.random(len(y)) < 0.85, y, 1 - y).astype(float)  # 85% right
    groups = [{"site": "A"}] * n_big + [{"site": "B"}] * n_big + [{"site": "C"}] * n_small
    p[-n_small:] = 1 - y[-n_small:]  # tiny group C: all wrong, but too small to judge
    table = group_table(groups, y, p, 0.5, min_n=30)
    audit = audit_groups(table, min_n=30)["site"]
    c = next(r for r in table["site"] if r["group"] == "C")
    assert c["too_small"] and c["accuracy"] == 0
    assert audit["too_small"] == ["C"] and audit["worst"]["group"] in ("A", "B")
    assert any("too small to judge" in w for w in audit["warnings"])
    assert audit["gaps"]["accuracy"]["intervals_overlap"]  # A vs B: same 85%, noise only


def test_fairlearn_and_numpy_give_the_same_counts(monkeypatch):
    pytest.importorskip("fairlearn")
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    pred = rng.integers(0, 2, 300)
    values = [str(v) for v in rng.choice(["x", "y", "z"], 300)]
    with_fl = _group_counts(y, pred, values)
    monkeypatch.setitem(sys.modules, "fairlearn.metrics", None)  # import now fails
    without = _group_counts(y, pred, values)
    assert with_fl == without
    assert sum(v["n"] for v in without.values()) == 300
