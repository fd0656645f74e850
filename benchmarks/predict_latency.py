"""How fast `skinsage predict` is on this CPU, for the CNN (28 px) and ResNet50 (224 px, weights=None).

    .venv/bin/python benchmarks/predict_latency.py [--images 64] [--repeats 20]

Prints per model:
  cold start   a fresh process: import + Classifier.load + the first prediction of one JPEG file
               (what a one-off `skinsage predict x.jpg` costs; timed inside that process, and the
               process wall time from outside)
  warm single  one JPEG file per `Classifier.predict` call, model already loaded (median, p90)
  batched      `predict_files` over a folder of JPEGs, batches of 32: decode + resize + network
  network only `Classifier.probabilities` on already-prepared arrays, batches of 32
The last three with the TTA the model records (`flips`, as `evaluate` scores it: 4 forward passes)
and with `--tta none`, and the ratio between them.

Random weights: speed does not depend on what the network learned. Images are the real HAM10000
JPEGs (200x150) in ../shared/data when present, otherwise generated 600x450 JPEGs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REAL_IMAGES = ROOT.parent / "shared" / "data" / "ham10000_jpg"
MODELS = {"cnn": {}, "resnet50": {"models.resnet50.weights": None}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64, help="images in the batched runs")
    parser.add_argument("--repeats", type=int, default=20, help="warm single-image predictions")
    parser.add_argument("--cold", nargs=2, metavar=("MODEL", "IMAGE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cold:
        return cold_child(*args.cold)
    with tempfile.TemporaryDirectory() as tmp:
        images = image_files(Path(tmp) / "images", args.images)
        print(f"{os.cpu_count()} CPU cores; {len(images)} images: {describe_images(images)}\n")
        for kind, overrides in MODELS.items():
            model_path = save_model(kind, overrides, Path(tmp) / f"{kind}.keras")
            report(kind, model_path, images, args.repeats)


def image_files(folder: Path, count: int) -> list[Path]:
    if REAL_IMAGES.is_dir():
        files = sorted(REAL_IMAGES.rglob("*.jpg"))
        return files[:: max(1, len(files) // count)][:count]
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:450, 0:600]
    files = []
    for i in range(count):  # smooth blobs plus noise: decodes like a photo, not like pure noise
        base = np.stack([(x * (1 + i % 3) + y) % 256, (y * 2 + i * 7) % 256, (x + y * i) % 256], -1)
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        path = folder / f"{i:03d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        files.append(path)
    return files


def describe_images(files: list[Path]) -> str:
    from PIL import Image

    from skinsage.data.images import OPEN_FORMATS

    with Image.open(files[0], formats=OPEN_FORMATS) as image:
        size = f"{image.width}x{image.height} JPEG"
    return f"{size}, real HAM10000" if REAL_IMAGES.is_dir() else f"{size}, generated"


def save_model(kind: str, overrides: dict, path: Path) -> Path:
    from skinsage.model.architectures import build_model
    from skinsage.model.model_file import save_model as save
    from skinsage.params import load_params
    from skinsage.prepared import PreparedData
    from skinsage.train.trainer import model_metadata

    params = load_params(ROOT / "params.yaml", {"model": kind, **overrides})
    classes = [f"class_{i}" for i in range(7)]
    model = build_model(kind, len(classes), params.model_params)
    data = PreparedData(classes, "benchmark (random weights)", params.image_size, {})
    save(model, path, model_metadata(params, data, {}))
    return path


def report(kind: str, model_path: Path, images: list[Path], repeats: int) -> None:
    from skinsage import Classifier

    cold = cold_start(model_path, images[0])
    clf = Classifier.load(model_path)
    print(f"== {kind}: {clf.image_size} px, {clf.model.count_params():,} parameters, "
          f"{model_path.stat().st_size / 1e6:.1f} MB file")
    print(f"cold start    {cold['process_s']:.2f} s for the whole process: import "
          f"{cold['import_s']:.2f} s + load {cold['load_s']:.2f} s + first prediction "
          f"{cold['first_predict_s']:.2f} s")

    plain = Classifier(clf.model, clf.metadata, clf.path, tta="none")
    rows = {name: [] for name in ("warm single", "batched", "network only")}
    for c in (clf, plain):
        rows["warm single"].append(warm_single(c, images, repeats))
        rows["batched"].append(batched(c, images))
        rows["network only"].append(network_only(c, images))
    for name, ((tta_s, detail), (plain_s, _)) in rows.items():
        print(f"{name:13s} TTA {clf.tta}: {detail}; TTA none: {rows_detail(name, plain_s, images)}"
              f"  -> {tta_s / plain_s:.2f}x the time")
    print()


def rows_detail(name: str, seconds: float, images: list[Path]) -> str:
    return f"{seconds * 1e3:.1f} ms" if name == "warm single" else f"{len(images) / seconds:.1f} images/s"


def warm_single(clf, images: list[Path], repeats: int) -> tuple[float, str]:
    clf.predict(images[0])  # warm up: the first call traces the graph
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        clf.predict(images[i % len(images)])
        times.append(time.perf_counter() - start)
    times.sort()
    median = statistics.median(times)
    return median, (f"{median * 1e3:.1f} ms median, {times[int(0.9 * (len(times) - 1))] * 1e3:.1f} ms p90 "
                    f"per image ({repeats} calls)")


def batched(clf, images: list[Path]) -> tuple[float, str]:
    list(clf.predict_files(images[:32]))  # warm up the batch-32 graph
    start = time.perf_counter()
    outcomes = list(clf.predict_files(images, batch_size=32))
    seconds = time.perf_counter() - start
    assert all(o.prediction for o in outcomes)
    return seconds, f"{len(images) / seconds:.1f} images/s from files"


def network_only(clf, images: list[Path]) -> tuple[float, str]:
    arrays = __import__("numpy").stack([clf.input_array(p) for p in images])
    start = time.perf_counter()
    clf.probabilities(arrays, batch_size=32)
    seconds = time.perf_counter() - start
    return seconds, f"{len(arrays) / seconds:.1f} images/s on prepared arrays"


def cold_start(model_path: Path, image: Path) -> dict:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--cold", str(model_path), str(image)],
                         capture_output=True, text=True, check=True)
    timings = json.loads(out.stdout.strip().splitlines()[-1])
    return {**timings, "process_s": time.perf_counter() - start}


def cold_child(model_path: str, image: str) -> None:
    t0 = time.perf_counter()
    import keras  # noqa: F401  what `skinsage predict` pays for TensorFlow

    from skinsage import Classifier
    t1 = time.perf_counter()
    clf = Classifier.load(model_path)
    t2 = time.perf_counter()
    clf.predict(image)
    t3 = time.perf_counter()
    print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_predict_s": t3 - t2}))


if __name__ == "__main__":
    main()
