"""`skinsage serve`: a local web page to try a model on a photo and see where it looked (Grad-CAM).

One page (GET /) and one endpoint (POST /api/explain, a multipart `file`): the photo goes through
`Classifier.explain`, the same decoding, inference path, TTA and Grad-CAM as `skinsage predict` and
`skinsage explain`. Bad uploads get a JSON {"error": ...} with a 4xx status, shown in the page; the
server keeps serving. Meant for 127.0.0.1: there is no authentication.
"""

# no `from __future__ import annotations`: FastAPI reads the endpoint's annotations at run time, and
# fastapi is imported inside create_app (it is only needed to serve)
import asyncio
import base64
import html
import io
import ipaddress
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..data.images import ImageError
from ..contracts.evaluation import format_value
from .classifier import Classifier

MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # a phone or dermatoscope photo is a few MB
FORM_OVERHEAD = 64 * 1024            # multipart headers and boundaries around the file
# Far below the CLI's ~89 MP: a phone photo is 12-24 MP, and a larger JPEG is decoded at reduced
# scale anyway. A 24 MP RGB image is ~72 MB, so one worker's peak stays a few hundred MB.
WEB_MAX_PIXELS = 24_000_000
WORKERS = 1          # decoding + Grad-CAM threads: the model runs one pass at a time anyway
WAITING = 4          # requests queued behind them; more get 503 at once instead of holding memory
BODY_SECONDS = 60    # to send the whole upload (20 MB at 350 KB/s): a slow client is cut off
MAX_CONNECTIONS = 32  # uvicorn answers 503 beyond this many open connections (slow clients)
DISPLAY_SIDE = 768   # px on the longer side of the photo and overlay sent back
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
HEADLINE = ("accuracy", "balanced_accuracy", "auc_macro_ovr")
PAGE = Path(__file__).with_name("page.html")


class UploadError(Exception):
    """An upload refused while reading it: (HTTP status, message)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def create_app(clf: Classifier, max_upload_bytes: int = MAX_UPLOAD_BYTES, host: str = "127.0.0.1",
               allowed_hosts: tuple[str, ...] = (), workers: int = WORKERS, waiting: int = WAITING,
               max_pixels: int = WEB_MAX_PIXELS):
    """The FastAPI app serving `clf` (loaded once). Uploads are read as a stream and refused past
    `max_upload_bytes` (a declared Content-Length first), decoded up to `max_pixels`, explained by
    `workers` threads with `waiting` requests queued (503 beyond); POSTs from another origin and
    requests naming another Host than `host`, loopback or `allowed_hosts` are refused."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    clf.grad_cam  # noqa: B018  built now: a model Grad-CAM cannot explain fails at start, not per upload
    app = FastAPI(title="SkinSage", docs_url=None, redoc_url=None, openapi_url=None)
    # DNS rebinding: a page elsewhere may resolve its own name to 127.0.0.1
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=_host_names(host, allowed_hosts))
    page = render_page(clf, max_upload_bytes)
    # the same threads every time: memory freed by one request is reused by the next (a fresh thread
    # per request keeps its own malloc arena, ~0.8 GB each after a big photo)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="skinsage-explain")
    slots = asyncio.Semaphore(workers + waiting)
    model_lock = threading.Lock()  # one Keras forward/backward pass at a time: the model is shared

    def explain_locked(data: bytes, name: str) -> dict:
        with model_lock:
            return _explain_bytes(clf, data, name, max_pixels)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.post("/api/explain")
    async def explain(request: Request):
        origin = request.headers.get("origin")
        if origin is not None and not _same_origin(origin, request.headers.get("host", "")):
            return _error(403, "uploads are accepted from this server's own page only")
        if slots.locked():
            return _error(503, "the server is busy with other photos; try again in a moment",
                          {"Retry-After": "5"})
        async with slots:
            try:
                name, data = await _read_upload(request, max_upload_bytes)
            except UploadError as err:
                return _error(err.status, str(err), {"Connection": "close"})
            try:
                result = await asyncio.get_running_loop().run_in_executor(
                    pool, explain_locked, data, name)
            except ImageError as err:
                return _error(400, f"{name}: {_reason(err)}")
        return JSONResponse(result)

    def _error(status: int, message: str, headers: dict | None = None):
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    return app


def _host_names(host: str, extra: tuple[str, ...]) -> list[str]:
    names = [*LOOPBACK_NAMES, *extra]
    if host not in ("0.0.0.0", "::", ""):
        names.append(host)
    names += [f"[{name}]" for name in names if ":" in name]  # IPv6 as a Host header writes it
    return list(dict.fromkeys(name.lower() for name in names))


def _same_origin(origin: str, host: str) -> bool:
    """The Origin a browser sent names the host the request was sent to (the page's own)."""
    from urllib.parse import urlsplit

    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and parts.netloc == host


def size_text(n_bytes: int) -> str:
    """20 MB, 512 KB: a limit as people read it (never "0 MB" for a limit under a megabyte)."""
    return f"{n_bytes / 2**20:g} MB" if n_bytes >= 2**20 else f"{max(n_bytes // 1024, 1)} KB"


async def _read_upload(request, limit: int) -> tuple[str, bytes]:
    """(file name, bytes) of the multipart field `file`, read as a stream: refused on a declared
    Content-Length over the limit before any byte is read, and as soon as the stream passes it;
    never spooled to disk. A client slower than BODY_SECONDS is cut off."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    too_large = f"the upload is larger than {size_text(limit)}; upload a smaller photo"
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit + FORM_OVERHEAD):
        raise UploadError(413, too_large)
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not options.get(b"boundary"):
        raise UploadError(400, "no file uploaded: send a multipart form with a `file` field")
    form = _FileField()
    parser = MultipartParser(options[b"boundary"], form.callbacks())
    total, deadline = 0, time.monotonic() + BODY_SECONDS
    stream = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), max(0.0, deadline - time.monotonic()))
        except StopAsyncIteration:
            break
        except (asyncio.TimeoutError, TimeoutError):
            raise UploadError(408, f"the upload took longer than {BODY_SECONDS} s; try again") from None
        total += len(chunk)
        if total > limit + FORM_OVERHEAD or form.size > limit:
            raise UploadError(413, too_large)
        try:
            parser.write(chunk)
        except Exception as err:  # noqa: BLE001  python-multipart's parse errors have no common base
            raise UploadError(400, f"malformed upload ({type(err).__name__})") from None
        if form.size > limit:
            raise UploadError(413, too_large)
    return form.result()


class _FileField:
    """Collects the part named `file` of a multipart body (other parts are dropped)."""

    def __init__(self):
        self.parts, self.headers, self.field, self.value = [], {}, b"", b""
        self.name, self.data, self.current, self.found = None, [], None, False

    @property
    def size(self) -> int:
        return sum(map(len, self.data))

    def callbacks(self) -> dict:
        def on_header_field(data, start, end):
            self.field += data[start:end]

        def on_header_value(data, start, end):
            self.value += data[start:end]

        def on_header_end():
            self.headers[self.field.lower()] = self.value
            self.field, self.value = b"", b""

        def on_headers_finished():
            from python_multipart.multipart import parse_options_header

            _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
            self.current = options.get(b"name") == b"file" and not self.found
            if self.current:
                self.found, self.name = True, options.get(b"filename", b"").decode("utf-8", "replace")
            self.headers = {}

        def on_part_data(data, start, end):
            if self.current:
                self.data.append(bytes(data[start:end]))

        def on_part_end():
            self.current = False

        return {"on_header_field": on_header_field, "on_header_value": on_header_value,
                "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
                "on_part_data": on_part_data, "on_part_end": on_part_end}

    def result(self) -> tuple[str, bytes]:
        if not self.found:
            raise UploadError(400, "no file uploaded: choose or drop a photo")
        name = self.name or "the file"
        if any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise UploadError(400, "the file name contains control characters (e.g. NUL); rename it")
        data = b"".join(self.data)
        if not data:
            raise UploadError(400, f"{name} is empty")
        return name, data


def _explain_bytes(clf: Classifier, data: bytes, filename: str | None, max_pixels: int) -> dict:
    # through a file: load_image's checks (empty, truncated, decompression bombs) work on paths
    suffix = Path(filename or "upload").suffix[:10]
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
        tmp.write(data)
        tmp.flush()
        explanation = clf.explain(tmp.name, max_side=DISPLAY_SIDE, max_pixels=max_pixels)
    prediction = explanation.prediction
    return {"label": prediction.label, "probability": prediction.probability,
            "top_k": [{"label": name, "probability": p} for name, p in prediction.top_k],
            "refer": prediction.refer, "refer_probability": prediction.refer_probability,
            "status": prediction.status, "ood_score": prediction.ood_score,
            "explained": explanation.explained, "layer": explanation.layer,
            "photo": _data_url(explanation.photo), "overlay": _data_url(explanation.overlay)}


def _reason(err: ImageError) -> str:
    """The decoder's reason without the temporary file's path."""
    text = str(err)
    return text.split(": ", 1)[1] if ": " in text else text


def _data_url(array) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def render_page(clf: Classifier, max_upload_bytes: int) -> str:
    """The page with the model's facts filled in (escaped: class names come from a file)."""
    from .model_info import recorded_test_metrics

    metrics, _ = recorded_test_metrics(clf.path) if clf.path else (None, None)
    facts = {"model": f"{Path(clf.path).name if clf.path else 'model'} ({clf.kind})",
             "classes": ", ".join(name.replace("_", " ") for name in clf.classes),
             "input size": f"{clf.image_size} x {clf.image_size} px",
             "test-time augmentation": clf.tta,
             "referral": _referral_text(clf),
             "test metrics": _metrics_text(metrics)}
    rows = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts.items())
    return (PAGE.read_text(encoding="utf-8").replace("{{MODEL_FACTS}}", rows)
            .replace("{{MAX_SIZE}}", size_text(max_upload_bytes)))


def _referral_text(clf: Classifier) -> str:
    r = clf.referral
    if r is None:
        return "none recorded for this model (trained before referral existed): no referral advice"
    names = " + ".join(name.replace("_", " ") for name in r["classes"])
    return (f"refer when P({names}) >= {r['threshold']:.3f}, the threshold chosen to refer "
            f"{r['target_sensitivity']:.0%} of the validation images of these classes")


def _metrics_text(metrics: dict | None) -> str:
    """The page names the project-relative file, never where the server keeps it."""
    from .model_info import EVAL_FILE

    if not metrics:
        return "not recorded for this file (run the pipeline's evaluate stage)"
    shown = [f"{key.replace('_', ' ')} {format_value(metrics[key])}" for key in HEADLINE if key in metrics]
    return ", ".join(shown) + f" (from {EVAL_FILE}: the evaluate stage scored this exact model file)"


def serve(model_path: str, host: str = "127.0.0.1", port: int = 8000,
          allowed_hosts: tuple[str, ...] = ()) -> None:
    import uvicorn

    clf = Classifier.load(model_path)
    warning = exposure_warning(host)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    print(f"SkinSage on http://{host}:{port}/  (model {model_path}; Ctrl-C stops)", flush=True)
    app = create_app(clf, host=host, allowed_hosts=allowed_hosts)
    # slow clients: keep-alive connections closed after 5 s idle, at most MAX_CONNECTIONS open
    # (503 beyond), uploads cut off after BODY_SECONDS (in _read_upload)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_keep_alive=5,
                            limit_concurrency=MAX_CONNECTIONS, server_header=False,
                            proxy_headers=False, h11_max_incomplete_event_size=16 * 1024)
    uvicorn.Server(config).run()


def exposure_warning(host: str) -> str | None:
    """A loud warning when `host` is reachable from other machines (anything but loopback)."""
    try:
        loopback = host in ("localhost",) or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        loopback = False
    if loopback:
        return None
    return (f"WARNING: serving on {host}, reachable from other machines. The web app has no "
            "authentication and no encryption: anyone who can reach this address can upload photos "
            "and see the model's answers. Serve on 127.0.0.1 (the default) unless that is what you "
            "want, and give the names clients use with --allow-host.")
