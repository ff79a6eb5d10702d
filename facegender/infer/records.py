"""The one record type for a face: what the CLI's CSV/JSON, `ImageResult.records()`, the REST API
and the web page all produce.

`FaceRecord` (pydantic) is the single definition: docs/face-record.schema.json is its JSON Schema
(`python tools/make_record_schema.py` rewrites it; a test fails when they differ) and the server's
OpenAPI document is generated from the same class. Records travel as plain dicts (building a
pydantic object per face would cost more than classifying it); `RECORD_FIELDS` is their key order.
CSV cannot hold the box object, so `flatten` spreads it over box_x, box_y, box_w, box_h and
`unflatten` reads such a row back into a record.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Box(BaseModel):
    """A face box in pixels of the upright image (EXIF orientation applied): top-left corner
    (x, y), width w and height h."""

    model_config = ConfigDict(extra="forbid")
    x: float = Field(description="left edge, pixels from the image's left")
    y: float = Field(description="top edge, pixels from the image's top")
    w: float = Field(description="width in pixels")
    h: float = Field(description="height in pixels")


FaceSource = Literal["detector", "whole_image"]


class FaceRecord(BaseModel):
    """One face of one image (or, with `face` null, an image in which no face was found or
    that could not be read: one such row per image, so no input goes missing from a table)."""

    model_config = ConfigDict(extra="forbid", title="FaceRecord")
    path: str = Field(description="the input as given: a path, 'archive.tar::member', an URL, "
                                  "an uploaded file's name, '-' for stdin")
    face: int | None = Field(description="index of the face in its image (0 = highest detector "
                                         "score); null when the image gave no face")
    box: Box | None = Field(description="where the face is: x, y, w, h in pixels of the upright "
                                        "image; the whole image when face_source is whole_image")
    det_score: float | None = Field(description="face-detector confidence in [0, 1]; null when "
                                                "no detector ran (face_source whole_image)")
    label: Literal["male", "female", "no_face"] | None = Field(
        description="the model's call: 'male' when prob_male >= the model's threshold, else "
                    "'female'; read `unsure` before trusting it. 'no_face' on the one row of an "
                    "image where no face was found; null on an error row")
    score: float | None = Field(description="calibrated probability of `label` (as in Hugging "
                                            "Face's image-classification output)")
    prob_male: float | None = Field(description="calibrated probability that the face is male")
    prob_female: float | None = Field(description="calibrated probability that the face is "
                                                  "female (1 - prob_male)")
    unsure: bool | None = Field(description="true when |prob_male - 0.5| is below the model's "
                                            "unsure band: the label is a guess")
    face_source: FaceSource | None = Field(
        description="how the classified pixels were found: 'detector' (a detected face, cut "
                    "with the model's crop policy) or 'whole_image' (no face was detected in an "
                    "image that is itself a face crop, or detection was turned off, so the "
                    "whole image was classified as one face)")
    frame: int | None = Field(description="video frame number (0-based); null "
                                                        "for still images")
    timestamp: float | None = Field(description="video time of the frame in "
                                                              "seconds; null for still images")
    error: str | None = Field(description="why the image could not be used (the other fields "
                                          "are then null); null when it was")


RECORD_FIELDS: list[str] = list(FaceRecord.model_fields)
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
        return s

    vals = {k: cast(k, row.get(k)) for k in CSV_FIELDS}
    box = [vals.pop(f"box_{k}") for k in BOX_KEYS]
    rec = {k: vals[k] for k in RECORD_FIELDS if k != "box"}
    rec["box"] = None if any(v is None for v in box) else dict(zip(BOX_KEYS, box, strict=True))
    return {k: rec[k] for k in RECORD_FIELDS}


def record_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of FaceRecord, as written to docs/face-record.schema.json."""
    schema = FaceRecord.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def schema_text() -> str:
    return json.dumps(record_json_schema(), indent=2) + "\n"
