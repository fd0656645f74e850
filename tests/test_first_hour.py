"""Small things a new user notices (issue #28, point 6): no negative zero in numbers shown, the web
page never names a path on the server, `export --help` says what an export is checked on, and the
download stage's output is never an empty folder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from skinsage.contracts.evaluation import format_value
from skinsage.fileio import md5sum
from skinsage.model.temperature import negative_log_likelihood

ROOT = Path(__file__).resolve().parents[1]


def test_numbers_that_round_to_zero_print_without_a_sign():
    assert [format_value(v) for v in (-1e-17, -0.0, 0.0, -0.0004)] == ["0.000"] * 4
    assert format_value(-0.0006) == "-0.001" and format_value(-0.25, 2) == "-0.25"
    assert format_value(None) == "n/a" and format_value(7) == "7"


def test_a_perfect_fit_has_log_loss_plus_zero():
    labels = np.array([0, 1, 1])
    perfect = np.array([[1.0, 0.0], [0.0, 1.0], [1e-17, 1.0 + 2e-16]])  # a sum that rounds above 1
    loss = negative_log_likelihood(labels, perfect, 1.0)
    assert loss == 0.0 and np.copysign(1.0, loss) == 1.0 and f"{loss:.4f}" == "0.0000"
    assert negative_log_likelihood(labels, np.full((3, 2), 0.5), 1.0) == pytest.approx(np.log(2))


def test_web_page_names_the_metrics_file_relative_to_the_project(model_path, tmp_path):
    pytest.importorskip("fastapi", reason="the web app needs fastapi (the serve extra)")
    from skinsage.app.classifier import Classifier
    from skinsage.app.server import render_page

    project = tmp_path / "secret-server-folder"
    model = project / "models" / "model.keras"
    model.parent.mkdir(parents=True)
    shutil.copy(model_path, model)
    eval_file = project / "metrics" / "eval_full.json"
    eval_file.parent.mkdir()
    eval_file.write_text(json.dumps({"accuracy": 0.75, "balanced_accuracy": 0.5}))
    (project / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"evaluate": {
        "deps": [{"path": "models/model.keras", "md5": md5sum(model)}],
        "outs": [{"path": "metrics/eval_full.json", "md5": md5sum(eval_file)}]}}}))
    page = render_page(Classifier.load(model), max_upload_bytes=1 << 20)
    assert "accuracy 0.750" in page and "from metrics/eval_full.json" in page
    assert str(tmp_path) not in page and "secret-server-folder" not in page


def test_export_help_says_what_each_export_is_checked_on():
    result = subprocess.run([sys.executable, "-m", "skinsage", "export", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=False)
    text = " ".join(result.stdout.split())
    assert result.returncode == 0
    assert "checked against Keras on its images" in text and "64 generated images" in text


def test_download_stage_writes_a_manifest_when_there_is_nothing_to_fetch(tmp_path):
    """DVC warns "'data/downloads' is empty" for an empty output folder: the stage always writes one
    file saying what the run uses."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["data"]["source"] = "synthetic"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run([sys.executable, str(ROOT / "stages" / "download.py")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "data" / "downloads" / "manifest.json").read_text())
    assert manifest == {"data.source": "synthetic", "downloaded": None}
