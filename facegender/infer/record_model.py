"""The face record (and the server's per-image result) as pydantic models, generated from their
one definition in records.py (`RECORD`, `IMAGE`): docs/face-record.schema.json is FaceRecord's
JSON Schema (`python tools/make_record_schema.py` rewrites it; a test fails when they differ) and
the server's OpenAPI document uses the same classes. The prediction path builds the records as
plain dicts (records.py, which does not import pydantic).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from .records import IMAGE, RECORD, RECORD_DOC, BoxType, FaceList, RecordField, image_record


class Box(BaseModel):
    """A face box in pixels of the upright image (EXIF orientation applied): top-left corner
    (x, y), width w and height h."""

    model_config = ConfigDict(extra="forbid")
    x: float = Field(description="left edge, pixels from the image's left")
    y: float = Field(description="top edge, pixels from the image's top")
    w: float = Field(description="width in pixels")
    h: float = Field(description="height in pixels")


def _model(name: str, fields: tuple[RecordField, ...], doc: str | None,
           kinds: dict[Any, Any], **config: Any) -> type[BaseModel]:
    """A pydantic model with `fields` in order; `kinds` maps records.py's markers to models."""
    return create_model(name, __config__=ConfigDict(**config), __doc__=doc,  # type: ignore[call-overload]
                        **{f.name: (kinds.get(f.type, f.type), Field(description=f.description))
                           for f in fields})


FaceRecord = _model("FaceRecord", RECORD, RECORD_DOC, {BoxType | None: Box | None},
                    extra="forbid", title="FaceRecord")
ImageOut = _model("ImageOut", IMAGE, None, {FaceList: list[FaceRecord]})  # type: ignore[valid-type]
if list(ImageOut.model_fields) != list(image_record("")):  # the builder follows the definition
    raise RuntimeError("records.image_record's keys differ from records.IMAGE")


def record_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of FaceRecord, as written to docs/face-record.schema.json."""
    schema = FaceRecord.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def schema_text() -> str:
    return json.dumps(record_json_schema(), indent=2) + "\n"
