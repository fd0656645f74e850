"""Which files `skinsage predict` and `skinsage explain` read: the paths given on the command line,
folders searched recursively (the command's file discovery, apart from `Classifier`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..data.images import is_os_clutter


@dataclass
class Collected:
    files: list[Path] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def collect_images(inputs: Iterable[str | Path]) -> Collected:
    """Files to predict: given files as they are, folders searched recursively (hidden files and
    OS clutter left out, symlinked folders not followed). Missing paths and empty folders are
    problems to report, not errors: the other inputs are still predicted."""
    found = Collected()
    for raw in inputs:
        if not str(raw).strip():  # an unset shell variable: Path("") would mean the whole current folder
            found.problems.append((repr(str(raw)), "an empty path (to predict the current folder, give '.')"))
            continue
        path = Path(raw)
        if path.is_dir():
            files = _files_under(path)
            found.files += files
            if not files:
                found.problems.append((str(path), "no image files in this folder (searched recursively)"))
        elif path.exists():
            found.files.append(path)
        else:
            found.problems.append((str(path), "no such file or folder"))
    found.files = list(dict.fromkeys(found.files))  # the same file named twice is predicted once
    return found


def _files_under(folder: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files += [Path(dirpath) / name for name in sorted(filenames)
                  if not is_os_clutter(name) and (Path(dirpath) / name).is_file()]
    return files
