"""Atomic file writes: an interrupted stage leaves the old file or none, never half of one.

Temporary files and folders live beside their target (same file system, so the final rename is
atomic) under hidden names no stage reads; leftovers of a killed run are removed by the next write
of the same target.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

_RANDOM = r"[a-z0-9_]{8}"  # what tempfile puts between prefix and suffix
_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # npz members get no wall-clock timestamp: same data, same bytes


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = f".{path.stem}.", f".tmp{path.suffix}"
    _remove_stale(path.parent, prefix, suffix)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get normal permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_dir(path: str | Path):
    """Yield a temporary folder beside `path`; when the block succeeds it replaces `path` whole.

    Readers see the complete old folder, the complete new one, or (if killed between the two
    renames) none: never a mix of old and new files.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}."
    _remove_stale(path.parent, prefix, ".tmp")
    _remove_stale(path.parent, prefix, ".old")
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.exists() or path.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=prefix, suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_stale(folder: Path, prefix: str, suffix: str) -> None:
    """Temporaries of the same target left by a killed run (a live writer of the same target
    would be a race anyway)."""
    pattern = re.compile(re.escape(prefix) + _RANDOM + re.escape(suffix))
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if pattern.fullmatch(name):
            stale = folder / name
            try:
                shutil.rmtree(stale) if stale.is_dir() and not stale.is_symlink() else stale.unlink()
            except OSError:
                pass  # not ours to fight over (e.g. a read-only folder); it is never read anyway


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, data) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json(path: str | Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def md5sum(path: str | Path, chunk: int = 1 << 20) -> str:
    """The MD5 of a file's bytes: what MedMNIST publishes and DVC records."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Like `np.savez` (readable by `np.load`), atomic, and byte-identical for identical arrays:
    numpy stamps each member with the current time, which would give DVC a new hash every run."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            member = zipfile.ZipInfo(f"{name}.npy", date_time=_FIXED_ZIP_TIME)
            with archive.open(member, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)
