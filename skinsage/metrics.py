"""Classification metrics from one array of predicted probabilities, all by scikit-learn."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def evaluate_predictions(y_true: np.ndarray, probs: np.ndarray, class_names: list[str]) -> dict:
    """Summary metrics, per-class metrics and the confusion matrix, keyed by class name."""
    labels = np.arange(len(class_names))
    y_pred = probs.argmax(axis=1)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    return {
        "loss": float(skm.log_loss(y_true, probs, labels=labels)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(_balanced_accuracy(y_true, y_pred)),
        "macro_f1": float(skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(skm.f1_score(y_true, y_pred, labels=labels, average="weighted",
                                          zero_division=0)),
        "auc_macro_ovr": medmnist_auc(y_true, probs),
        "num_images": int(len(y_true)),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i])}
            for i, name in enumerate(class_names)
        },
    }


def _balanced_accuracy(y_true, y_pred) -> float:
    # sklearn warns (and averages over the classes present) when a class is absent; say so plainly
    return skm.balanced_accuracy_score(y_true, y_pred) if len(y_true) else float("nan")


def medmnist_auc(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean of one-vs-rest ROC AUCs over classes, as MedMNIST's evaluator computes it.

    Classes absent from y_true have no AUC; they are left out of the mean (MedMNIST would fail).
    """
    aucs = [skm.roc_auc_score(y_true == c, probs[:, c]) for c in range(probs.shape[1])
            if 0 < np.sum(y_true == c) < len(y_true)]
    return float(np.mean(aucs)) if aucs else float("nan")


def confusion(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]) -> dict:
    matrix = skm.confusion_matrix(y_true, y_pred, labels=np.arange(len(class_names)))
    return {"classes": class_names, "rows": "actual", "columns": "predicted",
            "matrix": matrix.tolist()}
