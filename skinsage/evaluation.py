"""Predicting a labelled split with a trained model and writing what DVC shows.

Files written by `write_evaluation` into the metrics folder (all declared in dvc.yaml):
  eval.json             scalar summary of the test split (+ "ci95", + "val": the validation summary)
  per_class.json        test metrics per class, keyed by class name
  confusion.json        test confusion matrix with class names (rows actual, columns predicted)
  predictions.csv       one row per test image: actual, predicted, confidence (DVC confusion plots)
  roc.csv, precision_recall.csv   per-class curves, long format with a `class` column
  calibration.csv       reliability bins of the test split
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from .curves import (CALIBRATION_COLUMNS, PR_COLUMNS, ROC_COLUMNS, calibration_bins,
                     precision_recall_rows, roc_rows, write_rows)
from .dataset import Split
from .fileio import write_json, write_text
from .metrics import ECE_BINS, confusion, evaluate_predictions

EVALUATION_FILES = ("eval.json", "per_class.json", "confusion.json", "predictions.csv", "roc.csv",
                    "precision_recall.csv", "calibration.csv")


def predict_probabilities(model, images: np.ndarray, batch_size: int, tta: str = "none") -> np.ndarray:
    """(N, C) probabilities; `tta="flips"` averages those of the image and its horizontal, vertical
    and double flips (lesions have no canonical orientation)."""
    probs = variant_probabilities(model, images, batch_size, tta).mean(axis=0)
    return probs / probs.sum(axis=1, keepdims=True)  # float32 softmax sums to 1 only within ~1e-7


def variant_probabilities(model, images: np.ndarray, batch_size: int, tta: str = "none") -> np.ndarray:
    """(V, N, C): the probabilities of each test-time variant (V = 1 without TTA, 4 with flips)."""
    variants = [images]
    if tta == "flips":
        variants += [images[:, :, ::-1], images[:, ::-1, :], images[:, ::-1, ::-1]]
    return np.stack([np.asarray(model.predict(np.ascontiguousarray(v), batch_size=batch_size, verbose=0),
                                dtype=np.float64) for v in variants])


def evaluate_split(model, split: Split, class_names: list[str], batch_size: int, *,
                   bootstrap: int = 0, seed: int = 0, ece_bins: int = ECE_BINS, tta: str = "none"):
    """(metrics dict, confusion dict, (N, C) probabilities) for one labelled split.

    The metrics dict is `evaluate_predictions`' (scalars, optional "ci95", "per_class").
    """
    probs = predict_probabilities(model, split.images, batch_size, tta)
    metrics = evaluate_predictions(split.labels, probs, class_names, bootstrap=bootstrap, seed=seed,
                                   ece_bins=ece_bins)
    return metrics, confusion(split.labels, probs.argmax(axis=1), class_names), probs


def summary(metrics: dict) -> dict:
    """Everything but the per-class figures: what `dvc metrics show` and `dvc exp show` list."""
    return {k: v for k, v in metrics.items() if k != "per_class"}


def write_evaluation(out_dir: str | Path, test_metrics: dict, val_metrics: dict | None, matrix: dict,
                     labels: np.ndarray, probs: np.ndarray, class_names: list[str],
                     ece_bins: int = ECE_BINS) -> None:
    """Write EVALUATION_FILES for the test split; `val_metrics` adds the "val" summary to eval.json."""
    out_dir = Path(out_dir)
    scalars = summary(test_metrics)
    if val_metrics is not None:
        scalars["val"] = summary(val_metrics)
    write_json(out_dir / "eval.json", json_safe(scalars))
    write_json(out_dir / "per_class.json", json_safe(test_metrics["per_class"]))
    write_json(out_dir / "confusion.json", matrix)
    write_text(out_dir / "predictions.csv", predictions_csv(labels, probs, class_names))
    write_rows(out_dir / "roc.csv", roc_rows(labels, probs, class_names), ROC_COLUMNS)
    write_rows(out_dir / "precision_recall.csv", precision_recall_rows(labels, probs, class_names),
               PR_COLUMNS)
    write_rows(out_dir / "calibration.csv", calibration_bins(labels, probs, ece_bins),
               CALIBRATION_COLUMNS)


def json_safe(value):
    """NaN (an undefined metric) becomes null: JSON has no NaN and DVC would not read it."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def predictions_csv(labels: np.ndarray, probs: np.ndarray, class_names: list[str]) -> str:
    """One row per image: actual and predicted class names (DVC's confusion template) and confidence."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", "actual", "predicted", "confidence"])
    for i, (label, row) in enumerate(zip(labels, probs)):
        writer.writerow([i, class_names[label], class_names[int(row.argmax())], f"{row.max():.6f}"])
    return buffer.getvalue()


def read_predictions(path: str | Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return [{"index": int(row["index"]), "actual": row["actual"], "predicted": row["predicted"],
                 "confidence": float(row["confidence"])} for row in csv.DictReader(f)]
