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
    "eggprod": ("treat", "block"),
    "eggs": ("Lab", "Technician", "Sample"),
    "hsb": ("school", "minority", "sex", "sector", "himinty"),
    "irrigation": ("field", "irrigation", "variety"),
    "lawn": ("manufact", "machine", "speed"),
    "psid": ("sex", "person"),
    "pulp": ("operator",),
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


def factor_levels(values: pd.Series, order=_level_order) -> tuple[list[str], np.ndarray]:
    """``values`` read as a factor: its level labels and each value's level index (0, 1, ...).

    A categorical keeps its categories, in their order. Anything else has a level per distinct
    label ``values.astype(str)`` (as predict matches new data), put in ``order`` (default R's,
    ``_level_order``); hashing finds the distinct labels, and only those are sorted.
    """
    if isinstance(values.dtype, pd.CategoricalDtype):
        return [str(c) for c in values.array.categories], np.asarray(values.array.codes, dtype=np.intp)
    inverse, distinct = pd.factorize(values.astype(str))
    labels = order(distinct)
    rank = {label: i for i, label in enumerate(labels)}
    return labels, np.array([rank[label] for label in distinct], dtype=np.intp)[inverse]


def as_factor(values: pd.Series) -> pd.Series:
    """``values`` as a categorical of string labels, levels in R's order (see module doc)."""
    labels = values.astype(str)
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
