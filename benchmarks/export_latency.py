"""Latency of the exported CNN against Keras on this CPU: Keras vs LiteRT float32 vs LiteRT int8 vs
ONNX Runtime, at 28 px and 64 px, one image per call and in batches.

    .venv/bin/python benchmarks/export_latency.py [--repeats 50] [--images 256] [--batch 32]

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
SIZES = (28, 64)
RUNTIMES = ("keras", "litert float32", "litert int8", "onnx float32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=50, help="single-image calls timed")
    parser.add_argument("--images", type=int, default=256, help="images in the batched run")
    parser.add_argument("--batch", type=int, default=32, help="batch size of the batched run")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPU cores; single = median of {args.repeats} one-image calls; "
          f"batched = {args.images} images in batches of {args.batch} (median of 5 passes); ratio = Keras time / runtime time\n")
    with tempfile.TemporaryDirectory() as tmp:
        for size in SIZES:
            report(size, Path(tmp), args)


def build(size: int):
    """(model, metadata): the params.yaml CNN at `size` px, random weights, no TTA."""
    from skinsage.model.architectures import build_model
    from skinsage.params import load_params
    from skinsage.prepared import PreparedData
    from skinsage.train.trainer import model_metadata

    params = load_params(ROOT / "params.yaml", {"model": "cnn", "models.cnn.image_size": size})
    classes = [f"class_{i}" for i in range(7)]
    model = build_model("cnn", len(classes), params.model_params)
    metadata = model_metadata(params, PreparedData(classes, "benchmark", size, {}), {})
    return model, {**metadata, "inference": {"tta": "none"}}


def runners(size: int, folder: Path, images) -> dict:
    """Each runtime's object with predict_on_batch, the exported ones written to `folder`."""
    from skinsage.export.convert import export_model
    from skinsage.export.runtime import open_runner

    model, metadata = build(size)
    found = {"keras": model}
    for name, fmt, quantize, suffix in (("litert float32", "litert", "none", "tflite"),
                                        ("litert int8", "litert", "int8", "tflite"),
                                        ("onnx float32", "onnx", "none", "onnx")):
        path = folder / f"cnn{size}_{quantize}.{suffix}"
        try:
            export_model(model, metadata, path, fmt, quantize, calibration=images[:100])
            found[name] = open_runner(path, fmt)
        except Exception as err:  # noqa: BLE001  a missing runtime is reported, the rest still timed
            print(f"  {name}: not available ({type(err).__name__}: {err})")
    return found


def single(runner, images, repeats: int) -> float:
    runner.predict_on_batch(images[:1])  # warm up: graph tracing, tensor allocation
    times = []
    for i in range(repeats):
        one = images[i % len(images)][None]
        start = time.perf_counter()
        runner.predict_on_batch(one)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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


def report(size: int, folder: Path, args) -> None:
    import numpy as np

    images = np.random.default_rng(0).integers(0, 256, (args.images, size, size, 3), dtype=np.uint8)
    found = runners(size, folder, images)
    files = {p.name: p.stat().st_size for p in folder.glob(f"cnn{size}_*") if p.suffix != ".json"}
    print(f"== CNN {size} px ({found['keras'].count_params():,} parameters; files: "
          + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sorted(files.items())) + ")")
    timings = {name: (single(r, images, args.repeats), batched(r, images, args.batch))
               for name, r in found.items()}
    keras_single, keras_batched = timings["keras"]
    print(f"{'runtime':16s} {'single ms':>10s} {'ratio':>7s} {'batched ms/img':>15s} {'ratio':>7s}")
    for name, (one, many) in timings.items():
        print(f"{name:16s} {one * 1e3:10.3f} {keras_single / one:6.1f}x {many * 1e3:15.4f} "
              f"{keras_batched / many:6.1f}x")
    print()


if __name__ == "__main__":
    main()
