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

from ..faces.kinds import DETECTORS
from ..infer.predictor import ImageResult, Predictor
from ..infer.records import image_record
from ..io.video import DEFAULT_EVERY
from .bodies import (
    Disconnected,
    parse_bool,
    parse_choice,
    parse_every,
    parse_json,
    parse_multipart,
    read_body,
)
from .pages import PAGE_CSP, STATIC_DIR, docs_page
from .pool import PredictorPool
from .schemas import ERROR_RESPONSES, REQUEST_BODY, ApiError, PredictResponse, error_response
from .videos import check_video_frames, is_video, plan_video, video_json

log = logging.getLogger("facegender.serve")

CARD_EXCERPT_CHARS = 2000
PARSE_INLINE_BYTES = 1024 * 1024


@dataclass
class Service:
    """One service's state, shared by its routes. `pending` counts the requests admitted now
    (being read, queued or predicted); only the event loop's thread changes it.
    `max_video_frames`: the frames one request's videos may have classified."""

    pool: PredictorPool
    model_name: str
    summary: dict[str, Any]
    max_upload_bytes: int
    max_files: int
    max_pending: int
    body_timeout: float
    idle_timeout: float
    max_video_frames: int
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
    track: bool = Query(True, description="videos: link faces across frames into tracks, one "
                        "label per track, with the screen-time summary (false: the sampled "
                        "frames' faces only)"),
    every: float = Query(DEFAULT_EVERY, gt=0, description="videos: seconds between the "
                         "classified frames"),
    detector: str | None = Query(None, description="face detector: " + ", ".join(DETECTORS)
                                 + " (default: the server's --detector)"),
) -> JSONResponse:
    """Send photos or videos as multipart/form-data (field `files`, repeatable; `file` also
    works) or as JSON `{"images": [{"name": "a.jpg", "data": "<base64>"}]}`. Each file gets one
    result in request order; a photo that cannot be used gets an `error` and the others still
    succeed. A video (told by its bytes: MP4/MOV, MKV/WebM, AVI, MPEG) is tracked: its result
    has every sampled frame's faces with their `track_id`, the `tracks` and the `summary`; a
    video that cannot be read is refused (400), and more frames than the server's limit (413).
    Options `tta`, `largest`, `track`, `every` and `detector` may be query parameters, form
    fields or JSON keys."""
    service = _service(request)
    if service.pending >= service.max_pending:
        return error_response(503, "busy", "server busy, try again shortly",
                              headers={"Retry-After": "1"})
    service.pending += 1
    query = {"tta": tta, "largest": largest, "track": track, "every": every,
             "detector": detector}
    try:
        return await _handle(service, request, query)
    except Disconnected as exc:
        # One line, no traceback: a client going away is not the server's fault.
        client = request.client.host if request.client else "?"
        log.info("client %s disconnected while sending its body (%s bytes received)",
                 client, f"{exc.args[0]:,}")
        return error_response(400, "client_disconnected", "the client went away")
    finally:
        service.pending -= 1


def _options(query: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The request's options: a form field or JSON key over the query parameter."""
    out = dict(query)
    for name in ("tta", "largest", "track"):
        if name in given:
            out[name] = parse_bool(name, given[name])
    if "every" in given:
        out["every"] = parse_every(given["every"])
    if out["detector"] is not None or "detector" in given:
        out["detector"] = parse_choice("detector", given.get("detector", out["detector"]),
                                       DETECTORS)
    return out


async def _handle(service: Service, request: Request, query: dict[str, Any]) -> JSONResponse:
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
    o = _options(query, options)
    sent = [u for u in uploads if u.data is not None and is_video(u.data)]
    # Probing reads the containers (a packet walk when the headers give no length): off the loop.
    videos = {id(u): await run_in_threadpool(plan_video, u.name, u.data, o["every"])
              for u in sent}
    check_video_frames(list(videos.values()), o["every"], service.max_video_frames)
    photos = [u for u in uploads if u.data is not None and id(u) not in videos]
    try:
        results = iter(await service.pool.predict([u.data for u in photos], o["tta"],
                                                  o["largest"], o["detector"]) if photos else [])
        tracked = {}
        for k, v in videos.items():  # the summary's bootstrap too runs off the event loop
            found = await service.pool.track(v.name, v.data, o["every"], o["detector"])
            tracked[k] = await run_in_threadpool(video_json, found, o["track"])
    except Exception as exc:  # a bug or the machine (memory), never the photo: those are per-image
        log.exception("prediction failed")
        raise ApiError(500, "internal_error", f"prediction failed ({type(exc).__name__})"
                       ) from None
    out = [image_json(u.name, None, u.error) if u.data is None else tracked[id(u)]
           if id(u) in tracked else image_json(u.name, next(results)) for u in uploads]
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
