"""Training: one seed for everything, tf.data input, early stopping, a history per epoch."""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from dataclasses import asdict

import numpy as np

from .dataset import PreparedData, tf_dataset
from .history import HISTORY_COLUMNS
from .params import Params




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


def train_model(params: Params, data: PreparedData):
    """Build and fit the selected model; returns (model, history rows, summary dict)."""
    import keras

    from .models import build_model

    seed_everything(params.seed)
    t = params.train
    model = build_model(params.model, len(data.class_names), params.model_params)
    model.compile(optimizer=keras.optimizers.Adam(t.learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    train = tf_dataset(data.splits["train"], t.batch_size, shuffle=True, seed=params.seed)
    val = tf_dataset(data.splits["val"], t.batch_size)
    stopper = keras.callbacks.EarlyStopping(
        monitor=t.early_stopping.monitor, patience=t.early_stopping.patience,
        restore_best_weights=t.early_stopping.restore_best_weights, verbose=1)
    start = time.perf_counter()
    fit = model.fit(train, validation_data=val, epochs=t.epochs, callbacks=[stopper], verbose=2)
    seconds = time.perf_counter() - start
    history = _history_rows(fit.history)
    summary = _summary(history, stopper, t.early_stopping.monitor, seconds)
    return model, history, summary


def _history_rows(history: dict) -> list[dict]:
    epochs = len(history["loss"])
    return [{"epoch": i + 1, **{k: float(history[k][i]) for k in HISTORY_COLUMNS[1:]}}
            for i in range(epochs)]


def _summary(history: list[dict], stopper, monitor: str, seconds: float) -> dict:
    values = [row[monitor] for row in history]
    best = int(np.argmin(values) if monitor.endswith("loss") else np.argmax(values))
    return {
        "epochs_run": len(history),
        "best_epoch": best + 1,
        "stopped_early": bool(stopper.stopped_epoch),
        "best_val_loss": history[best]["val_loss"],
        "best_val_accuracy": history[best]["val_accuracy"],
        "train_seconds": round(seconds, 1),
    }


def model_metadata(params: Params, data: PreparedData, summary: dict) -> dict:
    """What `predict`, `evaluate` and `info` need to know about a saved model."""
    return {
        "format": "skinsage-model/1",
        "model": params.model,
        "classes": data.class_names,
        "image_size": data.image_size,
        "dataset": data.dataset,
        "params_hash": params_hash(params),
        "params": asdict(params),
        "train_summary": summary,
    }
