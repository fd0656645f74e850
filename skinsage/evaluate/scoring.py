"""Scoring a labelled split: its images through the model's one inference path, then every metric."""

from __future__ import annotations

from ..model.inference import predict_probabilities
from ..prepared import Split
from .metrics import ECE_BINS, confusion, evaluate_predictions


def evaluate_split(model, split: Split, class_names: list[str], batch_size: int, *, tta: str,
                   bootstrap: int = 0, seed: int = 0, ece_bins: int = ECE_BINS):
    """(metrics dict, confusion dict, (N, C) probabilities) for one labelled split.

    `tta` is required: the caller states how the model is run (the `evaluate` stage from params,
    `skinsage evaluate` from the model file). The metrics dict is `evaluate_predictions`'
    (scalars, optional "ci95", "per_class").
    """
    probs = predict_probabilities(model, split, batch_size, tta)  # either store, batch by batch
    metrics = evaluate_predictions(split.labels, probs, class_names, bootstrap=bootstrap, seed=seed,
                                   ece_bins=ece_bins)
    return metrics, confusion(split.labels, probs.argmax(axis=1), class_names), probs
