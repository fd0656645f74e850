"""The `plot` stage: every PNG and the model card from the files `prepare`, `train` and `evaluate` wrote."""

from __future__ import annotations

from pathlib import Path

from ..evaluate.curves import read_rows
from ..evaluate.outputs import read_predictions
from ..fileio import read_json, write_text
from ..params import Params
from ..prepared import load_labels, load_split
from ..train.history import LIVE_DIR, read_history
from ..evaluate.outputs import read_referral_roc
from .charts import (plot_confusion_matrix, plot_gradcam_examples, plot_prediction_grid,
                     plot_referral_roc, plot_reliability_diagram, plot_roc_pr_curves, plot_training_curves)
from .explanations import explain_examples, select_gradcam_examples
from .model_card import model_card

PLOT_FILES = ("training_curves.png", "confusion_matrix.png", "roc_pr_curves.png",
              "reliability_diagram.png", "test_examples.png", "gradcam_examples.png", "referral_roc.png",
              "report.md")


def _before_temperature(metrics: Path, evaluation: dict) -> tuple[list[dict], float, float] | None:
    """(bins, ECE, T) before temperature scaling, when the model has a temperature other than 1."""
    if evaluation.get("temperature") in (None, 1.0):
        return None
    bins = read_rows(metrics / "calibration_before_temperature.csv")
    return bins, evaluation.get("ece_before_temperature"), evaluation["temperature"]


def render_all(params: Params, prepared_dir: str | Path = "data/prepared",
               metrics_dir: str | Path = "metrics", out_dir: str | Path = "plots",
               live_dir: str | Path = LIVE_DIR, model_path: str | Path = "models/model.keras") -> None:
    prepared, metrics, out = Path(prepared_dir), Path(metrics_dir), Path(out_dir)
    labels = load_labels(prepared)
    name = labels["dataset"]
    train, evaluation = read_json(metrics / "train_full.json"), read_json(metrics / "eval_full.json")
    per_class = read_json(metrics / "per_class.json")
    history = read_history(live_dir)
    plot_training_curves(history, out / "training_curves.png", f"Training curves: {name}",
                         best_epoch=best_epoch(train, history))
    matrix = read_json(metrics / "confusion.json")
    plot_confusion_matrix(matrix["matrix"], matrix["classes"], out / "confusion_matrix.png",
                          f"Test confusion matrix: {name}")
    plot_roc_pr_curves(read_rows(metrics / "roc.csv"), read_rows(metrics / "precision_recall.csv"),
                       per_class, out / "roc_pr_curves.png", f"Test ROC and precision-recall: {name}")
    plot_reliability_diagram(read_rows(metrics / "calibration.csv"), evaluation.get("ece"),
                             params.evaluate.ece_bins, out / "reliability_diagram.png",
                             f"Test calibration: {name}", before=_before_temperature(metrics, evaluation))
    plot_referral_roc(read_referral_roc(metrics / "referral_roc.csv"), evaluation.get("referral"),
                      out / "referral_roc.png", f"Test referral ROC: {name}")
    test_images, predictions = load_split(prepared, "test").in_memory().images, read_predictions(metrics / "predictions.csv")
    plot_prediction_grid(test_images, predictions, matrix["classes"], out / "test_examples.png",
                         f"Test images: {name}", seed=params.seed)
    rows, layer = explain_examples(model_path, test_images, select_gradcam_examples(predictions, matrix["classes"]),
                            matrix["classes"])
    plot_gradcam_examples(rows, out / "gradcam_examples.png", f"Grad-CAM on test images: {name}",
                          layer=layer)
    write_text(out / "report.md", model_card(params=params, labels=labels,
                                             data=read_json(metrics / "data.json"), train=train,
                                             evaluation=evaluation, per_class=per_class))


def best_epoch(train: dict, history: list[dict]) -> int | None:
    """The epoch whose weights were kept: train_full.json's `best_epoch`, else the lowest val_loss."""
    recorded = train.get("best_epoch")
    if isinstance(recorded, int) and 1 <= recorded <= len(history):
        return recorded
    losses = [row.get("val_loss") for row in history]
    valid = [(loss, i) for i, loss in enumerate(losses) if isinstance(loss, float)]
    return min(valid)[1] + 1 if valid else None
