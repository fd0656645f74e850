"""Latency of an exported model against Keras on this CPU: Keras vs LiteRT float32 vs LiteRT int8 vs
ONNX Runtime, one image per call (median and p95) and in batches (throughput).

    .venv/bin/python benchmarks/export_latency.py                        # the CNN at 28 and 64 px
    .venv/bin/python benchmarks/export_latency.py --model resnet50 --sizes 64 224 --images 128 --batch 64

Each runtime is called the plain way, on prepared uint8 arrays (no file decoding, no TTA):
Keras `model.predict_on_batch` (what `predict_probabilities` calls), the LiteRT interpreter and
the ONNX Runtime session through SkinSage's adapters. Single: median of --repeats one-image calls;
batched: --images images in batches of --batch, per image. Ratios are Keras' time / the runtime's
(above 1 = faster than Keras). Random weights (speed does not depend on what was learned); int8 is
calibrated on random images, which is fine for timing and useless for accuracy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
RUNTIMES = ("keras", "litert float32", "litert int8", "onnx float32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=50, help="single-image calls timed")
    parser.add_argument("--images", type=int, default=256, help="images in the batched run")
    parser.add_argument("--batch", type=int, default=32, help="batch size of the batched run")
    parser.add_argument("--model", choices=("cnn", "resnet50"), default="cnn")
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 64], help="input sizes in px")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPU cores; single = median of {args.repeats} one-image calls; "
          f"batched = {args.images} images in batches of {args.batch} (median of 5 passes); "
          "ratio = Keras time / runtime time\n")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            report(args.model, size, Path(tmp), args)


def build(kind: str, size: int):
    """(model, metadata): the params.yaml model at `size` px, random weights (ResNet50:
    weights null), no TTA."""
    from skinsage.model.architectures import build_model
    from skinsage.params import load_params
    from skinsage.prepared import PreparedData
    from skinsage.train.trainer import model_metadata

    overrides = {"model": kind, f"models.{kind}.image_size": size}
    if kind == "resnet50":
        overrides["models.resnet50.weights"] = None
    params = load_params(ROOT / "params.yaml", overrides)
    classes = [f"class_{i}" for i in range(7)]
    model = build_model(kind, len(classes), params.model_params)
    metadata = model_metadata(params, PreparedData(classes, "benchmark", size, {}), {})
    return model, {**metadata, "inference": {"tta": "none"}}


def runners(kind: str, size: int, folder: Path, images) -> dict:
    """Each runtime's object with predict_on_batch, the exported ones written to `folder`."""
    from skinsage.export.convert import export_model
    from skinsage.export.runtime import open_runner

    model, metadata = build(kind, size)
    found = {"keras": model}
    for name, fmt, quantize, suffix in (("litert float32", "litert", "none", "tflite"),
                                        ("litert int8", "litert", "int8", "tflite"),
                                        ("onnx float32", "onnx", "none", "onnx")):
        path = folder / f"{kind}{size}_{quantize}.{suffix}"
        try:
            export_model(model, metadata, path, fmt, quantize, calibration=images[:100])
            found[name] = open_runner(path, fmt)
        except Exception as err:  # noqa: BLE001  a missing runtime is reported, the rest still timed
            print(f"  {name}: not available ({type(err).__name__}: {err})")
    return found


def single(runner, images, repeats: int) -> tuple[float, float]:
    """(median, p95) seconds of one-image calls."""
    runner.predict_on_batch(images[:1])  # warm up: graph tracing, tensor allocation
    times = []
    for i in range(repeats):
        one = images[i % len(images)][None]
        start = time.perf_counter()
        runner.predict_on_batch(one)
        times.append(time.perf_counter() - start)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]


def batched(runner, images, batch: int, rounds: int = 5) -> float:
    """Seconds per image: the median of `rounds` passes (the CPU may be shared; one pass is noisy)."""
    runner.predict_on_batch(images[:batch])
    passes = []
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(0, len(images), batch):
            runner.predict_on_batch(images[i:i + batch])
        passes.append((time.perf_counter() - start) / len(images))
    return statistics.median(passes)


def report(kind: str, size: int, folder: Path, args) -> None:
    import numpy as np

    images = np.random.default_rng(0).integers(0, 256, (args.images, size, size, 3), dtype=np.uint8)
    found = runners(kind, size, folder, images)
    files = {p.name: p.stat().st_size for p in folder.glob(f"{kind}{size}_*") if p.suffix != ".json"}
    print(f"== {kind} {size} px ({found['keras'].count_params():,} parameters; files: "
          + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sorted(files.items())) + ")")
    timings = {name: (single(r, images, args.repeats), batched(r, images, args.batch))
               for name, r in found.items()}
    (keras_single, _), keras_batched = timings["keras"]
    print(f"{'runtime':16s} {'single ms':>10s} {'p95 ms':>8s} {'ratio':>7s} {'batched img/s':>14s} {'ratio':>7s}")
    for name, ((one, p95), many) in timings.items():
        print(f"{name:16s} {one * 1e3:10.3f} {p95 * 1e3:8.3f} {keras_single / one:6.1f}x {1 / many:14.1f} "
              f"{keras_batched / many:6.1f}x")
    print()


if __name__ == "__main__":
    main()
