"""The model frame: the rows and columns of the user's data that a model uses (R's ``model.frame``).

Every formula-based estimator (``lmer``, ``lmlist``, the Gibbs samplers, ``simulate_design``)
builds its data through this module, so one policy holds everywhere:

- **columns**: the variables a formula uses are found by reading its expressions
  (``formula_variables``): a name in a call's function position is a function (``log(x)``), any
  other name is a column, so a column called ``log`` is the column. A variable used twice in the
  data, or named ``Intercept``, is an error (``checks.require_usable_names``).
- **missing values**: a row with a missing value in any used column is dropped, with a
  ``MissingValuesWarning`` (R's ``na.omit``); **infinite values** are an error naming the column.
- **factors**: an object or pandas ``string`` column, or a categorical, becomes a categorical whose
  levels are those seen in the rows kept: unused categories are dropped, as R's
  ``drop.unused.levels``; other values are sorted, as R and formulaic sort them. Nullable
  ``Int64``, ``Float64`` and ``boolean`` columns become floats (a missing value NaN), and a date
  column is an error that says how to turn it into numbers.
- **transforms** are evaluated on *all* rows of the data and the incomplete rows dropped after, as
  R evaluates ``poly(x, 2)`` or ``scale(x)`` before ``na.omit``; their state (a centre, a scale,
  the polynomial's coefficients) is kept in formulaic's ModelSpec for ``predict``. Besides
  formulaic's own (``poly``, ``C``, ``I``, ``center``, ...) a formula may call R's ``factor(x)``,
  ``scale(x)`` (R's: missing values ignored, divisor n - 1), and the functions of
  ``plain_formula.FORMULA_FUNCTIONS``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from functools import lru_cache

import numpy as np
import pandas as pd
from formulaic import model_matrix
from formulaic.utils.stateful_transforms import stateful_transform
from pandas.api.types import is_datetime64_any_dtype, is_object_dtype

from .checks import DataError, complete_cases, require_columns, require_finite, require_frame, require_usable_names
from .datasets import level_labels
from .plain_formula import FORMULA_FUNCTIONS


@stateful_transform
def scale(data, center=True, scale=True, _state=None):  # noqa: A002 - R's argument names
    """R's ``scale(x)``: (x - mean) / sd over the non-missing values, sd with divisor n - 1; the
    mean and sd of the data the model was fitted to are kept for new data."""
    x = np.asarray(data, dtype=float)
    if "center" not in _state:
        _state["center"] = float(np.nanmean(x)) if center is True else (None if center is False else float(center))
        centred = x - (_state["center"] or 0.0)
        _state["scale"] = (float(np.sqrt(np.nansum(centred**2) / (np.sum(~np.isnan(x)) - 1))) if scale is True
                           else (None if scale is False else float(scale)))
    if _state["center"] is not None:
        x = x - _state["center"]
    if _state["scale"] is not None:
        x = x / _state["scale"]
    return x


@stateful_transform
def center(data, _state=None):
    """``scale(x, scale = FALSE)``: x minus its mean over the data the model was fitted to."""
    return scale(data, scale=False, _state=_state)


def factor(values) -> pd.Categorical:
    """R's ``factor(x)``: ``x`` as a categorical, levels in increasing order of value (numbers
    numerically, strings alphabetically)."""
    values = pd.Series(np.asarray(values) if not isinstance(values, pd.Series) else values)
    return pd.Categorical(values, categories=_sorted_levels(values.dropna()))


# What a formula may call, besides formulaic's own transforms.
CONTEXT = {**FORMULA_FUNCTIONS, "scale": scale, "center": center, "factor": factor}


def formula_variables(*expressions: str) -> list[str]:
    """The data columns that formulaic expressions use, in order of first appearance.

    ``a:b``, ``a*b``, ``log(x)``, ``poly(x, 2)``, ```a b```: a name called as a function is a function;
    any other name (``log`` in ``y ~ log``) is a column. ``np.log(x)`` uses x."""
    return list(dict.fromkeys(name for text in expressions for name in _expression_variables(text)))


@lru_cache(maxsize=512)
def _expression_variables(text: str) -> tuple[str, ...]:
    """``formula_variables`` of one expression (a pure function of the string: kept for the next call)."""
    out: dict[str, None] = {}
    quoted: list[str] = []

    def placeholder(match: re.Match) -> str:
        quoted.append(match.group(1))
        return f"__q{len(quoted) - 1}__"

    source = re.sub(r"`([^`]*)`", placeholder, text).replace(":", "*").replace("~", ",")
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as error:
        raise DataError(f"cannot read {text!r} as a model formula: {error.msg}") from None
    functions = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    attributes = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    names = sorted((node for node in ast.walk(tree) if isinstance(node, ast.Name)),
                   key=lambda node: (node.lineno, node.col_offset))
    for node in names:
        if id(node) in functions or id(node) in attributes:
            continue
        name = node.id
        match = re.fullmatch(r"__q(\d+)__", name)
        out[quoted[int(match.group(1))] if match else name] = None
    return tuple(out)


def factor_calls(expression: str) -> list[str]:
    """The columns that ``expression`` turns into factors with ``factor(x)`` or ``C(x)``."""
    return [m.group(1) or m.group(2)
            for m in re.finditer(r"\b(?:factor|C)\(\s*(?:`([^`]+)`|(\w+))\s*[,)]", expression)]


def model_frame(data: pd.DataFrame, columns: Iterable[str], *, groups: Iterable[str] = (),
                stacklevel: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The model frame and its complete rows: ``model_frame_columns`` without the columns read."""
    frame, complete, _ = model_frame_columns(data, columns, groups=groups, stacklevel=stacklevel + 1)
    return frame, complete


def model_frame_columns(data: pd.DataFrame, columns: Iterable[str], *, groups: Iterable[str] = (),
                        stacklevel: int) -> tuple[pd.DataFrame, np.ndarray, dict[str, pd.Series]]:
    """The ``columns`` and ``groups`` of ``data`` for every row, coded as the module docstring says
    (object, string and categorical columns among ``columns`` as categoricals of the levels seen in
    the complete rows, nullable numbers as floats), and which rows are complete. Grouping factors
    (``groups`` not among ``columns``) keep their values: ``design.interaction`` codes them, by
    value and in R's order.

    Checks the names (``require_columns``, ``require_usable_names``) and the values (no inf);
    rows with a missing value are reported by a ``MissingValuesWarning`` issued ``stacklevel``
    levels above the caller. ``data`` is not modified. Also returns the frame's columns by name,
    as read (``frame[name]``: pandas makes a new Series at each reading)."""
    require_frame(data)
    columns = list(dict.fromkeys(columns))
    used = set(columns) | set(groups)
    require_columns(data, [*columns, *(g for g in dict.fromkeys(groups) if g not in columns)])
    require_usable_names(data, used)
    frame = data.take([i for i, c in enumerate(data.columns.tolist()) if c in used], axis=1)  # a copy
    read = dict(frame.items())  # each column read once
    complete = complete_cases(frame, stacklevel=stacklevel + 1, columns=read)
    every_row = bool(complete.all())
    require_finite(read, list(read), rows=None if every_row else complete)
    for name in columns:
        column = read[name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            categories = column.array.categories
            codes = column.array.codes  # >= 0 in the complete rows
            observed = np.bincount(codes if every_row else codes[complete], minlength=len(categories)) > 0
            if not observed.all():
                frame[name] = column.cat.set_categories([c for c, seen in zip(categories, observed) if seen])
        elif isinstance(column.dtype, pd.StringDtype) or is_object_dtype(column.dtype):
            frame[name] = pd.Categorical(column.astype(object).where(complete, None),
                                         categories=_sorted_levels(column[complete]))
        elif is_datetime64_any_dtype(column.dtype) or isinstance(column.dtype, pd.PeriodDtype):
            raise DataError(f"the column {name!r} holds dates or times, which a model formula cannot use directly; "
                            f"convert it to numbers in units that suit the model, e.g. days since the first "
                            f"date: (data[{name!r}] - data[{name!r}].min()).dt.days")
        elif isinstance(column.dtype, pd.api.extensions.ExtensionDtype):  # Int64, Float64, boolean: floats, NaN
            frame[name] = column.to_numpy(dtype=float, na_value=np.nan)
        else:
            continue
        read[name] = frame[name]  # recoded
    return frame, complete, read


def evaluate(formula, frame: pd.DataFrame, what: str):
    """formulaic's model matrices of ``formula`` on every row of ``frame`` (take the complete rows
    with ``kept_rows``: transforms see the rows R's model.frame sees). An error says ``what`` failed."""
    try:
        return model_matrix(formula, frame, context=CONTEXT, na_action="ignore")
    except Exception as error:  # formulaic's messages are good; say where it came from
        raise DataError(f"could not build {what}: {error}") from error


def kept_rows(matrix, complete: np.ndarray) -> np.ndarray:
    """A formulaic model matrix's complete rows, as a float array."""
    values = matrix.to_numpy(dtype=float)
    return values if complete.all() else values[complete]


def _sorted_levels(values: pd.Series) -> list:
    """The distinct values in increasing order (by their labels if they cannot be compared)."""
    distinct = pd.unique(values.astype(object))
    try:
        return sorted(distinct)
    except TypeError:
        return sorted(distinct, key=str)


def apply_spec(spec, data: pd.DataFrame) -> np.ndarray:
    """A formulaic ModelSpec (with its transforms' state) evaluated on other data, as floats."""
    return spec.get_model_matrix(data, context=CONTEXT, na_action="ignore").to_numpy(dtype=float)


def conform(frame: pd.DataFrame, data: pd.DataFrame) -> pd.DataFrame:
    """``data`` with each column that is a factor in the model frame ``frame`` coded as it is there:
    a categorical with the frame's categories, matched by value (``datasets.level_labels``; a
    value not among them becomes missing, so check ``unseen_levels`` first). A copy."""
    out = data.copy()
    for name in frame.columns:
        if name in out.columns and isinstance(frame[name].dtype, pd.CategoricalDtype):
            categories = frame[name].array.categories
            codes = pd.Index(level_labels(pd.Series(categories))).get_indexer(level_labels(out[name]))
            out[name] = pd.Categorical.from_codes(codes, categories=categories)
    return out


def unseen_levels(fitted: pd.Series, new: pd.Series) -> list[str]:
    """The labels of ``new`` that ``fitted`` (a column of a model frame) does not have, compared
    by value (3 and 3.0 are one level)."""
    if isinstance(fitted.dtype, pd.CategoricalDtype):
        known = set(level_labels(pd.Series(fitted.array.categories)))
    else:
        known = set(level_labels(fitted.dropna()))
    return sorted(set(level_labels(new.dropna())) - known)
