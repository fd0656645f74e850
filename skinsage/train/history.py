"""The per-epoch history logged live to dvclive while `train` runs; its files and their reader are
the contract in skinsage/contracts/history.py."""

from __future__ import annotations

from ..contracts.history import PHASE_METRIC


def epoch_logger(live, phase: str):
    """A Keras callback logging every epoch of one phase to `live` (dvclive's own Keras callback,
    plus the phase); it leaves `live` open, so ResNet50's two phases make one continuous run."""
    from dvclive.keras import DVCLiveCallback

    class EpochLogger(DVCLiveCallback):
        def on_epoch_end(self, epoch, logs=None):
            self.live.log_metric(PHASE_METRIC, phase)
            super().on_epoch_end(epoch, logs)  # logs Keras' metrics, then next_step() writes them

        def on_train_end(self, logs=None):
            pass  # the `train` stage closes `live` after the last phase

    return EpochLogger(live=live)
