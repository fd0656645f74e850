"""Images in a folder, labels in a CSV: how HAM10000 and the ISIC archive are distributed.

One CSV row per image: an id column (file name, extension optional), the label as a column of
class names or as one-hot columns, and optionally a group column (lesion or patient id) that the
split keeps together. A second CSV (`data.csv.extra_csv`) may supply columns the first lacks.

Policy: the CSV is the dataset's definition, so a missing column, a duplicate id or an empty or
unknown label stops `prepare` with the row and column named; an image that is missing or
unreadable is skipped and reported (skipped.csv), like any other bad file.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from ...clinical_rules import ClinicalValueError, age_value, category_value
from ...params import CsvParams
from ..images import is_image_name
from .dataset import Listing, RawDataset
from .folder import decode_listing, walk_files
from .table import CsvError, Table, id_key, read_table, require_columns, rows_by_id

log = logging.getLogger(__name__)

ONE_HOT_VALUES = {"1": 1, "1.0": 1, "0": 0, "0.0": 0}  # ISIC writes 1.0/0.0, others 1/0


@dataclass
class Entry:
    """One usable row: the image id, its class name (after data.csv.classes) and group."""
    row: int
    image_id: str
    label: str
    group: str | None
    clinical: dict[str, str]  # field (age, sex, site) -> the cell as written, for data.csv.clinical


def load_csv_table(c: CsvParams, size: int, workers: int = 0) -> RawDataset:
    """The CSV's rows as one unsplit dataset (class names sorted), with groups if data.csv.group."""
    return decode_listing(list_csv_table(c), size, workers)


def list_csv_table(c: CsvParams) -> Listing:
    """The CSV's rows whose image file exists, nothing decoded (see `load_csv_table`)."""
    entries, excluded = read_entries(c)
    if excluded:
        log.info("data.csv.exclude: dropped " + ", ".join(f"{n} {name}" for name, n in sorted(excluded.items())))
    found, skipped = locate_images(entries, Path(c.images), Path(c.path).name)
    class_names = sorted({entry.label for entry in entries})  # a class whose images all fail still counts
    position = {name: i for i, name in enumerate(class_names)}
    labels = np.asarray([position[entry.label] for entry, _ in found], dtype=np.int64)
    listing = Listing(name=f"CSV {Path(c.path).name}", class_names=class_names, labels={"all": labels},
                      paths={"all": [str(p) for _, p in found]}, skipped=sorted(skipped))
    if c.group is not None:
        listing.groups = {"all": np.asarray([group_of(entry) for entry, _ in found], dtype=str)}
    if c.clinical is not None:
        listing.clinical = {"all": clinical_arrays([entry for entry, _ in found], Path(c.path).name)}
    return listing


def group_of(entry: Entry) -> str:
    """An image without a group id (an empty cell) is a group of its own: it cannot leak anyway."""
    return entry.group if entry.group else f"(no group) {entry.image_id}"


# --- clinical data (data.csv.clinical) ----------------------------------------------------



MAX_CATEGORIES = 1_000  # distinct sexes or sites: HAM10000 has 3 and 15


def clinical_arrays(entries: list[Entry], csv_name: str) -> dict[str, np.ndarray]:
    """field -> (N,) array: age float64 (NaN when missing), sex and site lower-case strings
    ("unknown" when missing or empty)."""
    fields = entries[0].clinical.keys() if entries else ()
    arrays = {}
    for field in fields:
        cells = [entry.clinical[field].strip() for entry in entries]
        if field == "age":
            arrays[field] = np.asarray([_age(cell, entry.row, csv_name) for cell, entry in zip(cells, entries)],
                                       dtype=np.float64)
        else:
            arrays[field] = np.asarray([_category(cell, entry.row, csv_name, field)
                                        for cell, entry in zip(cells, entries)], dtype=str)
            distinct = len(set(arrays[field].tolist()))
            if distinct > MAX_CATEGORIES:  # each one is recorded in the model file's metadata
                raise CsvError(f"{csv_name}: column of data.csv.clinical.{field} has {distinct:,} "
                               f"different values; at most {MAX_CATEGORIES:,} (is it the right column?)")
    return arrays


def _category(cell: str, row: int, csv_name: str, field: str) -> str:
    try:
        return category_value(cell)  # the rule prediction applies too
    except ClinicalValueError as err:
        raise CsvError(f"{csv_name}: row {row}, column of data.csv.clinical.{field}: {err}") from None


def _age(cell: str, row: int, csv_name: str) -> float:
    try:
        return age_value(cell)  # the rule prediction applies too
    except ClinicalValueError as err:
        raise CsvError(f"{csv_name}: row {row}, column of data.csv.clinical.age: {err}") from None


# --- reading and checking the CSV -------------------------------------------------------------

def read_entries(c: CsvParams) -> tuple[list[Entry], Counter]:
    """Every row that is not excluded, checked; and how many rows each excluded label dropped."""
    table = read_table(Path(c.path), "data.csv.path")
    require_columns(table, [("data.csv.id", c.id)], {})  # the join needs it in the main CSV
    label_columns = list(c.label) if c.one_hot else [c.label]
    clinical = c.clinical.columns() if c.clinical else {}
    needed = [("data.csv.id", c.id)] + [("data.csv.label", col) for col in label_columns] \
        + ([("data.csv.group", c.group)] if c.group else []) \
        + [(f"data.csv.clinical.{name}", col) for name, col in clinical.items()]
    extra = _join_extra_csv(table, c, [col for _, col in needed if col not in table.columns])
    require_columns(table, needed, extra)
    _check_names_against_columns(c)
    entries, excluded, first_row = [], Counter(), {}
    for number, row in table.rows:
        row = {**extra.get(id_key(row[c.id]), {}), **row}
        _check_id(row[c.id].strip(), number, c.id, first_row, table.path)
        name, column = _one_hot_label(row, c.label, number, table.path) if c.one_hot \
            else (row[c.label].strip(), c.label)
        if not name:
            raise CsvError(f"{table.path}: row {number}, column '{column}': empty label")
        if name in (c.exclude or ()):
            excluded[name] += 1
            continue
        group = row[c.group].strip() if c.group else None
        entries.append(Entry(number, row[c.id].strip(), _rename(name, c, number, column, table.path), group,
                             {field: row[col] for field, col in clinical.items()}))
    if not entries:
        raise CsvError(f"{table.path}: no rows left to use ({len(table.rows)} row(s), "
                       f"{sum(excluded.values())} excluded by data.csv.exclude)")
    return entries, excluded


def _check_id(image_id: str, number: int, column: str, first_row: dict[str, int], path: Path) -> None:
    """Not empty and not seen before ('x' and 'x.jpg' are the same id); records where it was seen."""
    if not image_id:
        raise CsvError(f"{path}: row {number}, column '{column}': empty image id")
    key = id_key(image_id)
    if key in first_row:
        raise CsvError(f"{path}: row {number}, column '{column}': duplicate id '{image_id}' "
                       f"(first on row {first_row[key]}); each image needs exactly one row")
    first_row[key] = number


def _join_extra_csv(table: Table, c: CsvParams, missing: list[str]) -> dict[str, dict[str, str]]:
    """id -> the columns the main CSV lacks, from data.csv.extra_csv (joined on data.csv.id)."""
    if not missing or c.extra_csv is None:
        return {}
    meta = read_table(Path(c.extra_csv), "data.csv.extra_csv")
    if c.id not in meta.columns:
        raise CsvError(f"data.csv.extra_csv: {meta.path} has no column '{c.id}' (data.csv.id) to join on; "
                       f"columns: {', '.join(meta.columns)}")
    wanted = [col for col in missing if col in meta.columns]
    joined = {key: {col: row[col] for col in wanted} for key, (_, row) in rows_by_id(meta, c.id).items()}
    absent = [(number, row[c.id].strip()) for number, row in table.rows if id_key(row[c.id]) not in joined]
    if wanted and absent:
        number, image_id = absent[0]
        raise CsvError(f"{table.path}: row {number}, column '{c.id}': id '{image_id}' has no row in "
                       f"{meta.path} (data.csv.extra_csv), which supplies {', '.join(wanted)}"
                       + (f"; {len(absent) - 1} more id(s) are missing" if len(absent) > 1 else ""))
    return joined


def _check_names_against_columns(c: CsvParams) -> None:
    """With one-hot columns the label names are the columns: a name listed elsewhere must be one."""
    if not c.one_hot:
        return
    for key, names in (("data.csv.exclude", c.exclude or ()), ("data.csv.classes", c.classes or {})):
        unknown = [name for name in names if name not in c.label]
        if unknown:
            raise CsvError(f"{key}: '{unknown[0]}' is not one of the one-hot columns in data.csv.label "
                           f"({', '.join(c.label)})")


def _one_hot_label(row: dict[str, str], columns: tuple[str, ...], number: int, path: Path) -> tuple[str, str]:
    hot = []
    for column in columns:
        value = ONE_HOT_VALUES.get(row[column].strip())
        if value is None:
            raise CsvError(f"{path}: row {number}, column '{column}': one-hot value '{row[column]}' "
                           "is not 0 or 1")
        if value:
            hot.append(column)
    if len(hot) != 1:
        listed = ", ".join(hot) if hot else "none"
        raise CsvError(f"{path}: row {number}, columns {', '.join(columns)}: exactly one one-hot "
                       f"column must be 1, found {len(hot)} ({listed})")
    return hot[0], hot[0]


def _rename(name: str, c: CsvParams, number: int, column: str, path: Path) -> str:
    if c.classes is None:
        return name
    if name not in c.classes:
        raise CsvError(f"{path}: row {number}, column '{column}': unknown label '{name}': not in "
                       f"data.csv.classes ({', '.join(c.classes)}); add it there or to data.csv.exclude")
    return c.classes[name].strip()


# --- finding the image files ------------------------------------------------------------------

def locate_images(entries: list[Entry], root: Path, csv_name: str):
    """[(entry, path)] for rows whose image file was found, and (path, reason) for the others."""
    if not root.is_dir():
        raise CsvError(f"data.csv.images: {root} " + ("is not a folder" if root.exists() else "does not exist"))
    index = ImageIndex(root)
    found, skipped, claimed = [], [], {}
    for entry in entries:
        path, problem = index.find(entry.image_id)
        where = f" ({csv_name} row {entry.row})"
        if problem:
            skipped.append((str(path or root / entry.image_id), problem + where))
        elif path in claimed:  # 'x' and 'x.png' are caught as duplicate ids; this is 'a/x' vs 'x'
            raise CsvError(f"{csv_name}: row {entry.row}: id '{entry.image_id}' names the same file as "
                           f"row {claimed[path]} ({path})")
        else:
            claimed[path] = entry.row
            found.append((entry, path))
    return found, skipped


class ImageIndex:
    """The files under a folder (any depth), found by name or by name without its extension (an
    id whose extension matches no file falls back to its name without it).

    Walking once and looking up ids is much faster than testing candidate names per row, and it
    sees ambiguity: ISIC_1.jpg in two sub-folders is reported, not resolved at random.
    """

    def __init__(self, root: Path):
        self.root = root
        files, problems = walk_files(root, Path(os.path.realpath(root)))
        self.problems = {Path(path): reason for path, reason in problems}
        self.by_key: dict[str, list[Path]] = defaultdict(list)
        for path in [*files, *self.problems]:
            self.by_key[path.name].append(path)
            if is_image_name(path):
                self.by_key[path.stem].append(path)

    def find(self, image_id: str) -> tuple[Path | None, str | None]:
        """(path, None), or (path or None, reason it cannot be used)."""
        wanted = PurePosixPath(image_id.replace("\\", "/"))
        candidates = self.by_key.get(wanted.name, [])
        if not candidates and is_image_name(Path(wanted.name)):  # 'x.JPG' for x.jpg, or converted to png
            wanted = wanted.with_suffix("")
            candidates = self.by_key.get(wanted.name, [])
        if len(wanted.parts) > 1:  # an id with folders: only files under that relative path
            candidates = [p for p in candidates if _relative_match(p, self.root, wanted)]
        candidates = list(dict.fromkeys(candidates))
        if not candidates:
            return None, "no image file for this id under data.csv.images"
        if len(candidates) > 1:
            shown = ", ".join(str(p.relative_to(self.root)) for p in candidates[:3])
            return candidates[0], f"ambiguous id: {len(candidates)} files match ({shown})"
        path = candidates[0]
        return path, self.problems.get(path)


def _relative_match(path: Path, root: Path, wanted: PurePosixPath) -> bool:
    relative = PurePosixPath(path.relative_to(root).as_posix())
    return relative == wanted or relative.with_suffix("") == wanted
