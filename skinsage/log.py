"""Messages and progress bars. Library code logs through `logging` (loggers under "skinsage") and
wraps long loops in `progress`; the stage scripts and the `skinsage` command call `configure`.

A program that imports SkinSage without configuring it sees warnings only (Python's default) and no
progress bars; `logging.getLogger("skinsage").setLevel(logging.INFO)` turns the messages on.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

from tqdm import tqdm

ROOT_LOGGER = "skinsage"
QUIET_ENV = "SKINSAGE_QUIET"  # set to 1 for quiet stages: `SKINSAGE_QUIET=1 dvc repro`


class _ConsoleHandler(logging.Handler):
    """Information to stdout, warnings and errors to stderr, as `print` did. The streams are looked
    up for every message, so redirecting sys.stdout (pytest, a notebook) still works."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001  logging must never take the program down
            self.handleError(record)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        # an indented line continues the warning above it (e.g. the files it lists): no prefix
        first_line = record.levelno == logging.WARNING and not message.startswith(" ")
        return f"warning: {message}" if first_line else message


def configure(verbosity: int | None = None) -> None:
    """-1 quiet (errors only, no progress bars), 0 normal, 1 debug; None reads SKINSAGE_QUIET."""
    if verbosity is None:
        verbosity = -1 if os.environ.get(QUIET_ENV, "") not in ("", "0") else 0
    logger = logging.getLogger(ROOT_LOGGER)
    handler = _ConsoleHandler()
    handler.setFormatter(_Formatter())
    logger.handlers[:] = [handler]
    logger.setLevel(logging.ERROR if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG)
    logger.propagate = False
    if verbosity < 0:  # quiet: TensorFlow's and absl's Python loggers and Python warnings too
        for name in ("tensorflow", "absl"):
            logging.getLogger(name).setLevel(logging.ERROR)
        warnings.simplefilter("ignore")


def progress(iterable=None, *, total: int | None = None, desc: str = "", unit: str = "img",
             enabled: bool = True, **options):
    """A tqdm bar on stderr for a step that can take more than ~10 s. Off when messages are off
    (quiet, or a library user who did not ask for them), when stderr is not a terminal, or when
    the caller says so (`enabled=False`)."""
    shown = enabled and logging.getLogger(ROOT_LOGGER).isEnabledFor(logging.INFO)
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, leave=False,
                mininterval=1.0, delay=3.0,  # quick steps never draw a bar
                disable=None if shown else True, **options)
