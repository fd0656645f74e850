"""The per-epoch training history as CSV: DVC plots it, `plot` draws it."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..fileio import write_text

METRIC_COLUMNS = ("loss", "accuracy", "val_loss", "val_accuracy")
# `phase`: train (the CNN), head (ResNet50, frozen backbone) or fine_tune; epochs continue across phases
HISTORY_COLUMNS = ("epoch", *METRIC_COLUMNS, "phase")


def write_history(path: str | Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def read_history(path: str | Path) -> list[dict]:
    """Rows with `epoch` as int, numbers as float and anything else (`phase`) as text; histories
    written before the `phase` column have no such key."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: _value(k, v) for k, v in row.items()} for row in csv.DictReader(f)]


def _value(key: str, text: str):
    try:
        return int(float(text)) if key == "epoch" else float(text)
    except (TypeError, ValueError):
        return text
