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


# The committed 28 px defaults, 5 seeds on this split (docs/results.md, "Seed spread"): mean and
# standard deviation of the test figures, and seed 42's (docs/results.md's headline). Seeds 42/1/2/3/4
# span accuracy 0.765-0.773, balanced accuracy 0.625-0.647, macro AUC 0.943-0.945, ECE 0.018-0.029.
SEED_SPREAD = {"accuracy": (0.7689, 0.0028), "balanced_accuracy": (0.6366, 0.0081),
               "auc_macro_ovr": (0.9435, 0.0011)}
SEED_42 = {"accuracy": 0.7690, "balanced_accuracy": 0.6347, "auc_macro_ovr": 0.9432}
MAX_ECE = 0.05  # the #19 target; temperature scaling on validation keeps every seed at <= 0.029


def lower_bound(metric: str) -> float:
    """The least seed 42 may score on any machine: another CPU (its kernels, thread count) changes
    the floating-point sums, so the run diverges like another seed would. Mean - 3 std over the
    seeds, with a floor of 0.005 on the std (five seeds estimate it loosely). One-sided: a run
    that scores better than the seeds did is not a broken promise (another machine's seed 42 had
    balanced accuracy 0.663, above the best seed here)."""
    mean, std = SEED_SPREAD[metric]
    return mean - 3 * max(std, 0.005)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SKINSAGE_SLOW") != "1", reason="opt-in: set SKINSAGE_SLOW=1")
def test_committed_cnn_defaults_reach_the_documented_accuracy(tmp_path: Path):
    metrics, train, _ = run_real(tmp_path)
    summary = {k: round(metrics[k], 4) for k in SEED_42}
    print(json.dumps({**summary, "readme_seed_42": SEED_42, "ece": round(metrics["ece"], 4),
                      "epochs_run": train["epochs_run"], "best_epoch": train["best_epoch"],
                      "train_seconds": train["train_seconds"]}))
    for metric, value in summary.items():
        assert value >= lower_bound(metric), f"{metric} {value} below {lower_bound(metric):.4f}: {summary}"
    assert metrics["ece"] <= MAX_ECE, metrics["ece"]

