"""DVC stage `plot`: training history and confusion matrix -> plots/*.png."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as `python stages/plot.py`

from skinsage.dataset import load_labels  # noqa: E402
from skinsage.errors import run_reporting_errors  # noqa: E402
from skinsage.fileio import read_json  # noqa: E402
from skinsage.history import read_history  # noqa: E402
from skinsage.plots import plot_confusion_matrix, plot_training_curves  # noqa: E402


def main() -> None:
    dataset = load_labels("data/prepared")["dataset"]
    plot_training_curves(read_history("metrics/history.csv"), "plots/training_curves.png",
                         title=f"Training curves: {dataset}")
    matrix = read_json("metrics/confusion.json")
    plot_confusion_matrix(matrix["matrix"], matrix["classes"], "plots/confusion_matrix.png",
                          title=f"Test confusion matrix: {dataset}")


if __name__ == "__main__":
    run_reporting_errors(main)
