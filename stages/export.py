"""DVC stage `export` (optional): models/model.keras -> models/exported/ in the formats of
`export.formats` (LiteRT, quantised LiteRT, ONNX), each checked against Keras as `skinsage export`
does. With `formats: []` (the default) it only writes the empty manifest, in a second."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as `python stages/export.py`

from skinsage.errors import run_reporting_errors  # noqa: E402
from skinsage.fileio import atomic_dir, write_json  # noqa: E402
from skinsage.params import load_params  # noqa: E402

OUT = Path("models/exported")
# export.formats entry -> (format, quantisation, file name)
TARGETS = {"litert": ("litert", "none", "model.tflite"),
           "litert_float16": ("litert", "float16", "model_float16.tflite"),
           "litert_int8": ("litert", "int8", "model_int8.tflite"),
           "onnx": ("onnx", "none", "model.onnx")}


def main() -> None:
    formats = load_params("params.yaml").export.formats or ()
    with atomic_dir(OUT) as staging:  # the folder appears whole, or the old one stays
        if formats:
            export_all(formats, staging)
        write_json(staging / "manifest.json", {"formats": list(formats),
                                               "files": [TARGETS[name][2] for name in formats]})


def export_all(formats, folder: Path) -> None:
    from skinsage.export.convert import calibration_images, export_model
    from skinsage.model.model_file import load_model

    model, metadata = load_model("models/model.keras")
    for name in formats:
        fmt, quantize, filename = TARGETS[name]
        calibration = (calibration_images("data/prepared", metadata["image_size"])
                       if quantize == "int8" else None)
        result = export_model(model, metadata, folder / filename, fmt, quantize,
                              calibration=calibration, source="models/model.keras")
        print(f"export: {filename} ({result.verification})")


if __name__ == "__main__":
    run_reporting_errors(main)
