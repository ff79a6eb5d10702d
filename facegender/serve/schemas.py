"""The API's shapes: the prediction response (its results and faces come from their one
definition in infer/records.py), the single error body every refusal uses, the error codes, and
the OpenAPI description of the request body (read by serve/bodies.py, not by FastAPI)."""

from __future__ import annotations

from typing import Any

from ..errors import MissingDependency

try:
    from fastapi import HTTPException
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, Field, create_model
except ImportError as _exc:  # the service is an extra: say which one
    raise MissingDependency(f"'{_exc.name}' is not installed; install the server with: "
                            "pip install \"facegender[serve]\"") from _exc

from ..faces.kinds import DETECTORS
from ..infer.record_model import FaceRecord, ImageOut
from ..infer.video_tracks import TRACK_COLUMNS, TRACK_ROW_FIELDS
from .guard import error_body

# A video's face rows: the face record (infer/records.py RECORD) and its track's columns.
FrameFace = create_model(  # type: ignore[call-overload]
    "FrameFace", __base__=FaceRecord,
    track_id=(int | None, Field(description="the face's track, one id per person in the video")),
    track_label=(str | None, Field(description="the track's one label (null: too short)")),
    track_prob_male=(float | None, Field(description="the track's calibrated p(male)")),
    track_unsure=(bool | None, Field(description="the track's label is a guess")))
# One row per track (infer/video_tracks.py TRACK_ROW_FIELDS, in that order).
_TRACK_TYPES = {"path": str, "track_id": int, "label": str | None, "score": float | None,
                "prob_male": float, "unsure": bool, "frames": int, "first_frame": int,
                "last_frame": int, "start": float, "end": float, "seconds": float,
                "segments": int, "face_px": float, "det_score": float, "flips": int,
                "flip_rate": float}
TrackOut = create_model("TrackOut", **{k: (_TRACK_TYPES[k], ...)  # type: ignore[call-overload]
                                       for k in TRACK_ROW_FIELDS})
if list(FrameFace.model_fields)[-len(TRACK_COLUMNS):] != TRACK_COLUMNS:
    raise RuntimeError("FrameFace's track fields differ from video_tracks.TRACK_COLUMNS")


# An uploaded video's result: a photo's fields (records.py IMAGE, as ImageOut), `faces` being
# every face of every sampled frame with its track; then the tracks and their summary.
VideoOut = create_model(  # type: ignore[call-overload]
    "VideoOut", __base__=ImageOut,
    faces=(list[FrameFace], Field(description="one record per face per sampled frame (frame, "  # type: ignore[valid-type]
                                  "timestamp; with track=true its track_* columns)")),
    duration=(float, Field(description="seconds of video the sampled frames stand for")),
    sampling=(str, Field(description="which frames were classified, e.g. 'every 1 s'")),
    frames=(int, Field(description="sampled frames")),
    tracks=(list[TrackOut], Field(description="one row per track (empty with track=false)")),  # type: ignore[valid-type]
    summary=(dict[str, Any] | None, Field(description="screen time, person-seconds and tracks "
                                          "by label with bootstrap intervals, as predict --track "
                                          "--summary writes; null with track=false")))


class PredictResponse(BaseModel):
    model: str
    results: list[ImageOut | VideoOut]  # type: ignore[valid-type]


class ApiErrorBody(BaseModel):
    """Every refusal of the API, whatever its status."""

    status: int = Field(description="the HTTP status, repeated")
    code: str = Field(description="a stable machine-readable name, e.g. too_large, unauthorized")
    message: str = Field(description="what went wrong and what to do, for people")
    errors: list[dict[str, Any]] = Field(description="details per option or image (may be empty)")


ERROR_RESPONSES = {code: {"model": ApiErrorBody} for code in (400, 401, 403, 408, 413, 415, 429, 503)}
# A name for each status when the code raising it gave none.
CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 408: "body_timeout", 413: "too_large",
          415: "unsupported_media_type", 422: "invalid_request", 429: "rate_limited",
          500: "internal_error", 503: "busy"}


class ApiError(HTTPException):
    """An HTTPException with the API's error code."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status, message, headers)
        self.code = code


def error_response(status: int, code: str, message: str, errors: list | None = None,
                    headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, code, message, errors), status_code=status,
                        headers=headers)

REQUEST_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": {
            "type": "object",
            "properties": {
                # format=binary is what makes Swagger UI 5 offer a file picker.
                "files": {"type": "array", "items": {"type": "string", "format": "binary",
                                                     "contentMediaType": "application/octet-stream"},
                          "description": "one or more photos or videos (the field may also "
                                         "be named 'file'); form fields tta / largest / "
                                         "track / every / detector also work"},
            },
            "required": ["files"],
        }},
        "application/json": {"schema": {
            "type": "object",
            "properties": {
                "images": {"type": "array", "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string"},
                                   "data": {"type": "string",
                                            "description": "base64 (a data: URL is accepted)"}},
                    "required": ["data"],
                }},
                "tta": {"type": "boolean"},
                "largest": {"type": "boolean"},
                "track": {"type": "boolean"},
                "every": {"type": "number", "exclusiveMinimum": 0},
                "detector": {"type": "string", "enum": list(DETECTORS)},
            },
            "required": ["images"],
        }},
    },
}
