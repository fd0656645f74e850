"""The base of every error SkinSage reports to users as a message rather than a traceback."""

from __future__ import annotations

import sys


class SkinSageError(Exception):
    """A problem with the user's input or environment, explained in the message."""


def run_reporting_errors(main, *args) -> None:
    """Run a stage: messages configured (`SKINSAGE_QUIET=1` for warnings only), and a
    SkinSageError becomes `error: …` on stderr and exit status 1."""
    from .log import configure

    configure()
    try:
        main(*args)
    except SkinSageError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
