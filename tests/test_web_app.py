"""`skinsage serve`: the real server on a free loopback port, its API over HTTP, and the page in a
real (system) Chromium driven by Playwright."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from PIL import Image

from tiny_model import CLASSES, SIZE, lesion_like, noise, save

pytest.importorskip("fastapi", reason="the web app needs fastapi (requirements.txt)")
pytest.importorskip("uvicorn", reason="the web app needs uvicorn (requirements.txt)")
CHROMIUM = Path("/usr/bin/chromium")
SMALL_LIMIT = 200_000  # bytes: the test server's upload limit, so a "huge" upload stays small


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(model_path):
    import uvicorn

    from skinsage.app.classifier import Classifier
    from skinsage.app.server import create_app

    app = create_app(Classifier.load(model_path), max_upload_bytes=SMALL_LIMIT)
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def photo(tmp_path) -> Path:
    """Like the tiny model's training "lesions" (tiny_model.lesion_like): answered."""
    return save(Image.fromarray(lesion_like(1, SIZE, seed=7)[0]), tmp_path / "lesion.png")


@pytest.fixture
def not_a_lesion(tmp_path) -> Path:
    """Noise: nothing like the training lesions, refused as out_of_distribution."""
    return save(Image.fromarray(noise(5, (30, 40, 3))), tmp_path / "noise.png")


def post_file(url: str, name: str, data: bytes) -> tuple[int, dict]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{url}/api/explain", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_api_explains_a_photo_and_rejects_bad_uploads_while_serving_on(server, photo, not_a_lesion):
    status, good = post_file(server, photo.name, photo.read_bytes())
    assert status == 200 and good["status"] in ("ok", "uncertain") and isinstance(good["ood_score"], float)
    status, refused = post_file(server, not_a_lesion.name, not_a_lesion.read_bytes())
    assert status == 200 and refused["status"] == "out_of_distribution" and refused["ood_score"] > good["ood_score"]
    assert [entry["label"] for entry in good["top_k"]] == sorted(
        CLASSES, key=lambda c: -next(e["probability"] for e in good["top_k"] if e["label"] == c))
    assert good["overlay"].startswith("data:image/png;base64,") and good["explained"] == good["label"]

    status, bad = post_file(server, "notes.png", b"this is not an image")
    assert status == 400 and bad["error"] == "notes.png: not an image Pillow can read"
    status, huge = post_file(server, "huge.jpg", b"\xff" * (SMALL_LIMIT + 1))
    assert status == 413 and "larger than" in huge["error"]
    status, again = post_file(server, photo.name, photo.read_bytes())
    assert status == 200 and again["top_k"] == good["top_k"]  # still serving, same answer


def test_page_shows_the_model_and_the_notice(server):
    with urllib.request.urlopen(server, timeout=30) as response:
        page = response.read().decode()
    assert "Research tool, not for diagnosis" in page
    assert all(name in page for name in CLASSES) and "16 x 16 px" in page and "model.keras (cnn)" in page
    assert "test metrics" in page and "not recorded" in page  # no dvc.lock beside the tiny model


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no system Chromium at {CHROMIUM} "
                                                  "(apt-get install chromium)")
def test_in_chromium_upload_shows_top3_and_overlay_and_a_bad_file_shows_an_error(server, photo, not_a_lesion,
                                                                                tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    bad = tmp_path / "not_a_photo.jpg"
    bad.write_text("plain text")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM),
                                    args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(server)
            assert page.locator("#notice").is_visible()
            _upload_and_check(page, photo)

            page.set_input_files("#file", str(bad))
            page.wait_for_function("document.getElementById('error').textContent.length > 0")
            error = page.locator("#error").inner_text()
            assert "not_a_photo.jpg" in error and "not an image Pillow can read" in error
            assert page.locator("#result").is_hidden()

            _upload_and_check(page, photo)  # the server and the page recover
            assert page.locator("#error").inner_text() == ""

            # not a lesion: the refusal instead of the class bars and the heat map
            page.set_input_files("#file", str(not_a_lesion))
            page.wait_for_selector("#refusal:not([hidden])", timeout=30_000)
            assert "does not look like a dermoscopic image of a skin lesion" in page.locator("#refusal").inner_text()
            assert page.locator("#top").is_hidden() and page.locator("#overlay").is_hidden()
            assert page.locator("#photo").is_visible()
            shots = Path(os.environ.get("SKINSAGE_SCREENSHOTS", tmp_path))
            shots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shots / "web_refusal.png"), full_page=True)
            _upload_and_check(page, photo)  # and answers the next lesion again
            assert page.locator("#refusal").is_hidden()
        finally:
            browser.close()


def _upload_and_check(page, photo: Path) -> None:
    page.evaluate("document.getElementById('status').textContent = ''")
    page.set_input_files("#file", str(photo))
    page.wait_for_function(f"document.getElementById('status').textContent === 'Done: {photo.name}'",
                           timeout=30_000)
    assert page.locator("#result").is_visible() and page.locator("#refusal").is_hidden()
    items = page.locator("#top li").all_inner_texts()
    assert len(items) == 3 and all(any(name in item for name in CLASSES) for item in items)
    # the overlay is a decoded image in the page, not a broken one
    assert page.eval_on_selector("#overlay", "img => img.complete && img.naturalWidth") == SIZE
    assert page.locator("#overlay").is_visible() and page.locator("#photo").is_visible()


def test_serve_command_line_defaults_to_loopback_and_checks_the_port(capsys):
    from skinsage.app.cli import build_parser

    args = build_parser().parse_args(["serve", "--model", "m.keras"])
    assert (args.host, args.port, args.model) == ("127.0.0.1", 8000, "m.keras")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--port", "70000"])
    assert "must be a port number 0-65535, got 70000" in capsys.readouterr().err
