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
MODEL = "models/model.keras"


def main() -> None:
    from skinsage.export.formats import TARGETS

    formats = load_params("params.yaml").export.formats or ()
    with atomic_dir(OUT) as staging:  # the folder appears whole, or the old one stays
        if formats:
            export_all(formats, staging)
        write_json(staging / "manifest.json", {"formats": list(formats),
                                               "files": [TARGETS[name][2] for name in formats]})


def export_all(formats, folder: Path) -> None:
    from skinsage.export.convert import export_files
    from skinsage.export.formats import TARGETS

    requests = [(folder / TARGETS[name][2], *TARGETS[name][:2]) for name in formats]
    for (path, _, _), result in zip(requests, export_files(MODEL, requests)):
        print(f"export: {path.name} ({result.verification})")


if __name__ == "__main__":
    run_reporting_errors(main)
