"""The prepared dataset on disk (data/prepared): what `prepare` writes and every later stage reads.

One npz per split (uint8 images, int64 labels; with clinical metadata, also `metadata_<field>`
arrays: age float64 with NaN for missing, sex and site strings with "unknown" for missing) and
labels.json (class names, dataset, image size, "metadata": the clinical fields present, and under
"prepare_params" the params.yaml values `prepare` used). It lives at the top of the
package because it is the contract between stages, not any stage's code.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import SkinSageError
from .fileio import read_json, write_json, write_npz
from .params import Params

SPLITS = ("train", "val", "test")
PREPARE_PARAMS_KEY = "prepare_params"
SHOW_CHANGES = 3  # differing keys named in the message; the rest are counted
METADATA_PREFIX = "metadata_"  # npz keys of the clinical metadata arrays: metadata_age, ...


class PreparedParamsError(SkinSageError, ValueError):
    """params.yaml no longer matches the params data/prepared was made with."""


@dataclass
class Split:
    images: np.ndarray  # (N, S, S, 3) uint8
    labels: np.ndarray  # (N,) int64
    metadata: dict[str, np.ndarray] | None = None  # clinical field (age, sex, site) -> (N,); None = none


@dataclass
class PreparedData:
    class_names: list[str]
    dataset: str
    image_size: int
    splits: dict[str, Split]


def save_prepared(out_dir: str | Path, data: PreparedData, extra_info: dict | None = None) -> None:
    out_dir = Path(out_dir)
    fields = []
    for name, split in data.splits.items():
        metadata = split.metadata or {}
        fields = fields or list(metadata)
        write_npz(out_dir / f"{name}.npz", images=split.images, labels=split.labels,
                  **{METADATA_PREFIX + key: values for key, values in metadata.items()})
    write_json(out_dir / "labels.json", {"classes": data.class_names, "dataset": data.dataset,
                                         "image_size": data.image_size, "metadata": fields,
                                         **(extra_info or {})})


def load_labels(prepared_dir: str | Path) -> dict:
    return read_json(Path(prepared_dir) / "labels.json")


def load_split(prepared_dir: str | Path, split: str) -> Split:
    with np.load(Path(prepared_dir) / f"{split}.npz", allow_pickle=False) as npz:
        metadata = {key.removeprefix(METADATA_PREFIX): npz[key] for key in npz.files
                    if key.startswith(METADATA_PREFIX)}
        return Split(images=npz["images"], labels=npz["labels"], metadata=metadata or None)


def load_prepared(prepared_dir: str | Path, splits=SPLITS) -> PreparedData:
    labels = load_labels(prepared_dir)
    return PreparedData(class_names=labels["classes"], dataset=labels["dataset"],
                        image_size=labels["image_size"],
                        splits={name: load_split(prepared_dir, name) for name in splits})


def is_prepared_dir(path: str | Path) -> bool:
    """A folder written by `prepare` (labels.json beside the split files)."""
    return (Path(path) / "labels.json").is_file()


def count_summary(data: PreparedData) -> dict:
    """Images per split and per class, for metrics/data.json."""
    summary = {}
    for name, split in data.splits.items():
        counts = np.bincount(split.labels, minlength=len(data.class_names))
        summary[name] = {"total": int(len(split.labels)),
                         "per_class": {c: int(n) for c, n in zip(data.class_names, counts)}}
    return summary


def prepare_params(params: Params) -> dict:
    """What `prepare`'s output depends on (its params in dvc.yaml: model, data (its own seed
    included), models.<model>.image_size) as flat dotted keys with JSON values, as recorded in labels.json."""
    flat = {"model": params.model,
            **_flatten("data", asdict(params.data)),
            f"models.{params.model}.image_size": params.image_size}
    return json.loads(json.dumps(flat))  # tuples become lists, as they read back from the file


def check_prepared_params(params: Params, prepared_dir: str | Path, name: str | None = None) -> None:
    """Stop `train` when params.yaml differs from what `prepare` used. DVC runs the stages of one
    `dvc exp run` in turn from the same params.yaml; a second `dvc exp run` in the same workspace
    writes its -S values there before it is refused, so the first run's `train` would read them."""
    name = name or str(prepared_dir)
    if not is_prepared_dir(prepared_dir):
        return  # nothing prepared yet: loading it reports that
    recorded = load_labels(prepared_dir).get(PREPARE_PARAMS_KEY)
    if recorded is None:
        return  # prepared before the params were recorded: nothing to compare
    current = prepare_params(params)
    changed = [key for key in dict.fromkeys([*current, *recorded])
               if current.get(key, _UNSET) != recorded.get(key, _UNSET)]
    if not changed:
        return
    details = "; ".join(f"{key} is {_shown(current.get(key, _UNSET))} in params.yaml but {name} was "
                        f"made with {_shown(recorded.get(key, _UNSET))}" for key in changed[:SHOW_CHANGES])
    more = f" (and {len(changed) - SHOW_CHANGES} more)" if len(changed) > SHOW_CHANGES else ""
    raise PreparedParamsError(
        f"params.yaml changed since `prepare` made {name}: {details}{more}. Training now would mix "
        "the two; another `dvc exp run` in this workspace may have written its -S values. Run the "
        "experiment again; for parallel runs use `dvc exp run --queue` (then `dvc queue start`) or "
        "`dvc exp run --temp`, never two `dvc exp run` in one workspace.")


_UNSET = object()


def _shown(value) -> str:
    return "(not set)" if value is _UNSET else repr(value)


def _flatten(prefix: str, value) -> dict:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flatten(f"{prefix}.{key}", item).items()}
    return {prefix: value}
