"""Reading a CSV that describes images: text only, header checked, rows numbered as a spreadsheet
shows them (the header is row 1), so every error can name the row and the column."""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ...clinical_rules import MAX_CELL_CHARS
from ...errors import SkinSageError
from ..images import is_image_name


class CsvError(SkinSageError, ValueError):
    """The CSV cannot define a dataset: a column, id or label problem, with row and column."""


@dataclass
class Table:
    """A CSV read as text: stripped header names and rows with their spreadsheet row number
    (the header is row 1, so the number is what a spreadsheet shows)."""
    path: Path
    columns: list[str]
    rows: list[tuple[int, dict[str, str]]]


def read_table(path: Path, key: str) -> Table:
    """The whole CSV as text; blank lines are ignored, a row with the wrong field count is an error,
    and so is a cell over MAX_CELL_CHARS, a NUL byte or text that is not UTF-8."""
    if not path.is_file():
        raise CsvError(f"{key}: {path} " + ("is a folder, not a CSV file" if path.is_dir() else "does not exist"))
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:  # utf-8-sig: Excel's byte order mark
            return _read_rows(path, key, csv.reader(f))
    except UnicodeDecodeError as err:
        raise CsvError(f"{key}: {path} is not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset "
                       f"{err.start:,} of a block); save it as UTF-8 (CSV UTF-8 in Excel)") from None
    except csv.Error as err:  # e.g. a field over the csv module's limit (131,072 characters)
        raise CsvError(f"{key}: {path}: not a readable CSV ({err}); a cell may hold at most "
                       f"{MAX_CELL_CHARS:,} characters") from None


def _read_rows(path: Path, key: str, reader) -> Table:
    header = next(reader, None)
    if not header or not any(name.strip() for name in header):
        raise CsvError(f"{key}: {path} is empty (no header row)")
    columns = [name.strip() for name in header]
    _check_cells(path, 1, columns, columns)
    twice = [name for name, n in Counter(columns).items() if n > 1]
    if twice:
        raise CsvError(f"{key}: {path} row 1 (header) names column '{twice[0]}' more than once")
    rows, start = [], reader.line_num + 1
    for values in reader:
        number, start = start, reader.line_num + 1  # a quoted cell may span lines: the row's first
        if not any(value.strip() for value in values):
            continue
        if len(values) != len(columns):
            if any("\n" in value for value in values):
                raise CsvError(f"{path}: row {number}: a quote opened here is not closed before row "
                               f"{reader.line_num} (unbalanced quote); check the quotes in that row")
            raise CsvError(f"{path}: row {number} has {len(values)} field(s), the header "
                           f"has {len(columns)}; check for an unquoted comma")
        _check_cells(path, number, columns, values)
        rows.append((number, dict(zip(columns, values))))
    if not rows:
        raise CsvError(f"{key}: {path} has a header but no rows")
    return Table(path, columns, rows)


def _check_cells(path: Path, number: int, columns: list[str], values: list[str]) -> None:
    """Bounded cells: fixed-width arrays are sized by the longest value, so one huge cell would
    cost memory and disk for every row."""
    for column, value in zip(columns, values):
        if len(value) > MAX_CELL_CHARS:
            raise CsvError(f"{path}: row {number}, column '{column[:100]}': a cell of {len(value):,} "
                           f"characters; at most {MAX_CELL_CHARS:,} characters per cell")
        if "\0" in value:
            raise CsvError(f"{path}: row {number}, column '{column[:100]}': contains a NUL byte (a "
                           "binary file, not a CSV?)")


def id_key(image_id: str) -> str:
    """Ids compared without an image extension: 'ISIC_1' and 'ISIC_1.jpg' name one image."""
    image_id = image_id.strip().replace("\\", "/")
    return image_id[: -len(PurePosixPath(image_id).suffix)] if is_image_name(Path(image_id)) else image_id


def rows_by_id(table: Table, column: str) -> dict[str, tuple[int, dict[str, str]]]:
    """id key -> (row number, row); an id on two rows is an error naming both."""
    rows: dict[str, tuple[int, dict[str, str]]] = {}
    for number, row in table.rows:
        key = id_key(row[column])
        if key in rows:
            raise CsvError(f"{table.path}: row {number}, column '{column}': duplicate id "
                           f"'{row[column].strip()}' (first on row {rows[key][0]})")
        rows[key] = (number, row)
    return rows


def require_columns(table: Table, needed: list[tuple[str, str]], joined: dict) -> None:
    """Every (params key, column) must be in the CSV's header or come from the extra CSV (data.csv.extra_csv)."""
    available = set(table.columns) | {col for row in joined.values() for col in row}
    for key, column in needed:
        if column not in available:
            raise CsvError(f"{key}: no column '{column}' in {table.path} (row 1, the header); "
                           f"columns: {', '.join(table.columns)}"
                           + ("" if joined else "; a second CSV can supply it: data.csv.extra_csv"))
