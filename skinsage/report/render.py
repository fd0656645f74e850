"""The `plot` stage: every PNG and the model card from the files `prepare`, `train` and `evaluate` wrote."""

from __future__ import annotations

from pathlib import Path

from ..contracts.evaluation import (CALIBRATION_BEFORE_FILE, CALIBRATION_FILE, CONFUSION_FILE, EVAL_FULL_FILE,
                                    PER_CLASS_FILE, PR_FILE, PREDICTIONS_FILE, REFERRAL_ROC_FILE,
                                    RISK_COVERAGE_FILE, ROC_FILE, read_predictions, read_rows)
from ..contracts.history import LIVE_DIR, read_history
from ..contracts.training import TRAIN_FULL_FILE, best_epoch
from ..fileio import read_json, write_text
from ..params import Params
from ..prepared import load_labels, load_split
from .charts import (plot_confusion_matrix, plot_gradcam_examples, plot_prediction_grid,
                     plot_referral_roc, plot_reliability_diagram, plot_risk_coverage, plot_roc_pr_curves,
                     plot_training_curves)
from .explanations import explain_examples, select_gradcam_examples
from .model_card import model_card

PLOT_FILES = ("training_curves.png", "confusion_matrix.png", "roc_pr_curves.png",
              "reliability_diagram.png", "test_examples.png", "gradcam_examples.png", "referral_roc.png",
              "risk_coverage.png", "report.md")


def _before_temperature(metrics: Path, evaluation: dict) -> tuple[list[dict], float, float] | None:
    """(bins, ECE, T) before temperature scaling, when the model has a temperature other than 1."""
    if evaluation.get("temperature") in (None, 1.0):
        return None
    bins = read_rows(metrics / CALIBRATION_BEFORE_FILE)
    return bins, evaluation.get("ece_before_temperature"), evaluation["temperature"]


def render_all(params: Params, prepared_dir: str | Path = "data/prepared",
               metrics_dir: str | Path = "metrics", out_dir: str | Path = "plots",
               live_dir: str | Path = LIVE_DIR, model_path: str | Path = "models/model.keras") -> None:
    prepared, metrics, out = Path(prepared_dir), Path(metrics_dir), Path(out_dir)
    labels = load_labels(prepared)
    name = labels["dataset"]
    train, evaluation = read_json(metrics / TRAIN_FULL_FILE), read_json(metrics / EVAL_FULL_FILE)
    per_class = read_json(metrics / PER_CLASS_FILE)
    history = read_history(live_dir)
    plot_training_curves(history, out / "training_curves.png", f"Training curves: {name}",
                         best_epoch=best_epoch(train, len(history)))
    matrix = read_json(metrics / CONFUSION_FILE)
    plot_confusion_matrix(matrix["matrix"], matrix["classes"], out / "confusion_matrix.png",
                          f"Test confusion matrix: {name}")
    plot_roc_pr_curves(read_rows(metrics / ROC_FILE), read_rows(metrics / PR_FILE),
                       per_class, out / "roc_pr_curves.png", f"Test ROC and precision-recall: {name}")
    plot_reliability_diagram(read_rows(metrics / CALIBRATION_FILE), evaluation.get("ece"),
                             params.evaluate.ece_bins, out / "reliability_diagram.png",
                             f"Test calibration: {name}", before=_before_temperature(metrics, evaluation))
    plot_referral_roc(read_rows(metrics / REFERRAL_ROC_FILE), evaluation.get("referral"),
                      out / "referral_roc.png", f"Test referral ROC: {name}")
    plot_risk_coverage(read_rows(metrics / RISK_COVERAGE_FILE), evaluation, out / "risk_coverage.png",
                       f"Test risk-coverage: {name}")
    test_images = load_split(prepared, "test").in_memory().images
    predictions = read_predictions(metrics / PREDICTIONS_FILE)
    plot_prediction_grid(test_images, predictions, matrix["classes"], out / "test_examples.png",
                         f"Test images: {name}", seed=params.seed)
    rows, layer = explain_examples(model_path, test_images, select_gradcam_examples(predictions, matrix["classes"]),
                            matrix["classes"])
    plot_gradcam_examples(rows, out / "gradcam_examples.png", f"Grad-CAM on test images: {name}",
                          layer=layer)
    write_text(out / "report.md", model_card(params=params, labels=labels,
                                             data=read_json(metrics / "data.json"), train=train,
                                             evaluation=evaluation, per_class=per_class))

