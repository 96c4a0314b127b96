r"""Model matrices of a linear mixed model: the response y, X for the fixed effects, Z for the
random effects, and the template of the relative covariance factor :math:`\Lambda_\theta`.

For a random-effects term ``(expr | g)`` with grouping factor g of :math:`l` levels, let
:math:`J` be the :math:`n \times l` indicator matrix of g and :math:`X_t` the
:math:`n \times p_t` model matrix of ``expr``. The term's block of Z is the transposed
Khatri-Rao (row-wise Kronecker) product :math:`Z_t = (J^\top * X_t^\top)^\top`: row i holds
:math:`X_t[i, :]` in the :math:`p_t` columns of observation i's level, and zeros elsewhere, so the
random effects are ordered level by level. The term's :math:`p_t \times p_t` lower-triangular
template :math:`T_t` holds :math:`p_t(p_t+1)/2` entries of :math:`\theta` (column by column);
:math:`\Lambda_\theta` is block diagonal with blocks :math:`I_l \otimes T_t`.

Model matrices come from formulaic, except for plain formulas (numeric columns and factors
joined by ``+``, ``:`` and ``*``), which ``plain_formula`` builds directly, as formulaic would,
without formulaic's fixed cost of a few milliseconds a call.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, fields, replace
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pandas.api.types import is_float_dtype
from scipy.linalg.lapack import dpotrf
from formulaic import Formula, model_matrix

from .checks import DataError, require_columns, require_frame
from .datasets import factor_levels
from .formula import ParsedFormula, RandomTerm
from .plain_formula import (FORMULA_FUNCTIONS, PlainFormula, parse_plain, parse_plain_response, plain_columns,
                            plain_response)


def _r_name(name: str) -> str:
    """formulaic's 'Intercept' is lme4's '(Intercept)'; other names stay as formulaic gives them."""
    return "(Intercept)" if name == "Intercept" else name


@dataclass(frozen=True)
class TermDesign:
    """One random-effects term: its grouping factor, levels, and model matrix X_t."""

    term: RandomTerm
    levels: tuple[str, ...]
    codes: np.ndarray  # level index of each observation
    X: np.ndarray  # n x p_t
    columns: tuple[str, ...]
    spec: object = field(repr=False, default=None)  # formulaic ModelSpec; None for a plain numeric expr

    def model_matrix(self, data: pd.DataFrame) -> np.ndarray:
        """X_t for other data (prediction)."""
        if self.spec is None:
            expr = parse_plain(self.term.expr)
            require_columns(data, expr.variables)
            # the fit used float64 columns; new float32 ones are widened, not sent away as plain_columns
            # does at fit time (it leaves float32 arithmetic to formulaic)
            frame = data[list(expr.variables)]
            frame = frame.astype({c: float for c in frame.columns if is_float_dtype(frame[c].dtype)})
            plain = plain_columns(expr, frame, factors=False)
            if plain is None:
                raise DataError(f"the columns of ({self.term.expr} | {self.group}) in the new data must be numeric, "
                                "as in the data the model was fitted to")
            return plain[0]
        return self.spec.get_model_matrix(data).to_numpy(dtype=float)

    @property
    def group(self) -> str:
        return self.term.group

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    @property
    def p(self) -> int:
        return self.X.shape[1]

    @property
    def n_theta(self) -> int:
        return self.p * (self.p + 1) // 2

    @cached_property
    def Z(self) -> sp.csr_matrix:
        """The term's block Z_t of Z (n x l p_t): row i holds X_t[i, :] in the columns of its level.

        Built row by row (p_t entries a row), with no sort: Z_t' v gives the sums over each
        level's rows that the cross-products need, in one sparse product."""
        n, p = self.X.shape
        columns = (self.codes[:, None] * p + np.arange(p)).ravel()
        return sp.csr_matrix((self.X.ravel(), columns, np.arange(0, n * p + 1, p)), shape=(n, self.n_levels * p))

    @cached_property
    def _lower(self) -> tuple[np.ndarray, np.ndarray]:
        """Row and column indices of the lower triangle, column by column (theta's order)."""
        return np.triu_indices(self.p)[::-1]

    def template(self, theta_t: np.ndarray) -> np.ndarray:
        """The lower-triangular p_t x p_t factor T_t filled column by column from theta_t."""
        T = np.zeros((self.p, self.p))
        T[self._lower] = theta_t
        return T

    @property
    def theta_lower(self) -> np.ndarray:
        """lme4's lower bounds: 0 for the diagonal of T_t, -inf below it. A fitted theta keeps
        them (the diagonal is nonnegative), but the optimizer bounds only scalar terms (``fit._bounds``)."""
        rows, cols = self._lower
        return np.where(rows == cols, 0.0, -np.inf)

    @property
    def theta_start(self) -> np.ndarray:
        """lme4's starting value: T_t = I."""
        rows, cols = self._lower
        return (rows == cols).astype(float)


@dataclass(frozen=True)
class Design:
    """Everything about a model that does not depend on the parameters."""

    formula: ParsedFormula
    y: np.ndarray
    X: np.ndarray
    x_names: tuple[str, ...]
    terms: tuple[TermDesign, ...]
    # the rows of the user's data that were used and the columns the model uses (lme4's
    # model.frame); with_response keeps the original response here
    model_frame: pd.DataFrame = field(repr=False)
    dropped_columns: tuple[str, ...] = ()

    @property
    def row_index(self) -> pd.Index:
        """The labels of the rows of the user's data that were used."""
        return self.model_frame.index

    @cached_property
    def fixed_spec(self):
        """formulaic's ModelSpec of the fixed part (built when first needed), to rebuild X for new data."""
        return _matrix(_fixed_formula(self.formula), self.model_frame).rhs.model_spec

    @property
    def nobs(self) -> int:
        return len(self.y)

    def with_response(self, y: np.ndarray) -> "Design":
        """The same design for a new response y on the same rows (``LmerFit.refit``). What the
        design has cached (``fixed_spec``, ``theta_scale``, ...) does not depend on y and carries
        over, so a bootstrap's refits build none of it again."""
        new = replace(self, y=y)
        field_names = {f.name for f in fields(self)}
        new.__dict__.update({name: value for name, value in self.__dict__.items() if name not in field_names})
        return new

    @cached_property
    def theta_slices(self) -> list[slice]:
        """Where each term's entries sit in theta."""
        out, start = [], 0
        for t in self.terms:
            out.append(slice(start, start + t.n_theta))
            start += t.n_theta
        return out

    @cached_property
    def theta_lower(self) -> np.ndarray:
        return np.concatenate([t.theta_lower for t in self.terms])

    @property
    def theta_start(self) -> np.ndarray:
        """lme4's starting value, every T_t = I."""
        return np.concatenate([t.theta_start for t in self.terms])

    @property
    def default_start(self) -> np.ndarray:
        """Where ``lmer`` starts: lme4's T_t = I in the units of ``theta_scale``."""
        return self.theta_start * self.theta_scale

    @cached_property
    def theta_scale(self) -> np.ndarray:
        """A typical size of each theta entry: T_t[r, c] multiplies column r of X_t, so its natural
        unit is 1 / rms(X_t[:, r]), rounded to a power of two (the optimizer's change of scale is
        then exact, and a column of unit size leaves theta as it is)."""
        scales = []
        for t in self.terms:
            rms = np.sqrt(np.mean(t.X**2, axis=0))
            rows, _ = t._lower
            scales.append(2.0 ** np.round(-np.log2(np.where(rms[rows] > 0, rms[rows], 1.0))))
        return np.concatenate(scales)

    @property
    def q(self) -> int:
        """Number of random effects."""
        return sum(t.n_levels * t.p for t in self.terms)

    @cached_property
    def lambda_index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """lme4's ``Lind``: Lambda[rows[k], cols[k]] = theta[which[k]] for the nonzeros of Lambda."""
        rows, cols, which = [], [], []
        offset = 0
        for t, s in zip(self.terms, self.theta_slices):
            r, c = t._lower  # lower triangle, column by column, as theta
            base = offset + np.arange(t.n_levels)[:, None] * t.p
            rows.append((base + r).ravel())
            cols.append((base + c).ravel())
            which.append(np.tile(np.arange(s.start, s.stop), t.n_levels))
            offset += t.n_levels * t.p
        return np.concatenate(rows), np.concatenate(cols), np.concatenate(which)

    @cached_property
    def lambda_index_rest(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``lambda_index`` for the terms after the first, with rows and columns counted from there."""
        rows, cols, which = self.lambda_index
        q1 = self.terms[0].n_levels * self.terms[0].p
        keep = rows >= q1
        return rows[keep] - q1, cols[keep] - q1, which[keep]

    def Z(self) -> sp.csc_matrix:
        """The sparse n x q random-effects model matrix [Z_1 Z_2 ...]."""
        return sp.hstack([t.Z for t in self.terms], format="csc")

    def Lambda(self, theta: np.ndarray) -> sp.csc_matrix:
        """The sparse q x q relative covariance factor: block diagonal of I_l kron T_t."""
        return sp.block_diag(
            [sp.kron(sp.identity(t.n_levels), t.template(theta[s])) for t, s in zip(self.terms, self.theta_slices)],
            format="csc",
        )


def canonical_theta(theta: np.ndarray, design: Design) -> np.ndarray:
    """The same model with every template's diagonal >= 0.

    The criterion depends on T_t only through T_t T_t', which does not change when a column of
    T_t changes sign: each column whose diagonal entry is negative is negated.
    """
    out = np.array(theta, dtype=float, ndmin=1)
    if out.shape != design.theta_lower.shape:
        raise ValueError(f"theta (or a start) of shape {out.shape} given, but this model has "
                         f"{design.theta_lower.size} covariance parameters: the lower triangles of its terms' "
                         "templates, column by column, as in fit.theta")
    for t, s in zip(design.terms, design.theta_slices):
        T = t.template(out[s])
        out[s] = (T * np.where(np.diag(T) < 0, -1.0, 1.0))[t._lower]
    return out + 0.0  # a negated zero becomes +0.0


def factor_codes(data: pd.DataFrame, factors: tuple[str, ...]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Codes and level labels of the interaction of ``factors`` (``a:b``), observed levels only.

    Each column is a factor whatever its dtype; levels follow the column's categories if it is
    categorical, else R's order (see ``datasets``). Combined levels are ordered with the first
    factor varying slowest, and labelled ``"a1:b1"``.
    """
    per_factor = [factor_levels(data[name]) for name in factors]
    # one integer per combination, first factor slowest (mixed radix): its observed values in
    # increasing order are the observed combinations in lexicographic order
    sizes = [len(labels) for labels, _ in per_factor]
    key = np.zeros(len(data), dtype=np.int64)
    for (_, codes), size in zip(per_factor, sizes):
        key = key * size + codes
    present = np.bincount(key, minlength=int(np.prod(sizes, dtype=np.int64))) > 0
    observed = np.flatnonzero(present)
    codes = (np.cumsum(present) - 1)[key]
    digits = np.unravel_index(observed, sizes)  # each observed combination's level of each factor
    parts = [np.asarray(labels, dtype=object)[d] for (labels, _), d in zip(per_factor, digits)]
    return codes.astype(np.intp), tuple(map(":".join, zip(*parts)))


def _fixed_formula(parsed: ParsedFormula) -> Formula:
    """The fixed part with its response, for formulaic."""
    return Formula(f"{parsed.response} ~ {parsed.fixed}")


def _matrix(formula: str, data: pd.DataFrame):
    return model_matrix(formula, data, context=FORMULA_FUNCTIONS, na_action="ignore")


def column_space_coefficients(X: np.ndarray, X_small: np.ndarray) -> np.ndarray | None:
    """B with X B = X_small if every column of X_small lies in the column space of X (nested
    fixed effects), else None."""
    B, *_ = np.linalg.lstsq(X, X_small, rcond=None)
    if np.abs(X @ B - X_small).max(initial=0.0) > 1e-8 * max(1.0, np.abs(X_small).max(initial=0.0)):
        return None
    return B


def _drop_aliased(X: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str], list[str]]:
    """Drop each column of X that is a linear combination of the columns before it (as lme4
    does: the later of two aliased columns goes)."""
    if not X.size:
        return X, names, []
    XtX = X.T @ X
    scale = np.sqrt(np.diag(XtX).max())  # the longest column's length
    tolerance = 1e-7 * max(scale, 1.0)
    # |R_jj| of X = QR is the length of column j's residual on the columns before it: when
    # none is small, X has full rank. The Cholesky factor of X'X is the same R, far cheaper for
    # a long X, but accurate only to about 1e-8 |X|: it settles the clear cases (every |R_jj|
    # above 1e3 times the tolerance), and the QR of X the rest
    if X.shape[0] >= X.shape[1]:
        R, info = dpotrf(XtX, lower=0)
        if info == 0 and np.all(np.abs(np.diag(R)) > 1e3 * tolerance):
            return X, names, []
        if np.all(np.abs(np.diagonal(np.linalg.qr(X, mode="r"))) > tolerance):
            return X, names, []
    keep: list[int] = []
    for j in range(X.shape[1]):
        column = X[:, j]
        if keep:
            coef, *_ = np.linalg.lstsq(X[:, keep], column, rcond=None)
            column = column - X[:, keep] @ coef
        if np.linalg.norm(column) > tolerance:
            keep.append(j)
    dropped = [names[j] for j in range(X.shape[1]) if j not in keep]
    return X[:, keep], [names[j] for j in keep], dropped


def _fixed_matrices(parsed: ParsedFormula, frame: pd.DataFrame, response: tuple | None,
                    fixed: PlainFormula | None) -> tuple[np.ndarray, np.ndarray, list[str], object]:
    """y, X, X's column names and formulaic's ModelSpec of X: directly for a plain formula
    (``plain_formula``: ``response`` and ``fixed`` are its parsed parts, None if not plain;
    the ModelSpec is then None, built only if predict needs it), else by formulaic."""
    y = plain_response(*response, frame) if response else None
    plain = plain_columns(fixed, frame) if y is not None else None
    if plain is not None:
        return y, plain[0], [_r_name(c) for c in plain[1]], None
    try:
        matrices = _matrix(_fixed_formula(parsed), frame)
    except Exception as error:  # formulaic's messages are good, but say where it came from
        raise DataError(f"could not build the fixed-effects model matrix for {parsed.fixed!r}: {error}") from error
    response = matrices.lhs
    if response.shape[1] != 1:
        raise DataError(
            f"the response {parsed.response!r} must be one numeric column, but it expands to "
            f"{response.shape[1]} columns ({', '.join(response.columns)}); is it a factor?"
        )
    return (response.to_numpy(dtype=float).ravel(), matrices.rhs.to_numpy(dtype=float),
            [_r_name(c) for c in matrices.rhs.columns], matrices.rhs.model_spec)


def _term_matrix(term: RandomTerm, expr: PlainFormula | None, frame: pd.DataFrame
                 ) -> tuple[np.ndarray, tuple[str, ...], object]:
    """X_t, its column names and formulaic's ModelSpec (None when built directly: numeric columns
    only; ``expr`` is the term's parsed expression, None if not plain)."""
    plain = plain_columns(expr, frame, factors=False)
    if plain is not None:
        return plain[0], tuple(_r_name(c) for c in plain[1]), None
    Xt = _matrix(term.expr, frame)
    return Xt.to_numpy(dtype=float), tuple(_r_name(c) for c in Xt.columns), Xt.model_spec


def _used_columns(parsed: ParsedFormula, response: tuple | None, parts: list[PlainFormula | None]) -> set[str]:
    """The names of the columns the formula uses: read directly from a plain formula (its parsed
    ``response`` and ``parts``), else by formulaic."""
    used = {f for t in parsed.random for f in t.factors}
    if response is not None and all(part is not None for part in parts):
        return used | {response[0]} | {name for part in parts for name in part.variables}
    used |= set(_fixed_formula(parsed).required_variables)
    for t in parsed.random:
        used |= set(Formula(t.expr).required_variables)
    return used - set(FORMULA_FUNCTIONS)


def complete_rows(data: pd.DataFrame, used: set[str], stacklevel: int) -> pd.DataFrame:
    """The columns ``used`` (in the data's order) of the rows of ``data`` with no missing value in
    them, as a copy: lme4's model frame with R's na.omit. Dropped rows are counted in a warning
    issued ``stacklevel`` levels above the caller; no rows left is an error."""
    positions = [i for i, c in enumerate(data.columns) if c in used]
    frame = data.take(positions, axis=1)  # a copy (as data[columns], at a quarter of the cost)
    complete = frame.notna().to_numpy().all(axis=1)
    if not complete.all():
        warnings.warn(
            f"{int((~complete).sum())} of {len(data)} rows have missing values in the columns the "
            "model uses and were dropped (as R's na.omit does)",
            stacklevel=stacklevel + 1,
        )
        frame = frame.loc[complete]
    if len(frame) == 0:
        raise DataError("no rows are left once rows with missing values are dropped")
    return frame


def build_design(parsed: ParsedFormula, data: pd.DataFrame) -> Design:
    """Check the data and build y, X, and the random-effects terms for ``parsed``.

    Rows with a missing value in any column the formula uses are dropped with a warning (as R's
    na.omit); ``data`` itself is never modified.
    """
    require_frame(data)
    if not parsed.random:
        raise DataError(
            f"the formula {parsed.formula!r} has no random-effects term such as (1 | group); "
            "for a model with fixed effects only use ordinary least squares, "
            "e.g. statsmodels.formula.api.ols(formula, data).fit()"
        )
    response, fixed = parse_plain_response(parsed.response), parse_plain(parsed.fixed)
    exprs = [parse_plain(t.expr) for t in parsed.random]
    used = _used_columns(parsed, response, [fixed] + exprs)
    require_columns(data, sorted(used))
    frame = complete_rows(data, used, stacklevel=3)

    y, X, x_names, fixed_spec = _fixed_matrices(parsed, frame, response, fixed)
    if not np.all(np.isfinite(y)):
        raise DataError(
            f"the response {parsed.response!r} has {int((~np.isfinite(y)).sum())} non-finite values "
            "(e.g. log of 0); remove those rows or transform differently"
        )
    X, x_names, dropped = _drop_aliased(X, x_names)
    if dropped:
        warnings.warn(
            f"the fixed-effects model matrix is rank deficient, so {len(dropped)} column(s) were "
            f"dropped: {', '.join(dropped)}",
            stacklevel=3,
        )

    n = len(y)
    terms = []
    for t, expr in zip(parsed.random, exprs):
        codes, levels = factor_codes(frame, t.factors)
        terms.append(TermDesign(t, levels, codes, *_term_matrix(t, expr, frame)))
    # lme4 puts the terms in decreasing order of their number of levels (mkReTrms: rev(order(nl)),
    # applied only when some term has more levels than the one before it); theta follows.
    n_levels = [t.n_levels for t in terms]
    if any(b > a for a, b in zip(n_levels, n_levels[1:])):
        terms = [terms[i] for i in reversed(np.argsort(n_levels, kind="stable"))]
    for t in terms:
        if t.p == 0:
            raise DataError(f"the random-effects term ({t.term.expr} | {t.group}) has no columns")
        if t.n_levels < 2:
            raise DataError(
                f"grouping factors must have > 1 sampled level (as lme4 says): {t.group} has the single level "
                f"{t.levels[0]!r} in the rows used, so the variance of ({t.term.expr} | {t.group}) cannot be "
                f"estimated. Remove the term (the fixed intercept already covers one level), or use "
                f"data with several levels of {t.group}"
            )
        problems = []
        if t.n_levels * t.p >= n:
            problems.append(
                f"number of observations (={n}) <= number of random effects (={t.n_levels * t.p}) for "
                f"term ({t.term.expr} | {t.group}); the random-effects parameters and the residual "
                "variance are probably unidentifiable"
            )
        if t.n_levels >= n:
            problems.append(
                f"the grouping factor {t.group} has {t.n_levels} levels for {n} observations: each "
                "level must have replicates, since a term with one random effect per observation "
                "cannot be told apart from the residual error"
            )
        if problems:
            raise DataError("; ".join(problems) + ". Remove the term or use a coarser grouping factor.")
    design = Design(
        formula=parsed,
        y=y,
        X=X,
        x_names=tuple(x_names),
        terms=tuple(terms),
        model_frame=frame,
        dropped_columns=tuple(dropped),
    )
    if fixed_spec is not None:  # formulaic has built it already: fill the cache of Design.fixed_spec
        design.__dict__["fixed_spec"] = fixed_spec
    return design
