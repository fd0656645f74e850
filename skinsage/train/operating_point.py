"""The referral operating point, chosen in `train` on the validation split (model/referral.py has
the rule and applies it): the refer classes are matched before training, so a name that fits no
class of the data stops the run before hours of fitting, and the threshold is fitted on the saved
model's final probabilities, exactly what every user of the model gets."""

from __future__ import annotations

import logging

from ..model.referral import fit_referral, refer_class_names
from ..params import Params, loose_name

log = logging.getLogger(__name__)


def refer_classes(params: Params, class_names: list[str]) -> list[str] | None:
    """The data's refer classes; None = no referral (train.referral.classes null, or generated
    shapes none of which is listed: they have no malignant class)."""
    wanted = params.train.referral.classes
    if wanted is None:
        return None
    if params.data.source == "synthetic" and not set(map(loose_name, wanted)) & set(map(loose_name, class_names)):
        log.info("train.referral: generated shapes have no refer classes; the model records no referral")
        return None
    return refer_class_names(wanted, class_names)


def fit_operating_point(model, params: Params, data, classes: list[str] | None, settings: dict) -> dict | None:
    """The referral record for the model file, fitted on validation probabilities computed with the
    model's recorded inference `settings` (TTA, temperature)."""
    from ..model.inference import predict_probabilities

    if classes is None:
        return None
    val = data.splits["val"]
    probs = predict_probabilities(model, val, params.evaluate.batch_size, **settings, clinical=val.clinical)
    record = fit_referral(probs, val.labels, data.class_names, classes, params.train.referral.target_sensitivity)
    log.info(f"referral: refer {', '.join(classes)} when their summed probability >= {record['threshold']:.4f} "
             f"(validation: sensitivity {record['val_sensitivity']:.3f} for a target of "
             f"{record['target_sensitivity']:g}, specificity {record['val_specificity']:.3f}, "
             f"{record['val_refer_images']} refer images)")
    return record
