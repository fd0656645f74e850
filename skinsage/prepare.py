"""From a source to model-ready splits at the selected model's image size."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from .dataset import SPLITS, PreparedData, Split, count_summary, save_prepared, stratified_split
from .errors import SkinSageError
from .fileio import write_json, write_text
from .params import Params
from .sources import RawDataset, load_source


def prepare(params: Params, out_dir: str | Path, metrics_path: str | Path) -> PreparedData:
    raw = load_source(params)
    if raw.skipped:
        print(f"skipped {len(raw.skipped)} unreadable file(s); see {Path(out_dir) / 'skipped.csv'}")
    _check_class_sizes(raw, params.data.min_per_class)
    data = split_dataset(raw, params)
    save_prepared(out_dir, data, extra_info={"source": params.data.source})
    write_text(Path(out_dir) / "skipped.csv", _skipped_csv(raw.skipped))
    summary = count_summary(data)
    write_json(metrics_path, {"image_size": data.image_size, "num_classes": len(data.class_names),
                              "skipped_files": len(raw.skipped), "splits": summary})
    totals = ", ".join(f"{name} {s['total']}" for name, s in summary.items())
    print(f"prepared {raw.name}: {len(data.class_names)} classes at {data.image_size} px; {totals}")
    return data


def split_dataset(raw: RawDataset, params: Params) -> PreparedData:
    if raw.has_official_split:
        splits = {s: Split(raw.images[s], raw.labels[s]) for s in SPLITS}
    else:
        images, labels = raw.images["all"], raw.labels["all"]
        index = stratified_split(labels, params.data.split.val, params.data.split.test,
                                 params.seed, raw.class_names)
        splits = {s: Split(images[idx], labels[idx]) for s, idx in index.items()}
    return PreparedData(class_names=raw.class_names, dataset=raw.name,
                        image_size=params.image_size, splits=splits)


def _check_class_sizes(raw: RawDataset, min_per_class: int) -> None:
    counts = sum(np.bincount(labels, minlength=len(raw.class_names)) for labels in raw.labels.values())
    small = [f"'{name}' ({n})" for name, n in zip(raw.class_names, counts) if n < min_per_class]
    if small:
        raise SkinSageError(f"too few usable images in class(es) {', '.join(small)}; "
                            f"data.min_per_class is {min_per_class}")


def _skipped_csv(skipped: list[tuple[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "reason"])
    writer.writerows(skipped)
    return buffer.getvalue()
