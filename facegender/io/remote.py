"""Images by http(s) URL: fetched when the Predictor reads them (in its worker threads), with a
size cap and a time limit, and a one-line reason for every way it can fail.

The cap is checked twice: against Content-Length before any body byte is read, and while the
body streams in (a server may send no length, or lie). The time limit bounds the whole fetch,
not just each socket read, so a server trickling one byte a second cannot hold a batch up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from ..errors import ImageError
from ..version import __version__
from .sources import Sample

URL_SCHEMES = ("http://", "https://")
DEFAULT_MAX_BYTES = 50 * 1024 * 1024  # a whole image file; phone photos are 2-8 MB
DEFAULT_TIMEOUT = 20.0  # seconds for the whole fetch
CHUNK = 256 * 1024


def is_url(spec: object) -> bool:
    return isinstance(spec, str) and spec.lower().startswith(URL_SCHEMES)


@lru_cache(maxsize=1)
def _opener():  # noqa: ANN202
    """An opener that follows redirects only to http(s), never to file:, ftp: or data: URLs.
    Built on first use: urllib.request and http.client (with ssl) cost ~15 ms to import, which
    a run without URLs should not pay."""
    import urllib.error
    import urllib.request

    class HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201
            if not is_url(newurl):
                raise urllib.error.URLError(
                    f"redirect to a non-http URL ({urlsplit(newurl).scheme}:)")
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    return urllib.request.build_opener(HttpOnlyRedirects)


def _mb(n: int) -> str:
    return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n:,} bytes"


def fetch_url(url: str, *, max_bytes: int = DEFAULT_MAX_BYTES,
              timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """The body of an http(s) URL; ImageError(url, reason) when it cannot be had within the
    limits (HTTP status, no connection, too large, too slow)."""
    import http.client
    import urllib.error
    import urllib.request

    if not is_url(url):
        raise ImageError(url, "not an http(s) URL")
    deadline = time.monotonic() + timeout
    req = urllib.request.Request(url, headers={"User-Agent": f"facegender/{__version__}",
                                               "Accept": "image/*"})
    try:
        with _opener().open(req, timeout=timeout) as resp:
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise ImageError(url, f"larger than the limit of {_mb(max_bytes)} "
                                      f"(Content-Length {int(declared):,})")
            buf = bytearray()
            while True:
                if time.monotonic() > deadline:
                    raise ImageError(url, f"timed out after {timeout:g} s")
                chunk = resp.read1(CHUNK) if hasattr(resp, "read1") else resp.read(CHUNK)
                if not chunk:
                    break
                buf += chunk
                if len(buf) > max_bytes:
                    raise ImageError(url, f"larger than the limit of {_mb(max_bytes)}")
            return bytes(buf)
    except urllib.error.HTTPError as exc:
        raise ImageError(url, f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise ImageError(url, f"timed out after {timeout:g} s") from None
        raise ImageError(url, f"cannot fetch ({reason})") from None
    except TimeoutError:
        raise ImageError(url, f"timed out after {timeout:g} s") from None
    except (OSError, http.client.HTTPException) as exc:  # reset, refused, cut short
        raise ImageError(url, f"cannot fetch ({type(exc).__name__}: {exc})") from None


@dataclass
class UrlSample(Sample):
    """A Sample whose bytes are fetched from `ref`, an http(s) URL, when read."""

    max_bytes: int = DEFAULT_MAX_BYTES
    timeout: float = DEFAULT_TIMEOUT

    def read_bytes(self, cap: int | None = None) -> bytes:
        """`cap` (the caller's per-image byte cap) lowers max_bytes, never raises it."""
        limit = self.max_bytes if cap is None else min(self.max_bytes, int(cap))
        return fetch_url(self.ref, max_bytes=limit, timeout=self.timeout)
