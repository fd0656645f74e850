"""The base of every error SkinSage reports to users as a message rather than a traceback."""

from __future__ import annotations

import os
import sys

DEBUG_VARIABLE = "SKINSAGE_DEBUG"
MAX_ERROR_CHARS = 2_000  # an error naming 10,000 classes must still be a line a person reads


class SkinSageError(Exception):
    """A problem with the user's input or environment, explained in the message."""


def print_error(err: BaseException) -> None:
    """The one way a SkinSageError reaches users (stages and the `skinsage` command): `error: …`."""
    print(error_line(err), file=sys.stderr)


def run_reporting_errors(main, *args) -> None:
    """Run a stage: messages configured (`SKINSAGE_QUIET=1` for errors only), and a
    SkinSageError becomes `error: …` on stderr and exit status 1."""
    from .log import configure

    configure()
    try:
        main(*args)
    except SkinSageError as err:
        print_error(err)
        sys.exit(1)


def error_line(err: Exception) -> str:
    """`error: <message>` on one line, cut after MAX_ERROR_CHARS characters."""
    text = str(err)
    if len(text) > MAX_ERROR_CHARS:
        text = f"{text[:MAX_ERROR_CHARS]}... ({len(text) - MAX_ERROR_CHARS:,} more characters)"
    return f"error: {text}"


def debug_mode() -> bool:
    """SKINSAGE_DEBUG=1: unexpected exceptions propagate with their traceback instead of being
    reported per file, so a genuine bug in SkinSage is not hidden behind "could not decode"."""
    return os.environ.get(DEBUG_VARIABLE, "").strip().lower() not in ("", "0", "false", "no")


def unexpected_reason(err: Exception) -> str:
    """What a batch reports for one file that failed in a way SkinSage did not foresee."""
    return f"could not decode ({type(err).__name__}: {err})"
