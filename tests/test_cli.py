"""The `skinsage` command: predict / evaluate / info, run in-process through `skinsage.app.cli.main`
and once as `python -m skinsage` to prove the entry point."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skinsage.app.classifier import Classifier
from skinsage.app.cli import main
from skinsage.evaluate.metrics import SUMMARY_KEYS, evaluate_predictions
from skinsage.model import model_file as modelfile
from skinsage.model.inference import predict_probabilities
from tiny_model import CLASSES, ROOT, SIZE, noise, save, truncated_jpeg


@pytest.fixture
def photos(tmp_path) -> list[Path]:
    return [save(Image.fromarray(noise(seed)), tmp_path / "photos" / f"p{seed}.jpg", quality=90)
            for seed in range(3)]


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- predict --------------------------------------------------------------------------------

def test_predict_json(capsys, model_path, clf, photos):
    code, out, err = run(capsys, "predict", "--model", model_path, *photos, "--format", "json")
    assert code == 0 and err == ""
    document = json.loads(out)
    assert document["classes"] == CLASSES and document["image_size"] == SIZE
    assert document["model_kind"] == "cnn" and document["skipped"] == []
    for entry, path in zip(document["predictions"], photos):
        expected = clf.predict(path)
        assert entry["path"] == str(path) and entry["image_size"] == SIZE
        assert entry["probabilities"] == pytest.approx(expected.probabilities, abs=1e-6)
        assert sum(entry["probabilities"].values()) == pytest.approx(1.0, abs=1e-12)
        probs = [p["probability"] for p in entry["top_k"]]
        assert probs == sorted(probs, reverse=True) and len(probs) == 3
        assert entry["label"] == entry["top_k"][0]["label"] == expected.label


def test_predict_json_is_the_default_when_stdout_is_not_a_terminal(capsys, model_path, photos):
    code, out, _ = run(capsys, "predict", "--model", model_path, photos[0])
    assert code == 0 and json.loads(out)["predictions"][0]["path"] == str(photos[0])


def test_predict_csv_with_top_k(capsys, model_path, clf, photos):
    code, out, _ = run(capsys, "predict", "--model", model_path, photos[0].parent,
                       "--format", "csv", "--top-k", "2")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["path", "image_size", "status", "ood_score", "label_1", "probability_1", "label_2",
                             "probability_2", "refer", "refer_probability"]
    assert [row["path"] for row in rows] == [str(p) for p in photos]
    for row, path in zip(rows, photos):
        expected = clf.predict(path, top_k=2).top_k
        assert [row["label_1"], row["label_2"]] == [name for name, _ in expected]
        assert float(row["probability_1"]) >= float(row["probability_2"])
        assert float(row["probability_1"]) == pytest.approx(expected[0][1], abs=1e-5)
        assert row["image_size"] == str(SIZE)


def test_predict_table(capsys, model_path, clf, photos):
    code, out, _ = run(capsys, "predict", "--model", model_path, *photos, "--format", "table")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"model {model_path}: cnn, 3 classes, input {SIZE}x{SIZE} px")
    assert lines[1].split() == ["path", "status", "ood_score", "#1", "#2", "#3", "refer"]
    for line, path in zip(lines[2:], photos):
        best = clf.predict(path)
        assert line.startswith(str(path)) and f"{best.label} {best.probability:6.1%}" in line


def test_folder_is_searched_recursively_and_a_non_image_is_reported(capsys, model_path, photos):
    nested = save(Image.fromarray(noise(9)), photos[0].parent / "more" / "deep.png")
    (photos[0].parent / "notes.txt").write_text("patient list")
    code, out, err = run(capsys, "predict", "--model", model_path, photos[0].parent, "--format", "json")
    assert code == 0  # something was predicted
    document = json.loads(out)
    assert {p["path"] for p in document["predictions"]} == {str(p) for p in [*photos, nested]}
    assert f"skipped {photos[0].parent / 'notes.txt'}: not an image" in err
    assert document["skipped"][0]["path"] == str(photos[0].parent / "notes.txt")


def test_truncated_jpeg_among_images_is_reported(capsys, model_path, photos, tmp_path):
    cut = truncated_jpeg(tmp_path / "cut.jpg")
    code, out, err = run(capsys, "predict", "--model", model_path, photos[0], cut, "--format", "csv")
    assert code == 0 and f"skipped {cut}: corrupt or truncated image" in err
    assert [row["path"] for row in csv.DictReader(io.StringIO(out))] == [str(photos[0])]


def test_nothing_readable_exits_non_zero(capsys, model_path, tmp_path):
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8 not really")
    code, out, err = run(capsys, "predict", "--model", model_path, tmp_path / "a.txt", tmp_path / "b.jpg")
    assert code == 1 and out == ""
    assert "error: none of the 2 file(s) could be read as an image" in err
    assert "Traceback" not in err


def test_missing_file_and_empty_folder_exit_non_zero(capsys, model_path, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "predict", "--model", model_path, tmp_path / "gone.jpg")
    assert code == 1 and f"skipped {tmp_path / 'gone.jpg'}: no such file or folder" in err
    assert err.strip().endswith("error: no image files to predict")
    code, _, err = run(capsys, "predict", "--model", model_path, tmp_path / "empty")
    assert code == 1 and "no image files in this folder" in err


def test_missing_file_among_images_is_reported_and_the_rest_predicted(capsys, model_path, photos, tmp_path):
    code, out, err = run(capsys, "predict", "--model", model_path, photos[0], tmp_path / "gone.jpg")
    assert code == 0 and "gone.jpg: no such file or folder" in err
    assert len(json.loads(out)["predictions"]) == 1


def test_decompression_bomb_message(capsys, model_path, tmp_path, monkeypatch):
    huge = save(Image.fromarray(noise(3, (60, 60, 3))), tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    code, _, err = run(capsys, "predict", "--model", model_path, huge)
    assert code == 1 and f"skipped {huge}: too large to decode safely" in err


@pytest.mark.parametrize("kind", ["text", "plain keras"])
def test_bad_model_files(capsys, tmp_path, clf, photos, kind):
    path = tmp_path / "model.keras"
    if kind == "text":
        path.write_text("hello")
        message = "not a Keras .keras model file"
    else:
        clf.model.save(path)
        message = "a Keras file without SkinSage metadata"
    for argv in (["predict", "--model", path, photos[0]], ["info", "--model", path],
                 ["evaluate", "--model", path, "--data", tmp_path]):
        code, out, err = run(capsys, *argv)
        assert code == 1 and out == "" and err.startswith(f"error: {path}: {message}")
        assert "Traceback" not in err


def test_model_is_loaded_once_per_command(capsys, model_path, photos, monkeypatch):
    calls = []
    real = modelfile.load_model
    monkeypatch.setattr(modelfile, "load_model", lambda path: calls.append(path) or real(path))
    code, out, _ = run(capsys, "predict", "--model", model_path, *photos, "--batch-size", "2")
    assert code == 0 and len(json.loads(out)["predictions"]) == 3 and calls == [str(model_path)]


def test_bad_arguments_are_usage_errors(capsys, model_path, photos):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--model", str(model_path), str(photos[0]), "--top-k", "0"])
    assert exit_info.value.code == 2 and "must be at least 1" in capsys.readouterr().err


# --- info -----------------------------------------------------------------------------------

def test_info(capsys, model_path, clf):
    code, out, _ = run(capsys, "info", "--model", model_path)
    assert code == 0
    assert "kind:         cnn" in out and f"input size:   {SIZE}x{SIZE} px RGB" in out
    assert "trained on:   generated test images" in out
    assert f"params hash:  {clf.metadata['params_hash']}" in out
    assert all(f"  {i}  {name}" in out for i, name in enumerate(CLASSES))
    assert f'models.cnn: {{"image_size": {SIZE}, "color_constancy": "none", "filters": [4, 8]' in out
    assert "test metrics: not recorded" in out
    ood, uncertain = clf.decision["ood"], clf.decision["uncertain"]  # the thresholds behind `status`
    assert (f"refuses:      out_of_distribution when ood_score > {ood['threshold']:.4g} (keeps 97% of validation "
            f"lesions); uncertain when the top probability < {uncertain['threshold']:.3f} (answers 90%") in out
    code, out, _ = run(capsys, "info", "--model", model_path, "--format", "json")
    info = json.loads(out)
    assert info["decision"] == clf.decision
    assert info["classes"] == CLASSES and info["image_size"] == SIZE and info["model"] == "cnn"
    assert info["train_summary"]["epochs_run"] == 1 and info["test_metrics"] is None


# --- evaluate -------------------------------------------------------------------------------

def class_folders(root: Path, names: list[tuple[str, int]],
                  per_class: int = 4) -> tuple[np.ndarray, list[int]]:
    """Lossless PNGs at the model's size, so the expected model input is known exactly; returned
    in the order `load_folder` reads them (folders by name, then files by name)."""
    images, labels = [], []
    for folder, class_index in sorted(names):
        for i in range(per_class):
            pixels = noise(100 * class_index + i, (SIZE, SIZE, 3))
            save(Image.fromarray(pixels), root / folder / f"{i}.png")
            images.append(pixels)
            labels.append(class_index)
    return np.stack(images), labels


def expected_metrics(clf: Classifier, images: np.ndarray, labels) -> dict:
    """What the evaluate stage computes: its probability function, then skinsage.metrics."""
    probs = predict_probabilities(clf.model, images, batch_size=256, tta=clf.tta)
    return evaluate_predictions(np.asarray(labels), probs, CLASSES)


def assert_same_metrics(written: dict, expected: dict) -> None:
    for key in SUMMARY_KEYS:
        assert written["metrics"][key] == pytest.approx(expected[key], rel=1e-9, nan_ok=True), key
    for name, stats in expected["per_class"].items():
        for key, value in stats.items():
            got = written["per_class"][name][key]
            assert (got is None and np.isnan(value)) or got == pytest.approx(value, rel=1e-9), (name, key)


def test_evaluate_on_class_folders(capsys, tmp_path, model_path, clf):
    # folder names match the model's classes ignoring case and separators
    images, labels = class_folders(tmp_path / "data", [("Melanoma", 2), ("benign_keratosis", 0),
                                                       ("melanocytic-nevi", 1)])
    (tmp_path / "data" / "Melanoma" / "readme.txt").write_text("x")
    out_file = tmp_path / "out" / "metrics.json"
    code, out, err = run(capsys, "evaluate", "--model", model_path, "--data", tmp_path / "data",
                         "--out", out_file, "--bootstrap", "0", "--workers", "1")
    assert code == 0 and "readme.txt: not an image" in err
    written = json.loads(out_file.read_text())
    expected = expected_metrics(clf, images, labels)
    assert_same_metrics(written, expected)
    assert written["metrics"]["num_images"] == 12 and "ci95" not in written["metrics"]
    assert written["confusion"]["classes"] == CLASSES
    assert np.sum(written["confusion"]["matrix"]) == 12
    assert "accuracy" in out and f"{expected['accuracy']:.4f}" in out
    assert all(name in out for name in CLASSES)


def test_evaluate_unknown_folder_lists_both_sets(capsys, tmp_path, model_path):
    class_folders(tmp_path / "data", [("melanoma", 2), ("tattoos", 0)], per_class=1)
    code, out, err = run(capsys, "evaluate", "--model", model_path, "--data", tmp_path / "data")
    assert code == 1 and out == ""
    assert "class folders the model does not know: tattoos" in err
    assert "folders:             melanoma, tattoos" in err
    assert "the model's classes: benign keratosis, melanocytic nevi, melanoma" in err
    code, _, err = run(capsys, "evaluate", "--model", model_path, "--data", tmp_path / "data",
                       "--map", "tattoos=benign keratosis", "--workers", "1", "--bootstrap", "0")
    assert code == 0, err


def test_evaluate_on_npz_test_split(capsys, tmp_path, model_path, clf):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 6), ("val", 3), ("test", 12)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 3).astype(np.uint8)[:, None]  # MedMNIST: (N, 1)
    np.savez(tmp_path / "derma.npz", **arrays)
    out_file = tmp_path / "metrics.json"
    code, out, _ = run(capsys, "evaluate", "--model", model_path, "--data", tmp_path / "derma.npz",
                       "--out", out_file, "--bootstrap", "50")
    assert code == 0
    written = json.loads(out_file.read_text())
    expected = expected_metrics(clf, arrays["test_images"], arrays["test_labels"][:, 0])
    assert_same_metrics(written, expected)
    assert set(written["metrics"]["ci95"]) == {"accuracy", "balanced_accuracy", "auc_macro_ovr"}
    assert written["seed"] == clf.metadata["params"]["seed"] and written["bootstrap"] == 50
    assert "95% CI" in out and "test split" in out


def test_evaluate_missing_or_wrong_data(capsys, tmp_path, model_path):
    code, _, err = run(capsys, "evaluate", "--model", model_path, "--data", tmp_path / "nope.npz")
    assert code == 1 and "no such file or folder" in err
    (tmp_path / "labels.txt").write_text("a,b")
    code, _, err = run(capsys, "evaluate", "--model", model_path, "--data", tmp_path / "labels.txt")
    assert code == 1 and "expected a folder with one sub-folder per class, a CSV of labels" in err
    (tmp_path / "labels.csv").write_text("a,b")  # a CSV of labels needs the folder of its images
    code, _, err = run(capsys, "evaluate", "--model", model_path, "--data", tmp_path / "labels.csv")
    assert code == 1 and "is a CSV of labels: give the folder of its images with --images DIR" in err


# --- the entry point ------------------------------------------------------------------------

def test_python_dash_m_skinsage(model_path, photos):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-m", "skinsage", "predict", "--model", str(model_path),
                             str(photos[0]), "--format", "json"], capture_output=True, text=True,
                            env=env, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["predictions"][0]["path"] == str(photos[0])
    result = subprocess.run([sys.executable, "-m", "skinsage", "info", "--model", "missing.keras"],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert result.returncode == 1
    assert result.stderr == "error: missing.keras: no such model file\n"


def test_installed_console_script():
    script = Path(sys.executable).parent / "skinsage"
    if not script.exists():
        script = shutil.which("skinsage")
        if script is None:
            pytest.skip("the package is not installed (make setup runs pip install -e .)")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "skinsage 0.1.0"


def test_the_old_metadata_flag_names_its_new_name(capsys, tmp_path):
    code, _, err = run(capsys, "predict", "--metadata", str(tmp_path / "clinical.csv"), str(tmp_path))
    assert code == 1 and "error: --metadata was renamed to --clinical: pass --clinical FILE.csv" in err
