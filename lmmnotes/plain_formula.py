"""Model matrices of plain formulas, built directly instead of through formulaic.

formulaic builds any model matrix, but each call costs 0.5-3 ms whatever the number of rows:
more than all the criterion evaluations of a small fit. Most formulas in practice are *plain*:

- terms are column names joined by ``:`` and ``*`` (``cyear * sex + age``), plus ``1`` or ``0``;
- each column is numeric (integer or float64, not boolean), or a factor (pandas categorical, or strings);
- if any factor occurs, the formula has an intercept and is hierarchical: with every term, each
  term obtained by dropping one of its names is in the formula too (``a:b`` needs ``a`` and ``b``);
- the response is a numeric column or ``f(column)`` for a function of ``FORMULA_FUNCTIONS``.

For those the matrix is easy to write down, and this module writes it exactly as formulaic does:
terms in order of degree (stable), ``a * b * c`` expanded as ``a, b, c, a:b, a:c, b:c, a:b:c``;
a factor coded by treatment contrasts against its first level (categories in order, strings
sorted), columns named ``f[T.level]``; a term's columns the products of its factors' columns,
the first factor varying fastest. In a hierarchical formula every factor of every term has this
reduced coding. ``tests/test_plain_formula.py`` checks the matrices and names against formulaic's
on many formulas. Anything else (``C(x)``, ``I(x**2)``, ``log(x)`` on the right, ``0 + f``,
booleans) returns None, and ``design`` asks formulaic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_float_dtype, is_numeric_dtype, is_object_dtype

from .datasets import factor_levels
from .formula import split_top_level

# Functions a formula may call, as in R: log(income), sqrt(x), exp(x).
FORMULA_FUNCTIONS = {"log": np.log, "log10": np.log10, "log2": np.log2, "exp": np.exp, "sqrt": np.sqrt, "abs": np.abs}

_NAME = re.compile(r"[A-Za-z_]\w*")  # formulaic evaluates names as Python: a.b would be an attribute
_CALL = re.compile(r"(\w+)\(\s*([A-Za-z_]\w*)\s*\)")


@dataclass(frozen=True)
class PlainFormula:
    """The right-hand side of a plain formula: an intercept or not, and terms as tuples of names."""

    intercept: bool
    terms: tuple[tuple[str, ...], ...]

    @cached_property
    def variables(self) -> tuple[str, ...]:
        """The columns the terms use, in order of first appearance (worked out once: a tuple)."""
        return tuple(dict.fromkeys(name for term in self.terms for name in term))


@lru_cache(maxsize=256)
def parse_plain(rhs: str) -> PlainFormula | None:
    """Read ``rhs`` as a plain right-hand side (module docstring), or None if it is not one.
    (A pure function of the string, with an immutable answer: kept for the next call.)"""
    intercept, expanded = True, []
    for piece in split_top_level(rhs, "+"):
        piece = piece.strip()
        if piece == "1":  # as in formulaic, the last of 1, 0 and -1 decides
            intercept = True
            continue
        if piece in ("0", "-1"):
            intercept = False
            continue
        parts = [tuple(name.strip() for name in part.split(":")) for part in piece.split("*")]
        if any(not _NAME.fullmatch(name) for part in parts for name in part):
            return None
        # a * b * c: every non-empty subset of the parts, in binary counting order
        for mask in range(1, 2 ** len(parts)):
            expanded.append(tuple(name for k, part in enumerate(parts) if mask >> k & 1 for name in part))
    terms: dict[frozenset, tuple[str, ...]] = {}
    for term in expanded:
        key = frozenset(term)
        if len(key) < len(term) or terms.get(key, term) != term:
            return None  # a:a, or a:b beside b:a: leave the conventions to formulaic
        terms.setdefault(key, term)
    ordered = sorted(terms.values(), key=len)  # stable: order of appearance within a degree
    return PlainFormula(intercept, tuple(ordered))


def _is_number(dtype) -> bool:
    """A numeric dtype that is not boolean (numpy's integers and floats read at once)."""
    if isinstance(dtype, np.dtype) and dtype.kind in "iuf":
        return True
    return is_numeric_dtype(dtype) and not is_bool_dtype(dtype)


def _factor_levels(column: pd.Series) -> tuple[list[str], np.ndarray] | None:
    """Level labels and integer codes of a factor column (None if it is not a plain factor)."""
    if isinstance(column.dtype, pd.CategoricalDtype):  # named as formulaic names them: str(category)
        labels = column.array.categories.tolist()
        if not all(type(label) is str for label in labels):
            labels = [str(label) for label in labels]
        return labels, np.asarray(column.array.codes, dtype=np.intp)
    dtype = column.dtype
    # strings: object columns, and pandas' default str dtype; formulaic cannot encode the "string"
    # dtype whose missing value is pd.NA, so that one goes to formulaic, which then explains
    if is_object_dtype(dtype) or (isinstance(dtype, pd.StringDtype) and dtype.na_value is not pd.NA):
        values = column.to_numpy(dtype=object)
        if not all(isinstance(v, str) for v in values):
            return None
        return factor_levels(column, order=sorted)  # formulaic's order: sorted strings
    return None


def plain_columns(formula: PlainFormula | None, frame: pd.DataFrame, factors: bool = True,
                  read: dict[str, pd.Series] | None = None) -> tuple[np.ndarray, list[str]] | None:
    """The model matrix of ``formula`` for ``frame`` and its column names, as formulaic builds
    them. None if ``formula`` is None; if a column is missing, named Intercept, or neither
    float64, integer nor a factor; or if a factor occurs in a formula without an intercept or
    that is not hierarchical (or at all, if not ``factors``: a factor's levels would then come
    from ``frame`` alone). ``read``: ``frame``'s columns by name, if read already."""
    if formula is None or any(name == "Intercept" or name not in frame.columns for name in formula.variables):
        return None
    columns: dict[str, list[tuple[str, np.ndarray]]] = {}
    has_factor = False
    for name in formula.variables:
        column = frame[name] if read is None else read[name]
        if _is_number(column.dtype):
            if is_float_dtype(column.dtype) and column.dtype.itemsize != 8:
                return None  # formulaic multiplies float32 columns in float32
            columns[name] = [(name, column.to_numpy(dtype=float))]
            continue
        factor = _factor_levels(column) if factors else None
        if factor is None:
            return None
        levels, codes = factor
        has_factor = True
        columns[name] = [(f"{name}[T.{level}]", (codes == k).astype(float)) for k, level in enumerate(levels) if k]
    if has_factor:
        present = {frozenset(term) for term in formula.terms} | ({frozenset()} if formula.intercept else set())
        if not formula.intercept or any(frozenset(term) - {name} not in present
                                         for term in formula.terms for name in term):
            return None
    names, values = (["Intercept"], [np.ones(len(frame))]) if formula.intercept else ([], [])
    for term in formula.terms:
        product = columns[term[0]]
        for name in term[1:]:  # the first factor varies fastest
            product = [(f"{a}:{b}", x * z) for b, z in columns[name] for a, x in product]
        names += [name for name, _ in product]
        values += [x for _, x in product]
    X = np.column_stack(values) if values else np.zeros((len(frame), 0))
    return X, names


@lru_cache(maxsize=256)
def parse_plain_response(response: str) -> tuple[str, object] | None:
    """(column, function) for a response ``y`` or ``f(y)`` with f in FORMULA_FUNCTIONS (else None;
    kept for the next call, as ``parse_plain``)."""
    response = response.strip()
    if response.startswith("`") and response.endswith("`") and response.count("`") == 2:
        response = response[1:-1]  # a keyword quoted by parse_formula, e.g. `yield`
        return (response, None) if response.isidentifier() else None
    if _NAME.fullmatch(response):
        return response, None
    call = _CALL.fullmatch(response)
    if call and call.group(1) in FORMULA_FUNCTIONS:
        return call.group(2), FORMULA_FUNCTIONS[call.group(1)]
    return None


def plain_response(column: str, function, frame: pd.DataFrame | dict[str, pd.Series]) -> np.ndarray | None:
    """The response vector, or None if the column is not numeric (formulaic then explains).
    ``frame`` may also be a frame's columns by name."""
    values = frame[column]
    if not _is_number(values.dtype):
        return None
    y = values.to_numpy(dtype=float)
    if function is not None:
        with np.errstate(all="ignore"):  # log(0) and the like: build_design reports non-finite values
            y = function(y)
    return y
