"""Post-hoc logit adjustment (Menon et al., 2021): divide each class probability by its training
prior raised to tau, then renormalise -- the same as subtracting tau * log(prior) from the logits.

tau = 0 leaves the model as trained (it mostly predicts the majority class on DermaMNIST); larger tau
buys minority-class recall with majority-class errors. With `tau: auto` the value is chosen on the
validation split (never the test split) to maximise a stated objective (train/tau_sweep.py). The
adjustment is a layer of the saved model, so every user of the model sees the same probabilities.
"""

from __future__ import annotations

import keras
import numpy as np

from .layers import LogitAdjustment


def class_prior(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Training-label frequencies; a class absent from training gets half an image (no log(0))."""
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    counts[counts == 0] = 0.5
    return counts / counts.sum()


def adjust(probs: np.ndarray, prior: np.ndarray, tau: float) -> np.ndarray:
    """The layer's arithmetic in NumPy, for choosing tau on stored predictions (any leading axes)."""
    adjusted = probs * np.power(prior, -tau)
    return adjusted / adjusted.sum(axis=-1, keepdims=True)


def with_adjustment(model: keras.Model, prior: np.ndarray, tau: float) -> keras.Model:
    """The model with a LogitAdjustment layer on its output (one flat graph, same layers)."""
    # float32 whatever the global dtype policy (mixed precision): the model's output stays float32
    outputs = LogitAdjustment(prior, tau, name="logit_adjustment", dtype="float32")(model.outputs[0])
    # a one-element list of inputs would make the saved model's `input` a list: pass the tensor;
    # a model with clinical inputs keeps its dict of named inputs
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.input
    return keras.Model(inputs, outputs, name=model.name)
