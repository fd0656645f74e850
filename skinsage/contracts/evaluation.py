"""The files the `evaluate` stage writes into the metrics folder (all declared in dvc.yaml), read
back by `plot` (and `skinsage evaluate --out` writes the same JSON shapes):

  eval.json             the DVC metrics people compare first (`dvc exp show`, `dvc metrics diff`):
                        the model type and HEADLINE_KEYS of the test split, and of "val"
  eval_full.json        every scalar of the test split (+ "ci95", + "val": the validation summary)
  per_class.json        test metrics per class, keyed by class name
  confusion.json        test confusion matrix with class names (rows actual, columns predicted)
  predictions.csv       one row per test image: actual, predicted, confidence (DVC's confusion
                        plots) and every class's probability (`p_<class>`)
  roc.csv, precision_recall.csv   per-class curves, long format with a `class` column (DVC draws
                        them with .dvc/plots/per_class_curves.json, `plot` the PNGs)
  calibration.csv       reliability bins of the test split
  calibration_before_temperature.csv   the same before temperature scaling (identical when T = 1)
  risk_coverage.csv     accuracy on the test images answered against the share answered, by top
                        probability (a DVC plot; its area, AURC, is in eval_full.json)
  referral_roc.csv      the test ROC of P(refer) (curve "ROC") and the recorded operating point
                        (curve "operating point"); header only for a model without a referral

With a referral recorded in the model (model/referral.py), eval.json adds REFERRAL_HEADLINE_KEYS,
eval_full.json "referral" (and "subgroups" when the test split has clinical metadata), and
predictions.csv the `refer` and `refer_probability` of each image. Each image's status
(model/decision.py) adds to eval_full.json the shares `share_ok` / `share_uncertain` /
`share_out_of_distribution`, `accuracy_ok`, `aurc` and "decision" (the thresholds applied:
{"ood": {"method", "retain", "threshold", ...} | null, "uncertain": {"coverage", "threshold"} | null}).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from ..fileio import csv_text, from_csv_text, write_text

EVAL_FILE, EVAL_FULL_FILE, PER_CLASS_FILE, CONFUSION_FILE = ("eval.json", "eval_full.json", "per_class.json",
                                                             "confusion.json")
PREDICTIONS_FILE, ROC_FILE, PR_FILE = "predictions.csv", "roc.csv", "precision_recall.csv"
CALIBRATION_FILE, CALIBRATION_BEFORE_FILE = "calibration.csv", "calibration_before_temperature.csv"
REFERRAL_ROC_FILE = "referral_roc.csv"
RISK_COVERAGE_FILE = "risk_coverage.csv"
EVALUATION_FILES = (EVAL_FILE, EVAL_FULL_FILE, PER_CLASS_FILE, CONFUSION_FILE, PREDICTIONS_FILE, ROC_FILE,
                    PR_FILE, CALIBRATION_FILE, CALIBRATION_BEFORE_FILE, REFERRAL_ROC_FILE, RISK_COVERAGE_FILE)
# eval.json's few figures of each prediction's status (model/decision.py), test split only
STATUS_HEADLINE_KEYS = ("share_ok", "accuracy_ok")
# The few numbers per split that `dvc exp show` lists: it shows every key of a metrics file as a
# column, so the rest (counts, intervals, per class) live in eval_full.json and per_class.json.
HEADLINE_KEYS = ("accuracy", "balanced_accuracy", "auc_macro_ovr", "macro_f1", "cohen_kappa", "ece", "loss")
REFERRAL_HEADLINE_KEYS = ("referral_sensitivity", "referral_specificity")  # models with a referral
PROBABILITY_PREFIX = "p_"
ROC_COLUMNS = ("class", "point", "fpr", "tpr", "threshold")
PR_COLUMNS = ("class", "point", "recall", "precision", "threshold")
RISK_COVERAGE_COLUMNS = ("coverage", "accuracy", "risk", "threshold")
CALIBRATION_COLUMNS = ("bin", "lower", "upper", "count", "confidence", "accuracy", "perfect")
REFERRAL_ROC_COLUMNS = ("curve", "point", "fpr", "tpr", "threshold")
TEXT_COLUMNS = ("class", "curve")  # the curve CSVs' columns that are names, not numbers

# How people read the metrics, in the order the CLI and the model card show them.
METRIC_LABELS = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy (mean recall)",
                 "auc_macro_ovr": "macro ROC AUC, one-vs-rest (MedMNIST)", "macro_f1": "macro F1",
                 "weighted_f1": "weighted F1", "cohen_kappa": "Cohen's kappa",
                 "top2_accuracy": "top-2 accuracy",
                 "ece": "expected calibration error (lower is better)",
                 "brier": "Brier score, multiclass 0-2 (lower is better)",
                 "loss": "log loss (lower is better)"}
# The referral figures (eval_full.json "referral"), as people read them.
REFERRAL_LABELS = {"sensitivity": "sensitivity (refer images referred)",
                   "specificity": "specificity (other images not referred)",
                   "ppv": "PPV (referred images that are refer images)",
                   "npv": "NPV (not referred images that are not)", "referral_rate": "referral rate (images referred)",
                   "auc": "ROC AUC of P(refer), refer classes vs the rest",
                   "melanoma_sensitivity": "melanoma sensitivity (melanomas referred)"}
PER_CLASS_LABELS = {"support": "test images", "precision": "precision (PPV)",
                    "recall": "recall (sensitivity)", "specificity": "specificity", "f1": "F1",
                    "auc": "AUC", "average_precision": "AP"}


def scalar_metrics(metrics: dict) -> dict:
    """Every scalar, without the per-class figures: eval_full.json and `skinsage evaluate --out`."""
    return {k: v for k, v in metrics.items() if k not in ("per_class", "per_image")}


def eval_headline(scalars: dict, model_type: str) -> dict:
    """eval.json: which model was evaluated (so `dvc exp show` names it beside its accuracy), then
    HEADLINE_KEYS of the test split and of "val"."""
    keys = HEADLINE_KEYS + tuple(k for k in REFERRAL_HEADLINE_KEYS + STATUS_HEADLINE_KEYS if k in scalars)
    result = {"model_type": model_type, **{k: scalars[k] for k in keys}}
    if "val" in scalars:
        result["val"] = {k: scalars["val"][k] for k in keys if k in scalars["val"]}
    return result


def json_safe(value):
    """NaN (an undefined metric) becomes null: JSON has no NaN and DVC would not read it."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):  # e.g. the subgroup rows
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def format_value(value, digits: int = 3) -> str:
    """A metric for people: floats to `digits` places, "n/a" where undefined (None, NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if not isinstance(value, float):
        return str(value)
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # -1e-17 is "0.000", not "-0.000"


def write_predictions(path: str | Path, labels: np.ndarray, probs: np.ndarray, class_names: list[str],
                      per_image: dict | None = None, refer: list | None = None,
                      refer_probability: list | None = None) -> None:
    """predictions.csv: one row per image: actual and predicted class names (DVC's confusion
    template), confidence, status and ood_score (model/decision.py; empty when not given), the
    probability of every class and the referral decision (what `skinsage predict` gives; `refer`
    true/false, empty without a referral or for an out-of-distribution image)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    names = [csv_text(name) for name in class_names]  # a class named =HYPERLINK(...) stays text
    status = (per_image or {}).get("status") or [""] * len(labels)
    scores = (per_image or {}).get("ood_score") or [None] * len(labels)
    refer = refer or [None] * len(labels)
    refer_probability = refer_probability or [None] * len(labels)
    writer.writerow(["index", "actual", "predicted", "confidence", "status", "ood_score",
                     *[PROBABILITY_PREFIX + n for n in names], "refer", "refer_probability"])
    for i, (label, row) in enumerate(zip(labels, probs)):
        writer.writerow([i, names[label], names[int(row.argmax())], f"{row.max():.6f}",
                         status[i], "" if scores[i] is None else f"{scores[i]:.6g}",
                         *[f"{p:.9f}" for p in row], {True: "true", False: "false", None: ""}[refer[i]],
                         "" if refer_probability[i] is None else f"{refer_probability[i]:.9f}"])
    write_text(path, buffer.getvalue())


def read_predictions(path: str | Path) -> list[dict]:
    """predictions.csv rows; `probabilities` maps class name -> probability (empty for files
    written before the probabilities were added)."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{"index": int(row["index"]), "actual": from_csv_text(row["actual"]),
                 "predicted": from_csv_text(row["predicted"]), "confidence": float(row["confidence"]),
                 "probabilities": {from_csv_text(key.removeprefix(PROBABILITY_PREFIX)): float(value)
                                   for key, value in row.items() if key.startswith(PROBABILITY_PREFIX)}}
                for row in csv.DictReader(f)]


def write_rows(path: str | Path, rows: list[dict], columns: tuple[str, ...]) -> None:
    """A curve or calibration CSV (ROC_COLUMNS, PR_COLUMNS, CALIBRATION_COLUMNS or REFERRAL_ROC_COLUMNS)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _cell(row[k]) for k in columns} for row in rows)
    write_text(path, buffer.getvalue())


def _cell(value):
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else f"{float(value):.6g}"  # "inf" for ROC's first threshold
    return csv_text(value)  # a class name from the data stays text in a spreadsheet


def read_rows(path: str | Path) -> list[dict]:
    """Rows of a curve or calibration CSV with numeric cells as floats (empty -> NaN)."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: (from_csv_text(v) if k in TEXT_COLUMNS else float(v) if v != "" else math.nan)
                 for k, v in row.items()}
                for row in csv.DictReader(f)]


def by_class(rows: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        grouped.setdefault(row["class"], []).append(row)
    return grouped
