"""HTTP service: `POST /v1/predict`, `GET /v1/model`, `GET /healthz`, offline `/docs`, and an
upload page at `/`.

Request bodies are read here, into memory, with the size limit enforced while they stream in:
Starlette's form parser would spool every file part over 1 MB to a temporary file on disk, and
no uploaded photo should ever touch the disk. Model calls run in a bounded thread pool with one
Predictor per worker thread, so the event loop never does CPU work and no Predictor is shared
between two requests at once (its options, e.g. `tta`, are set per request).

Every refusal has one JSON shape, `{"status", "code", "message", "errors"}` (`errors`: per
option or per image details, often empty), validation errors and unknown routes included:
  400  no image in the request, malformed or too deeply nested JSON, bad option value
  401  API key missing or wrong (when the server has one; /healthz stays open)
  403  a request from another web site (an Origin that is not this server or --cors-origin)
  408  the body did not arrive in time (`body_timeout` in all, `idle_timeout` between chunks)
  413  request body over `max_upload_bytes` (base64 JSON counts at its encoded size), or more
       than `max_files` images in one request
  415  a body that is neither multipart/form-data nor JSON
  429  one client over its rate (`rate_limit`/s) or with `per_client` requests in flight
  503  more than `max_pending` requests in flight (Retry-After: 1)
A slow client holds at most `per_client` slots, and only until its body times out, so slow or
idle uploads cannot lock out the others. A file that is not an image, is broken, or has more
than `max_pixels` pixels does not fail the request: its own result carries `"error":
"<reason>"` and the other files are answered (200). Neither image bytes nor the key are logged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import json
import logging
import os
import queue
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import FaceGenderError, MissingDependency, require
from ..models import modelfile
from ..version import __version__

try:
    from fastapi import FastAPI, HTTPException, Query, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from pydantic import BaseModel, Field
    from python_multipart.multipart import MultipartParser, parse_options_header
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import ClientDisconnect
except ImportError as _exc:  # the service is an extra: say which one
    raise MissingDependency(f"'{_exc.name}' is not installed; install the server with: "
                            "pip install \"facegender[serve]\"") from _exc

from ..infer.predictor import ImageResult, Predictor
from ..infer.record_model import ImageOut
from ..infer.records import image_record
from ..io.images import DEFAULT_MAX_PIXELS
from .guard import Guard, error_body

log = logging.getLogger("facegender.serve")

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # a whole request; phone photos are 2-8 MB
DEFAULT_MAX_FILES = 16
DEFAULT_MAX_PENDING = 64  # requests admitted at once (being read, queued or predicted)
DEFAULT_BODY_TIMEOUT = 60.0  # seconds for a whole body (20 MB at 2.7 Mbit/s)
DEFAULT_IDLE_TIMEOUT = 10.0  # seconds without a byte of the body
DEFAULT_PER_CLIENT = 8  # requests of one client address in flight at once
DEFAULT_RATE_LIMIT = 50.0  # requests a second per client address (bursts of twice that)
MAX_JSON_DEPTH = 8  # {"images": [{"data": ...}]} needs 3
MAX_JSON_NUMBER_DIGITS = 100
API_KEY_ENV = "FACEGENDER_API_KEY"
# Measured with benchmarks/serve_load.py on 2 cores (50 clients, one 224 px face, ONNX): one
# Predictor ~165 req/s, two ~280 (one thread decodes while the other runs the model) for 8 MB
# more; three or four no better.
DEFAULT_WORKERS = 2
CARD_EXCERPT_CHARS = 2000
PARSE_INLINE_BYTES = 1024 * 1024

# The page may load only what this server sends: no CDN, fonts or trackers, even by accident.
PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


# -- response shapes (documentation and tests; the handler builds plain dicts for speed). Both
# come from their one definition in infer/records.py: each face is the FaceRecord the CLI and
# ImageResult.records() produce too.
class PredictResponse(BaseModel):
    model: str
    results: list[ImageOut]


class ApiErrorBody(BaseModel):
    """Every refusal of the API, whatever its status."""

    status: int = Field(description="the HTTP status, repeated")
    code: str = Field(description="a stable machine-readable name, e.g. too_large, unauthorized")
    message: str = Field(description="what went wrong and what to do, for people")
    errors: list[dict[str, Any]] = Field(description="details per option or image (may be empty)")


_ERRORS = {code: {"model": ApiErrorBody} for code in (400, 401, 403, 408, 413, 415, 429, 503)}
# A name for each status when the code raising it gave none.
_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 408: "body_timeout", 413: "too_large",
          415: "unsupported_media_type", 422: "invalid_request", 429: "rate_limited",
          500: "internal_error", 503: "busy"}


class ApiError(HTTPException):
    """An HTTPException with the API's error code."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status, message, headers)
        self.code = code


def _error_response(status: int, code: str, message: str, errors: list | None = None,
                    headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, code, message, errors), status_code=status,
                        headers=headers)

_REQUEST_BODY = {
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


@dataclass
class _Upload:
    name: str
    data: bytes | None
    error: str | None = None  # set when the bytes could not even be extracted (bad base64)


class _Runner:
    """A fixed set of Predictors, each used by one thread at a time.

    ONNX Runtime sessions may be shared, but the Predictor carries per-request options and the
    detector's thread safety is not promised, so each worker thread borrows a whole Predictor.
    """

    def __init__(self, model: str | Path | None, *, workers: int, backend: str,
                 threads: int | None, detect: bool | None, max_pixels: int, batch_size: int,
                 device: str | None = None):
        self.workers = max(1, int(workers))
        # Split the cores between workers instead of letting each engine grab all of them.
        threads = threads or max(1, (os.cpu_count() or 1) // self.workers)
        self.batch_size = batch_size
        self.predictors = [Predictor(model, backend=backend, threads=threads, detect=detect,
                                     max_pixels=max_pixels, device=device)
                           for _ in range(self.workers)]
        self._free: queue.SimpleQueue[Predictor] = queue.SimpleQueue()
        for p in self.predictors:
            self._free.put(p)
        self.executor = ThreadPoolExecutor(self.workers, thread_name_prefix="facegender-predict")

    @property
    def first(self) -> Predictor:
        return self.predictors[0]

    def warm_up(self) -> None:
        """One tiny prediction per Predictor, so the first real request is not the slow one."""
        from PIL import Image

        img = Image.new("RGB", (64, 64), (128, 128, 128))
        for p in self.predictors:
            p.predict([img], batch_size=1, workers=1)

    def _predict(self, blobs: list[bytes], tta: bool | None, largest: bool
                 ) -> list[ImageResult]:
        # Never blocks: the executor runs at most `workers` of these, one per Predictor.
        p = self._free.get()
        try:
            return p.predict(blobs, batch_size=self.batch_size,
                             workers=min(len(blobs), 4, os.cpu_count() or 1),
                             tta=tta, largest=largest)
        finally:
            self._free.put(p)

    async def predict(self, blobs: list[bytes], tta: bool | None, largest: bool
                      ) -> list[ImageResult]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self._predict, blobs, tta, largest)


# -- request reading
def _parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off", ""):
        return False
    raise ApiError(400, "invalid_option",
                   f"option '{name}' must be true or false, not {str(value)[:40]!r}")


def _too_large(limit: int) -> HTTPException:
    return ApiError(413, "too_large", f"request body is larger than the limit of {_mb(limit)}; send "
                              "fewer or smaller photos")


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:.0f} MB" if n >= 1024 * 1024 else f"{n:,} bytes"


class _Disconnected(Exception):
    """The client went away while sending its body: nobody to answer."""


async def _read_body(request: Request, limit: int, body_timeout: float = DEFAULT_BODY_TIMEOUT,
                     idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> bytes:
    """The whole body in memory, refused as soon as it is known to be over `limit`, or when it
    does not arrive within `body_timeout` seconds (or `idle_timeout` without a byte): a slow
    client cannot hold a request slot for ever."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)  # before reading a byte of it
    buf = bytearray()
    deadline = time.monotonic() + body_timeout
    chunks = request.stream().__aiter__()
    while True:
        left = deadline - time.monotonic()
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), min(idle_timeout, max(left, 0)))
        except StopAsyncIteration:
            break
        except TimeoutError:
            slow = "in time" if left <= idle_timeout else f"for {idle_timeout:g} s"
            raise ApiError(408, "body_timeout",
                           f"the request body did not arrive {slow} (limit {body_timeout:g} s in "
                           f"all, {idle_timeout:g} s without data; {len(buf):,} bytes received)"
                           ) from None
        except ClientDisconnect:
            raise _Disconnected(len(buf)) from None
        buf += chunk
        if len(buf) > limit:  # chunked uploads, or a Content-Length that lied
            raise _too_large(limit)
    return bytes(buf)


def _json_depth(body: bytes) -> int:
    """Deepest nesting of [ and { outside strings (numpy: fast on megabytes of base64)."""
    import re

    import numpy as np

    if b"[" not in body and b"{" not in body:
        return 0
    bare = re.sub(rb'"(?:[^"\\]|\\.)*"', b'""', body)
    a = np.frombuffer(bare, np.uint8)
    step = (a == ord("[")).astype(np.int32) + (a == ord("{")) - (a == ord("]")) - (a == ord("}"))
    return int(np.cumsum(step).max(initial=0))


def _bounded_int(s: str) -> int:
    if len(s.lstrip("-")) > MAX_JSON_NUMBER_DIGITS:
        raise ValueError(f"a number of {len(s):,} digits (the limit is {MAX_JSON_NUMBER_DIGITS})")
    return int(s)


def _bounded_float(s: str) -> float:
    if len(s) > MAX_JSON_NUMBER_DIGITS:
        raise ValueError(f"a number of {len(s):,} characters (the limit is "
                         f"{MAX_JSON_NUMBER_DIGITS})")
    return float(s)


def _no_constant(s: str) -> Any:
    raise ValueError(f"{s} is not valid JSON")


def _parse_multipart(body: bytes, content_type: str, max_files: int
                     ) -> tuple[list[_Upload], dict[str, str]]:
    """Every part with a filename (or named files/file) is an image; short text parts are options."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "bad_multipart", "multipart body without a boundary")
    uploads: list[_Upload] = []
    fields: dict[str, str] = {}
    part: dict[str, Any] = {}
    header: list[bytes] = [b"", b""]

    def on_part_begin() -> None:
        part.clear()
        part.update(headers={}, data=bytearray())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header[0] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header[1] += data[start:end]

    def on_header_end() -> None:
        part["headers"][header[0].lower()] = header[1]
        header[0] = header[1] = b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part["data"] += data[start:end]

    def on_part_end() -> None:
        _, opts = parse_options_header(part["headers"].get(b"content-disposition", b""))
        field = opts.get(b"name", b"").decode("utf-8", "replace")
        filename = opts.get(b"filename")
        data: bytearray = part["data"]
        if filename is not None or field in ("files", "file"):
            if filename == b"" and not data:
                return  # a browser form's empty file input
            if len(uploads) >= max_files:
                raise ApiError(413, "too_many_files",
                               f"too many files: the limit is {max_files} per request")
            name = (filename or field.encode()).decode("utf-8", "replace") or f"file {len(uploads)}"
            uploads.append(_Upload(name=name, data=bytes(data)))
        else:
            fields[field] = data[:100].decode("utf-8", "replace")

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_part_data": on_part_data, "on_part_end": on_part_end,
        "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end,
    })
    try:
        parser.write(body)
        parser.finalize()
    except HTTPException:
        raise
    except Exception as exc:  # python-multipart raises its own types on malformed bodies
        raise ApiError(400, "bad_multipart", f"malformed multipart body ({exc})") from None
    return uploads, fields


def _decode_base64(s: str) -> bytes:
    if s.startswith("data:") and "," in s[:200]:
        s = s.split(",", 1)[1]  # data:image/jpeg;base64,....
    s = "".join(s.split())
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        # The URL-safe alphabet, padding optional; validate=True refuses anything else.
        s = s.replace("-", "+").replace("_", "/")
        return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)


def _parse_json(body: bytes, max_files: int) -> tuple[list[_Upload], dict[str, Any]]:
    depth = _json_depth(body)
    if depth > MAX_JSON_DEPTH:
        raise ApiError(400, "bad_json", f"JSON nested {depth} levels deep; the limit is "
                                        f"{MAX_JSON_DEPTH}")
    try:
        doc = json.loads(body, parse_int=_bounded_int, parse_float=_bounded_float,
                         parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError is one
        raise ApiError(400, "bad_json", f"body is not valid JSON ({str(exc)[:200]})") from None
    images = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(images, list):
        raise ApiError(400, "bad_json",
                       'JSON body must be {"images": [{"name": "...", "data": "<base64>"}]}')
    if len(images) > max_files:
        raise ApiError(413, "too_many_files", f"too many files: the limit is {max_files} per request")
    uploads = []
    for i, item in enumerate(images):
        if isinstance(item, str):
            item = {"data": item}
        if not isinstance(item, dict) or not isinstance(item.get("data"), str):
            raise ApiError(400, "bad_json",
                           f"images[{i}] must be an object with a base64 'data' string")
        name = str(item.get("name") or f"image {i}")
        try:
            uploads.append(_Upload(name=name, data=_decode_base64(item["data"])))
        except (binascii.Error, ValueError):
            uploads.append(_Upload(name=name, data=None, error="data is not valid base64"))
    return uploads, {k: doc[k] for k in ("tta", "largest") if k in doc}


# -- response building
def _image_json(name: str, res: ImageResult | None, error: str | None = None) -> dict[str, Any]:
    if res is None:
        return image_record(name, error=error)
    # The upload's own name, not the "<bytes 0>" the Predictor knows it by.
    faces = [{**r, "path": name} for r in res.records() if r["face"] is not None]
    return image_record(name, width=res.width, height=res.height, faces=faces, error=res.error)


def _model_summary(p: Predictor, name: str, limits: dict[str, int]) -> dict[str, Any]:
    cfg = p.config
    card = p.model_dir / modelfile.CARD_NAME
    excerpt = card.read_text(errors="replace")[:CARD_EXCERPT_CHARS] if card.is_file() else None
    return {
        "name": name, "backend": p.backend.name, "arch": cfg.arch, "labels": cfg.labels,
        "input_size": cfg.input_size, "mean": cfg.mean, "std": cfg.std,
        "threshold": cfg.threshold, "temperature": cfg.temperature, "unsure_band": p.unsure_band,
        "tta": p.tta,
        "crop": cfg.crop, "detect": p.detect, "metrics": cfg.metrics,
        "facegender_version": cfg.facegender_version, "server_version": __version__,
        "card_excerpt": excerpt, "limits": limits,
    }


def _docs_page(app: FastAPI) -> HTMLResponse:
    """Swagger UI from the swagger-ui-bundle-v2 package, else a plain list of the endpoints."""
    from fastapi.openapi.docs import get_swagger_ui_html

    ui = _swagger_dir()
    if ui is not None:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
            # validatorUrl would have the page fetch a badge from swagger.io.
            swagger_ui_parameters={"validatorUrl": None, "defaultModelsExpandDepth": 0})
    from html import escape

    rows = []
    for path, ops in app.openapi().get("paths", {}).items():
        for method, op in ops.items():
            rows.append(f"<li><code>{method.upper()} {escape(path)}</code> — "
                        f"{escape(op.get('summary', ''))}<p>{escape(op.get('description', ''))}</p></li>")
    return HTMLResponse(
        f"<!doctype html><meta charset=utf-8><title>{escape(app.title)} API</title>"
        f"<h1>{escape(app.title)} API</h1><p>Interactive docs need <code>pip install "
        f"swagger-ui-bundle-v2</code>. The machine-readable schema is at "
        f"<a href='/openapi.json'>/openapi.json</a>.</p><ul>{''.join(rows)}</ul>")


def _swagger_dir() -> Path | None:
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    path = Path(str(swagger_ui_path))
    # swagger-ui-bundle 1.x (the same module name) ships Swagger UI 4, which cannot read the
    # OpenAPI 3.1 that FastAPI writes.
    major = path.name.removeprefix("swagger-ui-").split(".")[0]
    if not major.isdigit() or int(major) < 5 or not (path / "swagger-ui-bundle.js").is_file():
        return None
    return path


# -- the app
def create_app(model: str | Path | None = None, *, backend: str = "auto",
               workers: int = DEFAULT_WORKERS, threads: int | None = None, detect: bool | None = None,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, max_files: int = DEFAULT_MAX_FILES,
               max_pixels: int | None = None, max_pending: int = DEFAULT_MAX_PENDING,
               batch_size: int = 64, warm_up: bool = True, api_key: str | None = None,
               cors_origins: tuple[str, ...] | list[str] = (),
               rate_limit: float = DEFAULT_RATE_LIMIT, per_client: int = DEFAULT_PER_CLIENT,
               body_timeout: float = DEFAULT_BODY_TIMEOUT,
               idle_timeout: float = DEFAULT_IDLE_TIMEOUT, device: str | None = None) -> FastAPI:
    """Build the service around one model folder (default: the packaged model).

    The model is loaded here, before any port is bound, so a bad model path fails at once.
    `workers` Predictors run in as many threads (each engine gets cpu_count/workers threads
    unless `threads` is given); `detect` overrides the model's crop policy.
    `api_key` (default: the FACEGENDER_API_KEY environment variable; "" for none) is required
    on every route but /healthz; `cors_origins` are the other web sites allowed to call it;
    `rate_limit` (requests/s, 0: none) and `per_client` (in flight, 0: none) are per client
    address; `body_timeout` / `idle_timeout` bound how long a body may take to arrive.
    `device` (``cpu``, ``cuda[:N]``) is where the classifier runs, as for predict; an unusable
    device fails here, before any port is bound.
    """
    if api_key is None:
        api_key = os.environ.get(API_KEY_ENV) or None
    max_pixels = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
    runner = _Runner(model, workers=workers, backend=backend, threads=threads, detect=detect,
                     max_pixels=max_pixels, batch_size=batch_size, device=device)
    if warm_up:
        runner.warm_up()
    model_name = "default" if model in (None, "", "default") else runner.first.model_dir.name
    limits = {"max_upload_bytes": max_upload_bytes, "max_files": max_files,
              "max_pixels": max_pixels, "max_pending": max_pending,
              "body_timeout_s": body_timeout, "idle_timeout_s": idle_timeout,
              "per_client": per_client, "rate_limit_per_s": rate_limit}
    summary = _model_summary(runner.first, model_name, limits)
    pending = 0  # requests admitted now; only the event loop thread touches it

    # No shutdown hook for the executor: its idle threads end with the process, and the app
    # stays usable across several TestClient/uvicorn runs.
    app = FastAPI(
        title="facegender", version=__version__,
        docs_url=None, redoc_url=None,  # the defaults load Swagger UI / ReDoc from a CDN
        description="For each face in a photo: male or female with a calibrated probability, "
                    "or unsure. Photos are processed in memory and never stored.")
    app.state.runner = runner
    app.state.summary = summary
    app.add_middleware(Guard, api_key=api_key, cors_origins=tuple(cors_origins),
                       rate=rate_limit, burst=max(1, int(2 * rate_limit)), per_client=per_client)
    if cors_origins:  # only when asked: by default no other site may read the answers
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins),
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"])

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = getattr(exc, "code", None) or _CODES.get(exc.status_code, "error")
        return _error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"where": ".".join(str(x) for x in e.get("loc", ())),
                   "message": str(e.get("msg", ""))[:200]} for e in exc.errors()]
        where = ", ".join(e["where"] for e in errors) or "the request"
        return _error_response(400, "invalid_option", f"invalid value for {where}", errors)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s: %s", request.url.path, type(exc).__name__,
                  exc_info=exc)
        return _error_response(500, "internal_error",
                               f"the server failed on this request ({type(exc).__name__})")
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    ui = _swagger_dir()
    if ui is not None:
        app.mount("/docs-assets", StaticFiles(directory=ui), name="docs-assets")

    @app.post("/v1/predict", summary="Classify every face in one or more photos",
              response_model=PredictResponse, responses=_ERRORS,
              openapi_extra={"requestBody": _REQUEST_BODY})
    async def predict(
        request: Request,
        tta: bool | None = Query(None, description="also classify each face mirrored and "
                                 "average (default: as the model's config says)"),
        largest: bool = Query(False, description="only the largest face of each photo"),
    ) -> JSONResponse:
        """Send photos as multipart/form-data (field `files`, repeatable; `file` also works) or as
        JSON `{"images": [{"name": "a.jpg", "data": "<base64>"}]}`. Each photo gets one result in
        request order; a file that cannot be used gets an `error` and the others still succeed.
        Options `tta` and `largest` may be query parameters, form fields or JSON keys."""
        nonlocal pending
        if pending >= max_pending:
            return _error_response(503, "busy", "server busy, try again shortly",
                                   headers={"Retry-After": "1"})
        pending += 1
        try:
            return await _handle(request, tta, largest)
        except _Disconnected as exc:
            # One line, no traceback: a client going away is not the server's fault.
            client = request.client.host if request.client else "?"
            log.info("client %s disconnected while sending its body (%s bytes received)",
                     client, f"{exc.args[0]:,}")
            return _error_response(400, "client_disconnected", "the client went away")
        finally:
            pending -= 1

    async def _handle(request: Request, tta: bool | None, largest: bool) -> JSONResponse:
        ctype = request.headers.get("content-type", "")
        media = ctype.split(";", 1)[0].strip().lower()
        body = await _read_body(request, max_upload_bytes, body_timeout, idle_timeout)
        if not body:
            raise ApiError(400, "empty_request",
                           "empty request: send photos as multipart/form-data (field "
                           "'files') or JSON {\"images\": [...]}")
        options: dict[str, Any]
        if media == "multipart/form-data":
            parse, args = _parse_multipart, (body, ctype, max_files)
        elif media == "application/json" or media.endswith("+json"):
            parse, args = _parse_json, (body, max_files)
        else:
            raise ApiError(415, "unsupported_media_type",
                           f"unsupported content type {media[:100] or '(none)'!r}: send "
                           "multipart/form-data or application/json")
        # Parsing takes ~5 ms a MB: big bodies are parsed off the event loop.
        uploads, options = (await run_in_threadpool(parse, *args) if len(body) > PARSE_INLINE_BYTES
                            else parse(*args))
        del body
        if not uploads:
            raise ApiError(400, "no_photo", "no photo in the request: add one or more files "
                                            "(field 'files')")
        tta = _parse_bool("tta", options["tta"]) if "tta" in options else tta
        largest = _parse_bool("largest", options["largest"]) if "largest" in options else largest
        good = [u for u in uploads if u.data is not None]
        try:
            results = iter(await runner.predict([u.data for u in good], tta, largest)
                           if good else [])
        except Exception as exc:  # a bug or the machine (memory), never the photo: those are per-image
            log.exception("prediction failed")
            raise ApiError(500, "internal_error", f"prediction failed ({type(exc).__name__})"
                           ) from None
        out = [_image_json(u.name, None, u.error) if u.data is None else
               _image_json(u.name, next(results)) for u in uploads]
        return JSONResponse({"model": model_name, "results": out})

    @app.get("/v1/model", summary="The loaded model: config, calibration, metrics, limits")
    async def model_info() -> dict[str, Any]:
        return summary

    @app.get("/healthz", summary="Liveness: the model is loaded and the server answers")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "model": model_name, "backend": summary["backend"],
                "pending": pending}

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={
            "Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-cache"})

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return _docs_page(app)

    return app


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None, no_auth: bool = False) -> None:
    """Refuse to listen beyond loopback without an API key, unless the user said --no-auth:
    face photos are biometric data."""
    if not is_loopback(host) and not api_key and not no_auth:
        raise FaceGenderError(
            f"refusing to serve on {host} without an API key: anyone who can reach this port "
            f"could use it. Give --api-key KEY (or set {API_KEY_ENV}), or say --no-auth if "
            "another layer (a proxy, a firewall) already keeps strangers out")


def serve(model: str | Path | None = None, host: str = "127.0.0.1", port: int = 8000, *,
          log_level: str = "info", api_key: str | None = None, no_auth: bool = False,
          **options: Any) -> None:
    """Run the service with uvicorn until interrupted; `options` go to create_app. A host
    beyond loopback needs `api_key` (or FACEGENDER_API_KEY) unless `no_auth`."""
    uvicorn = require("uvicorn", "serve")
    api_key = api_key if api_key is not None else (os.environ.get(API_KEY_ENV) or None)
    check_bind(host, api_key, no_auth)
    # The service's own lines (a client that went away, a failed prediction) beside uvicorn's,
    # at the same level: uvicorn configures only its own loggers.
    flog = logging.getLogger("facegender")
    if not flog.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        flog.addHandler(handler)
    flog.setLevel(log_level.upper() if log_level.upper() in logging.getLevelNamesMapping()
                  else logging.INFO)
    app = create_app(model, api_key=api_key or "", **options)
    # timeout_keep_alive: an idle connection is closed after 5 s; headers over 16 KB refused.
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_keep_alive=5,
                h11_max_incomplete_event_size=16 * 1024, server_header=False)

