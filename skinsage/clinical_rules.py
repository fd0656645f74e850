"""What a clinical value may be, one rule for `prepare` (the CSV's cells) and for prediction
(`--age/--sex/--site`, a clinical CSV, `Classifier.predict`): a model is never asked about an age
its training data could not have held.

Age: a number of years in 0-130 (finite), or missing. Sex and site: text, lower-cased and stripped,
at most MAX_CELL_CHARS; missing becomes "unknown". Missing: empty or one of MISSING_WORDS.
"""

from __future__ import annotations

import math

from .errors import SkinSageError

UNKNOWN = "unknown"
MISSING_WORDS = frozenset({"", "nan", "na", "n/a", "none", "null", UNKNOWN})
AGE_RANGE = (0.0, 130.0)
MAX_CELL_CHARS = 1_000  # a clinical or id cell: HAM10000's longest is 15; more is not a value


class ClinicalValueError(SkinSageError, ValueError):
    """A clinical value outside what `prepare` accepts; the message says why (callers add where)."""


def is_missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in MISSING_WORDS


def age_value(value) -> float:
    """Years as a float, NaN when missing; refused when not a finite number in 0-130."""
    if is_missing(value):
        return math.nan
    if isinstance(value, bool):
        raise ClinicalValueError(f"{value!r} is not a number of years (leave it empty when unknown)")
    text = value.strip() if isinstance(value, str) else value
    if isinstance(text, str) and len(text) > 40:
        raise ClinicalValueError(f"'{text[:40]}...' is not a number of years (leave it empty when unknown)")
    try:
        age = float(text)
    except (TypeError, ValueError):
        raise ClinicalValueError(f"{value!r} is not a number of years (leave it empty when unknown)") from None
    low, high = AGE_RANGE
    if not (math.isfinite(age) and low <= age <= high):
        raise ClinicalValueError(f"{text} is not an age in years ({low:.0f}-{high:.0f}; leave it empty "
                                 "when unknown)")
    return age


def category_value(value) -> str:
    """Sex or site as `prepare` stores it: lower-case, stripped, "unknown" when missing."""
    if is_missing(value):
        return UNKNOWN
    text = str(value).strip().lower()
    if len(text) > MAX_CELL_CHARS:
        raise ClinicalValueError(f"a value of {len(text):,} characters; at most {MAX_CELL_CHARS:,}")
    return text
