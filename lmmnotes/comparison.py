r"""Likelihood-ratio comparison of nested mixed models: lme4's ``anova(m1, m2, ...)``.

``compare(m1, m2, m3)`` refits any REML fit by maximum likelihood (REML criteria of models with
different fixed effects are not comparable, and lme4 does the same), sorts the models by their
number of parameters :math:`k` and, for each model after the first, compares it with the one
before: :math:`\chi^2 = 2\{\ell(\hat\psi_{i}) - \ell(\hat\psi_{i-1})\}` on :math:`k_i - k_{i-1}`
degrees of freedom, p-value :math:`P(\chi^2_{k_i - k_{i-1}} \ge \chi^2)`. The table also has
:math:`\mathrm{AIC} = -2\ell + 2k` and :math:`\mathrm{BIC} = -2\ell + k\log n`.

The chi-square p-value is the large-sample one. When the larger model adds a variance (a
parameter on the boundary of its space under the null) it is conservative: the 50:50 mixture
or the parametric bootstrap of ``lrt`` is the better reference there.

The models must be fitted to the same data and each must be nested in the next; the checks are
those of ``lrt`` (``resampling.check_nested``).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from .checks import DataError, whole_number
from .display import format_p_r
from .resampling import check_nested, compared_model
from .results import LmerFit

COLUMNS = ["npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df", "Pr(>Chisq)"]


@dataclass(frozen=True)
class Comparison:
    """The table of ``compare``: one row per model, sorted by number of parameters."""

    table: pd.DataFrame  # columns COLUMNS; the first row's Chisq, Df and p are NaN
    formulas: pd.Series  # each model's formula, same index as the table
    refitted: tuple[str, ...]  # models that were fitted by REML and refitted by ML
    digits: int = 2  # decimals shown for AIC, BIC, logLik, deviance and Chisq

    def __str__(self) -> str:
        header = "Models fitted by ML"
        if self.refitted:
            header += f" (REML fits refitted: {', '.join(self.refitted)})"
        width = max(len(str(name)) for name in self.table.index)
        lines = [header, "Models:"] + [f"{str(n):>{width}}: {f}" for n, f in self.formulas.items()]
        d = self.digits
        cells = {
            "npar": [f"{int(v)}" for v in self.table["npar"]],
            "AIC": [f"{v:.{d}f}" for v in self.table["AIC"]],
            "BIC": [f"{v:.{d}f}" for v in self.table["BIC"]],
            "logLik": [f"{v:.{d}f}" for v in self.table["logLik"]],
            "deviance": [f"{v:.{d}f}" for v in self.table["deviance"]],
            "Chisq": ["" if np.isnan(v) else f"{v:.{d}f}" for v in self.table["Chisq"]],
            "Df": ["" if np.isnan(v) else f"{int(v)}" for v in self.table["Df"]],
            "Pr(>Chisq)": [format_p_r(v) for v in self.table["Pr(>Chisq)"]],
        }
        widths = {c: max(len(c), *(len(s) for s in cells[c])) for c in COLUMNS}
        lines.append(" " * width + "".join(f" {c:>{widths[c]}}" for c in COLUMNS))
        for i, name in enumerate(self.table.index):
            lines.append(f"{str(name):<{width}}" + "".join(f" {cells[c][i]:>{widths[c]}}" for c in COLUMNS))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(str(self))}</pre>"


def compare(*fits: LmerFit, names: list[str] | None = None, digits: int = 2) -> Comparison:
    """Likelihood-ratio table of nested ``lmer`` fits, as lme4's ``anova(m1, m2, ...)``.

    Parameters
    ----------
    *fits : two or more ``LmerFit`` to the same data, each nested in the next larger one
        (fixed effects and random-effects terms). REML fits are refitted by ML first.
    names : row labels, one per fit in the order given (default ``m1``, ``m2``, ...).
    digits : decimals shown for AIC, BIC, logLik, deviance and Chisq in the printed table.

    Returns a :class:`Comparison`; its ``table`` is a DataFrame with lme4's columns ``npar``,
    ``AIC``, ``BIC``, ``logLik``, ``deviance``, ``Chisq``, ``Df``, ``Pr(>Chisq)``.
    """
    if len(fits) < 2:
        raise DataError(f"compare needs at least two nested models to compare, got {len(fits)}; for one "
                        "model's fixed effects see fit.summary() or lmmnotes.kenward_roger")
    for k, fit in enumerate(fits):
        if not isinstance(fit, LmerFit):
            raise DataError(f"argument {k + 1} of compare is a {type(fit).__name__}, not a model fitted with "
                            "lmmnotes.lmer")
    if isinstance(names, str | bytes):
        raise DataError(f"names must be a list of {len(fits)} labels, one per model, got the string {names!r}; pass "
                        f"e.g. names={[f'm{k + 1}' for k in range(len(fits))]!r}")
    if names is not None and not isinstance(names, Sequence | pd.Index | np.ndarray | pd.Series):
        raise DataError(f"names must be a list of {len(fits)} labels, one per model, got {type(names).__name__} "
                        f"{names!r}")
    whole = whole_number(digits)
    if whole is None or whole < 0:
        raise DataError(f"digits must be a whole number of decimals >= 0, got {digits!r}; the default is 2")
    digits = whole
    names = [f"m{k + 1}" for k in range(len(fits))] if names is None else [str(n) for n in names]
    if len(names) != len(fits) or len(set(names)) != len(names):
        raise DataError(f"names must give {len(fits)} distinct labels, one per model; got {names}")
    refitted = tuple(n for n, f in zip(names, fits) if f.reml)
    ml = [f.update(reml=False) for f in fits]  # lme4: "refitting model(s) with ML (instead of REML)"
    order = sorted(range(len(fits)), key=lambda k: ml[k].n_parameters)  # stable: ties keep their order
    models = [compared_model(ml[k], names[k]) for k in order]
    for (i, small), (j, large) in zip(zip(order, models), zip(order[1:], models[1:])):
        if small.n_parameters == large.n_parameters:
            raise DataError(f"models {names[i]} and {names[j]} have the same number of parameters "
                            f"({small.n_parameters}), so neither is nested in the other; a likelihood-ratio "
                            "test needs nested models (compare non-nested ones by AIC or BIC)")
        try:
            check_nested(small, large)
        except DataError as error:
            raise DataError(f"{names[i]} and {names[j]}: {error}") from None

    loglik = np.array([m.loglik for m in models])
    npar = np.array([m.n_parameters for m in models])
    n = ml[0].nobs
    chisq = np.concatenate([[np.nan], np.maximum(2.0 * np.diff(loglik), 0.0)])
    df = np.concatenate([[np.nan], np.diff(npar)]).astype(float)
    p = np.concatenate([[np.nan], stats.chi2.sf(chisq[1:], df[1:])])
    index = pd.Index([names[k] for k in order])
    table = pd.DataFrame({
        "npar": npar, "AIC": -2.0 * loglik + 2.0 * npar, "BIC": -2.0 * loglik + np.log(n) * npar,
        "logLik": loglik, "deviance": -2.0 * loglik, "Chisq": chisq, "Df": df, "Pr(>Chisq)": p,
    }, index=index)
    formulas = pd.Series([fits[k].formula for k in order], index=index, name="formula")
    return Comparison(table, formulas, refitted, digits)
