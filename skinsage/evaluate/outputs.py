"""The files the `evaluate` stage writes into the metrics folder (all declared in dvc.yaml):

  eval.json             the DVC metrics people compare first (`dvc exp show`, `dvc metrics diff`):
                        the model type and HEADLINE_KEYS of the test split, and of "val"
  eval_full.json        every scalar of the test split (+ "ci95", + "val": the validation summary)
  per_class.json        test metrics per class, keyed by class name
  confusion.json        test confusion matrix with class names (rows actual, columns predicted)
  predictions.csv       one row per test image: actual, predicted, confidence (DVC's confusion
                        plots) and every class's probability (`p_<class>`)
  roc.csv, precision_recall.csv   per-class curves, long format with a `class` column
  calibration.csv       reliability bins of the test split
  calibration_before_temperature.csv   the same before temperature scaling (identical when T = 1)
  risk_coverage.csv     accuracy on the test images answered against the share answered, by top
                        probability (a DVC plot; its area, AURC, is in eval_full.json)

`plot` reads them back with `read_predictions` and `curves.read_rows`.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from ..fileio import write_json, write_text
from .curves import (CALIBRATION_COLUMNS, PR_COLUMNS, RISK_COVERAGE_COLUMNS, ROC_COLUMNS, calibration_bins,
                     precision_recall_rows, risk_coverage_rows, roc_rows, write_rows)
from .metrics import ECE_BINS

EVALUATION_FILES = ("eval.json", "eval_full.json", "per_class.json", "confusion.json", "predictions.csv",
                    "roc.csv", "precision_recall.csv", "calibration.csv",
                    "calibration_before_temperature.csv", "risk_coverage.csv")
# eval.json's few figures of each prediction's status (model/decision.py), test split only
STATUS_HEADLINE_KEYS = ("share_ok", "accuracy_ok")
# The few numbers per split that `dvc exp show` lists: it shows every key of a metrics file as a
# column, so the rest (counts, intervals, per class) live in eval_full.json and per_class.json.
HEADLINE_KEYS = ("accuracy", "balanced_accuracy", "auc_macro_ovr", "macro_f1", "cohen_kappa", "ece", "loss")
PROBABILITY_PREFIX = "p_"


def write_evaluation(out_dir: str | Path, test_metrics: dict, val_metrics: dict | None, matrix: dict,
                     labels: np.ndarray, probs: np.ndarray, class_names: list[str],
                     ece_bins: int = ECE_BINS, model_type: str = "unknown",
                     before_temperature: np.ndarray | None = None, per_image: dict | None = None) -> None:
    """Write EVALUATION_FILES for the test split; `val_metrics` adds the "val" summaries;
    `before_temperature`: the test probabilities without the model's temperature (default `probs`);
    `per_image`: each test image's status and ood_score (evaluate_split's), columns of predictions.csv."""
    out_dir = Path(out_dir)
    scalars = headline(test_metrics)
    if val_metrics is not None:
        scalars["val"] = headline(val_metrics)
    write_json(out_dir / "eval.json", json_safe(headline_metrics(scalars, model_type)))
    write_json(out_dir / "eval_full.json", json_safe(scalars))
    write_json(out_dir / "per_class.json", json_safe(test_metrics["per_class"]))
    write_json(out_dir / "confusion.json", matrix)
    write_text(out_dir / "predictions.csv", predictions_csv(labels, probs, class_names, per_image))
    write_rows(out_dir / "risk_coverage.csv", risk_coverage_rows(labels, probs)[0], RISK_COVERAGE_COLUMNS)
    write_rows(out_dir / "roc.csv", roc_rows(labels, probs, class_names), ROC_COLUMNS)
    write_rows(out_dir / "precision_recall.csv", precision_recall_rows(labels, probs, class_names),
               PR_COLUMNS)
    write_rows(out_dir / "calibration.csv", calibration_bins(labels, probs, ece_bins),
               CALIBRATION_COLUMNS)
    before = probs if before_temperature is None else before_temperature
    write_rows(out_dir / "calibration_before_temperature.csv", calibration_bins(labels, before, ece_bins),
               CALIBRATION_COLUMNS)


def predictions_csv(labels: np.ndarray, probs: np.ndarray, class_names: list[str],
                    per_image: dict | None = None) -> str:
    """One row per image: actual and predicted class names (DVC's confusion template), confidence,
    and the probability of every class (what `skinsage predict` gives for the same image)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    status = (per_image or {}).get("status") or [""] * len(labels)
    scores = (per_image or {}).get("ood_score") or [None] * len(labels)
    writer.writerow(["index", "actual", "predicted", "confidence", "status", "ood_score",
                     *[PROBABILITY_PREFIX + name for name in class_names]])
    for i, (label, row) in enumerate(zip(labels, probs)):
        writer.writerow([i, class_names[label], class_names[int(row.argmax())], f"{row.max():.6f}",
                         status[i], "" if scores[i] is None else f"{scores[i]:.6g}",
                         *[f"{p:.9f}" for p in row]])
    return buffer.getvalue()


def read_predictions(path: str | Path) -> list[dict]:
    """predictions.csv rows; `probabilities` maps class name -> probability (empty for files
    written before the probabilities were added)."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{"index": int(row["index"]), "actual": row["actual"], "predicted": row["predicted"],
                 "confidence": float(row["confidence"]),
                 "probabilities": {key.removeprefix(PROBABILITY_PREFIX): float(value)
                                   for key, value in row.items() if key.startswith(PROBABILITY_PREFIX)}}
                for row in csv.DictReader(f)]


def headline_metrics(scalars: dict, model_type: str) -> dict:
    """eval.json: which model was evaluated (so `dvc exp show` names it beside its accuracy), then
    HEADLINE_KEYS of the test split and of "val"."""
    result = {"model_type": model_type, **{k: scalars[k] for k in HEADLINE_KEYS},
              **{k: scalars[k] for k in STATUS_HEADLINE_KEYS if k in scalars}}
    if "val" in scalars:
        result["val"] = {k: scalars["val"][k] for k in HEADLINE_KEYS}
    return result


def headline(metrics: dict) -> dict:
    """Every scalar, without the per-class figures: eval_full.json and `skinsage evaluate --out`."""
    return {k: v for k, v in metrics.items() if k not in ("per_class", "per_image")}


def json_safe(value):
    """NaN (an undefined metric) becomes null: JSON has no NaN and DVC would not read it."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
