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
    assert "refer when P(melanoma) &gt;= 0.435" in page  # the model's recorded referral (escaped)


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
    # the referral advice, right under the "not for diagnosis" notice, as the API decided it
    _, answer = post_file(page.url.rstrip("/"), photo.name, photo.read_bytes())
    advice = page.locator("#referral")
    assert advice.is_visible() and page.eval_on_selector("#notice", "n => n.nextElementSibling.id") == "referral"
    expected = "have this lesion checked by a clinician" if answer["refer"] else "below this model's referral threshold"
    assert expected in advice.inner_text() and f"{100 * answer['refer_probability']:.1f}%" in advice.inner_text()


def test_serve_command_line_defaults_to_loopback_and_checks_the_port(capsys):
    from skinsage.app.cli import build_parser

    args = build_parser().parse_args(["serve", "--model", "m.keras"])
    assert (args.host, args.port, args.model) == ("127.0.0.1", 8000, "m.keras")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--port", "70000"])
    assert "must be a port number 0-65535, got 70000" in capsys.readouterr().err


# --- issue #27: a web app that cannot be flooded ------------------------------------------------

def flat_png(megapixels: float) -> bytes:
    """A flat-colour RGB PNG of about `megapixels` MP, a few hundred bytes per MP."""
    import struct
    import zlib

    side = int((megapixels * 1e6) ** 0.5)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(b"\x00" + b"\x80\x40\x20" * side) for _ in range(side))
    data += compressor.flush()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def raw_request(url: str, head: str, body_blocks=(), timeout: float = 10) -> tuple[str, int]:
    """Send `head` then `body_blocks` over a raw socket until the server answers; (status line or
    "closed", body bytes the server's socket accepted)."""
    host, port = url.removeprefix("http://").split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head.encode())
        for block in body_blocks:
            sock.settimeout(0.0)
            try:
                answer = sock.recv(4096)
                return (answer.split(b"\r\n")[0].decode() if answer else "closed"), sent
            except BlockingIOError:
                pass
            sock.settimeout(timeout)
            try:
                sock.sendall(block)
            except OSError:
                break
            sent += len(block)
        sock.settimeout(timeout)
        try:
            answer = sock.recv(4096)
        except OSError:
            answer = b""
    return (answer.split(b"\r\n")[0].decode() if answer else "closed"), sent


def test_a_declared_10_gb_body_is_refused_at_once_without_reading(server):
    port = server.rsplit(":", 1)[1]
    start = time.monotonic()
    status, _ = raw_request(server, f"POST /api/explain HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                                    "Content-Type: multipart/form-data; boundary=x\r\n"
                                    "Content-Length: 10000000000\r\n\r\n", timeout=5)
    assert " 413 " in status and time.monotonic() - start < 5


def test_a_chunked_body_over_the_limit_is_refused_while_streaming(server):
    port = server.rsplit(":", 1)[1]
    def framed(data: bytes) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    part = b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'
    head = (f"POST /api/explain HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nTransfer-Encoding: chunked\r\n"
            "Content-Type: multipart/form-data; boundary=x\r\n\r\n")
    block = framed(b"\0" * (1 << 20))
    status, sent = raw_request(server, head, [framed(part)] + [block] * 64)
    # the server stops reading at the limit: only the kernel's loopback buffers take more
    assert " 413 " in status and sent < 32 * len(block), (status, sent)


def test_the_web_app_refuses_more_pixels_than_a_photo_needs(server):
    from skinsage.app.server import WEB_MAX_PIXELS
    assert WEB_MAX_PIXELS <= 40_000_000
    png = flat_png(WEB_MAX_PIXELS / 1e6 + 2)
    assert len(png) < SMALL_LIMIT
    status, answer = post_file(server, "big.png", png)
    assert status == 400 and f"at most {WEB_MAX_PIXELS / 1e6:.0f} megapixels" in answer["error"], answer


def post_with(url: str, headers: dict, name: str = "a.png", data: bytes = b"not an image") -> int:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\r\n"
            ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{url}/api/explain", data=body, method="POST", headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}", **headers})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_cross_origin_posts_and_unknown_hosts_are_refused(server):
    port = server.rsplit(":", 1)[1]
    assert post_with(server, {"Origin": "http://evil.example"}) == 403
    assert post_with(server, {"Origin": "null"}) == 403
    assert post_with(server, {"Origin": f"http://127.0.0.1:{port}"}) == 400  # reached the endpoint
    assert post_with(server, {}) == 400  # scripts send no Origin
    assert post_with(server, {"Host": "evil.example"}) == 400
    request = urllib.request.Request(server, headers={"Host": f"rebound.example:{port}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 400


def test_a_nul_in_the_file_name_is_a_400(server):
    assert post_with(server, {}, name="photo.p\0ng") == 400


@pytest.fixture
def blocking_server(model_path, monkeypatch):
    """A server whose explanations wait for `release`: 1 worker, 1 request waiting."""
    import uvicorn

    from skinsage.app import server as server_module
    from skinsage.app.classifier import Classifier

    release = threading.Event()
    monkeypatch.setattr(server_module, "_explain_bytes",
                        lambda clf, data, name, max_pixels: release.wait(30) and {"label": "x"})
    app = server_module.create_app(Classifier.load(model_path), max_upload_bytes=SMALL_LIMIT,
                                   workers=1, waiting=1)
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    while not uv.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", release
    release.set()
    uv.should_exit = True
    thread.join(timeout=10)


def test_requests_beyond_the_worker_pool_get_503_at_once(blocking_server, photo):
    from concurrent.futures import ThreadPoolExecutor

    url, release = blocking_server
    data = photo.read_bytes()
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(post_file, url, photo.name, data) for _ in range(4)]
        time.sleep(3)
        early = [f.result() for f in futures if f.done()]
        release.set()
        statuses = sorted(f.result()[0] for f in futures)
    assert statuses == [200, 200, 503, 503]
    assert sorted(status for status, _ in early) == [503, 503]
    assert all("busy" in answer["error"] for status, answer in early)


@pytest.mark.parametrize("host, loud", [("127.0.0.1", False), ("localhost", False), ("::1", False),
                                        ("0.0.0.0", True), ("192.168.1.5", True)])
def test_serving_beyond_loopback_warns_loudly(model_path, monkeypatch, capsys, host, loud):
    import uvicorn

    from skinsage.app import cli
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *a, **k: None)
    assert cli.main(["serve", "--model", str(model_path), "--host", host]) == 0
    err = capsys.readouterr().err
    assert ("WARNING" in err and "no authentication" in err) == loud, err


def test_a_client_too_slow_to_send_its_upload_is_cut_off(server, monkeypatch):
    from skinsage.app import server as server_module
    monkeypatch.setattr(server_module, "BODY_SECONDS", 1)
    port = server.rsplit(":", 1)[1]
    part = b'--x\r\nContent-Disposition: form-data; name="file"; filename="slow.png"\r\n\r\n' + b"\0" * 100
    host, _ = server.removeprefix("http://").split(":")
    start = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall((f"POST /api/explain HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 100000\r\n"
                      "Content-Type: multipart/form-data; boundary=x\r\n\r\n").encode() + part)
        answer = sock.recv(4096)  # and nothing more is sent
    assert b" 408 " in answer.split(b"\r\n")[0] and time.monotonic() - start < 5, answer[:80]


def test_upload_limits_read_as_people_read_them():
    from skinsage.app.server import size_text

    assert size_text(20 * 2**20) == "20 MB" and size_text(3 * 2**19) == "1.5 MB"
    assert size_text(100_000) == "97 KB" and size_text(10) == "1 KB"  # never "0 MB"
