"""How results print: lme4's layouts, at the precision the computation guarantees.

Display apart from computation, as MixedModels.jl keeps its ``show`` methods in one file: the
fitted model's summary (``summary_text``, used by ``LmerFit.summary`` and ``repr``), its table of
fixed effects, and the one home of p-value formatting (``format_p``, as the likelihood-ratio
lines print it, and ``format_p_r``, R's ``format.pval`` as lme4's ``anova`` table prints it).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .optimizer import GRADIENT_TOLERANCE


def format_p(p: float) -> str:
    """A p-value to 4 decimals, or to 2 significant digits when that would print 0.0000."""
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def format_p_r(p: float) -> str:
    """R's format.pval: NaN blank, below 2.2e-16 shown as a bound."""
    if np.isnan(p):
        return ""
    if p < 2.2e-16:
        return "< 2.2e-16"
    return f"{p:.4g}" if p >= 1e-4 else f"{p:.2e}"


class Summary(str):
    """A string that displays itself as text (in notebooks too)."""

    def __repr__(self) -> str:
        return str(self)


def fixed_decimals(value: float, decimals: int) -> str:
    """``value`` to ``decimals`` places, without a sign on a value that rounds to zero."""
    return f"{round(float(value), decimals) + 0.0:.{decimals}f}"  # -0.0 + 0.0 is 0.0


def fixed_effects_table(fit) -> str:
    """Estimates and standard errors to the places that give the smallest standard error four
    significant digits, t values to two places (R's printCoefmat also looks at the estimates).

    A convention, not a guarantee: the optimizer leaves theta uncertain in about its eighth
    digit, which moves a standard error in about its seventh, so four digits leave a wide margin;
    ``make test-portable`` checks the book's printed tables under several BLAS kernels and with
    theta moved by 1e-6.
    """
    se = fit.stderr.to_numpy()
    positive = se[np.isfinite(se) & (se > 0)]
    decimals = int(np.clip(3 - np.floor(np.log10(positive.min())), 0, 10)) if positive.size else 4
    columns = {
        "Estimate": [fixed_decimals(v, decimals) for v in fit.fixef],
        "Std. Error": [fixed_decimals(v, decimals) for v in fit.stderr],
        "t value": [fixed_decimals(v, 2) for v in fit.tvalues],
    }
    return pd.DataFrame(columns, index=fit.fixef.index).to_string()


def summary_text(fit, brief: bool = False, digits: int = 5) -> str:
    """lme4's summary layout, printed at a precision that stays put across machines: the REML
    criterion to 4 places and AIC, BIC, deviance to 2, log-likelihood to 3 (criteria are flat at
    the optimum), variances and standard deviations to ``digits`` significant digits, correlations to 3
    places, scaled residuals to 4 places, fixed effects as ``fixed_effects_table``."""
    method = "REML" if fit.reml else "maximum likelihood"
    lines = [f"Linear mixed model fit by {method}", f"Formula: {fit.formula}"]
    if fit.reml:
        lines.append(f"REML criterion at convergence: {fit.criterion:.4f}")
    else:
        lines.append(f"     AIC      BIC   logLik deviance\n{fit.aic:8.2f} {fit.bic:8.2f} {fit.loglik:8.3f} {fit.criterion:8.2f}")
    if not brief:
        resid = fit.residuals().to_numpy() / fit.sigma
        q = np.quantile(resid, [0, 0.25, 0.5, 0.75, 1])
        lines += ["", "Scaled residuals:", "     Min       1Q   Median       3Q      Max",
                  " ".join(f"{fixed_decimals(v, 4):>8}" for v in q)]
    lines += ["", "Random effects:"]
    table = []
    for name, cov in fit.covariances().items():
        sd = np.sqrt(np.diag(cov.to_numpy()))
        corr = cov.to_numpy() / np.outer(sd, sd) if np.all(sd > 0) else np.full(cov.shape, np.nan)
        for i, c in enumerate(cov.columns):
            cor_text = " ".join(f"{fixed_decimals(corr[i, j], 3):>6}" for j in range(i))
            table.append((name if i == 0 else "", c, f"{sd[i] ** 2:.{digits}g}", f"{sd[i]:.{digits}g}", cor_text))
    table.append(("Residual", "", f"{fit.sigma ** 2:.{digits}g}", f"{fit.sigma:.{digits}g}", ""))
    header = ("Groups", "Name", "Variance", "Std.Dev.", "Corr")
    widths = [max(len(r[k]) for r in table + [header]) for k in range(5)]
    for row in [header] + table:
        lines.append(" " + "  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
    groups = ", ".join(f"{g}, {n}" for g, n in fit.ngroups.items())
    lines.append(f"Number of obs: {fit.nobs}, groups:  {groups}")
    lines += ["", "Fixed effects:", fixed_effects_table(fit)]
    if fit.design.dropped_columns:
        lines += ["", f"fit warnings: the fixed-effects model matrix is rank deficient, so "
                      f"{', '.join(fit.design.dropped_columns)} {'was' if len(fit.design.dropped_columns) == 1 else 'were'}"
                      " dropped"]
    if fit.is_singular:
        lines += ["", "boundary (singular) fit: some variance is estimated as 0 or a correlation as +/-1"]
    if not fit.converged:
        lines += ["", f"warning: the optimizer did not report convergence ({fit.message})"]
    elif fit.optsum is not None and np.isinf(fit.optsum.scaled_gradient):
        lines += ["", "warning: the criterion is flat in some direction at the estimates (some covariance "
                      "parameters are not identified)"]
    elif fit.optsum is not None and fit.optsum.scaled_gradient > GRADIENT_TOLERANCE:
        lines += ["", f"warning: Model failed to converge with max|grad| = {fit.optsum.scaled_gradient:.3g} "
                      f"(tol = {GRADIENT_TOLERANCE})"]
    return "\n".join(lines)
