"""The ResNet50 head phase on a CPU: naive `fit` through the frozen backbone vs cached features.

    .venv/bin/python benchmarks/resnet50_cpu.py [--images 512] [--epochs 5] [--size 224]
    .venv/bin/python benchmarks/resnet50_cpu.py --images 64 --epochs 2 --size 64   # a quick check

One process, same data, same model, same params, run one after the other:
  (a) naive   `model.fit` on the images: every epoch runs the frozen backbone forward again
  (b) cached  the pipeline's head phase (skinsage.train.resnet50): backbone features computed once per
              split, the head trained on them
Each is timed end to end (graph tracing, validation and, for (b), the feature pass included) and
reported as training images per second (images x epochs / seconds); then the ratio (b)/(a) and the
peak resident memory of the process during each run (and its growth over the run's start; the
second run starts with what the first left allocated). Early stopping is disabled (patience = epochs) so both run
all epochs. Weights are random (`weights: null`): speed does not depend on what they hold.
Validation: one extra image per 8 training images, as in the pipeline's split.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class PeakRss:
    """Peak resident memory of this process while the block runs (sampled every 20 ms)."""

    def __enter__(self):
        self.start = self.peak = _rss_bytes()
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while self._running:
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(0.02)

    def __exit__(self, *exc):
        self._running = False
        self._thread.join()


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512, help="training images (N)")
    parser.add_argument("--epochs", type=int, default=5, help="head-phase epochs (E)")
    parser.add_argument("--size", type=int, default=224, help="image size in px (32..224)")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    from skinsage.params import load_params

    params = load_params(ROOT / "params.yaml", {
        "model": "resnet50", "models.resnet50.weights": None, "models.resnet50.image_size": args.size,
        "train.epochs": args.epochs, "train.batch_size": args.batch_size,
        "train.early_stopping.patience": args.epochs, "data.synthetic.num_classes": 4})
    data = synthetic_data(params, args.images)
    n_val = len(data.splits["val"].labels)
    print(f"{os.cpu_count()} CPU cores; {args.images} training + {n_val} validation synthetic "
          f"{args.size}-px images, {args.epochs} epochs, batch {args.batch_size}\n", flush=True)
    results = {"naive": run(naive, params, data), "cached": run(cached, params, data)}
    work = args.images * args.epochs
    print()
    for name, label in (("naive", "(a) naive fit through frozen backbone"), ("cached", "(b) cached features")):
        seconds, memory = results[name]
        print(f"{label:40s} {seconds:7.1f} s  {work / seconds:7.1f} images/s  peak RSS "
              f"{memory.peak / 2**20:,.0f} MiB (+{(memory.peak - memory.start) / 2**20:,.0f} MiB during the run)")
    print(f"ratio (b)/(a): {results['naive'][0] / results['cached'][0]:.2f}x faster with cached features")


def synthetic_data(params, n_train: int):
    import numpy as np

    from skinsage.data.sources.synthetic import make_synthetic
    from skinsage.params import SyntheticParams
    from skinsage.prepared import PreparedData, Split

    n_val = max(1, n_train // 8)
    classes = params.data.synthetic.num_classes
    raw = make_synthetic(SyntheticParams(classes, -(-(n_train + n_val) // classes)), params.image_size,
                         params.seed)
    order = np.random.default_rng(params.seed).permutation(len(raw.labels["all"]))
    images, labels = raw.images["all"][order], raw.labels["all"][order]
    return PreparedData(raw.class_names, raw.name, params.image_size, {
        "train": Split(images[:n_train], labels[:n_train]),
        "val": Split(images[n_train:n_train + n_val], labels[n_train:n_train + n_val])})


def run(variant, params, data) -> tuple[float, PeakRss]:
    import keras

    from skinsage.model.architectures import build_model
    from skinsage.train.trainer import seed_everything

    seed_everything(params.seed)
    model = build_model("resnet50", len(data.class_names), params.model_params)
    print(f"== {variant.__name__}", flush=True)
    with PeakRss() as memory:
        start = time.perf_counter()
        variant(model, params, data)
        seconds = time.perf_counter() - start
    keras.backend.clear_session()
    return seconds, memory


def naive(model, params, data) -> None:
    from skinsage.train.inputs import tf_dataset
    from skinsage.train.phase import fit_phase

    t = params.train
    train = tf_dataset(data.splits["train"], t.batch_size, shuffle=True, seed=params.seed)
    val = tf_dataset(data.splits["val"], t.batch_size)
    fit_phase("head", model, train, val, epochs=t.epochs, learning_rate=t.learning_rate,
              early_stopping=t.early_stopping, class_weight=None)


def cached(model, params, data) -> None:
    from skinsage.train.resnet50 import train_resnet50

    train_resnet50(model, params, data, class_weight=None)  # fine_tune.epochs is 0: the head phase only


if __name__ == "__main__":
    main()
