"""The service under hostile clients: API key, origins, one error shape, JSON limits, slow and
vanishing clients (a real uvicorn on loopback), per-client limits. Uses the shipped fast model."""

from __future__ import annotations

import base64
import logging
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from fastapi.testclient import TestClient  # noqa: E402

from facegender.cli import main  # noqa: E402
from facegender.errors import FaceGenderError  # noqa: E402
from facegender.serve.app import check_bind, create_app  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PHOTO = (ROOT / "examples" / "fairface_0004.jpg").read_bytes()
KEY = "s3cret-key-for-tests"
ERROR_KEYS = {"status", "code", "message", "errors"}


@pytest.fixture(scope="module")
def app():
    return create_app("fast", workers=1, api_key=KEY, max_files=4, rate_limit=0)


@pytest.fixture(scope="module")
def open_app():
    return create_app("fast", workers=1, api_key="", max_files=4, rate_limit=0)


def _is_error(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == ERROR_KEYS and body["status"] == status, body
    assert code is None or body["code"] == code, body
    return body


# --------------------------------------------------------------------------- access


ROUTES = [("GET", "/"), ("GET", "/v1/model"), ("GET", "/docs"), ("GET", "/openapi.json"),
          ("GET", "/static/app.js"), ("POST", "/v1/predict"), ("GET", "/no/such/route")]


def test_without_the_key_every_route_but_healthz_is_401(app):
    for k, (method, path) in enumerate(ROUTES):
        # 3 wrong keys per client address: under the failed-key throttle (tested below)
        c = TestClient(app, client=(f"10.0.0.{k + 1}", 50000))
        for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"},
                        {"Authorization": "Basic " + base64.b64encode(b"u:wrong").decode()}):
            r = c.request(method, path, headers=headers, files=[("files", ("a.jpg", PHOTO))]
                          if method == "POST" else None)
            body = _is_error(r, 401, "unauthorized")
            assert "Basic" in r.headers["www-authenticate"]  # the browser asks once
            assert KEY not in r.text and KEY not in body["message"]
        assert c.get("/healthz").status_code == 200


def test_with_the_key_every_route_answers(app):
    c = TestClient(app)
    basic = "Basic " + base64.b64encode(f"anyone:{KEY}".encode()).decode()
    for headers in ({"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"},
                    {"Authorization": basic}):
        for method, path in ROUTES[:-1]:
            r = c.request(method, path, headers=headers, files=[("files", ("a.jpg", PHOTO))]
                          if method == "POST" else None)
            assert r.status_code == 200, (path, r.text)
        _is_error(c.get("/no/such/route", headers=headers), 404, "not_found")
    r = c.post("/v1/predict", headers={"X-API-Key": KEY}, files=[("files", ("a.jpg", PHOTO))])
    assert r.json()["results"][0]["faces"]


def test_key_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("FACEGENDER_API_KEY", "from-the-environment")
    c = TestClient(create_app("fast", workers=1, warm_up=False))
    assert c.get("/v1/model").status_code == 401
    assert c.get("/v1/model", headers={"X-API-Key": "from-the-environment"}).status_code == 200


def test_non_loopback_bind_needs_a_key(capsys, monkeypatch):
    monkeypatch.delenv("FACEGENDER_API_KEY", raising=False)
    for host in ("0.0.0.0", "192.168.1.5", "::", "example.org"):
        with pytest.raises(FaceGenderError, match="without an API key"):
            check_bind(host, None)
        check_bind(host, "k")  # a key: fine
        check_bind(host, None, no_auth=True)  # said explicitly: fine
    for host in ("127.0.0.1", "127.1.2.3", "::1", "localhost"):
        check_bind(host, None)
    for host in ("127.1", "127.0.1", "2130706433", "0x7f.1", "[::1]", "::ffff:127.0.0.1",
                 "LOCALHOST", "localhost.", "app.localhost", "0:0:0:0:0:0:0:1"):
        check_bind(host, None)  # loopback in every spelling the socket layer binds
    for host in ("128.0.0.1", "127.0.0.1 evil", "127.example.org", "::2", "0", ""):
        with pytest.raises(FaceGenderError, match="without an API key"):
            check_bind(host, None)
    # Through the CLI: one line, exit 2, refused before the model is even loaded.
    assert main(["serve", "--host", "0.0.0.0", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "without an API key" in err and "Traceback" not in err


def test_other_sites_are_refused_unless_allowed(open_app):
    c = TestClient(open_app)
    _is_error(c.get("/v1/model", headers={"Origin": "https://evil.example"}), 403,
              "origin_not_allowed")
    r = c.post("/v1/predict", headers={"Origin": "https://evil.example"},
               files=[("files", ("a.jpg", PHOTO))])
    _is_error(r, 403)
    assert "access-control-allow-origin" not in r.headers  # CORS closed by default
    assert c.get("/v1/model", headers={"Origin": "http://testserver"}).status_code == 200
    allowed = TestClient(create_app("fast", workers=1, api_key="", warm_up=False,
                                    cors_origins=["https://app.example"]))
    r = allowed.get("/v1/model", headers={"Origin": "https://app.example"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
    _is_error(allowed.get("/v1/model", headers={"Origin": "https://evil.example"}), 403)


# --------------------------------------------------------------------------- one error shape


def test_every_refusal_has_one_shape(open_app):
    c = TestClient(open_app)
    deep = b'{"images": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    _is_error(c.post("/v1/predict", content=deep, headers={"content-type": "application/json"}),
              400, "bad_json")
    huge_number = b'{"images": [], "tta": ' + b"9" * 5000 + b"}"
    _is_error(c.post("/v1/predict", content=huge_number,
                     headers={"content-type": "application/json"}), 400, "bad_json")
    _is_error(c.post("/v1/predict", content=b'{"images": [], "x": NaN}',
                     headers={"content-type": "application/json"}), 400, "bad_json")
    body = _is_error(c.post("/v1/predict?tta=maybe", files=[("files", ("a.jpg", PHOTO))]), 400,
                     "invalid_option")
    assert body["errors"] and "tta" in body["errors"][0]["where"]  # FastAPI's own validation
    _is_error(c.post("/v1/predict", data={"tta": "maybe"}, files=[("files", ("a.jpg", PHOTO))]),
              400, "invalid_option")
    _is_error(c.post("/v1/predict"), 400, "empty_request")
    _is_error(c.post("/v1/predict", content=b"x", headers={"content-type": "text/plain"}), 415)
    _is_error(c.post("/v1/predict", files=[("files", (f"{i}.jpg", PHOTO)) for i in range(5)]), 413,
              "too_many_files")
    _is_error(c.get("/nowhere"), 404, "not_found")
    _is_error(c.put("/v1/predict"), 405, "method_not_allowed")
    # A broken image is not a refusal: its own result says why, the others succeed.
    r = c.post("/v1/predict", files=[("files", ("a.jpg", PHOTO)), ("files", ("b.jpg", b"<html>"))])
    assert r.status_code == 200 and r.json()["results"][1]["error"]


def test_rate_limit_per_client():
    c = TestClient(create_app("fast", workers=1, api_key="", warm_up=False, rate_limit=2))
    codes = [c.get("/v1/model").status_code for _ in range(8)]
    assert codes[:4] == [200] * 4 and 429 in codes  # a burst of 4, then 2 a second
    r = c.get("/v1/model")
    body = _is_error(r, 429, "rate_limited")
    assert int(r.headers["retry-after"]) >= 1 and "2" in body["message"]
    assert c.get("/healthz").status_code == 200  # liveness is never limited


# --------------------------------------------------------------------------- real sockets


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live():
    """uvicorn in a thread on loopback with short timeouts and 4 requests per client."""
    app = create_app("fast", workers=1, api_key="", rate_limit=0, per_client=4,
                     body_timeout=3.0, idle_timeout=1.5, max_pending=64)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="info",
                                           timeout_keep_alive=5))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", port
    server.should_exit = True
    thread.join(10)


def _slow_upload(port: int, source: str) -> socket.socket:
    """A client that declares a 10 kB body and sends 10 bytes of it."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 10000\r\n\r\n{\"images\":")
    return s


def _status(s: socket.socket) -> int | None:
    try:
        head = s.recv(200)
    except OSError:
        return None
    return int(head.split()[1]) if head.startswith(b"HTTP/1.1") else None


def test_slow_clients_do_not_lock_out_a_normal_one(live):
    url, port = live
    slow = [_slow_upload(port, "127.0.0.2") for _ in range(70)]  # one address, 70 connections
    time.sleep(0.3)
    t0 = time.monotonic()
    r = httpx.post(f"{url}/v1/predict", files=[("files", ("a.jpg", PHOTO))], timeout=20)
    took = time.monotonic() - t0
    assert r.status_code == 200 and r.json()["results"][0]["faces"], r.text
    assert took < 2.5, f"a normal client waited {took:.1f} s behind slow ones"
    # The slow ones: 4 admitted and cut off by the body timeout (408), the rest refused (429).
    t0 = time.monotonic()
    codes = [_status(s) for s in slow]
    assert time.monotonic() - t0 < 8
    for s in slow:
        s.close()
    assert codes.count(429) >= 60 and codes.count(408) >= 1 and set(codes) <= {408, 429}, codes
    assert httpx.get(f"{url}/healthz").json()["pending"] == 0


def test_disconnects_are_one_log_line(live, caplog):
    url, port = live
    with caplog.at_level(logging.INFO):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100000\r\n\r\n" + b"x" * 5000)
        time.sleep(0.3)
        s.close()
        for _ in range(50):
            if any("disconnected" in r.getMessage() for r in caplog.records):
                break
            time.sleep(0.1)
    lines = [r for r in caplog.records if r.name.startswith(("facegender", "uvicorn"))
             and r.levelno >= logging.INFO and "disconnected" in r.getMessage()]
    assert len(lines) == 1 and "5,000 bytes" in lines[0].getMessage()
    assert not any(r.exc_info for r in caplog.records), "a traceback was logged"
    assert httpx.get(f"{url}/healthz").json()["pending"] == 0


# --------------------------------------------------------------------------- key strength


@pytest.mark.parametrize("key", ["a", " ", "short-key", "x" * 40, "1" * 16, " padded-key-123456 ",
                                 "tab\tinside-key-1234"])
def test_weak_keys_are_refused_at_start(key, monkeypatch, capsys):
    monkeypatch.delenv("FACEGENDER_API_KEY", raising=False)
    with pytest.raises(FaceGenderError, match="API key") as exc:
        create_app("fast", workers=1, warm_up=False, api_key=key)
    assert key.strip() not in str(exc.value) or len(key.strip()) < 2  # the key is never shown
    monkeypatch.setenv("FACEGENDER_API_KEY", key)
    with pytest.raises(FaceGenderError, match="API key"):
        create_app("fast", workers=1, warm_up=False)
    # Through the CLI: refused before binding (even on 0.0.0.0, where a key is what is asked).
    assert main(["serve", "--host", "0.0.0.0", "--port", "1", "--api-key", key]) == 2
    err = capsys.readouterr().err
    assert "API key" in err and "Traceback" not in err


def test_generated_key_is_strong_printed_once_and_works(capsys, monkeypatch):
    from facegender.serve.guard import MIN_KEY_CHARS, resolve_api_key

    monkeypatch.delenv("FACEGENDER_API_KEY", raising=False)
    keys = {resolve_api_key("generate") for _ in range(3)}
    out = capsys.readouterr().out
    assert len(keys) == 3 and all(len(k) >= 2 * MIN_KEY_CHARS for k in keys)
    assert all(out.count(k) == 1 for k in keys)  # each printed exactly once
    app = create_app("fast", workers=1, warm_up=False, api_key="generate")
    key = capsys.readouterr().out.strip().rsplit(" ", 1)[-1]
    c = TestClient(app)
    assert c.get("/v1/model").status_code == 401
    assert c.get("/v1/model", headers={"X-API-Key": key}).status_code == 200


def test_wrong_keys_are_throttled_per_client():
    from facegender.serve.guard import AUTH_FAILURES

    app = create_app("fast", workers=1, warm_up=False, api_key=KEY, rate_limit=0)
    guesser = TestClient(app, client=("10.9.9.9", 40000))
    codes = [guesser.get("/v1/model", headers={"X-API-Key": f"guess-{i:012d}"}).status_code
             for i in range(AUTH_FAILURES + 3)]
    assert codes[:AUTH_FAILURES] == [401] * AUTH_FAILURES
    assert codes[AUTH_FAILURES:] == [429] * 3
    r = guesser.get("/v1/model", headers={"X-API-Key": KEY})  # even the right key: wait
    body = _is_error(r, 429, "too_many_failed_keys")
    assert 1 <= int(r.headers["retry-after"]) <= 60 and KEY not in body["message"]
    # Another client is not affected, and asking without a key is not a guess.
    other = TestClient(app, client=("10.9.9.10", 40000))
    assert [other.get("/v1/model").status_code for _ in range(10)] == [401] * 10
    assert other.get("/v1/model", headers={"X-API-Key": KEY}).status_code == 200
    assert guesser.get("/healthz").status_code == 200  # liveness stays open


def test_loopback_needs_no_key_through_the_cli(monkeypatch):
    """127.1, ::1 and localhost bind without a key: the CLI gets past the bind rule to serve()."""
    import facegender.serve.app as app_module

    monkeypatch.delenv("FACEGENDER_API_KEY", raising=False)
    seen = []
    monkeypatch.setattr(app_module, "create_app", lambda *a, **k: seen.append(k["api_key"]))
    uvicorn_run = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, **k: uvicorn_run.append(host))
    for host in ("127.1", "::1", "localhost"):
        assert main(["serve", "--host", host, "--port", "1"]) == 0
    assert uvicorn_run == ["127.1", "::1", "localhost"] and seen == ["", "", ""]
