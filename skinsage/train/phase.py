"""One training phase: compile, fit with early stopping, keep what the history and summary need."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from ..params import EarlyStoppingParams, TrainParams

log = logging.getLogger(__name__)


@dataclass
class PhaseResult:
    name: str                 # "train" (the CNN), "head" (frozen backbone) or "fine_tune"
    history: dict             # Keras History.history: metric -> one value per epoch
    stopped_early: bool
    seconds: float
    # the phase's best epoch (0-based) as Keras' EarlyStopping tracked it (from start_from_epoch on):
    # the one source of the best epoch (trainer's summary, train_full.json, the plots read it)
    best_epoch: int
    notes: dict = field(default_factory=dict)  # extra summary entries, e.g. feature caching

    @property
    def epochs_run(self) -> int:
        return len(self.history["loss"])

    def best_value(self, monitor: str) -> float:
        return self.history[monitor][self.best_epoch]


def fit_phase(name: str, model, train, val, *, epochs: int, learning_rate: float,
              early_stopping: EarlyStoppingParams, class_weight: dict | None,
              optimizer: str = "adam", weight_decay: float = 0.0, lr_schedule: str = "constant",
              loss: str = "cross_entropy", label_smoothing: float = 0.0, mixup: float = 0.0,
              ema: float = 0.0, seed: int = 0, live=None, strategy=None) -> PhaseResult:
    """Adam(W) + cross-entropy (sparse labels unless smoothing, focal loss or mixup need one-hot
    ones); early stopping restores the phase's best weights if asked. With `ema` > 0 the optimizer
    keeps a moving average of the weights, and that average is what is validated, early-stopped,
    restored and kept (Polyak averaging: one noisy epoch no longer decides). With a dvclive `live`, every
    epoch is logged as it ends. With a tf.distribute `strategy`, compile and fit run in its scope
    (the model must have been built in it too)."""
    import keras

    from .distribute import patch_symbolic_build, scope

    batches = _batches_per_epoch(train)
    steps = epochs * batches
    momentum = adapt_batch_norm_momentum(model, batches * max(1, min(early_stopping.start_from_epoch, epochs)))
    if momentum is not None and momentum < DEFAULT_BN_MOMENTUM:
        log.info(f"BatchNorm momentum {momentum:.3f} (Keras' 0.99 would still carry its initial statistics "
                 f"when early stopping starts: {batches} batches per epoch)")
    if ema > 0 and (capped := averaging_momentum(ema, batches)) < ema:
        log.info(f"weight average momentum {capped:.3f} instead of train.ema {ema:g}: at most two epochs "
                 f"({batches} batches each) averaged")
        ema = capped
    loss_fn = "sparse_categorical_crossentropy"
    if loss != "cross_entropy" or label_smoothing > 0 or mixup > 0:
        from .augment import mixup_dataset, one_hot_dataset

        classes = model.output_shape[-1]
        train, val = one_hot_dataset(train, classes), one_hot_dataset(val, classes)
        if mixup > 0:
            train = mixup_dataset(train, mixup, seed)
        kind = keras.losses.CategoricalFocalCrossentropy if loss == "focal" else keras.losses.CategoricalCrossentropy
        loss_fn = kind(label_smoothing=label_smoothing)
    patch_symbolic_build(model, strategy)
    with scope(strategy):  # the optimizer's slots become mirrored variables too
        model.compile(optimizer=make_optimizer(optimizer, learning_rate, weight_decay, lr_schedule, steps, ema),
                      loss=loss_fn, metrics=["accuracy"])
    stopper = keras.callbacks.EarlyStopping(
        monitor=early_stopping.monitor, patience=early_stopping.patience,
        start_from_epoch=min(early_stopping.start_from_epoch, max(epochs - 1, 0)),  # the last epoch is always tracked
        restore_best_weights=early_stopping.restore_best_weights, verbose=1)
    # first: at each epoch's end the averaged weights are swapped in before early stopping sees (and
    # keeps) them; they are swapped out again while the next epoch trains
    callbacks = [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if ema > 0 else []
    callbacks.append(stopper)
    if ema > 0 and not early_stopping.restore_best_weights:
        callbacks.append(keep_averaged_weights_on_stop())
    if live is not None:
        from .history import epoch_logger

        callbacks.append(epoch_logger(live, name))
    start = time.perf_counter()
    with scope(strategy):
        fit = model.fit(train, validation_data=val, epochs=epochs, callbacks=callbacks,
                        class_weight=class_weight, shuffle=False, verbose=2)  # tf.data shuffles
    return PhaseResult(name, fit.history, bool(stopper.stopped_epoch), time.perf_counter() - start,
                       best_epoch=stopper.best_epoch)


def keep_averaged_weights_on_stop():
    """A callback for weight averaging without restore_best_weights: when early stopping ends the
    run before its last epoch, Keras' final `finalize_variable_values` would put the raw weights back
    (SwapEMAWeights only prepares the last planned epoch), so the averaged weights in the model at
    that epoch's end are kept and set again when training ends."""
    import keras

    class KeepAveragedWeights(keras.callbacks.Callback):
        weights = None

        def on_epoch_end(self, epoch, logs=None):
            if self.model.stop_training:  # set by EarlyStopping, which runs before this callback
                self.weights = self.model.get_weights()

        def on_train_end(self, logs=None):
            if self.weights is not None:
                self.model.set_weights(self.weights)

    return KeepAveragedWeights()


def training_args(t: TrainParams, seed: int, live=None) -> dict:
    """fit_phase's keyword arguments from `train` params (class weights aside)."""
    return dict(seed=seed, live=live, epochs=t.epochs, learning_rate=t.learning_rate, early_stopping=t.early_stopping,
                optimizer=t.optimizer, weight_decay=t.weight_decay, lr_schedule=t.lr_schedule,
                loss=t.loss, label_smoothing=t.label_smoothing, mixup=t.mixup, ema=t.ema)


DEFAULT_BN_MOMENTUM = 0.99


def adapt_batch_norm_momentum(model, steps: int) -> float | None:
    """Set the momentum of the trainable BatchNorm layers so that their initial moving statistics
    (mean 0, variance 1) weigh less than 1e-4 after `steps` updates, within [0.9, 0.99].

    Keras' 0.99 needs ~900 updates for that. A small dataset (a few batches per epoch) would
    otherwise validate for dozens of epochs with statistics that are mostly the initial ones, and
    early stopping would judge a model that is fine in training mode by its broken inference mode.
    Datasets with enough batches keep 0.99 exactly. The value is returned (None: no such layers)."""
    import keras

    layers = [layer for layer in model.layers
              if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
    if not layers:
        return None
    momentum = float(np.clip(1e-4 ** (1 / max(1, steps)), 0.9, DEFAULT_BN_MOMENTUM))
    for layer in layers:
        layer.momentum = momentum
    return momentum


def averaging_momentum(ema: float, batches: int) -> float:
    """`ema`, capped so the average spans at most ~2 epochs (1 - 1/(2 * batches)). Keras' average
    starts at the initial weights without bias correction: on a small dataset 0.99 (~100 steps)
    would carry them, and the weights of many epochs ago, into every validation."""
    return min(ema, 1 - 1 / (2 * max(1, batches)))


def _batches_per_epoch(ds) -> int:
    count = int(ds.cardinality().numpy())
    return count if count > 0 else sum(1 for _ in ds)  # unknown cardinality: count once


def make_optimizer(name: str, learning_rate: float, weight_decay: float, schedule: str, total_steps: int,
                   ema: float = 0.0):
    """Adam or AdamW; `cosine` decays the learning rate to 0 over all steps of `epochs`; `ema` > 0
    keeps a moving average of the weights with that momentum (swapped in by SwapEMAWeights)."""
    import keras

    rate = learning_rate
    if schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(1, int(total_steps)))
    averaging = dict(use_ema=True, ema_momentum=ema) if ema > 0 else {}
    if name == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=weight_decay, **averaging)
    return keras.optimizers.Adam(rate, **averaging)


def is_better(value: float, than: float, monitor: str) -> bool:
    return value < than if monitor.endswith("loss") else value > than


def best_phase(phases: list[PhaseResult], monitor: str) -> int:
    """The index of the phase whose best epoch wins on `monitor`: a later phase only when strictly
    better (a tie or a NaN keeps the earlier one). ResNet50 keeps that phase's weights."""
    best = 0
    for i, phase in enumerate(phases[1:], start=1):
        if is_better(phase.best_value(monitor), phases[best].best_value(monitor), monitor):
            best = i
    return best


def class_weights(labels: np.ndarray, mode: str) -> dict[int, float] | None:
    """`balanced`: n_samples / (n_classes * count), scikit-learn's rule, over the classes present;
    `sqrt`: the square root of that."""
    if mode == "none":
        return None
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    if mode == "sqrt":  # halfway (in log terms) between no weighting and balanced
        weights = np.sqrt(weights)
    return {int(c): float(w) for c, w in zip(present, weights)}
