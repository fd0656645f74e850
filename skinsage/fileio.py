"""Atomic file writes: an interrupted stage leaves the old file or none, never half of one.

Temporary files and folders live beside their target (same file system, so the final rename is
atomic) under hidden names no stage reads; leftovers of a killed run are removed by the next write
of the same target.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import SkinSageError

_RANDOM = r"[a-z0-9_]{8}"  # what tempfile puts between prefix and suffix
_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # npz members get no wall-clock timestamp: same data, same bytes


class WriteError(SkinSageError):
    """An output could not be written: its path and the operating system's reason."""

    def __init__(self, path: str | Path, err: OSError):
        self.path = Path(path)
        self.errno = err.errno
        self.strerror = err.strerror or str(err)
        kept = "; the previous version was kept" if self.path.exists() else ""
        super().__init__(f"{path}: cannot write it ({self.strerror}){kept}")


# errno values that mean "this output could not be written", whatever step raised them. Other
# OSErrors inside a `with atomic_path(...)` block (e.g. a dropped connection while downloading
# into it) are not write failures and keep their own type.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}


def _is_write_failure(err: OSError, tmp: Path) -> bool:
    return err.errno in _WRITE_ERRNOS or (isinstance(err.filename, str) and Path(err.filename) == tmp)


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds.

    A failure to write (full disk, read-only or unwritable folder, a file where a folder should
    be) raises WriteError naming `path`, never the temporary; the old file stays as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        prefix, suffix = f".{path.stem}.", f".tmp{path.suffix}"
        _remove_stale(path.parent, prefix, suffix)
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise WriteError(path, err) from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get normal permissions
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as err:
        if not _is_write_failure(err, Path(tmp)):
            raise
        raise WriteError(path, err) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_dir(path: str | Path):
    """Yield a temporary folder beside `path`; when the block succeeds it replaces `path` whole.

    Readers see the complete old folder, the complete new one, or (if killed between the two
    renames) none: never a mix of old and new files. A failure to write raises WriteError naming
    `path` and leaves the old folder in place.
    """
    path = Path(path)
    prefix = f".{path.name}."
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(path.parent, prefix, ".tmp")
        _remove_stale(path.parent, prefix, ".old")
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=path.parent))
    except OSError as err:
        raise WriteError(path, err) from None
    old = None
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        old = _swap_in(tmp, path, prefix)
    except WriteError as err:  # a file inside the folder: name the folder, not the temporary
        raise WriteError(path, OSError(err.errno, err.strerror)) from None
    except OSError as err:
        if not _is_write_failure(err, tmp):
            raise
        raise WriteError(path, err) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _swap_in(tmp: Path, path: Path, prefix: str) -> Path | None:
    """Rename the finished folder `tmp` to `path`, the old one aside first; the aside folder (to
    delete) is returned. If the second rename fails the old folder is put back."""
    try:
        if not (path.exists() or path.is_symlink()):
            os.replace(tmp, path)
            return None
        old = Path(tempfile.mkdtemp(prefix=prefix, suffix=".old", dir=path.parent))
        try:
            os.replace(path, old / path.name)
            try:
                os.replace(tmp, path)
            except OSError:
                os.replace(old / path.name, path)
                raise
        except OSError:
            _remove_if_empty(old)  # not if the old folder is still in it: never delete that
            raise
        return old
    except OSError as err:
        raise WriteError(path, err) from None


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def writable_problem(path: str | Path) -> str | None:
    """Why `atomic_path(path)` would fail, found before any slow work (None if it would not): a
    folder at `path`, a file where a folder should be, or a folder the user cannot write in,
    tested by creating and removing a temporary there (permissions alone mislead: root, ACLs,
    read-only mounts)."""
    path = Path(path)
    if path.is_dir():
        return "is a folder; give a file name"
    folder = next(p for p in (path.parent, *path.parent.parents) if p.exists() or p.is_symlink())
    if not folder.is_dir():
        return f"{folder} is not a folder"
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=folder)
    except OSError as err:
        return f"cannot write in {folder} ({err.strerror or err})"
    os.close(fd)
    os.unlink(probe)
    return None


# A spreadsheet runs a cell starting with one of these as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_ESCAPED = re.compile(r"^'*[=+\-@\t\r]")


def csv_text(value):
    """A text cell a spreadsheet shows as text: a leading formula character gets a quote before
    it (OWASP's advice), so a class or file named `=HYPERLINK(...)` cannot run when the CSV is
    opened. Lossless with `from_csv_text` (a quote already before one gets another)."""
    if isinstance(value, str) and _ESCAPED.match(value):
        return "'" + value
    return value


def from_csv_text(text: str) -> str:
    """The value `csv_text` escaped."""
    return text[1:] if text.startswith("'") and _ESCAPED.match(text[1:]) else text


def folder_problem(path: str | Path) -> str | None:
    """Why `path` cannot be an output folder (None if it can): something else is there (a file,
    /dev/null), or a file where one of its parents should be."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        return "exists and is not a folder; give a folder name"
    parent = next((p for p in path.parents if p.exists() or p.is_symlink()), None)
    if parent is not None and not parent.is_dir():
        return f"{parent} is not a folder"
    return None


def not_regular(path: str | Path) -> str | None:
    """"a FIFO", "a socket", "a device" when `path` exists but is not a regular file or folder:
    opening one may block forever. Checked with stat, without opening it."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"


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
