"""Clinical data for `skinsage predict` and `Classifier.predict`: from a CSV (a row per image,
matched on the image's file name with or without extension) or given for one image.

Values are looked up by field (age, sex, site) or by the CSV column the model was trained from
(e.g. HAM10000's `localization`), both recorded in the model file. An unknown value is written as
an empty cell or "unknown"; a field that is not given at all is an error, so a typo in a column
name cannot silently turn every image's clinical data into "unknown".
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from ..clinical_rules import ClinicalValueError, age_value, category_value
from ..data.sources.table import CsvError, id_key, read_table
from ..errors import SkinSageError

ID_COLUMNS = ("image", "image_id", "image_name", "file", "filename", "path")  # besides the training id column


class ClinicalDataError(SkinSageError, ValueError):
    """The clinical data given does not fit the model."""


def names_for(field: str, columns: dict[str, str]) -> list[str]:
    """The keys a field's value may be given under: the field itself and the training column."""
    return list(dict.fromkeys([field, columns.get(field, field)]))


def resolve(row: dict, fields: list[str], columns: dict[str, str], where: str) -> dict:
    """field -> value from a row keyed by fields or training columns; refuses a field not given."""
    values = {}
    for field in fields:
        keys = [key for key in names_for(field, columns) if key in row]
        if not keys:
            raise ClinicalDataError(f"{where}: no value for '{field}' (give it as "
                                    f"{' or '.join(names_for(field, columns))}; empty or 'unknown' when not known)")
        values[field] = row[keys[0]]
    return values


def checked_value(field: str, value, where: str):
    """`value` as the model takes it for `field`, by the rules `prepare` applied to the training
    data (age 0-130 or missing, text bounded); a ClinicalDataError naming `where` otherwise."""
    try:
        return age_value(value) if field == "age" else category_value(value)
    except ClinicalValueError as err:
        raise ClinicalDataError(f"{where}: {err}") from None


def missing_clinical_message(where: str, fields: list[str], columns: dict[str, str]) -> str:
    given = ", ".join(" or ".join(names_for(f, columns)) for f in fields)
    flags = " ".join(f"--{f} VALUE" for f in fields)
    return (f"{where}: this model takes clinical data besides the image ({', '.join(fields)}) and "
            f"none was given. Pass --clinical FILE.csv (a row per image: its file name in a column "
            f"'image', then {given}) or, for a single image, {flags}; from Python, "
            "Classifier.predict(image, clinical={...}). Write 'unknown' for a value that is not known")


class ClinicalTable:
    """A CSV of clinical rows, looked up by image file name (extension optional)."""

    def __init__(self, path: str | Path, fields: list[str], columns: dict[str, str], id_column: str | None = None):
        try:
            table = read_table(Path(path), "--clinical")
        except CsvError as err:
            raise ClinicalDataError(str(err)) from None
        accepted = list(dict.fromkeys([*([id_column] if id_column else []), *ID_COLUMNS]))
        ids = [name for name in accepted if name in table.columns]
        if not ids:
            raise ClinicalDataError(f"--clinical {path}: no column naming the images; name one of: "
                                    f"{', '.join(accepted)} (columns: {', '.join(table.columns)})")
        for field in fields:  # every field's column, checked once on the header
            resolve(dict.fromkeys(table.columns, ""), [field], columns, f"--clinical {path} (row 1, the header)")
        self.path, self.rows = Path(path), {}
        for number, row in table.rows:
            key = id_key(PurePosixPath(row[ids[0]].strip().replace("\\", "/")).name)
            if key in self.rows:
                raise ClinicalDataError(f"--clinical {path}: row {number}: image '{row[ids[0]].strip()}' "
                                        f"has a row already (row {self.rows[key][0]})")
            values = resolve(row, fields, columns, f"--clinical {path} row {number}")
            self.rows[key] = (number, {field: checked_value(field, value, f"--clinical {path} row {number}, "
                                                            f"{field} {value!r}") for field, value in values.items()})

    def lookup(self, image: str | Path) -> dict | None:
        """The image's clinical data (field -> value), or None when the CSV has no row for it."""
        found = self.rows.get(id_key(Path(image).name))
        return None if found is None else found[1]
