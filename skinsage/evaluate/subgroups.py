"""Does the model work as well for every patient group? Per age band, sex and anatomical site (when
the data has clinical data): count, accuracy, balanced accuracy and the referral sensitivity
and specificity with bootstrap 95% intervals.

A subgroup is flagged when its referral sensitivity is clearly below the whole split's: the upper
end of its 95% interval is below the whole split's sensitivity (FLAG_RULE). A point estimate a
little lower is noise in a group of a few dozen refer images; this rule asks that even the
subgroup's most favourable plausible value fall short.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from ..model.referral import is_refer_class, refer_probability
from ..params import SubgroupParams
from .metrics import percentile_intervals, stratified_resamples
from .referral import rates

FIELDS = ("age", "sex", "site")
# for `skinsage evaluate` with a model saved before evaluate.subgroups existed: params.yaml's values
DEFAULT_SUBGROUPS = SubgroupParams(min_images=50, age_bands=(30, 45, 60, 75))
UNKNOWN = "unknown"
FLAG_RULE = ("flagged: the upper end of the subgroup's 95% bootstrap interval of referral sensitivity "
             "is below the whole split's referral sensitivity")


def age_band_labels(edges: tuple[int, ...]) -> list[str]:
    """[30, 60] -> ["<30", "30-59", ">=60"]."""
    inner = [f"{low}-{high - 1}" for low, high in zip(edges, edges[1:])]
    return [f"<{edges[0]}", *inner, f">={edges[-1]}"]


def group_columns(clinical: dict[str, np.ndarray], edges: tuple[int, ...]) -> pd.DataFrame:
    """One column per clinical field present: the age band (or "unknown"), sex, site."""
    frame = pd.DataFrame(index=pd.RangeIndex(len(next(iter(clinical.values())))))
    if "age" in clinical:
        bands = pd.cut(pd.Series(clinical["age"], dtype="float64"), bins=[-np.inf, *edges, np.inf],
                       right=False, labels=age_band_labels(edges))
        frame["age"] = bands.astype(object).where(bands.notna(), UNKNOWN)
    for field in ("sex", "site"):
        if field in clinical:
            frame[field] = pd.Series(clinical[field], dtype=str).str.lower().replace("", UNKNOWN)
    return frame


def subgroup_table(labels: np.ndarray, probs: np.ndarray, class_names: list[str],
                   clinical: dict[str, np.ndarray] | None, record: dict | None, params: SubgroupParams, *,
                   bootstrap: int = 0, seed: int = 0, overall_sensitivity: float | None = None) -> dict | None:
    """{"rule", "min_images", "rows": [one per subgroup], "left_out": [subgroups below min_images]};
    None without clinical data."""
    present = {field: values for field, values in (clinical or {}).items() if field in FIELDS}
    if not present or not len(labels):
        return None
    frame = group_columns(present, params.age_bands)
    frame["label"] = np.asarray(labels, dtype=np.int64)
    frame["predicted"] = np.asarray(probs).argmax(axis=1)
    if record is not None:
        frame["positive"] = is_refer_class(frame["label"].to_numpy(), class_names, record["classes"])
        frame["referred"] = refer_probability(probs, class_names, record["classes"]) >= record["threshold"]
    rows, left_out = [], []
    for field in [f for f in FIELDS if f in frame]:
        for value, group in frame.groupby(field, sort=True):
            if len(group) < params.min_images:
                left_out.append({"field": field, "value": str(value), "images": int(len(group))})
                continue
            rows.append({"field": field, "value": str(value),
                         **_group_figures(group, record is not None, bootstrap, seed, overall_sensitivity)})
    order = {label: i for i, label in enumerate([*age_band_labels(params.age_bands), UNKNOWN])}
    rows.sort(key=lambda row: (FIELDS.index(row["field"]),
                               order.get(row["value"], 0) if row["field"] == "age" else -row["images"]))
    return {"rule": FLAG_RULE, "min_images": params.min_images, "rows": rows, "left_out": left_out}


def _group_figures(group: pd.DataFrame, referral: bool, bootstrap: int, seed: int,
                   overall: float | None) -> dict:
    labels, predicted = group["label"].to_numpy(), group["predicted"].to_numpy()
    with warnings.catch_warnings():  # a class predicted but absent from a small group: mean recall
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")  # as documented
        balanced = float(skm.balanced_accuracy_score(labels, predicted))
    figures = {"images": int(len(group)), "accuracy": float(skm.accuracy_score(labels, predicted)),
               "balanced_accuracy": balanced}
    if not referral:
        return figures
    positive, referred = group["positive"].to_numpy(), group["referred"].to_numpy()
    at = rates(positive, referred)
    figures.update(refer_images=int(positive.sum()), sensitivity=at["sensitivity"],
                   specificity=at["specificity"])
    if bootstrap > 0:
        values = {"sensitivity": np.empty(bootstrap), "specificity": np.empty(bootstrap)}
        for r, picks in enumerate(stratified_resamples(labels, bootstrap, seed)):
            index = np.concatenate(picks)
            resampled = rates(positive[index], referred[index])
            values["sensitivity"][r], values["specificity"][r] = resampled["sensitivity"], resampled["specificity"]
        figures["ci95"] = percentile_intervals(values)
        high = figures["ci95"]["sensitivity"]["high"]
        figures["flagged"] = bool(overall is not None and np.isfinite(high) and high < overall)
    return figures
