"""The referral decision: should a clinician see this lesion?

P(refer) is the summed final probability (after the test-time views and the temperature: what
`inference.predict_probabilities` returns) of the refer classes, e.g. melanoma, basal cell carcinoma
and actinic keratoses. `train` picks the threshold on it on the validation split (`fit_referral`)
and records it in the model file (metadata "referral"); every user of the model applies it with
`decide`: `refer` is P(refer) >= threshold.

An image the out-of-distribution check rejects (status "out_of_distribution") gets `refer` None,
"no advice", never False: the model cannot say such a lesion is safe to leave, and calling it
"refer" would dress a guess about a photo unlike its training images as advice.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import SkinSageError
from ..params import loose_name

RECORD_KEY = "referral"          # the model file's metadata key
NO_ADVICE_STATUS = "out_of_distribution"
NO_RECORD_NOTE = ("this model records no referral threshold (trained before referral existed, or with "
                  "train.referral.classes: null): refer is null; retrain it to get one")


class ReferralError(SkinSageError, ValueError):
    """The refer classes do not fit the data, or a model file's referral record is malformed."""


def refer_class_names(wanted, class_names: list[str], key: str = "train.referral.classes") -> list[str]:
    """The data's classes named in `wanted` (ignoring case and separators), in the data's order.
    None of them, or all of them (nothing left not to refer), is an error naming `key`."""
    loose = {loose_name(name) for name in wanted}
    found = [name for name in class_names if loose_name(name) in loose]
    if not found:
        raise ReferralError(f"{key}: none of {', '.join(wanted)} is a class of this data (its classes: "
                            f"{', '.join(class_names)}); list the classes a clinician must see as the "
                            f"data names them, or set {key}: null for a model without referral")
    if len(found) == len(class_names):
        raise ReferralError(f"{key}: every class of this data is a refer class ({', '.join(found)}): "
                            "every image would be referred; leave at least one class out")
    return found


def refer_probability(probs: np.ndarray, class_names: list[str], refer_classes: list[str]) -> np.ndarray:
    """(N,) P(refer): the sum of the refer classes' probabilities in each (N, C) row."""
    index = [class_names.index(name) for name in refer_classes]
    return np.asarray(probs, dtype=np.float64)[..., index].sum(axis=-1)


def is_refer_class(labels: np.ndarray, class_names: list[str], refer_classes: list[str]) -> np.ndarray:
    """(N,) bool: whether each true label is a refer class."""
    return np.isin(np.asarray(labels), [class_names.index(name) for name in refer_classes])


def fit_threshold(scores: np.ndarray, positive: np.ndarray, target: float) -> float:
    """The highest threshold t with sensitivity (share of positives with score >= t) >= target:
    the score of the ceil(target * positives)-th highest-scoring positive."""
    positive_scores = np.sort(np.asarray(scores, dtype=np.float64)[np.asarray(positive, dtype=bool)])[::-1]
    if not len(positive_scores):
        raise ReferralError("no image of a refer class to fit the referral threshold on")
    needed = math.ceil(target * len(positive_scores) - 1e-9)  # 0.95 * 20 is 19, not 19.000000000000004
    return float(positive_scores[max(needed, 1) - 1])


def fit_referral(probs: np.ndarray, labels: np.ndarray, class_names: list[str], refer_classes: list[str],
                 target: float) -> dict:
    """The record `train` saves in the model file: the classes, the threshold fitted on these
    (validation) probabilities for `target` sensitivity, and what it achieves on them."""
    scores = refer_probability(probs, class_names, refer_classes)
    positive = is_refer_class(labels, class_names, refer_classes)
    if not positive.any():
        raise ReferralError(f"the validation split has no image of the refer classes ({', '.join(refer_classes)}): "
                            "the referral threshold cannot be chosen; use a larger data.split.val")
    threshold = fit_threshold(scores, positive, target)
    referred = scores >= threshold
    negatives = int((~positive).sum())
    return {"classes": list(refer_classes), "threshold": threshold, "target_sensitivity": float(target),
            "fitted_on": "validation", "val_images": int(len(labels)), "val_refer_images": int(positive.sum()),
            "val_sensitivity": float(referred[positive].mean()),
            "val_specificity": float((~referred[~positive]).mean()) if negatives else None}


def decide(probs: np.ndarray, class_names: list[str], record: dict | None,
           statuses: list[str] | None = None) -> tuple[list, list]:
    """(refer, refer_probability) per (N, C) row: refer True/False (P(refer) >= the recorded
    threshold), None without a record or for an out-of-distribution image (module docstring);
    refer_probability a float, None without a record."""
    n = len(probs)
    if record is None:
        return [None] * n, [None] * n
    scores = refer_probability(probs, class_names, record["classes"])
    refer = [bool(s >= record["threshold"]) for s in scores]
    if statuses is not None:
        refer = [None if status == NO_ADVICE_STATUS else r for r, status in zip(refer, statuses)]
    return refer, [float(s) for s in scores]
