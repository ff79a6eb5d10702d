"""One record type for a face: the JSON Schema in docs/ is FaceRecord's, the OpenAPI document
carries the same schema, and the CLI (JSON and CSV), ImageResult.records(), the REST API and
Grad-CAM's explanations all produce records that validate against it."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

jsonschema = pytest.importorskip("jsonschema")

from facegender.cli import main  # noqa: E402
from facegender.infer.record_model import FaceRecord, record_json_schema  # noqa: E402
from facegender.infer.records import CSV_FIELDS, RECORD_FIELDS, unflatten  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_FILE = ROOT / "docs" / "face-record.schema.json"
GROUP = ROOT / "examples" / "group.jpg"


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def valid(validator, records: list[dict]) -> list[dict]:
    for r in records:
        errors = [e.message for e in validator.iter_errors(r)]
        assert not errors, (r, errors)
        assert list(r) == RECORD_FIELDS  # one key order everywhere
    return records


def test_docs_schema_is_generated_from_the_record_type():
    assert json.loads(SCHEMA_FILE.read_text()) == record_json_schema(), \
        "docs/face-record.schema.json is stale: run python tools/make_record_schema.py"


def test_plain_records_follow_the_record_type_without_importing_pydantic():
    # The prediction path builds records as dicts in RECORD_FIELDS order and never imports
    # pydantic (start-up time); FaceRecord is still their definition, field for field.
    assert list(FaceRecord.model_fields) == RECORD_FIELDS
    code = ("import sys; from facegender import load; p = load('fast'); "
            "r = p.predict('examples/group.jpg')[0].records(); "
            "assert r and r[0]['face'] == 0, r; "
            "print(sorted(m for m in ('pydantic', 'jsonschema', 'http.client', 'torch') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_schema_rejects_other_shapes(validator):
    """The schema has teeth: the shapes the three outputs used to disagree on are refused."""
    good = {"path": "a.jpg", "face": 0, "box": {"x": 1.0, "y": 2.0, "w": 3.0, "h": 4.0},
            "det_score": 0.9, "label": "male", "score": 0.8, "prob_male": 0.8,
            "prob_female": 0.2, "unsure": False, "face_source": "detector", "frame": None,
            "timestamp": None, "error": None}
    assert validator.is_valid(good)
    for bad in ({**good, "box": [1, 2, 3, 4]}, {**good, "label": "man"},
                {k: v for k, v in good.items() if k != "score"}, {**good, "name": "a.jpg"},
                {**good, "face_source": "guess"}, {**good, "box": {"x": 1, "y": 2, "w": 3}}):
        assert not validator.is_valid(bad), bad


def test_api_records_of_a_group_photo(validator, tmp_path):
    from PIL import Image

    from facegender import load

    blank = tmp_path / "blank.png"
    Image.new("RGB", (320, 240), (128, 128, 128)).save(blank)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"<html>nope</html>")
    results = load("fast").predict([GROUP, blank, bad])
    group, no_face, err = (valid(validator, r.records()) for r in results)
    assert len(group) >= 4 and [r["face"] for r in group] == list(range(len(group)))
    for r, f in zip(group, results[0].faces, strict=True):
        assert r["box"] == dict(zip("xywh", f.box, strict=True)) and f.box.w == r["box"]["w"]
        assert r["score"] == max(r["prob_male"], r["prob_female"]) == f.score
        assert r["face_source"] == "detector" and r["det_score"] > 0.5
    assert no_face == [{**no_face[0], "label": "no_face", "face": None, "error": None}]
    assert err[0]["error"] and err[0]["label"] is None and err[0]["face"] is None


def test_cli_json_and_csv_on_stdout_are_records(validator, capsys):
    assert main(["predict", str(GROUP), "--json", "-"]) == 0
    out = capsys.readouterr().out
    from_json = valid(validator, json.loads(out))  # stdout is the JSON alone: no table mixed in
    assert len(from_json) >= 4
    assert main(["predict", str(GROUP), "--csv", "-"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert list(rows[0]) == CSV_FIELDS
    from_csv = valid(validator, [unflatten(r) for r in rows])
    for a, b in zip(from_json, from_csv, strict=True):
        assert a["box"] == pytest.approx(b["box"], abs=0.05)
        assert {k: v for k, v in a.items() if k != "box"} == pytest.approx(
            {k: v for k, v in b.items() if k != "box"})


def test_table_marks_unsure_and_names_the_box(capsys, tmp_path):
    assert main(["predict", str(GROUP), "--unsure-band", "0.5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "box x,y,w,h" in lines[0] and "score" in lines[0]
    assert all("unsure (" in line for line in lines[1:])  # band 0.5: every face is unsure


def test_rest_faces_are_records(validator):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from facegender.serve.app import create_app

    app = create_app("fast", workers=1)
    with TestClient(app) as c:
        body = c.post("/v1/predict", files=[("files", ("group.jpg", GROUP.read_bytes()))]).json()
        openapi = c.get("/openapi.json").json()
    (res,) = body["results"]
    assert res["path"] == "group.jpg" and len(res["faces"]) >= 4
    for f in valid(validator, res["faces"]):
        assert f["path"] == "group.jpg"
    # The OpenAPI document's FaceRecord is the same schema (its refs point into components).
    served = json.dumps(openapi["components"]["schemas"]["FaceRecord"]).replace(
        "#/components/schemas/", "#/$defs/")
    mine = record_json_schema()
    assert json.loads(served) == {k: v for k, v in mine.items() if k not in ("$schema", "$defs")}
    assert openapi["components"]["schemas"]["Box"] == mine["$defs"]["Box"]
