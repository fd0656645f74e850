"""What the referral operating point achieves on a labelled split: at the threshold recorded in the
model file, the sensitivity (refer images referred), specificity (other images not referred), PPV,
NPV and referral rate with bootstrap 95% intervals, the refer-vs-rest ROC AUC of P(refer), and
melanoma's own sensitivity. The decision is model/referral.py's, the same every user gets."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from sklearn import metrics as skm

from ..model.referral import is_refer_class, refer_probability
from ..params import loose_name
from .metrics import percentile_intervals, stratified_resamples

RATE_KEYS = ("sensitivity", "specificity", "ppv", "npv", "referral_rate")
CI_KEYS = (*RATE_KEYS, "auc")
MELANOMA_NAMES = ("melanoma", "mel")  # as DermaMNIST, HAM10000/ISIC codes and folders name it


def rates(positive: np.ndarray, referred: np.ndarray) -> dict:
    """RATE_KEYS from boolean arrays; NaN where a denominator is 0."""
    def share(hits, among):
        return float(hits[among].mean()) if among.any() else float("nan")
    everyone = np.ones(len(positive), bool)
    return {"sensitivity": share(referred, positive), "specificity": share(~referred, ~positive),
            "ppv": share(positive, referred), "npv": share(~positive, ~referred),
            "referral_rate": share(referred, everyone)}


def binary_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney rank sum (ties half), as roc_auc_score; NaN with one class only.
    Cheap enough for every bootstrap resample."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def melanoma_class(class_names: list[str], refer_classes: list[str]) -> str | None:
    return next((name for name in refer_classes if loose_name(name) in MELANOMA_NAMES), None)


def referral_metrics(labels: np.ndarray, probs: np.ndarray, class_names: list[str], record: dict, *,
                     bootstrap: int = 0, seed: int = 0) -> dict:
    """The referral figures of one split at `record`'s threshold; "ci95" when bootstrap > 0
    (stratified by true class, seeded, as the other metrics' intervals)."""
    labels = np.asarray(labels, dtype=np.int64)
    scores = refer_probability(probs, class_names, record["classes"])
    positive = is_refer_class(labels, class_names, record["classes"])
    referred = scores >= record["threshold"]
    result = {"classes": list(record["classes"]), "threshold": float(record["threshold"]),
              "target_sensitivity": record.get("target_sensitivity"), "images": int(len(labels)),
              "refer_images": int(positive.sum()), **rates(positive, referred),
              "auc": binary_auc(positive, scores)}
    melanoma = melanoma_class(class_names, record["classes"])
    if melanoma is not None:
        is_melanoma = labels == class_names.index(melanoma)
        result["melanoma_sensitivity"] = float(referred[is_melanoma].mean()) if is_melanoma.any() else float("nan")
        result["melanoma_images"] = int(is_melanoma.sum())
    if bootstrap > 0 and len(labels):
        result["ci95"] = referral_ci(labels, positive, referred, scores, bootstrap, seed,
                                     None if melanoma is None else class_names.index(melanoma))
    return result


def referral_ci(labels, positive, referred, scores, resamples: int, seed: int, melanoma: int | None) -> dict:
    keys = CI_KEYS + (("melanoma_sensitivity",) if melanoma is not None else ())
    values = {key: np.empty(resamples) for key in keys}
    for r, picks in enumerate(stratified_resamples(labels, resamples, seed)):
        index = np.concatenate(picks)
        for key, value in rates(positive[index], referred[index]).items():
            values[key][r] = value
        values["auc"][r] = binary_auc(positive[index], scores[index])
        if melanoma is not None:
            chosen = labels[index] == melanoma
            values["melanoma_sensitivity"][r] = referred[index][chosen].mean() if chosen.any() else np.nan
    return percentile_intervals(values)


def roc_rows(labels: np.ndarray, probs: np.ndarray, class_names: list[str], record: dict) -> list[dict]:
    """The ROC of P(refer) (curve "ROC", scikit-learn's points) and the recorded operating point
    (curve "operating point": one row at its false and true positive rates)."""
    scores = refer_probability(probs, class_names, record["classes"])
    positive = is_refer_class(labels, class_names, record["classes"])
    if positive.all() or not positive.any():
        return []
    fpr, tpr, thresholds = skm.roc_curve(positive, scores)
    rows = [{"curve": "ROC", "point": i, "fpr": f, "tpr": t, "threshold": th}
            for i, (f, t, th) in enumerate(zip(fpr, tpr, thresholds))]
    at = rates(positive, scores >= record["threshold"])
    rows.append({"curve": "operating point", "point": 0, "fpr": 1 - at["specificity"],
                 "tpr": at["sensitivity"], "threshold": float(record["threshold"])})
    return rows
