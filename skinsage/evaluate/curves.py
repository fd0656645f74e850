"""Per-class ROC / precision-recall curves and calibration bins as long-format tables (CSV).

One row per curve point with a `class` column; the files' columns, writer and reader are the
contract in skinsage/contracts/evaluation.py.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn import metrics as skm


def _present_classes(y_true: np.ndarray, class_names: list[str]):
    """(index, name) of classes with both positives and negatives: the only ones with curves."""
    for c, name in enumerate(class_names):
        if 0 < np.sum(y_true == c) < len(y_true):
            yield c, name


def roc_rows(y_true: np.ndarray, probs: np.ndarray, class_names: list[str]) -> list[dict]:
    rows = []
    for c, name in _present_classes(y_true, class_names):
        fpr, tpr, thresholds = skm.roc_curve(y_true == c, probs[:, c])
        rows += [{"class": name, "point": i, "fpr": f, "tpr": t, "threshold": th}
                 for i, (f, t, th) in enumerate(zip(fpr, tpr, thresholds))]
    return rows


def precision_recall_rows(y_true: np.ndarray, probs: np.ndarray, class_names: list[str]) -> list[dict]:
    """Points in order of increasing recall; the recall-0 end has no threshold."""
    rows = []
    for c, name in _present_classes(y_true, class_names):
        precision, recall, thresholds = skm.precision_recall_curve(y_true == c, probs[:, c],
                                                                   drop_intermediate=True)
        thresholds = [*thresholds, math.nan]
        points = list(zip(recall, precision, thresholds))[::-1]
        rows += [{"class": name, "point": i, "recall": r, "precision": p, "threshold": th}
                 for i, (r, p, th) in enumerate(points)]
    return rows


def calibration_bins(y_true: np.ndarray, probs: np.ndarray, bins: int) -> list[dict]:
    """Top-label reliability: per non-empty equal-width bin (lower, upper] of the winning probability,
    its mean confidence and the accuracy of those predictions. `perfect` = confidence (the diagonal)."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        members = index == b
        if members.any():
            mean_conf = float(confidence[members].mean())
            rows.append({"bin": b, "lower": float(edges[b]), "upper": float(edges[b + 1]),
                         "count": int(members.sum()), "confidence": mean_conf,
                         "accuracy": float(correct[members].mean()), "perfect": mean_conf})
    return rows


def risk_coverage_rows(y_true: np.ndarray, probs: np.ndarray) -> tuple[list[dict], float]:
    """(rows, AURC): answering only the images whose top probability is at least each threshold,
    the share answered (coverage) and the accuracy on them (risk = 1 - accuracy); the area under the
    risk-coverage curve (AURC, Geifman & El-Yaniv 2017: lower is better), the mean risk over the
    coverages 1/N .. 1."""
    confidence = probs.max(axis=1)
    order = np.argsort(-confidence, kind="stable")
    correct = (probs.argmax(axis=1) == y_true)[order]
    n = len(order)
    if n == 0:
        return [], math.nan
    accuracy = np.cumsum(correct) / np.arange(1, n + 1)
    rows = [{"coverage": (i + 1) / n, "accuracy": accuracy[i], "risk": 1 - accuracy[i],
             "threshold": confidence[order[i]]} for i in range(n)
            if i == n - 1 or confidence[order[i]] != confidence[order[i + 1]]]  # one point per threshold
    return rows, float(np.mean(1 - accuracy))
