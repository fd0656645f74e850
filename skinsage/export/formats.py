"""The export formats' names, file suffixes and side JSON: what the converters (convert.py), the
runtimes (runtime.py), the `export` stage and `skinsage export` all go by. Imports nothing heavy."""

from __future__ import annotations

from pathlib import Path

from ..params import EXPORT_TARGETS

FORMATS = ("litert", "onnx", "saved_model")
QUANTIZATIONS = ("none", "float16", "int8")
SUPPORTED = {"litert": QUANTIZATIONS, "onnx": ("none",), "saved_model": ("none",)}
SUFFIXES = {"litert": ".tflite", "onnx": ".onnx", "saved_model": ""}
FORMAT_NAMES = {"litert": "LiteRT", "onnx": "ONNX", "saved_model": "TF SavedModel"}
EXPORT_FORMAT = "skinsage-export/1"  # the side JSON's "export.format"
EXPORTED_SUFFIXES = {suffix: fmt for fmt, suffix in SUFFIXES.items() if suffix}
# params.yaml's export.formats entries (params.EXPORT_TARGETS) -> (format, quantisation, file name)
TARGETS = {"litert": ("litert", "none", "model.tflite"),
           "litert_float16": ("litert", "float16", "model_float16.tflite"),
           "litert_int8": ("litert", "int8", "model_int8.tflite"),
           "onnx": ("onnx", "none", "model.onnx")}
assert tuple(TARGETS) == EXPORT_TARGETS, "params.EXPORT_TARGETS and export TARGETS name the same entries"


def sidecar_path(path: str | Path) -> Path:
    """Where the class names, input size and the model's metadata travel: `F.json` beside F."""
    return Path(f"{Path(path)}.json")


def exported_format(path: str | Path) -> str | None:
    """"litert", "onnx" or "saved_model" when `path` is an exported model, else None (.keras).
    "saved_model" is recognised only to be refused (runtime.refuse_saved_model)."""
    path = Path(path)
    if path.suffix.lower() in EXPORTED_SUFFIXES:
        return EXPORTED_SUFFIXES[path.suffix.lower()]
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return "saved_model"
    return None
