"""DVC stage `prepare`: the selected data source -> data/prepared/ at the model's image size."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as `python stages/prepare.py`

from skinsage.data.prepare import prepare  # noqa: E402
from skinsage.errors import run_reporting_errors  # noqa: E402
from skinsage.params import load_params  # noqa: E402


def main() -> None:
    params = load_params("params.yaml")
    prepare(params, out_dir="data/prepared", metrics_path="metrics/data.json")


if __name__ == "__main__":
    run_reporting_errors(main)
