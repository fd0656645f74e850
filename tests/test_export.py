"""`skinsage export` (issue #16): LiteRT and ONNX files that give Keras' probabilities, with the
model's preprocessing, logit adjustment and TTA inside; int8 quantisation calibrated on training
images; run through the same Classifier intake as .keras files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skinsage.app.classifier import Classifier, PredictError
from skinsage.app.cli import main
from skinsage.export.convert import ExportError, calibration_images, export_model
from skinsage.export.serving import UnsupportedLayerError
from skinsage.model.inference import predict_probabilities
from skinsage.model.model_file import load_model, save_model
from skinsage.prepared import PreparedData, Split, save_prepared
from tiny_model import CLASSES, SIZE, tiny_params

pytest.importorskip("ai_edge_litert")
pytest.importorskip("onnxruntime")


def generated(n: int, seed: int) -> Split:
    """Noise images whose class is the colour channel given a boost: learnable, not trivially."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), n)
    images = rng.integers(0, 200, (n, SIZE, SIZE, 3))
    images[np.arange(n), :, :, labels] += rng.integers(0, 40, (n, SIZE, SIZE))
    images[:, : SIZE // 2, : SIZE // 3] = 255  # an asymmetric mark: flips change the prediction
    return Split(images=np.clip(images, 0, 255).astype(np.uint8), labels=labels)


@pytest.fixture(scope="module")
def data() -> PreparedData:
    splits = {"train": generated(600, 1), "val": generated(60, 2), "test": generated(400, 3)}
    return PreparedData(list(CLASSES), "generated colour noise", SIZE, splits)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    """A tiny CNN trained a few epochs, with a logit adjustment layer, saved as `train` saves it;
    (path of the tta=none file, path of the same network recorded with tta=flips, folder)."""
    import keras

    from skinsage.model.architectures import build_cnn
    from skinsage.model.logit_adjustment import class_prior, with_adjustment
    from skinsage.train.trainer import model_metadata

    folder = tmp_path_factory.mktemp("export")
    params = tiny_params()
    keras.utils.set_random_seed(0)
    model = build_cnn(len(CLASSES), params.model_params)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    train = data.splits["train"]
    model.fit(train.images, train.labels, epochs=15, batch_size=32, verbose=0)
    model = with_adjustment(model, class_prior(train.labels, len(CLASSES)), tau=0.5)
    metadata = model_metadata(params, data, {"epochs_run": 15})
    save_model(model, folder / "plain.keras", {**metadata, "inference": {"tta": "none"}})
    save_model(model, folder / "flips.keras", {**metadata, "inference": {"tta": "flips"}})
    save_prepared(folder / "prepared", data)
    return folder


@pytest.fixture(scope="module")
def exported(trained, data):
    """Lazily exported files, each written once per module: exported(name, fmt, quantize, tta)."""
    made = {}
    calibration = calibration_images(trained / "prepared", SIZE)

    def export(fmt: str, quantize: str = "none", tta: str = "none") -> Path:
        key = (fmt, quantize, tta)
        if key not in made:
            model, metadata = load_model(trained / ("flips.keras" if tta == "flips" else "plain.keras"))
            out = trained / f"{tta}_{quantize}.{'tflite' if fmt == 'litert' else 'onnx'}"
            export_model(model, metadata, out, fmt, quantize,
                         calibration=calibration if quantize == "int8" else None)
            made[key] = out
        return made[key]
    return export


def parity(keras_probs: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    return float(np.mean(keras_probs.argmax(1) == probs.argmax(1))), float(np.abs(keras_probs - probs).max())


def test_the_trained_model_has_learned_something(trained, data):
    clf = Classifier.load(trained / "plain.keras")
    test = data.splits["test"]
    assert np.mean(clf.probabilities(test.images).argmax(1) == test.labels) > 0.6


@pytest.mark.parametrize("fmt", ["litert", "onnx"])
def test_float_export_gives_keras_probabilities(trained, data, exported, fmt):
    images = data.splits["test"].images
    expected = Classifier.load(trained / "plain.keras").probabilities(images)
    agreement, max_diff = parity(expected, Classifier.load(exported(fmt)).probabilities(images))
    assert agreement >= 0.995 and max_diff <= 1e-4


def test_float16_litert_stays_close_to_keras(trained, data, exported):
    images = data.splits["test"].images
    expected = Classifier.load(trained / "plain.keras").probabilities(images)
    agreement, max_diff = parity(expected, Classifier.load(exported("litert", "float16")).probabilities(images))
    assert agreement >= 0.99 and max_diff <= 1e-2


def test_int8_litert_is_quantised_and_as_accurate_as_keras(trained, data, exported):
    from ai_edge_litert.interpreter import Interpreter

    path = exported("litert", "int8")
    dtypes = {d["dtype"] for d in Interpreter(model_path=str(path)).get_tensor_details()}
    assert np.int8 in dtypes and path.stat().st_size < exported("litert").stat().st_size
    test = data.splits["test"]
    expected = Classifier.load(trained / "plain.keras").probabilities(test.images)
    got = Classifier.load(path).probabilities(test.images)
    agreement, _ = parity(expected, got)
    keras_accuracy = np.mean(expected.argmax(1) == test.labels)
    assert agreement >= 0.98
    assert abs(np.mean(got.argmax(1) == test.labels) - keras_accuracy) <= 0.01


@pytest.mark.parametrize("fmt", ["litert", "onnx"])
def test_tta_is_inside_the_exported_graph_and_not_applied_twice(trained, data, exported, fmt):
    images = data.splits["test"].images[:64]
    keras_model, _ = load_model(trained / "flips.keras")
    with_flips = predict_probabilities(keras_model, images, 32, "flips")
    without = predict_probabilities(keras_model, images, 32, "none")
    assert np.abs(with_flips - without).max() > 1e-3  # else this test could not tell them apart

    clf = Classifier.load(exported(fmt, tta="flips"))
    raw = np.asarray(clf.model.predict_on_batch(images))  # the graph alone, no Python TTA
    assert np.abs(raw - with_flips).max() <= 1e-5
    assert (clf.tta, clf.runtime_tta) == ("flips", "none")
    assert np.abs(clf.probabilities(images) - with_flips).max() <= 1e-5
    with pytest.raises(PredictError, match="inside its graph"):
        Classifier.load(exported(fmt, tta="flips"), tta="none")


def test_side_json_carries_classes_and_the_check_against_keras(exported):
    path = exported("litert", tta="flips")
    side = json.loads(Path(f"{path}.json").read_text())
    assert side["classes"] == CLASSES and side["image_size"] == SIZE
    assert side["export"]["tta_in_graph"] == "flips" and side["export"]["target"] == "litert"
    assert side["export"]["verification"]["max_abs_diff"] <= 1e-4


def bessel_model():
    import keras
    import tensorflow as tf

    class BesselLayer(keras.layers.Layer):
        def call(self, x):
            return tf.math.bessel_i0e(x)  # no LiteRT builtin kernel, no ONNX op

    inputs = keras.Input((SIZE, SIZE, 3), dtype="uint8", name="image")
    x = BesselLayer(name="odd_bessel")(keras.layers.Rescaling(1 / 255)(inputs))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(len(CLASSES), activation="softmax")(x))


@pytest.mark.parametrize("fmt, name, suffix", [("litert", "LiteRT", ".tflite"), ("onnx", "ONNX", ".onnx")])
def test_a_layer_the_converter_cannot_handle_is_named(tmp_path, fmt, name, suffix):
    metadata = {"classes": CLASSES, "image_size": SIZE, "inference": {"tta": "flips"}}
    out = tmp_path / f"bad{suffix}"
    with pytest.raises(UnsupportedLayerError) as caught:
        export_model(bessel_model(), metadata, out, fmt)
    message = str(caught.value)
    assert f"cannot export to {name}" in message and "'odd_bessel' (BesselLayer)" in message
    assert "BesselI0e" in message and not out.exists()


def test_requests_that_cannot_work_are_refused_before_converting(capsys, trained, tmp_path):
    model = str(trained / "plain.keras")
    assert main(["export", "--model", model, "--format", "onnx", "--quantize", "float16",
                 "--out", str(tmp_path / "m.onnx")]) == 1
    assert "ONNX export supports --quantize none" in capsys.readouterr().err
    assert main(["export", "--model", model, "--format", "litert", "--out", str(tmp_path / "m.onnx")]) == 1
    assert "must end in .tflite" in capsys.readouterr().err
    assert main(["export", "--model", model, "--format", "litert", "--quantize", "int8",
                 "--calibration", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m.tflite")]) == 1
    err = capsys.readouterr().err
    assert "calibrated on training images" in err and "train.npz" in err
    assert not list(tmp_path.iterdir())


def test_calibration_images_must_fit_the_model(trained):
    with pytest.raises(ExportError, match="the model takes uint8"):
        calibration_images(trained / "prepared", SIZE * 2)


def test_cli_export_then_predict_and_evaluate_the_file(capsys, trained, data, tmp_path):
    out = tmp_path / "model.tflite"
    assert main(["export", "--model", str(trained / "flips.keras"), "--format", "litert", "--quantize",
                 "int8", "--calibration", str(trained / "prepared"), "--out", str(out)]) == 0
    assert "top-1 agreement" in capsys.readouterr().out and Path(f"{out}.json").is_file()

    test = data.splits["test"]
    files = []
    for i in range(4):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(test.images[i]).save(files[-1])
    assert main(["predict", "--model", str(out), "--format", "json", *map(str, files)]) == 0
    predicted = [p["label"] for p in json.loads(capsys.readouterr().out)["predictions"]]
    keras_probs = Classifier.load(trained / "flips.keras").probabilities(test.images[:4])
    assert predicted == [CLASSES[i] for i in keras_probs.argmax(1)]

    assert main(["evaluate", "--model", str(out), "--data", str(trained / "prepared"),
                 "--bootstrap", "0", "--out", str(tmp_path / "eval.json")]) == 0
    report = json.loads((tmp_path / "eval.json").read_text())
    expected = Classifier.load(trained / "flips.keras").probabilities(test.images).argmax(1)
    assert report["tta"] == "flips"
    assert abs(report["metrics"]["accuracy"] - np.mean(expected == test.labels)) <= 0.01


def test_grad_cam_on_an_exported_file_is_refused_clearly(data, exported):
    clf = Classifier.load(exported("litert"))
    with pytest.raises(PredictError, match="Grad-CAM needs the .keras model"):
        clf.explain(data.splits["test"].images[0])


def test_exported_files_give_the_same_status_and_ood_score_as_keras(tmp_path):
    """#25: the detector travels inside the exported graph; the adapters give Keras' statuses."""
    pytest.importorskip("onnxruntime")
    from tiny_model import lesion_like, noise, save_tiny_model

    from skinsage.app.classifier import Classifier
    from skinsage.export.convert import export_model
    from skinsage.model.model_file import load_model

    path = save_tiny_model(tmp_path / "model.keras")
    model, metadata = load_model(path)
    images = np.concatenate([lesion_like(12, 16, seed=3), np.stack([noise(s, (16, 16, 3)) for s in range(12)])])
    keras_clf = Classifier.load(path)
    probs, scores, statuses = keras_clf.outputs(images)
    # both answered and refused images: the comparison below can fail either way
    assert "out_of_distribution" in statuses and set(statuses) - {"out_of_distribution"}
    for fmt, out in (("litert", tmp_path / "m.tflite"), ("onnx", tmp_path / "m.onnx")):
        export_model(model, metadata, out, fmt, calibration=images)
        got = Classifier.load(out).outputs(images)
        np.testing.assert_allclose(got[0], probs, atol=1e-4)
        np.testing.assert_allclose(got[1], scores, rtol=1e-3, atol=1e-3)
        assert got[2] == statuses, fmt
