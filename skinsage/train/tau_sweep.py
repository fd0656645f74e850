"""Choosing the logit-adjustment tau on validation predictions (model/logit_adjustment.py applies it)."""

from __future__ import annotations

import numpy as np

from ..model.logit_adjustment import adjust

TAU_GRID = np.round(np.arange(0.0, 3.0001, 0.05), 2)


def objective_value(labels: np.ndarray, predicted: np.ndarray, objective: str) -> float:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    balanced = balanced_accuracy_score(labels, predicted)
    if objective == "balanced_accuracy":
        return balanced
    return (accuracy_score(labels, predicted) + balanced) / 2  # mean_accuracy


def choose_tau(labels: np.ndarray, probs: np.ndarray, prior: np.ndarray, objective: str,
               max_accuracy_drop: float | None = None) -> tuple[float, list[dict]]:
    """The tau of TAU_GRID maximising `objective` on (validation) predictions, among those whose
    accuracy is at most `max_accuracy_drop` below tau = 0's; the smallest on ties.
    `probs` is (N, C), or (V, N, C) for test-time variants: each variant is adjusted before they are
    averaged, as the saved model (adjustment layer) under `evaluate`'s TTA does.
    Returns it and the whole sweep (tau, accuracy, balanced accuracy, objective) for the record."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    variants = probs[None] if probs.ndim == 2 else probs
    sweep = []
    for tau in TAU_GRID:
        predicted = adjust(variants, prior, tau).mean(axis=0).argmax(axis=1)
        sweep.append({"tau": float(tau), "accuracy": accuracy_score(labels, predicted),
                      "balanced_accuracy": balanced_accuracy_score(labels, predicted),
                      "objective": objective_value(labels, predicted, objective)})
    allowed = [row for row in sweep if max_accuracy_drop is None
               or row["accuracy"] >= sweep[0]["accuracy"] - max_accuracy_drop - 1e-12]
    best = max(allowed, key=lambda row: row["objective"])  # max() keeps the first (smallest tau) on ties
    return best["tau"], sweep
