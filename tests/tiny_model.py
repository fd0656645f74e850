"""Shared by test_predict.py and test_cli.py: a tiny random-weight model saved exactly as `train`
saves it (real metadata), and generated image files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from skinsage.model.model_file import save_model
from skinsage.params import load_params
from skinsage.prepared import PreparedData
from skinsage.train.trainer import model_metadata

ROOT = Path(__file__).resolve().parents[1]
SIZE = 16
CLASSES = ["benign keratosis", "melanocytic nevi", "melanoma"]
# what `train` records (model/referral.py); a random-weight model gives melanoma 0.42-0.45 on noise, so some
# images are referred and some are not
REFERRAL = {"classes": ["melanoma"], "threshold": 0.435, "target_sensitivity": 0.95, "fitted_on": "validation"}
RED, BLUE = (220, 30, 30), (30, 30, 220)


def tiny_params(size: int = SIZE, **overrides):
    values = {"model": "cnn", "models.cnn.image_size": size, "models.cnn.filters": [4, 8],
              "models.cnn.dense_units": 8, "data.workers": 1, **overrides}
    return load_params(ROOT / "params.yaml", overrides=values)


def save_tiny_model(path: Path, classes=CLASSES, seed: int = 0, size: int = SIZE, model=None,
                    referral: dict | None = REFERRAL, detector: bool = True) -> Path:
    """`model`: a CNN built from tiny_params(size) (e.g. trained); default a random-weight one.
    `referral`: the recorded operating point (None: a file from before referral existed).
    `detector`: fit train's out-of-distribution detector and thresholds (on `lesion_like` images),
    as `train` does; False = a model file from before the detector."""
    import keras

    from skinsage.model.architectures import build_cnn
    from skinsage.prepared import Split
    from skinsage.train.trainer import _fit_decision

    params = tiny_params(size)
    if model is None:
        keras.utils.set_random_seed(seed)
        model = build_cnn(len(classes), params.model_params)
    splits = {name: Split(images=lesion_like(n, size, seed=i), labels=np.arange(n) % len(classes))
              for i, (name, n) in enumerate((("train", 60), ("val", 40)))}
    data = PreparedData(class_names=list(classes), dataset="generated test images", image_size=size,
                        splits=splits)
    summary = {"epochs_run": 1, "best_epoch": 1, "stopped_early": False, "best_val_loss": 1.1,
               "best_val_accuracy": 0.4, "train_seconds": 0.1}
    if detector:
        model, decision = _fit_decision(model, params, data, 1.0)
        summary.update(decision)
    metadata = model_metadata(params, data, summary)
    if referral is not None and all(name in classes for name in referral["classes"]):
        metadata["referral"] = referral
    save_model(model, path, metadata)
    return path


def lesion_like(count: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """(count, size, size, 3) uint8 "lesions": a dark brown blob on skin tone, a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    out = np.empty((count, size, size, 3), np.uint8)
    for i in range(count):
        r = rng.uniform(0.15, 0.3)
        blob = ((yy - rng.uniform(-0.1, 0.1)) ** 2 + (xx - rng.uniform(-0.1, 0.1)) ** 2) < r * r
        skin = np.array([225, 180, 150]) + rng.normal(0, 8, 3)
        image = np.where(blob[..., None], skin * rng.uniform(0.3, 0.6), skin) + rng.normal(0, 6, (size, size, 3))
        out[i] = np.clip(image, 0, 255)
    return out


def noise(seed: int, shape=(24, 30, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def save(image: Image.Image, path: Path, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def exif_rotated(path: Path, seed: int | None = None) -> Path:
    """Stored landscape, red left / blue right, EXIF orientation 6: displayed rotated 90° clockwise."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20], pixels[:, 20:] = RED, BLUE
    if seed is not None:  # a little noise makes each copy distinct
        pixels = np.clip(pixels.astype(int) + noise(seed, pixels.shape) // 16, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6
    return save(image, path, exif=exif, quality=95)


def truncated_jpeg(path: Path) -> Path:
    data = save(Image.fromarray(noise(9, (64, 64, 3))), path, quality=90).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path
