"""The per-epoch training history as CSV: DVC plots it, `plot` draws it."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from .fileio import write_text

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")


def write_history(path: str | Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def read_history(path: str | Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()}
                for row in csv.DictReader(f)]
