"""MedMNIST: the official npz files (URL and MD5 from `medmnist.INFO`), or a local npz in their layout."""

from __future__ import annotations

import errno
import http.client
import importlib.util
import logging
import math
import os
import urllib.error
import urllib.request
import zipfile
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from ...errors import SkinSageError
from ...fileio import WriteError, atomic_path, md5sum, not_regular
from ...log import progress
from ...params import MEDMNIST_SIZES, MedmnistParams
from ...prepared import SPLITS
from ..images import resize_array
from .dataset import RawDataset

log = logging.getLogger(__name__)
DEMO_COMMAND = "make demo   (or: dvc exp run -S data.source=synthetic -S model=cnn)"


class MedmnistError(SkinSageError, RuntimeError):
    """The MedMNIST file cannot be fetched, verified or read."""


@lru_cache(maxsize=1)
def medmnist_info() -> dict:
    """`medmnist.INFO`, read from medmnist/info.py alone: the package's __init__ imports torch."""
    spec = importlib.util.find_spec("medmnist")
    if spec is None or not spec.submodule_search_locations:
        raise MedmnistError("the medmnist package is not installed: pip install --no-deps medmnist")
    info_path = Path(next(iter(spec.submodule_search_locations))) / "info.py"
    module_spec = importlib.util.spec_from_file_location("_medmnist_info", info_path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.INFO


def flag_info(flag: str) -> dict:
    info = medmnist_info()
    flags_2d = sorted(f for f in info if not f.endswith("3d"))
    if flag not in flags_2d:
        raise MedmnistError(f"data.medmnist.flag: unknown 2D MedMNIST dataset '{flag}'; "
                            f"choose one of: {', '.join(flags_2d)}")
    return info[flag]


def resolve_size(size: str | int, model_size: int) -> int:
    """`auto` picks the smallest official size that is at least the model's, so no detail is invented."""
    if size != "auto":
        return int(size)
    return next((s for s in MEDMNIST_SIZES if s >= model_size), MEDMNIST_SIZES[-1])


def official_file(flag: str, size: int) -> tuple[str, str, str]:
    """(url, file name, md5) of the official npz for `flag` at `size` px."""
    info = flag_info(flag)
    suffix = "" if size == 28 else f"_{size}"
    if f"url{suffix}" not in info:
        raise MedmnistError(f"MedMNIST '{flag}' has no {size} px file")
    return info[f"url{suffix}"], f"{flag}{suffix}.npz", info[f"MD5{suffix}"]


def download_official(p: MedmnistParams, model_size: int) -> Path | None:
    """The official file for these params, fetched into the folder `p.path` (MD5-checked, reused
    when already there); None when `p.path` is a local .npz to use as is. The `download` stage
    runs this so the file lands in data/downloads, DVC's cache; `prepare` runs it again (a no-op
    then) so that the library works outside the pipeline too."""
    if Path(p.path).suffix == ".npz":
        return None
    url, filename, md5 = official_file(p.flag, resolve_size(p.size, model_size))
    return fetch(url, Path(p.path) / filename, md5)


def load_medmnist(p: MedmnistParams, model_size: int) -> RawDataset:
    info = flag_info(p.flag)
    downloaded = download_official(p, model_size)
    if downloaded is None:
        npz_path, name = Path(p.path), f"{p.flag} from local file {Path(p.path).name}"
    else:
        npz_path = downloaded
        name = f"MedMNIST {p.flag} ({resolve_size(p.size, model_size)} px, official split)"
    class_names = [info["label"][str(i)] for i in range(len(info["label"]))]
    images, labels = read_npz(npz_path, num_classes=len(class_names))
    images = {split: resize_array(array, model_size) for split, array in images.items()}
    return RawDataset(name=name, class_names=class_names, images=images, labels=labels)


def fetch(url: str, dest: Path, md5: str, timeout: float = 30.0) -> Path:
    """Download `url` to `dest` unless a copy with the right MD5 is there; never keep a bad file.

    The download goes to a hidden temporary file beside `dest` and is renamed only once its MD5
    matches: an interrupted or corrupt download never sits under the final name. A later run
    starts it again from scratch.
    """
    stale = None
    kind = not_regular(dest)
    if kind:  # reading a FIFO for its MD5 would block forever
        raise MedmnistError(f"data.medmnist.path: {dest} is not a regular file ({kind}); remove it or "
                            "choose another folder")
    if dest.exists():
        actual = md5sum(dest)
        if actual == md5:
            return dest
        stale = f"{dest} has MD5 {actual}, expected {md5} (corrupt, truncated or another version)"
        log.warning(f"{stale}: downloading it again")
    try:
        with atomic_path(dest) as partial:
            with open(partial, "wb") as out:
                _download(url, out, timeout)
            actual = md5sum(partial)
            if actual != md5:
                raise MedmnistError(f"downloaded {url} but its MD5 is {actual}, expected {md5}; the "
                                    "file was discarded. Try again, or download it by hand (see "
                                    "below).\n" + _offline_message(url, dest, md5, None))
    except WriteError as err:
        if err.errno not in (errno.EACCES, errno.EPERM):
            raise MedmnistError(f"data.medmnist.path: cannot write {dest} ({err.strerror}).\n"
                                + _offline_message(url, dest, md5, None)) from None
        raise MedmnistError(f"data.medmnist.path: cannot write to {dest.parent} ({err.strerror}); "
                            "make it writable or choose another folder.\n"
                            + _offline_message(url, dest, md5, None)) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        if isinstance(err, OSError) and not isinstance(err, urllib.error.URLError) \
                and err.filename is not None:  # the file system refused, not the network
            raise MedmnistError(f"data.medmnist.path: cannot write {dest} ({err.strerror}).\n"
                                + _offline_message(url, dest, md5, None)) from None
        prefix = f"{stale}, and " if stale else ""
        raise MedmnistError(prefix + _offline_message(url, dest, md5, err)) from None
    return dest


def _download(url: str, out, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with progress(total=total, unit="B", unit_scale=True, desc=f"download {Path(url).name}") as bar:
            while block := response.read(1 << 20):
                out.write(block)
                bar.update(len(block))
        if total is not None and out.tell() != total:
            raise OSError(f"connection closed after {out.tell()} of {total} bytes")


def _offline_message(url: str, dest: Path, md5: str, err: Exception | None) -> str:
    cause = f"could not download {url} ({err}).\n" if err else ""
    return (f"{cause}To use MedMNIST without network access, download the file elsewhere:\n"
            f"  URL:  {url}\n  file: {dest.name}\n  MD5:  {md5}\n"
            f"and put it at {dest} (data.medmnist.path is the folder; or set data.medmnist.path to "
            f"the .npz file itself). To try SkinSage offline instead, run the demo:\n  {DEMO_COMMAND}")


def read_npz(path: Path, num_classes: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Read and validate a MedMNIST-layout npz: {train,val,test}_{images,labels}."""
    if not path.exists():
        raise MedmnistError(f"{path}: no such file (data.medmnist.path)")
    kind = not_regular(path)
    if kind:
        raise MedmnistError(f"{path}: not a regular file ({kind}) (data.medmnist.path)")
    try:
        _check_declared_sizes(path)
        loaded = np.load(path, allow_pickle=False)  # never unpickle: a data file must not run code
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("a single array (.npy), not an archive of named arrays")
        with loaded as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise MedmnistError(f"{path}: not a readable .npz file ({err})") from None
    expected = [f"{split}_{kind}" for split in SPLITS for kind in ("images", "labels")]
    missing = [key for key in expected if key not in arrays]
    if missing:
        raise MedmnistError(f"{path}: missing arrays {missing}; a MedMNIST npz holds {expected} "
                            f"(found {sorted(arrays)})")
    images, labels = {}, {}
    for split in SPLITS:
        images[split] = _check_images(arrays[f"{split}_images"], f"{path}:{split}_images")
        labels[split] = _check_labels(arrays[f"{split}_labels"], num_classes, f"{path}:{split}_labels")
        if len(images[split]) != len(labels[split]):
            raise MedmnistError(f"{path}: {split} has {len(images[split])} images but "
                                f"{len(labels[split])} labels")
    return images, labels


def memory_bytes() -> int | None:
    """This machine's physical memory, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _check_declared_sizes(path: Path) -> None:
    """Refuse, before anything is allocated, arrays whose .npy headers declare more bytes than the
    file holds (numpy would allocate the declared size first, then find the data missing) or more
    than this machine's memory. Only the headers are read."""
    if not zipfile.is_zipfile(path):
        return  # not an npz: np.load says what it is
    total = 0
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            where = f"{path}:{info.filename.removesuffix('.npy')}"
            with archive.open(info) as member:
                shape, dtype = _read_npy_header(member, where)
            declared = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
            if declared > info.file_size:
                raise MedmnistError(f"{where}: its header declares {shape} {dtype} "
                                    f"({_gb(declared)}) but the file holds {info.file_size:,} bytes; "
                                    "the file is corrupt or crafted")
            total += declared
    memory = memory_bytes()
    if memory is not None and total > memory:
        raise MedmnistError(f"{path}: loading it needs {_gb(total)} of memory, more than this "
                            f"machine's {_gb(memory)}")


def _read_npy_header(member, where: str) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(member)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise MedmnistError(f"{where}: unsupported .npy format version {version}")
    shape, _, dtype = readers[version](member)
    return tuple(int(n) for n in shape), dtype


def _gb(size: int) -> str:
    return f"{size / 1e9:.1f} GB"


def _check_images(array: np.ndarray, where: str) -> np.ndarray:
    if array.dtype != np.uint8:
        raise MedmnistError(f"{where}: expected uint8 pixels, got {array.dtype}")
    grey = array.ndim == 3
    rgb = array.ndim == 4 and array.shape[-1] == 3
    if not (grey or rgb) or array.shape[1] != array.shape[2]:
        raise MedmnistError(f"{where}: expected shape (N, S, S) or (N, S, S, 3), got {array.shape}")
    return array


def _check_labels(array: np.ndarray, num_classes: int, where: str) -> np.ndarray:
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise MedmnistError(f"{where}: expected integer labels of shape (N,) or (N, 1), got "
                            f"{array.dtype} {array.shape} (multi-label MedMNIST sets are not supported)")
    if len(array) and (array.min() < 0 or array.max() >= num_classes):
        raise MedmnistError(f"{where}: labels must be in 0..{num_classes - 1}, found "
                            f"{array.min()}..{array.max()}")
    return array.astype(np.int64)
