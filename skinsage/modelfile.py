"""Saving and loading `.keras` files together with SkinSage's metadata (inside the same zip)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from .errors import SkinSageError
from .fileio import atomic_path

METADATA_ENTRY = "skinsage.json"


class ModelFileError(SkinSageError, ValueError):
    """The file is not a SkinSage model."""


def save_model(model, path: str | Path, metadata: dict) -> None:
    with atomic_path(path) as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(METADATA_ENTRY, json.dumps(metadata, indent=2))


def read_metadata(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        with zipfile.ZipFile(path) as archive:
            if METADATA_ENTRY not in archive.namelist():
                raise ModelFileError(f"{path}: a Keras file without SkinSage metadata (class names, "
                                     "image size); train it with the SkinSage pipeline")
            return json.loads(archive.read(METADATA_ENTRY))
    except zipfile.BadZipFile:
        raise ModelFileError(f"{path}: not a Keras .keras model file") from None


def load_model(path: str | Path):
    """(model, metadata); safe mode: nothing in the file can run code."""
    import keras

    from . import logit_adjustment, models  # noqa: F401  register SkinSage's custom layers

    metadata = read_metadata(path)
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as err:  # noqa: BLE001  Keras raises many kinds; the user needs the reason
        raise ModelFileError(f"{path}: cannot load it as a Keras model ({type(err).__name__}: "
                             f"{str(err).strip()[:500]})") from None
    return model, metadata
