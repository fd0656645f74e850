"""Same seed, same machine, same code: two `dvc repro --force` runs give identical results.

What is and is not deterministic is documented in docs/determinism.md.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import yaml

from dvc_project import TINY_SYNTHETIC, dvc
from test_interruptions import project_copy

pytestmark = pytest.mark.e2e

BYTE_IDENTICAL = ["data/prepared/train.npz", "data/prepared/val.npz", "data/prepared/test.npz",
                  "data/prepared/labels.json", "metrics/data.json", "dvclive/plots/metrics/eval/loss.tsv",
                  "metrics/eval.json", "metrics/eval_full.json", "metrics/per_class.json", "metrics/confusion.json",
                  "metrics/predictions.csv", "metrics/roc.csv", "metrics/calibration.csv"]


def repro_force(project):
    result = dvc(project, "repro", "--force", "evaluate")  # `plot` only draws: left out for speed
    for stage in ("prepare", "train", "evaluate"):
        assert f"Running stage '{stage}'" in result.stdout


def test_two_forced_runs_are_identical(tmp_path):
    project = project_copy(tmp_path / "project", {**TINY_SYNTHETIC, "evaluate.bootstrap": 50})
    repro_force(project)
    first = tmp_path / "first"
    for rel in [*BYTE_IDENTICAL, "models/model.keras", "dvc.lock"]:
        (first / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(project / rel, first / rel)

    repro_force(project)
    differing = [rel for rel in BYTE_IDENTICAL
                 if (first / rel).read_bytes() != (project / rel).read_bytes()]
    assert not differing, f"differ between two runs with the same seed: {differing}"
    lock = [yaml.safe_load((root / "dvc.lock").read_text()) for root in (first, project)]
    prepared = [next(o for o in locked["stages"]["prepare"]["outs"] if o["path"] == "data/prepared")
                for locked in lock]
    assert prepared[0]["md5"] == prepared[1]["md5"]  # DVC sees the same data: no needless retrain

    from skinsage.model.model_file import load_model
    from skinsage.prepared import load_split
    test = load_split(project / "data" / "prepared", "test")
    models = [load_model(root / "models" / "model.keras")[0] for root in (first, project)]
    for a, b in zip(models[0].get_weights(), models[1].get_weights()):
        assert np.array_equal(a, b)
    predictions = [m.predict(test.images, verbose=0) for m in models]  # [probabilities, ood_score]
    assert all(np.array_equal(a, b) for a, b in zip(predictions[0], predictions[1]))
