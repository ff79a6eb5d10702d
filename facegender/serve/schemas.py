"""The API's shapes: the prediction response (its results and faces come from their one
definition in infer/records.py), the single error body every refusal uses, the error codes, and
the OpenAPI description of the request body (read by serve/bodies.py, not by FastAPI)."""

from __future__ import annotations

from typing import Any

from ..errors import MissingDependency

try:
    from fastapi import HTTPException
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, Field
except ImportError as _exc:  # the service is an extra: say which one
    raise MissingDependency(f"'{_exc.name}' is not installed; install the server with: "
                            "pip install \"facegender[serve]\"") from _exc

from ..infer.record_model import ImageOut
from .guard import error_body


class PredictResponse(BaseModel):
    model: str
    results: list[ImageOut]


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
                          "description": "one or more photos (the field may also be named "
                                         "'file'); form fields tta / largest also work"},
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
            },
            "required": ["images"],
        }},
    },
}
