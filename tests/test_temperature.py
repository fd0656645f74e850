"""Temperature scaling (issue #19): fitted on validation by `train`, recorded in the model file,
applied after the test-time views by the one inference path and inside exported graphs; `evaluate`
shows the calibration before and after."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from skinsage.app.classifier import Classifier
from skinsage.evaluate.metrics import expected_calibration_error
from skinsage.evaluate.scoring import evaluate_split, without_temperature
from skinsage.model.inference import predict_probabilities, variant_probabilities
from skinsage.model.model_file import ModelFileError, load_model, save_model
from skinsage.model.temperature import apply_temperature, fit_temperature
from skinsage.prepared import Split
from tiny_model import SIZE, noise, save_tiny_model


def overconfident(n: int, true_temperature: float, seed: int = 0):
    """Labels drawn from softmax(z) while the "model" reports softmax(z * T): T too confident."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (n, 5))
    labels = np.array([rng.choice(5, p=p) for p in softmax(logits, axis=1)])
    return labels, softmax(logits * true_temperature, axis=1)


@pytest.mark.parametrize("true_temperature", [0.5, 2.0])
def test_fit_recovers_the_temperature_that_calibrates(true_temperature):
    labels, probs = overconfident(20_000, true_temperature)
    fitted = fit_temperature(labels, probs)
    assert fitted == pytest.approx(true_temperature, rel=0.05)
    calibrated = apply_temperature(probs, fitted)
    assert expected_calibration_error(labels, calibrated) < 0.3 * expected_calibration_error(labels, probs)


def test_temperature_keeps_the_order_and_undoes_itself():
    _, probs = overconfident(500, 2.0)
    for t in (0.3, 1.0, 4.0):
        scaled = apply_temperature(probs, t)
        np.testing.assert_allclose(scaled.sum(axis=1), 1, atol=1e-12)
        assert (np.argsort(scaled, axis=1) == np.argsort(probs, axis=1)).all()
        np.testing.assert_allclose(without_temperature(scaled, t), probs, atol=1e-9)
    assert apply_temperature(probs, 1.0) is probs


@pytest.fixture(scope="module")
def tempered(tmp_path_factory):
    """A tiny random model recorded with flips TTA and temperature 0.4 (sharpening)."""
    folder = tmp_path_factory.mktemp("temperature")
    path = save_tiny_model(folder / "plain.keras")
    model, metadata = load_model(path)
    save_model(model, folder / "tempered.keras", {**metadata, "inference": {"tta": "flips", "temperature": 0.4}})
    images = np.stack([noise(seed, (SIZE, SIZE, 3)) for seed in range(64)])
    return folder / "tempered.keras", images


def test_the_one_inference_path_applies_the_temperature_after_averaging_the_views(tempered):
    path, images = tempered
    model, _ = load_model(path)
    averaged = predict_probabilities(model, images, 16, "flips")
    expected = apply_temperature(averaged, 0.4)
    got = predict_probabilities(model, images, 16, "flips", temperature=0.4)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    assert (got.argmax(1) == averaged.argmax(1)).all()  # the predicted class never changes
    # tempering each view before averaging is a different (argmax-changing) computation
    per_view = apply_temperature(variant_probabilities(model, images, 16, "flips"), 0.4).mean(axis=0)
    assert np.abs(per_view - got).max() > 1e-3


def test_classifier_and_evaluate_use_the_recorded_temperature(tempered):
    path, images = tempered
    clf = Classifier.load(path)
    assert clf.temperature == 0.4
    expected = apply_temperature(predict_probabilities(clf.model, images, 16, "flips"), 0.4)
    np.testing.assert_allclose(clf.probabilities(images), expected, atol=1e-12)
    labels = np.arange(len(images)) % 3
    metrics, _, probs = evaluate_split(clf.model, Split(images, labels), clf.classes, 16, tta="flips",
                                       temperature=0.4)
    np.testing.assert_allclose(probs, expected, atol=1e-12)
    untempered = predict_probabilities(clf.model, images, 16, "flips")
    assert metrics["temperature"] == 0.4
    assert metrics["ece_before_temperature"] == pytest.approx(expected_calibration_error(labels, untempered))
    assert metrics["ece"] == pytest.approx(expected_calibration_error(labels, expected))


@pytest.mark.parametrize("bad", [0, -1.0, "hot", float("nan"), True])
def test_a_bad_recorded_temperature_is_refused(tempered, tmp_path, bad):
    path, _ = tempered
    model, metadata = load_model(path)
    save_model(model, tmp_path / "bad.keras", {**metadata, "inference": {"tta": "none", "temperature": bad}})
    with pytest.raises(ModelFileError, match="records temperature"):
        Classifier.load(tmp_path / "bad.keras")


def test_files_from_before_temperature_scaling_run_at_t_1(tempered, tmp_path):
    path, images = tempered
    model, metadata = load_model(path)
    save_model(model, tmp_path / "older.keras", {**metadata, "inference": {"tta": "flips"}})
    clf = Classifier.load(tmp_path / "older.keras")
    assert clf.temperature == 1.0
    np.testing.assert_allclose(clf.probabilities(images), predict_probabilities(model, images, 16, "flips"))


def test_exported_graph_carries_the_temperature(tempered, tmp_path):
    pytest.importorskip("ai_edge_litert")
    from skinsage.export.convert import export_model

    path, images = tempered
    model, metadata = load_model(path)
    out = tmp_path / "tempered.tflite"
    export_model(model, metadata, out, "litert")
    clf = Classifier.load(out)
    assert (clf.runtime_tta, clf.runtime_temperature) == ("none", 1.0)  # both inside the graph
    outputs = clf.model.predict_on_batch(images)  # [probabilities, ood_score]: the detector is in the graph too
    raw = np.asarray(outputs[0] if isinstance(outputs, list) else outputs)
    expected = Classifier.load(path).probabilities(images)
    assert np.abs(raw - expected).max() <= 1e-5
    assert np.abs(clf.probabilities(images) - expected).max() <= 1e-5
