"""DVC stage `evaluate`: the trained model on the test split -> metrics/eval.json and friends."""

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
    model, metadata = load_model("models/model.keras")
    test = load_split("data/prepared", "test")
    classes = metadata["classes"]
    metrics, matrix, probs = evaluate_split(model, test, classes, params.evaluate.batch_size)
    write_evaluation("metrics", metrics, matrix, test.labels, probs, classes)
    print(f"test accuracy {metrics['accuracy']:.4f}, balanced accuracy "
          f"{metrics['balanced_accuracy']:.4f}, macro AUC {metrics['auc_macro_ovr']:.4f}")


if __name__ == "__main__":
    run_reporting_errors(main)
