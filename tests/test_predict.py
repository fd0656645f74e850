"""The Python API (`skinsage.Classifier`), folder matching for `evaluate`, and `info`'s metrics.

A tiny random-weight CNN is enough: what is tested is the pipeline around the network (decoding,
preprocessing identical to `prepare`, batching, top-k, errors), not its accuracy.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skinsage import Classifier, Prediction
from skinsage.app.classifier import PredictError
from skinsage.app.files import collect_images
from skinsage.app.evaluation_data import LabelledDataError, match_folders
from skinsage.app.model_info import recorded_test_metrics
from skinsage.data.images import ImageError
from skinsage.data.prepare import prepare
from skinsage.data.sources.folder import load_folder
from skinsage.errors import SkinSageError
from skinsage.model.inference import predict_probabilities
from skinsage.model.model_file import ModelFileError, save_model
from tiny_model import (CLASSES, ROOT, SIZE, exif_rotated, noise, save, save_tiny_model, tiny_params,
                        truncated_jpeg)


# --- generated image files ------------------------------------------------------------------

def every_kind(folder: Path, seed: int) -> list[Path]:
    """One file of each awkward kind a user's photo folder holds, with distinct content."""
    rgba = np.dstack([noise(seed), np.linspace(0, 255, 30, dtype=np.uint8)[None, :].repeat(24, 0)])
    grey16 = (noise(seed + 1, (24, 30)).astype(np.uint16) * 257)
    return [
        save(Image.fromarray(noise(seed + 2)), folder / f"photo{seed}.jpg", quality=90),
        exif_rotated(folder / f"phone{seed}.jpg", seed=seed + 3),
        save(Image.fromarray(rgba, "RGBA"), folder / f"alpha{seed}.png"),
        save(Image.fromarray(noise(seed + 4, (24, 30)), "L"), folder / f"grey{seed}.png"),
        save(Image.fromarray(grey16), folder / f"grey16_{seed}.png"),
        save(Image.fromarray(noise(seed + 5)).convert("CMYK"), folder / f"cmyk{seed}.jpg", quality=95),
    ]


# --- predicting a file = predicting what `prepare` made of it -------------------------------

def test_file_prediction_equals_prediction_of_its_prepared_array(tmp_path, clf):
    files = []
    for seed, name in ((10, "benign keratosis"), (20, "melanocytic nevi")):
        files += every_kind(tmp_path / "images" / name, seed)
    assert Image.open(files[4]).mode == "I;16" and Image.open(files[5]).mode == "CMYK"
    params = tiny_params(**{"data.source": "folder", "data.folder.path": str(tmp_path / "images")})
    data = prepare(params, tmp_path / "prepared", tmp_path / "data.json")
    prepared = np.concatenate([split.images for split in data.splits.values()])
    assert len(prepared) == len(files)  # nothing skipped, nothing merged
    for path in files:
        from_file = clf.input_array(path)
        matches = [array for array in prepared if np.array_equal(array, from_file)]
        assert len(matches) == 1, f"{path.name}: decoded differently from prepare"
        by_file, by_array = clf.predict(path), clf.predict(matches[0])
        assert by_file.probabilities == by_array.probabilities  # exactly
        assert by_file.source == str(path) and by_array.source is None
        via_evaluate = predict_probabilities(clf.model, matches[0][None], batch_size=1, tta=clf.tta)[0]
        np.testing.assert_allclose(list(by_file.probabilities.values()), via_evaluate, atol=1e-6)


def test_exif_rotated_photo_is_turned_as_prepare_turns_it(tmp_path, clf):
    photo = exif_rotated(tmp_path / "data" / "melanoma" / "phone.jpg")
    save(Image.fromarray(noise(1)), tmp_path / "data" / "melanoma" / "other.jpg")
    save(Image.fromarray(noise(2)), tmp_path / "data" / "melanocytic nevi" / "x.jpg")
    raw = load_folder(tmp_path / "data", SIZE, workers=1)  # the source `prepare` reads folders with
    by_prepare = raw.images["all"][raw.paths["all"].index(str(photo))]
    array = clf.input_array(photo)
    np.testing.assert_array_equal(array, by_prepare)
    top, bottom = array[:4].reshape(-1, 3).mean(0), array[-4:].reshape(-1, 3).mean(0)
    assert top[0] > 180 and top[2] < 80      # upright as displayed: red on top
    assert bottom[2] > 180 and bottom[0] < 80  # blue below


@pytest.mark.parametrize("make, expected", [
    (lambda d: save(Image.new("RGBA", (20, 20), (200, 100, 50, 0)), d / "clear.png"), (0, 0, 0)),
    (lambda d: save(Image.new("RGBA", (20, 20), (200, 100, 50, 255)), d / "opaque.png"), (200, 100, 50)),
    (lambda d: save(Image.new("L", (20, 20), 77), d / "grey.png"), (77, 77, 77)),
    (lambda d: save(Image.fromarray(np.full((20, 20), 65535, np.uint16)), d / "white16.png"),
     (255, 255, 255)),
    (lambda d: save(Image.fromarray(np.full((20, 20), 32896, np.uint16)), d / "mid16.png"),
     (128, 128, 128)),
    (lambda d: save(Image.new("CMYK", (20, 20), (255, 0, 0, 0)), d / "cmyk.jpg", quality=95),
     (0, 255, 255)),
])
def test_awkward_image_modes_become_the_expected_rgb(tmp_path, clf, make, expected):
    path = make(tmp_path)
    array = clf.input_array(path)
    assert array.shape == (SIZE, SIZE, 3) and array.dtype == np.uint8
    assert np.abs(array.astype(int) - expected).max() <= 3
    result = clf.predict(path)
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-12)


# --- unreadable inputs ----------------------------------------------------------------------

@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.jpg", "no such file"),
    (lambda d: truncated_jpeg(d / "cut.jpg"), "corrupt or truncated image"),
    (lambda d: (d / "notes.jpg").write_text("not a photo") and d / "notes.jpg",
     "not an image Pillow can read"),
])
def test_unreadable_file_raises_image_error(tmp_path, clf, make, message):
    with pytest.raises(ImageError, match=message):
        clf.predict(make(tmp_path))


def test_huge_image_is_refused_by_the_decompression_bomb_guard(tmp_path, clf, monkeypatch):
    path = save(Image.fromarray(noise(3, (60, 60, 3))), tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 3600 px > 2 x limit, as a gigapixel file would be
    with pytest.raises(ImageError, match="too large to decode safely"):
        clf.predict(path)


# --- model files ----------------------------------------------------------------------------

def test_text_file_is_not_a_model(tmp_path):
    path = tmp_path / "model.keras"
    path.write_text("not a model")
    with pytest.raises(ModelFileError, match="not a Keras .keras model file"):
        Classifier.load(path)


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelFileError, match="no such model file"):
        Classifier.load(tmp_path / "nope.keras")


def test_keras_file_without_skinsage_metadata(tmp_path, clf):
    path = tmp_path / "plain.keras"
    clf.model.save(path)  # as another tool (plain Keras) would save it
    with pytest.raises(ModelFileError, match="without SkinSage metadata"):
        Classifier.load(path)


def test_zip_with_metadata_but_no_keras_model(tmp_path):
    path = tmp_path / "fake.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("skinsage.json", json.dumps({"classes": CLASSES, "image_size": SIZE}))
    with pytest.raises(ModelFileError, match="cannot load it as a Keras model"):
        Classifier.load(path)


def test_model_with_code_is_refused_by_safe_mode(tmp_path):
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)  # arbitrary Python code inside the file
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    path = tmp_path / "lambda.keras"
    save_model(model, path, {"classes": CLASSES, "image_size": SIZE})
    with pytest.raises(ModelFileError, match="safe_mode"):
        Classifier.load(path)


def test_metadata_that_does_not_fit_the_network_is_refused(tmp_path, clf):
    path = tmp_path / "mislabelled.keras"
    save_model(clf.model, path, {**clf.metadata, "classes": ["a", "b"]})
    with pytest.raises(ModelFileError, match="3 outputs but its metadata names 2 classes"):
        Classifier.load(path)
    save_model(clf.model, path, {**clf.metadata, "image_size": 224})
    with pytest.raises(ModelFileError, match="says 224 px"):
        Classifier.load(path)


def test_metadata_comes_from_the_model_file(clf):
    assert clf.classes == CLASSES and clf.image_size == SIZE and clf.kind == "cnn"
    assert clf.metadata["dataset"] == "generated test images" and len(clf.metadata["params_hash"]) == 12


# --- the API: inputs, results, batching -----------------------------------------------------

def test_result_object(clf, tmp_path):
    path = save(Image.fromarray(noise(4)), tmp_path / "x.png")
    result = clf.predict(path, top_k=2)
    assert isinstance(result, Prediction)
    probs = np.array(list(result.probabilities.values()))
    assert list(result.probabilities) == CLASSES
    assert probs.sum() == pytest.approx(1.0, abs=1e-12) and (probs > 0).all()
    order = np.argsort(-probs)
    assert result.top_k == [(CLASSES[i], probs[i]) for i in order[:2]]
    assert (result.label, result.probability) == result.top_k[0]
    assert result.label == CLASSES[int(probs.argmax())]
    as_dict = result.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["path"] == str(path) and as_dict["image_size"] == SIZE
    assert [entry["label"] for entry in as_dict["top_k"]] == [CLASSES[i] for i in order[:2]]


def test_top_k_is_capped_at_the_number_of_classes_and_must_be_positive(clf):
    assert len(clf.predict(noise(5), top_k=10).top_k) == len(CLASSES)
    with pytest.raises(PredictError, match="top-k must be at least 1"):
        clf.predict(noise(5), top_k=0)


def test_accepts_pillow_images_and_arrays_of_any_size(clf):
    pixels = noise(6, (40, 50, 3))
    from_array = clf.predict(pixels)
    from_pillow = clf.predict(Image.fromarray(pixels))
    assert from_array.probabilities == from_pillow.probabilities
    assert clf.predict(pixels[..., 0]).image_size == SIZE            # grey (H, W)
    assert clf.predict(pixels[..., :1]).label in CLASSES             # grey (H, W, 1)


def test_a_list_is_one_batch_and_gives_a_list(clf, tmp_path):
    path = save(Image.fromarray(noise(7)), tmp_path / "y.jpg")
    inputs = [noise(s) for s in range(5)] + [path, Image.fromarray(noise(8))]
    one_batch = clf.predict(inputs)
    small_batches = clf.predict(inputs, batch_size=2)
    assert isinstance(one_batch, list) and len(one_batch) == len(inputs)
    for a, b, item in zip(one_batch, small_batches, inputs):
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-6)  # batch size: float noise only
        assert a.probabilities == pytest.approx(clf.predict(item).probabilities, abs=1e-6)
    assert one_batch[5].source == str(path)
    stacked = np.stack([clf.input_array(x) for x in inputs[:3]])
    assert [r.label for r in clf.predict(stacked)] == [r.label for r in one_batch[:3]]
    assert clf.predict([]) == []


@pytest.mark.parametrize("bad, message", [
    (np.zeros((20, 20, 3), np.float32), "expected a uint8 image array"),
    (np.zeros((20, 20, 2), np.uint8), r"shape \(H, W\), \(H, W, 3\)"),
    (12345, "cannot predict a int"),
])
def test_unusable_python_inputs(clf, bad, message):
    with pytest.raises(PredictError, match=message):
        clf.predict(bad)


def test_predict_files_reports_unreadable_files_and_keeps_order(clf, tmp_path):
    good = [save(Image.fromarray(noise(s)), tmp_path / f"{s}.png") for s in range(3)]
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    outcomes = list(clf.predict_files([good[0], bad, good[1], good[2]], top_k=1, batch_size=2))
    assert [o.path for o in outcomes] == [str(good[0]), str(bad), str(good[1]), str(good[2])]
    assert outcomes[1].prediction is None and "not an image" in outcomes[1].error
    for outcome, path in zip([outcomes[0], *outcomes[2:]], good):
        assert outcome.error is None and outcome.prediction.source == str(path)
        assert outcome.prediction.probabilities == pytest.approx(clf.predict(path).probabilities,
                                                                 abs=1e-6)


def test_importing_skinsage_does_not_import_tensorflow():
    code = ("import sys, skinsage; from skinsage import Classifier; import skinsage.app.cli; "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_errors_are_skinsage_errors():
    for error in (PredictError, ModelFileError, ImageError, LabelledDataError):
        assert issubclass(error, SkinSageError)


# --- collecting files -----------------------------------------------------------------------

def test_collect_images_searches_folders_recursively(tmp_path):
    a = save(Image.fromarray(noise(1)), tmp_path / "dir" / "b" / "a.jpg")
    b = save(Image.fromarray(noise(2)), tmp_path / "dir" / "a.png")
    (tmp_path / "dir" / ".DS_Store").write_text("x")
    (tmp_path / "dir" / "Thumbs.db").write_text("x")
    save(Image.fromarray(noise(3)), tmp_path / "dir" / ".hidden" / "c.jpg")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    found = collect_images([tmp_path / "dir", b, tmp_path / "empty", tmp_path / "gone.jpg"])
    assert found.files == [b, a]  # sorted walk; `b` named twice, predicted once
    assert found.problems == [(str(tmp_path / "empty"), "no image files in this folder (searched recursively)"),
                              (str(tmp_path / "gone.jpg"), "no such file or folder")]


# --- evaluate: folders to classes -----------------------------------------------------------

def test_folders_match_class_names_exactly_or_loosely():
    mapping = match_folders(["Melanoma", "benign_keratosis", "melanocytic-nevi"], CLASSES, {})
    assert mapping == {"Melanoma": 2, "benign_keratosis": 0, "melanocytic-nevi": 1}


def test_folders_can_be_mapped_by_hand():
    assert match_folders(["bkl", "mel"], CLASSES, {"bkl": "benign keratosis", "mel": "melanoma"}) \
        == {"bkl": 0, "mel": 2}
    with pytest.raises(LabelledDataError, match="--map names folders that do not exist: nv"):
        match_folders(["bkl"], CLASSES, {"nv": "melanocytic nevi"})


def test_unknown_folder_lists_both_sets():
    with pytest.raises(LabelledDataError) as info:
        match_folders(["melanoma", "tattoo"], CLASSES, {})
    message = str(info.value)
    assert "class folders the model does not know: tattoo" in message
    assert "folders:             melanoma, tattoo" in message
    assert "the model's classes: benign keratosis, melanocytic nevi, melanoma" in message


# --- info: test metrics only when dvc.lock proves they are this model's ---------------------

def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def fake_project(tmp_path: Path, model_path: Path) -> tuple[Path, Path]:
    model = tmp_path / "models" / "model.keras"
    model.parent.mkdir()
    model.write_bytes(model_path.read_bytes())
    eval_json = tmp_path / "metrics" / "eval_full.json"
    eval_json.parent.mkdir()
    eval_json.write_text(json.dumps({"accuracy": 0.75, "num_images": 40}))
    lock = {"schema": "2.0", "stages": {"evaluate": {
        "cmd": "python stages/evaluate.py",
        "deps": [{"path": "models/model.keras", "hash": "md5", "md5": md5(model)}],
        "outs": [{"path": "metrics/eval_full.json", "hash": "md5", "md5": md5(eval_json)}]}}}
    (tmp_path / "dvc.lock").write_text(json.dumps(lock))  # JSON is valid YAML
    return model, eval_json


def test_info_shows_metrics_that_dvc_lock_ties_to_this_model(tmp_path, model_path, clf):
    model, eval_json = fake_project(tmp_path, model_path)
    metrics, source = recorded_test_metrics(model)
    assert metrics == {"accuracy": 0.75, "num_images": 40} and str(eval_json) in source


def test_info_hides_metrics_of_another_model(tmp_path, model_path, clf):
    model, eval_json = fake_project(tmp_path, model_path)
    save_tiny_model(model, seed=1)  # retrained since `evaluate` ran
    assert recorded_test_metrics(model) == (None, None)


def test_info_hides_edited_metrics(tmp_path, model_path, clf):
    model, eval_json = fake_project(tmp_path, model_path)
    eval_json.write_text(json.dumps({"accuracy": 0.99}))
    assert recorded_test_metrics(model) == (None, None)


# --- the one inference path: the TTA recorded in the model file ----------------------------------

def test_classifier_runs_the_model_with_its_recorded_tta(model_path, clf):
    images = np.stack([noise(seed, (SIZE, SIZE, 3)) for seed in range(4)])
    recorded = clf.metadata["inference"]
    assert {k: recorded[k] for k in ("tta", "temperature")} == {"tta": "flips", "temperature": 1.0}
    assert clf.tta == "flips"
    flips = predict_probabilities(clf.model, images, 8, tta="flips")
    plain = predict_probabilities(clf.model, images, 8, tta="none")
    assert np.abs(flips - plain).max() > 1e-4  # the flips matter for this model: the test can fail
    np.testing.assert_allclose(clf.probabilities(images), flips, atol=1e-7)
    np.testing.assert_allclose(Classifier.load(model_path, tta="none").probabilities(images), plain, atol=1e-7)
    with pytest.raises(PredictError, match="tta must be one of none, flips"):
        Classifier(clf.model, clf.metadata, tta="rotations")


def test_tta_of_older_files_comes_from_their_params_and_bad_values_are_refused(tmp_path, clf):
    older = {k: v for k, v in clf.metadata.items() if k != "inference"}
    save_model(clf.model, tmp_path / "older.keras", older)
    assert Classifier.load(tmp_path / "older.keras").tta == "flips"  # params.evaluate.tta
    save_model(clf.model, tmp_path / "bad.keras", {**clf.metadata, "inference": {"tta": "sideways"}})
    with pytest.raises(ModelFileError,
                       match="the TTA its SkinSage metadata records must be one of none, flips, got 'sideways'"):
        Classifier.load(tmp_path / "bad.keras")
