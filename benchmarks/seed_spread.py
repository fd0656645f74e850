"""How much a configuration's figures depend on the seed: the pipeline's own stages, once per seed.

    .venv/bin/python benchmarks/seed_spread.py --seeds 42 1 2 3 4 [--test] [--out FILE.json] \\
        -S model=cnn -S data.source=medmnist -S data.medmnist.path=../shared/data/ham10000_28.npz

Each seed runs `stages/prepare.py`, `stages/train.py` and `stages/evaluate.py` of this checkout, as
`dvc repro` would, in a scratch project folder (params.yaml = this project's with the `-S`
overrides and `seed`), one process per stage. Prints per seed and mean ± std (and the worst seed)
of the validation figures; test figures only with `--test` (choose on validation, report test once).
`--out` keeps every seed's metrics/eval.json and metrics/train.json as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("prepare", "train", "evaluate")
FIGURES = (("accuracy", "acc"), ("balanced_accuracy", "bal acc"), ("auc_macro_ovr", "AUC"), ("ece", "ECE"))


def scratch_project(folder: Path, overrides: list[str], seed: int) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for item in [*overrides, f"seed={seed}"]:
        key, _, value = item.partition("=")
        node = params
        *parents, leaf = key.split(".")
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = yaml.safe_load(value)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run_seed(folder: Path, quiet: bool) -> dict:
    env = {**os.environ, "SKINSAGE_QUIET": "1"}
    for stage in STAGES:
        out = subprocess.DEVNULL if quiet else None
        subprocess.run([sys.executable, str(ROOT / "stages" / f"{stage}.py")], cwd=folder, env=env,
                       check=True, stdout=out)
    read = lambda name: json.loads((folder / "metrics" / name).read_text())  # noqa: E731
    return {"eval": read("eval_full.json"), "train": read("train_full.json")}


def row(seed, result: dict, split: str) -> list[str]:
    figures = result["eval"] if split == "test" else result["eval"]["val"]
    train = result["train"]
    cells = [f"{figures[key]:.4f}" for key, _ in FIGURES]
    return [str(seed), *cells, str(train["epochs_run"]), str(train["best_epoch"]),
            f"{train.get('logit_adjustment_tau', 0):g}", f"{train.get('temperature', 1):.3f}",
            f"{train['train_seconds']:.0f}"]


def print_table(results: dict, split: str) -> None:
    head = ["seed", *(label for _, label in FIGURES), "epochs", "best", "tau", "T", "train s"]
    print(f"\n{split}:\n| " + " | ".join(head) + " |\n|" + " ---: |" * len(head))
    for seed, result in results.items():
        print("| " + " | ".join(row(seed, result, split)) + " |")
    values = {key: np.array([(r["eval"] if split == "test" else r["eval"]["val"])[key] for r in results.values()])
              for key, _ in FIGURES}
    print("| mean ± std | " + " | ".join(f"{v.mean():.4f} ± {v.std(ddof=1) if len(v) > 1 else 0:.4f}"
                                       for v in values.values()) + " |")
    worst = {key: (v.max() if key == "ece" else v.min()) for key, v in values.items()}
    print("| worst seed | " + " | ".join(f"{w:.4f}" for w in worst.values()) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-S", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2, 3, 4])
    parser.add_argument("--test", action="store_true", help="also print the test figures")
    parser.add_argument("--out", type=Path, help="write every seed's metrics here (JSON)")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--verbose", action="store_true", help="show the stages' output")
    args = parser.parse_args()
    base = args.workdir or Path(tempfile.mkdtemp(prefix="seed-spread-"))
    results = {}
    for seed in args.seeds:
        folder = base / f"seed{seed}"
        scratch_project(folder, args.overrides, seed)
        start = time.perf_counter()
        results[seed] = run_seed(folder, quiet=not args.verbose)
        print(f"seed {seed}: done in {time.perf_counter() - start:.0f} s", flush=True)
        if args.out:
            args.out.write_text(json.dumps({"overrides": args.overrides, "results": results}, indent=1))
    print(f"\noverrides: {' '.join(args.overrides) or '(none)'}")
    print_table(results, "val")
    if args.test:
        print_table(results, "test")


if __name__ == "__main__":
    main()
