"""DVC stage `train`: data/prepared/ -> models/model.keras, metrics/train.json, metrics/history.csv."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as `python stages/train.py`

from skinsage.errors import run_reporting_errors  # noqa: E402
from skinsage.fileio import write_json  # noqa: E402
from skinsage.model.model_file import save_model  # noqa: E402
from skinsage.params import load_params  # noqa: E402
from skinsage.prepared import check_prepared_params, load_prepared  # noqa: E402
from skinsage.train.history import write_history  # noqa: E402
from skinsage.train.trainer import model_metadata, train_model  # noqa: E402


def main() -> None:
    params = load_params("params.yaml")
    check_prepared_params(params, "data/prepared")  # params.yaml edited since prepare ran?
    data = load_prepared("data/prepared", splits=("train", "val"))
    model, history, summary = train_model(params, data)
    save_model(model, "models/model.keras", model_metadata(params, data, summary))
    write_history("metrics/history.csv", history)
    write_json("metrics/train.json", summary)


if __name__ == "__main__":
    run_reporting_errors(main)
