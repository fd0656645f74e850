"""ResNet50 transfer learning: the builder, weights sources and their errors, preprocessing inside
the model, frozen/unfrozen layers per phase, feature caching. 32 px, random weights, tiny data."""

from __future__ import annotations

import socket
from pathlib import Path

import keras
import numpy as np
import pytest

from skinsage.model.architectures import RESNET50_WEIGHTS_FILE, ModelError, build_resnet50
from skinsage.model.decision import OK, OUT_OF_DISTRIBUTION, STATUSES, statuses
from skinsage.model.inference import predict_outputs
from skinsage.model.model_file import decision_settings, inference_settings, load_model, save_model
from skinsage.model.ood import OOD_OUTPUT
from skinsage.params import RESNET50_BLOCKS, load_params
from skinsage.prepared import PreparedData, Split
from skinsage.train import resnet50 as transfer
from skinsage.train.trainer import model_metadata, train_model

ROOT = Path(__file__).resolve().parents[1]
SIZE, CLASSES = 32, ["circle", "square", "triangle"]
HEAD_WEIGHTS = 4  # head_dense kernel + bias, probabilities kernel + bias


def resnet_params(**overrides):
    return load_params(ROOT / "params.yaml", overrides={
        "model": "resnet50", "models.resnet50.weights": None, "models.resnet50.image_size": SIZE,
        "models.resnet50.dense_units": 16, "train.epochs": 2, "train.batch_size": 8, **overrides})


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


def tiny_data(per_class_train: int = 6, per_class_val: int = 3) -> PreparedData:
    def split(per_class, seed):
        labels = np.repeat(np.arange(len(CLASSES)), per_class)
        x = images(len(labels), seed)
        x[labels == 1] //= 3  # something to learn
        return Split(x, labels.astype(np.int64))
    return PreparedData(CLASSES, "generated", SIZE, {"train": split(per_class_train, 1),
                                                     "val": split(per_class_val, 2)})


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return build_resnet50(len(CLASSES), resnet_params().model_params)


def plain_resnet50(weights=None):
    return keras.applications.ResNet50(include_top=False, weights=weights, input_shape=(SIZE, SIZE, 3),
                                       pooling="avg")


def test_builder_is_one_flat_graph_with_a_class_output(model):
    assert model.output.shape == (None, len(CLASSES))
    assert model.input.dtype == "uint8" and model.input.shape == (None, SIZE, SIZE, 3)
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)  # no nested ResNet50
    assert model.get_layer("conv5_block3_out") is not None  # reachable for Grad-CAM
    assert len(transfer.residual_blocks(model)) == RESNET50_BLOCKS == 16  # what params.yaml checks unfreeze against
    probabilities = model.predict(images(5), verbose=0)
    assert probabilities.shape == (5, 3) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)


def test_preprocessing_inside_the_model_equals_keras_preprocess_input(model):
    x = images(4, seed=3)
    inside = keras.Model(model.input, model.get_layer("resnet50_preprocess").output)
    manual = keras.applications.resnet50.preprocess_input(x.astype("float32"))
    np.testing.assert_allclose(inside.predict(x, verbose=0), manual, atol=1e-4)
    # and the whole backbone: uint8 into our model == float + preprocess_input into plain ResNet50
    plain = plain_resnet50()
    plain.set_weights(transfer.feature_extractor(model).get_weights())
    ours = transfer.feature_extractor(model).predict(x, verbose=0)
    np.testing.assert_allclose(ours, plain.predict(manual, verbose=0), rtol=1e-4, atol=1e-4)


def trainable_names(model) -> set[str]:
    return {layer.name for layer in model.layers if layer.trainable_weights}


def test_frozen_and_trainable_layers_per_phase(model):
    transfer.set_trainable_backbone(model, [])  # head phase
    assert len(model.trainable_weights) == HEAD_WEIGHTS
    assert trainable_names(model) == {"head_dense", "probabilities"}

    transfer.set_trainable_backbone(model, transfer.layers_to_unfreeze(model, "1"))
    assert trainable_names(model) - {"head_dense", "probabilities"} == {
        "conv5_block3_1_conv", "conv5_block3_2_conv", "conv5_block3_3_conv"}
    assert len(model.trainable_weights) == HEAD_WEIGHTS + 6

    transfer.set_trainable_backbone(model, transfer.layers_to_unfreeze(model, "3"))  # the conv5 stage
    convs = {name for name in trainable_names(model) if name.endswith("_conv")}
    assert convs == {f"conv5_block{b}_{i}_conv" for b in (1, 2, 3) for i in (1, 2, 3)} | {"conv5_block1_0_conv"}
    assert len(model.trainable_weights) == HEAD_WEIGHTS + 2 * 10
    batch_norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert batch_norms and not any(layer.trainable for layer in batch_norms)

    transfer.set_trainable_backbone(model, transfer.layers_to_unfreeze(model, "conv5_block3_2_conv"))
    assert trainable_names(model) - {"head_dense", "probabilities"} == {"conv5_block3_2_conv",
                                                                        "conv5_block3_3_conv"}
    with pytest.raises(ModelError, match="did you mean 'conv5_block3_2_conv'"):
        transfer.layers_to_unfreeze(model, "conv5_block3_2_cnv")
    transfer.set_trainable_backbone(model, [])


def capture_head_phase(monkeypatch) -> dict:
    """Record the cached features and the head model that train_resnet50 trains on."""
    seen = {}
    compute, head = transfer.compute_features, transfer.head_model

    def compute_and_keep(model, splits, batch_size):
        seen["features"] = compute(model, splits, batch_size)
        return seen["features"]

    def head_and_keep(model):
        seen["head"] = head(model)
        return seen["head"]
    monkeypatch.setattr(transfer, "compute_features", compute_and_keep)
    monkeypatch.setattr(transfer, "head_model", head_and_keep)
    return seen


def test_head_trained_on_cached_features_equals_the_saved_full_model(tmp_path, monkeypatch):
    seen = capture_head_phase(monkeypatch)
    data = tiny_data()
    params = resnet_params()
    initial = build_resnet50(len(CLASSES), params.model_params).get_layer("head_dense").get_weights()[0]
    model, history, summary = train_model(params, data)
    assert summary["feature_caching"] is True and summary["head_epochs_run"] == 2
    assert [row["phase"] for row in history] == ["head", "head"]
    assert seen["features"]["train"].shape == (18, 2048) and seen["features"]["val"].shape == (9, 2048)
    assert not np.allclose(model.get_layer("head_dense").get_weights()[0], initial)  # trained

    save_model(model, tmp_path / "model.keras", model_metadata(params, data, summary))
    loaded, metadata = load_model(tmp_path / "model.keras")
    assert metadata["model"] == "resnet50" and metadata["image_size"] == SIZE
    on_features = seen["head"].predict(seen["features"]["val"], verbose=0)
    full, _ = loaded.predict(data.splits["val"].images, verbose=0)  # and the detector's ood_score
    assert np.max(np.abs(full - on_features)) < 1e-5

    # the out-of-distribution detector, fitted by `train` on the residual stages, recorded and applied
    decision = decision_settings(metadata)
    assert decision["ood"]["method"] == "feature_stats" and decision["ood"]["retain"] == params.train.ood.retain
    assert np.isfinite(decision["ood"]["threshold"]) and decision["uncertain"]["coverage"] == 0.9
    probs, ood_scores = predict_outputs(loaded, data.splits["val"], 8, **inference_settings(metadata))
    # retain 0.95 or 0.97 of 9 validation images: all, so the threshold is their highest score (the saved
    # model's float32 arithmetic may differ in the last digits)
    assert np.max(ood_scores) == pytest.approx(decision["ood"]["threshold"], rel=1e-4)
    status = statuses(probs, ood_scores, decision)
    assert set(status) <= set(STATUSES) and status.count(OK) >= 1
    far = np.full((2, SIZE, SIZE, 3), 255, np.uint8)  # blank white squares, unlike the training noise
    _, far_scores = predict_outputs(loaded, far, 8, **inference_settings(metadata))
    assert np.all(far_scores > np.max(ood_scores))
    assert statuses(probs[:2], far_scores, decision) == [OUT_OF_DISTRIBUTION] * 2


def test_fine_tuning_trains_top_convs_only_and_keeps_batchnorm_statistics(monkeypatch):
    data = tiny_data()
    params = resnet_params(**{"models.resnet50.fine_tune.epochs": 2, "models.resnet50.fine_tune.unfreeze": 1,
                              "train.epochs": 1, "train.early_stopping.restore_best_weights": False})
    keras.utils.set_random_seed(params.seed)
    before = build_resnet50(len(CLASSES), params.model_params)
    model, history, summary = train_model(params, data)
    assert [(row["epoch"], row["phase"]) for row in history] == [(1, "head"), (2, "fine_tune"), (3, "fine_tune")]
    assert summary["head_epochs_run"] == 1 and summary["fine_tune_epochs_run"] == 2
    assert summary["epochs_run"] == 3
    changed = {layer.name for layer in model.layers if layer.weights and layer.name != OOD_OUTPUT and not all(
        np.array_equal(a, b) for a, b in zip(layer.get_weights(), before.get_layer(layer.name).get_weights()))}
    assert changed == {"conv5_block3_1_conv", "conv5_block3_2_conv", "conv5_block3_3_conv",
                       "head_dense", "probabilities"}  # BatchNorm moving statistics untouched
    assert model.get_layer(OOD_OUTPUT).weights  # the detector, fitted after training (not trained)
    assert getattr(model, "optimizer", None) is None  # saved without Adam's state


def test_fine_tuning_that_does_not_help_keeps_the_head_phase_weights(monkeypatch):
    seen = capture_head_phase(monkeypatch)
    data = tiny_data()
    params = resnet_params(**{"models.resnet50.fine_tune.epochs": 1, "models.resnet50.fine_tune.learning_rate": 50.0,
                              "models.resnet50.fine_tune.unfreeze": 1})  # diverges on purpose
    model, history, summary = train_model(params, data)
    fine_tune_loss = history[-1]["val_loss"]
    assert history[-1]["phase"] == "fine_tune"
    assert not fine_tune_loss <= min(row["val_loss"] for row in history[:-1])  # worse, or NaN
    assert summary["best_phase"] == "head" and summary["best_epoch"] <= 2
    on_features = seen["head"].predict(seen["features"]["val"], verbose=0)
    assert np.max(np.abs(model.predict(data.splits["val"].images, verbose=0)[0] - on_features)) < 1e-5


def test_augmentation_turns_feature_caching_off_and_says_so(capsys):
    params = resnet_params(**{"train.epochs": 1, "models.resnet50.augment.flip": True})
    _, history, summary = train_model(params, tiny_data(per_class_train=3))
    assert summary["feature_caching"] is False and "feature_seconds" not in summary
    assert "feature caching off" in capsys.readouterr().out
    assert [row["phase"] for row in history] == ["head"]


@pytest.mark.parametrize("suffix", [".weights.h5", ".h5"])  # Keras 3 format; Keras' own download's format
def test_weights_from_a_local_file(tmp_path, suffix):
    keras.utils.set_random_seed(7)
    source = plain_resnet50()
    path = tmp_path / f"resnet50_notop{suffix}"
    if suffix == ".weights.h5":
        source.save_weights(path)
    else:
        import h5py
        from keras.src.legacy.saving import legacy_h5_format
        with h5py.File(path, "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, source)
    model = build_resnet50(3, resnet_params(**{"models.resnet50.weights": str(path)}).model_params)
    x = images(3, seed=5)
    expected = source.predict(keras.applications.resnet50.preprocess_input(x.astype("float32")), verbose=0)
    np.testing.assert_allclose(transfer.feature_extractor(model).predict(x, verbose=0), expected,
                               rtol=1e-5, atol=1e-5)


def test_a_weights_file_that_does_not_fit_is_a_clear_error(tmp_path):
    small = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.Flatten(),
                              keras.layers.Dense(2)])
    small.save_weights(tmp_path / "other.weights.h5")
    (tmp_path / "junk.h5").write_text("not hdf5")
    for name in ("other.weights.h5", "junk.h5"):
        params = resnet_params(**{"models.resnet50.weights": str(tmp_path / name)}).model_params
        with pytest.raises(ModelError, match="does not fit ResNet50 without its top") as err:
            build_resnet50(3, params)
        assert RESNET50_WEIGHTS_FILE in str(err.value) and "null" in str(err.value)
    params = resnet_params(**{"models.resnet50.weights": str(tmp_path / "missing.h5")}).model_params
    with pytest.raises(ModelError, match="no file .*missing.h5"):
        build_resnet50(3, params)


def test_offline_imagenet_without_a_cached_file_is_a_clear_error(tmp_path, monkeypatch):
    from keras.src.backend import config
    from keras.src.utils import file_utils

    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path / "keras_home"))  # an empty Keras cache
    downloads, connections = [], []

    def no_download(url, *args, **kwargs):
        downloads.append(url)
        raise OSError("network disabled in this test")

    real_connect = socket.socket.connect

    def local_only(sock, address):
        if not (isinstance(address, tuple) and address[0] in ("127.0.0.1", "localhost")):
            connections.append(address)
            raise OSError(f"test blocks connections outside 127.0.0.1: {address}")
        return real_connect(sock, address)
    monkeypatch.setattr(file_utils, "urlretrieve", no_download)
    monkeypatch.setattr(socket.socket, "connect", local_only)

    params = resnet_params(**{"models.resnet50.weights": "imagenet"}).model_params
    with pytest.raises(ModelError) as err:
        build_resnet50(3, params)
    message = str(err.value)
    assert RESNET50_WEIGHTS_FILE in message and "~/.keras/models/" in message
    assert str(tmp_path / "keras_home" / "models") in message
    assert "models.resnet50.weights" in message and "null" in message
    assert len(downloads) == 1 and downloads[0].endswith(RESNET50_WEIGHTS_FILE)
    assert connections == []
