"""What `skinsage info` says about a model file: its saved metadata, and its test metrics when
they are provably this file's.

`train` writes the model before `evaluate` measures it, so the metrics are not inside the file.
They are shown from the project's metrics/eval_full.json only when dvc.lock records that `evaluate`
read a model with this file's MD5 and wrote that file with the MD5 it has now: metrics of an older
or retrained model are never shown as this one's.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from ..model.model_file import clinical_record, decision_settings, inference_settings, referral_settings

EVAL_STAGE, EVAL_FILE = "evaluate", "metrics/eval_full.json"


def model_info(path: str | Path, metadata: dict) -> dict:
    """Everything `info` prints, JSON-ready."""
    params = metadata.get("params") or {}
    kind = metadata.get("model", "unknown")
    metrics, metrics_source = recorded_test_metrics(path)
    return {
        "path": str(path),
        "model": kind,
        "classes": metadata.get("classes"),
        "image_size": metadata.get("image_size"),
        "dataset": metadata.get("dataset"),
        "format": metadata.get("format"),
        **inference_settings(metadata, str(path)),  # tta, temperature
        "referral": referral_settings(metadata, str(path)),  # the operating point train chose; None: none
        "decision": decision_settings(metadata, str(path)),  # the ood / uncertain thresholds behind `status`
        # clinical inputs beside the image (field -> the training CSV column), {} = image only
        "clinical_inputs": {field: clinical_record(metadata)["columns"].get(field, field)
                            for field in clinical_record(metadata)["inputs"]},
        "params_hash": metadata.get("params_hash"),
        "params": {key: params[key] for key in ("seed", "train") if key in params}
                  | ({f"models.{kind}": params["models"][kind]}
                     if kind in params.get("models", {}) else {}),
        "train_summary": metadata.get("train_summary"),
        "test_metrics": metrics,
        "test_metrics_source": metrics_source,
        "export": metadata.get("export"),  # target, quantisation, check against Keras (exports only)
    }


def recorded_test_metrics(path: str | Path) -> tuple[dict | None, str | None]:
    """(metrics, where they come from), or (None, None) when nothing proves they are this model's."""
    model = Path(os.path.realpath(path))
    for project in model.parents:
        lock = project / "dvc.lock"
        if lock.is_file():
            return _from_lock(lock, model)
    return None, None


def _from_lock(lock: Path, model: Path) -> tuple[dict | None, str | None]:
    from ..fileio import md5sum, read_json

    try:
        stage = (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages", {})[EVAL_STAGE]
        deps = {entry["path"]: entry.get("md5") for entry in stage.get("deps", [])}
        outs = {entry["path"]: entry.get("md5") for entry in stage.get("outs", [])}
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        return None, None
    eval_file = lock.parent / EVAL_FILE
    relative = model.relative_to(lock.parent).as_posix()
    if not (eval_file.is_file() and deps.get(relative) == md5sum(model)
            and outs.get(EVAL_FILE) == md5sum(eval_file)):
        return None, None
    return read_json(eval_file), f"{eval_file} (dvc.lock: evaluated this exact model file)"
