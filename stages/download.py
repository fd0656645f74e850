"""DVC stage `download`: the official MedMNIST file for the params -> data/downloads (DVC-cached,
so `dvc push` / `dvc pull` share it). Nothing to fetch for other sources or a local .npz; either
way data/downloads/manifest.json says what this run uses, so the output is never an empty folder."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as `python stages/download.py`

from skinsage.data.sources.medmnist import download_official  # noqa: E402
from skinsage.errors import run_reporting_errors  # noqa: E402
from skinsage.fileio import write_json  # noqa: E402
from skinsage.params import load_params  # noqa: E402

OUT = Path("data/downloads")
MANIFEST = OUT / "manifest.json"


def main() -> None:
    params = load_params("params.yaml")
    OUT.mkdir(parents=True, exist_ok=True)
    source = params.data.source
    if source != "medmnist":
        print(f"download: nothing to fetch for data.source {source}")
        write_json(MANIFEST, {"data.source": source, "downloaded": None})
        return
    path = download_official(params.data.medmnist, params.image_size)
    print(f"download: {path}" if path else f"download: using the local file {params.data.medmnist.path}")
    write_json(MANIFEST, {"data.source": source, "downloaded": path.name if path else None,
                          "local_file": None if path else str(params.data.medmnist.path)})


if __name__ == "__main__":
    run_reporting_errors(main)
