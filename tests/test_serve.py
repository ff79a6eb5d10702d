"""The HTTP service through FastAPI's TestClient: real fairface540 photos, the model trained for
the session, every limit and every error path."""

from __future__ import annotations

import asyncio
import base64
import io
import re
import tarfile
import tempfile

import httpx
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")

from fastapi.testclient import TestClient  # noqa: E402

from facegender.errors import FaceGenderError  # noqa: E402
from facegender.serve.app import PredictResponse, create_app  # noqa: E402

LIMITS = dict(max_upload_bytes=3_000_000, max_files=6, max_pixels=1_000_000)


# Three men and three women of fairface540 with one face each (many of its photos have
# people in the background, which the detector rightly finds too).
ONE_FACE = ["male/fairface_0006.jpg", "male/fairface_0007.jpg", "male/fairface_0010.jpg",
            "female/fairface_0002.jpg", "female/fairface_0003.jpg", "female/fairface_0005.jpg"]


@pytest.fixture(scope="module")
def photos(fairface) -> dict[str, bytes]:
    """ONE_FACE as encoded JPEG bytes, in that order."""
    with tarfile.open(fairface / "fairface540.tar") as tf:
        return {n: tf.extractfile(n).read() for n in ONE_FACE}


@pytest.fixture(scope="module")
def client(trained_model):
    app = create_app(trained_model, workers=2, **LIMITS)
    with TestClient(app) as c:
        yield c


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _post(client: TestClient, files: list[tuple[str, bytes]], field: str = "files", **kw):
    return client.post("/v1/predict",
                       files=[(field, (n, d, "application/octet-stream")) for n, d in files], **kw)


def _check_face(f: dict) -> None:
    assert f["label"] in ("male", "female")
    assert f["prob_male"] + f["prob_female"] == pytest.approx(1, abs=1e-6)
    assert (f["label"] == "male") == (f["prob_male"] >= 0.5)
    assert isinstance(f["unsure"], bool)
    assert set(f["box"]) == {"x", "y", "w", "h"}


def test_predicts_real_photos_in_request_order(client, photos):
    r = _post(client, list(photos.items()))
    assert r.status_code == 200, r.text
    body = r.json()
    PredictResponse.model_validate(body)  # the documented schema is the real one
    assert body["model"]
    assert [x["path"] for x in body["results"]] == list(photos)
    for res in body["results"]:
        assert res["error"] is None and (res["width"], res["height"]) == (224, 224)
        assert len(res["faces"]) >= 1
        for f in res["faces"]:
            _check_face(f)


def test_same_numbers_as_the_python_api(client, photos, trained_model):
    from facegender import Predictor

    name, data = next(iter(photos.items()))
    served = _post(client, [(name, data)]).json()["results"][0]["faces"][0]
    direct = Predictor(trained_model).predict([data])[0].faces[0]
    assert served["prob_male"] == pytest.approx(direct.prob_male, abs=1e-5)
    assert served["label"] == direct.label and served["unsure"] == direct.unsure


def test_broken_and_non_image_files_fail_alone(client, photos):
    good = list(photos.items())[:2]
    jpeg = good[0][1]
    files = [good[0], ("truncated.jpg", jpeg[: len(jpeg) // 3]), ("page.jpg", b"<!doctype html><p>hi"),
             ("empty.png", b""), good[1]]
    r = _post(client, files)
    assert r.status_code == 200
    res = r.json()["results"]
    assert [x["path"] for x in res] == [n for n, _ in files]
    assert res[0]["error"] is None and res[4]["error"] is None and res[0]["faces"]
    assert "truncated" in res[1]["error"]
    assert "HTML" in res[2]["error"]
    assert "empty" in res[3]["error"]
    for bad in res[1:4]:
        assert bad["faces"] == [] and bad["width"] is None


def test_pixel_limit_is_a_per_image_error(client, photos):
    big = _png(Image.new("RGB", (1100, 1000), (90, 120, 150)))  # 1.1 MP, a few KB
    r = _post(client, [("big.png", big), next(iter(photos.items()))])
    assert r.status_code == 200
    big_res, ok = r.json()["results"]
    assert "over the limit" in big_res["error"] and "1,000,000" in big_res["error"]
    assert ok["error"] is None


def test_json_base64_and_data_urls(client, photos):
    (n1, d1), (n2, d2) = list(photos.items())[:2]
    body = {"images": [{"name": n1, "data": base64.b64encode(d1).decode()},
                       {"name": n2, "data": "data:image/jpeg;base64," + base64.b64encode(d2).decode()},
                       {"name": "junk", "data": "not base64 !!"},
                       {"data": base64.urlsafe_b64encode(d1).decode().rstrip("=")}],
            "tta": True}
    r = client.post("/v1/predict", json=body)
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x["path"] for x in res] == [n1, n2, "junk", "image 3"]
    assert res[0]["error"] is None and res[1]["error"] is None and res[3]["error"] is None
    assert res[2]["error"] == "data is not valid base64"
    assert res[3]["faces"][0]["prob_male"] == pytest.approx(res[0]["faces"][0]["prob_male"])


def test_options_and_field_name_file(client, photos):
    name, data = next(iter(photos.items()))
    plain = _post(client, [(name, data)], field="file").json()["results"][0]["faces"][0]
    by_query = _post(client, [(name, data)], params={"tta": "true"}).json()["results"][0]["faces"][0]
    by_form = _post(client, [(name, data)], data={"tta": "1"}).json()["results"][0]["faces"][0]
    assert by_query["prob_male"] == pytest.approx(by_form["prob_male"], abs=1e-6)
    assert by_query["prob_male"] != pytest.approx(plain["prob_male"], abs=1e-9)  # the mirror counted
    r = _post(client, [(name, data)], data={"tta": "maybe"})
    assert r.status_code == 400 and "tta" in r.json()["message"]


def test_concurrent_requests_keep_their_own_options(client, photos, trained_model):
    """Two worker Predictors, mixed tta on/off: no request sees another's option or photo."""
    items = list(photos.items())
    expected = {}
    for tta in (False, True):
        for r in _post(client, items, params={"tta": str(tta)}).json()["results"]:
            expected[r["path"], tta] = r["faces"][0]["prob_male"]

    async def run() -> list[tuple[str, bool, float]]:
        async def one(i: int):
            # 16 clients, each from its own address (one address may have 8 in flight).
            transport = httpx.ASGITransport(app=client.app, client=(f"10.0.0.{i + 1}", 4000))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as ac:
                name, data = items[i % len(items)]
                tta = i % 2 == 1
                r = await ac.post("/v1/predict", params={"tta": str(tta)},
                                  files=[("files", (name, data, "image/jpeg"))])
                return name, tta, r.json()["results"][0]["faces"][0]["prob_male"]
        return await asyncio.gather(*(one(i) for i in range(16)))

    for name, tta, pm in asyncio.run(run()):
        assert pm == pytest.approx(expected[name, tta], abs=1e-5)


def test_upload_over_the_size_limit_is_413(client, photos):
    blob = np.random.default_rng(0).integers(0, 256, 3_100_000, dtype=np.uint8).tobytes()
    r = _post(client, [("huge.jpg", blob)])
    assert r.status_code == 413 and "3 MB" in r.json()["message"]

    def chunks():  # no Content-Length: the limit must hold while streaming
        for i in range(0, len(blob), 65536):
            yield blob[i:i + 65536]
    r = client.post("/v1/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_too_many_files_is_413(client, photos):
    files = list(photos.items()) * 2  # 12, the limit is 6
    r = _post(client, files)
    assert r.status_code == 413 and "6" in r.json()["message"]
    body = {"images": [{"data": base64.b64encode(d).decode()} for _, d in files]}
    assert client.post("/v1/predict", json=body).status_code == 413


def test_wrong_content_type_is_415(client, photos):
    data = next(iter(photos.values()))
    r = client.post("/v1/predict", content=data, headers={"content-type": "image/jpeg"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["message"]
    r = client.post("/v1/predict", data={"files": "x"})  # urlencoded form
    assert r.status_code == 415


def test_empty_and_malformed_requests_are_400(client):
    r = client.post("/v1/predict")
    assert r.status_code == 400 and "empty" in r.json()["message"]
    assert client.post("/v1/predict", json={"images": []}).status_code == 400
    assert client.post("/v1/predict", data={"tta": "1"}, files={"other": (None, "x")}).status_code == 400
    r = client.post("/v1/predict", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["message"]
    assert client.post("/v1/predict", json={"pictures": []}).status_code == 400
    r = client.post("/v1/predict", content=b"--x\r\nbroken",
                    headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 400


def test_uploads_never_touch_the_disk(client, monkeypatch):
    """A 2.5 MB upload (Starlette would spool anything over 1 MB to a temp file)."""
    def refuse(*a, **k):
        raise AssertionError("a temporary file was created for an upload")
    for name in ("SpooledTemporaryFile", "TemporaryFile", "NamedTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, refuse)
    rng = np.random.default_rng(1)
    noisy = _png(Image.fromarray(rng.integers(0, 256, (960, 900, 3), dtype=np.uint8)))
    assert 2_000_000 < len(noisy) < LIMITS["max_upload_bytes"] - 10_000
    r = _post(client, [("noise.png", noisy)])
    assert r.status_code == 200 and r.json()["results"][0]["error"] is None


def test_busy_server_answers_503(trained_model):
    with TestClient(create_app(trained_model, max_pending=0, warm_up=False)) as c:
        r = c.post("/v1/predict", json={"images": []})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"


def test_model_and_health(client, trained_model):
    m = client.get("/v1/model").json()
    assert m["labels"] == ["female", "male"] or sorted(m["labels"]) == ["female", "male"]
    for key in ("arch", "input_size", "threshold", "temperature", "unsure_band", "metrics", "crop",
                "card_excerpt", "backend"):
        assert key in m
    assert m["limits"]["max_files"] == 6 and m["limits"]["max_upload_bytes"] == 3_000_000
    h = client.get("/healthz")
    assert h.status_code == 200 and h.json()["status"] == "ok"


def test_docs_and_page_load_nothing_from_outside(client):
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "cdn" not in docs.text.lower()
    refs = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
    assert refs and all(u.startswith("/") for u in refs), refs
    for u in refs:
        assert client.get(u).status_code == 200, u
    assert "validatorUrl" in docs.text  # the swagger.io validator badge is switched off
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]) == {
        "multipart/form-data", "application/json"}

    page = client.get("/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    for text in (page.text, client.get("/static/app.js").text, client.get("/static/style.css").text):
        assert not re.search(r"https?://", text)


# -- with the face detector: several faces, and photos with none
@pytest.fixture(scope="module")
def detect_client(trained_model):
    try:
        app = create_app(trained_model, detect=True, **LIMITS)
    except FaceGenderError as exc:
        if "detector" in str(exc):
            pytest.skip(f"face detector not available: {exc}")
        raise
    with TestClient(app) as c:
        yield c


def _collage(photos: dict[str, bytes]) -> bytes:
    """Four fairface photos in a 2x2 grid on a plain grey canvas; each face spans ~1/6 of the
    canvas side, above the size the detector finds in one pass (~1/7)."""
    canvas = Image.new("RGB", (720, 720), (205, 208, 212))
    spots = [(40, 40), (380, 40), (40, 380), (380, 380)]
    for (x, y), data in zip(spots, list(photos.values())[1:5], strict=True):  # 2 men, 2 women
        face = Image.open(io.BytesIO(data)).convert("RGB").resize((300, 300))
        canvas.paste(face, (x, y))
    buf = io.BytesIO()
    canvas.save(buf, "JPEG", quality=92)
    return buf.getvalue()


def test_collage_gives_four_boxed_faces(detect_client, photos):
    r = _post(detect_client, [("collage.jpg", _collage(photos))])
    assert r.status_code == 200
    res = r.json()["results"][0]
    assert res["error"] is None and len(res["faces"]) == 4
    for f in res["faces"]:
        _check_face(f)
        assert 0 < f["det_score"] <= 1
        assert 60 < f["box"]["w"] < 300 and 60 < f["box"]["h"] < 300
    # every box lies on one of the pasted faces, and each face gets one box
    tiles = {(f["box"]["x"] > 360, f["box"]["y"] > 360) for f in res["faces"]}
    assert len(tiles) == 4

    one = _post(detect_client, [("collage.jpg", _collage(photos))], params={"largest": "1"})
    assert len(one.json()["results"][0]["faces"]) == 1


def test_plain_image_has_no_face(detect_client, photos):
    plain = _png(Image.new("RGB", (400, 300), (180, 190, 200)))
    r = _post(detect_client, [("plain.png", plain), next(iter(photos.items()))])
    blank, face = r.json()["results"]
    assert blank["error"] is None and blank["faces"] == [] and blank["width"] == 400
    assert len(face["faces"]) == 1
