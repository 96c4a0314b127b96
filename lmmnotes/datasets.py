"""The book's data sets, as pandas DataFrames.

``load(name)`` reads one CSV file and gives each grouping or factor column the pandas
``category`` dtype, with its levels in the order R would use: alphabetical for labels, and
numerical for identifiers that look like numbers (school 1224 before school 1288, person 2
before person 10).  The provenance of each data set is in ``data/README.md``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from .checks import DataError

# For each data set: the columns that are factors.  Every other column is numeric.
FACTORS: dict[str, tuple[str, ...]] = {
    "breaking": ("operator", "day", "supplier"),
    "denim": ("supplier",),
    "ergostool": ("Type", "Subject"),
    "early": ("id", "trt"),
    "eggprod": ("treat", "block"),
    "eggs": ("Lab", "Technician", "Sample"),
    "hsb": ("school", "minority", "sex", "sector", "himinty"),
    "irrigation": ("field", "irrigation", "variety"),
    "lawn": ("manufact", "machine", "speed"),
    "orange": ("Tree",),
    "psid": ("sex", "person"),
    "pulp": ("operator",),
    "rail": ("Rail",),
    "ratdrink": ("subject", "treat"),
    "vision": ("power", "eye", "subject"),
}


def names() -> list[str]:
    """The names of the data sets that ``load`` knows, sorted."""
    return sorted(FACTORS)


def _data_dir() -> Path:
    """Where the CSV files are: inside an installed wheel, or in the checkout's data/."""
    packaged = resources.files("lmmnotes") / "_data"
    if packaged.is_dir():
        return Path(str(packaged))
    checkout = Path(__file__).resolve().parent.parent / "data"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(
        "the lmmnotes data files were not found; reinstall lmmnotes (pip install lmmnotes) "
        "or run from a checkout of the repository"
    )


def _level_order(labels) -> list[str]:
    """Distinct string labels sorted numerically if they all look like numbers, else alphabetically."""
    labels = np.asarray(labels, dtype=object)
    numeric = pd.to_numeric(labels, errors="coerce")
    if not pd.isna(numeric).any():
        return [label for _, label in sorted(zip(numeric.tolist(), labels.tolist()))]
    return sorted(labels.tolist())


def _label(value) -> str:
    """A level's label, by value: a whole number is written without a decimal point whatever its
    dtype (3, 3.0 and np.int8(3) are all "3"), other numbers as Python writes them."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if number.is_integer() and abs(number) < 2**53:
            return str(int(number))
        return str(value) if isinstance(value, np.floating) else repr(number)  # shortest in its own precision
    return str(value)


def _distinct(values: pd.Series, **options) -> tuple[np.ndarray, list]:
    """pd.factorize's codes and distinct values, the values in the column's own precision (float32
    stays float32, so its 0.1 is labelled 0.1)."""
    inverse, distinct = pd.factorize(values, **options)
    if isinstance(values.dtype, np.dtype) and values.dtype.kind == "f":
        distinct = np.asarray(distinct).astype(values.dtype)
    return inverse, list(distinct)


def level_labels(values: pd.Series) -> np.ndarray:
    """The label of each value (``_label``); a categorical's values are labelled by their categories."""
    inverse, distinct = _distinct(values, use_na_sentinel=False)
    return np.array([_label(v) for v in distinct], dtype=object)[inverse]


def _category_labels(categories: pd.Index) -> list[str]:
    """``_label`` of each category; categories that are all strings are their own labels (read at once)."""
    if categories.dtype == object or isinstance(categories.dtype, pd.StringDtype):
        labels = categories.tolist()
        if all(type(label) is str for label in labels):
            return labels
    return [_label(c) for c in categories]


def factor_levels(values: pd.Series, order=_level_order) -> tuple[list[str], np.ndarray]:
    """``values`` read as a factor: its level labels and each value's level index (0, 1, ...).

    A categorical keeps its categories, in their order. Anything else has a level per distinct
    label (``level_labels``: by value, so 3 and 3.0 are one level, as predict matches new data),
    put in ``order`` (default R's, ``_level_order``); hashing finds the distinct values, and only
    their labels are sorted.
    """
    if isinstance(values.dtype, pd.CategoricalDtype):
        return _category_labels(values.array.categories), np.asarray(values.array.codes, dtype=np.intp)
    inverse, distinct = _distinct(values)
    distinct_labels = [_label(v) for v in distinct]
    labels = order(list(dict.fromkeys(distinct_labels)))
    rank = {label: i for i, label in enumerate(labels)}
    return labels, np.array([rank[label] for label in distinct_labels], dtype=np.intp)[inverse]


def as_factor(values: pd.Series) -> pd.Series:
    """``values`` as a categorical of string labels, levels in R's order (see module doc)."""
    labels = pd.Series(level_labels(values), index=values.index)
    return pd.Series(
        pd.Categorical(labels, categories=_level_order(pd.unique(labels))), index=values.index, name=values.name
    )


def load(name: str) -> pd.DataFrame:
    """Load the data set ``name`` (one of ``names()``) as a DataFrame.

    Factor columns are categorical (see the module docstring for the level order); the
    others are int64 or float64.  Each call returns a fresh copy.
    """
    if name not in FACTORS:
        raise DataError(f"unknown data set {name!r}; the available data sets are: {', '.join(names())}")
    frame = pd.read_csv(_data_dir() / f"{name}.csv")
    for column in FACTORS[name]:
        frame[column] = as_factor(frame[column])
    return frame
