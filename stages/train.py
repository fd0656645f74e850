"""DVC stage `train`: data/prepared/ -> models/model.keras, metrics/train*.json, dvclive/ (per epoch, live).
In a multi-worker run (TF_CONFIG) only the chief writes them; the other workers write nothing."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as `python stages/train.py`

from dvclive import Live  # noqa: E402

from skinsage.errors import run_reporting_errors  # noqa: E402
from skinsage.contracts.history import LIVE_DIR  # noqa: E402
from skinsage.contracts.training import TRAIN_FILE, TRAIN_FULL_FILE, train_headline  # noqa: E402
from skinsage.fileio import write_json  # noqa: E402
from skinsage.model.model_file import inference_settings, save_model  # noqa: E402
from skinsage.params import load_params  # noqa: E402
from skinsage.prepared import check_prepared_params, load_prepared  # noqa: E402
from skinsage.train.distribute import is_chief  # noqa: E402
from skinsage.train.operating_point import fit_operating_point, refer_classes  # noqa: E402
from skinsage.train.trainer import model_metadata, train_model  # noqa: E402


def main() -> None:
    params = load_params("params.yaml")
    check_prepared_params(params, "data/prepared")  # params.yaml edited since prepare ran?
    data = load_prepared("data/prepared", splits=("train", "val"))
    referral_classes = refer_classes(params, data.class_names)  # a bad name stops here, not after training
    if not is_chief():  # another worker of a multi-worker run: trains in step, writes nothing
        train_model(params, data)
        return
    # dvc.yaml declares dvclive's files itself (dvcyaml=None keeps dvclive from rewriting it)
    with Live(LIVE_DIR, dvcyaml=None, save_dvc_exp=False) as live:
        model, _, summary = train_model(params, data, live=live)
    metadata = model_metadata(params, data, summary)
    referral = fit_operating_point(model, params, data, referral_classes, inference_settings(metadata))
    if referral is not None:  # on validation, with the inference settings just recorded
        metadata["referral"] = summary["referral"] = referral
    save_model(model, "models/model.keras", metadata)
    write_json(f"metrics/{TRAIN_FULL_FILE}", summary)
    write_json(f"metrics/{TRAIN_FILE}", train_headline(summary))


if __name__ == "__main__":
    run_reporting_errors(main)
