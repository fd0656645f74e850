"""DVC stage `plot`: metrics, history and test images -> plots/*.png and the model card plots/report.md."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as `python stages/plot.py`

from skinsage.errors import run_reporting_errors  # noqa: E402
from skinsage.params import load_params  # noqa: E402
from skinsage.report.render import render_all  # noqa: E402


def main() -> None:
    render_all(load_params("params.yaml"), prepared_dir="data/prepared", metrics_dir="metrics",
               out_dir="plots", live_dir="dvclive", model_path="models/model.keras")


if __name__ == "__main__":
    run_reporting_errors(main)
