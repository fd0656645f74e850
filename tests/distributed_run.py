"""Run train_model on separable synthetic images in a fresh process and print its accuracies as JSON.

A separate process because the device set-up must come before TensorFlow initialises:
    python tests/distributed_run.py MODE [LOGICAL_CPUS [MODEL]]
MODE is train.distribute (none | mirrored | ...); LOGICAL_CPUS > 1 splits the CPU into that many
logical devices (what MirroredStrategy then mirrors over); MODEL cnn (default) or resnet50 (32 px,
random init: the cached-feature head phase and one fine-tuning epoch)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Tiny CNN, a constant learning rate, a fixed number of epochs (no early stopping before the end).
OVERRIDES = {
    "model": "cnn", "models.cnn.image_size": 16, "models.cnn.filters": [8], "models.cnn.dense_units": 16,
    "models.cnn.dropout": 0.0, "train.epochs": 8, "train.batch_size": 16, "train.class_weight": "none",
    "train.lr_schedule": "constant", "train.label_smoothing": 0.0, "train.logit_adjustment.tau": None,
    "train.early_stopping.start_from_epoch": 8, "train.mixed_precision": "off",
    **{f"models.cnn.augment.{k}": v for k, v in
       {"flip": False, "rotate90": False, "rotation": 0, "zoom": 0.0, "brightness": 0.0, "contrast": 0.0}.items()},
}


RESNET50 = {"model": "resnet50", "models.resnet50.image_size": 32, "models.resnet50.weights": None,
            "models.resnet50.dense_units": 16, "train.epochs": 2, "train.early_stopping.start_from_epoch": 2,
            "models.resnet50.fine_tune.epochs": 1,
            "train.ema": 0.0}  # two epochs: a weight average would still carry the initial weights


def separable_data(n_train: int = 128, n_val: int = 64, size: int = 16):
    """Two classes told apart by brightness (class 1 is noise at a quarter of the range)."""
    from skinsage.prepared import PreparedData, Split

    rng = np.random.default_rng(0)

    def split(n):
        labels = np.arange(n, dtype=np.int64) % 2
        x = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
        x[labels == 1] //= 4
        return Split(x, labels)
    return PreparedData(["bright", "dark"], "generated", size, {"train": split(n_train), "val": split(n_val)})


def main(mode: str, logical_cpus: int = 1, model: str = "cnn") -> None:
    import tensorflow as tf

    if logical_cpus > 1:  # before anything initialises TensorFlow's devices
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * logical_cpus)
    from skinsage.model.inference import predict_probabilities
    from skinsage.params import load_params
    from skinsage.train.trainer import train_model

    resnet = model == "resnet50"
    params = load_params(ROOT / "params.yaml", overrides={
        **OVERRIDES, **(RESNET50 if resnet else {}), "train.distribute": mode})
    data = separable_data(64, 32, 32) if resnet else separable_data()
    model, history, summary = train_model(params, data)
    val = data.splits["val"]
    probs = predict_probabilities(model, val.images, 64)
    print("RESULT " + json.dumps({
        "mode": mode, "replicas": summary.get("replicas", 1), "epochs_run": summary["epochs_run"],
        "feature_caching": summary.get("feature_caching"), "phases": sorted({row["phase"] for row in history}),
        "val_accuracy": float((probs.argmax(1) == val.labels).mean()),
        "final_train_loss": history[-1]["loss"]}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1, *sys.argv[3:4])
