"""Each prediction's `status`: "ok" | "uncertain" | "out_of_distribution" (one source of the decision).

From the calibrated probabilities, the `ood_score` (model/ood.py; None for a model file without a
detector) and the thresholds `train` fitted on validation and recorded in the model file
(`inference.ood`, `inference.uncertain`): out_of_distribution when the score is above the ood
threshold, else uncertain when the top probability is below the uncertain threshold, else ok. Only
the inference path's users call it (Classifier, `evaluate`, the exported runtimes through
Classifier); nothing else re-implements it.
"""

from __future__ import annotations

import numpy as np

OK, UNCERTAIN, OUT_OF_DISTRIBUTION = "ok", "uncertain", "out_of_distribution"
STATUSES = (OK, UNCERTAIN, OUT_OF_DISTRIBUTION)


def statuses(probs: np.ndarray, ood_scores: np.ndarray | None, settings: dict) -> list[str]:
    """One status per row of (N, C) `probs`; `settings` as `decision_settings` reads them."""
    ood, uncertain = settings.get("ood"), settings.get("uncertain")
    top = np.asarray(probs).max(axis=1) if len(probs) else np.zeros(0)
    out = []
    for i, p in enumerate(top):
        if ood and ood_scores is not None and ood_scores[i] > ood["threshold"]:
            out.append(OUT_OF_DISTRIBUTION)
        elif uncertain and p < uncertain["threshold"]:
            out.append(UNCERTAIN)
        else:
            out.append(OK)
    return out


def fit_thresholds(probs: np.ndarray, ood_scores: np.ndarray | None, retain: float,
                   coverage: float | None, method: str) -> dict:
    """The thresholds from validation outputs: the ood threshold keeps `retain` of the images;
    the uncertain threshold answers `coverage` of those kept `ok`."""
    record = {}
    kept = np.ones(len(probs), dtype=bool)
    if ood_scores is not None:
        threshold = float(np.quantile(ood_scores, retain, method="higher"))
        record["ood"] = {"method": method, "retain": retain, "threshold": threshold}
        kept = ood_scores <= threshold
    if coverage is not None:
        top = np.asarray(probs)[kept].max(axis=1)
        threshold = float(np.quantile(top, 1 - coverage, method="lower")) if coverage < 1 else 0.0
        record["uncertain"] = {"coverage": coverage, "threshold": threshold}
    return record
