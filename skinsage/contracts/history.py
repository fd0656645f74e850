"""The per-epoch training history, as dvclive writes it while `train` runs (dvclive/plots/metrics):
`dvc plots` and the `plot` stage read it; `dvc exp show` shows dvclive/metrics.json, the latest
epoch's values, updated every epoch.

    train/loss.tsv, train/accuracy.tsv, eval/loss.tsv, eval/accuracy.tsv, phase.tsv
    (each: step, value; `phase`: train for the CNN, head then fine_tune for ResNet50)

The writer is dvclive's Keras callback (skinsage/train/history.py); this module is the reader.
"""

from __future__ import annotations

import csv
from pathlib import Path

LIVE_DIR = "dvclive"
# Keras' names in a history row -> dvclive's file for them (its keras integration's naming)
METRIC_FILES = {"loss": "train/loss", "accuracy": "train/accuracy", "val_loss": "eval/loss",
                "val_accuracy": "eval/accuracy"}
METRIC_COLUMNS = tuple(METRIC_FILES)
PHASE_METRIC = "phase"  # logged beside Keras' metrics every epoch


def read_history(live_dir: str | Path = LIVE_DIR) -> list[dict]:
    """One row per epoch: `epoch` (1-based), the METRIC_COLUMNS as floats and `phase`."""
    metrics_dir = Path(live_dir) / "plots" / "metrics"
    columns = {key: _read_tsv(metrics_dir / f"{name}.tsv") for key, name in METRIC_FILES.items()}
    phases = _read_tsv(metrics_dir / f"{PHASE_METRIC}.tsv", number=False)
    steps = sorted(set().union(*(c.keys() for c in columns.values())))
    return [{"epoch": i + 1, **{key: values.get(step, float("nan")) for key, values in columns.items()},
             "phase": phases.get(step, "train")} for i, step in enumerate(steps)]


def _read_tsv(path: Path, number: bool = True) -> dict[int, float | str]:
    """step -> value of one dvclive metric file (columns: [timestamp,] step, <metric name>)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    header, body = rows[0], rows[1:]
    step, value = header.index("step"), len(header) - 1
    return {int(row[step]): float(row[value]) if number else row[value] for row in body}
