"""Would averaging several saved models help? Scores each model and their average on the
validation split, with evaluate's test-time augmentation (validation only: nothing is chosen on test).

    .venv/bin/python benchmarks/ensemble_val.py data/prepared model_a.keras model_b.keras ...

Get each experiment's model with `dvc exp apply NAME && cp models/model.keras NAME.keras`; all the
models must have been trained on the same prepared data (same split and image size).
"""

from __future__ import annotations

import argparse

import numpy as np

from skinsage.evaluate.metrics import summary_metrics
from skinsage.model.inference import predict_probabilities
from skinsage.model.model_file import load_model
from skinsage.prepared import load_split


def report(name: str, labels: np.ndarray, probs: np.ndarray) -> dict:
    m = summary_metrics(labels, probs)
    print(f"{name:40s} ACC {m['accuracy']:.3f}  balanced ACC {m['balanced_accuracy']:.3f}  "
          f"macro AUC {m['auc_macro_ovr']:.3f}", flush=True)
    return m


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prepared", help="the prepare stage's output folder (data/prepared)")
    parser.add_argument("models", nargs="+", help="saved .keras models to score and average")
    parser.add_argument("--tta", choices=["none", "flips"], default="flips")
    args = parser.parse_args()
    val = load_split(args.prepared, "val")
    probs, singles = [], []
    for path in args.models:
        model, _ = load_model(path)
        probs.append(predict_probabilities(model, val.images, 256, args.tta))
        singles.append(report(path, val.labels, probs[-1])["accuracy"])
    print(f"{'mean of the single models':40s} ACC {np.mean(singles):.3f}")
    report(f"average of {len(probs)} models", val.labels, np.mean(probs, axis=0))


if __name__ == "__main__":
    main()
