"""`make demo`: the whole pipeline as one DVC experiment, on real skin images when possible.

Where DermaMNIST's 28 px file (~19 MB, URL and MD5 from `medmnist.INFO`) is reachable, the demo
trains the CNN on it with a short schedule (a few minutes on 2 cores) and the metrics are real. Where
it is not (offline machines), it says so in one line and runs on generated shapes instead, which
only prove that the plumbing works.

    dvc exp run $(python -m skinsage.app.demo)   # what `make demo` runs

It prints the `dvc exp run` overrides of the chosen demo on stdout and says which one on stderr;
launching DVC is left to the Makefile (the package never starts programs). `dvc exp run` leaves the
experiment applied in the workspace (params.yaml holds the demo's settings, dvc.lock and the outputs
match them), so `dvc status` is clean; `--applied` tells the Makefile that params.yaml already holds
these overrides, so that a repeated `make demo` with `dvc status` clean records no second experiment.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from pathlib import Path

import yaml

REAL = ("-S", "model=cnn", "-S", "data.source=medmnist", "-S", "data.medmnist.flag=dermamnist",
        "-S", "data.medmnist.size=28", "-S", "models.cnn.image_size=28", "-S", "train.epochs=15",
        "-S", "train.early_stopping.start_from_epoch=10")
SYNTHETIC = ("-S", "model=cnn", "-S", "data.source=synthetic")
PROBE_SECONDS = 5.0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--applied"]:
        return 0 if applied(argv[1:]) else 1
    reachable, reason = dermamnist_reachable()
    if reachable:
        print("demo: real DermaMNIST images (28 px, official split), CNN with a short 15-epoch schedule",
              file=sys.stderr)
    else:
        print(f"demo: DermaMNIST is not reachable from here ({reason}); running the offline demo on "
              "generated shapes instead (not skin images)", file=sys.stderr)
    print(" ".join(REAL if reachable else SYNTHETIC))
    return 0


def applied(overrides: list[str], params_path: str | Path = "params.yaml") -> bool:
    """Whether params.yaml already holds every `-S key=value` (values read as YAML, as DVC does)."""
    params = yaml.safe_load(Path(params_path).read_text(encoding="utf-8"))
    pairs = [item.split("=", 1) for item in overrides if item != "-S"]
    for key, value in pairs:
        node = params
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        if node != yaml.safe_load(value):
            return False
    return True


def dermamnist_reachable() -> tuple[bool, str]:
    """(True, "") when the official 28 px DermaMNIST file answers a HEAD request in a few seconds."""
    from ..data.sources.medmnist import MedmnistError, official_file

    try:
        url, _, _ = official_file("dermamnist", 28)
        request = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(request, timeout=PROBE_SECONDS):
            return True, ""
    except MedmnistError as err:
        return False, str(err)
    except (urllib.error.URLError, OSError, ValueError) as err:
        return False, f"{type(err).__name__}: {getattr(err, 'reason', err)}"


if __name__ == "__main__":
    raise SystemExit(main())
