"""The prepared dataset on disk (data/prepared): what `prepare` writes and every later stage reads.

Each split is stored one of two ways (`data.store`, recorded as "store" in labels.json):
- npz: <split>.npz with uint8 images and int64 labels, loaded whole into memory;
- shards: a folder <split>/ of TFRecord shards plus fields.npz (labels), streamed with tf.data so
  the images are never all in memory (skinsage/shards.py).
With clinical data (npz store only), each split's npz also has `clinical_<field>` arrays: age
float64 with NaN for missing, sex and site strings with "unknown" for missing.
labels.json holds the class names, dataset, image size, "clinical" (the clinical fields present)
and under "prepare_params" the params.yaml values `prepare` used. It lives at the top of the
package because it is the contract between stages, not any stage's code. Readers use
`Split.batches` (in order: inference, features) or `skinsage.train.inputs.tf_dataset` (training),
which work for both stores.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import SkinSageError
from .fileio import read_json, write_json, write_npz
from .params import RENAMED_KEYS, Params
from .shards import FIELDS_FILE, ordered_batches, read_fields, shard_files, write_shards

SPLITS = ("train", "val", "test")
PREPARE_PARAMS_KEY = "prepare_params"
SHOW_CHANGES = 3  # differing keys named in the message; the rest are counted
CLINICAL_PREFIX = "clinical_"  # npz keys of the clinical arrays: clinical_age, ...


class PreparedParamsError(SkinSageError, ValueError):
    """params.yaml no longer matches the params data/prepared was made with."""


class StoreError(SkinSageError, ValueError):
    """A sharded split that cannot be read as written: truncated, corrupt or inconsistent."""


_RERUN = "run `dvc repro prepare` (or `dvc pull`) to write it again"


@dataclass
class Split:
    images: np.ndarray | None      # (N, S, S, 3) uint8; None when the split streams from shards
    labels: np.ndarray             # (N,) int64, always in memory
    shards: tuple[str, ...] = ()   # the shards store: its TFRecord files in order (images is None)
    image_size: int = 0            # the shards' image side (an array carries its own)
    clinical: dict[str, np.ndarray] | None = None  # clinical field (age, sex, site) -> (N,); None = none

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def streamed(self) -> bool:
        """Whether the images are on disk (shards store; an empty split may have no shard file)."""
        return self.images is None

    def batches(self, batch_size: int):
        """uint8 image batches (numpy) in the split's order, whichever the store: the one way
        inference reads a split."""
        if not self.streamed:
            for start in range(0, len(self.images), batch_size):
                yield self.images[start:start + batch_size]
            return
        yield from self._checked_shard_batches(batch_size)

    def _checked_shard_batches(self, batch_size: int):
        """The shards' image batches, each record's label checked against fields.npz (what
        metrics are scored on): a store whose two halves disagree must not be scored."""
        import tensorflow as tf

        where = str(Path(self.shards[0]).parent) if self.shards else "the sharded split"
        start, stream = 0, ordered_batches(self.shards, self.image_size, batch_size).as_numpy_iterator()
        while True:
            try:
                images, labels = next(stream)
            except StopIteration:
                break
            except (tf.errors.OpError, ValueError) as err:
                raise StoreError(f"{where}: a shard is truncated or corrupt ({type(err).__name__}: "
                                 f"{str(err).splitlines()[0][:200]}); {_RERUN}") from None
            expected = self.labels[start:start + len(labels)]
            if len(expected) != len(labels) or not np.array_equal(expected, labels):
                raise StoreError(f"{where}: the labels in the shards disagree with fields.npz from image "
                                 f"{start + 1} on; the store is inconsistent, {_RERUN}")
            start += len(labels)
            yield images
        if start != len(self.labels):
            raise StoreError(f"{where}: the shards hold {start} images but fields.npz lists "
                             f"{len(self.labels)}; {_RERUN}")

    def take(self, indices: np.ndarray) -> np.ndarray:
        """The images at sorted `indices`, read in one pass (a sharded split keeps only those)."""
        if not self.streamed:
            return self.images[indices]
        wanted, picked, start = np.asarray(indices, dtype=np.int64), [], 0
        for batch in self.batches(1024):
            inside = wanted[(wanted >= start) & (wanted < start + len(batch))]
            picked.append(batch[inside - start])
            start += len(batch)
        size = self.image_size
        return np.concatenate(picked) if picked else np.zeros((0, size, size, 3), np.uint8)

    def in_memory(self) -> Split:
        """The split with its images as one array: only for readers that pick images anywhere in
        a split (the report's example grids on the test split, `skinsage evaluate` on a folder)."""
        if not self.streamed:
            return self
        return Split(self.take(np.arange(len(self))), self.labels, clinical=self.clinical)


@dataclass
class PreparedData:
    class_names: list[str]
    dataset: str
    image_size: int
    splits: dict[str, Split]


def save_prepared(out_dir: str | Path, data: PreparedData, extra_info: dict | None = None,
                  store: str = "npz") -> None:
    """Write in-memory splits in `store` ("npz" or "shards") and labels.json."""
    out_dir = Path(out_dir)
    fields = next((list(split.clinical) for split in data.splits.values() if split.clinical), [])
    for name, split in data.splits.items():
        clinical = split.clinical or {}
        if store == "shards":
            if clinical:  # params refuse it (data.store); a guard for direct callers
                raise ValueError("the shards store does not carry clinical data; use npz")
            write_shards(out_dir / name, split.images, split.labels)
        else:
            write_npz(out_dir / f"{name}.npz", images=split.images, labels=split.labels,
                      **{CLINICAL_PREFIX + key: values for key, values in clinical.items()})
    save_labels(out_dir, data.class_names, data.dataset, data.image_size, store,
                {"clinical": fields, **(extra_info or {})})


def save_labels(out_dir: str | Path, class_names: list[str], dataset: str, image_size: int,
                store: str, extra_info: dict | None = None) -> None:
    write_json(Path(out_dir) / "labels.json", {"classes": class_names, "dataset": dataset,
                                               "image_size": image_size, "store": store,
                                               **(extra_info or {})})


def load_labels(prepared_dir: str | Path) -> dict:
    return read_json(Path(prepared_dir) / "labels.json")


def load_split(prepared_dir: str | Path, split: str) -> Split:
    """A split from either store: npz loaded whole, shards opened for streaming (labels only)."""
    folder = Path(prepared_dir) / split
    if (folder / FIELDS_FILE).is_file():
        try:
            labels = read_fields(folder)["labels"]
        except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
            raise StoreError(f"{folder / FIELDS_FILE}: not readable ({type(err).__name__}: {err}); "
                             f"{_RERUN}") from None
        shards = shard_files(folder)
        if len(labels) and not shards:
            raise StoreError(f"{folder}: fields.npz lists {len(labels)} images but there is no shard "
                             f"file; {_RERUN}")
        return Split(images=None, labels=labels, shards=shards,
                     image_size=int(load_labels(prepared_dir)["image_size"]))
    with np.load(Path(prepared_dir) / f"{split}.npz", allow_pickle=False) as npz:
        clinical = {key.removeprefix(CLINICAL_PREFIX): npz[key] for key in npz.files
                    if key.startswith(CLINICAL_PREFIX)}
        return Split(images=npz["images"], labels=npz["labels"], clinical=clinical or None)


def has_split(prepared_dir: str | Path, split: str) -> bool:
    """Whether the prepared folder holds `split`, in either store."""
    prepared_dir = Path(prepared_dir)
    return (prepared_dir / f"{split}.npz").is_file() or (prepared_dir / split / FIELDS_FILE).is_file()


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
    recorded = {RENAMED_KEYS.get(key, key): value for key, value in recorded.items()}  # a rename is no change
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
