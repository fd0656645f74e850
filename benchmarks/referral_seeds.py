"""The referral operating point of already-trained models, fitted post hoc (docs/results.md, #26).

For each model folder (model.keras + prepared/ as `dvc repro` leaves them): the final validation
probabilities (the model's recorded TTA and temperature: `inference.predict_probabilities`), the
threshold fitted on them with `train`'s own rule (model/referral.py, params.yaml's
train.referral), then the test figures at that threshold with `evaluate`'s own code. The test split
is scored once per model, after the threshold is fixed.

    python benchmarks/referral_seeds.py /work/scratch/models/cnn28-s*  [--json out.json] [--save DIR]

--save writes a copy of each model with the fitted record in its metadata (DIR/<folder>.keras), as
`train` now saves it, for `skinsage predict` / `skinsage evaluate` on them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from skinsage.evaluate.referral import referral_metrics  # noqa: E402
from skinsage.model.inference import predict_probabilities  # noqa: E402
from skinsage.model.model_file import inference_settings, load_model, save_model  # noqa: E402
from skinsage.model.referral import fit_referral, refer_class_names  # noqa: E402
from skinsage.params import load_params  # noqa: E402
from skinsage.prepared import load_split  # noqa: E402


def score(folder: Path, params, save: Path | None = None) -> dict:
    model, metadata = load_model(folder / "model.keras")
    classes, settings = metadata["classes"], inference_settings(metadata)
    refer = refer_class_names(params.train.referral.classes, classes)
    probs = {}
    for split in ("val", "test"):
        data = load_split(folder / "prepared", split)
        probs[split] = (data.labels, predict_probabilities(model, data, 256, **settings, clinical=data.clinical))
    record = fit_referral(*probs["val"][::-1], classes, refer, params.train.referral.target_sensitivity)
    seed = (metadata.get("params") or {}).get("seed", 0)
    test = referral_metrics(*probs["test"], classes, record, bootstrap=1000, seed=seed)
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        save_model(model, save / f"{folder.name}.keras", {**metadata, "referral": record})
    return {"model": str(folder), "seed": seed, "record": record, "test": test}


def table(rows: list[dict]) -> str:
    lines = ["| seed | threshold | val sens / spec | test sensitivity (95% CI) | test specificity (95% CI) "
             "| AUC (95% CI) | melanoma sens | PPV | referral rate | test sens - target |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        r, t = row["record"], row["test"]
        ci = t["ci95"]
        lines.append(
            f"| {row['seed']} | {r['threshold']:.4f} | {r['val_sensitivity']:.3f} / {r['val_specificity']:.3f} "
            f"| {t['sensitivity']:.3f} ({ci['sensitivity']['low']:.3f}-{ci['sensitivity']['high']:.3f}) "
            f"| {t['specificity']:.3f} ({ci['specificity']['low']:.3f}-{ci['specificity']['high']:.3f}) "
            f"| {t['auc']:.3f} ({ci['auc']['low']:.3f}-{ci['auc']['high']:.3f}) "
            f"| {t['melanoma_sensitivity']:.3f} | {t['ppv']:.3f} | {t['referral_rate']:.3f} "
            f"| {t['sensitivity'] - r['target_sensitivity']:+.3f} |")
    def mean_sd(key):
        values = np.array([row["test"][key] for row in rows])
        return f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0:.3f}"
    gaps = np.array([row["test"]["sensitivity"] - row["record"]["target_sensitivity"] for row in rows])
    lines.append(f"| mean ± sd ({len(rows)}) | | | {mean_sd('sensitivity')} | {mean_sd('specificity')} "
                 f"| {mean_sd('auc')} | {mean_sd('melanoma_sensitivity')} | {mean_sd('ppv')} "
                 f"| {mean_sd('referral_rate')} | {gaps.mean():+.3f} (worst {gaps.min():+.3f}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--save", type=Path, help="write each model with its referral record into this folder")
    args = parser.parse_args()
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    rows = [score(folder, params, args.save) for folder in args.folders]
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
