"""Scoring a labelled split: its images through the model's one inference path, then every metric."""

from __future__ import annotations

import numpy as np
import sklearn.metrics as skm

from ..model.decision import OK, STATUSES, statuses
from ..model.inference import predict_outputs
from ..model.temperature import apply_temperature
from ..params import SubgroupParams
from ..prepared import Split
from .metrics import ECE_BINS, confusion, evaluate_predictions, expected_calibration_error
from .referral import referral_metrics
from .subgroups import subgroup_table


def evaluate_split(model, split: Split, class_names: list[str], batch_size: int, *, tta: str,
                   temperature: float = 1.0, bootstrap: int = 0, seed: int = 0, ece_bins: int = ECE_BINS,
                   referral: dict | None = None, subgroups: SubgroupParams | None = None,
                   decision: dict | None = None):
    """(metrics dict, confusion dict, (N, C) probabilities) for one labelled split.

    `tta` is required: the caller states how the model is run (the `evaluate` stage and `skinsage
    evaluate` from the model file's `inference_settings`). The metrics dict is
    `evaluate_predictions`' (scalars, optional "ci95", "per_class"); with a temperature other than
    1 it also has the calibration before it ("temperature", "ece_before_temperature",
    "loss_before_temperature"), so the gain is visible. A model with clinical inputs gets the
    split's clinical data. `referral` (the model file's record) adds "referral" (referral.py) and
    the headline "referral_sensitivity" / "referral_specificity"; `subgroups` adds "subgroups"
    (subgroups.py) when the split has clinical data. `decision` (model_file.decision_settings) adds
    the status shares (ok / uncertain / out_of_distribution), the accuracy on ok, AURC, the
    thresholds it applied ("decision", as recorded in the model file) and "per_image" (each image's
    status and ood_score, for predictions.csv).
    """
    # either store, batch by batch; a model with clinical inputs gets the split's clinical data
    probs, scores = predict_outputs(model, split, batch_size, tta, temperature, clinical=split.clinical)
    metrics = evaluate_predictions(split.labels, probs, class_names, bootstrap=bootstrap, seed=seed,
                                   ece_bins=ece_bins)
    if temperature != 1.0:
        before = without_temperature(probs, temperature)
        labels = np.arange(probs.shape[1])
        metrics.update(temperature=temperature,
                       ece_before_temperature=expected_calibration_error(split.labels, before, ece_bins),
                       loss_before_temperature=float(skm.log_loss(split.labels, before, labels=labels)))
    if decision is not None:
        metrics.update(_status_summary(split.labels, probs, scores, decision))
    metrics.update(_referral_figures(split, probs, class_names, referral, subgroups, bootstrap, seed))
    return metrics, confusion(split.labels, probs.argmax(axis=1), class_names), probs


def _status_summary(labels: np.ndarray, probs: np.ndarray, scores, decision: dict) -> dict:
    from .curves import risk_coverage_rows

    status = np.asarray(statuses(probs, scores, decision))
    ok = status == OK
    correct = probs.argmax(axis=1) == labels
    summary = {f"share_{name}": float(np.mean(status == name)) if len(status) else float("nan")
               for name in STATUSES}
    summary["accuracy_ok"] = float(np.mean(correct[ok])) if ok.any() else float("nan")
    summary["aurc"] = risk_coverage_rows(labels, probs)[1]
    summary["decision"] = decision  # the model card shows the thresholds beside the shares they gave
    return {**summary, "per_image": {"status": status.tolist(),
                                     "ood_score": None if scores is None else scores.tolist()}}


def _referral_figures(split: Split, probs, class_names, record, subgroups, bootstrap: int, seed: int) -> dict:
    figures = {}
    if record is not None:
        r = referral_metrics(split.labels, probs, class_names, record, bootstrap=bootstrap, seed=seed)
        figures = {"referral_sensitivity": r["sensitivity"], "referral_specificity": r["specificity"],
                   "referral": r}
    if subgroups is not None:
        table = subgroup_table(split.labels, probs, class_names, split.clinical, record, subgroups,
                               bootstrap=bootstrap, seed=seed,
                               overall_sensitivity=figures.get("referral_sensitivity"))
        if table is not None:
            figures["subgroups"] = table
    return figures


def without_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """The probabilities before temperature scaling: softmax(log p_T * T) undoes softmax(log p / T)."""
    return apply_temperature(probs, 1.0 / temperature)
