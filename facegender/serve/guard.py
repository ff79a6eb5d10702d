"""Who may use the service and how much: API key, origin policy, per-client rate and concurrency.

A plain ASGI middleware (no per-request task or body copy, unlike BaseHTTPMiddleware), in front
of every route. In order:
  1. API key (when set): every route but /healthz needs it, as `X-API-Key: KEY`,
     `Authorization: Bearer KEY` or HTTP Basic with the key as password (so a browser asks for
     it once and sends it with every request of the page). Compared in constant time
     (hmac.compare_digest); never logged. 401 otherwise, with a Basic challenge. A client that
     presented AUTH_FAILURES wrong keys within AUTH_WINDOW seconds gets 429 + Retry-After, even
     with the right key, until the oldest of them is that old (guessing is throttled; behind a
     proxy every client shares the proxy's address and so its budget).
  2. Origin: a request carrying an Origin header that is neither this server nor one of
     `cors_origins` is refused (403) before it costs anything: browsers on other sites cannot
     make a visitor's browser use the service (CORS closed by default).
  3. Rate: a token bucket per client address (`rate` requests a second, bursts of `burst`).
  4. Concurrency: at most `per_client` requests of one address in flight at once.
Refusals of 3 and 4 answer 429 with Retry-After. Every refusal has the API's one error shape.

Also here: the rules for a key (`resolve_api_key`: at least MIN_KEY_CHARS characters, not one
character repeated, or `generate` for a fresh one printed once) and for a loopback host
(`is_loopback`: 127.0.0.0/8 in any spelling inet_aton takes, such as 127.1, ::1, localhost).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import math
import os
import re
import secrets
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import FaceGenderError

OPEN_PATHS = ("/healthz",)
_MAX_CLIENTS = 10_000  # addresses remembered for rate limits (least recently seen dropped)
API_KEY_ENV = "FACEGENDER_API_KEY"
GENERATE = "generate"  # --api-key generate: a fresh key, printed once
MIN_KEY_CHARS = 16
AUTH_FAILURES = 5  # wrong keys one client may present within AUTH_WINDOW seconds
AUTH_WINDOW = 60.0


def check_api_key(key: str) -> None:
    """Refuse a key that is easy to guess or cannot be sent as typed (the key is never shown)."""
    where = f"the API key (--api-key or {API_KEY_ENV})"
    if key != key.strip():
        raise FaceGenderError(f"{where} starts or ends with white space, which HTTP headers "
                              "drop; it could never match")
    if len(key) < MIN_KEY_CHARS:
        raise FaceGenderError(f"{where} is {len(key)} characters long; at least "
                              f"{MIN_KEY_CHARS} are needed (or say --api-key {GENERATE} for a "
                              "strong one)")
    if len(set(key)) == 1:
        raise FaceGenderError(f"{where} is one character repeated; use a random key (or say "
                              f"--api-key {GENERATE})")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise FaceGenderError(f"{where} holds control characters, which HTTP headers cannot "
                              "carry")


def resolve_api_key(api_key: str | None) -> str | None:
    """The key a server uses: `api_key`, else the FACEGENDER_API_KEY environment variable; ""
    for none; `generate` for a fresh random key, printed once on stdout. Any other key must
    pass check_api_key, so a weak one is refused before a port is bound."""
    if api_key is None:
        api_key = os.environ.get(API_KEY_ENV) or None
    if not api_key:
        return None
    if api_key == GENERATE:
        api_key = secrets.token_urlsafe(32)  # 256 random bits
        print(f"API key (shown once; clients send it as X-API-Key): {api_key}", flush=True)
        return api_key
    check_api_key(api_key)
    return api_key


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach: 127.0.0.0/8 however it is spelled
    (127.1, 2130706433, ::ffff:127.0.0.1), ::1, localhost and *.localhost (RFC 6761)."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        addr = ipaddress.ip_address(name.split("%")[0])
    except ValueError:
        # The short IPv4 forms the socket layer binds (inet_aton); inet_aton itself would also
        # take trailing garbage after a space, so only plain numbers and dots reach it.
        if not re.fullmatch(r"(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}", name):
            return False
        try:
            addr = ipaddress.IPv4Address(socket.inet_aton(name))
        except OSError:
            return False
    mapped = getattr(addr, "ipv4_mapped", None)
    return bool(addr.is_loopback or (mapped is not None and mapped.is_loopback))


def error_body(status: int, code: str, message: str, errors: list | None = None) -> dict[str, Any]:
    """The one error shape of the API: {"status", "code", "message", "errors"}."""
    return {"status": status, "code": code, "message": message, "errors": errors or []}


async def send_error(send: Callable[[dict], Awaitable[None]], status: int, code: str,
                     message: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps(error_body(status, code, message)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _header(scope: dict, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k == name:
            return v.decode("latin-1")
    return None


def presented_key(scope: dict) -> str | None:
    """The key a request presents (X-API-Key, Bearer or Basic password), if any."""
    key = _header(scope, b"x-api-key")
    if key:
        return key.strip()
    auth = _header(scope, b"authorization") or ""
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            user_pass = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        return user_pass.partition(":")[2]
    return None


def key_matches(presented: str | None, key: str) -> bool:
    # compare_digest takes as long whatever the first differing byte (no timing oracle).
    return hmac.compare_digest((presented or "").encode(), key.encode())


class _Bucket:
    __slots__ = ("tokens", "stamp", "active")

    def __init__(self, burst: float) -> None:
        self.tokens, self.stamp, self.active = burst, time.monotonic(), 0


class Guard:
    """ASGI middleware; see the module doc. `rate` 0 = no rate limit, `per_client` 0 = none."""

    def __init__(self, app: Callable, *, api_key: str | None = None,
                 cors_origins: tuple[str, ...] = (), rate: float = 0.0, burst: int = 0,
                 per_client: int = 0, limited_prefix: str = "/v1/") -> None:
        self.app = app
        self.api_key = api_key or None
        self.cors = set(cors_origins)
        self.rate, self.burst = float(rate), float(max(burst, 1))
        self.per_client = int(per_client)
        self.limited_prefix = limited_prefix
        self.clients: OrderedDict[str, _Bucket] = OrderedDict()
        self.failures: OrderedDict[str, deque[float]] = OrderedDict()  # wrong keys, by address

    def _locked_for(self, addr: str, now: float) -> float:
        """Seconds until `addr` may try a key again (0: it may now)."""
        seen = self.failures.get(addr)
        if seen is None:
            return 0.0
        while seen and now - seen[0] >= AUTH_WINDOW:
            seen.popleft()
        if not seen:
            del self.failures[addr]
            return 0.0
        return AUTH_WINDOW - (now - seen[0]) if len(seen) >= AUTH_FAILURES else 0.0

    def _failed(self, addr: str, now: float) -> None:
        seen = self.failures.setdefault(addr, deque(maxlen=AUTH_FAILURES))
        seen.append(now)
        self.failures.move_to_end(addr)
        while len(self.failures) > _MAX_CLIENTS:
            self.failures.popitem(last=False)

    def _bucket(self, addr: str) -> _Bucket:
        b = self.clients.get(addr)
        if b is None:
            b = self.clients[addr] = _Bucket(self.burst)
            while len(self.clients) > _MAX_CLIENTS:
                old, ob = next(iter(self.clients.items()))
                if ob.active:  # keep addresses with requests in flight: their counts matter
                    self.clients.move_to_end(old)
                    break
                del self.clients[old]
        else:
            self.clients.move_to_end(addr)
        return b

    async def _authorized(self, scope: dict, send: Callable) -> bool:
        """The key check of step 1; answers 429 or 401 itself and says False when refused."""
        addr = (scope.get("client") or ("?", 0))[0]
        now = time.monotonic()
        wait = self._locked_for(addr, now)
        if wait > 0:
            await send_error(send, 429, "too_many_failed_keys",
                             f"{AUTH_FAILURES} wrong API keys from this client within "
                             f"{AUTH_WINDOW:.0f} s; wait before trying again",
                             {"Retry-After": str(max(1, math.ceil(wait)))})
            return False
        presented = presented_key(scope)
        if key_matches(presented, self.api_key):
            return True
        if presented:  # no key at all is a browser's first request, not a guess
            self._failed(addr, now)
        await send_error(send, 401, "unauthorized",
                         "this server needs an API key: send it as X-API-Key, as "
                         "'Authorization: Bearer KEY', or as the password of HTTP Basic",
                         {"WWW-Authenticate": 'Basic realm="facegender", charset="UTF-8"'})
        return False

    def _origin_ok(self, scope: dict) -> bool:
        origin = _header(scope, b"origin")
        if origin is None or origin in self.cors or "*" in self.cors:
            return True
        host = _header(scope, b"host") or ""
        return origin in (f"http://{host}", f"https://{host}")

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if self.api_key and not await self._authorized(scope, send):
            return
        if not self._origin_ok(scope):
            await send_error(send, 403, "origin_not_allowed",
                             "requests from other web sites are refused (start the server with "
                             "--cors-origin ORIGIN to allow one)")
            return
        if not path.startswith(self.limited_prefix) or not (self.rate or self.per_client):
            await self.app(scope, receive, send)
            return
        addr = (scope.get("client") or ("?", 0))[0]
        b = self._bucket(addr)
        if self.rate:
            now = time.monotonic()
            b.tokens = min(self.burst, b.tokens + (now - b.stamp) * self.rate)
            b.stamp = now
            if b.tokens < 1:
                wait = max(1, round((1 - b.tokens) / self.rate))
                await send_error(send, 429, "rate_limited",
                                 f"too many requests from this client: the limit is "
                                 f"{self.rate:g} a second (bursts of {self.burst:.0f})",
                                 {"Retry-After": str(wait)})
                return
            b.tokens -= 1
        if self.per_client and b.active >= self.per_client:
            await send_error(send, 429, "too_many_concurrent",
                             f"this client already has {b.active} requests in progress (the "
                             f"limit is {self.per_client}); wait for one to finish",
                             {"Retry-After": "1"})
            return
        b.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            b.active -= 1
