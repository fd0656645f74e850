"""Post-hoc logit adjustment (Menon et al., 2021): divide each class probability by its training
prior raised to tau, then renormalise -- the same as subtracting tau * log(prior) from the logits.

tau = 0 leaves the model as trained (it mostly predicts the majority class on DermaMNIST); larger tau
buys minority-class recall with majority-class errors. With `tau: auto` the value is chosen on the
validation split (never the test split) to maximise a stated objective. The adjustment is a layer
of the saved model, so `evaluate`, `skinsage predict` and the API all see the same probabilities.
"""

from __future__ import annotations

import keras
import numpy as np

TAU_GRID = np.round(np.arange(0.0, 3.0001, 0.05), 2)


@keras.saving.register_keras_serializable(package="skinsage")
class LogitAdjustment(keras.layers.Layer):
    """Probabilities -> probabilities * prior ** -tau, renormalised."""

    def __init__(self, class_prior, tau: float, **kwargs):
        super().__init__(**kwargs)
        self.class_prior = [float(p) for p in class_prior]
        self.tau = float(tau)

    def call(self, probabilities):
        scale = keras.ops.convert_to_tensor(np.power(self.class_prior, -self.tau), dtype="float32")
        adjusted = keras.ops.cast(probabilities, "float32") * scale
        return adjusted / keras.ops.sum(adjusted, axis=-1, keepdims=True)

    def get_config(self):
        return {**super().get_config(), "class_prior": self.class_prior, "tau": self.tau}


def class_prior(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Training-label frequencies; a class absent from training gets half an image (no log(0))."""
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    counts[counts == 0] = 0.5
    return counts / counts.sum()


def adjust(probs: np.ndarray, prior: np.ndarray, tau: float) -> np.ndarray:
    """The layer's arithmetic in NumPy, for choosing tau on stored predictions (any leading axes)."""
    adjusted = probs * np.power(prior, -tau)
    return adjusted / adjusted.sum(axis=-1, keepdims=True)


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


def with_adjustment(model: keras.Model, prior: np.ndarray, tau: float) -> keras.Model:
    """The model with a LogitAdjustment layer on its output (one flat graph, same layers)."""
    outputs = LogitAdjustment(prior, tau, name="logit_adjustment")(model.outputs[0])
    # a one-element list of inputs would make the saved model's `input` a list: pass the tensor
    (inputs,) = model.inputs
    return keras.Model(inputs, outputs, name=model.name)
