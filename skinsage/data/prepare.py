"""From a source to model-ready splits at the selected model's image size.

Policy for messy data: unreadable files are skipped and listed in <out>/skipped.csv with the
reason; identical copies within a class are dropped before splitting (listed too); identical images
under different classes are kept and warned about (label conflict); images shared between splits
are counted (leakage, in metrics/data.json). A source with groups (lesion or patient ids) is split
by group, and metrics/data.json counts groups per split and groups crossing splits (must be 0).
`prepare` fails only when a class ends up with fewer usable images than `data.min_per_class` (or
than the 3 a stratified split needs).

`data.store` picks how the splits are written (skinsage/prepared.py): npz, or TFRecord shards;
folder and csv sources then stream each decoded image to disk (streamed.py) instead of collecting
the dataset in memory first.
"""

from __future__ import annotations

import csv
import io
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SkinSageError
from ..fileio import atomic_dir, write_json, write_text
from ..params import Params
from ..prepared import (PREPARE_PARAMS_KEY, SPLITS, PreparedData, Split, count_summary, load_prepared,
                        prepare_params, save_labels, save_prepared)
from .duplicates import count_leakage, find_label_conflicts, remove_same_class_copies
from .sources import Listing, RawDataset, list_source, load_source
from .sources.folder import decode_listing
from .streamed import decode_to_shards, route_splits
from .splits import group_summary, grouped_stratified_split, stratified_split

log = logging.getLogger(__name__)

SHOW_AT_MOST = 10  # files or conflict groups listed on the console; the CSV has them all


class PrepareError(SkinSageError, ValueError):
    """The data cannot make a usable dataset."""


AUTO_SHARDS_BYTES = 2 << 30  # data.store auto: shards above 2 GiB of uint8 pixels (params.yaml)
# Bounds on what a source may name: train, evaluate and the metrics files grow with the class count
# (10,000 classes took evaluate to 11 GB), and every name travels in the model file's 1 MiB metadata
MAX_CLASSES = 1_000
MAX_CLASS_NAME_CHARS = 100


def prepare(params: Params, out_dir: str | Path, metrics_path: str | Path) -> PreparedData:
    """The selected source -> `out_dir` (in the store `data.store` selects) and metrics/data.json."""
    listing = list_source(params)  # folder, csv: the files, nothing decoded yet
    if listing is not None:
        check_class_names(listing.class_names)  # before hours of decoding
    count = sum(len(p) for p in listing.paths.values()) if listing else None
    if listing is not None and chosen_store(params, count) == "shards":
        log.info(f"data.store {params.data.store}: decoding {count} files straight to shards")
        return _prepare_streamed(listing, params, out_dir, metrics_path)
    raw = decode_listing(listing, params.image_size, params.data.workers) if listing else load_source(params)
    check_class_names(raw.class_names)
    removed = []
    if not raw.has_official_split:
        raw, removed = remove_same_class_copies(raw)
    skipped = raw.skipped + removed
    conflicts = find_label_conflicts(raw)
    _check_class_sizes(raw, params, skipped)
    data, groups = split_dataset(raw, params)
    leakage = count_leakage(data)
    store = chosen_store(params, sum(len(split) for split in data.splits.values()))
    with atomic_dir(out_dir) as staging:  # the folder appears whole, or the old one stays
        save_prepared(staging, data, extra_info=_info(params), store=store)
        write_text(staging / "skipped.csv", _skipped_csv(skipped))
    _report(params, data, out_dir, metrics_path, Checks(raw.skipped, removed, conflicts, leakage, groups))
    return data if store == "npz" else load_prepared(out_dir)


def check_class_names(names: list[str]) -> None:
    """At most MAX_CLASSES classes, each name 1-MAX_CLASS_NAME_CHARS characters."""
    if len(names) > MAX_CLASSES:
        raise PrepareError(f"the data names {len(names):,} classes; at most {MAX_CLASSES:,} are supported "
                           "(check the label column, or merge classes with data.csv.classes)")
    for name in names:
        if len(name) > MAX_CLASS_NAME_CHARS:
            raise PrepareError(f"a class name of {len(name):,} characters ('{name[:40]}...'); at most "
                               f"{MAX_CLASS_NAME_CHARS} (rename it with data.csv.classes or the folder name)")


def chosen_store(params: Params, images: int) -> str:
    """`data.store`, with auto resolved by the images' uint8 size at the model's image size (npz
    when the csv source keeps clinical data: the shards store does not carry it yet)."""
    if params.data.store != "auto":
        return params.data.store
    if params.data.source == "csv" and params.data.csv.clinical is not None:
        return "npz"
    return "shards" if images * params.image_size ** 2 * 3 > AUTO_SHARDS_BYTES else "npz"


def _prepare_streamed(listing, params: Params, out_dir: str | Path, metrics_path: str | Path) -> PreparedData:
    """The shards store from files: decoded straight to disk, split on labels alone (streamed.py)."""
    with atomic_dir(out_dir) as staging:
        streamed = decode_to_shards(listing, params, staging)
        _check_class_sizes(streamed.used, params, streamed.unreadable + streamed.removed)
        if not listing.has_official_split:
            streamed = route_splits(streamed, _split_index(streamed.used, params), staging, params.image_size)
        save_labels(staging, listing.class_names, listing.name, params.image_size, "shards", _info(params))
        write_text(staging / "skipped.csv", _skipped_csv(streamed.unreadable + streamed.removed))
    counted = PreparedData(listing.class_names, listing.name, params.image_size, streamed.splits())
    groups = group_summary(streamed.used.groups) if streamed.used.groups else None
    _report(params, counted, out_dir, metrics_path,
            Checks(streamed.unreadable, streamed.removed, streamed.conflicts(), streamed.leakage(), groups))
    return load_prepared(out_dir)


@dataclass
class Checks:
    """What `prepare` found, for metrics/data.json and the console."""
    unreadable: list[tuple[str, str]]
    removed: list[tuple[str, str]]
    conflicts: list
    leakage: dict[str, int]
    groups: dict | None


def _info(params: Params) -> dict:
    return {"source": params.data.source, PREPARE_PARAMS_KEY: prepare_params(params)}


def _report(params: Params, data: PreparedData, out_dir, metrics_path, checks: Checks) -> None:
    """metrics/data.json and the console summary and warnings."""
    summary, groups = count_summary(data), checks.groups
    write_json(metrics_path, {
        "image_size": data.image_size, "num_classes": len(data.class_names),
        "skipped_files": len(checks.unreadable),
        "duplicates": {"removed_same_class": len(checks.removed), "label_conflicts": len(checks.conflicts),
                       "leakage": checks.leakage},
        "splits": summary, **({"groups": groups} if groups else {})})
    _warn(checks.conflicts, checks.leakage)
    _warn_missing_classes(data)
    _warn_crossing(groups)
    used = sum(s["total"] for s in summary.values())
    log.info(_summary_line(used, checks.unreadable, checks.removed, checks.conflicts, checks.leakage,
                           Path(out_dir) / "skipped.csv"))
    totals = ", ".join(f"{name} {s['total']}" for name, s in summary.items())
    log.info(f"prepared {data.dataset}: {len(data.class_names)} classes at {data.image_size} px; {totals}")
    if groups:
        per_split = ", ".join(f"{name} {n}" for name, n in groups["per_split"].items())
        log.info(f"groups: {per_split}; {groups['crossing_splits']} in more than one split")


def split_dataset(raw: RawDataset, params: Params) -> tuple[PreparedData, dict | None]:
    """The splits, and the group counts (None when the source has no groups)."""
    if raw.has_official_split:
        splits = {s: Split(raw.images[s], raw.labels[s], clinical=raw.clinical.get(s)) for s in SPLITS}
        groups = {s: raw.groups[s] for s in SPLITS} if raw.groups else None
    else:
        images, labels = raw.images["all"], raw.labels["all"]
        index = _split_index(raw, params)
        clinical = raw.clinical.get("all")
        splits = {s: Split(images[idx], labels[idx], clinical=clinical and {k: v[idx] for k, v in clinical.items()})
                  for s, idx in index.items()}
        groups = {s: raw.groups["all"][idx] for s, idx in index.items()} if raw.groups else None
    data = PreparedData(class_names=raw.class_names, dataset=raw.name, image_size=params.image_size,
                        splits=splits)
    return data, (group_summary(groups) if groups else None)


def _split_index(raw: RawDataset | Listing, params: Params) -> dict[str, np.ndarray]:
    split = params.data.split
    if raw.groups:
        index = grouped_stratified_split(raw.labels["all"], raw.groups["all"], split.val, split.test,
                                         params.data.seed, raw.class_names)
    else:
        index = stratified_split(raw.labels["all"], split.val, split.test, params.data.seed, raw.class_names)
    empty = [name for name in SPLITS if len(index.get(name, ())) == 0]
    if empty:  # train needs a validation split to stop on, evaluate a test split to score
        groups = len(set(raw.groups["all"].tolist())) if raw.groups else None
        raise PrepareError(f"the split leaves no images in {' and '.join(empty)}"
                           + (f": {groups} group(s) in all (data.csv.group), and a group never spans "
                              "two splits; add images from more groups (lesions, patients)"
                              if groups is not None else "") + ", or raise data.split.val / data.split.test")
    return index


def _warn_crossing(groups: dict | None) -> None:
    """Only a source's own split can put a group in two splits; ours never does."""
    if groups and groups["crossing_splits"]:
        log.warning(f"{groups['crossing_splits']} group(s) have images in more than one split of the "
                    "dataset's own split (leakage: the same lesion or patient in training and evaluation)")


def _warn_missing_classes(data: PreparedData) -> None:
    """A grouped split cannot put a class with one or two groups in every split: say so."""
    for name, split in data.splits.items():
        absent = [c for c, n in zip(data.class_names, np.bincount(split.labels, minlength=len(data.class_names)))
                  if n == 0]
        if absent:
            log.warning(f"{name} has no image of class(es) {', '.join(absent)} (too few groups or "
                        f"images); its per-class metrics will be missing")


def _check_class_sizes(raw: RawDataset | Listing, params: Params, skipped: list[tuple[str, str]]) -> None:
    needed, rule = params.data.min_per_class, f"data.min_per_class is {params.data.min_per_class}"
    advice = "Add readable images to the class, remove its folder, or lower data.min_per_class"
    if not raw.has_official_split and needed < 3:
        needed, rule = 3, "a stratified train/val/test split needs at least 3, one per split"
        advice = "Add readable images to the class or remove its folder"
    counts = sum(np.bincount(labels, minlength=len(raw.class_names)) for labels in raw.labels.values())
    problems, shown = [], []
    for name, count in zip(raw.class_names, counts):
        if count < needed:
            in_class = _skipped_in_class(params, name, skipped)
            problems.append(f"class '{name}' has {count or 'no'} usable image(s)"
                            + _why(params, name, count, in_class))
            shown += in_class
    if problems:
        for path, reason in shown[:SHOW_AT_MOST]:
            log.warning(f"  skipped {path}: {reason}")
        raise PrepareError(f"too few images: {'; '.join(problems)} ({rule}). {advice}")


def _skipped_in_class(params: Params, name: str, skipped: list[tuple[str, str]]) -> list:
    if params.data.source != "folder":
        return []
    class_dir = Path(params.data.folder.path) / name
    return [(p, r) for p, r in skipped if Path(p).is_relative_to(class_dir)]


def _why(params: Params, name: str, count: int, in_class: list[tuple[str, str]]) -> str:
    if in_class:
        return f" ({len(in_class)} file(s) skipped: {_reason_counts(in_class)})"
    if params.data.source == "folder" and count == 0:
        return f" (no image files in {Path(params.data.folder.path) / name})"
    return ""


def _reason_counts(skipped: list[tuple[str, str]]) -> str:
    counts = Counter(reason.split(" (")[0] for _, reason in skipped)
    return ", ".join(f"{n} {reason}" for reason, n in counts.most_common())


def _warn(conflicts: list, leakage: dict[str, int]) -> None:
    if conflicts:
        log.warning(f"label conflict: {len(conflicts)} image(s) appear identically under more "
                    "than one class; they are kept as filed, fix or remove the wrong copies:")
        for group in conflicts[:SHOW_AT_MOST]:
            log.warning("  " + " = ".join(f"{name} [{label}]" for name, label in group))
    leaked = {k: n for k, n in leakage.items() if n}
    if leaked:
        detail = ", ".join(f"{n} {k.replace('_in_', ' image(s) also in ')}" for k, n in leaked.items())
        log.warning(f"identical images across splits (leakage): {detail}")


def _summary_line(used: int, unreadable: list, removed: list, conflicts: list,
                  leakage: dict[str, int], csv_path: Path) -> str:
    parts = [f"{used} images used", f"{len(unreadable)} skipped"
             + (f" ({_reason_counts(unreadable)})" if unreadable else "")]
    parts.append(f"{len(removed)} duplicate(s) removed")
    parts.append(f"{len(conflicts)} label conflict(s)")
    parts.append(f"{sum(leakage.values())} image(s) shared between splits")
    see = f"; see {csv_path}" if unreadable or removed else ""
    return "data: " + ", ".join(parts) + see


def _skipped_csv(skipped: list[tuple[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "reason"])
    writer.writerows(skipped)
    return buffer.getvalue()
