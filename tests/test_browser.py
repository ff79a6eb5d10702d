"""The upload page in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright).

Starts the service on a free loopback port, uploads real fairface540 photos through the page's
file input and checks that boxes, labels and plain-word errors appear, that nothing is fetched
from outside, and that the page fits a 375 px phone screen. Set FACEGENDER_SCREENSHOT=1 to save
docs/serve.png (the README's picture).
"""

from __future__ import annotations

import io
import os
import re
import socket
import tarfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from PIL import Image

CHROMIUM = os.environ.get("FACEGENDER_CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic"]

if not Path(CHROMIUM).is_file():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
uvicorn = pytest.importorskip("uvicorn")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(trained_model):
    from facegender.errors import FaceGenderError
    from facegender.serve.app import create_app

    try:  # boxes on real faces when the detector is installed, whole-image boxes otherwise
        app = create_app(trained_model, detect=True)
    except FaceGenderError:
        app = create_app(trained_model, detect=False)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def photo_files(fairface, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("photos")
    with tarfile.open(fairface / "fairface540.tar") as tf:
        faces = [Image.open(io.BytesIO(tf.extractfile(n).read())).convert("RGB")
                 for n in ("female/fairface_0002.jpg", "male/fairface_0006.jpg",
                           "female/fairface_0005.jpg", "male/fairface_0010.jpg")]
        files = {"single": out / "portrait.jpg"}  # a man and, behind him, a second face
        files["single"].write_bytes(tf.extractfile("male/fairface_0020.jpg").read())
    group = Image.new("RGB", (720, 720), (214, 218, 224))  # four photos in a 2x2 grid
    for i, face in enumerate(faces):
        group.paste(face.resize((300, 300)), (40 + (i % 2) * 340, 40 + (i // 2) * 340))
    files["group"] = out / "group.jpg"
    group.save(files["group"], quality=92)
    files["broken"] = out / "notes.jpg"
    files["broken"].write_text("<!doctype html><p>this is a web page saved as .jpg</p>")
    return files


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


def _page(browser, server: str, width: int, outside: list[str]):
    ctx = browser.new_context(viewport={"width": width, "height": 900}, device_scale_factor=1)
    page = ctx.new_page()
    host = urlparse(server).netloc

    def guard(route):  # anything not from this server (or a blob:/data: URL) is a failure
        url = route.request.url
        if urlparse(url).netloc != host and not url.startswith(("blob:", "data:")):
            outside.append(url)
            return route.abort()
        return route.continue_()
    page.route("**/*", guard)
    page.goto(server + "/")
    return page


def test_upload_shows_boxes_labels_and_errors(browser, server, photo_files):
    outside: list[str] = []
    page = _page(browser, server, 1100, outside)
    # Locators, not wait_for_function: the page's CSP (no eval) applies to that one too.
    expect = sync_api.expect
    expect(page.locator("#model")).to_have_text(re.compile(r"^model "))
    assert not page.is_visible("#toolbar") and not page.is_visible("#banner")
    page.set_input_files("#files", [str(photo_files[k]) for k in ("single", "group", "broken")])
    expect(page.locator(".card.done, .card.failed")).to_have_count(3, timeout=20_000)

    cards = {c.query_selector(".name").inner_text(): c for c in page.query_selector_all(".card")}
    portrait = cards["portrait.jpg"]
    assert portrait.query_selector(".box") is not None
    # The small test model may be near 50/50 on this face: then the page must say "unsure"
    # (box tag and badge) rather than print a label as if it were sure.
    tag = portrait.query_selector(".box .tag").inner_text()
    face_line = portrait.query_selector(".face strong").inner_text().lower()
    assert face_line.startswith("face 1: ") and face_line.split(": ")[1] in ("male", "female")
    badge = portrait.query_selector(".face .badge")
    if "unsure" in (portrait.query_selector(".box").get_attribute("class") or ""):
        assert tag == "1 · unsure" and badge is not None and badge.inner_text() == "unsure"
    else:
        assert re.fullmatch(r"1 · (male|female) (>99|\d+)%", tag), tag
        assert badge is None
    # the box sits inside the rendered photo
    img, box = portrait.query_selector("img").bounding_box(), portrait.query_selector(".box").bounding_box()
    assert img["width"] > 100 and box["width"] > 10
    assert img["x"] - 1 <= box["x"] and box["x"] + box["width"] <= img["x"] + img["width"] + 1

    n_group = len(cards["group.jpg"].query_selector_all(".box"))
    assert n_group >= 1  # 4 with the detector, 1 (the whole image) without

    broken = cards["notes.jpg"]
    assert "failed" in (broken.get_attribute("class") or "")
    assert "HTML page, not an image" in broken.query_selector(".status").inner_text()
    assert outside == []

    if os.environ.get("FACEGENDER_SCREENSHOT"):
        out = ROOT / "docs" / "serve.png"
        out.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(out), full_page=True)
    page.context.close()


def test_page_fits_a_phone(browser, server, photo_files):
    outside: list[str] = []
    page = _page(browser, server, 375, outside)
    page.set_input_files("#files", str(photo_files["group"]))
    page.wait_for_selector(".card.done .box", timeout=20_000)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    card = page.query_selector(".card").bounding_box()
    assert card["x"] >= 0 and card["x"] + card["width"] <= 375
    assert outside == []
    page.context.close()


def test_docs_page_renders_offline(browser, server):
    outside: list[str] = []
    page = _page(browser, server, 1100, outside)
    page.goto(server + "/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=20_000)
    assert "/v1/predict" in page.inner_text("#swagger-ui")
    assert outside == []
    page.context.close()


def test_video_upload_lists_people_and_screen_time(browser, server, tmp_path):
    from clips import encode_clip, two_people

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(encode_clip(two_people()))  # a woman and a man, both on screen 3 s
    outside: list[str] = []
    page = _page(browser, server, 1100, outside)
    page.set_input_files("#files", str(clip))
    sync_api.expect(page.locator(".card.done, .card.failed")).to_have_count(1, timeout=30_000)
    card = page.query_selector(".card")
    assert "done" in (card.get_attribute("class") or ""), card.inner_text()
    assert card.query_selector("video") is not None and card.query_selector(".box") is None
    status = card.query_selector(".status").inner_text()
    assert re.match(r"2 people tracked · 3\.0 s · 3 frames read \(every 1(\.0)? s\)", status), status
    people = [li.inner_text() for li in card.query_selector_all(".face.track")]
    assert len(people) == 2 and all(p.startswith("Person ") for p in people), people
    assert all("on screen 3.0 s" in p for p in people), people
    summary = card.query_selector(".summary").inner_text()
    assert summary.startswith("On screen: women ") and "people: " in summary, summary
    assert outside == []
    page.context.close()
