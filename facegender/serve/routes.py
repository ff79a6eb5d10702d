"""The API's routes (one APIRouter): `POST /v1/predict`, `GET /v1/model`, `GET /healthz`, the
upload page at `/` and the docs at `/docs`. What they share (the Predictors, the limits, the
count of requests in flight) is one `Service` on `app.state.service`, set by the app factory."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from ..errors import MissingDependency
from ..models import modelfile
from ..version import __version__

try:
    from fastapi import APIRouter, Query, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
except ImportError as _exc:  # the service is an extra: say which one
    raise MissingDependency(f"'{_exc.name}' is not installed; install the server with: "
                            "pip install \"facegender[serve]\"") from _exc

from ..infer.predictor import ImageResult, Predictor
from ..infer.records import image_record
from .bodies import Disconnected, parse_bool, parse_json, parse_multipart, read_body
from .pages import PAGE_CSP, STATIC_DIR, docs_page
from .pool import PredictorPool
from .schemas import ERROR_RESPONSES, REQUEST_BODY, ApiError, PredictResponse, error_response

log = logging.getLogger("facegender.serve")

CARD_EXCERPT_CHARS = 2000
PARSE_INLINE_BYTES = 1024 * 1024


@dataclass
class Service:
    """One service's state, shared by its routes. `pending` counts the requests admitted now
    (being read, queued or predicted); only the event loop's thread changes it."""

    pool: PredictorPool
    model_name: str
    summary: dict[str, Any]
    max_upload_bytes: int
    max_files: int
    max_pending: int
    body_timeout: float
    idle_timeout: float
    pending: int = field(default=0)


router = APIRouter()


def _service(request: Request) -> Service:
    return request.app.state.service


# -- response building
def image_json(name: str, res: ImageResult | None, error: str | None = None) -> dict[str, Any]:
    if res is None:
        return image_record(name, error=error)
    # The upload's own name, not the "<bytes 0>" the Predictor knows it by.
    faces = [{**r, "path": name} for r in res.records() if r["face"] is not None]
    return image_record(name, width=res.width, height=res.height, faces=faces, error=res.error)


def model_summary(p: Predictor, name: str, limits: dict[str, int]) -> dict[str, Any]:
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


@router.post("/v1/predict", summary="Classify every face in one or more photos",
             response_model=PredictResponse, responses=ERROR_RESPONSES,
             openapi_extra={"requestBody": REQUEST_BODY})
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
    service = _service(request)
    if service.pending >= service.max_pending:
        return error_response(503, "busy", "server busy, try again shortly",
                              headers={"Retry-After": "1"})
    service.pending += 1
    try:
        return await _handle(service, request, tta, largest)
    except Disconnected as exc:
        # One line, no traceback: a client going away is not the server's fault.
        client = request.client.host if request.client else "?"
        log.info("client %s disconnected while sending its body (%s bytes received)",
                 client, f"{exc.args[0]:,}")
        return error_response(400, "client_disconnected", "the client went away")
    finally:
        service.pending -= 1


async def _handle(service: Service, request: Request, tta: bool | None, largest: bool
                  ) -> JSONResponse:
    ctype = request.headers.get("content-type", "")
    media = ctype.split(";", 1)[0].strip().lower()
    body = await read_body(request, service.max_upload_bytes, service.body_timeout,
                           service.idle_timeout)
    if not body:
        raise ApiError(400, "empty_request",
                       "empty request: send photos as multipart/form-data (field "
                       "'files') or JSON {\"images\": [...]}")
    options: dict[str, Any]
    if media == "multipart/form-data":
        parse, args = parse_multipart, (body, ctype, service.max_files)
    elif media == "application/json" or media.endswith("+json"):
        parse, args = parse_json, (body, service.max_files)
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
    tta = parse_bool("tta", options["tta"]) if "tta" in options else tta
    largest = parse_bool("largest", options["largest"]) if "largest" in options else largest
    good = [u for u in uploads if u.data is not None]
    try:
        results = iter(await service.pool.predict([u.data for u in good], tta, largest)
                       if good else [])
    except Exception as exc:  # a bug or the machine (memory), never the photo: those are per-image
        log.exception("prediction failed")
        raise ApiError(500, "internal_error", f"prediction failed ({type(exc).__name__})"
                       ) from None
    out = [image_json(u.name, None, u.error) if u.data is None else
           image_json(u.name, next(results)) for u in uploads]
    return JSONResponse({"model": service.model_name, "results": out})


@router.get("/v1/model", summary="The loaded model: config, calibration, metrics, limits")
async def model_info(request: Request) -> dict[str, Any]:
    return _service(request).summary


@router.get("/healthz", summary="Liveness: the model is loaded and the server answers")
async def healthz(request: Request) -> dict[str, Any]:
    service = _service(request)
    return {"status": "ok", "model": service.model_name, "backend": service.summary["backend"],
            "pending": service.pending}


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={
        "Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-cache"})


@router.get("/docs", include_in_schema=False)
async def docs(request: Request) -> HTMLResponse:
    return docs_page(request.app)
