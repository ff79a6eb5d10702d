"""Inputs beyond files and folders: `-` (stdin: a list of paths or one image's bytes), http(s)
URLs against a loopback server (limits and every failure named), and a short video made here."""

from __future__ import annotations

import http.server
import io
import json
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from facegender.cli import main
from facegender.errors import ImageError

ROOT = Path(__file__).resolve().parents[1]
GROUP = ROOT / "examples" / "group.jpg"
ONE = ROOT / "examples" / "fairface_0004.jpg"


def _records(validator, text: str) -> list[dict]:
    rows = json.loads(text)
    for r in rows:
        assert validator.is_valid(r), list(validator.iter_errors(r))
    return rows


def _stdin(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


# --------------------------------------------------------------------------- stdin


def test_stdin_list_of_paths(monkeypatch, capsys, validator, tmp_path):
    _stdin(monkeypatch, f"{GROUP}\n\n{ONE}\n{tmp_path / 'missing.jpg'}\n".encode())
    assert main(["predict", "-", "--json", "-"]) == 1  # one listed file is missing
    out = capsys.readouterr()
    rows = _records(validator, out.out)
    assert {r["path"] for r in rows} == {str(GROUP), str(ONE), str(tmp_path / "missing.jpg")}
    assert sum(r["path"] == str(GROUP) for r in rows) >= 4
    (missing,) = [r for r in rows if r["error"]]
    assert "no such file" in missing["error"] and "missing.jpg" in out.err


def test_stdin_image_bytes(monkeypatch, capsys, validator):
    _stdin(monkeypatch, GROUP.read_bytes())
    assert main(["predict", "-", "--json", "-", "-q"]) == 0
    rows = _records(validator, capsys.readouterr().out)
    assert len(rows) >= 4 and {r["path"] for r in rows} == {"-"}


def test_empty_stdin_is_a_clear_error(monkeypatch, capsys):
    _stdin(monkeypatch, b"  \n")
    assert main(["predict", "-"]) == 1
    assert "stdin is empty" in capsys.readouterr().err


# --------------------------------------------------------------------------- URLs


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):  # noqa: N802
        body = GROUP.read_bytes()
        if self.path == "/group.jpg":
            self._send(200, body, length=True)
        elif self.path == "/big-declared":
            self._send(200, b"x" * 5000, length=True)
        elif self.path == "/big-undeclared":  # no Content-Length: the cap applies while reading
            self.send_response(200)
            self.end_headers()
            for _ in range(50):
                self.wfile.write(b"x" * 1000)
        elif self.path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.05)
        elif self.path == "/to-file":
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.end_headers()
        elif self.path == "/page.jpg":
            self._send(200, b"<!doctype html><p>not a photo</p>", length=True)
        else:
            self._send(404, b"nope", length=True)

    def _send(self, code, body, length):
        self.send_response(code)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_url_limits_and_failures(server):
    from facegender.io.remote import fetch_url

    assert fetch_url(f"{server}/group.jpg") == GROUP.read_bytes()
    cases = {"/nothing": "HTTP 404", "/big-declared": "larger than the limit of 4,000 bytes",
             "/big-undeclared": "larger than the limit of 4,000 bytes",
             "/to-file": "(not allowed|non-http URL)"}
    for path, reason in cases.items():
        with pytest.raises(ImageError, match=reason):
            fetch_url(server + path, max_bytes=4000, timeout=5)
    t = time.monotonic()
    with pytest.raises(ImageError, match="timed out after 0.5 s"):
        fetch_url(f"{server}/slow", timeout=0.5)
    assert time.monotonic() - t < 3  # the limit bounds the whole fetch, not each read
    closed = "http://127.0.0.1:9"  # discard port: nothing listens
    with pytest.raises(ImageError, match="cannot fetch"):
        fetch_url(closed + "/x.jpg", timeout=2)


def test_predict_urls(server, capsys, validator):
    urls = [f"{server}/group.jpg", f"{server}/missing.jpg", f"{server}/page.jpg"]
    assert main(["predict", *urls, "--json", "-"]) == 1
    rows = _records(validator, capsys.readouterr().out)
    by = {u: [r for r in rows if r["path"] == u] for u in urls}
    assert len(by[urls[0]]) >= 4 and all(r["face"] is not None for r in by[urls[0]])
    assert by[urls[1]][0]["error"] == "HTTP 404 Not Found"
    assert "HTML" in by[urls[2]][0]["error"]


# --------------------------------------------------------------------------- video


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """3 s at 10 fps, 320x240: the group photo for 1.5 s, then an empty grey frame."""
    av = pytest.importorskip("av")
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    group = Image.open(GROUP).convert("RGB").resize((320, 240))
    grey = Image.new("RGB", (320, 240), (128, 128, 128))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.options = {"qscale": "2"}
        for i in range(30):
            frame = av.VideoFrame.from_image(group if i < 15 else grey)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_video_frames_every_half_second(clip, capsys, validator):
    assert main(["predict", str(clip), "--every", "0.5", "--json", "-"]) == 0
    rows = _records(validator, capsys.readouterr().out)
    frames = sorted({(r["frame"], r["timestamp"]) for r in rows})
    assert frames == [(0, 0.0), (5, 0.5), (10, 1.0), (15, 1.5), (20, 2.0), (25, 2.5)]
    for frame, t in frames:
        at = [r for r in rows if r["frame"] == frame]
        assert all(r["path"] == str(clip) for r in at)
        if t < 1.5:
            assert len(at) >= 3 and all(r["face_source"] == "detector" for r in at), at
        else:
            assert [r["label"] for r in at] == ["no_face"]


def test_video_api_default_every_second(clip):
    from facegender import load
    from facegender.io.video import read_video

    results = load("fast").predict(clip)
    assert [r.records()[0]["timestamp"] for r in results] == [0.0, 1.0, 2.0]
    assert len(read_video(clip, every=0.25).samples) == 12
    with pytest.raises(Exception, match="every must be > 0"):
        read_video(clip, every=0)


def test_video_inside_a_folder(clip, tmp_path, capsys, validator):
    """A folder holding a photo, a video and a broken video: the video's frames are rows with
    frame and time, the broken one is one failed row naming it, the photo is read as before."""
    import shutil

    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(GROUP, folder / "group.jpg")
    shutil.copy(clip, folder / "clip.mp4")
    (folder / "broken.mov").write_bytes(b"not a video at all" * 10)
    assert main(["predict", str(folder), "--every", "1", "--json", "-"]) == 1
    rows = _records(validator, capsys.readouterr().out)
    video = [r for r in rows if r["path"].endswith("clip.mp4")]
    assert sorted({r["timestamp"] for r in video}) == [0.0, 1.0, 2.0]
    assert all(r["frame"] is not None for r in video)
    assert len([r for r in video if r["face_source"] == "detector"]) >= 6  # 2 frames x 3+ faces
    broken = [r for r in rows if r["path"].endswith("broken.mov")]
    assert len(broken) == 1 and "cannot read the video" in broken[0]["error"]
    photo = [r for r in rows if r["path"].endswith("group.jpg")]
    assert len(photo) >= 3 and all(r["frame"] is None for r in photo)
    # the API reads the folder the same way, at its own frame spacing
    from facegender import load

    results = load("fast").predict(folder, video_every=0.5)
    assert sorted({r.records()[0]["timestamp"] for r in results
                   if r.path.endswith("clip.mp4")}) == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
