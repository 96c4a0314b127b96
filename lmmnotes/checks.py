"""Input checks shared by the estimators.

Every function here raises :class:`DataError` (a ``ValueError``) whose message names the
problem and says how to fix it, so that bad input never surfaces as a traceback from deep
inside numpy.  None of them modifies the data frame it is given.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype


class DataError(ValueError):
    """The data passed to an lmmnotes function cannot be used as it is."""


def require_frame(data: object) -> pd.DataFrame:
    """Return ``data`` if it is a non-empty DataFrame, else raise DataError."""
    if not isinstance(data, pd.DataFrame):
        raise DataError(
            f"data must be a pandas DataFrame, got {type(data).__name__}; "
            "wrap it with pandas.DataFrame(...) first"
        )
    if len(data) == 0:
        raise DataError("data has no rows; pass a data frame with at least one observation")
    return data


def require_columns(data: pd.DataFrame, columns: Iterable[str]) -> None:
    """Raise DataError naming every column of ``columns`` that ``data`` lacks."""
    missing = [c for c in columns if c not in data.columns]
    if missing:
        names = ", ".join(repr(c) for c in missing)
        available = ", ".join(repr(c) for c in data.columns)
        raise DataError(
            f"column(s) {names} not found in the data; the data has columns {available}. "
            "Check the spelling (names are case-sensitive) or add the column."
        )


def require_numeric(data: pd.DataFrame, column: str, role: str = "response") -> None:
    """Raise DataError unless ``data[column]`` holds numbers (booleans do not count)."""
    series = data[column]
    if is_bool_dtype(series) or not is_numeric_dtype(series):
        raise DataError(
            f"the {role} {column!r} must be numeric, but its dtype is {series.dtype}; "
            f"convert it, e.g. data[{column!r}].astype(float), or choose a numeric column"
        )


def count_missing(data: pd.DataFrame, columns: Iterable[str]) -> int:
    """Number of rows of ``data`` with a missing value in any of ``columns``."""
    return int(data[list(columns)].isna().any(axis=1).sum())


def require_complete(data: pd.DataFrame, columns: Iterable[str]) -> None:
    """Raise DataError if any of ``columns`` has a missing value, saying in how many rows."""
    columns = list(columns)
    n_missing = count_missing(data, columns)
    if n_missing:
        raise DataError(
            f"{n_missing} of {len(data)} rows have a missing value (NaN) in "
            f"{', '.join(repr(c) for c in columns)}; drop them first, e.g. "
            f"data.dropna(subset={columns!r})"
        )
