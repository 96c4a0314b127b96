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

import math
import warnings
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pandas.api.types import is_float_dtype
from scipy.linalg.lapack import dpotrf, dtrtri
from formulaic import Formula

from .checks import DataError, PredictorScaleWarning, RankDeficiencyWarning, require_columns
from .datasets import factor_levels, level_labels
from .formula import ParsedFormula, RandomTerm
from .model_frame import apply_spec, evaluate, formula_variables, kept_rows, model_frame_columns
from .plain_formula import PlainFormula, parse_plain, parse_plain_response, plain_columns, plain_response


def r_name(name: str) -> str:
    """formulaic's 'Intercept' is lme4's '(Intercept)'; other names stay as formulaic gives them."""
    return "(Intercept)" if name == "Intercept" else name


@dataclass(frozen=True, kw_only=True)
class TermDesign:
    """One random-effects term: its grouping factor, levels, and model matrix X_t."""

    term: RandomTerm
    levels: tuple[str, ...]
    codes: np.ndarray  # level index of each observation
    X: np.ndarray  # n x p_t
    columns: tuple[str, ...]
    spec: object = field(repr=False, default=None)  # formulaic ModelSpec; None for a plain numeric expr
    # the labels of each factor of the term, and the observed combinations as mixed-radix keys
    # (``interaction``), in the order of ``levels``: to find the levels of new data by value
    factor_labels: tuple[tuple[str, ...], ...] = field(repr=False, default=())
    level_keys: np.ndarray | None = field(repr=False, default=None)

    def level_index(self, data: pd.DataFrame) -> np.ndarray:
        """The index in ``levels`` of each row's level of the grouping factor, -1 for a level not
        seen in the fit. Levels are matched by value, factor by factor (3 and 3.0 are one level;
        labels containing ':' cannot collide)."""
        key = np.zeros(len(data), dtype=np.int64)
        known = np.ones(len(data), dtype=bool)
        for name, labels in zip(self.term.factors, self.factor_labels):
            position = pd.Index(labels).get_indexer(level_labels(data[name]))
            known &= position >= 0
            key = key * len(labels) + np.maximum(position, 0)
        index = np.minimum(np.searchsorted(self.level_keys, key), len(self.level_keys) - 1)
        return np.where(known & (self.level_keys[index] == key), index, -1)

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
        return apply_spec(self.spec, data)

    @property
    def group(self) -> str:
        return self.term.group

    # sizes, asked for many times in a fit: kept once worked out (a TermDesign does not change)
    @cached_property
    def n_levels(self) -> int:
        return len(self.levels)

    @cached_property
    def p(self) -> int:
        return self.X.shape[1]

    @cached_property
    def n_theta(self) -> int:
        return self.p * (self.p + 1) // 2

    @cached_property
    def Z(self) -> sp.csr_matrix:
        """The term's block Z_t of Z (n x l p_t): row i holds X_t[i, :] in the
        columns of its level.

        Built row by row (p_t entries a row), with no sort: Z_t' v gives the
        sums over each level's rows that the cross-products need, in one sparse
        product."""
        n, p = self.X.shape
        columns = (self.codes[:, None] * p + np.arange(p)).ravel()
        return sp.csr_matrix(
            (self.X.ravel(), columns, np.arange(0, n * p + 1, p)),
            shape=(n, self.n_levels * p),
        )

    @cached_property
    def lower(self) -> tuple[np.ndarray, np.ndarray]:
        """Row and column indices of the lower triangle, column by column (theta's order): the
        column indices of the upper triangle's entries row by row, and their row indices
        (``np.triu_indices(p)[::-1]``, written out: a few entries)."""
        entries = [(r, c) for c in range(self.p) for r in range(c, self.p)]
        return (np.array([r for r, _ in entries], dtype=np.intp), np.array([c for _, c in entries], dtype=np.intp))

    def template(self, theta_t: np.ndarray) -> np.ndarray:
        """The lower-triangular p_t x p_t factor T_t filled column by column from theta_t."""
        T = np.zeros((self.p, self.p))
        T[self.lower] = theta_t
        return T

    @property
    def theta_lower(self) -> np.ndarray:
        """lme4's lower bounds: 0 for the diagonal of T_t, -inf below it. A fitted theta keeps
        them (the diagonal is nonnegative), but the optimizer bounds only scalar terms (``optimizer._bounds``)."""
        rows, cols = self.lower
        return np.where(rows == cols, 0.0, -np.inf)

    @property
    def theta_start(self) -> np.ndarray:
        """lme4's starting value: T_t = I."""
        rows, cols = self.lower
        return (rows == cols).astype(float)


@dataclass(frozen=True, kw_only=True)
class Design:
    """Everything about a model that does not depend on the parameters."""

    formula: ParsedFormula
    y: np.ndarray  # the response minus the offset: what the criterion fits by X beta + Z b
    X: np.ndarray
    x_names: tuple[str, ...]
    terms: tuple[TermDesign, ...]
    # the rows of the user's data that were used and the columns the model uses (lme4's
    # model.frame); with_response keeps the original response here
    model_frame: pd.DataFrame = field(repr=False)
    dropped_columns: tuple[str, ...] = ()  # the aliased columns of X that were dropped (drop_aliased)
    offset: np.ndarray | None = field(repr=False, default=None)  # offset(...) terms summed; None if none
    # formulaic's ModelSpec of X when formulaic built X (None for a plain formula: ``fixed_spec``)
    formulaic_spec: object = field(repr=False, default=None)

    @property
    def response(self) -> np.ndarray:
        """The response as the user gave it: ``y`` plus the offset."""
        return self.y if self.offset is None else self.y + self.offset

    @property
    def fixed_variables(self) -> list[str]:
        """The columns the fixed part and the offsets use (what new data needs for ``re_form='~0'``)."""
        return formula_variables(self.formula.fixed, *self.formula.offsets)

    def offset_for(self, data: pd.DataFrame) -> np.ndarray:
        """The offset of rows of other data (prediction): the sum of the ``offset(...)`` terms, 0
        without them."""
        offset = _offset(self.formula, data, np.ones(len(data), dtype=bool))
        return np.zeros(len(data)) if offset is None else offset

    @property
    def row_index(self) -> pd.Index:
        """The labels of the rows of the user's data that were used."""
        return self.model_frame.index

    @cached_property
    def fixed_spec(self):
        """formulaic's ModelSpec of the fixed part, to rebuild X for new data: ``formulaic_spec``, or
        built when first needed for a plain formula."""
        if self.formulaic_spec is not None:
            return self.formulaic_spec
        return evaluate(_fixed_formula(self.formula), self.model_frame,
                        f"the fixed-effects model matrix for {self.formula.fixed!r}").rhs.model_spec

    @property
    def nobs(self) -> int:
        return len(self.y)

    def with_response(self, y: np.ndarray) -> "Design":
        """The same design for a new response y on the same rows (``LmerFit.refit``). A ModelSpec
        built already carries over (the rest of what a design caches is cheap), so a bootstrap's
        refits do not build it again."""
        built = self.__dict__.get("fixed_spec")  # cached_property's store: read, not written
        return replace(self, y=y, formulaic_spec=self.formulaic_spec if built is None else built)

    @cached_property
    def theta_slices(self) -> list[slice]:
        """Where each term's entries sit in theta."""
        out, start = [], 0
        for t in self.terms:
            out.append(slice(start, start + t.n_theta))
            start += t.n_theta
        return out

    @cached_property
    def effect_slices(self) -> list[slice]:
        """Where each term's random effects sit in u and b (Z's columns): term by term, then level
        by level with the term's p_t effects together."""
        out, start = [], 0
        for t in self.terms:
            out.append(slice(start, start + t.n_levels * t.p))
            start += t.n_levels * t.p
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
        """lme4's start, T_t = I in the units of ``theta_scale``: where ``lmer`` starts (after one EM
        step for a large model, ``optimizer.em_step``)."""
        return self.theta_start * self.theta_scale

    @cached_property
    def theta_scale(self) -> np.ndarray:
        """A typical size of each theta entry: T_t[r, c] multiplies column r of X_t, so its natural
        unit is 1 / rms(X_t[:, r]), rounded to a power of two (the optimizer's change of scale is
        then exact, and a column of unit size leaves theta as it is)."""
        scales = []
        for t in self.terms:
            if t.p == 1 and (t.X == 1.0).all():  # an intercept: rms 1 exactly (a sum of ones), scale 1
                scales.append(np.ones(1))
                continue
            rms = np.sqrt(np.mean(t.X**2, axis=0))
            rows, _ = t.lower
            scales.append(2.0 ** np.round(-np.log2(np.where(rms[rows] > 0, rms[rows], 1.0))))
        return np.concatenate(scales)

    @cached_property
    def q(self) -> int:
        """Number of random effects."""
        return sum(t.n_levels * t.p for t in self.terms)

    @cached_property
    def lambda_index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """lme4's ``Lind``: Lambda[rows[k], cols[k]] = theta[which[k]] for the nonzeros of Lambda."""
        rows, cols, which = [], [], []
        offset = 0
        for t, s in zip(self.terms, self.theta_slices):
            if t.p == 1:  # one entry a level, on the diagonal
                rows.append(offset + np.arange(t.n_levels))
                cols.append(rows[-1])
                which.append(np.full(t.n_levels, s.start))
                offset += t.n_levels
                continue
            r, c = t.lower  # lower triangle, column by column, as theta
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

    def term_effects(self, u: np.ndarray, theta: np.ndarray) -> list[np.ndarray]:
        """b = Lambda_theta u, term by term: for each term the (levels x p_t) array whose row j is
        T_t u_j, from the spherical effects u (ordered as Z's columns: term by term, level by level).
        b = Lambda u holds on the boundary too, where u = Lambda^{-1} b does not exist."""
        return [u[e].reshape(t.n_levels, t.p) @ t.template(theta[s]).T
                for t, s, e in zip(self.terms, self.theta_slices, self.effect_slices)]

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
        raise DataError(f"theta (or a start) of shape {out.shape} given, but this model has "
                         f"{design.theta_lower.size} covariance parameters: the lower triangles of its terms' "
                         "templates, column by column, as in fit.theta")
    if not np.all(np.isfinite(out)):
        raise DataError(f"theta (or a start) must be finite, got {out.tolist()}")
    for t, s in zip(design.terms, design.theta_slices):
        if t.p == 1:  # T_t = [theta_t]: negated if negative
            out[s] = np.abs(out[s])
            continue
        T = t.template(out[s])
        out[s] = (T * np.where(np.diag(T) < 0, -1.0, 1.0))[t.lower]
    return out + 0.0  # a negated zero becomes +0.0


def interaction(data: pd.DataFrame | dict[str, pd.Series], factors: tuple[str, ...], read: dict | None = None
                ) -> tuple[np.ndarray, tuple[str, ...], tuple[tuple[str, ...], ...], np.ndarray]:
    """The interaction of ``factors`` (``a:b``), observed levels only: each row's level index, the
    level labels, each factor's labels, and each level's mixed-radix key (``TermDesign.level_index``).

    Each column is a factor whatever its dtype; levels follow the column's categories if it is
    categorical, else R's order (see ``datasets``). Combined levels are ordered with the first
    factor varying slowest, and labelled ``"a1:b1"``. ``data`` may also be the frame's columns by
    name; ``read``: a dict in which to keep each column's ``factor_levels`` for the next call on the
    same ``data`` (nested terms share factors).
    """
    read = {} if read is None else read
    for name in factors:
        if name not in read:
            read[name] = factor_levels(data[name])
    per_factor = [read[name] for name in factors]
    if len(per_factor) == 1:  # one factor: its levels are the combinations, if every one is observed
        labels, codes = per_factor[0]
        present = np.bincount(codes, minlength=len(labels)) > 0
        if present.all():
            return codes.astype(np.intp), tuple(labels), (tuple(labels),), np.flatnonzero(present)
    # one integer per combination, first factor slowest (mixed radix): its observed values in
    # increasing order are the observed combinations in lexicographic order
    sizes = [len(labels) for labels, _ in per_factor]
    key = np.zeros(len(per_factor[0][1]) if per_factor else len(data), dtype=np.int64)
    for (_, codes), size in zip(per_factor, sizes):
        key = key * size + codes
    present = np.bincount(key, minlength=int(np.prod(sizes, dtype=np.int64))) > 0
    observed = np.flatnonzero(present)
    codes = (np.cumsum(present) - 1)[key]
    digits = np.unravel_index(observed, sizes)  # each observed combination's level of each factor
    parts = [np.asarray(labels, dtype=object)[d] for (labels, _), d in zip(per_factor, digits)]
    return (codes.astype(np.intp), tuple(map(":".join, zip(*parts))),
            tuple(tuple(labels) for labels, _ in per_factor), observed)


def factor_codes(data: pd.DataFrame, factors: tuple[str, ...]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Codes and level labels of the interaction of ``factors`` (see ``interaction``)."""
    codes, levels, _, _ = interaction(data, factors)
    return codes, levels


def _fixed_formula(parsed: ParsedFormula) -> Formula:
    """The fixed part with its response, for formulaic."""
    return Formula(f"{parsed.response} ~ {parsed.fixed}")


def column_space_coefficients(X: np.ndarray, X_small: np.ndarray) -> np.ndarray | None:
    """B with X B = X_small if every column of X_small lies in the column space of X (nested
    fixed effects), else None."""
    B, *_ = np.linalg.lstsq(X, X_small, rcond=None)
    if np.abs(X @ B - X_small).max(initial=0.0) > 1e-8 * max(1.0, np.abs(X_small).max(initial=0.0)):
        return None
    return B


RANK_TOLERANCE = 1e-7  # lme4's (R's qr tolerance)


def drop_aliased(X: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str], list[str]]:
    """Drop each column of X that is (numerically) a linear combination of the columns before it,
    as lme4 does: the later of two aliased columns goes.

    The test is scale invariant: column j is aliased when its residual on the columns kept before
    it is shorter than ``RANK_TOLERANCE`` times the column's own length, as in R's QR (LINPACK's
    dqrdc2), whatever the units. That is the diagonal |R_jj| of X D = QR, with D scaling each
    column to unit length; a column of zeros is aliased. The Cholesky factor of D X'X D is the
    same R, cheaper for a long X but accurate only to about 1e-8: it settles the clear cases
    (every |R_jj| above 1e3 times the tolerance), the QR the rest. D X'X D is X'X with its rows
    and columns divided by the lengths (one product of X, no scaled copy of it).
    """
    if not X.size:
        return X, names, []
    if X.shape[0] >= X.shape[1]:
        with np.errstate(all="ignore"):  # an overflow leaves the decision to the QR below
            gram = X.T @ X
        squares = gram.diagonal()
        # squared lengths far from under- and overflow, so that D X'X D is as accurate as the
        # product of the scaled columns (a zero column is left to the QR too)
        if squares.min() >= 1e-250 and squares.max() <= 1e250:
            if X.shape[1] == 1:  # D X'X D is 1 (to rounding), and so is R
                return X, names, []
            scale = 1.0 / np.sqrt(squares)
            R, info = dpotrf(gram * scale[:, None] * scale, lower=0)
            if info == 0 and np.all(np.abs(np.diag(R)) > 1e3 * RANK_TOLERANCE):
                return X, names, []
    lengths = np.sqrt(np.einsum("ij,ij->j", X, X))
    nonzero = lengths > 0
    if nonzero.all() and X.shape[0] >= X.shape[1]:
        scaled = X / lengths
        if np.all(np.abs(np.diagonal(np.linalg.qr(scaled, mode="r"))) > RANK_TOLERANCE):
            return X, names, []
    keep: list[int] = []
    for j in np.flatnonzero(nonzero):
        column = X[:, j] / lengths[j]
        if keep:
            kept = X[:, keep] / lengths[keep]
            coef, *_ = np.linalg.lstsq(kept, column, rcond=None)
            column = column - kept @ coef
        if np.linalg.norm(column) > RANK_TOLERANCE:
            keep.append(int(j))
    dropped = [names[j] for j in range(X.shape[1]) if j not in keep]
    return X[:, keep], [names[j] for j in keep], dropped


SCALE_RATIO = 1e3  # lme4's checkScaleX tolerance


def check_predictor_scales(X: np.ndarray, names: list[str], stacklevel: int) -> None:
    """lme4's check of the fixed-effects columns' scales: a ``PredictorScaleWarning`` when the
    standard deviations of the columns that are not 0/1 indicators differ by a factor above
    ``SCALE_RATIO``, or one of them is above it or below its inverse. Nothing is wrong with such
    a model, but its optimization and its printed estimates are easier on rescaled columns."""
    columns = X.T.copy()  # each column contiguous
    continuous = np.flatnonzero(~((columns == 0.0) | (columns == 1.0)).all(axis=1)).tolist()
    if not continuous or X.shape[0] < 2:
        return
    sd = np.std(X[:, continuous], axis=0, ddof=1)
    sd = sd[sd > 0]
    logs = np.log(sd)
    if sd.size and (np.ptp(logs) > np.log(SCALE_RATIO) or np.max(np.abs(logs)) > np.log(SCALE_RATIO)):
        shown = ", ".join(f"{names[j]} (sd {s:.3g})" for j, s in zip(continuous, np.std(X[:, continuous], axis=0,
                                                                                          ddof=1)))
        warnings.warn(f"some predictors are on very different scales: {shown}; consider rescaling them "
                      "(e.g. centre and divide by a round number, or use scale(x) in the formula)",
                      PredictorScaleWarning, stacklevel=stacklevel + 1)


def _fixed_matrices(parsed: ParsedFormula, frame: pd.DataFrame, complete: np.ndarray, response: tuple | None,
                    fixed: PlainFormula | None, columns: dict | None = None
                    ) -> tuple[np.ndarray, np.ndarray, list[str], object]:
    """y, X, X's column names and formulaic's ModelSpec of X: directly for a plain formula
    (``plain_formula``: ``response`` and ``fixed`` are its parsed parts, None if not plain;
    the ModelSpec is then None, built only if predict needs it), else by formulaic on every row
    of ``frame`` (``model_frame``), keeping the ``complete`` ones. ``columns``: the frame's columns
    as read, if every row is complete."""
    kept = frame if complete.all() else frame.loc[complete]
    y = plain_response(*response, kept if columns is None else columns) if response else None
    plain = plain_columns(fixed, kept, read=columns) if y is not None else None
    if plain is not None:
        return y, plain[0], [r_name(c) for c in plain[1]], None
    matrices = evaluate(_fixed_formula(parsed), frame, f"the fixed-effects model matrix for {parsed.fixed!r}")
    response = matrices.lhs
    if response.shape[1] != 1:
        raise DataError(
            f"the response {parsed.response!r} must be one numeric column, but it expands to "
            f"{response.shape[1]} columns ({', '.join(response.columns)}); is it a factor?"
        )
    return (kept_rows(response, complete).ravel(), kept_rows(matrices.rhs, complete),
            [r_name(c) for c in matrices.rhs.columns], matrices.rhs.model_spec)


def _term_matrix(term: RandomTerm, expr: PlainFormula | None, frame: pd.DataFrame, complete: np.ndarray,
                 kept: pd.DataFrame, read: dict | None = None) -> tuple[np.ndarray, tuple[str, ...], object]:
    """X_t, its column names and formulaic's ModelSpec (None when built directly: numeric columns
    only; ``expr`` is the term's parsed expression, None if not plain). ``kept``: the ``complete``
    rows of ``frame``; ``read``: their columns as read, if every row is complete."""
    plain = plain_columns(expr, kept, factors=False, read=read)
    if plain is not None:
        return plain[0], tuple(r_name(c) for c in plain[1]), None
    Xt = evaluate(term.expr, frame, f"the model matrix of ({term.expr} | {term.group})")
    return kept_rows(Xt, complete), tuple(r_name(c) for c in Xt.columns), Xt.model_spec


def _offset(parsed: ParsedFormula, frame: pd.DataFrame, complete: np.ndarray) -> np.ndarray | None:
    """The sum of the formula's ``offset(...)`` terms on the ``complete`` rows of ``frame`` (None if
    it has none); each must be one finite numeric column."""
    if not parsed.offsets:
        return None
    total = np.zeros(int(complete.sum()))
    for expr in parsed.offsets:
        values = kept_rows(evaluate(f"0 + I({expr})", frame, f"offset({expr})"), complete)
        if values.shape[1] != 1 or not np.all(np.isfinite(values)):
            raise DataError(f"offset({expr}) must be one numeric column with finite values in every row used")
        total += values[:, 0]
    return total


def _used_columns(parsed: ParsedFormula, response: tuple | None, parts: list[PlainFormula | None]) -> list[str]:
    """The names of the columns the formula's expressions use (not its grouping factors): read
    directly from a plain formula (its parsed ``response`` and ``parts``), else by
    ``model_frame.formula_variables``."""
    if response is not None and all(part is not None for part in parts) and not parsed.offsets:
        return [response[0], *(name for part in parts for name in part.variables)]
    return formula_variables(parsed.response, parsed.fixed, *parsed.offsets, *(t.expr for t in parsed.random))


def _require_finite_columns(X: np.ndarray, names, what: str) -> None:
    """Raise DataError naming the model-matrix columns with non-finite values (log of 0, say)."""
    if np.isfinite(X).all():
        return
    bad = ~np.isfinite(X).all(axis=0)
    if bad.any():
        shown = ", ".join(f"{name} ({int((~np.isfinite(X[:, j])).sum())} rows)" for j, name in enumerate(names)
                          if bad[j])
        raise DataError(f"the {what} has non-finite values (e.g. log of 0) in {shown}; remove those rows or "
                        "transform differently")


RESIDUAL_TOLERANCE = 1e-9  # relative: a residual this small is an exact fit


def _residual(target: np.ndarray, regressors: np.ndarray) -> float:
    """The length of the residual of ``target`` on the columns of ``regressors`` (least squares)."""
    if not regressors.size:
        return float(np.linalg.norm(target))
    coef, *_ = np.linalg.lstsq(regressors, target, rcond=None)
    return float(np.linalg.norm(target - regressors @ coef))


EPS = np.finfo(float).eps


def _clearly_above(target: np.ndarray, regressors: np.ndarray, threshold: float) -> bool:
    """True only if ``_residual(target, regressors)`` is surely above ``threshold``, judged from the
    Cholesky factor of a (k+1) x (k+1) Gram matrix instead of a least-squares fit of n rows; False
    when this cheap test cannot tell.

    Why it never says True where ``_residual`` would give at most ``threshold``: let A = [X, t] (X the
    k regressors, t the target) and D scale A's columns to unit length. The computed factor R of
    D A'A D is the exact factor of D A'A D + E, ||E|| <= e = 2 (k+1)(n+k+6) eps (the rounding of the
    products and of the factorization, for unit columns far from under- and overflow). R_tt^2 is the
    Schur complement of t there; the exact one, r^2 / ||t||^2 (r: the least-squares residual of t on
    X), is at least R_tt^2 - e (1 + ||z||^2), z the minimizer in the scaled units, ||z|| <= 1 /
    sigma_min(XD), and sigma_min(XD)^2 >= 1/B^2 - e >= 1/(2 B^2) for B >= ||R_xx^-1|| (1.1 times the
    Frobenius norm of the computed inverse) when e B^2 <= 1/2. That gives r >= r_low.
    ``_residual`` returns the computed norm of t - X c for lstsq's c; exactly, ||t - X c|| >= r for
    any c, and rounding (gamma = 2 (k+2) eps) moves it by at most gamma (||t|| + sum_j |c_j| ||x_j||),
    where the sum is at most 1.5 sqrt(k) B ||X c|| <= 1.5 sqrt(k) B (||t|| + ||t - X c||). So a result
    <= threshold means r <= 4 threshold + 2 gamma (1 + 1.5 sqrt(k) B) ||t|| when gamma 1.5 sqrt(k) B
    <= 1/2; True needs r_low above twice that. Columns of zeros are left out (they change neither
    r nor X c); any other doubt (a long, ill-conditioned or badly scaled A) answers False.
    """
    n, k = regressors.shape
    if k == 1:  # in scalars: D A'A D = [[1, rho], [rho, 1]], R_xx = 1, R_tt^2 = 1 - rho^2 (cheaper than lstsq)
        x = regressors[:, 0]
        with np.errstate(all="ignore"):  # an overflow makes the test undecided (below), not a warning
            xx, xt, tt = float(x @ x), float(x @ target), float(target @ target)
        if not 1e-250 <= tt <= 1e250:
            return False
        if xx == 0 and not x.any():
            return _bound_above(1.0, 0.0, 0, n, math.sqrt(tt), threshold)
        if not 1e-250 <= xx <= 1e250:
            return False
        rho = xt / math.sqrt(xx) / math.sqrt(tt)
        return _bound_above(1.0 - rho * rho, 1.1, 1, n, math.sqrt(tt), threshold)
    if not k or n * (k + 1) ** 2 < 10_000:  # lstsq itself is as cheap for a small X
        return False
    gram = np.empty((k + 1, k + 1))
    with np.errstate(all="ignore"):
        gram[:k, :k] = regressors.T @ regressors
        gram[:k, k] = gram[k, :k] = regressors.T @ target
        gram[k, k] = target @ target
    squares = gram.diagonal()
    if squares[:k].min() == 0:  # a sum of squares is 0 for a column of zeros, or of tiny values
        zero = squares[:k] == 0
        if regressors[:, zero].any():
            return False
        used = np.append(~zero, True)
        k, gram = k - int(zero.sum()), gram[np.ix_(used, used)]
        squares = gram.diagonal()
    if not (squares.min() >= 1e-250 and squares.max() <= 1e250):
        return False
    length = math.sqrt(squares[k])  # ||t||
    if not k:  # only columns of zeros: r = ||t||, and X c = 0
        return _bound_above(1.0, 0.0, 0, n, length, threshold)
    scale = 1.0 / np.sqrt(squares)
    R, info = dpotrf(gram * scale[:, None] * scale, lower=0)
    if info != 0:
        return False
    inverse, info = dtrtri(R[:k, :k], lower=0)
    return info == 0 and _bound_above(R[k, k] ** 2, 1.1 * math.sqrt(np.sum(inverse * inverse)), k, n, length,
                                      threshold)


def _bound_above(r_tt2: float, bound: float, k: int, n: int, length: float, threshold: float) -> bool:
    """The end of ``_clearly_above``: whether r_low is above twice the most that a residual of at
    most ``threshold`` found by lstsq allows, given R_tt^2 (``r_tt2``), B (``bound``; 0 when there
    are no regressors) and ||t|| (``length``), for k regressors and n rows."""
    e, gamma = 2 * (k + 1) * (n + k + 6) * EPS, 2 * (k + 2) * EPS
    c = 1.5 * math.sqrt(k) * bound
    if not (n * EPS < 1e-3 and e * bound**2 <= 0.5 and gamma * c <= 1e-3):
        return False
    r_low = math.sqrt(max(r_tt2 - e * (1 + 2.1 * bound**2), 0.0)) * length
    return bool(r_low > 2 * (4 * threshold + 2 * gamma * (1 + c) * length))


LONG_DESIGN = 20_000  # n p (p + m) from which sparse products with Z_t beat one np.bincount per entry


def _level_cross_products(t: TermDesign, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """X_t'X_t and X_t' values (n x m) over each level's rows: (levels x p x p) and (levels x p x m)
    arrays, bit for bit as np.add.at of the rows' products makes them. Both ways below add the same
    products in the same order (row after row, one rounding each): one np.bincount per entry, or for
    a long design Z_t' X_t and Z_t' values (scipy's sparse product; Z_t is kept for the criterion).
    A sum that is not finite is made again by np.add.at, which warns of the overflow as it always did."""
    n_levels, p, m = t.n_levels, t.p, values.shape[1]
    with np.errstate(all="ignore"):
        if len(t.codes) * p * (p + m) >= LONG_DESIGN:
            blocks = (t.Z.T @ t.X).reshape(n_levels, p, p)
            right = (t.Z.T @ values).reshape(n_levels, p, m)
        else:
            columns, others = t.X.T.copy(), values.T.copy()  # each column contiguous
            blocks, right = np.empty((n_levels, p, p)), np.empty((n_levels, p, m))
            for j in range(p):
                for k in range(j, p):  # x_j x_k = x_k x_j exactly: the blocks are symmetric bit for bit
                    blocks[:, j, k] = blocks[:, k, j] = np.bincount(t.codes, weights=columns[j] * columns[k],
                                                                    minlength=n_levels)
                for k in range(m):
                    right[:, j, k] = np.bincount(t.codes, weights=columns[j] * others[k], minlength=n_levels)
    if not (np.isfinite(blocks).all() and np.isfinite(right).all()):
        blocks, right = np.zeros((n_levels, p, p)), np.zeros((n_levels, p, m))
        np.add.at(blocks, t.codes, t.X[:, :, None] * t.X[:, None, :])
        np.add.at(right, t.codes, t.X[:, :, None] * values[:, None, :])
    return blocks, right


def _project_off(values: np.ndarray, t: TermDesign) -> np.ndarray:
    """``values`` (n x m) minus their least-squares fit on the term's Z_t: each level's fit on its own
    rows (Z_t'Z_t is block diagonal), with np.linalg.pinv of each level's X_t'X_t."""
    blocks, right = _level_cross_products(t, values)
    if t.p == 1 and blocks.min() >= 1e-100 and blocks.max() <= 1e100:
        # pinv of a 1 x 1 block b > 0 is 1/b, bit for bit in this range (outside it LAPACK's SVD
        # rescales); a product with one term is the same in matmul and einsum
        return values - t.X * ((1.0 / blocks) * right)[t.codes, 0]
    coef = np.linalg.pinv(blocks) @ right  # each level's least-squares fit on its own rows
    if t.p == 2 and len(t.codes) * 2 * (2 + values.shape[1]) >= LONG_DESIGN:
        # each fitted value is x_0 c_0 + x_1 c_1: one sum of two rounded products, whichever adds
        # it, einsum over the gathered coefficients or scipy's product with Z_t
        return values - t.Z @ coef.reshape(t.n_levels * 2, values.shape[1])
    return values - np.einsum("ij,ijk->ik", t.X, coef[t.codes])


def _require_residual_variation(y: np.ndarray, X: np.ndarray, terms: list[TermDesign], response: str) -> None:
    """Raise DataError when the response leaves no residual variation: a constant response, or one
    that the fixed effects alone, or with the random effects of one term, fit exactly. The
    residual variance would be 0 and the criterion unbounded (lme4 gives nonsense there).

    The residual of y on [X, Z_t] comes from Frisch-Waugh-Lovell: y and X are first projected off
    Z_t level by level (``_project_off``), then y's residual is regressed on X's. A residual is
    computed (``_residual``) only when the cheap ``_clearly_above`` cannot tell that it is large."""
    spread = np.linalg.norm(y - y.mean())
    if spread == 0 or spread <= 1e-14 * np.linalg.norm(y):
        raise DataError(f"the response {response!r} is constant ({y[0]:g} in every row used), so the model "
                        "has nothing to explain and its variances are not identifiable")
    threshold = RESIDUAL_TOLERANCE * spread

    def exact_fit(target: np.ndarray, regressors: np.ndarray) -> bool:
        return not _clearly_above(target, regressors, threshold) and _residual(target, regressors) <= threshold

    if exact_fit(y, X):
        raise DataError(f"the fixed effects fit the response {response!r} exactly (no residual variation), so "
                        "the residual variance is 0 and the model is not identifiable; check that the "
                        "response is not computed from the predictors")
    both = np.column_stack([y, X])
    for t in terms:
        projected = _project_off(both, t)
        if exact_fit(projected[:, 0], projected[:, 1:]):
            raise DataError(
                f"the fixed effects and the random effects of ({t.term.expr} | {t.group}) fit the response "
                f"{response!r} exactly (no variation left within the levels of {t.group}), so the residual "
                "variance is 0 and the model is not identifiable; remove the term or check the response")


def build_design(parsed: ParsedFormula, data: pd.DataFrame, *, stacklevel: int = 2,
                 check_response: bool = True) -> Design:
    """Check the data and build y, X, and the random-effects terms for ``parsed``.

    The model frame (``model_frame``) keeps the rows with no missing value in a column the formula
    uses (warning of the others, as R's na.omit); ``data`` itself is never modified. Aliased
    columns of X are dropped with a warning (``drop_aliased``), and a response with no residual
    variation is an error (unless not ``check_response``: a placeholder response for simulation).
    Warnings are issued ``stacklevel`` levels above the caller (2: the caller's caller).
    """
    if not parsed.random:
        raise DataError(
            f"the formula {parsed.formula!r} has no random-effects term such as (1 | group); "
            "for a model with fixed effects only use ordinary least squares, "
            "e.g. statsmodels.formula.api.ols(formula, data).fit()"
        )
    response, fixed = parse_plain_response(parsed.response), parse_plain(parsed.fixed)
    exprs = [parse_plain(t.expr) for t in parsed.random]
    frame, complete, read = model_frame_columns(data, _used_columns(parsed, response, [fixed] + exprs),
                                                groups=[f for t in parsed.random for f in t.factors],
                                                stacklevel=stacklevel + 1)
    every_row = bool(complete.all())
    as_read = read if every_row else None  # the frame's columns as read, when it is the frame used

    y, X, x_names, fixed_spec = _fixed_matrices(parsed, frame, complete, response, fixed, as_read)
    if not np.all(np.isfinite(y)):
        raise DataError(
            f"the response {parsed.response!r} has {int((~np.isfinite(y)).sum())} non-finite values "
            "(e.g. log of 0); remove those rows or transform differently"
        )
    _require_finite_columns(X, x_names, "fixed-effects model matrix")
    offset = _offset(parsed, frame, complete)
    if offset is not None:
        y = y - offset
    X, x_names, dropped = drop_aliased(X, x_names)
    if dropped:
        warnings.warn(
            f"the fixed-effects model matrix is rank deficient, so {len(dropped)} column(s) were "
            f"dropped: {', '.join(dropped)}",
            RankDeficiencyWarning, stacklevel=stacklevel + 1,
        )
    check_predictor_scales(X, x_names, stacklevel=stacklevel + 1)
    frame_all, frame = frame, (frame if every_row else frame.loc[complete])

    n = len(y)
    terms, factors = [], {}
    for t, expr in zip(parsed.random, exprs):
        codes, levels, labels, keys = interaction(frame if as_read is None else as_read, t.factors, factors)
        Xt, columns, spec = _term_matrix(t, expr, frame_all, complete, frame, as_read)
        _require_finite_columns(Xt, columns, f"model matrix of ({t.expr} | {t.group})")
        terms.append(TermDesign(term=t, levels=levels, codes=codes, X=Xt, columns=columns, spec=spec,
                                factor_labels=labels, level_keys=keys))
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
    if check_response:
        _require_residual_variation(y, X, terms, parsed.response)
    design = Design(
        formula=parsed,
        y=y,
        X=X,
        x_names=tuple(x_names),
        terms=tuple(terms),
        model_frame=frame,
        dropped_columns=tuple(dropped),
        offset=offset,
        formulaic_spec=fixed_spec,
    )
    return design
