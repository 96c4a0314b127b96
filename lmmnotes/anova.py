r"""ANOVA (method-of-moments) estimators of variance components.

The one-way random-effects model is

.. math::  y_{ij} = \mu + \alpha_i + \varepsilon_{ij},\qquad
           \alpha_i \sim N(0, \sigma_\alpha^2),\ \varepsilon_{ij} \sim N(0, \sigma^2),

for groups :math:`i = 1, \dots, a` with :math:`n_i` observations each, :math:`N = \sum n_i`.
The total sum of squares splits as SST = SSA + SSE, and

.. math::  E(\mathrm{MSE}) = \sigma^2, \qquad E(\mathrm{MSA}) = \sigma^2 + n_0 \sigma_\alpha^2,

with :math:`n_0 = n` for balanced data and, in general,
:math:`n_0 = \bigl(N - \sum_i n_i^2 / N\bigr) / (a - 1)`.  Equating mean squares to their
expectations gives the ANOVA estimators
:math:`\hat\sigma^2 = \mathrm{MSE}` and :math:`\hat\sigma_\alpha^2 = (\mathrm{MSA} - \mathrm{MSE}) / n_0`.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from .checks import DataError, drop_incomplete_rows, require_columns, require_finite, require_frame, require_numeric
from .design import factor_codes


@dataclass(frozen=True)
class OneWayAnova:
    """The ANOVA table and variance-component estimates of a one-way random-effects model.

    ``sigma2_group = (msa - mse) / n0`` and ``sigma2_resid = mse``;
    ``icc = sigma2_group / (sigma2_group + sigma2_resid)``.  ``negative`` is True when
    MSA < MSE, i.e. the raw estimate of ``sigma2_group`` is below zero; ``truncated`` says
    whether it was then set to 0 (``one_way(..., truncate=True)``).
    """

    response: str
    group: str
    nobs: int
    n_groups: int
    group_sizes: pd.Series
    balanced: bool
    n0: float
    ssa: float
    sse: float
    sst: float
    df_group: int
    df_resid: int
    msa: float
    mse: float
    f_value: float
    p_value: float
    sigma2_group: float
    sigma2_resid: float
    icc: float
    negative: bool
    truncated: bool

    @property
    def table(self) -> pd.DataFrame:
        """The ANOVA table: rows group, residual and total; columns df, SS, MS, F, p-value."""
        return pd.DataFrame(
            {
                "df": [self.df_group, self.df_resid, self.df_group + self.df_resid],
                "sum_sq": [self.ssa, self.sse, self.sst],
                "mean_sq": [self.msa, self.mse, np.nan],
                "F": [self.f_value, np.nan, np.nan],
                "p_value": [self.p_value, np.nan, np.nan],
            },
            index=pd.Index([self.group, "Residual", "Total"], name="source"),
        )

    def __repr__(self) -> str:
        flag = " (negative: MSA < MSE" + (", truncated to 0)" if self.truncated else ")") if self.negative else ""
        return (
            f"One-way ANOVA of {self.response!r} by {self.group!r}: {self.nobs} observations in "
            f"{self.n_groups} groups ({'balanced' if self.balanced else f'unbalanced, n0 = {self.n0:.4g}'})\n"
            f"{self.table.round(4).to_string()}\n"
            f"sigma2_group = {self.sigma2_group:.4g}{flag}, sigma2_resid = {self.sigma2_resid:.4g}, "
            f"icc = {self.icc:.4g}"
        )


# ---- arguments and the missing-value policy shared by the three tables -------------------------------
def _column_name(name: str, value) -> None:
    """A DataError unless ``value`` can name one column (a list of one name is shown unwrapped)."""
    if isinstance(value, (list, pd.Index, np.ndarray, pd.Series)):
        items = list(value)
        fix = f"; pass {name}={items[0]!r}" if len(items) == 1 else ""
        raise DataError(f"{name} must be the name of one column, got {type(value).__name__} {items!r}{fix}")
    if not isinstance(value, Hashable):
        raise DataError(f"{name} must be the name of one column, got {type(value).__name__} {value!r}")


def _column_list(name: str, value, example: str) -> list:
    """``value`` as a list of column names; a single string (which would be read letter by letter)
    or anything that is not a list-like of names is a DataError that shows the fix."""
    if isinstance(value, str):
        raise DataError(f"{name} must be a list of column names, got the string {value!r}; pass {name}=[{value!r}]")
    if isinstance(value, bytes) or not isinstance(value, (Sequence, pd.Index, np.ndarray, pd.Series)):
        raise DataError(f"{name} must be a list of column names, e.g. {name}={example}, got "
                        f"{type(value).__name__} {value!r}")
    items = list(value)
    for item in items:
        _column_name(f"each entry of {name}", item)
    repeated = sorted({str(c) for c in items if items.count(c) > 1})
    if repeated:
        raise DataError(f"{name} names {', '.join(map(repr, repeated))} more than once; give each column once, "
                        f"e.g. {name}={list(dict.fromkeys(items))!r}")
    return items


def _usable_rows(data: pd.DataFrame, columns: list, response: str) -> pd.DataFrame:
    """The used ``columns`` of the complete rows of ``data`` (a copy; the one missing-value policy:
    incomplete rows are dropped with a MissingValuesWarning pointing at the caller of the table's
    function), after checking the frame, the columns and the numeric, finite response."""
    require_frame(data)
    require_columns(data, columns)
    require_numeric(data, response)
    frame = drop_incomplete_rows(data, columns, stacklevel=3)  # the table's function, then its caller
    require_finite(frame, columns)
    return frame


@contextmanager
def _after_dropping(data: pd.DataFrame, frame: pd.DataFrame) -> Iterator[None]:
    """A DataError raised inside (an unbalanced design, a single group) says that it concerns the
    data left after incomplete rows were dropped, when some were."""
    try:
        yield
    except DataError as error:
        dropped = len(data) - len(frame)
        if not dropped:
            raise
        raise DataError(f"{error} (this is the design of the {len(frame)} complete rows: {dropped} of {len(data)} "
                        "rows had missing values and were dropped)") from None


def one_way(data: pd.DataFrame, response: str, group: str, *, truncate: bool = False) -> OneWayAnova:
    """ANOVA estimates of the variance components of ``response ~ 1 + (1 | group)``.

    Parameters
    ----------
    data : DataFrame with the two columns; it is not modified.
    response : name of the numeric response column.
    group : name of the grouping column (any dtype; treated as a factor, unused
        categorical levels are ignored).
    truncate : if True, a negative estimate of the group variance is replaced by 0 (and
        the intraclass correlation becomes 0).  The default reports it as computed, with
        ``negative=True``, because the sign itself is informative: MSA < MSE.

    Unbalanced groups are allowed: the estimator then uses
    ``n0 = (N - sum(n_i**2) / N) / (a - 1)`` in place of the common group size, which keeps
    ``(MSA - MSE) / n0`` unbiased.  Groups with a single observation are allowed as long
    as some group is replicated.

    Rows with a missing value in either column are dropped with a ``MissingValuesWarning`` (as R's
    ``na.omit``); infinite responses are a DataError.
    """
    _column_name("response", response)
    _column_name("group", group)
    frame = _usable_rows(data, [response, group], response)
    with _after_dropping(data, frame):
        return _one_way(frame, response, group, truncate)


def _one_way(data: pd.DataFrame, response: str, group: str, truncate: bool) -> OneWayAnova:
    y = data[response].to_numpy(dtype=float)
    codes, levels = factor_codes(data, (group,))  # the package's one factor coding
    a = len(levels)
    if a < 2:
        raise DataError(
            f"the grouping column {group!r} has {a} level(s); a one-way model needs at least 2 groups"
        )
    n_i = np.bincount(codes, minlength=a).astype(float)
    N = len(y)
    if N == a:
        raise DataError(
            f"every group of {group!r} has a single observation, so there is no replication and "
            "the within-group variance cannot be estimated; the one-way model needs some groups "
            "with two or more observations"
        )

    group_means = np.bincount(codes, weights=y, minlength=a) / n_i
    grand_mean = y.mean()
    sse = float(np.sum((y - group_means[codes]) ** 2))
    ssa = float(np.sum(n_i * (group_means - grand_mean) ** 2))
    sst = float(np.sum((y - grand_mean) ** 2))
    df_group, df_resid = a - 1, N - a
    msa, mse = ssa / df_group, sse / df_resid
    f_value = msa / mse if mse > 0 else np.inf
    p_value = float(stats.f.sf(f_value, df_group, df_resid))
    n0 = (N - np.sum(n_i**2) / N) / (a - 1)

    sigma2_group = (msa - mse) / n0
    negative = bool(sigma2_group < 0)
    if negative and truncate:
        sigma2_group = 0.0
    total = sigma2_group + mse
    icc = sigma2_group / total if total != 0 else np.nan

    return OneWayAnova(
        response=response,
        group=group,
        nobs=N,
        n_groups=a,
        group_sizes=pd.Series(n_i.astype(int), index=pd.Index(levels, name=group), name="n"),
        balanced=bool(np.all(n_i == n_i[0])),
        n0=float(n0),
        ssa=ssa,
        sse=sse,
        sst=sst,
        df_group=df_group,
        df_resid=df_resid,
        msa=float(msa),
        mse=float(mse),
        f_value=float(f_value),
        p_value=p_value,
        sigma2_group=float(sigma2_group),
        sigma2_resid=float(mse),
        icc=float(icc),
        negative=negative,
        truncated=negative and truncate,
    )


def balanced_mean_squares(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MSA and MSE of balanced one-way layouts stored as an array of shape (..., a, n).

    The last two axes are groups and replicates; leading axes index independent data sets,
    so a whole Monte Carlo study is one call:
    ``MSA = n * sum_i (ybar_i - ybar)^2 / (a - 1)``, ``MSE = sum_ij (y_ij - ybar_i)^2 / (a (n - 1))``.
    """
    y = np.asarray(y, dtype=float)
    if y.ndim < 2 or y.shape[-2] < 2 or y.shape[-1] < 2:
        raise ValueError(f"y must have shape (..., a, n) with a >= 2 and n >= 2, got {y.shape}")
    a, n = y.shape[-2:]
    group_means = y.mean(axis=-1)
    grand_mean = group_means.mean(axis=-1, keepdims=True)
    msa = n * np.sum((group_means - grand_mean) ** 2, axis=-1) / (a - 1)
    mse = np.sum((y - group_means[..., None]) ** 2, axis=(-2, -1)) / (a * (n - 1))
    return msa, mse


def prob_negative(icc: float | np.ndarray, a: int, n: int) -> float | np.ndarray:
    r"""Exact probability that the balanced ANOVA estimate of :math:`\sigma_\alpha^2` is negative.

    Under the normal one-way model, :math:`\mathrm{MSA}/\mathrm{MSE} = (1 + n\gamma) F` with
    :math:`\gamma = \sigma_\alpha^2/\sigma^2 = \rho / (1 - \rho)` and
    :math:`F \sim F_{a-1,\,a(n-1)}`, so
    :math:`P(\mathrm{MSA} < \mathrm{MSE}) = P\{F < 1 / (1 + n\gamma)\}`.
    """
    icc = np.asarray(icc, dtype=float)
    if np.any((icc < 0) | (icc >= 1)):
        raise ValueError("icc must lie in [0, 1)")
    gamma = icc / (1 - icc)
    result = stats.f.cdf(1 / (1 + n * gamma), a - 1, a * (n - 1))
    return float(result) if result.ndim == 0 else result


def estimator_variance(icc: float | np.ndarray, a: int, n: int, *, total: float = 1.0) -> float | np.ndarray:
    r"""Exact variance of the balanced ANOVA estimator :math:`(\mathrm{MSA} - \mathrm{MSE})/n`.

    Under the normal one-way model :math:`\mathrm{SSA}/(\sigma^2 + n\sigma_\alpha^2) \sim \chi^2_{a-1}`
    and :math:`\mathrm{SSE}/\sigma^2 \sim \chi^2_{a(n-1)}`, independently, and a chi-square with
    :math:`k` degrees of freedom has variance :math:`2k`, so

    .. math::  \operatorname{Var}(\hat\sigma_\alpha^2) = \frac{2}{n^2}\left[
               \frac{(\sigma^2 + n\sigma_\alpha^2)^2}{a-1} + \frac{\sigma^4}{a(n-1)}\right].

    The components are given by the intraclass correlation ``icc`` and the total variance
    ``total`` :math:`= \sigma_\alpha^2 + \sigma^2`: :math:`\sigma_\alpha^2 = \rho\,\text{total}`,
    :math:`\sigma^2 = (1 - \rho)\,\text{total}`. The estimator is unbiased (not truncated), so
    this is also its mean squared error.
    """
    icc = np.asarray(icc, dtype=float)
    if np.any((icc < 0) | (icc >= 1)):
        raise ValueError(f"icc is the share of the total variance between groups and must lie in [0, 1); got {icc}")
    if a < 2 or n < 2:
        raise ValueError(f"the balanced one-way design needs a >= 2 groups of n >= 2 observations, got a = {a}, n = {n}")
    if not total > 0:
        raise ValueError(f"total is the variance sigma_alpha^2 + sigma^2 and must be positive; got {total}")
    sigma2_group, sigma2 = icc * total, (1 - icc) * total
    result = 2 / n**2 * ((sigma2 + n * sigma2_group) ** 2 / (a - 1) + sigma2**2 / (a * (n - 1)))
    return float(result) if result.ndim == 0 else result


# ---- balanced nested designs of any depth -----------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class NestedAnova:
    r"""ANOVA table and method-of-moments variance components of a balanced nested design.

    For factors :math:`A_1 \supset A_2 \supset \dots \supset A_K` (each level of :math:`A_k`
    inside one level of :math:`A_{k-1}`) and :math:`w_k` observations per level of :math:`A_k`,

    .. math::  E(\mathrm{MS}_k) = \sigma^2 + \sum_{j \ge k} w_j \sigma_j^2, \qquad
               \hat\sigma_k^2 = (\mathrm{MS}_k - \mathrm{MS}_{k+1}) / w_k,

    with :math:`\mathrm{MS}_{K+1}` the residual mean square :math:`\hat\sigma^2`. Each F statistic
    is a mean square over the one below it, the ratio whose expectation is 1 when
    :math:`\sigma_k^2 = 0`.
    """

    response: str
    factors: tuple[str, ...]  # the nested terms, outermost first, e.g. ("Lab", "Lab:Technician")
    table: pd.DataFrame  # df, sum_sq, mean_sq, F, p_value, EMS for each term and the residual
    components: pd.Series  # variance component estimates, the residual last
    per_level: tuple[int, ...]  # w_k, observations per level of each factor
    negative: tuple[str, ...]  # terms whose raw estimate was below zero

    def __repr__(self) -> str:
        note = f"\nnegative estimates: {', '.join(self.negative)}" if self.negative else ""
        return (f"Nested ANOVA of {self.response!r}\n{self.table.round(6).to_string()}\n"
                f"variance components:\n{self.components.round(6).to_string()}{note}")


def _unit_codes(data: pd.DataFrame, factors: list[str]) -> list[np.ndarray]:
    """Codes of the units at each depth: the level of a factor *within* all factors above it."""
    return [factor_codes(data, tuple(factors[:k + 1]))[0] for k in range(len(factors))]


def nested(data: pd.DataFrame, response: str, factors: list[str], *, truncate: bool = False) -> NestedAnova:
    """ANOVA (expected mean squares) estimates for a balanced nested design of any depth.

    Parameters
    ----------
    data : DataFrame with the response and factor columns; not modified.
    response : numeric response column.
    factors : the nesting factors, outermost first, e.g. ``["Lab", "Technician", "Sample"]``.
        Labels may repeat across parents (technician "one" in every lab): units are identified
        by their whole path, so ``Technician`` means ``Lab:Technician``.
    truncate : set negative variance estimates to 0.

    The design must be balanced: the same number of units inside every unit of the level above,
    and the same number of replicates in every unit of the last factor. Otherwise the mean
    squares have no simple expectations; fit the model by REML with ``lmer`` instead.

    Rows with a missing value in the response or a factor are dropped with a
    ``MissingValuesWarning`` (as R's ``na.omit``); the design left must still be balanced.
    Infinite responses are a DataError.
    """
    _column_name("response", response)
    factors = _column_list("factors", factors, "['Lab', 'Technician']")
    if not factors:
        raise DataError("give at least one nesting factor, e.g. factors=['Lab', 'Technician']")
    if response in factors:
        raise DataError(f"the response {response!r} is also listed in factors={factors!r}; remove it from factors")
    frame = _usable_rows(data, [response, *factors], response)
    with _after_dropping(data, frame):
        return _nested(frame, response, factors, truncate)


def _nested(data: pd.DataFrame, response: str, factors: list, truncate: bool) -> NestedAnova:
    y = data[response].to_numpy(dtype=float)
    N = len(y)
    codes = _unit_codes(data, factors)
    names = [":".join(factors[:k + 1]) for k in range(len(factors))]
    n_units = [int(c.max()) + 1 for c in codes]
    # children per parent must be constant at every depth, and replicates per finest unit too
    parents = [np.zeros(N, dtype=int)] + codes[:-1]
    per_parent = []
    for k, (parent, child) in enumerate(zip(parents, codes)):
        pairs = pd.DataFrame({"parent": parent, "child": child}).drop_duplicates()
        counts = pairs.groupby("parent").size()
        if counts.nunique() != 1:
            raise DataError(f"the design is unbalanced: the number of {factors[k]!r} levels differs between units of "
                            f"{'the data' if k == 0 else names[k - 1]!r} ({sorted(counts.unique().tolist())}); "
                            "expected mean squares need balanced data - fit the model by REML with lmmnotes.lmer")
        if counts.iloc[0] < 2:
            raise DataError(f"each unit of {'the data' if k == 0 else names[k - 1]!r} holds a single {factors[k]!r} level, "
                            f"so {names[k]!r} cannot be separated from the level above; drop it from factors")
        per_parent.append(int(counts.iloc[0]))
    replicates = np.bincount(codes[-1])
    if np.unique(replicates).size != 1:
        raise DataError(f"the design is unbalanced: the units of {names[-1]!r} have {sorted(set(replicates.tolist()))} "
                        "observations; expected mean squares need balanced data - fit by REML with lmmnotes.lmer")
    if replicates[0] < 2:
        raise DataError(f"each unit of {names[-1]!r} has a single observation, so its variance cannot be separated "
                        "from the residual; drop the last factor")
    per_level = [N // n for n in n_units]  # w_k
    means = [np.bincount(c, weights=y) / np.bincount(c) for c in codes]
    parent_means = [np.full(n_units[0], y.mean())] + means[:-1]
    parent_of = [np.zeros(n_units[0], dtype=int)] + [
        pd.Series(parents[k]).groupby(codes[k]).first().to_numpy() for k in range(1, len(factors))]
    ss = [float(w * np.sum((m - pm[po]) ** 2)) for w, m, pm, po in zip(per_level, means, parent_means, parent_of)]
    df = [n_units[0] - 1] + [n_units[k] - n_units[k - 1] for k in range(1, len(factors))]
    ss_resid = float(np.sum((y - means[-1][codes[-1]]) ** 2))
    df_resid = N - n_units[-1]
    ms = [s / d for s, d in zip(ss, df)] + [ss_resid / df_resid]
    below = ms[1:]
    F = [m / b if b > 0 else np.inf for m, b in zip(ms[:-1], below)]
    p = [float(stats.f.sf(f, d1, d2)) for f, d1, d2 in zip(F, df, df[1:] + [df_resid])]
    raw = [(ms[k] - ms[k + 1]) / per_level[k] for k in range(len(factors))]
    negative = tuple(n for n, v in zip(names, raw) if v < 0)
    estimates = [max(v, 0.0) if truncate else v for v in raw] + [ms[-1]]
    ems = [" + ".join(["sigma2"] + [f"{per_level[j]} sigma2[{names[j]}]" for j in range(len(factors) - 1, k - 1, -1)])
           for k in range(len(factors))] + ["sigma2"]
    table = pd.DataFrame({"df": df + [df_resid], "sum_sq": ss + [ss_resid], "mean_sq": ms, "F": F + [np.nan],
                          "p_value": p + [np.nan], "EMS": ems}, index=pd.Index(names + ["Residual"], name="source"))
    components = pd.Series(estimates, index=pd.Index(names + ["Residual"], name="component"), name="variance")
    return NestedAnova(response=response, factors=tuple(names), table=table, components=components,
                       per_level=tuple(per_level), negative=negative)


# ---- the split-plot design ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SplitPlotAnova:
    r"""The two-stratum ANOVA of a balanced split-plot design.

    Whole-plot factor A (a levels) applied to whole plots, r whole plots per level of A; split-plot
    factor B (b levels) applied within every whole plot, c observations per whole plot and level
    of B (usually 1). The whole-plot stratum tests A against the whole-plot error (whole plots
    within A); the within stratum tests B and A:B against the residual:

    .. math::  E(\mathrm{MS}_{\text{whole-plot error}}) = \sigma^2 + bc\,\sigma_w^2, \qquad
               E(\mathrm{MS}_{\text{residual}}) = \sigma^2,

    so :math:`\hat\sigma_w^2 = (\mathrm{MS}_{\text{whole-plot error}} - \mathrm{MS}_{\text{residual}})/(bc)`.
    """

    response: str
    table: pd.DataFrame  # stratum, df, sum_sq, mean_sq, F, p_value, error term
    sigma2_whole_plot: float
    sigma2_resid: float

    def __repr__(self) -> str:
        return (f"Split-plot ANOVA of {self.response!r}\n{self.table.round(5).to_string()}\n"
                f"sigma2 whole plot = {self.sigma2_whole_plot:.5g}, sigma2 residual = {self.sigma2_resid:.5g}")


def split_plot(data: pd.DataFrame, response: str, whole_plot_factor: str, split_plot_factor: str,
               whole_plot: str) -> SplitPlotAnova:
    """Split-plot ANOVA with its two error strata (balanced designs only).

    Parameters
    ----------
    response : numeric response column (e.g. ``"yield"``).
    whole_plot_factor : the factor applied to whole plots (e.g. ``"irrigation"``).
    split_plot_factor : the factor applied within whole plots (e.g. ``"variety"``).
    whole_plot : the column identifying the whole plots (e.g. ``"field"``).

    Rows with a missing value in any of these columns are dropped with a ``MissingValuesWarning``
    (as R's ``na.omit``); the design left must still be balanced. Infinite responses are a DataError.
    """
    names = {"response": response, "whole_plot_factor": whole_plot_factor, "split_plot_factor": split_plot_factor,
             "whole_plot": whole_plot}
    for name, value in names.items():
        _column_name(name, value)
    if len(set(names.values())) < len(names):
        raise DataError(f"response, whole_plot_factor, split_plot_factor and whole_plot must be four different "
                        f"columns, got {names!r}")
    frame = _usable_rows(data, [response, whole_plot_factor, split_plot_factor, whole_plot], response)
    with _after_dropping(data, frame):
        return _split_plot(frame, response, whole_plot_factor, split_plot_factor, whole_plot)


def _split_plot(data: pd.DataFrame, response: str, A: str, B: str, W: str) -> SplitPlotAnova:
    if data.groupby(W, observed=True)[A].nunique().max() > 1:
        raise DataError(f"some whole plots ({W!r}) receive more than one level of {A!r}: {A!r} must be applied to "
                        "whole plots, each whole plot getting one level")
    y = data[response].to_numpy(dtype=float)
    a_codes, b_codes, w_codes = (factor_codes(data, (name,))[0] for name in (A, B, W))
    a, b, n_w = a_codes.max() + 1, b_codes.max() + 1, w_codes.max() + 1
    plots_per_a = np.bincount(pd.Series(a_codes).groupby(w_codes).first().to_numpy(), minlength=a)
    cells = np.bincount(w_codes * b + b_codes, minlength=n_w * b)
    if np.unique(plots_per_a).size != 1 or np.unique(cells).size != 1 or cells[0] == 0:
        raise DataError("the split-plot design is unbalanced (unequal numbers of whole plots per level of "
                        f"{A!r}, or of observations per whole plot and level of {B!r}); "
                        "fit the mixed model by REML with lmmnotes.lmer instead")
    r, c = int(plots_per_a[0]), int(cells[0])
    if r < 2:
        raise DataError(f"each level of {A!r} has a single whole plot, so there is no whole-plot error to test it against")
    N, grand = len(y), y.mean()

    def means(codes: np.ndarray) -> np.ndarray:
        return np.bincount(codes, weights=y) / np.bincount(codes)

    mean_a, mean_b, mean_w = means(a_codes), means(b_codes), means(w_codes)
    mean_ab = means(a_codes * b + b_codes).reshape(a, b)
    a_of_w = pd.Series(a_codes).groupby(w_codes).first().to_numpy()
    ss_a = r * b * c * np.sum((mean_a - grand) ** 2)
    ss_w = b * c * np.sum((mean_w - mean_a[a_of_w]) ** 2)
    ss_b = a * r * c * np.sum((mean_b - grand) ** 2)
    ss_ab = r * c * np.sum((mean_ab - mean_a[:, None] - mean_b[None, :] + grand) ** 2)
    ss_total = np.sum((y - grand) ** 2)
    ss_res = ss_total - ss_a - ss_w - ss_b - ss_ab
    df = {A: a - 1, W: a * (r - 1), B: b - 1, f"{A}:{B}": (a - 1) * (b - 1)}
    df_res = N - 1 - sum(df.values())
    ms = {A: ss_a / df[A], W: ss_w / df[W], B: ss_b / df[B], f"{A}:{B}": ss_ab / df[f"{A}:{B}"]}
    ms_res = ss_res / df_res
    F = {A: ms[A] / ms[W], B: ms[B] / ms_res, f"{A}:{B}": ms[f"{A}:{B}"] / ms_res}
    p = {A: stats.f.sf(F[A], df[A], df[W]), B: stats.f.sf(F[B], df[B], df_res),
         f"{A}:{B}": stats.f.sf(F[f"{A}:{B}"], df[f"{A}:{B}"], df_res)}
    table = pd.DataFrame({
        "stratum": [W, W, "within", "within", "within"],
        "df": [df[A], df[W], df[B], df[f"{A}:{B}"], df_res],
        "sum_sq": [ss_a, ss_w, ss_b, ss_ab, ss_res],
        "mean_sq": [ms[A], ms[W], ms[B], ms[f"{A}:{B}"], ms_res],
        "F": [F[A], np.nan, F[B], F[f"{A}:{B}"], np.nan],
        "p_value": [p[A], np.nan, p[B], p[f"{A}:{B}"], np.nan],
        "error": [f"{W} (whole-plot error)", "", "Residual", "Residual", ""],
    }, index=pd.Index([A, f"{W} (whole-plot error)", B, f"{A}:{B}", "Residual"], name="source"))
    return SplitPlotAnova(response, table, float((ms[W] - ms_res) / (b * c)), float(ms_res))
