"""The accuracy levers of #7: CNN options, AdamW + cosine, sqrt class weights, post-hoc logit
adjustment (baked into the saved model) and flip test-time augmentation."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from skinsage.model.architectures import build_cnn
from skinsage.model.inference import predict_probabilities
from skinsage.model.layers import LogitAdjustment
from skinsage.model.logit_adjustment import adjust, class_prior
from skinsage.model.model_file import load_model, save_model
from skinsage.params import ParamsError, load_params
from skinsage.prepared import PreparedData, Split
from skinsage.train import trainer as training
from skinsage.train.phase import DEFAULT_BN_MOMENTUM, adapt_batch_norm_momentum, class_weights, make_optimizer
from skinsage.train.tau_sweep import choose_tau

ROOT = Path(__file__).resolve().parents[1]


def params(**overrides):
    return load_params(ROOT / "params.yaml", overrides=overrides)


def layer_types(model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers]


# --- CNN options -----------------------------------------------------------------------------

def test_without_batch_norm_the_cnn_is_the_seed_architecture():
    model = build_cnn(7, params(model="cnn", **{"models.cnn.batch_norm": False}).models.cnn)
    kinds = layer_types(model)
    assert kinds.count("Conv2D") == 3 and kinds.count("MaxPooling2D") == 3
    assert "BatchNormalization" not in kinds and kinds.count("Flatten") == 1
    assert [type(x).__name__ for x in model.layers if isinstance(x, keras.layers.Dense)] == ["Dense", "Dense"]
    assert model.output_shape == (None, 7)


def test_batch_norm_stride_and_average_pooling_options():
    p = params(**{"models.cnn.image_size": 64, "models.cnn.filters": [8, 16, 16, 32],
                  "models.cnn.batch_norm": True, "models.cnn.stem_stride": 2,
                  "models.cnn.pooling": "average"}).models.cnn
    model = build_cnn(3, p)
    kinds = layer_types(model)
    assert kinds.count("BatchNormalization") == 4 and kinds.count("ReLU") == 4
    assert "GlobalAveragePooling2D" in kinds and "Flatten" not in kinds
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs[0].strides == (2, 2) and all(c.strides == (1, 1) for c in convs[1:])
    assert not any(c.use_bias for c in convs)  # BatchNorm's shift replaces the bias
    # 64 / 2 (stride) / 2**4 (pools) = 2: the last block's map is 2x2
    pooled = model.get_layer(index=kinds.index("GlobalAveragePooling2D") - 1)
    assert pooled.output.shape[1:3] == (2, 2)


def test_two_convs_per_block_double_the_convs_not_the_pools():
    p = params(**{"models.cnn.image_size": 64, "models.cnn.filters": [8, 16, 16, 32], "models.cnn.stem_stride": 2,
                  "models.cnn.convs_per_block": 2}).models.cnn
    model = build_cnn(3, p)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [8, 8, 16, 16, 16, 16, 32, 32]
    assert convs[0].strides == (2, 2) and all(c.strides == (1, 1) for c in convs[1:])
    kinds = layer_types(model)
    assert kinds.count("MaxPooling2D") == 4 and kinds.count("BatchNormalization") == 8
    assert model.get_layer(index=kinds.index("Flatten")).output.shape[1] == 2 * 2 * 32
    with pytest.raises(ParamsError, match="convs_per_block: must be 1..3"):
        params(**{"models.cnn.convs_per_block": 0})


def test_too_many_blocks_for_the_image_size_is_refused():
    with pytest.raises(ParamsError, match="shrink 28 px images to nothing"):
        params(**{"models.cnn.filters": [8, 8, 8, 8, 8]})
    with pytest.raises(ParamsError, match="stem_stride: must be 1 or 2"):
        params(**{"models.cnn.stem_stride": 3})


# --- optimiser, schedule, class weights ------------------------------------------------------

def test_cosine_schedule_decays_to_zero_and_adamw_gets_weight_decay():
    opt = make_optimizer("adamw", 1e-3, 1e-4, "cosine", total_steps=100)
    assert isinstance(opt, keras.optimizers.AdamW) and opt.weight_decay == pytest.approx(1e-4)
    schedule = opt.learning_rate if callable(opt.learning_rate) else opt._learning_rate
    assert float(schedule(0)) == pytest.approx(1e-3)
    assert float(schedule(50)) == pytest.approx(5e-4, rel=1e-3)
    assert float(schedule(100)) == pytest.approx(0, abs=1e-9)
    constant = make_optimizer("adam", 1e-3, 0.0, "constant", total_steps=100)
    assert type(constant) is keras.optimizers.Adam and float(constant.learning_rate) == pytest.approx(1e-3)


def test_weight_decay_needs_adamw():
    with pytest.raises(ParamsError, match="only used by optimizer adamw"):
        params(**{"train.weight_decay": 1e-4})


def test_sqrt_class_weights_are_the_root_of_balanced():
    labels = np.array([0] * 90 + [1] * 10)
    balanced, sqrt = class_weights(labels, "balanced"), class_weights(labels, "sqrt")
    assert balanced == pytest.approx({0: 100 / 180, 1: 100 / 20})
    assert sqrt == pytest.approx({0: np.sqrt(100 / 180), 1: np.sqrt(5.0)})


# --- logit adjustment ------------------------------------------------------------------------

def test_adjustment_divides_by_prior_to_the_tau():
    probs = np.array([[0.7, 0.2, 0.1], [0.5, 0.4, 0.1]])
    prior = np.array([0.8, 0.1, 0.1])
    np.testing.assert_allclose(adjust(probs, prior, 0.0), probs)
    out = adjust(probs, prior, 1.0)
    expected = probs / prior
    np.testing.assert_allclose(out, expected / expected.sum(axis=1, keepdims=True))
    layer = LogitAdjustment(prior, 1.0)
    np.testing.assert_allclose(np.asarray(layer(probs.astype("float32"))), out, rtol=1e-6)


def test_class_prior_counts_training_labels_and_never_zero():
    np.testing.assert_allclose(class_prior(np.array([0, 0, 0, 1]), 3), np.array([3, 1, 0.5]) / 4.5)


def test_choose_tau_moves_toward_minority_recall_when_that_pays():
    # class 1 is rare; its images get 0.4 for their class: only an adjusted model finds them
    labels = np.array([0] * 8 + [1] * 2)
    probs = np.array([[0.9, 0.1]] * 8 + [[0.6, 0.4]] * 2)
    prior = np.array([0.8, 0.2])
    tau, sweep = choose_tau(labels, probs, prior, "mean_accuracy")
    assert sweep[0]["tau"] == 0 and sweep[0]["balanced_accuracy"] == 0.5 and sweep[0]["accuracy"] == 0.8
    chosen = next(row for row in sweep if row["tau"] == tau)
    assert chosen["accuracy"] == 1.0 and chosen["balanced_accuracy"] == 1.0
    # the smallest tau that flips 0.6/0.4 but not 0.9/0.1: (0.6/0.8^t) < (0.4/0.2^t) -> t > 0.2925
    assert tau == pytest.approx(0.3)
    assert choose_tau(labels, np.array([[0.9, 0.1]] * 8 + [[0.1, 0.9]] * 2), prior, "mean_accuracy")[0] == 0.0


def tiny_data() -> PreparedData:
    rng = np.random.default_rng(0)

    def split(n0, n1):
        labels = np.array([0] * n0 + [1] * n1)
        x = rng.integers(0, 256, (len(labels), 16, 16, 3), dtype=np.uint8)
        x[labels == 1] //= 3  # darker: learnable
        return Split(x, labels)
    return PreparedData(["light", "dark"], "generated", 16, {"train": split(40, 8), "val": split(10, 4)})


# No out-of-distribution detector: these tests look at the probabilities output and the layer order
# (the detector adds a second output; test_export, test_plots, test_resnet50 and test_web_app cover it)
TINY_CNN = {"model": "cnn", "models.cnn.image_size": 16, "models.cnn.filters": [4], "models.cnn.dense_units": 8,
            "train.epochs": 2, "train.batch_size": 16, "train.ood.method": "none"}


def test_auto_tau_is_chosen_on_validation_and_saved_inside_the_model(tmp_path):
    data = tiny_data()
    model, _, summary = training.train_model(params(**TINY_CNN, **{"train.logit_adjustment.tau": "auto"}), data)
    tau = summary["logit_adjustment_tau"]
    assert 0 <= tau <= 3 and "val_balanced_accuracy_adjusted" in summary
    assert isinstance(model.layers[-1], LogitAdjustment) and model.layers[-1].tau == tau
    np.testing.assert_allclose(model.layers[-1].class_prior, [40 / 48, 8 / 48])
    path = tmp_path / "model.keras"
    save_model(model, path, {"classes": data.class_names, "image_size": 16, "model": "cnn"})
    loaded, _ = load_model(path)  # safe mode: the registered layer, no code from the file
    assert loaded.input.shape == (None, 16, 16, 3)  # one input tensor, not a one-element list
    images = data.splits["val"].images
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)


def test_fixed_tau_is_applied_and_null_leaves_the_model_alone():
    data = tiny_data()
    plain, _, summary = training.train_model(params(**TINY_CNN, **{"train.logit_adjustment.tau": None}), data)
    assert "logit_adjustment_tau" not in summary and not isinstance(plain.layers[-1], LogitAdjustment)
    adjusted, _, summary = training.train_model(params(**TINY_CNN, **{"train.logit_adjustment.tau": 1.5}), data)
    assert summary["logit_adjustment_tau"] == 1.5
    images = data.splits["val"].images
    inner = keras.Model(adjusted.inputs, adjusted.layers[-2].output)
    np.testing.assert_allclose(adjusted.predict(images, verbose=0),
                               adjust(inner.predict(images, verbose=0),
                                      class_prior(data.splits["train"].labels, 2), 1.5),
                               rtol=1e-5)


def test_bad_tau_is_refused():
    with pytest.raises(ParamsError, match="tau: 'often' is not a number"):
        params(**{"train.logit_adjustment.tau": "often"})
    with pytest.raises(ParamsError, match="tau: must be in 0..5"):
        params(**{"train.logit_adjustment.tau": 9})


# --- test-time augmentation ------------------------------------------------------------------

class LeftColumnModel:
    """Probability of class 1 = mean brightness of the left column: not flip invariant."""

    def predict_on_batch(self, images):
        p1 = images[:, :, 0, :].mean(axis=(1, 2)) / 255.0
        return np.stack([1 - p1, p1], axis=1)


def test_flip_tta_averages_the_four_flips():
    images = np.random.default_rng(1).integers(0, 256, (5, 6, 6, 3), dtype=np.uint8)
    model = LeftColumnModel()
    plain = predict_probabilities(model, images, 4)
    tta = predict_probabilities(model, images, 4, tta="flips")
    left, right = images[:, :, 0].mean(axis=(1, 2)) / 255, images[:, :, -1].mean(axis=(1, 2)) / 255
    np.testing.assert_allclose(plain[:, 1], left)
    np.testing.assert_allclose(tta[:, 1], (left + right) / 2)  # vertical flips keep the column
    np.testing.assert_allclose(tta.sum(axis=1), 1.0)


# --- losses and mixup ------------------------------------------------------------------------

def test_mixup_mixes_images_and_labels_with_the_same_weight():
    import tensorflow as tf

    from skinsage.train.augment import mixup_dataset, one_hot_dataset

    images = np.zeros((8, 4, 4, 3), np.uint8)
    images[:4] = 200  # class 0 bright, class 1 black
    labels = np.array([0] * 4 + [1] * 4)
    ds = one_hot_dataset(tf.data.Dataset.from_tensor_slices((images, labels)).batch(8), 2)
    x, y = next(iter(mixup_dataset(ds, 0.4, seed=1)))
    x, y = x.numpy(), y.numpy()
    assert x.dtype == np.uint8 and y.shape == (8, 2)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-6)
    # brightness is 200 * (weight of class 0): the label says the same, up to rounding
    np.testing.assert_allclose(x[:, 0, 0, 0] / 200.0, y[:, 0], atol=0.5 / 200 + 1e-6)
    assert not np.all((y == 0) | (y == 1))  # some are really mixed
    features = tf.data.Dataset.from_tensor_slices((np.ones((8, 5), np.float32) * labels[:, None], labels))
    fx, fy = next(iter(mixup_dataset(one_hot_dataset(features.batch(8), 2), 0.4, seed=1)))
    np.testing.assert_allclose(fx.numpy()[:, 0], fy.numpy()[:, 1], rtol=1e-5)  # floats mixed exactly


@pytest.mark.parametrize("overrides", [{"train.label_smoothing": 0.1}, {"train.loss": "focal"},
                                       {"train.mixup": 0.2, "train.class_weight": "balanced"}])
def test_one_hot_losses_train_and_report_sparse_accuracy(overrides):
    data = tiny_data()
    model, history, _ = training.train_model(params(**TINY_CNN, **overrides), data)
    assert 0 <= history[-1]["accuracy"] <= 1 and 0 <= history[-1]["val_accuracy"] <= 1
    assert model.output_shape == (None, 2)


def test_impossible_loss_settings_are_refused():
    with pytest.raises(ParamsError, match="label_smoothing"):
        params(**{"train.label_smoothing": 1.0})
    with pytest.raises(ParamsError, match="mixup"):
        params(**{"train.mixup": -0.1})
    with pytest.raises(ParamsError, match="'hinge' is not one of: cross_entropy, focal"):
        params(**{"train.loss": "hinge"})


def test_max_accuracy_drop_limits_how_far_tau_may_go():
    # tau 0: accuracy 0.9, balanced 0.5. Finding the rare image (tau > 0.29) also flips three
    # common ones (they flip from tau > 0.15): accuracy 0.7, balanced (6/9 + 1) / 2
    labels = np.array([0] * 9 + [1])
    probs = np.array([[0.9, 0.1]] * 6 + [[0.55, 0.45]] * 3 + [[0.6, 0.4]])
    prior = np.array([0.8, 0.2])
    free, sweep = choose_tau(labels, probs, prior, "balanced_accuracy")
    row = next(row for row in sweep if row["tau"] == free)
    assert free == pytest.approx(0.3) and row["accuracy"] == pytest.approx(0.7)
    assert row["balanced_accuracy"] == pytest.approx((6 / 9 + 1) / 2)
    assert choose_tau(labels, probs, prior, "balanced_accuracy", max_accuracy_drop=0.1)[0] == 0.0
    assert choose_tau(labels, probs, prior, "balanced_accuracy", max_accuracy_drop=0.2)[0] == pytest.approx(0.3)


def test_tau_sweep_scores_exactly_what_the_adjusted_model_scores_under_flip_tta():
    from skinsage.model.inference import variant_probabilities
    from skinsage.model.logit_adjustment import with_adjustment

    keras.utils.set_random_seed(3)  # sees the top-left quarter only: each flip predicts differently
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Cropping2D(((0, 4), (0, 4))),
                              keras.layers.Flatten(), keras.layers.Dense(4, activation="softmax")])
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (300, 8, 8, 3)).astype("float32") / 10
    labels = rng.integers(0, 4, 300)
    prior = np.array([0.55, 0.3, 0.1, 0.05])
    _, sweep = choose_tau(labels, variant_probabilities(model, images, 64, "flips"), prior, "balanced_accuracy")
    for row in sweep[::6]:
        adjusted = predict_probabilities(with_adjustment(model, prior, row["tau"]), images, 64, tta="flips")
        assert row["accuracy"] == pytest.approx(np.mean(adjusted.argmax(axis=1) == labels), abs=1e-9), row["tau"]


def test_best_phase_needs_a_strictly_better_later_phase():
    from skinsage.train.phase import PhaseResult, best_phase

    def phase(losses, best):
        return PhaseResult("x", {"loss": losses, "val_loss": losses}, False, 0.0, best_epoch=best)

    head = phase([0.9, 0.5, 0.6], 1)
    assert best_phase([head, phase([0.7, 0.4], 1)], "val_loss") == 1
    assert best_phase([head, phase([0.5, 0.6], 0)], "val_loss") == 0  # a tie keeps the head's weights
    assert best_phase([head, phase([float("nan")], 0)], "val_loss") == 0  # a diverged phase never wins


def test_summary_best_epoch_is_the_restored_one():
    data = tiny_data()
    p = params(**{**TINY_CNN, "train.epochs": 4, "train.early_stopping.start_from_epoch": 2,
                              "train.logit_adjustment.tau": None})
    _, history, summary = training.train_model(p, data)
    losses = [row["val_loss"] for row in history]
    assert summary["best_epoch"] == 3 + int(np.argmin(losses[2:]))  # Keras' EarlyStopping's, recorded once
    assert summary["best_val_loss"] == pytest.approx(min(losses[2:]))


# --- BatchNorm on small datasets ---------------------------------------------------------------

def batch_norm_momenta(model) -> list[float]:
    return [layer.momentum for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def test_batch_norm_momentum_forgets_the_initial_statistics_before_early_stopping_starts():
    model = build_cnn(2, params(**{**TINY_CNN, "models.cnn.filters": [4, 8]}).models.cnn)
    momentum = adapt_batch_norm_momentum(model, 140)  # the demo: 7 batches x 20 epochs
    assert batch_norm_momenta(model) == [momentum, momentum]
    assert momentum ** 140 == pytest.approx(1e-4) and 0.9 < momentum < DEFAULT_BN_MOMENTUM
    assert adapt_batch_norm_momentum(model, 94 * 20) == DEFAULT_BN_MOMENTUM  # HAM10000: Keras' default kept
    assert adapt_batch_norm_momentum(model, 3) == 0.9  # never below 0.9: too noisy
    no_bn = build_cnn(2, params(**TINY_CNN, **{"models.cnn.batch_norm": False}).models.cnn)
    assert adapt_batch_norm_momentum(no_bn, 10) is None


def test_training_lowers_the_momentum_for_a_small_dataset():
    data = tiny_data()  # 48 training images: 3 batches of 16
    p = params(**{**TINY_CNN, "train.early_stopping.start_from_epoch": 20, "train.logit_adjustment.tau": None})
    model, _, _ = training.train_model(p, data)
    assert batch_norm_momenta(model) == [pytest.approx(0.9)]  # 2 epochs x 3 batches: at the floor


def test_shades_of_gray_removes_a_colour_cast_and_keeps_neutral_images():
    from skinsage.model.layers import ShadesOfGray

    rng = np.random.default_rng(0)
    grey = rng.uniform(0.1, 0.6, size=(2, 16, 16, 1)).astype("float32")
    neutral = np.repeat(grey, 3, axis=-1)
    tinted = neutral * np.array([1.0, 0.8, 0.6], dtype="float32")  # a warm light source
    layer = ShadesOfGray()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(neutral)), neutral, atol=1e-5)
    corrected = keras.ops.convert_to_numpy(layer(tinted))
    # channels equal again (the cast is gone), brightness kept at the mean gain
    np.testing.assert_allclose(corrected[..., 0], corrected[..., 2], atol=1e-5)
    np.testing.assert_allclose(corrected, neutral * 0.8, atol=1e-5)


def test_color_constancy_option_puts_the_layer_first_and_survives_saving(tmp_path):
    p = params(**{"models.cnn.color_constancy": "shades_of_gray"}).models.cnn
    model = build_cnn(3, p)
    kinds = layer_types(model)
    assert kinds[:2] == ["Rescaling", "ShadesOfGray"]
    assert "ShadesOfGray" not in layer_types(build_cnn(3, params().models.cnn))
    path = tmp_path / "m.keras"
    model.save(path)
    images = np.random.default_rng(1).integers(0, 256, size=(4, 28, 28, 3), dtype="uint8")
    np.testing.assert_allclose(keras.saving.load_model(path).predict(images, verbose=0),
                               model.predict(images, verbose=0), atol=1e-6)
