"""Input checks shared by the estimators.

Every function here raises :class:`DataError` (a ``ValueError``) whose message names the
problem and says how to fix it, so that bad input never surfaces as a traceback from deep
inside numpy.  None of them modifies the data frame it is given.
"""

from __future__ import annotations

import math
import numbers
import os
import warnings
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype


class DataError(ValueError):
    """The data passed to an lmmnotes function cannot be used as it is."""


class LmmWarning(UserWarning):
    """Base class of the warnings lmmnotes gives about a fit or its data (filter them with it)."""


class SingularFitWarning(LmmWarning):
    """A fit on the boundary: some variance estimated as 0, or a correlation as +/-1 (lme4's
    "boundary (singular) fit")."""


class ConvergenceWarning(LmmWarning):
    """The optimizer did not converge, or the scaled gradient at its answer is not small (lme4's
    "Model failed to converge")."""


class RankDeficiencyWarning(LmmWarning):
    """Columns of the fixed-effects model matrix were dropped because they are aliased."""


class PredictorScaleWarning(LmmWarning):
    """Predictors on very different scales (lme4's "consider rescaling")."""


class MissingValuesWarning(LmmWarning):
    """Rows with missing values were dropped (as R's na.omit)."""


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


def require_columns(data: pd.DataFrame, columns: Iterable[str], where: str = "the data") -> None:
    """Raise DataError naming every column of ``columns`` that ``data`` (called ``where``) lacks."""
    missing = [c for c in columns if c not in data.columns]
    if missing:
        names = ", ".join(repr(c) for c in missing)
        available = ", ".join(repr(c) for c in data.columns)
        raise DataError(
            f"column(s) {names} not found in {where}; {where} has columns {available}. "
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


def complete_cases(frame: pd.DataFrame, stacklevel: int, columns: Mapping[str, pd.Series] | None = None
                   ) -> np.ndarray:
    """Which rows of ``frame`` have no missing value: the one missing-value policy of every
    estimator (R's na.omit). Incomplete rows are counted in a :class:`MissingValuesWarning`
    issued ``stacklevel`` levels above the caller; no complete row is a DataError. ``columns``:
    the frame's columns by name, if the caller has read them already (``dict(frame.items())``)."""
    complete = np.ones(len(frame), dtype=bool)
    for _, column in frame.items() if columns is None else columns.items():
        missing = _missing(column)
        if missing is not None:
            complete &= ~missing
    if not complete.all():
        warnings.warn(
            f"{int((~complete).sum())} of {len(frame)} rows have missing values in the columns the "
            "model uses and were dropped (as R's na.omit does)",
            MissingValuesWarning, stacklevel=stacklevel + 1,
        )
        if not complete.any():
            raise DataError("no rows are left once rows with missing values are dropped")
    return complete


def _missing(column: pd.Series) -> np.ndarray | None:
    """Which values of ``column`` are missing, as ``column.isna()`` says; None when none can be (an
    integer or boolean numpy column), or none is. Float and categorical columns are read directly
    (NaN; a code of -1), the others asked of pandas."""
    dtype = column.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "iub":
        return None
    if isinstance(dtype, np.dtype) and dtype.kind == "f":
        missing = np.isnan(column.to_numpy())
    elif isinstance(dtype, pd.CategoricalDtype):
        missing = column.array.codes < 0
    else:
        missing = column.isna().to_numpy(dtype=bool)
    return missing if missing.any() else None


def drop_incomplete_rows(data: pd.DataFrame, columns: Iterable[str], stacklevel: int) -> pd.DataFrame:
    """The ``columns`` (in the data's order) of the rows of ``data`` with no missing value in
    them, as a copy (``complete_cases``; the warning is issued ``stacklevel`` levels above the
    caller)."""
    used = set(columns)
    require_usable_names(data, used)
    frame = data.take([i for i, c in enumerate(data.columns) if c in used], axis=1)  # a copy
    complete = complete_cases(frame, stacklevel=stacklevel + 1)
    return frame if complete.all() else frame.loc[complete]


def require_finite(data: pd.DataFrame | Mapping[str, pd.Series], columns: Iterable[str],
                   rows: np.ndarray | None = None) -> None:
    """Raise DataError naming each numeric column of ``columns`` that holds inf or -inf, and in how
    many rows (missing values are the business of ``drop_incomplete_rows``). With ``rows`` (a
    boolean mask), only those rows count, as if ``data.loc[rows]`` were given. ``data`` may also be
    a mapping of names to columns already read."""
    problems = []
    for column in columns:
        series = data[column]
        dtype = series.dtype
        if isinstance(dtype, np.dtype) and dtype.kind in "iu":
            continue  # an integer is finite, and stays finite as a float (at most about 1.8e19)
        if isinstance(dtype, np.dtype) and dtype.kind == "f":
            values = series.to_numpy()  # NaN is its own missing value, and neither inf nor -inf
        elif is_numeric_dtype(dtype) and not is_bool_dtype(dtype):
            values = series.to_numpy(dtype=float, na_value=np.nan)
        else:
            continue
        infinite = np.isinf(values)
        n_bad = int(infinite[rows].sum() if rows is not None and infinite.any() else infinite.sum())
        if n_bad:
            problems.append(f"{column!r} has {n_bad} infinite value(s)")
    if problems:
        raise DataError(f"{'; '.join(problems)}; remove or correct those rows (e.g. "
                        "data.replace([np.inf, -np.inf], np.nan) drops them as missing)")


def require_usable_names(data: pd.DataFrame, columns: Iterable[str]) -> None:
    """Raise DataError if a column of ``columns`` occurs twice in ``data``, or is named
    ``Intercept`` (the name of the model matrix's intercept column)."""
    columns = set(columns)
    # is_unique is kept by the index: the duplicates are looked for only when there are some
    duplicated = [] if data.columns.is_unique else sorted(
        {str(c) for c in data.columns[data.columns.duplicated()] if c in columns})
    if duplicated:
        raise DataError(f"the data has more than one column named {', '.join(map(repr, duplicated))}; "
                        "rename them so each name is unique")
    if "Intercept" in columns:
        raise DataError("the model uses a column named 'Intercept', the name lmmnotes gives the intercept's "
                        "column of the model matrix; rename it (e.g. data.rename(columns={'Intercept': "
                        "'intercept_'}))")


# ---- arguments checked at the door, by every function that takes them ---------------------------
def shown(value) -> str:
    """``value`` as a user would have typed it (a numpy scalar without its ``np.float64(...)``)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def whole_number(value) -> int | None:
    """``value`` as an int if it is a whole number (an integer, or a float such as 1e4 with no
    fractional part; not a bool), else None."""
    if not _is_number(value):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    value = float(value)
    return int(value) if math.isfinite(value) and value.is_integer() else None


def check_nsim(nsim, name: str = "nsim") -> int:
    """``nsim`` as an int, or a DataError unless it is a whole number >= 1."""
    whole = whole_number(nsim)
    if whole is None or whole < 1:
        raise DataError(f"{name} must be a positive number of replicates (a whole number >= 1), got "
                        f"{shown(nsim)}; pass e.g. {name}=1000")
    return whole


def check_level(level, name: str = "level") -> float:
    """``level`` as a float, or a DataError unless it is a number strictly between 0 and 1."""
    if _is_number(level) and 0 < level < 1:
        return float(level)
    if _is_number(level) and 50 <= level < 100:  # 95 for 0.95
        fix = f"{shown(level)} looks like a percentage: pass {name}={float(level) / 100:g}"
    else:
        fix = f"pass a confidence level such as {name}=0.95"
    raise DataError(f"{name} must be between 0 and 1, got {shown(level)}; {fix}")


def resolve_n_jobs(n_jobs) -> int:
    """The number of processes ``n_jobs`` asks for, with joblib's convention: a positive number is
    itself, -1 is every core (``os.cpu_count()``), -2 every core but one, and so on; None is 1.
    0 and values below ``-os.cpu_count()`` (which would leave no process) are a DataError."""
    if n_jobs is None:
        return 1
    cores = os.cpu_count() or 1
    whole = whole_number(n_jobs)
    if whole is not None and whole >= 1:
        return whole
    if whole is not None and -cores <= whole <= -1:
        return cores + 1 + whole
    raise DataError(f"n_jobs must be a whole number of processes: 1 (the default: no extra processes), a larger "
                    f"number, or -1 for all {cores} cores (-2 for all but one, down to -{cores}); got "
                    f"{shown(n_jobs)}")
