r"""Separate least-squares fits, one per group: lme4's ``lmList``.

``lmlist("y ~ x | g", data)`` fits the ordinary linear model ``y ~ x`` to the rows of each level
of ``g`` on its own. For group :math:`j` with :math:`n_j` rows, model matrix :math:`X_j` (rank
:math:`p`) and residual sum of squares :math:`\mathrm{RSS}_j`:

* coefficients :math:`\hat\beta_j = (X_j^\top X_j)^{-1} X_j^\top y_j`;
* the pooled residual standard error (lme4's ``summary(lmList)$RSE``)
  :math:`s = \sqrt{\sum_j \mathrm{RSS}_j / \sum_j (n_j - p)}` on :math:`\sum_j (n_j - p)` degrees
  of freedom: one residual variance shared by all groups, as in a mixed model;
* standard errors :math:`s\,\sqrt{[(X_j^\top X_j)^{-1}]_{kk}}` (lme4's ``summary``, ``pool = TRUE``);
* confidence intervals :math:`\hat\beta_{jk} \pm t_{1-\alpha/2,\,\nu}\,\hat\sigma\sqrt{[(X_j^\top X_j)^{-1}]_{kk}}`,
  by default with each group's own :math:`\hat\sigma_j` and :math:`\nu = n_j - p` (what lme4's
  ``confint(lmList)`` computes), or with the pooled :math:`s` and its degrees of freedom
  (``pool=True``: lme4's ``confint(..., pool = TRUE)``, nlme's ``intervals.lmList``).

A group whose model matrix has rank below :math:`p` (too few rows, or a predictor constant within
the group) has no fit of its own: its row is NaN, it is counted in ``n_failed``, and a warning
names it. Such per-group fits are the "response-feature" or two-step analysis of longitudinal
and multilevel data; they are what a mixed model shrinks.
"""

from __future__ import annotations

import html
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from formulaic import Formula
from scipy import stats

from .checks import DataError, check_level, require_frame
from .design import r_name, factor_codes
from .formula import FormulaError, group_name, split_top_level, to_formulaic
from .model_frame import evaluate, formula_variables, kept_rows, model_frame


@dataclass(frozen=True)
class LmList:
    """Per-group OLS fits from ``lmlist``; every table has one row per group, in level order."""

    formula: str
    group: str  # the grouping column
    coef: pd.DataFrame  # estimates; NaN rows for groups without their own fit
    nobs: pd.Series  # rows per group (after dropping missing values)
    sigma: float  # pooled residual standard error, lme4's summary(lmList)$RSE
    df_residual: int  # its degrees of freedom, sum of n_j - p over the fitted groups
    group_sigma: pd.Series  # each group's own residual SD (NaN if it has no residual df)
    cov_unscaled: dict = field(repr=False)  # group -> (X_j' X_j)^{-1} as a DataFrame

    @property
    def n_groups(self) -> int:
        return len(self.coef)

    @property
    def failed(self) -> list[str]:
        """Groups too small (or too collinear) for their own fit."""
        return [str(g) for g in self.coef.index[self.coef.isna().all(axis=1)]]

    @property
    def n_failed(self) -> int:
        return len(self.failed)

    def _unscaled_se(self) -> pd.DataFrame:
        rows = {g: np.sqrt(np.diag(c.to_numpy())) if c is not None else np.full(self.coef.shape[1], np.nan)
                for g, c in self.cov_unscaled.items()}
        return pd.DataFrame.from_dict(rows, orient="index", columns=self.coef.columns).reindex(self.coef.index)

    @property
    def stderr(self) -> pd.DataFrame:
        """Standard errors with the pooled residual SD (lme4's summary(lmList), pool = TRUE)."""
        return self._unscaled_se() * self.sigma

    def confint(self, level: float = 0.95, *, pool: bool = False) -> pd.DataFrame:
        """Per-group t intervals, one row per group, columns ``(term, "lower")``, ``(term, "upper")``.

        ``pool=False`` (lme4's ``confint(lmList)``): each group's own residual SD and n_j - p
        degrees of freedom; a group with no residual df gets NaN. ``pool=True``: the pooled SD
        ``sigma`` on ``df_residual`` degrees of freedom (narrower, assumes one residual variance).
        """
        level = check_level(level)
        se = self._unscaled_se()
        if pool:
            half = se * self.sigma * stats.t.ppf(0.5 + level / 2.0, self.df_residual)
        else:
            df = self.nobs - self.coef.shape[1]
            with np.errstate(invalid="ignore"):
                t = stats.t.ppf(0.5 + level / 2.0, df.where(df > 0).to_numpy(dtype=float))
            half = se.mul(self.group_sigma * t, axis=0)
        lower, upper = self.coef - half, self.coef + half
        out = pd.concat({"lower": lower, "upper": upper}, axis=1).swaplevel(axis=1)
        return out[[(term, side) for term in self.coef.columns for side in ("lower", "upper")]]

    def plot(self, level: float = 0.95, *, pool: bool = False, order: str | None = None, axes=None):
        """The intervals of ``confint``, one panel per coefficient (lme4's ``plot(confint(...))``);
        ``order`` names a coefficient to sort the groups by. See ``plots.lmlist_intervals``."""
        from .plots import lmlist_intervals

        return lmlist_intervals(self, level=level, pool=pool, order=order, axes=axes)

    def __repr__(self) -> str:
        lines = [f"Per-group least-squares fits: {self.formula}",
                 f"{self.n_groups} groups of {self.group!r}, {int(self.nobs.sum())} observations",
                 f"Pooled residual standard error: {self.sigma:.4f} on {self.df_residual} degrees of freedom"]
        if self.n_failed:
            lines.append(f"{self.n_failed} group(s) too small for their own fit: {', '.join(self.failed)}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(repr(self))}</pre>"


def _split_formula(formula: str) -> tuple[str, str, str]:
    """'y ~ x | g' -> ('y', 'x', 'g'), with R's powers and keywords as formulaic needs them."""
    if not isinstance(formula, str) or "~" not in formula:
        raise DataError(f"lmlist needs a formula 'response ~ predictors | group', got {formula!r}")
    lhs, _, rhs = formula.partition("~")
    try:
        pieces = split_top_level(rhs, "|")
    except FormulaError as error:
        raise DataError(str(error)) from None
    if len(pieces) != 2 or not pieces[0].strip() or not pieces[1].strip() or not lhs.strip():
        raise DataError(
            f"lmlist needs a formula 'response ~ predictors | group' with one '|' naming the grouping "
            f"column, e.g. 'log(income) ~ cyear | person'; got {formula!r}")
    predictors = pieces[0].strip()
    if re.search(r"(?<![\w.`])\.(?![\w.])", predictors):
        raise FormulaError(f"{formula!r} uses '.' (all other columns), which lmmnotes does not expand: name the "
                           "columns, e.g. 'y ~ x1 + x2 | g'")
    if re.search(r"\boffset\(", predictors):
        raise FormulaError(f"{formula!r} has an offset, which lmlist does not take: subtract it from the "
                           "response instead, e.g. 'I(y - z) ~ x | g'")
    return to_formulaic(lhs.strip()), to_formulaic(predictors), group_name(pieces[1])


def lmlist(formula: str, data: pd.DataFrame) -> LmList:
    """Fit ``response ~ predictors`` by least squares separately in each level of a group.

    Parameters
    ----------
    formula : ``"y ~ x | g"``: an ordinary model formula, then ``|`` and the grouping column
        (any dtype; its levels are ordered as ``lmer`` orders them).
    data : DataFrame with those columns; it is not modified. Rows with missing values in them
        are dropped with a warning.

    Returns an :class:`LmList`; see the module docstring for what each part computes.
    """
    require_frame(data)
    response, predictors, group = _split_formula(formula)
    if group not in data.columns:
        raise DataError(
            f"the grouping column {group!r} (after '|' in {formula!r}) is not a column of the data; "
            f"the data has columns {', '.join(map(repr, data.columns))}")
    fixed = Formula(f"{response} ~ {predictors}")
    frame, complete = model_frame(data, formula_variables(response, predictors), groups=[group], stacklevel=2)
    matrices = evaluate(fixed, frame, f"the model matrix of {response} ~ {predictors}")
    y = kept_rows(matrices.lhs, complete)
    if y.shape[1] != 1 or not np.all(np.isfinite(y)):
        raise DataError(f"the response {response!r} must be one numeric column with finite values "
                        "(e.g. no log of 0)")
    y = y.ravel()
    X = kept_rows(matrices.rhs, complete)
    names = [r_name(c) for c in matrices.rhs.columns]
    p = X.shape[1]
    codes, levels = factor_codes(frame.loc[complete], (group,))

    coef, cov, sigma_j, nobs = {}, {}, {}, {}
    rss_total, df_total = 0.0, 0
    for k, level in enumerate(levels):
        rows = codes == k
        Xj, yj = X[rows], y[rows]
        nobs[level] = int(rows.sum())
        if np.linalg.matrix_rank(Xj) < p:
            coef[level], cov[level], sigma_j[level] = np.full(p, np.nan), None, np.nan
            continue
        beta, *_ = np.linalg.lstsq(Xj, yj, rcond=None)
        rss = float(np.sum((yj - Xj @ beta) ** 2))
        df = len(yj) - p
        coef[level] = beta
        cov[level] = pd.DataFrame(np.linalg.inv(Xj.T @ Xj), index=names, columns=names)
        sigma_j[level] = np.sqrt(rss / df) if df > 0 else np.nan
        rss_total += rss
        df_total += df
    failed = [lv for lv in levels if cov[lv] is None]
    if failed:
        shown = ", ".join(failed[:10]) + (", ..." if len(failed) > 10 else "")
        warnings.warn(f"{len(failed)} of {len(levels)} groups of {group!r} have too few rows (or a predictor "
                      f"constant within the group) for their own fit of {p} coefficients: {shown}; their rows "
                      "are NaN", stacklevel=2)
    if df_total == 0:
        raise DataError(f"no group of {group!r} has more rows than the {p} coefficients, so there is no "
                        "residual degree of freedom to estimate the residual SD; use a coarser group or a "
                        "smaller model")
    index = pd.Index(levels, name=group)
    return LmList(
        formula=formula,
        group=group,
        coef=pd.DataFrame.from_dict(coef, orient="index", columns=names).reindex(index),
        nobs=pd.Series(nobs, name="nobs").reindex(index),
        sigma=float(np.sqrt(rss_total / df_total)),
        df_residual=df_total,
        group_sigma=pd.Series(sigma_j, name="sigma").reindex(index),
        cov_unscaled=cov,
    )
