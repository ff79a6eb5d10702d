"""Request bodies, read into memory with the size and time limits enforced while they stream in
(Starlette's form parser would spool every file part over 1 MB to a temporary file, and no
uploaded photo should ever touch the disk), then parsed as multipart/form-data or JSON with
base64 images into `Upload`s and options."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import time
from dataclasses import dataclass
from typing import Any

from ..errors import MissingDependency

try:
    from fastapi import HTTPException, Request
    from python_multipart.multipart import MultipartParser, parse_options_header
    from starlette.requests import ClientDisconnect
except ImportError as _exc:  # the service is an extra: say which one
    raise MissingDependency(f"'{_exc.name}' is not installed; install the server with: "
                            "pip install \"facegender[serve]\"") from _exc

from .schemas import ApiError

DEFAULT_BODY_TIMEOUT = 60.0  # seconds for a whole body (20 MB at 2.7 Mbit/s)
DEFAULT_IDLE_TIMEOUT = 10.0  # seconds without a byte of the body
MAX_JSON_DEPTH = 8  # {"images": [{"data": ...}]} needs 3
MAX_JSON_NUMBER_DIGITS = 100
# The request's options a JSON body may carry as keys (a form as fields, a URL as parameters).
OPTIONS = ("tta", "largest", "track", "every", "detector")


@dataclass
class Upload:
    name: str
    data: bytes | None
    error: str | None = None  # set when the bytes could not even be extracted (bad base64)


def parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off", ""):
        return False
    raise ApiError(400, "invalid_option",
                   f"option '{name}' must be true or false, not {str(value)[:40]!r}")


def parse_every(value: Any) -> float:
    """The `every` option: seconds between a video's classified frames, a number > 0."""
    try:
        every = float(value)
    except (TypeError, ValueError):
        every = math.nan
    if not (every > 0 and math.isfinite(every)):
        raise ApiError(400, "invalid_option",
                       f"option 'every' must be a number of seconds > 0, not {str(value)[:40]!r}")
    return every


def parse_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    s = str(value).strip().lower()
    if s not in choices:
        raise ApiError(400, "invalid_option", f"option '{name}' must be one of "
                                              f"{', '.join(choices)}, not {str(value)[:40]!r}")
    return s


def _too_large(limit: int) -> HTTPException:
    return ApiError(413, "too_large", f"request body is larger than the limit of {_mb(limit)}; send "
                              "fewer or smaller photos")


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:.0f} MB" if n >= 1024 * 1024 else f"{n:,} bytes"


class Disconnected(Exception):
    """The client went away while sending its body: nobody to answer."""


async def read_body(request: Request, limit: int, body_timeout: float = DEFAULT_BODY_TIMEOUT,
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
            raise Disconnected(len(buf)) from None
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


def parse_multipart(body: bytes, content_type: str, max_files: int
                     ) -> tuple[list[Upload], dict[str, str]]:
    """Every part with a filename (or named files/file) is an image; short text parts are options."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "bad_multipart", "multipart body without a boundary")
    uploads: list[Upload] = []
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
            uploads.append(Upload(name=name, data=bytes(data)))
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


def parse_json(body: bytes, max_files: int) -> tuple[list[Upload], dict[str, Any]]:
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
            uploads.append(Upload(name=name, data=_decode_base64(item["data"])))
        except (binascii.Error, ValueError):
            uploads.append(Upload(name=name, data=None, error="data is not valid base64"))
    return uploads, {k: doc[k] for k in OPTIONS if k in doc}
