"""The one record type for a face, as the prediction path builds it: plain dicts that the CLI's
CSV/JSON, `ImageResult.records()`, the REST API and the web page all produce.

Its definition, with every field's type and meaning, is `FaceRecord` in record_model.py
(pydantic; docs/face-record.schema.json and the server's OpenAPI document come from it). This
module does not import pydantic: predicting never needs it, and importing it cost ~50 ms of a
one-photo CLI call. `RECORD_FIELDS` is the records' key order; record_model.py refuses to load
if FaceRecord's fields differ from it, and a test checks both. Records travel as plain dicts
(building a pydantic object per face would cost more than classifying it). CSV cannot hold the
box object, so `flatten` spreads it over box_x, box_y, box_w, box_h and `unflatten` reads such a
row back into a record.
"""

from __future__ import annotations

from typing import Any

from ..io.writers import FORMULA_STARTS

RECORD_FIELDS: list[str] = ["path", "face", "box", "det_score", "label", "score", "prob_male",
                             "prob_female", "unsure", "face_source", "frame", "timestamp", "error"]
BOX_KEYS = ("x", "y", "w", "h")
CSV_FIELDS: list[str] = [c for f in RECORD_FIELDS
                         for c in ([f"box_{k}" for k in BOX_KEYS] if f == "box" else [f])]


def face_record(path: str, *, face: int | None = None,
                box: tuple[float, float, float, float] | None = None,
                det_score: float | None = None, label: str | None = None,
                prob_male: float | None = None, unsure: bool | None = None,
                face_source: str | None = None, frame: int | None = None,
                timestamp: float | None = None, error: str | None = None) -> dict[str, Any]:
    """A record as a plain dict in RECORD_FIELDS order; score and prob_female are derived from
    prob_male and the label so the three can never disagree."""
    pm = None if prob_male is None else float(prob_male)
    pf = None if pm is None else 1.0 - pm
    score = None if pm is None or label not in ("male", "female") else (
        pm if label == "male" else pf)
    return {
        "path": path, "face": face,
        "box": None if box is None else dict(zip(BOX_KEYS, (float(v) for v in box), strict=True)),
        "det_score": None if det_score is None else float(det_score), "label": label,
        "score": score, "prob_male": pm, "prob_female": pf,
        "unsure": None if unsure is None else bool(unsure), "face_source": face_source,
        "frame": frame, "timestamp": timestamp, "error": error,
    }


def flatten(record: dict[str, Any], digits: int | None = None) -> dict[str, Any]:
    """A record as one CSV row (CSV_FIELDS): the box spread over box_x..box_h. `digits` rounds
    the box (pixels) to that many decimals."""
    row = {k: v for k, v in record.items() if k != "box"}
    box = record.get("box")
    for k in BOX_KEYS:
        v = None if box is None else box[k]
        row[f"box_{k}"] = v if v is None or digits is None else round(v, digits)
    return {k: row.get(k) for k in CSV_FIELDS}


_INTS, _FLOATS, _BOOLS = {"face", "frame"}, {"det_score", "score", "prob_male", "prob_female",
                                              "timestamp"}, {"unsure"}


def unflatten(row: dict[str, str]) -> dict[str, Any]:
    """A CSV row (strings, '' for null) read back into a record with its JSON types."""
    def cast(key: str, s: str | None) -> Any:
        if s is None or s == "":
            return None
        if key in _INTS:
            return int(s)
        if key in _FLOATS or key.startswith("box_"):
            return float(s)
        if key in _BOOLS:
            return {"True": True, "true": True, "False": False, "false": False}[s]
        # the apostrophe io.writers puts before a cell a spreadsheet would run as a formula
        return s[1:] if s.startswith("'") and s[1:].startswith(FORMULA_STARTS) else s

    vals = {k: cast(k, row.get(k)) for k in CSV_FIELDS}
    box = [vals.pop(f"box_{k}") for k in BOX_KEYS]
    rec = {k: vals[k] for k in RECORD_FIELDS if k != "box"}
    rec["box"] = None if any(v is None for v in box) else dict(zip(BOX_KEYS, box, strict=True))
    return {k: rec[k] for k in RECORD_FIELDS}
