"""DVC stage `evaluate`: the trained model on the test (and val) split -> metrics/*.json, *.csv."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as `python stages/evaluate.py`

from skinsage.dataset import load_split  # noqa: E402
from skinsage.errors import run_reporting_errors  # noqa: E402
from skinsage.evaluation import evaluate_split, write_evaluation  # noqa: E402
from skinsage.modelfile import load_model  # noqa: E402
from skinsage.params import load_params  # noqa: E402


def main() -> None:
    params = load_params("params.yaml")
    e = params.evaluate
    model, metadata = load_model("models/model.keras")
    classes = metadata["classes"]
    test = load_split("data/prepared", "test")
    test_metrics, matrix, probs = evaluate_split(model, test, classes, e.batch_size,
                                                 bootstrap=e.bootstrap, seed=params.seed,
                                                 ece_bins=e.ece_bins, tta=e.tta)
    val_metrics, _, _ = evaluate_split(model, load_split("data/prepared", "val"), classes,
                                       e.batch_size, ece_bins=e.ece_bins, tta=e.tta)
    write_evaluation("metrics", test_metrics, val_metrics, matrix, test.labels, probs, classes,
                     ece_bins=e.ece_bins)
    for name, metrics in (("test", test_metrics), ("val", val_metrics)):
        print(f"{name}: {describe(metrics)}")


def describe(metrics: dict) -> str:
    ci = metrics.get("ci95", {})
    parts = []
    for key, label in (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"),
                       ("auc_macro_ovr", "macro AUC")):
        interval = f" [{ci[key]['low']:.3f}, {ci[key]['high']:.3f}]" if key in ci else ""
        parts.append(f"{label} {metrics[key]:.4f}{interval}")
    return ", ".join(parts) + f", ECE {metrics['ece']:.3f} ({metrics['num_images']} images)"


if __name__ == "__main__":
    run_reporting_errors(main)
