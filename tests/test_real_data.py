"""The pipeline's CNN on real HAM10000 images (../shared/data); skipped where that folder is absent."""

import json
from pathlib import Path

import pytest

from dvc_project import ROOT, copy_project, dvc

REAL_NPZ = (ROOT / ".." / "shared" / "data" / "ham10000_28.npz").resolve()
MAJORITY_ACCURACY = 0.666  # always "melanocytic nevi" on this test split (REAL_DATA.md)

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not REAL_NPZ.exists(), reason=f"real data not found at {REAL_NPZ}")]


def test_default_cnn_on_real_ham10000_beats_majority_class(tmp_path: Path):
    project = copy_project(tmp_path / "project", {
        "model": "cnn",
        "data.source": "medmnist",
        "data.medmnist.path": str(REAL_NPZ),
    })
    dvc(project, "repro")
    metrics = json.loads((project / "metrics" / "eval.json").read_text())
    counts = json.loads((project / "metrics" / "data.json").read_text())
    assert counts["splits"]["test"]["total"] == 1667
    assert metrics["accuracy"] >= MAJORITY_ACCURACY + 0.03, metrics
    assert metrics["auc_macro_ovr"] >= 0.85, metrics
    print(json.dumps({k: metrics[k] for k in ("accuracy", "balanced_accuracy", "auc_macro_ovr")}))
