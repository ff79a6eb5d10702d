"""FaceRecord, the definition of the one record type for a face (pydantic): every field's type
and meaning. docs/face-record.schema.json is its JSON Schema (`python tools/make_record_schema.py`
rewrites it; a test fails when they differ) and the server's OpenAPI document is generated from
the same class. The prediction path builds records as plain dicts (records.py, which does not
import pydantic); their key order RECORD_FIELDS must be this class's field order, checked here
on import.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .records import RECORD_FIELDS


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


if list(FaceRecord.model_fields) != RECORD_FIELDS:  # the two definitions must not drift
    raise RuntimeError(f"records.RECORD_FIELDS {RECORD_FIELDS} differ from FaceRecord's fields "
                       f"{list(FaceRecord.model_fields)}")


def record_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of FaceRecord, as written to docs/face-record.schema.json."""
    schema = FaceRecord.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def schema_text() -> str:
    return json.dumps(record_json_schema(), indent=2) + "\n"
