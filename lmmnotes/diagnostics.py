r"""Checking a fitted mixed model and summarizing its size: the tools of chapter 14.

- ``repca``: the principal components of each grouping factor's random effects (lme4's
  ``rePCA``), the singular values of its relative covariance factor :math:`\Lambda_i`; a value
  near 0 is a direction in which the random effects do not vary, so the term has more columns
  than the data support.
- ``variance_components``, ``r2_nakagawa`` and ``icc``: the variance of the fixed part
  :math:`\sigma^2_f = \operatorname{var}(X\hat\beta)`, of the random part
  :math:`\sigma^2_r = \frac1n\sum_i\sum_t z_{ti}^\top\hat\Sigma_t z_{ti}` (its mean over the rows,
  for random slopes as in Johnson's extension) and the residual variance :math:`\hat\sigma^2`;
  from them the marginal and conditional :math:`R^2` of Nakagawa and Schielzeth and the adjusted
  and unadjusted intraclass correlation (the R package performance's ``r2_nakagawa`` and
  ``icc``).
- ``influence_groups``: leave-one-group-out refits, the fixed effects without each group and
  lme4's Cook's distance (``influence.merMod(fit, groups = ...)`` and ``cooks.distance``).
- ``simulation_check``: statistics of the observed response beside the same statistics of
  responses simulated from the fit.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.linalg

from .checks import DataError, LmmWarning, SingularFitWarning, require_columns, require_frame
from .design import build_design
from .fit import lmer
from .formula import parse_formula
from .results import LmerFit


class InfluenceWarning(LmmWarning):
    """Some leave-one-group-out refits did not converge or were singular; their rows are
    marked in ``GroupInfluence.status``."""


class SimulationCheckWarning(LmmWarning):
    """Some simulated values of a statistic were missing (NaN) and were left out of its p-value."""


# ---- rePCA -----------------------------------------------------------------------------------
def repca(fit: LmerFit) -> dict[str, pd.DataFrame]:
    r"""Principal components of the random effects of each grouping factor (lme4's ``rePCA``).

    For a grouping factor with relative covariance factor :math:`\Lambda_i` (the block-diagonal
    matrix of the templates :math:`T_t` of all its terms, so that the random effects of one level
    have covariance :math:`\sigma^2\Lambda_i\Lambda_i^\top`), the singular values
    :math:`d_1 \ge d_2 \ge \dots` of :math:`\Lambda_i` are the standard deviations of the
    principal components in units of :math:`\sigma`. Returns, for each factor, a DataFrame with
    one row per component: ``sdev`` (:math:`d_k`), ``proportion`` (:math:`d_k^2/\sum_j d_j^2`)
    and ``cumulative``. Components with ``sdev`` (near) 0 are directions the fit does not use.
    """
    blocks: dict[str, list[np.ndarray]] = {}
    for t, s in zip(fit.design.terms, fit.design.theta_slices):
        blocks.setdefault(t.group, []).append(t.template(fit.theta[s]))
    out = {}
    for group, templates in blocks.items():
        d = np.linalg.svd(scipy.linalg.block_diag(*templates), compute_uv=False)
        total = np.sum(d**2)
        share = d**2 / total if total > 0 else np.full(len(d), np.nan)
        out[group] = pd.DataFrame({"sdev": d, "proportion": share, "cumulative": np.cumsum(share)},
                                  index=pd.Index([f"PC{j + 1}" for j in range(len(d))], name=group))
    return out


# ---- variance decomposition, R^2 and ICC -----------------------------------------------------
@dataclass(frozen=True)
class VarianceComponents:
    """The three variances behind Nakagawa and Schielzeth's :math:`R^2` (insight's
    ``get_variance``): ``fixed`` :math:`\\sigma^2_f`, ``random`` :math:`\\sigma^2_r` and
    ``residual`` :math:`\\sigma^2`."""

    fixed: float
    random: float
    residual: float


def variance_components(fit: LmerFit) -> VarianceComponents:
    r"""The variance of the fixed part, of the random part and of the residuals of a fit.

    .. math::
        \sigma^2_f = \operatorname{var}(X\hat\beta) \;(\text{divisor } n - 1), \qquad
        \sigma^2_r = \sum_t \frac1n \sum_{i=1}^n z_{ti}^\top \hat\Sigma_t z_{ti}, \qquad
        \sigma^2_\varepsilon = \hat\sigma^2,

    where :math:`z_{ti}` is row :math:`i` of term :math:`t`'s columns (1 for a random
    intercept, so that :math:`\sigma^2_r` is then the sum of the intercept variances; with a
    random slope it is the variance of the random part averaged over the rows, Johnson's
    extension). Warns (``SingularFitWarning``) for a singular fit: the R package performance
    then returns NA; here the numbers are computed, with the zero variance in them.
    """
    _warn_if_singular(fit)
    return _components(fit)


def _warn_if_singular(fit: LmerFit) -> None:
    """The warning of the public functions below, at their caller's line (one per call)."""
    if fit.is_singular:
        warnings.warn("the fit is singular (some variance is 0 or a correlation +/-1); the random "
                      "variance includes that boundary estimate, and the R package performance would "
                      "refuse to compute it: simplify the random effects first", SingularFitWarning,
                      stacklevel=3)


def _components(fit: LmerFit) -> VarianceComponents:
    Xb = fit.design.X @ fit.solution.beta
    fixed = float(np.var(Xb, ddof=1))
    random = 0.0
    for t, cov in zip(fit.design.terms, fit.covariances().values()):
        S = cov.to_numpy()
        random += float(np.mean(np.einsum("ij,jk,ik->i", t.X, S, t.X)))
    return VarianceComponents(fixed=fixed, random=random, residual=float(fit.sigma**2))


def r2_nakagawa(fit: LmerFit) -> pd.Series:
    r"""Marginal and conditional :math:`R^2` of Nakagawa and Schielzeth (2013), with Johnson's
    extension to random slopes (Nakagawa, Johnson and Schielzeth 2017):

    .. math::
        R^2_m = \frac{\sigma^2_f}{\sigma^2_f + \sigma^2_r + \sigma^2_\varepsilon}, \qquad
        R^2_c = \frac{\sigma^2_f + \sigma^2_r}{\sigma^2_f + \sigma^2_r + \sigma^2_\varepsilon},

    the variances of ``variance_components``. :math:`R^2_m` is the share of the variance the
    fixed effects explain, :math:`R^2_c` the share fixed and random effects explain together.
    Matches ``performance::r2_nakagawa`` for Gaussian fits.
    """
    _warn_if_singular(fit)
    v = _components(fit)
    total = v.fixed + v.random + v.residual
    return pd.Series({"marginal": v.fixed / total, "conditional": (v.fixed + v.random) / total}, name="R2")


def icc(fit: LmerFit) -> pd.Series:
    r"""Intraclass correlation from a fit, as ``performance::icc``:

    .. math::
        \text{adjusted} = \frac{\sigma^2_r}{\sigma^2_r + \sigma^2_\varepsilon}, \qquad
        \text{unadjusted} = \frac{\sigma^2_r}{\sigma^2_f + \sigma^2_r + \sigma^2_\varepsilon}.

    For a single random intercept the adjusted ICC is :math:`\sigma^2_a/(\sigma^2_a + \sigma^2)`,
    the correlation of two observations in one group given the fixed effects (chapter 1); with
    random slopes it is an average over the rows, not a correlation.
    """
    _warn_if_singular(fit)
    v = _components(fit)
    return pd.Series({"adjusted": v.random / (v.random + v.residual),
                      "unadjusted": v.random / (v.fixed + v.random + v.residual)}, name="ICC")


# ---- leave-one-group-out influence -------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class GroupInfluence:
    """Leave-one-group-out refits (``influence_groups``)."""

    group: str
    fixef: pd.Series  # the full fit's fixed effects
    fixef_without: pd.DataFrame  # one row per group left out
    status: pd.Series  # "converged", "singular" or "not converged", per refit
    vcov: pd.DataFrame  # the full fit's covariance matrix of the fixed effects

    @property
    def dfbeta(self) -> pd.DataFrame:
        """Change in each fixed effect when a group is left out: beta_(-j) - beta (lme4's dfbeta)."""
        return self.fixef_without - self.fixef

    @property
    def cooks_distance(self) -> pd.Series:
        r"""lme4's Cook's distance of each group:

        .. math::
            D_j = \frac{m - p}{m\,p}\,(\hat\beta_{(-j)} - \hat\beta)^\top
            \widehat{\operatorname{Var}}(\hat\beta)^{-1} (\hat\beta_{(-j)} - \hat\beta),

        with :math:`m` groups and :math:`p` fixed effects (the scaling of lme4's
        ``cooks.distance`` on ``influence(fit, groups = ...)``)."""
        db = self.dfbeta.to_numpy()
        m, p = db.shape
        W = np.linalg.inv(self.vcov.to_numpy())
        d = (m - p) / (m * p) * np.einsum("ij,jk,ik->i", db, W, db)
        return pd.Series(d, index=self.fixef_without.index, name="cooks_distance")


def influence_groups(fit: LmerFit, data: pd.DataFrame, group: str) -> GroupInfluence:
    r"""Refit ``fit`` once without each level of ``group`` (lme4's ``influence(fit, groups=)``).

    ``data`` is the data frame the model was fitted to (not modified; other data, with other
    rows or another response, are a DataError); each refit uses the rows
    whose ``group`` differs from one level, with the same formula and criterion, starting at the
    full fit's :math:`\hat\theta`, as lme4 does. Column transforms in the formula (``scale(x)``)
    are recomputed on each subset. Levels are in order of first appearance. Warns
    (``InfluenceWarning``) when some refits did not converge or were singular.
    """
    require_frame(data)
    require_columns(data, [group])
    levels = pd.unique(data[group].dropna())
    if len(levels) < 3:
        raise DataError(f"{group!r} has {len(levels)} levels; leaving one out needs at least 3")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LmmWarning)
        design = build_design(parse_formula(fit.formula), data)
    if (design.nobs != fit.nobs or design.X.shape != fit.design.X.shape
            or not np.allclose(design.response, fit.design.response) or not np.allclose(design.X, fit.design.X)):
        raise DataError(f"data is not the data the model was fitted to ({design.nobs} rows used with the "
                        f"formula, the fit used {fit.nobs}, or the response or predictors differ); pass the "
                        "data frame given to lmer")
    rows, status = [], []
    for level in levels:
        subset = data.loc[data[group] != level]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LmmWarning)
            refit = lmer(fit.formula, subset, reml=fit.reml, start=fit.theta)
        if list(refit.fixef.index) != list(fit.fixef.index):
            lost = [name for name in fit.fixef.index if name not in refit.fixef.index]
            raise DataError(f"leaving out {group} = {_plain(level)} changes the fixed effects (without it "
                            f"{lost} cannot be estimated: a factor level that only that group has, or a "
                            "predictor that is constant or aliased in the other groups); lme4 cannot "
                            "compare such refits either: recode or drop that predictor, or fit the model "
                            "without that group, before computing the influence")
        rows.append(refit.fixef.to_numpy())
        status.append(refit.status)
    index = pd.Index([str(v) for v in levels], name=group)
    status = pd.Series(status, index=index, name="status")
    bad = status[status != "converged"]
    if len(bad):
        warnings.warn(f"{len(bad)} of {len(status)} refits without one {group} were singular or did not "
                      f"converge ({', '.join(bad.index[:5])}{', ...' if len(bad) > 5 else ''}); see status",
                      InfluenceWarning, stacklevel=2)
    return GroupInfluence(group=group, fixef=fit.fixef,
                          fixef_without=pd.DataFrame(np.array(rows), index=index, columns=fit.fixef.index),
                          status=status, vcov=fit.vcov)


def _plain(level) -> str:
    """A level as the user wrote it: 0, not np.int64(0)."""
    return repr(level.item() if isinstance(level, np.generic) else level)


# ---- simulation-based check --------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class SimulationCheck:
    """Statistics of the observed response and of responses simulated from the fit."""

    observed: pd.Series
    simulated: pd.DataFrame  # one row per simulated response

    def p_values(self) -> pd.Series:
        r"""Two-sided Monte Carlo p-value of each statistic,
        :math:`\min\{1, 2\min(k_{\le}+1, k_{\ge}+1)/(B+1)\}`, with :math:`k_{\le}` and
        :math:`k_{\ge}` the numbers of the :math:`B` simulated values at or below and at or above
        the observed one. Missing (NaN) simulated values are left out, :math:`B` counting the
        others, with a ``SimulationCheckWarning``; a missing observed value is a DataError."""
        missing = self.observed.index[self.observed.isna()]
        if len(missing):
            raise DataError(f"the observed value of {list(missing)} is missing (NaN), so it has no p-value; "
                            "make the statistic return a number on the observed response")
        B = self.simulated.notna().sum()
        dropped = B[B < len(self.simulated)]
        if len(dropped):
            counts = ", ".join(f"{name!r}: {len(self.simulated) - b} of {len(self.simulated)}"
                               for name, b in dropped.items())
            warnings.warn(f"{counts} simulated values are missing (NaN) and were left out of the p-values",
                          SimulationCheckWarning, stacklevel=2)
        low = (self.simulated <= self.observed).sum() + 1
        high = (self.simulated >= self.observed).sum() + 1
        p = (2 * np.minimum(low, high) / (B + 1)).clip(upper=1.0)
        return p.where(B > 0).rename("p")


def simulation_check(fit: LmerFit, statistic: Callable[[pd.Series], object], nsim: int = 200,
                     seed=None) -> SimulationCheck:
    r"""Compare statistics of the data with the same statistics of data simulated from the fit.

    ``statistic`` takes a response (a Series indexed as the rows the fit used) and returns a
    number or a Series of numbers. It is evaluated on the observed response and on ``nsim``
    responses :math:`y^* = X\hat\beta + Z\Lambda_{\hat\theta}u^* + \varepsilon^*` with new random
    effects and errors (``LmerFit.simulate``). A statistic whose observed value lies far in the
    tail of its simulated values is a feature of the data that the model does not reproduce.
    """
    observed_y = pd.Series(fit.design.response, index=fit.design.row_index, name="y")
    observed = _as_series(statistic(observed_y))
    sims = fit.simulate(nsim, seed=seed)
    rows = []
    for c in sims.columns:
        row = _as_series(statistic(sims[c].rename("y")))
        if list(row.index) != list(observed.index):
            raise DataError(f"the statistic returned the labels {list(row.index)} on a simulated response and "
                            f"{list(observed.index)} on the observed one; it must return the same labels every "
                            "time (e.g. value_counts().reindex(levels, fill_value=0))")
        rows.append(row)
    return SimulationCheck(observed=observed, simulated=pd.DataFrame(rows).reset_index(drop=True))


def _as_series(value) -> pd.Series:
    """A statistic's value as a Series of floats; anything but a number or a Series of numbers
    is a DataError."""
    what = ("statistic must return a number or a pandas Series of numbers (one per statistic, "
            "labelled by name)")
    if isinstance(value, pd.Series):
        try:
            return value.astype(float)
        except (TypeError, ValueError):
            raise DataError(f"{what}; it returned a Series of {value.dtype}") from None
    if isinstance(value, numbers.Real):
        return pd.Series({"statistic": float(value)})
    hint = "; wrap an array as pd.Series(values, index=names)" if isinstance(value, np.ndarray) else ""
    raise DataError(f"{what}; it returned {type(value).__name__}{hint}")
