"""With and without clinical metadata: the 28 or 64 px CNN on real HAM10000 (csv source, split by
lesion), per seed and mean ± std, for the docs/results.md table (issue #18).

    .venv/bin/python benchmarks/metadata_table.py --size 28 [--seeds 1 2 3] [--test]
    .venv/bin/python benchmarks/metadata_table.py --size 64 [--seeds 1 2 3] [--test]

Drives the stage code in-process with params.yaml plus overrides (as `dvc exp run -S` would): per
seed, `prepare` once (the csv source on DATA/ham10000_metadata.csv + DATA/ham10000_jpg, `group:
lesion_id`, clinical columns age/sex/localization), then `train` twice, image only and with
`models.cnn.metadata: [age, sex, site]`, each scored like the `evaluate` stage (the model's TTA, its
one inference path). Validation accuracy, balanced accuracy, macro AUC and training seconds are
printed; test figures only with --test (choose on validation, then report test once).
--epochs and --limit (N evenly spaced CSV rows) are for smoke runs only.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project's skinsage, when run from a worktree

from skinsage.data.prepare import prepare  # noqa: E402
from skinsage.evaluate.scoring import evaluate_split  # noqa: E402
from skinsage.params import load_params  # noqa: E402
from skinsage.prepared import load_prepared  # noqa: E402
from skinsage.train.trainer import train_model  # noqa: E402

METRICS = ("accuracy", "balanced_accuracy", "auc_macro_ovr")
SIZE_OPTIONS = {28: {}, 64: {"models.cnn.image_size": 64, "models.cnn.stem_stride": 2,  # README's 64 px CNN
                             "models.cnn.filters": [32, 64, 128, 256]}}
CONFIGS = {"image only": [], "image + age, sex, site": ["age", "sex", "site"]}


def overrides(args, csv_path: Path, seed: int, metadata: list[str]) -> dict:
    data = Path(args.data)
    return {"model": "cnn", "seed": seed, "models.cnn.image_size": 28, **SIZE_OPTIONS[args.size],
            "data.source": "csv", "data.csv.path": str(csv_path), "data.csv.images": str(data / "ham10000_jpg"),
            "data.csv.id": "image_id", "data.csv.label": "dx", "data.csv.group": "lesion_id",
            "data.csv.clinical": {"age": "age", "sex": "sex", "site": "localization"},
            "models.cnn.metadata": metadata, **({"train.epochs": args.epochs} if args.epochs else {})}


def limited_csv(source: Path, limit: int | None, folder: Path) -> Path:
    """The metadata CSV, or `limit` of its rows, evenly spaced (smoke runs; HAM10000's CSV is
    sorted by class, so its first rows are one class)."""
    if not limit:
        return source
    with open(source, newline="") as f:
        rows = list(csv.reader(f))
    target = folder / "metadata_limited.csv"
    with open(target, "w", newline="") as f:
        step = max(1, (len(rows) - 1) // limit)
        csv.writer(f).writerows([rows[0], *rows[1::step][:limit]])
    return target


def run_one(params, prepared: Path, test: bool) -> dict:
    """Train as the `train` stage does; score val (and test) as the `evaluate` stage does."""
    import keras

    keras.backend.clear_session()
    data = load_prepared(prepared, splits=("train", "val", "test"))
    start = time.perf_counter()
    model, _, summary = train_model(params, data)
    result = {"train_seconds": summary["train_seconds"], "wall_seconds": time.perf_counter() - start}
    for split in ("val", "test") if test else ("val",):
        metrics, _, _ = evaluate_split(model, data.splits[split], data.class_names, params.evaluate.batch_size,
                                       tta=params.evaluate.tta)
        result.update({f"{split}_{key}": metrics[key] for key in METRICS})
    return result


def cell(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def print_table(results: dict[str, list[dict]], test: bool, size: int) -> None:
    columns = [f"{split}_{key}" for split in (("val", "test") if test else ("val",)) for key in METRICS]
    print(f"\n{size} px CNN, HAM10000 split by lesion (csv source)")
    print("| inputs | seeds | " + " | ".join(c.replace("_", " ") for c in columns) + " | train s |")
    print("| --- | --- |" + " --- |" * (len(columns) + 1))
    for config, runs in results.items():
        values = [cell([run[c] for run in runs]) for c in columns]
        seconds = [run["train_seconds"] for run in runs]
        seconds = f"{np.mean(seconds):.0f}" + (f" ± {np.std(seconds, ddof=1):.0f}" if len(seconds) > 1 else "")
        print(f"| {config} | {len(runs)} | " + " | ".join(values) + f" | {seconds} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, choices=sorted(SIZE_OPTIONS), required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--test", action="store_true", help="also report the test split (once, at the end)")
    parser.add_argument("--data", default=str(ROOT / ".." / "shared" / "data"), help="folder with "
                        "ham10000_metadata.csv and ham10000_jpg/ (default ../shared/data)")
    parser.add_argument("--work", help="folder for the prepared splits (default: a temporary one)")
    parser.add_argument("--epochs", type=int, help="override train.epochs (smoke runs only)")
    parser.add_argument("--limit", type=int, help="use only N evenly spaced CSV rows (smoke runs only)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        csv_path = limited_csv(Path(args.data) / "ham10000_metadata.csv", args.limit, work)
        results = {config: [] for config in CONFIGS}
        for seed in args.seeds:
            prepared = work / f"prepared_{args.size}_s{seed}"
            base = load_params(ROOT / "params.yaml", overrides(args, csv_path, seed, []))
            prepare(base, prepared, work / f"data_{args.size}_s{seed}.json")  # shared by both configs
            for config, metadata in CONFIGS.items():
                run = run_one(load_params(ROOT / "params.yaml", overrides(args, csv_path, seed, metadata)),
                              prepared, args.test)
                results[config].append(run)
                print(f"seed {seed} | {config}: " + ", ".join(f"{k} {v:.4f}" for k, v in run.items()), flush=True)
        print_table(results, args.test, args.size)


if __name__ == "__main__":
    main()
