"""DVC stage `evaluate`: the trained model on the test (and val) split -> metrics/*.json, *.csv."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as `python stages/evaluate.py`

from skinsage.errors import run_reporting_errors  # noqa: E402
from skinsage.evaluate.metrics import summary_line  # noqa: E402
from skinsage.evaluate.outputs import write_evaluation  # noqa: E402
from skinsage.evaluate.scoring import evaluate_split, without_temperature  # noqa: E402
from skinsage.model.model_file import (decision_settings, inference_settings, load_model,  # noqa: E402
                                       referral_settings)
from skinsage.params import load_params  # noqa: E402
from skinsage.prepared import load_split  # noqa: E402


def main() -> None:
    params = load_params("params.yaml")
    e = params.evaluate
    model, metadata = load_model("models/model.keras")
    classes, settings = metadata["classes"], inference_settings(metadata)  # as every user runs it
    referral = referral_settings(metadata)  # the threshold train chose on validation (None: older file)
    test = load_split("data/prepared", "test")
    decision = decision_settings(metadata)  # each image's status (model/decision.py)
    test_metrics, matrix, probs = evaluate_split(model, test, classes, e.batch_size, **settings,
                                                 bootstrap=e.bootstrap, seed=params.seed,
                                                 ece_bins=e.ece_bins, referral=referral,
                                                 subgroups=e.subgroups, decision=decision)
    val_metrics, _, _ = evaluate_split(model, load_split("data/prepared", "val"), classes,
                                       e.batch_size, **settings, ece_bins=e.ece_bins, referral=referral,
                                       bootstrap=e.bootstrap, seed=params.seed, decision=decision)
    val_metrics.pop("per_image", None)
    write_evaluation("metrics", test_metrics, val_metrics, matrix, test.labels, probs, classes,
                     ece_bins=e.ece_bins, model_type=metadata.get("model", "unknown"),
                     before_temperature=without_temperature(probs, settings["temperature"]),
                     referral=referral, per_image=test_metrics.pop("per_image", None))
    for name, metrics in (("test", test_metrics), ("val", val_metrics)):
        print(f"{name}: {summary_line(metrics)}")


if __name__ == "__main__":
    run_reporting_errors(main)
