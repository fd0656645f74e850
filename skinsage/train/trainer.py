"""The `train` stage's work: one seed for everything, the model built and fitted (ResNet50's two
phases are in resnet50.py), the logit adjustment chosen and baked in, the summary and metadata."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from dataclasses import asdict

import numpy as np

from ..model.model_file import FORMAT
from ..params import EarlyStoppingParams, Params
from ..prepared import PreparedData
from .augment import augment_summary
from .distribute import local_copy, make_strategy, replicas, scope, set_precision
from ..contracts.history import METRIC_COLUMNS
from .inputs import image_datasets
from .phase import PhaseResult, best_phase, class_weights, fit_phase, training_args

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Python, NumPy and TensorFlow from one seed; TF ops made deterministic."""
    import keras
    import tensorflow as tf

    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def params_hash(params: Params) -> str:
    text = json.dumps(asdict(params), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def train_model(params: Params, data: PreparedData, live=None):
    """Build and fit the selected model; returns (model, history rows, summary dict). A dvclive
    `live` gets every epoch as it ends (what `dvc exp show` shows while training runs).

    `train.distribute` and `train.mixed_precision` apply to this call only: Keras' global dtype
    policy is restored afterwards (the returned model keeps its layers' own policies)."""
    import keras

    # first: MultiWorkerMirroredStrategy must be created before any other TensorFlow op
    strategy = make_strategy(params.train.distribute)
    seed_everything(params.seed)
    previous = keras.mixed_precision.global_policy()
    set_precision(params.train.mixed_precision)
    try:
        return _train(params, data, live, strategy)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _train(params: Params, data: PreparedData, live, strategy):
    from ..model.architectures import build_model
    from ..model.clinical import fit_encoding

    t = params.train
    encoding = fit_encoding(params.model_params.clinical, data.splits["train"].clinical)
    if encoding:
        log.info(f"clinical inputs: {', '.join(encoding)} (encoding fitted on the training split)")
    with scope(strategy):  # the variables become the strategy's (mirrored) variables
        model = build_model(params.model, len(data.class_names), params.model_params, encoding)
    weights = class_weights(data.splits["train"].labels, t.class_weight)
    if weights:
        log.info(f"class weights ({t.class_weight}): " + ", ".join(
               f"{data.class_names[c]} {w:.3f}" for c, w in weights.items()))
    if strategy is not None:
        log.info(f"global batch {t.batch_size * replicas(strategy)} = train.batch_size {t.batch_size} x "
                 f"{replicas(strategy)} replicas; learning rate {t.learning_rate:g} as set (not scaled)")
    if params.model == "resnet50":
        from .resnet50 import train_resnet50

        phases = train_resnet50(model, params, data, weights, live, strategy)
        model = _without_optimizer(model) if strategy is None else local_copy(model, strategy)
    else:
        phases = [_train_cnn(model, params, data, weights, live, strategy)]
        # after training every worker goes on alone: the tau sweep predicts without collectives
        model = local_copy(model, strategy)
    history = history_rows(phases)
    summary = _summary(history, phases, t.early_stopping)
    if strategy is not None:
        summary["replicas"] = replicas(strategy)
    model, calibration = _calibrate(model, params, data)
    model, decision = _fit_decision(model, params, data, calibration.get("temperature", 1.0))
    extra = {"clinical_encoding": encoding} if encoding else {}
    return model, history, {**summary, **calibration, **decision, **extra}


def _calibrate(model, params: Params, data: PreparedData):
    """The post-hoc steps chosen on validation, in order: the logit adjustment (baked into the
    model), then the temperature (recorded for inference, applied after the test-time views)."""
    from ..model.inference import variant_probabilities
    from ..model.logit_adjustment import adjust, class_prior

    t, val = params.train, data.splits["val"]
    variants = None  # validation predicted as `evaluate` will (with its test-time augmentation)
    if t.logit_adjustment.auto or t.temperature == "auto":
        variants = variant_probabilities(model, val, params.evaluate.batch_size, params.evaluate.tta,
                                         clinical=val.clinical)
    prior = class_prior(data.splits["train"].labels, len(data.class_names))
    model, adjustment = _adjust_logits(model, params, val.labels, variants, prior)
    if variants is not None:  # what the adjusted model gives (the layer's arithmetic, in NumPy)
        variants = adjust(variants, prior, adjustment.get("logit_adjustment_tau", 0.0))
    return model, {**adjustment, **_temperature(t.temperature, val.labels, variants)}


def _fit_decision(model, params: Params, data: PreparedData, temperature: float):
    """The out-of-distribution detector (fitted on the training lesions, added to the model as a
    second output) and the thresholds of each prediction's status, chosen on validation as
    `evaluate` and every user will run the model (its TTA and temperature)."""
    from ..model.decision import fit_thresholds
    from ..model.inference import predict_outputs
    from ..model.ood import fit_detector

    t, val = params.train, data.splits["val"]
    if t.ood.method == "feature_stats":
        model = fit_detector(model, data.splits["train"], val, params.evaluate.batch_size, params.evaluate.tta,
                             t.ood.stages)
    probs, scores = predict_outputs(model, val, params.evaluate.batch_size, params.evaluate.tta,
                                    temperature, clinical=val.clinical)
    record = fit_thresholds(probs, scores, t.ood.retain, t.uncertain.coverage, t.ood.method)
    if "ood" in record:
        record["ood"]["stages"] = t.ood.stages
    for key, section in record.items():
        log.info(f"{key} threshold {section['threshold']:.4g} (chosen on {len(val)} validation images)")
    return model, {"decision": record}


def _temperature(setting: float | str | None, labels, variants) -> dict:
    """{"temperature": T} and, when fitted, the validation log loss before and after."""
    from ..model.inference import average_views
    from ..model.temperature import fit_temperature, negative_log_likelihood

    if setting is None:
        return {}
    if setting != "auto":
        return {"temperature": setting}
    probs = average_views(variants)
    temperature = fit_temperature(labels, probs)
    before, after = (negative_log_likelihood(labels, probs, value) for value in (1.0, temperature))
    log.info(f"temperature {temperature:.3f} minimises the validation log loss ({before:.4f} -> {after:.4f})")
    return {"temperature": round(temperature, 4), "val_loss_before_temperature": round(before, 4),
            "val_loss_after_temperature": round(after, 4)}


def _adjust_logits(model, params: Params, labels, variants, prior):
    """Bake the post-hoc logit adjustment into the model; tau `auto` is chosen on validation."""
    from ..model.logit_adjustment import with_adjustment
    from .tau_sweep import choose_tau

    a = params.train.logit_adjustment
    if a.tau is None or (not a.auto and a.fixed_tau == 0):
        return model, {}
    tau, record = a.fixed_tau, {}
    if a.auto:
        tau, sweep = choose_tau(labels, variants, prior, a.objective, a.max_accuracy_drop)
        before, chosen = sweep[0], next(row for row in sweep if row["tau"] == tau)
        limit = "" if a.max_accuracy_drop is None else f" (accuracy drop <= {a.max_accuracy_drop:g})"
        log.info(f"logit adjustment: tau {tau:g} maximises validation {a.objective}{limit} "
                 f"(accuracy {before['accuracy']:.3f} -> {chosen['accuracy']:.3f}, balanced accuracy "
                 f"{before['balanced_accuracy']:.3f} -> {chosen['balanced_accuracy']:.3f})")
        record = {"val_accuracy_adjusted": round(chosen["accuracy"], 4),
                  "val_balanced_accuracy_adjusted": round(chosen["balanced_accuracy"], 4)}
    return with_adjustment(model, prior, tau), {"logit_adjustment_tau": tau, **record}


def _train_cnn(model, params: Params, data: PreparedData, weights: dict | None, live=None,
               strategy=None) -> PhaseResult:
    t = params.train
    if params.model_params.augment.enabled:
        log.info(f"augmentation on: {augment_summary(params.model_params.augment)}")
    train, val = image_datasets(params, data, t.batch_size * replicas(strategy))
    return fit_phase("train", model, train, val, class_weight=weights, strategy=strategy,
                     **training_args(t, params.seed, live))


def _without_optimizer(model):
    """An uncompiled copy with the same weights: the saved file carries no optimizer state (after
    fine-tuning, Adam's moments for the backbone would add ~100 MB)."""
    import keras

    if getattr(model, "optimizer", None) is None:
        return model
    copy = keras.Model.from_config(model.get_config())  # clone_model would copy the compile state
    copy.set_weights(model.get_weights())
    return copy


def history_rows(phases: list[PhaseResult]) -> list[dict]:
    """One row per epoch; epochs continue across phases, `phase` names each row's phase."""
    rows = []
    for phase in phases:
        for i in range(phase.epochs_run):
            rows.append({"epoch": len(rows) + 1, "phase": phase.name,
                         **{k: float(phase.history[k][i]) for k in METRIC_COLUMNS}})
    return rows


def _summary(history: list[dict], phases: list[PhaseResult], es: EarlyStoppingParams) -> dict:
    winner = best_phase(phases, es.monitor)  # the phase whose best weights are kept (ResNet50)
    best = sum(phase.epochs_run for phase in phases[:winner]) + phases[winner].best_epoch
    summary = {
        "epochs_run": len(history),
        "best_epoch": best + 1,
        "stopped_early": any(phase.stopped_early for phase in phases),
        "best_val_loss": history[best]["val_loss"],
        "best_val_accuracy": history[best]["val_accuracy"],
        "train_seconds": round(sum(phase.seconds for phase in phases), 1),
    }
    if phases[0].name != "train":  # ResNet50 (head, fine_tune): per-phase figures
        summary["best_phase"] = history[best]["phase"]
        summary.update({f"{phase.name}_epochs_run": phase.epochs_run for phase in phases})
        for phase in phases:
            summary.update(phase.notes)
    return summary


def model_metadata(params: Params, data: PreparedData, summary: dict) -> dict:
    """What `predict`, `evaluate` and `info` need to know about a saved model."""
    return {
        "format": FORMAT,
        "model": params.model,
        "classes": data.class_names,
        "image_size": data.image_size,
        "dataset": data.dataset,
        # what `evaluate` scored; every user runs the same (inference.predict_probabilities' keywords)
        "inference": {"tta": params.evaluate.tta, "temperature": summary.get("temperature", 1.0),
                      **summary.get("decision", {})},  # ood and uncertain thresholds (model/decision.py)
        "params_hash": params_hash(params),
        "params": asdict(params),
        "train_summary": summary,
        **_clinical_record(params, summary),
    }


def _clinical_record(params: Params, summary: dict) -> dict:
    """The clinical inputs, the CSV columns they were trained from (`skinsage predict --clinical`
    accepts those names) and their fitted encoding; nothing for an image-only model."""
    fields = list(params.model_params.clinical or ())
    if not fields:
        return {}
    columns = params.data.csv.clinical.columns() if params.data.csv.clinical else {}
    return {"clinical": {"inputs": fields, "columns": {name: columns.get(name, name) for name in fields},
                         "encoding": summary.get("clinical_encoding", {})}}
