"""Saving and loading `.keras` files together with SkinSage's metadata (inside the same zip).

The metadata says what the network's inputs and outputs mean (class names, image size) and how the
model is meant to be run (`inference`: the TTA it was evaluated with). Everything that loads a
model goes through `load_model`, which checks that the metadata fits the network.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

from ..errors import SkinSageError
from ..fileio import atomic_path, not_regular
from .inference import check_tta

METADATA_ENTRY = "skinsage.json"
FORMAT = "skinsage-model/1"
MAX_METADATA_BYTES = 1 << 20  # train writes a few KiB; a bigger entry is not SkinSage's


class ModelFileError(SkinSageError, ValueError):
    """The file is not a usable SkinSage model."""


def save_model(model, path: str | Path, metadata: dict) -> None:
    """Refused before writing when the metadata is more than `load_model` reads back."""
    entry = json.dumps(metadata, indent=2).encode("utf-8")
    if len(entry) > MAX_METADATA_BYTES:
        raise ModelFileError(f"{path}: the model's metadata would be {len(entry) / 2**20:.1f} MiB, more "
                             f"than the {MAX_METADATA_BYTES // 2**20} MiB a model file may carry (class "
                             "names, clinical vocabularies and params all go in it); not saved")
    with atomic_path(path) as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(METADATA_ENTRY, entry)


def read_metadata(path: str | Path) -> dict:
    """The metadata as saved (a JSON object); checked for meaning by `check_metadata`."""
    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder, not a model file; give the .keras file "
                             f"(e.g. {path / 'model.keras'})")
    kind = not_regular(path)
    if kind:  # opening a FIFO would block forever
        raise ModelFileError(f"{path}: not a regular file ({kind}); give the .keras file")
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        with zipfile.ZipFile(path) as archive:
            if METADATA_ENTRY not in archive.namelist():
                raise ModelFileError(f"{path}: a Keras file without SkinSage metadata (class names, "
                                     "image size); train it with the SkinSage pipeline")
            metadata = json.loads(_read_capped(archive, path))
    except zipfile.BadZipFile:
        raise ModelFileError(f"{path}: not a Keras .keras model file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFileError(f"{path}: its SkinSage metadata is not valid JSON ({err})") from None
    except RecursionError:
        raise ModelFileError(f"{path}: its SkinSage metadata is JSON nested too deeply; the file is "
                             "not one SkinSage wrote") from None
    if not isinstance(metadata, dict):
        raise ModelFileError(f"{path}: its SkinSage metadata is not a JSON object")
    return metadata


def _read_capped(archive: zipfile.ZipFile, path: Path) -> bytes:
    """The metadata entry, refused unread when its declared size is over MAX_METADATA_BYTES, and
    never read past the cap even if the zip lies about the size (a decompression bomb)."""
    declared = archive.getinfo(METADATA_ENTRY).file_size
    if declared > MAX_METADATA_BYTES:
        raise ModelFileError(_too_large(path, declared))
    with archive.open(METADATA_ENTRY) as entry:
        data = entry.read(MAX_METADATA_BYTES + 1)
    if len(data) > MAX_METADATA_BYTES:
        raise ModelFileError(_too_large(path, len(data)))
    return data


def _too_large(path: Path, size: int) -> str:
    return (f"{path}: its SkinSage metadata is {size / 2**20:.1f} MiB, more than the "
            f"{MAX_METADATA_BYTES // 2**20} MiB allowed (train writes a few KiB); the file is not "
            "one SkinSage wrote")


def register_custom_layers() -> None:
    """Import every module with SkinSage's custom Keras layers: their decorators register them, so
    a saved model loads (here, and in plain `keras.saving.load_model` after `import skinsage`)."""
    from . import layers, ood  # noqa: F401


def load_model(path: str | Path):
    """(model, metadata), the metadata checked against the network; safe mode: nothing in the
    file can run code."""
    import keras

    register_custom_layers()

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
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise ModelFileError(f"{where}: its SkinSage metadata has duplicate class name(s): "
                             f"{', '.join(repeated)}; each output must have its own name")
    if not (isinstance(size, int) and not isinstance(size, bool) and size > 0):
        raise ModelFileError(f"{where}: its SkinSage metadata has no valid 'image_size' ({size!r}); "
                             "retrain it with the SkinSage pipeline")
    _check_objects(metadata, where)
    return list(classes), size


def _check_objects(metadata: dict, where: str) -> None:
    """The optional sections that code reads with .get(): each must be an object when present."""
    sections = {"params": metadata.get("params"), "inference": metadata.get("inference"),
                "train_summary": metadata.get("train_summary"), "clinical": metadata.get("clinical")}
    params = metadata.get("params")
    if isinstance(params, dict):
        sections.update({f"params.{key}": params.get(key) for key in ("evaluate", "models", "train")})
    for key in ("model", "dataset", "format", "params_hash"):  # printed by `info`
        value = metadata.get(key)
        if value is not None and not isinstance(value, str):
            raise ModelFileError(f"{where}: its SkinSage metadata is malformed: {key!r} must be a "
                                 f"string, got {type(value).__name__}; retrain it with the SkinSage "
                                 "pipeline")
    for key, value in sections.items():
        if value is not None and not isinstance(value, dict):
            raise ModelFileError(f"{where}: its SkinSage metadata is malformed: {key!r} must be an "
                                 f"object, got {type(value).__name__}; retrain it with the SkinSage "
                                 "pipeline")


def check_network(model, metadata: dict, where: str = "model") -> None:
    """The metadata must describe this network: a mismatch would silently mislabel every image."""
    from .clinical import clinical_fields, image_input_shape

    from .inference import output_width

    classes, size = check_metadata(metadata, where)
    inputs, width = image_input_shape(model), output_width(model)
    if inputs[1:3] not in ((size, size), (None, None)):
        raise ModelFileError(f"{where}: the network takes {inputs[1:3]} images but its metadata says "
                             f"{size} px; the file is inconsistent")
    if width != len(classes):
        raise ModelFileError(f"{where}: the network has {width} outputs but its metadata names "
                             f"{len(classes)} classes; the file is inconsistent")
    fields, recorded = clinical_fields(model), clinical_record(metadata)["inputs"]
    if hasattr(model, "inputs") and sorted(fields) != sorted(recorded):
        raise ModelFileError(f"{where}: the network takes clinical inputs {fields or 'none'} but its "
                             f"metadata says {recorded or 'none'}; the file is inconsistent")


def clinical_record(metadata: dict) -> dict:
    """What `train` recorded about the clinical inputs: {"inputs": [fields], "columns": {field:
    CSV column it was trained from}, "encoding": {...}}; no inputs for an image-only model."""
    record = metadata.get("clinical") or {}
    return {"inputs": list(record.get("inputs") or []), "columns": dict(record.get("columns") or {}),
            "encoding": dict(record.get("encoding") or {})}


def _recorded_number(value, where: str, key: str, expected: str, low: float = -math.inf,
                     high: float = math.inf) -> float:
    """A number `train` recorded under `key`, finite and in [low, high]; the one check of them all."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and low <= value <= high):
        raise ModelFileError(f"{where}: its SkinSage metadata records {key} {value!r}; expected {expected}")
    return float(value)


def inference_settings(metadata: dict, where: str = "model") -> dict:
    """How the model is meant to be run, as `inference.predict_probabilities` keywords:
    {"tta": "none" | "flips", "temperature": T}. Recorded by `train` (TTA from `evaluate.tta`, T
    fitted on validation); files from before fall back to their saved params' TTA and T = 1."""
    recorded = metadata.get("inference") or {}
    tta = recorded.get("tta", ((metadata.get("params") or {}).get("evaluate") or {}).get("tta", "none"))
    check_tta(tta, ModelFileError, f"{where}: the TTA its SkinSage metadata records")
    temperature = _recorded_number(recorded.get("temperature", 1.0), where, "temperature", "a positive number",
                                   low=1e-12)
    return {"tta": tta, "temperature": temperature}


def referral_settings(metadata: dict, where: str = "model") -> dict | None:
    """The referral operating point `train` recorded ({"classes", "threshold", "target_sensitivity",
    ...}, model/referral.py), checked against the classes; None for a file without one."""
    from .referral import RECORD_KEY

    record, classes = metadata.get(RECORD_KEY), list(metadata.get("classes") or [])
    if record is None:
        return None
    key = f"a malformed '{RECORD_KEY}' record"
    if not isinstance(record, dict):
        raise ModelFileError(f"{where}: its SkinSage metadata records {key} ({type(record).__name__}); "
                             "expected an object: retrain it with the SkinSage pipeline")
    refer = record.get("classes")
    if not (isinstance(refer, list) and refer and all(name in classes for name in refer)):
        raise ModelFileError(f"{where}: its SkinSage metadata records {key} (classes {refer!r}); expected a "
                             "non-empty list of the model's classes: retrain it with the SkinSage pipeline")
    _recorded_number(record.get("threshold"), where, f"{RECORD_KEY}.threshold", "a number in 0..1", 0, 1)
    return record


def decision_settings(metadata: dict, where: str = "model") -> dict:
    """The thresholds behind each prediction's `status` (model/decision.py): {"ood": {"method",
    "retain", "threshold"} | None, "uncertain": {"coverage", "threshold"} | None}, fitted on
    validation by `train`. A file from before has neither: its status is always "ok" and its
    ood_score None (`Classifier` warns once)."""
    recorded, out = metadata.get("inference") or {}, {}
    for key in ("ood", "uncertain"):
        section = recorded.get(key)
        if section is not None:
            if not isinstance(section, dict):
                raise ModelFileError(f"{where}: its SkinSage metadata records inference.{key} {section!r}; "
                                     "expected an object with a numeric 'threshold'")
            _recorded_number(section.get("threshold"), where, f"inference.{key}.threshold", "a number")
            section = dict(section)
        out[key] = section
    return out
