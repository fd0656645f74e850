"""`skinsage serve`: a local web page to try a model on a photo and see where it looked (Grad-CAM).

One page (GET /) and one endpoint (POST /api/explain, a multipart `file`): the photo goes through
`Classifier.explain`, the same decoding, inference path, TTA and Grad-CAM as `skinsage predict` and
`skinsage explain`. Bad uploads get a JSON {"error": ...} with a 4xx status, shown in the page; the
server keeps serving. Meant for 127.0.0.1: there is no authentication.
"""

# no `from __future__ import annotations`: FastAPI reads the endpoint's annotations at run time, and
# UploadFile is imported inside create_app (fastapi is only needed to serve)
import base64
import html
import io
import tempfile
import threading
from pathlib import Path

from ..data.images import ImageError
from ..contracts.evaluation import format_value
from .classifier import Classifier

MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # a phone or dermatoscope photo is a few MB
DISPLAY_SIDE = 768                   # px on the longer side of the photo and overlay sent back
CHUNK = 1024 * 1024
HEADLINE = ("accuracy", "balanced_accuracy", "auc_macro_ovr")
PAGE = Path(__file__).with_name("page.html")


def create_app(clf: Classifier, max_upload_bytes: int = MAX_UPLOAD_BYTES):
    """The FastAPI app serving `clf` (loaded once; requests share it, one at a time)."""
    from fastapi import FastAPI, File, UploadFile
    from fastapi.responses import HTMLResponse, JSONResponse

    clf.grad_cam  # noqa: B018  built now: a model Grad-CAM cannot explain fails at start, not per upload
    app = FastAPI(title="SkinSage", docs_url=None, redoc_url=None, openapi_url=None)
    page = render_page(clf, max_upload_bytes)
    lock = threading.Lock()  # one Keras forward/backward pass at a time: the model is shared

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.post("/api/explain")
    def explain(file: UploadFile | None = File(None)):
        if file is None:
            return _error(400, "no file uploaded: choose or drop a photo")
        data = _read_limited(file, max_upload_bytes)
        if data is None:
            return _error(413, f"{file.filename or 'the file'} is larger than "
                               f"{max_upload_bytes // (1024 * 1024)} MB; upload a smaller photo")
        if not data:
            return _error(400, f"{file.filename or 'the file'} is empty")
        try:
            with lock:
                result = _explain_bytes(clf, data, file.filename)
        except ImageError as err:
            return _error(400, f"{file.filename or 'the file'}: {_reason(err)}")
        return JSONResponse(result)

    def _error(status: int, message: str):
        return JSONResponse({"error": message}, status_code=status)

    return app


def _read_limited(file, limit: int) -> bytes | None:
    """The upload's bytes, or None once it passes `limit` (read in chunks: never all of a huge one)."""
    parts, size = [], 0
    while chunk := file.file.read(CHUNK):
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


def _explain_bytes(clf: Classifier, data: bytes, filename: str | None) -> dict:
    # through a file: load_image's checks (empty, truncated, decompression bombs) work on paths
    suffix = Path(filename or "upload").suffix[:10]
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
        tmp.write(data)
        tmp.flush()
        explanation = clf.explain(tmp.name, max_side=DISPLAY_SIDE)
    prediction = explanation.prediction
    return {"label": prediction.label, "probability": prediction.probability,
            "top_k": [{"label": name, "probability": p} for name, p in prediction.top_k],
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

    metrics, source = recorded_test_metrics(clf.path) if clf.path else (None, None)
    facts = {"model": f"{Path(clf.path).name if clf.path else 'model'} ({clf.kind})",
             "classes": ", ".join(name.replace("_", " ") for name in clf.classes),
             "input size": f"{clf.image_size} x {clf.image_size} px",
             "test-time augmentation": clf.tta,
             "test metrics": _metrics_text(metrics, source)}
    rows = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts.items())
    return (PAGE.read_text(encoding="utf-8").replace("{{MODEL_FACTS}}", rows)
            .replace("{{MAX_MB}}", str(max_upload_bytes // (1024 * 1024))))


def _metrics_text(metrics: dict | None, source: str | None) -> str:
    if not metrics:
        return "not recorded for this file (run the pipeline's evaluate stage)"
    shown = [f"{key.replace('_', ' ')} {format_value(metrics[key])}" for key in HEADLINE if key in metrics]
    return ", ".join(shown) + (f" (from {source})" if source else "")


def serve(model_path: str, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    clf = Classifier.load(model_path)
    print(f"SkinSage on http://{host}:{port}/  (model {model_path}; Ctrl-C stops)", flush=True)
    uvicorn.run(create_app(clf), host=host, port=port, log_level="warning")
