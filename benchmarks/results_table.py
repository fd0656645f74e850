"""The docs/results.md table from DVC experiments: mean ± std over seeds per configuration.

    .venv/bin/python benchmarks/results_table.py [PROJECT_DIR] [--val-only] [--match REGEX]

Reads `dvc exp show --all-commits --json` in PROJECT_DIR (default: here). Experiments named
`<config>-s<seed>` (e.g. `dvc exp run --queue -n cnn28-s1 -S seed=1 ...`) are grouped by <config>;
each row gives the validation and test accuracy, balanced accuracy and macro AUC (MedMNIST's) and the
training seconds. `--val-only` hides the test columns: use it while screening, so that nothing is
chosen on test.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from collections import defaultdict

import numpy as np

COLUMNS = [("val", "accuracy"), ("val", "balanced_accuracy"), ("val", "auc_macro_ovr"),
           ("test", "accuracy"), ("test", "balanced_accuracy"), ("test", "auc_macro_ovr")]


def experiments(project: str) -> list[dict]:
    out = subprocess.run(["dvc", "exp", "show", "--all-commits", "--json"], cwd=project, check=True,
                         capture_output=True, text=True).stdout
    found = []
    for commit in json.loads(out):
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs", []):
                data = rev.get("data") or {}
                metrics = data.get("metrics") or {}
                evaluation = (metrics.get("metrics/eval.json") or {}).get("data")
                train = (metrics.get("metrics/train.json") or {}).get("data")
                if rev.get("name") and evaluation and train:
                    found.append({"name": rev["name"], "eval": evaluation, "train": train})
    return found


def rows(found: list[dict]) -> dict[str, list[dict]]:
    groups = defaultdict(list)
    for exp in found:
        match = re.fullmatch(r"(.+)-s(\d+)", exp["name"])
        groups[match.group(1) if match else exp["name"]].append(exp)
    return dict(sorted(groups.items()))


def cell(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", nargs="?", default=".")
    parser.add_argument("--val-only", action="store_true", help="no test columns (for screening)")
    parser.add_argument("--match", default="", help="only configurations matching this regex")
    args = parser.parse_args()
    columns = [c for c in COLUMNS if c[0] == "val"] if args.val_only else COLUMNS
    groups = {k: v for k, v in rows(experiments(args.project)).items() if re.search(args.match, k)}
    header = ["configuration", "seeds"] + [f"{split} {metric.replace('_', ' ')}" for split, metric in columns]
    print("| " + " | ".join(header + ["train s"]) + " |")
    print("|" + " --- |" * (len(header) + 1))
    for config, exps in groups.items():
        values = [cell([(e["eval"] if split == "test" else e["eval"]["val"])[metric] for e in exps])
                  for split, metric in columns]
        seconds = f"{np.mean([e['train']['train_seconds'] for e in exps]):.0f}"
        print(f"| {config} | {len(exps)} | " + " | ".join(values) + f" | {seconds} |")


if __name__ == "__main__":
    main()
