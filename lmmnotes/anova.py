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

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from .checks import DataError, require_columns, require_complete, require_frame, require_numeric


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
    """
    require_frame(data)
    require_columns(data, [response, group])
    require_numeric(data, response)
    require_complete(data, [response, group])

    y = data[response].to_numpy(dtype=float)
    codes, levels = pd.factorize(data[group], sort=True)
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
