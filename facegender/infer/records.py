"""The one record type for a face, defined once here: `RECORD`, every field's name, JSON type,
meaning and CLI table header. Everything else derives from it: the key order RECORD_FIELDS, the
CSV columns, the CLI table's columns (TABLE_COLUMNS), the pydantic `FaceRecord` in
record_model.py, docs/face-record.schema.json (`python tools/make_record_schema.py`) and the
server's OpenAPI document; `IMAGE` likewise defines the server's per-image result.

The prediction path builds records as plain dicts (`face_record`, or
`FacePrediction.to_record`), which the CLI's CSV/JSON, `ImageResult.records()`, the REST API and
the web page all produce. This module does not import pydantic: predicting never needs it, and
importing it cost ~50 ms of a one-photo CLI call; building a pydantic object per face would cost
more than classifying it. CSV cannot hold the box object, so `flatten` spreads it over box_x,
box_y, box_w, box_h and `unflatten` reads such a row back into a record.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from ..io.writers import FORMULA_STARTS


class BoxType:
    """Marks the `box` field: a {x, y, w, h} object (record_model.Box)."""


class RecordField(NamedTuple):
    name: str
    type: Any  # the value's type (None allowed where the type says so); BoxType for the box
    description: str
    column: str | None = None  # header in the CLI table, when it differs from the name


RECORD: tuple[RecordField, ...] = (
    RecordField("path", str, "the input as given: a path, 'archive.tar::member', an URL, "
                "an uploaded file's name, '-' for stdin"),
    RecordField("face", int | None, "index of the face in its image (0 = highest detector "
                "score); null when the image gave no face"),
    RecordField("box", BoxType | None, "where the face is: x, y, w, h in pixels of the upright "
                "image; the whole image when face_source is whole_image", "box x,y,w,h"),
    RecordField("det_score", float | None, "face-detector confidence in [0, 1]; null when "
                "no detector ran (face_source whole_image)"),
    RecordField("label", Literal["male", "female", "no_face"] | None,
                "the model's call: 'male' when prob_male >= the model's threshold, else "
                "'female'; read `unsure` before trusting it. 'no_face' on the one row of an "
                "image where no face was found; null on an error row"),
    RecordField("score", float | None, "calibrated probability of `label` (as in Hugging "
                "Face's image-classification output)"),
    RecordField("prob_male", float | None, "calibrated probability that the face is male"),
    RecordField("prob_female", float | None, "calibrated probability that the face is "
                "female (1 - prob_male)"),
    RecordField("unsure", bool | None, "true when |prob_male - 0.5| is below the model's "
                "unsure band, or no face was found and the whole image was guessed: the label is a "
                "guess"),
    RecordField("face_source", Literal["detector", "whole_image", "tracked"] | None,
                "how the classified pixels were found: 'detector' (a detected face, cut "
                "with the model's crop policy) or 'whole_image' (no face was detected in an "
                "image that is itself a face crop, or detection was turned off, so the "
                "whole image was classified as one face), or 'tracked' (a video frame between two "
                "detections with --track --detect-period: the box moved along its track)",
                "source"),
    RecordField("frame", int | None, "video frame number (0-based); null for still images"),
    RecordField("timestamp", float | None, "video time of the frame in seconds; null for "
                "still images"),
    RecordField("error", str | None, "why the image could not be used (the other fields "
                "are then null); null when it was"),
)
RECORD_DOC = ("One face of one image (or, with `face` null, an image in which no face was found or\n"
              "that could not be read: one such row per image, so no input goes missing from a "
              "table).")
RECORD_FIELDS: list[str] = [f.name for f in RECORD]
BOX_KEYS = ("x", "y", "w", "h")
CSV_FIELDS: list[str] = [c for f in RECORD_FIELDS
                         for c in ([f"box_{k}" for k in BOX_KEYS] if f == "box" else [f])]
# The CLI table: the fields a person reads first, in that order, under their headers.
TABLE_COLUMNS: list[tuple[str, str]] = [
    (f.name, f.column or f.name)
    for name in ("path", "face", "label", "score", "prob_male", "box", "face_source", "error")
    for f in RECORD if f.name == name]


class FaceList:
    """Marks the `faces` field of an image result: a list of face records."""


# The server's result for one image: its faces are the records above.
IMAGE: tuple[RecordField, ...] = (
    RecordField("path", str, "the uploaded file's name (or the JSON image's name)"),
    RecordField("width", int | None, "width of the upright image in pixels"),
    RecordField("height", int | None, "height of the upright image in pixels"),
    RecordField("faces", FaceList, "one record per face found (empty: none found, or the image "
                "could not be used)"),
    RecordField("error", str | None, "why the image could not be used; null when it was"),
)


def image_record(path: str, *, width: int | None = None, height: int | None = None,
                 faces: list[dict[str, Any]] | None = None, error: str | None = None
                 ) -> dict[str, Any]:
    """One image's result as the server returns it (IMAGE's fields, in order)."""
    return {"path": path, "width": width, "height": height, "faces": faces or [], "error": error}


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
