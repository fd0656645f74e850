"""Predicting a labelled split with a trained model and writing what DVC shows."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from .dataset import Split
from .fileio import write_json, write_text
from .metrics import confusion, evaluate_predictions


def predict_probabilities(model, images: np.ndarray, batch_size: int) -> np.ndarray:
    probs = np.asarray(model.predict(images, batch_size=batch_size, verbose=0), dtype=np.float64)
    return probs / probs.sum(axis=1, keepdims=True)  # float32 softmax sums to 1 only within ~1e-7


def evaluate_split(model, split: Split, class_names: list[str], batch_size: int):
    """(metrics dict, confusion dict, probabilities) for one labelled split."""
    probs = predict_probabilities(model, split.images, batch_size)
    return (evaluate_predictions(split.labels, probs, class_names),
            confusion(split.labels, probs.argmax(axis=1), class_names), probs)


def write_evaluation(out_dir: str | Path, metrics: dict, matrix: dict, labels: np.ndarray,
                     probs: np.ndarray, class_names: list[str]) -> None:
    out_dir = Path(out_dir)
    write_json(out_dir / "eval.json", metrics)
    write_json(out_dir / "confusion.json", matrix)
    write_text(out_dir / "predictions.csv", predictions_csv(labels, probs, class_names))


def predictions_csv(labels: np.ndarray, probs: np.ndarray, class_names: list[str]) -> str:
    """One row per image: actual and predicted class names (DVC's confusion template) and confidence."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", "actual", "predicted", "confidence"])
    for i, (label, row) in enumerate(zip(labels, probs)):
        writer.writerow([i, class_names[label], class_names[int(row.argmax())], f"{row.max():.6f}"])
    return buffer.getvalue()
