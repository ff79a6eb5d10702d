"""Videos sent to the HTTP service (FastAPI's TestClient, the shipped fast model): a clip made
here from two real faces of examples/ (a woman on the left, a man on the right, 3 s at 10 fps)
comes back as tracks with one label each and the screen-time summary; options per request;
a video that cannot be read or is too long is refused with one line; nothing touches the disk."""

from __future__ import annotations

import base64
import io
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
av = pytest.importorskip("av")

from clips import encode_clip, two_people  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from facegender.infer.records import RECORD_FIELDS  # noqa: E402
from facegender.infer.video_tracks import TRACK_COLUMNS, TRACK_ROW_FIELDS  # noqa: E402
from facegender.serve.app import create_app  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
W, H = 320, 180


@pytest.fixture(scope="module")
def clip() -> bytes:
    return encode_clip(two_people())


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(None, workers=1, max_video_frames=8)) as c:
        yield c


def _post(client: TestClient, files: list[tuple[str, bytes]], **kw):
    return client.post("/v1/predict", files=[("files", (n, d, "application/octet-stream"))
                                              for n, d in files], **kw)


def test_video_upload_gives_tracks_labels_and_summary(client, clip):
    photo = (EXAMPLES / "fairface_0027.jpg").read_bytes()
    r = _post(client, [("clip.mp4", clip), ("woman.jpg", photo)], params={"every": "0.5"})
    assert r.status_code == 200, r.text
    video, still = r.json()["results"]
    assert "tracks" not in still and [f["label"] for f in still["faces"]] == ["female"]
    assert (video["path"], video["width"], video["height"], video["error"]) == \
        ("clip.mp4", W, H, None)
    assert video["frames"] == 6 and video["sampling"] == "every 0.5 s"
    tracks = sorted(video["tracks"], key=lambda t: t["label"])
    assert [(t["label"], t["unsure"], t["frames"], t["start"], t["end"]) for t in tracks] == \
        [("female", False, 6, 0.0, 3.0), ("male", False, 6, 0.0, 3.0)]
    assert all(list(t) == TRACK_ROW_FIELDS and t["path"] == "clip.mp4" for t in tracks)
    faces = video["faces"]
    assert len(faces) == 12 and all(list(f) == RECORD_FIELDS + TRACK_COLUMNS for f in faces)
    assert sorted({f["timestamp"] for f in faces}) == [0.5 * i for i in range(6)]
    by_track = {t["track_id"]: t["label"] for t in tracks}
    assert all(f["track_label"] == by_track[f["track_id"]] for f in faces)
    woman = next(t["track_id"] for t in tracks if t["label"] == "female")
    assert all(f["box"]["x"] < W / 2 for f in faces if f["track_id"] == woman)
    s = video["summary"]
    assert s["tracks"] == {"total": 2, "female": 1, "male": 1, "unsure": 0}
    assert s["screen_time"] == {"female": 3.0, "male": 3.0, "unsure": 0.0, "any": 3.0}
    assert s["person_seconds"] == {"female": 3.0, "male": 3.0, "unsure": 0.0}


def test_options_as_form_fields_and_json(client, clip):
    r = _post(client, [("clip.mp4", clip)], data={"track": "false", "every": "1"})
    assert r.status_code == 200, r.text
    v = r.json()["results"][0]
    assert v["frames"] == 3 and v["tracks"] == [] and v["summary"] is None
    assert len(v["faces"]) == 6 and all(f["track_id"] is None for f in v["faces"])
    assert sorted(f["label"] for f in v["faces"]) == ["female"] * 3 + ["male"] * 3
    # base64 JSON, and a per-request detector
    body = {"images": [{"name": "c.mp4", "data": base64.b64encode(clip).decode()}],
            "every": 1, "detector": "short"}
    v = client.post("/v1/predict", json=body).json()["results"][0]
    assert v["frames"] == 3 and sorted(t["label"] for t in v["tracks"]) == ["female", "male"]
    assert all(p.detector_mode == "auto" for p in client.app.state.service.pool.predictors)
    for bad in ({"every": "0"}, {"every": "soon"}, {"detector": "huge"}, {"track": "maybe"}):
        r = _post(client, [("clip.mp4", clip)], data=bad)
        assert r.status_code == 400 and r.json()["code"] == "invalid_option", bad
    r = _post(client, [("clip.mp4", clip)], params={"every": "-1"})
    assert r.status_code == 400 and r.json()["code"] == "invalid_option"


def test_server_detector_is_the_default_of_every_request(clip):
    app = create_app(None, workers=1, detector="short", warm_up=False)
    with TestClient(app) as c:
        assert [p.detector_mode for p in app.state.service.pool.predictors] == ["short"]
        v = _post(c, [("clip.mp4", clip)], data={"every": "1"}).json()["results"][0]
        assert sorted(t["label"] for t in v["tracks"]) == ["female", "male"]


def test_bad_and_too_long_videos_are_refused_in_one_line(client, clip):
    broken = clip[:64] + bytes(4000)  # an MP4 header, then nothing a decoder can use
    r = _post(client, [("broken.mp4", broken), ("clip.mp4", clip)])
    assert r.status_code == 400 and r.json()["code"] == "bad_video"
    assert r.json()["message"].startswith("video broken.mp4: ") and "\n" not in r.json()["message"]
    empty = io.BytesIO()
    with av.open(empty, "w", format="mp4") as out:  # a header, no frame
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        out.start_encoding()
    r = _post(client, [("empty.mp4", empty.getvalue())])
    assert r.status_code == 400 and r.json()["message"] == \
        "video empty.mp4: no video stream in the file"
    # 3 s at one frame every 0.25 s is 12 frames, over this server's 8
    r = _post(client, [("clip.mp4", clip)], params={"every": "0.25"})
    assert r.status_code == 413 and r.json()["code"] == "video_too_long"
    assert r.json()["message"] == ("video clip.mp4: 3 s at one frame every 0.25 s is 12 frames; "
                                   "the limit is 8 a request (send a shorter clip or a larger "
                                   "'every')")
    r = _post(client, [("a.mp4", clip), ("b.mp4", clip)], params={"every": "0.5"})
    assert r.status_code == 413 and "(12 for the request's 2 videos)" in r.json()["message"]
    assert _post(client, [("clip.mp4", clip)], params={"every": "0.5"}).status_code == 200


def test_video_uploads_never_touch_the_disk(client, clip, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a temporary file was created for an upload")
    for name in ("SpooledTemporaryFile", "TemporaryFile", "NamedTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, refuse)
    r = _post(client, [("clip.mp4", clip)], params={"every": "1"})
    assert r.status_code == 200 and len(r.json()["results"][0]["tracks"]) == 2


def test_openapi_declares_the_video_result(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert list(schemas["VideoOut"]["properties"])[:5] == ["path", "width", "height", "faces",
                                                           "error"]
    assert list(schemas["TrackOut"]["properties"]) == TRACK_ROW_FIELDS
    assert list(schemas["FrameFace"]["properties"]) == RECORD_FIELDS + TRACK_COLUMNS
    assert client.get("/v1/model").json()["limits"]["max_video_frames"] == 8
