"""The real `dvc` commands on a throw-away copy of the project: tiny synthetic data, the CNN, 2 epochs."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from dvc_project import TINY_SYNTHETIC, copy_project, dvc, set_params
from skinsage.contracts.history import read_history

pytestmark = pytest.mark.e2e
STAGES = ("prepare", "train", "evaluate", "plot")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = copy_project(tmp_path_factory.mktemp("e2e") / "project", TINY_SYNTHETIC)
    result = dvc(project, "repro")
    for stage in STAGES:
        assert f"Running stage '{stage}'" in result.stdout
    return project


def test_every_declared_output_exists_with_expected_structure(project):
    prepared = project / "data" / "prepared"
    labels = json.loads((prepared / "labels.json").read_text())
    assert labels["classes"] == ["synthetic_circle", "synthetic_square", "synthetic_triangle"]
    assert labels["image_size"] == 28 and "synthetic" in labels["dataset"]
    total = 0
    for split in ("train", "val", "test"):
        with np.load(prepared / f"{split}.npz") as npz:
            assert npz["images"].dtype == np.uint8 and npz["images"].shape[1:] == (28, 28, 3)
            assert set(npz["labels"]) == {0, 1, 2}  # stratified: every class in every split
            total += len(npz["labels"])
    assert total == 90

    assert (project / "models" / "model.keras").stat().st_size > 0
    history = read_history(project / "dvclive")  # dvclive's per-epoch files
    assert [row["epoch"] for row in history] == [1, 2] and {row["phase"] for row in history} == {"train"}
    assert all(0 <= row[key] <= 1 for row in history for key in ("accuracy", "val_accuracy"))
    live = json.loads((project / "dvclive" / "metrics.json").read_text())
    assert live["step"] == 1 and live["phase"] == "train"  # the last epoch (steps count from 0)
    assert live["eval"]["loss"] == pytest.approx(history[-1]["val_loss"])
    train = json.loads((project / "metrics" / "train.json").read_text())
    assert set(train) == {"epochs_run", "best_epoch", "train_seconds", "logit_adjustment_tau"}

    evaluation = json.loads((project / "metrics" / "eval.json").read_text())
    assert evaluation["model_type"] == "cnn" and set(evaluation["val"]) == set(evaluation) - {"model_type", "val"}
    assert 0 <= evaluation["accuracy"] <= 1 and 0 <= evaluation["balanced_accuracy"] <= 1
    assert evaluation["loss"] > 0
    full = json.loads((project / "metrics" / "eval_full.json").read_text())
    assert all(full[key] == evaluation[key] for key in evaluation if key not in ("model_type", "val"))
    assert "ci95" in full and "num_images" in full["val"]
    confusion = json.loads((project / "metrics" / "confusion.json").read_text())
    assert confusion["classes"] == labels["classes"]
    with np.load(prepared / "test.npz") as npz:
        assert np.asarray(confusion["matrix"]).sum() == len(npz["labels"])
    predictions = list(csv.DictReader((project / "metrics" / "predictions.csv").open()))
    assert len(predictions) == np.asarray(confusion["matrix"]).sum()
    assert {row["actual"] for row in predictions} == set(labels["classes"])

    for png in ("training_curves.png", "confusion_matrix.png"):
        assert (project / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert set(STAGES) <= set(lock["stages"])


def skinsage(project, *args) -> str:
    """`python -m skinsage ...` in the project, as a user runs it there (the project's own code)."""
    from dvc_project import env
    result = subprocess.run([sys.executable, "-m", "skinsage", *map(str, args)], cwd=project, env=env(),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_skinsage_evaluate_on_the_prepared_test_split_reproduces_eval_json(project):
    recorded = json.loads((project / "metrics" / "eval_full.json").read_text())
    skinsage(project, "evaluate", "--model", "models/model.keras", "--data", "data/prepared",
             "--split", "test", "--out", "cli_eval.json")
    cli = json.loads((project / "cli_eval.json").read_text())
    assert cli["tta"] == "flips"  # params.yaml's evaluate.tta, recorded in the model file
    for key in ("accuracy", "balanced_accuracy", "auc_macro_ovr", "loss", "ece", "brier", "macro_f1"):
        assert cli["metrics"][key] == pytest.approx(recorded[key], abs=1e-6), key
    for key, interval in recorded["ci95"].items():
        assert cli["metrics"]["ci95"][key] == pytest.approx(interval, abs=1e-6), key
    # the referral figures at the threshold train recorded: the same from the stage and the command
    assert recorded["referral"]["classes"] == ["synthetic_circle"] and "referral_sensitivity" in recorded
    for key in ("sensitivity", "specificity", "ppv", "npv", "referral_rate", "auc", "threshold"):
        assert cli["metrics"]["referral"][key] == pytest.approx(recorded["referral"][key], abs=1e-9, nan_ok=True), key
    for key, interval in recorded["referral"]["ci95"].items():
        assert cli["metrics"]["referral"]["ci95"][key] == pytest.approx(interval, abs=1e-9), key
    # without the model's TTA the same command scores differently: it is really applied
    skinsage(project, "evaluate", "--model", "models/model.keras", "--data", "data/prepared",
             "--tta", "none", "--out", "cli_eval_plain.json")
    plain = json.loads((project / "cli_eval_plain.json").read_text())
    assert plain["tta"] == "none" and abs(plain["metrics"]["loss"] - recorded["loss"]) > 1e-6


def test_skinsage_predict_gives_the_probabilities_in_predictions_csv(project, tmp_path):
    from PIL import Image
    with np.load(project / "data" / "prepared" / "test.npz") as npz:
        images = npz["images"]
    for i, image in enumerate(images):  # PNG: lossless, and already at the model's size
        Image.fromarray(image).save(tmp_path / f"{i:03d}.png")
    predicted = json.loads(skinsage(project, "predict", "--model", "models/model.keras", "--format", "json",
                                    tmp_path))
    rows = list(csv.DictReader((project / "metrics" / "predictions.csv").open()))
    assert predicted["tta"] == "flips" and len(predicted["predictions"]) == len(rows) == len(images)
    for prediction in predicted["predictions"]:
        row = rows[int(Path(prediction["path"]).stem)]
        expected = {key.removeprefix("p_"): float(v) for key, v in row.items() if key.startswith("p_")}
        assert set(expected) == set(prediction["probabilities"])
        for name, p in expected.items():
            assert prediction["probabilities"][name] == pytest.approx(p, abs=1e-6)
        assert prediction["label"] == row["predicted"]
        # the same decisions as evaluate's (refer empty = no advice: an out-of-distribution image)
        assert prediction["status"] == row["status"]
        assert prediction["refer"] == {"true": True, "false": False, "": None}[row["refer"]]
        assert prediction["refer_probability"] == pytest.approx(float(row["refer_probability"]), abs=1e-6)


def test_export_stage_is_off_by_default_and_exports_when_asked(project, tmp_path):
    manifest = json.loads((project / "models" / "exported" / "manifest.json").read_text())
    assert manifest == {"formats": [], "files": []}  # the default: a manifest, nothing converted
    set_params(project, {"export.formats": ["litert_int8"]})
    result = dvc(project, "repro", "export")
    assert "Running stage 'export'" in result.stdout and "Running stage 'train'" not in result.stdout
    exported = project / "models" / "exported" / "model_int8.tflite"
    side = json.loads(exported.with_name("model_int8.tflite.json").read_text())
    assert side["export"]["quantize"] == "int8" and side["export"]["calibration_images"] > 0
    from PIL import Image
    with np.load(project / "data" / "prepared" / "test.npz") as npz:
        Image.fromarray(npz["images"][0]).save(tmp_path / "x.png")
    answer = json.loads(skinsage(project, "predict", "--model", exported, "--format", "json", tmp_path / "x.png"))
    assert answer["predictions"][0]["label"] in answer["classes"]
    set_params(project, {"export.formats": []})
    dvc(project, "repro")


def test_second_repro_runs_nothing(project):
    result = dvc(project, "repro")
    assert "Running stage" not in result.stdout
    assert dvc(project, "status").stdout.strip().startswith("Data and pipelines are up to date")


def test_evaluate_param_change_does_not_retrain(project):
    set_params(project, {"evaluate.batch_size": 7})
    result = dvc(project, "repro")
    assert "Running stage 'evaluate'" in result.stdout
    assert "Running stage 'train'" not in result.stdout
    assert "Running stage 'prepare'" not in result.stdout


def test_experiment_changing_image_size_reprepares_and_retrains(project):
    from dvc_project import git
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "baseline run")
    result = dvc(project, "exp", "run", "-S", "models.cnn.image_size=32")
    for stage in ("prepare", "train", "evaluate"):
        assert f"Running stage '{stage}'" in result.stdout
    labels = json.loads((project / "data" / "prepared" / "labels.json").read_text())
    assert labels["image_size"] == 32

    diff = dvc(project, "metrics", "diff").stdout
    assert "metrics/eval.json" in diff and "accuracy" in diff
    show = dvc(project, "exp", "show", "--no-pager", "--csv").stdout
    header = show.splitlines()[0]
    assert "accuracy" in header and "models.cnn.image_size" in header
