"""The training summary `train` writes (metrics/train_full.json, all of it; metrics/train.json, the
figures `dvc exp show` lists) and the model file keeps as `train_summary`.

Its `best_epoch` (1-based, over all phases) is the epoch whose weights were kept, as Keras'
EarlyStopping chose it (skinsage/train/phase.py records it once); every reader takes it from here.
"""

from __future__ import annotations

TRAIN_FILE, TRAIN_FULL_FILE = "train.json", "train_full.json"
HEADLINE_KEYS = ("epochs_run", "best_epoch", "train_seconds", "logit_adjustment_tau")


def train_headline(summary: dict) -> dict:
    """metrics/train.json: the training figures `dvc exp show` lists (train_full.json has all)."""
    return {key: summary.get(key) for key in HEADLINE_KEYS}


def best_epoch(summary: dict, epochs: int | None = None) -> int | None:
    """The recorded best epoch, or None when the summary has none (or it is outside `epochs`)."""
    recorded = summary.get("best_epoch")
    if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded >= 1 \
            and (epochs is None or recorded <= epochs):
        return recorded
    return None
