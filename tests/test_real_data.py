"""The pipeline's CNN on real HAM10000 images (../shared/data); skipped where that folder is absent.

The quick test trains a few epochs (it shows the real data flows through every stage and is learned
from); the opt-in slow test (SKINSAGE_SLOW=1, `make test-slow`) trains the committed `models.cnn`
defaults fully and holds them to the accuracy targets of docs/results.md.
"""

import json
import os
from pathlib import Path

import pytest

from dvc_project import ROOT, copy_project, dvc

REAL_NPZ = (ROOT / ".." / "shared" / "data" / "ham10000_28.npz").resolve()
MAJORITY_ACCURACY = 0.666  # always "melanocytic nevi" on this test split (REAL_DATA.md)

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not REAL_NPZ.exists(), reason=f"real data not found at {REAL_NPZ}")]


def run_real(tmp_path: Path, **overrides) -> tuple[dict, dict, dict]:
    project = copy_project(tmp_path / "project", {
        "model": "cnn", "data.source": "medmnist", "data.medmnist.path": str(REAL_NPZ), **overrides})
    dvc(project, "repro")
    read = lambda name: json.loads((project / "metrics" / name).read_text())  # noqa: E731
    return read("eval_full.json"), read("train_full.json"), read("data.json")


def test_cnn_on_real_ham10000_beats_majority_class_in_a_few_epochs(tmp_path: Path):
    metrics, train, counts = run_real(tmp_path, **{"train.epochs": 6, "evaluate.bootstrap": 0})
    assert counts["splits"]["test"]["total"] == 1667
    assert train["epochs_run"] <= 6
    assert metrics["accuracy"] >= MAJORITY_ACCURACY + 0.02, metrics
    assert metrics["auc_macro_ovr"] >= 0.85, metrics
    print(json.dumps({k: metrics[k] for k in ("accuracy", "balanced_accuracy", "auc_macro_ovr")}))


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SKINSAGE_SLOW") != "1", reason="opt-in: set SKINSAGE_SLOW=1")
def test_committed_cnn_defaults_reach_the_documented_accuracy(tmp_path: Path):
    metrics, train, _ = run_real(tmp_path)
    summary = {k: metrics[k] for k in ("accuracy", "balanced_accuracy", "auc_macro_ovr")}
    print(json.dumps({**summary, "train_seconds": train["train_seconds"]}))
    assert metrics["accuracy"] >= 0.75, summary
    assert metrics["balanced_accuracy"] >= 0.55, summary
