"""What the `evaluate` stage writes into the metrics folder: the files and their shapes are the
contract in skinsage/contracts/evaluation.py (EVALUATION_FILES); this computes their contents."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..contracts.evaluation import (CALIBRATION_BEFORE_FILE, CALIBRATION_COLUMNS, CALIBRATION_FILE,
                                    CONFUSION_FILE, EVAL_FILE, EVAL_FULL_FILE, PER_CLASS_FILE, PR_COLUMNS,
                                    PR_FILE, PREDICTIONS_FILE, REFERRAL_ROC_COLUMNS, REFERRAL_ROC_FILE,
                                    RISK_COVERAGE_COLUMNS, RISK_COVERAGE_FILE, ROC_COLUMNS,
                                    ROC_FILE, eval_headline, json_safe, scalar_metrics, write_predictions,
                                    write_rows)
from ..fileio import write_json
from ..model.referral import decide
from .curves import calibration_bins, precision_recall_rows, risk_coverage_rows, roc_rows
from .metrics import ECE_BINS
from .referral import roc_rows as referral_roc_rows


def write_evaluation(out_dir: str | Path, test_metrics: dict, val_metrics: dict | None, matrix: dict,
                     labels: np.ndarray, probs: np.ndarray, class_names: list[str],
                     ece_bins: int = ECE_BINS, model_type: str = "unknown",
                     before_temperature: np.ndarray | None = None, referral: dict | None = None,
                     per_image: dict | None = None) -> None:
    """Write EVALUATION_FILES for the test split; `val_metrics` adds the "val" summaries;
    `before_temperature`: the test probabilities without the model's temperature (default `probs`);
    `referral`: the model file's referral record (refer columns and the referral ROC);
    `per_image`: each test image's status and ood_score (evaluate_split's), in predictions.csv."""
    out_dir = Path(out_dir)
    scalars = scalar_metrics(test_metrics)
    if val_metrics is not None:
        scalars["val"] = scalar_metrics(val_metrics)
    write_json(out_dir / EVAL_FILE, json_safe(eval_headline(scalars, model_type)))
    write_json(out_dir / EVAL_FULL_FILE, json_safe(scalars))
    write_json(out_dir / PER_CLASS_FILE, json_safe(test_metrics["per_class"]))
    write_json(out_dir / CONFUSION_FILE, matrix)
    status = (per_image or {}).get("status")  # an out-of-distribution image gets no referral advice
    write_predictions(out_dir / PREDICTIONS_FILE, labels, probs, class_names, per_image,
                      *decide(probs, class_names, referral, status))  # the decision every user gets
    write_rows(out_dir / REFERRAL_ROC_FILE,
               [] if referral is None else referral_roc_rows(labels, probs, class_names, referral),
               REFERRAL_ROC_COLUMNS)
    write_rows(out_dir / RISK_COVERAGE_FILE, risk_coverage_rows(labels, probs)[0], RISK_COVERAGE_COLUMNS)
    write_rows(out_dir / ROC_FILE, roc_rows(labels, probs, class_names), ROC_COLUMNS)
    write_rows(out_dir / PR_FILE, precision_recall_rows(labels, probs, class_names), PR_COLUMNS)
    write_rows(out_dir / CALIBRATION_FILE, calibration_bins(labels, probs, ece_bins), CALIBRATION_COLUMNS)
    before = probs if before_temperature is None else before_temperature
    write_rows(out_dir / CALIBRATION_BEFORE_FILE, calibration_bins(labels, before, ece_bins), CALIBRATION_COLUMNS)
