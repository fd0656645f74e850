"""Temperature scaling (Guo et al., 2017): probabilities that mean what they say.

Label smoothing and the logit adjustment leave a model's confidence away from its accuracy. One
scalar T, fitted on the validation split after tau, rescales the final log-probabilities:
p_T = softmax(log p / T). T > 1 softens, T < 1 sharpens, and the order of the classes (so the
predicted class, accuracy and AUC) never changes. `inference.predict_probabilities` applies it after
averaging the test-time views -- applied to each view, it could change which class the average
picks. The model file records T (`inference.temperature`); exported graphs bake it in.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

# A fitted T outside this range means the validation split cannot support it (e.g. a perfectly
# separated toy set drives T to 0): it is clipped, and the log says so.
T_RANGE = (0.05, 20.0)


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T) along the last axis, in float64; T = 1 returns `probs` unchanged."""
    if temperature == 1.0:
        return probs
    logits = np.log(np.clip(probs, 1e-300, None)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=-1, keepdims=True)


def negative_log_likelihood(labels: np.ndarray, probs: np.ndarray, temperature: float) -> float:
    scaled = apply_temperature(probs, temperature)
    # p <= 1 and 0 - mean: a perfect fit is 0.0, not -0.0 (nor -1e-16 from a sum that rounds above 1)
    return float(0.0 - np.mean(np.log(np.clip(scaled[np.arange(len(labels)), labels], 1e-300, 1.0))))


def fit_temperature(labels: np.ndarray, probs: np.ndarray) -> float:
    """The T minimising the validation log loss (convex in 1/T, so one minimum: a bounded search on log T)."""
    from scipy.optimize import minimize_scalar

    labels = np.asarray(labels, dtype=int)
    low, high = np.log(T_RANGE)
    found = minimize_scalar(lambda log_t: negative_log_likelihood(labels, probs, float(np.exp(log_t))),
                            bounds=(low, high), method="bounded", options={"xatol": 1e-4})
    temperature = float(np.exp(found.x))
    if not T_RANGE[0] * 1.01 < temperature < T_RANGE[1] / 1.01:
        log.warning(f"temperature {temperature:.3g} is at the end of the searched range {T_RANGE}: the "
                    "validation split does not pin it down (too few or perfectly separated images)")
    return temperature
