"""Datasets bigger than memory: `prepare` and one CNN training epoch, npz store vs shards store.

    .venv/bin/python benchmarks/scale.py                       # 10k, 50k, 100k images (~15 min on 2 cores)
    .venv/bin/python benchmarks/scale.py --sizes 400 800       # a quick check

Generates class-per-folder PNG sets of synthetic 64 px images (4 classes; cached under --work, the
smaller sets hard-linked from the largest), then for each size and store runs, each in a fresh
Python process (so nothing is shared or pre-imported):
  prepare  the `prepare` stage's function (data.source folder, data.workers 0 = one per core)
  epoch    the `train` stage's path for one epoch of the 64 px CNN (image_size 64, stem_stride 2,
           filters [32, 64, 128, 256], default augmentation; logit adjustment off): the prepared
           train and val splits loaded as the stage loads them, then `train_model`
and prints wall time, images/s (prepare: images / wall time; epoch: training images / the fit's own
seconds, validation included, graph tracing too) and peak RSS: the largest resident set of the
process (/proc VmHWM) or of any of its decoding workers (getrusage RUSAGE_CHILDREN). Then the ratios of issue
#17: sharded peak RSS at the largest size / smallest (target <= 1.5) and sharded epoch images/s /
npz's (target >= 0.8). Also a quick measurement of raw uint8 vs PNG records (size, parse speed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZE, CLASSES = 64, ("circle", "square", "ring", "bar")
CNN = {"model": "cnn", "models.cnn.image_size": SIZE, "models.cnn.stem_stride": 2,
       "models.cnn.filters": [32, 64, 128, 256], "train.epochs": 1, "train.logit_adjustment.tau": None,
       "data.source": "folder", "data.workers": 0}


def draw(label: int, rng: np.random.Generator) -> np.ndarray:
    """A 64 px image: a skin-toned background with soft noise and a class-shaped dark blob."""
    yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
    cy, cx, r = rng.uniform(0.35, 0.65, 2).tolist() + [rng.uniform(0.15, 0.3)]
    d = np.hypot(yy - cy, xx - cx)
    mask = [d < r, (abs(yy - cy) < r) & (abs(xx - cx) < r), abs(d - r) < r / 3,
            (abs(yy - cy) < r / 3) & (abs(xx - cx) < r)][label]
    base = rng.uniform([170, 110, 90], [230, 170, 140])
    image = base + rng.normal(0, 6, (SIZE, SIZE, 3))
    image[mask] *= rng.uniform(0.3, 0.6)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_images(work: Path, largest: int) -> Path:
    """The largest set once (PNG files, class per folder); reused when it is complete."""
    from PIL import Image

    root = work / f"images-{largest}"
    done = root / ".complete"
    if done.exists():
        return root
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for i in range(largest):
        label = i % len(CLASSES)
        path = root / CLASSES[label] / f"{i:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(draw(label, rng)).save(path)
    done.touch()
    print(f"generated {largest} images in {time.perf_counter() - start:.0f} s", flush=True)
    return root


def subset(work: Path, full: Path, n: int) -> Path:
    """The first n images of the full set, hard-linked (regular files: `prepare` reads them)."""
    root = work / f"images-{n}"
    if full == root or (root / ".complete").exists():
        return root
    for i in range(n):
        name = f"{CLASSES[i % len(CLASSES)]}/{i:06d}.png"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        if not (root / name).exists():
            os.link(full / name, root / name)
    (root / ".complete").touch()
    return root


def child(task: str, images: str, prepared: str, store: str) -> None:
    """One measurement in this fresh process; prints a JSON line last."""
    sys.path.insert(0, str(ROOT))
    from skinsage.params import load_params

    params = load_params(ROOT / "params.yaml", {**CNN, "data.folder.path": images, "data.store": store})
    start = time.perf_counter()
    if task == "prepare":
        from skinsage.data.prepare import prepare

        data = prepare(params, prepared, Path(prepared).with_suffix(".json"))
        count, seconds = sum(len(s.labels) for s in data.splits.values()), None
    else:
        from skinsage.prepared import load_prepared
        from skinsage.train.trainer import train_model

        data = load_prepared(prepared, splits=("train", "val"))  # as stages/train.py
        _, _, summary = train_model(params, data)
        count, seconds = len(data.splits["train"].labels), summary["train_seconds"]
    wall = time.perf_counter() - start
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # decoding workers, KiB
    peak = max(_vm_hwm_kib(), workers)
    print(json.dumps({"images": count, "wall": wall, "seconds": seconds or wall, "peak_mb": peak / 1024}))


def _vm_hwm_kib() -> int:
    """This process's own peak RSS. Not getrusage(RUSAGE_SELF): Linux carries the parent's
    resident size at fork into a child's ru_maxrss across exec."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def measure(task: str, images: Path, prepared: Path, store: str) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, __file__, "--child", task, str(images), str(prepared), store],
                            capture_output=True, text=True, env=env, cwd=ROOT)
    if result.returncode:
        raise SystemExit(f"{task} {store} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def encoding_check(full: Path, n: int = 2000) -> None:
    """Raw uint8 vs PNG records: bytes per image and tf.data parse speed of n images."""
    import tensorflow as tf

    from skinsage.data.images import load_image

    files = sorted(full.glob("*/*.png"))[:n]
    raw = [load_image(f, SIZE).tobytes() for f in files]
    png = [tf.io.encode_png(load_image(f, SIZE)).numpy() for f in files]
    for name, blobs, decode in (("raw", raw, lambda b: tf.reshape(tf.io.decode_raw(b, tf.uint8), (SIZE, SIZE, 3))),
                                ("png", png, lambda b: tf.io.decode_png(b, channels=3))):
        ds = tf.data.Dataset.from_tensor_slices(blobs).map(decode, num_parallel_calls=tf.data.AUTOTUNE).batch(64)
        for _ in ds:  # warm up
            pass
        start = time.perf_counter()
        for _ in range(5):
            for _ in ds:
                pass
        rate = 5 * len(blobs) / (time.perf_counter() - start)
        print(f"records {name}: {np.mean([len(b) for b in blobs]) / 1024:.1f} KiB/image, parse {rate:,.0f} images/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 100_000])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "skinsage-scale")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    sys.path.insert(0, str(ROOT))
    full = make_images(args.work, max(args.sizes))
    encoding_check(full)
    print(f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}; 64 px CNN, batch 64; peak RSS = largest process")
    header = (f"{'images':>7} {'store':<6} | {'prepare s':>9} {'img/s':>7} {'peak MB':>8} | "
              f"{'epoch s':>7} {'img/s':>6} {'peak MB':>8}")
    print(header, flush=True)
    rows = {}
    for n in sorted(args.sizes):
        images = subset(args.work, full, n)
        for store in ("npz", "shards"):
            prepared = args.work / f"prepared-{n}-{store}"
            prep = measure("prepare", images, prepared, store)
            epoch = measure("epoch", images, prepared, store)
            rows[n, store] = prep, epoch
            print(f"{n:>7} {store:<6} | {prep['wall']:>9.1f} {prep['images'] / prep['wall']:>7.0f} "
                  f"{prep['peak_mb']:>8.0f} | {epoch['seconds']:>7.1f} {epoch['images'] / epoch['seconds']:>6.0f} "
                  f"{epoch['peak_mb']:>8.0f}", flush=True)
    ratios(rows, sorted(args.sizes))


def ratios(rows: dict, sizes: list[int]) -> None:
    small, large = sizes[0], sizes[-1]
    for step, i in (("prepare", 0), ("epoch", 1)):
        ratio = rows[large, "shards"][i]["peak_mb"] / rows[small, "shards"][i]["peak_mb"]
        print(f"shards {step} peak RSS {large}/{small}: {ratio:.2f} (target <= 1.5)")
    for n in sizes:
        speed = {s: rows[n, s][1]["images"] / rows[n, s][1]["seconds"] for s in ("npz", "shards")}
        print(f"shards/npz epoch images/s at {n}: {speed['shards'] / speed['npz']:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
