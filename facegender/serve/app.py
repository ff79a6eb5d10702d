"""HTTP service: `POST /v1/predict` (photos, and videos tracked as predict --track does),
`GET /v1/model`, `GET /healthz`, offline `/docs`, and an upload page at `/`. This module builds
the app (`create_app`), holds the bind rule (`check_bind`) and launches it (`serve`); the parts
live beside it, one concern each: schemas.py (response and error shapes), bodies.py (reading
and parsing request bodies in memory), pool.py (the Predictors, one per worker thread),
videos.py (telling a video upload from a photo, its limits and its result), routes.py (the
APIRouter and the `Service` state its routes share), pages.py (the upload page and offline
docs) and guard.py (API key, origins, per-client limits).

Every refusal has one JSON shape, `{"status", "code", "message", "errors"}` (`errors`: per
option or per image details, often empty), validation errors and unknown routes included:
  400  no image in the request, malformed or too deeply nested JSON, bad option value, a
       video that cannot be read (bad_video: its name and the reason)
  401  API key missing or wrong (when the server has one; /healthz stays open)
  403  a request from another web site (an Origin that is not this server or --cors-origin)
  408  the body did not arrive in time (`body_timeout` in all, `idle_timeout` between chunks)
  413  request body over `max_upload_bytes` (base64 JSON counts at its encoded size), more
       than `max_files` images in one request, or videos that would have more than
       `max_video_frames` frames classified (video_too_long)
  415  a body that is neither multipart/form-data nor JSON
  429  one client over its rate (`rate_limit`/s), with `per_client` requests in flight, or
       with 5 wrong API keys within a minute (guard.AUTH_FAILURES)
  503  more than `max_pending` requests in flight (Retry-After: 1)
A slow client holds at most `per_client` slots, and only until its body times out, so slow or
idle uploads cannot lock out the others. A file that is not an image, is broken, or has more
than `max_pixels` pixels does not fail the request: its own result carries `"error":
"<reason>"` and the other files are answered (200). Neither image bytes nor the key are logged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..errors import FaceGenderError, MissingDependency, require
from ..version import __version__

try:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as _exc:  # the service is an extra: say which one
    raise MissingDependency(f"'{_exc.name}' is not installed; install the server with: "
                            "pip install \"facegender[serve]\"") from _exc

from ..io.images import DEFAULT_MAX_PIXELS
from .bodies import DEFAULT_BODY_TIMEOUT, DEFAULT_IDLE_TIMEOUT
from .guard import API_KEY_ENV, Guard, is_loopback, resolve_api_key
from .pages import STATIC_DIR, swagger_dir
from .pool import PredictorPool
from .routes import Service, model_summary, router
from .schemas import CODES, PredictResponse, error_response

log = logging.getLogger("facegender.serve")

DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # a whole request; phone photos are 2-8 MB
DEFAULT_MAX_FILES = 16
DEFAULT_MAX_PENDING = 64  # requests admitted at once (being read, queued or predicted)
DEFAULT_PER_CLIENT = 8  # requests of one client address in flight at once
DEFAULT_RATE_LIMIT = 50.0  # requests a second per client address (bursts of twice that)
# Measured with benchmarks/serve_load.py on 2 cores (50 clients, one 224 px face, ONNX): one
# Predictor ~165 req/s, two ~280 (one thread decodes while the other runs the model) for 8 MB
# more; three or four no better.
DEFAULT_WORKERS = 2
DEFAULT_MAX_VIDEO_FRAMES = 600  # a request's videos: 10 minutes at one frame a second

__all__ = ["PredictResponse", "check_bind", "create_app", "is_loopback", "serve"]


def create_app(model: str | Path | None = None, *, backend: str = "auto",
               workers: int = DEFAULT_WORKERS, threads: int | None = None, detect: bool | None = None,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, max_files: int = DEFAULT_MAX_FILES,
               max_pixels: int | None = None, max_pending: int = DEFAULT_MAX_PENDING,
               batch_size: int = 64, warm_up: bool = True, api_key: str | None = None,
               cors_origins: tuple[str, ...] | list[str] = (),
               rate_limit: float = DEFAULT_RATE_LIMIT, per_client: int = DEFAULT_PER_CLIENT,
               body_timeout: float = DEFAULT_BODY_TIMEOUT,
               idle_timeout: float = DEFAULT_IDLE_TIMEOUT, device: str | None = None,
               strict: bool = False, detector: str = "auto",
               max_video_frames: int = DEFAULT_MAX_VIDEO_FRAMES) -> FastAPI:
    """Build the service around one model folder (default: the packaged model).

    The model is loaded here, before any port is bound, so a bad model path fails at once.
    `workers` Predictors run in as many threads (each engine gets cpu_count/workers threads
    unless `threads` is given); `detect` overrides the model's crop policy.
    `api_key` (default: the FACEGENDER_API_KEY environment variable; "" for none) is required
    on every route but /healthz; `cors_origins` are the other web sites allowed to call it;
    `rate_limit` (requests/s, 0: none) and `per_client` (in flight, 0: none) are per client
    address; `body_timeout` / `idle_timeout` bound how long a body may take to arrive.
    `device` (``cpu``, ``cuda[:N]``) is where the classifier runs, as for predict; an unusable
    device fails here, before any port is bound. `detector` is the face detector a request
    gets unless it names one; `max_video_frames` bounds the frames one request's videos may
    have classified (413 above).
    """
    api_key = resolve_api_key(api_key)  # a weak key is refused here, before any work
    max_pixels = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
    pool = PredictorPool(model, workers=workers, backend=backend, threads=threads, detect=detect,
                         max_pixels=max_pixels, batch_size=batch_size, device=device,
                         strict=strict, detector=detector)
    if warm_up:
        pool.warm_up()
    model_name = "default" if model in (None, "", "default") else pool.first.model_dir.name
    limits = {"max_upload_bytes": max_upload_bytes, "max_files": max_files,
              "max_pixels": max_pixels, "max_pending": max_pending,
              "body_timeout_s": body_timeout, "idle_timeout_s": idle_timeout,
              "per_client": per_client, "rate_limit_per_s": rate_limit,
              "max_video_frames": max_video_frames}

    # No shutdown hook for the executor: its idle threads end with the process, and the app
    # stays usable across several TestClient/uvicorn runs.
    app = FastAPI(
        title="facegender", version=__version__,
        docs_url=None, redoc_url=None,  # the defaults load Swagger UI / ReDoc from a CDN
        description="For each face in a photo: male or female with a calibrated probability, "
                    "or unsure. Photos are processed in memory and never stored.")
    app.state.service = Service(
        pool=pool, model_name=model_name, summary=model_summary(pool.first, model_name, limits),
        max_upload_bytes=max_upload_bytes, max_files=max_files, max_pending=max_pending,
        body_timeout=body_timeout, idle_timeout=idle_timeout, max_video_frames=max_video_frames)
    app.add_middleware(Guard, api_key=api_key, cors_origins=tuple(cors_origins),
                       rate=rate_limit, burst=max(1, int(2 * rate_limit)), per_client=per_client)
    if cors_origins:  # only when asked: by default no other site may read the answers
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins),
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"])
    # Every refusal in the API's one error shape, FastAPI's own and unknown routes included.
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(Exception, _crashed)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    ui = swagger_dir()
    if ui is not None:
        app.mount("/docs-assets", StaticFiles(directory=ui), name="docs-assets")
    app.include_router(router)
    return app


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = getattr(exc, "code", None) or CODES.get(exc.status_code, "error")
    return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [{"where": ".".join(str(x) for x in e.get("loc", ())),
               "message": str(e.get("msg", ""))[:200]} for e in exc.errors()]
    where = ", ".join(e["where"] for e in errors) or "the request"
    return error_response(400, "invalid_option", f"invalid value for {where}", errors)


async def _crashed(request: Request, exc: Exception) -> JSONResponse:
    log.error("internal error on %s: %s", request.url.path, type(exc).__name__,
              exc_info=exc)
    return error_response(500, "internal_error",
                          f"the server failed on this request ({type(exc).__name__})")


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
    api_key = resolve_api_key(api_key)
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
