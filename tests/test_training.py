"""Training knobs shared by both models: class weights, augmentation, the phased history, params;
and one real `dvc exp run` of the ResNet50 path."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from skinsage.params import ParamsError, load_params
from skinsage.prepared import PreparedData, Split
from skinsage.train import augment
from skinsage.train import trainer as training
from skinsage.contracts.history import read_history
from skinsage.train.phase import class_weights

ROOT = Path(__file__).resolve().parents[1]
AUG_OFF = {"flip": False, "rotate90": False, "rotation": 0, "zoom": 0.0, "brightness": 0.0, "contrast": 0.0}


def params(**overrides):
    return load_params(ROOT / "params.yaml", overrides=overrides)


def augment_params(**on):
    return params(**{f"models.cnn.augment.{k}": v for k, v in {**AUG_OFF, **on}.items()}).models.cnn.augment


def batches(images: np.ndarray, p, seed: int = 0, epochs: int = 1) -> list[np.ndarray]:
    ds = tf.data.Dataset.from_tensor_slices((images, np.arange(len(images)))).batch(4)
    ds = augment.augment_dataset(ds, p, seed)
    out = []
    for _ in range(epochs):
        x, y = zip(*[(a.numpy(), b.numpy()) for a, b in ds])
        assert np.array_equal(np.concatenate(y), np.arange(len(images)))  # labels untouched, in order
        out.append(np.concatenate(x))
    return out


def noise(n: int = 8, size: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def dihedral(image: np.ndarray) -> list[np.ndarray]:
    """The 8 flips/rotations of a square image."""
    rotations = [np.rot90(image, k) for k in range(4)]
    return rotations + [np.fliplr(r) for r in rotations]


# --- class weights ---------------------------------------------------------------------------

def test_balanced_class_weights_are_scikit_learns():
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.array([0] * 67 + [1] * 11 + [2] * 22)
    weights = class_weights(labels, "balanced")
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    assert list(weights) == [0, 1, 2]
    np.testing.assert_allclose(list(weights.values()), expected)
    np.testing.assert_allclose(weights[1], 100 / (3 * 11))
    assert class_weights(labels, "none") is None


def tiny_cnn_data(labels_train) -> PreparedData:
    rng = np.random.default_rng(0)

    def split(labels):
        labels = np.asarray(labels, np.int64)
        x = rng.integers(0, 256, (len(labels), 16, 16, 3), dtype=np.uint8)
        x[labels == 1] //= 4
        return Split(x, labels)
    return PreparedData(["a", "b"], "generated", 16, {"train": split(labels_train), "val": split([0, 0, 1, 1])})


CNN = {"model": "cnn", "models.cnn.image_size": 16, "models.cnn.filters": [4], "models.cnn.dense_units": 8,
       "train.epochs": 1, "train.batch_size": 8, "train.class_weight": "none",
       "train.logit_adjustment.tau": None, **{f"models.cnn.augment.{k}": v for k, v in AUG_OFF.items()}}


def test_cnn_gets_class_weights_and_augmentation_when_asked(monkeypatch, capsys):
    seen = {}
    fit_phase, augment_dataset = training.fit_phase, augment.augment_dataset

    def spy_fit(*args, **kwargs):
        seen["class_weight"] = kwargs["class_weight"]
        return fit_phase(*args, **kwargs)

    def spy_augment(ds, p, seed):
        seen["augment"] = (p.flip, p.rotate90, seed)
        return augment_dataset(ds, p, seed)
    monkeypatch.setattr(training, "fit_phase", spy_fit)
    monkeypatch.setattr(augment, "augment_dataset", spy_augment)
    data = tiny_cnn_data([0] * 12 + [1] * 4)

    _, _, plain = training.train_model(params(**CNN), data)
    assert seen["class_weight"] is None and seen["augment"] == (False, False, 42)
    _, history, weighted = training.train_model(
        params(**{**CNN, "train.class_weight": "balanced", "models.cnn.augment.flip": True}), data)
    assert seen["class_weight"] == {0: 16 / 24, 1: 16 / 8} and seen["augment"] == (True, False, 42)
    assert "class weights (balanced): a 0.667, b 2.000" in capsys.readouterr().out
    assert [row["phase"] for row in history] == ["train"]
    assert set(weighted) == set(plain) == {"epochs_run", "best_epoch", "stopped_early", "best_val_loss",
                                           "best_val_accuracy", "train_seconds",  # the CNN's summary
                                           "temperature", "val_loss_before_temperature",
                                           "val_loss_after_temperature",  # train.temperature: auto
                                           "decision"}  # train.ood / train.uncertain thresholds


# --- augmentation ----------------------------------------------------------------------------

def test_no_augmentation_leaves_the_dataset_alone():
    ds = tf.data.Dataset.from_tensor_slices((noise(), np.arange(8))).batch(4)
    p = augment_params()
    assert not p.enabled and augment.augment_dataset(ds, p, 0) is ds


def test_flips_and_rotations_are_exact_new_each_epoch_and_seeded():
    images = noise(n=16)
    p = augment_params(flip=True, rotate90=True)
    first, second = batches(images, p, seed=3, epochs=2)
    assert first.dtype == np.uint8 and first.shape == images.shape
    for original, a, b in zip(images, first, second):  # lossless: one of the 8 orientations
        assert any(np.array_equal(a, d) for d in dihedral(original))
        assert any(np.array_equal(b, d) for d in dihedral(original))
    assert not np.array_equal(first, second)  # new draws every epoch
    assert not all(np.array_equal(a, o) for a, o in zip(first, images))
    again = batches(images, p, seed=3, epochs=2)
    assert np.array_equal(again[0], first) and np.array_equal(again[1], second)  # same seed, same draws
    assert not np.array_equal(batches(images, p, seed=4)[0], first)


def test_rotate90_alone_rotates_without_flipping():
    images = noise(n=16)
    (out,) = batches(images, augment_params(rotate90=True), seed=1)
    turns = [next(k for k in range(4) if np.array_equal(o, np.rot90(i, k))) for i, o in zip(images, out)]
    assert len(set(turns)) > 1
    assert np.array_equal(augment.RandomRotate90(seed=0)(images, training=False), images)


def test_brightness_and_contrast_jitter_stays_small_and_in_range():
    images = np.full((16, 6, 6, 3), 128, np.uint8)
    images[:, :3] = 100
    (bright,) = batches(images, augment_params(brightness=0.1), seed=0)
    shift = bright.astype(float).mean(axis=(1, 2, 3)) - images.astype(float).mean(axis=(1, 2, 3))
    assert bright.dtype == np.uint8 and np.abs(shift).max() <= 0.1 * 255 + 1 and np.abs(shift).max() > 0
    (contrast,) = batches(images, augment_params(contrast=0.2), seed=0)
    spread = contrast[:, 3:].astype(float).mean(axis=(1, 2, 3)) - contrast[:, :3].astype(float).mean(axis=(1, 2, 3))
    assert np.all((spread >= 28 * 0.8 - 1) & (spread <= 28 * 1.2 + 1)) and len(set(spread.round(3))) > 1


def test_zoom_only_magnifies_and_keeps_the_frame_filled():
    images = np.zeros((16, 32, 32, 3), np.uint8)
    images[:, 8:24, 8:24] = 255  # a white square filling the middle half of each side
    (zoomed,) = batches(images, augment_params(zoom=0.4), seed=0)
    white = (zoomed[..., 0] > 127).mean(axis=(1, 2))
    assert zoomed.dtype == np.uint8 and zoomed.shape == images.shape
    assert np.all(white >= 0.25 - 0.02)  # zooming in only: the square never shrinks
    assert np.all(white <= (0.5 / 0.6) ** 2 + 0.03)  # at most 1 / (1 - 0.4) times the side
    assert len(set(white.round(3))) > 4  # a new factor per image
    assert np.array_equal(batches(images, augment_params(zoom=0.4), seed=0)[0], zoomed)


def orientation_degrees(image: np.ndarray) -> float:
    """Angle of the main axis of the bright pixels, from their second moments."""
    ys, xs = np.nonzero(image[..., 0] > 127)
    cov = np.cov(np.stack([xs, -ys]))
    return float(np.degrees(0.5 * np.arctan2(2 * cov[0, 1], cov[0, 0] - cov[1, 1])))


def test_rotation_stays_within_its_angle_and_reflects_the_borders():
    bar = np.zeros((32, 32, 32, 3), np.uint8)
    bar[:, 15:17, 4:28] = 255  # a horizontal bar through the centre
    (turned,) = batches(bar, augment_params(rotation=20), seed=0)
    angles = np.array([orientation_degrees(t) for t in turned])
    assert np.abs(angles).max() <= 20 + 3 and np.abs(angles).max() > 5 and (angles < 0).any() and (angles > 0).any()
    flat = np.full((4, 16, 16, 3), 90, np.uint8)
    (still_flat,) = batches(flat, augment_params(rotation=45, zoom=0.3), seed=0)
    assert np.all(np.abs(still_flat.astype(int) - 90) <= 1)  # no black corners: borders are reflected


# --- history and params ----------------------------------------------------------------------

def test_dvclive_gets_every_epoch_while_training_runs(tmp_path):
    """The history comes from dvclive's files, and dvclive/metrics.json (what `dvc exp show` reads)
    is rewritten at the end of every epoch, not only when the stage ends."""
    import keras
    from dvclive import Live

    seen_live = []

    class ReadLiveFile(keras.callbacks.Callback):  # runs after the logger, like a user's `dvc exp show`
        def on_epoch_end(self, epoch, logs=None):
            seen_live.append(json.loads((tmp_path / "dvclive" / "metrics.json").read_text()))

    real_fit = keras.Model.fit

    def fit_and_watch(self, *args, callbacks=(), **kwargs):
        return real_fit(self, *args, callbacks=[*callbacks, ReadLiveFile()], **kwargs)

    data = tiny_cnn_data([0] * 12 + [1] * 12)
    with pytest.MonkeyPatch.context() as patch, Live(str(tmp_path / "dvclive"), dvcyaml=None,
                                                      save_dvc_exp=False) as live:
        patch.setattr(keras.Model, "fit", fit_and_watch)
        _, history, _ = training.train_model(params(**{**CNN, "train.epochs": 3}), data, live=live)
    assert [entry["step"] for entry in seen_live] == [0, 1, 2]  # one update per epoch, mid-run
    assert [entry["eval"]["loss"] for entry in seen_live] == pytest.approx([row["val_loss"] for row in history])
    logged = read_history(tmp_path / "dvclive")
    assert [row["epoch"] for row in logged] == [1, 2, 3] and {row["phase"] for row in logged} == {"train"}
    for ours, keras_row in zip(logged, history):
        assert all(ours[key] == pytest.approx(keras_row[key]) for key in ("loss", "accuracy", "val_loss",
                                                                          "val_accuracy"))


def test_defaults_and_bad_values_are_explained():
    p = params()
    assert p.models.cnn.augment.enabled and not p.models.resnet50.augment.enabled  # ResNet50 keeps feature caching
    assert p.models.resnet50.fine_tune.epochs == 0 and p.models.resnet50.image_size == 224
    assert params(**{"models.resnet50.fine_tune.unfreeze": 3}).models.resnet50.fine_tune.unfreeze == "3"
    bad = {"models.resnet50.fine_tune.unfreeze": 17, "models.resnet50.fine_tune.epochs": -1,
           "models.resnet50.fine_tune.learning_rate": 0, "models.cnn.augment.brightness": 1.0,
           "models.cnn.augment.rotation": 200,
           "models.cnn.augment.zoom": 1.0,
           "models.resnet50.augment.contrast": -0.1, "train.class_weight": "balance", "models.resnet50.image_size": 16}
    for key, value in bad.items():
        with pytest.raises(ParamsError, match=key.split(".", 1)[1] if key != "train.class_weight" else "balanced"):
            params(**{key: value})


# --- the real pipeline -----------------------------------------------------------------------

@pytest.mark.e2e
def test_dvc_exp_run_trains_resnet50_at_32px(tmp_path):
    from dvc_project import copy_project, dvc

    project = copy_project(tmp_path / "project", {"data.workers": 1, "evaluate.bootstrap": 20})
    result = dvc(project, "exp", "run", "-S", "data.source=synthetic", "-S", "model=resnet50",
                 "-S", "models.resnet50.weights=null", "-S", "models.resnet50.image_size=32",
                 "-S", "train.epochs=1", "-S", "data.synthetic.images_per_class=12")
    for stage in ("prepare", "train", "evaluate"):
        assert f"Running stage '{stage}'" in result.stdout
    assert "feature caching: backbone features of" in result.stdout
    train = json.loads((project / "metrics" / "train_full.json").read_text())
    assert train["epochs_run"] == 1 and train["feature_caching"] is True and train["best_phase"] == "head"
    history = read_history(project / "dvclive")
    assert [(row["epoch"], row["phase"]) for row in history] == [(1, "head")]
    evaluation = json.loads((project / "metrics" / "eval.json").read_text())
    assert 0 <= evaluation["accuracy"] <= 1 and evaluation["loss"] > 0

    from skinsage.model.model_file import load_model
    model, metadata = load_model(project / "models" / "model.keras")
    assert {"classes", "image_size", "model", "dataset", "params_hash", "params", "train_summary"} <= set(metadata)
    assert metadata["model"] == "resnet50" and metadata["image_size"] == 32 and len(metadata["classes"]) == 4
    assert model.input.shape == (None, 32, 32, 3)
    # the class probabilities and the out-of-distribution detector's ood_score, fitted by `train`
    assert [tuple(t.shape) for t in model.outputs] == [(None, 4), (None,)]
    ood = metadata["inference"]["ood"]
    retain = load_params(ROOT / "params.yaml").train.ood.retain
    assert ood["method"] == "feature_stats" and ood["retain"] == retain and ood["threshold"] > 0
    full = json.loads((project / "metrics" / "eval_full.json").read_text())
    assert full["decision"]["ood"] == ood and full["share_ok"] + full["share_uncertain"] + \
        full["share_out_of_distribution"] == pytest.approx(1)
    with open(project / "metrics" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {row["status"] for row in rows} <= {"ok", "uncertain", "out_of_distribution"}
    assert all(row["ood_score"] != "" for row in rows)


# --- the seed-robust recipe: weight averaging, temperature (issue #19) -------------------------

def _val_loss(model, split: Split) -> float:
    outputs = model.predict_on_batch(split.images)  # [probabilities, ood_score] with the detector
    probs = np.asarray(outputs[0] if isinstance(outputs, list) else outputs, dtype=np.float64)
    return float(-np.mean(np.log(probs[np.arange(len(split.labels)), split.labels])))


@pytest.mark.parametrize("restore,patience", [(True, 15), (False, 15), (True, 0), (False, 0)])
def test_the_averaged_weights_are_validated_and_kept(restore, patience):
    """With train.ema the logged validation loss is the averaged weights' and the model returned is
    them: evaluating it again gives the logged loss of the kept epoch (the raw weights would not),
    whether the run goes to its end (patience 15) or early stopping ends it (patience 0)."""
    data = tiny_cnn_data([0] * 24 + [1] * 24)
    common = {**CNN, "train.epochs": 6, "train.label_smoothing": 0.0, "train.temperature": None,
              "train.early_stopping.start_from_epoch": 0, "train.early_stopping.patience": patience,
              "train.early_stopping.restore_best_weights": restore,
              # 4 validation images: their accuracy stops improving at once, so patience 0 stops early
              "train.early_stopping.monitor": "val_accuracy" if patience == 0 else "val_loss"}
    for ema in (0.9, 0.0):
        model, history, summary = training.train_model(params(**common, **{"train.ema": ema}), data)
        assert summary["stopped_early"] == (patience == 0)
        kept = summary["best_epoch"] if restore else summary["epochs_run"]
        logged = history[kept - 1]["val_loss"]
        assert _val_loss(model, data.splits["val"]) == pytest.approx(logged, abs=1e-5)


def test_ema_changes_the_weights_that_are_kept():
    data = tiny_cnn_data([0] * 24 + [1] * 24)
    common = {**CNN, "train.epochs": 4, "train.temperature": None}
    plain, _, _ = training.train_model(params(**common), data)
    averaged, _, _ = training.train_model(params(**common, **{"train.ema": 0.9}), data)
    difference = max(np.abs(a - b).max() for a, b in zip(plain.get_weights(), averaged.get_weights()))
    assert difference > 1e-4


def test_temperature_is_fitted_on_validation_and_recorded_for_inference():
    data = tiny_cnn_data([0] * 24 + [1] * 24)
    model, _, summary = training.train_model(params(**{**CNN, "train.epochs": 3}), data)
    assert 0.05 <= summary["temperature"] <= 20
    assert summary["val_loss_after_temperature"] <= summary["val_loss_before_temperature"]
    metadata = training.model_metadata(params(**CNN), data, summary)
    assert metadata["inference"]["temperature"] == summary["temperature"]
    fixed = training.train_model(params(**{**CNN, "train.temperature": 1.5}), data)[2]
    assert fixed["temperature"] == 1.5 and "val_loss_before_temperature" not in fixed
    assert "temperature" not in training.train_model(params(**{**CNN, "train.temperature": None}), data)[2]


def test_the_average_spans_at_most_two_epochs():
    from skinsage.train.phase import averaging_momentum

    assert averaging_momentum(0.99, 94) == 0.99  # HAM10000 at batch 64: as set
    assert averaging_momentum(0.99, 7) == pytest.approx(1 - 1 / 14)  # 7 batches: ~2 epochs
    assert averaging_momentum(0.5, 7) == 0.5
