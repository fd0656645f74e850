"""Saving and loading `.keras` files together with SkinSage's metadata (inside the same zip).

The metadata says what the network's inputs and outputs mean (class names, image size) and how the
model is meant to be run (`inference`: the TTA it was evaluated with). Everything that loads a
model goes through `load_model`, which checks that the metadata fits the network.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from ..errors import SkinSageError
from ..fileio import atomic_path
from .inference import TTA_CHOICES

METADATA_ENTRY = "skinsage.json"
FORMAT = "skinsage-model/1"


class ModelFileError(SkinSageError, ValueError):
    """The file is not a usable SkinSage model."""


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
            metadata = json.loads(archive.read(METADATA_ENTRY))
    except zipfile.BadZipFile:
        raise ModelFileError(f"{path}: not a Keras .keras model file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFileError(f"{path}: its SkinSage metadata is not valid JSON ({err})") from None
    if not isinstance(metadata, dict):
        raise ModelFileError(f"{path}: its SkinSage metadata is not a JSON object")
    return metadata


def load_model(path: str | Path):
    """(model, metadata), the metadata checked against the network; safe mode: nothing in the
    file can run code."""
    import keras

    from . import layers  # noqa: F401  registers SkinSage's custom layers

    metadata = read_metadata(path)
    check_metadata(metadata, str(path))
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as err:  # noqa: BLE001  Keras raises many kinds; the user needs the reason
        raise ModelFileError(f"{path}: cannot load it as a Keras model ({type(err).__name__}: "
                             f"{str(err).strip()[:500]})") from None
    check_network(model, metadata, str(path))
    return model, metadata


def check_metadata(metadata: dict, where: str = "model") -> tuple[list[str], int]:
    """(class names, image size) from a model's metadata, or a ModelFileError saying what is wrong."""
    classes, size = metadata.get("classes"), metadata.get("image_size")
    if not (isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) for c in classes)):
        raise ModelFileError(f"{where}: its SkinSage metadata has no valid 'classes' list ({classes!r}); "
                             "retrain it with the SkinSage pipeline")
    if not (isinstance(size, int) and size > 0):
        raise ModelFileError(f"{where}: its SkinSage metadata has no valid 'image_size' ({size!r}); "
                             "retrain it with the SkinSage pipeline")
    return list(classes), size


def check_network(model, metadata: dict, where: str = "model") -> None:
    """The metadata must describe this network: a mismatch would silently mislabel every image."""
    classes, size = check_metadata(metadata, where)
    inputs, outputs = tuple(model.input_shape), tuple(model.output_shape)
    if inputs[1:3] not in ((size, size), (None, None)):
        raise ModelFileError(f"{where}: the network takes {inputs[1:3]} images but its metadata says "
                             f"{size} px; the file is inconsistent")
    if outputs[-1] != len(classes):
        raise ModelFileError(f"{where}: the network has {outputs[-1]} outputs but its metadata names "
                             f"{len(classes)} classes; the file is inconsistent")


def inference_settings(metadata: dict, where: str = "model") -> dict:
    """How the model is meant to be run: {"tta": "none" | "flips"}. Recorded by `train` from
    `evaluate.tta`; files from before it was recorded fall back to their saved params."""
    recorded = metadata.get("inference") or {}
    tta = recorded.get("tta", ((metadata.get("params") or {}).get("evaluate") or {}).get("tta", "none"))
    if tta not in TTA_CHOICES:
        raise ModelFileError(f"{where}: its SkinSage metadata records TTA {tta!r}; expected one of "
                             f"{', '.join(TTA_CHOICES)}")
    return {"tta": tta}
