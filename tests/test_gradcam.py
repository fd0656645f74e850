"""Grad-CAM: the map points at what decides the class, on the saved model, with and without TTA."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from skinsage.app.classifier import Classifier, PredictError
from skinsage.app.cli import EXPLANATIONS_FILE, main
from skinsage.model.gradcam import GradCam, GradCamError, last_conv_layer, overlay, upsample
from tiny_model import CLASSES, exif_rotated, noise, save, save_tiny_model, tiny_params

SIDE = 32
SQUARE = 8                                   # px; a bright square decides the class
CORNERS = [(4, 4), (4, SIDE - 4 - SQUARE), (SIDE - 4 - SQUARE, 4), (SIDE - 4 - SQUARE, SIDE - 4 - SQUARE)]
AREA_SHARE = SQUARE * SQUARE / SIDE ** 2     # 1/16 of the image
MASS_FACTOR = 2.0                            # the bound: map mass in the square >= 2x its area share
CLASS_NAMES = ["no_square", "square"]


def square_images(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(images, corner of each square): dim noise everywhere; class 1 adds a bright square in a
    random corner (known per image), nothing else tells the classes apart. Squares in every corner
    make the task flip-invariant, as TTA "flips" assumes; a "no square" class means the only
    evidence for "square" is the square itself (two corner classes could also be told apart by
    the other corner being dark)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 90, (len(labels), SIDE, SIDE, 3), dtype=np.uint8)
    corners = rng.integers(0, len(CORNERS), len(labels))
    for image, label, corner in zip(images, labels, corners):
        if label == 1:
            top, left = CORNERS[corner]
            image[top:top + SQUARE, left:left + SQUARE] = 230
    return images, corners


def mass_in_square(heatmap: np.ndarray, corner: int) -> float:
    """Share of the map's total (upsampled to the image) that falls inside the square."""
    heat = upsample(heatmap, SIDE, SIDE)
    top, left = CORNERS[corner]
    return float(heat[top:top + SQUARE, left:left + SQUARE].sum() / max(heat.sum(), 1e-12))


@pytest.fixture(scope="module")
def square_model(tmp_path_factory):
    """A tiny CNN trained to tell images with a square from those without, saved as `train` saves it."""
    import keras

    from skinsage.model.architectures import build_cnn

    keras.utils.set_random_seed(0)
    params = tiny_params(SIDE, **{"models.cnn.filters": [8, 16], "models.cnn.dense_units": 16})
    model = build_cnn(2, params.model_params)
    labels = np.arange(256) % 2
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(square_images(labels, seed=1)[0], labels, epochs=6, batch_size=32, verbose=0)
    path = tmp_path_factory.mktemp("square") / "model.keras"
    return save_tiny_model(path, classes=CLASS_NAMES, size=SIDE, model=model)


@pytest.fixture(scope="module")
def test_set():
    """Unseen images with a square: (images, corners)."""
    return square_images(np.ones(40, dtype=int), seed=2)


@pytest.mark.parametrize("tta", ["none", "flips"])
def test_heat_map_mass_sits_on_the_square_that_decides_the_class(square_model, test_set, tta):
    # flips: the four views' maps must be un-flipped before averaging, else mass lands in the
    # opposite corners and this fails
    clf = Classifier.load(square_model, tta=tta)
    images, corners = test_set
    result = clf.grad_cam.explain(images, tta=tta)  # the predicted class
    assert (result.class_indices == 1).mean() >= 0.95  # the model learnt the task
    shares = np.array([mass_in_square(m, c) for m, c in zip(result.maps, corners)])
    print(f"tta={tta}: mean heat-map mass in the square {shares.mean():.3f} "
          f"(area share {AREA_SHARE:.3f}, bound {MASS_FACTOR * AREA_SHARE:.3f}), min {shares.min():.3f}")
    assert shares.mean() >= MASS_FACTOR * AREA_SHARE
    assert np.median(shares) >= MASS_FACTOR * AREA_SHARE


def test_maps_are_at_the_conv_resolution_in_0_1_and_follow_the_chosen_class(square_model, test_set):
    clf = Classifier.load(square_model, tta="none")
    images, corners = test_set
    cam = clf.grad_cam
    # the last block's activation: the ReLU after the last conv and its BatchNorm
    kinds = [type(layer).__name__ for layer in clf.model.layers]
    last_conv = len(kinds) - 1 - kinds[::-1].index("Conv2D")
    assert kinds[last_conv + 1:last_conv + 3] == ["BatchNormalization", "ReLU"]
    assert cam.layer == last_conv_layer(clf.model) == clf.model.layers[last_conv + 2].name
    chosen = cam.explain(images[:6], class_indices=[1] * 6)
    assert chosen.maps.shape == (6, SIDE // 2, SIDE // 2) and chosen.maps.dtype == np.float32
    assert chosen.maps.min() >= 0 and chosen.maps.max() <= 1
    assert all(m.max() == pytest.approx(1) or m.max() == 0 for m in chosen.maps)
    assert list(chosen.class_indices) == [1] * 6
    # class-discriminative: the "square" map puts more mass on the square than the "no square" one
    for_square, for_none = (cam.explain(images[:8], class_indices=c).maps for c in (1, 0))
    assert (np.mean([mass_in_square(m, c) for m, c in zip(for_square, corners)])
            > np.mean([mass_in_square(m, c) for m, c in zip(for_none, corners)]))
    with pytest.raises(GradCamError, match="class indices must be in 0..1"):
        cam.explain(images[:1], class_indices=2)


def test_logit_adjustment_on_top_leaves_the_maps_unchanged(square_model, test_set, tmp_path):
    """The adjustment shifts each logit by a constant: same gradient, same map, for the same class."""
    from skinsage.model.logit_adjustment import with_adjustment
    from skinsage.model.model_file import load_model, save_model

    model, metadata = load_model(square_model)
    save_model(with_adjustment(model, np.array([0.9, 0.1]), 1.0), tmp_path / "adjusted.keras", metadata)
    adjusted, _ = load_model(tmp_path / "adjusted.keras")
    images = test_set[0][:4]
    plain = GradCam(model).explain(images, class_indices=[0, 1, 0, 1])
    shifted = GradCam(adjusted).explain(images, class_indices=[0, 1, 0, 1])
    assert shifted.maps.max() > 0
    np.testing.assert_allclose(shifted.maps, plain.maps, atol=1e-4)
    assert not np.allclose(shifted.probabilities, plain.probabilities)  # the adjustment is there


def test_unknown_layer_or_no_conv_layer_is_a_clear_error_naming_the_model(model_path):
    import keras

    clf = Classifier.load(model_path)
    with pytest.raises(GradCamError, match=r"model\.keras: no layer named 'nope'.*conv2d"):
        GradCam(clf.model, layer="nope", name=str(model_path))
    flatten = next(layer.name for layer in clf.model.layers if type(layer).__name__ == "Flatten")
    with pytest.raises(GradCamError, match=f"layer '{flatten}' has output shape"):
        GradCam(clf.model, layer=flatten)
    dense_only = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(),
                                   keras.layers.Dense(2, activation="softmax")], name="no_convs")
    with pytest.raises(GradCamError, match="no_convs: no convolutional layer"):
        GradCam(dense_only)


def test_resnet50_maps_come_from_its_last_block():
    from skinsage.model.architectures import build_resnet50
    from skinsage.params import load_params
    from tiny_model import ROOT

    params = load_params(ROOT / "params.yaml", overrides={"model": "resnet50", "models.resnet50.weights": None,
                                                          "models.resnet50.image_size": 64})
    model = build_resnet50(3, params.model_params)
    cam = GradCam(model)
    assert cam.layer == "conv5_block3_out"
    result = cam.explain(noise(0, (2, 64, 64, 3)), class_indices=0)
    assert result.maps.shape == (2, 2, 2) and 0 <= result.maps.min() and result.maps.max() <= 1


def test_overlay_covers_the_photo_at_its_own_size_and_aspect():
    photo = noise(3, (30, 50, 3))
    heat = np.zeros((4, 4), np.float32)
    heat[0, 0] = 1.0  # evidence in the top-left cell only
    drawn = overlay(photo, heat)
    assert drawn.shape == photo.shape and drawn.dtype == np.uint8
    changed = np.abs(drawn.astype(int) - photo.astype(int)).sum(axis=-1)
    assert changed[:5, :8].mean() > 3 * changed[-8:, -12:].mean()  # tinted most where the map is hot


def test_classifier_explain_returns_the_prediction_and_an_overlay_of_the_oriented_photo(model_path, tmp_path):
    clf = Classifier.load(model_path)
    photo = exif_rotated(tmp_path / "rotated.jpg")  # stored 40x20, shown 20 wide x 40 high
    explanation = clf.explain(photo, class_name=CLASSES[2])
    assert explanation.overlay.shape == (40, 20, 3) and explanation.photo.shape == (40, 20, 3)
    assert explanation.explained == CLASSES[2]
    assert explanation.prediction.label == clf.predict(photo).label
    assert explanation.prediction.probabilities == pytest.approx(clf.predict(photo).probabilities)
    with pytest.raises(PredictError, match="unknown class 'mole'"):
        clf.explain(photo, class_name="mole")


def test_cli_explain_writes_an_overlay_per_image_and_the_top_k_json(model_path, tmp_path, capsys):
    photos = [save(Image.fromarray(noise(seed, (24, 30, 3))), tmp_path / "in" / f"p{seed}.png")
              for seed in range(2)]
    bad = tmp_path / "in" / "notes.png"
    bad.write_text("not an image")
    out = tmp_path / "out"
    code = main(["explain", "--model", str(model_path), *map(str, photos), str(bad), "--out", str(out),
                 "--top-k", "2", "--class", CLASSES[1]])
    stderr = capsys.readouterr().err
    assert code == 0 and "notes.png" in stderr
    for photo in photos:
        with Image.open(out / f"{photo.stem}_gradcam.png") as image:
            assert image.size == (30, 24)  # the photo's own size
    report = json.loads((out / EXPLANATIONS_FILE).read_text())
    assert [entry["overlay"] for entry in report["images"]] == ["p0_gradcam.png", "p1_gradcam.png"]
    assert all(len(entry["top_k"]) == 2 and entry["explained_class"] == CLASSES[1]
               for entry in report["images"])
    assert report["skipped"][0]["path"].endswith("notes.png")
    assert main(["explain", "--model", str(model_path), str(photos[0]), "--out", str(out),
                 "--class", "mole"]) == 1
    assert "unknown class 'mole'" in capsys.readouterr().err
