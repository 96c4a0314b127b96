"""Fitting a linear mixed model: the lmer pipeline's steps composed.

``lmer`` is formula -> design -> criterion -> optimizer -> result, each step public in its own
module, as lme4's modular functions (``lFormula``, ``mkLmerDevfun``, ``optimizeLmer``,
``mkMerMod``): ``formula.parse_formula`` and ``design.build_design``,
``criterion.CrossProducts`` (what the criterion ``criterion.profiled_criterion`` reuses at every
theta), ``optimizer.optimize_theta`` and ``results.LmerFit.from_theta``; then the warnings lme4
gives at fit time (``warn_about_fit``).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd

from .checks import ConvergenceWarning, SingularFitWarning
from .criterion import CrossProducts
from .design import build_design
from .formula import parse_formula
from .optimizer import GRADIENT_TOLERANCE, lme4_gradient_check, optimize_theta, single_blas_thread
from .results import LmerFit


def warn_about_fit(fit: LmerFit, stacklevel: int) -> None:
    """The warnings lme4 gives at fit time, issued ``stacklevel`` levels above the caller: a
    ``ConvergenceWarning`` when the optimizer did not converge, or when a regular (not singular)
    fit fails ``lme4_gradient_check`` (a scaled gradient above ``GRADIENT_TOLERANCE``, or a
    criterion flat in some direction, whose parameters the data do not identify); a
    ``SingularFitWarning`` for a fit on the boundary. The gradient test is not made on a
    singular fit: there the criterion's Hessian in the boundary directions says nothing about
    convergence (lme4 then often adds "unable to evaluate scaled gradient" to its boundary message)."""
    optsum = fit.optsum
    if not fit.converged:
        warnings.warn(f"the optimizer did not converge ({fit.message}); the estimates may not be the "
                      "optimum: try another start, or a simpler model", ConvergenceWarning, stacklevel=stacklevel + 1)
    elif not fit.is_singular:
        if optsum is None or np.isnan(optsum.scaled_gradient):
            raise ValueError("warn_about_fit needs the fit's optsum with its scaled gradient (see lmer)")
        if np.isinf(optsum.scaled_gradient):
            warnings.warn("the criterion is flat in some direction at the estimates (its Hessian is singular), so "
                          "some covariance parameters are not identified by the data and convergence cannot be "
                          "checked; simplify the random effects", ConvergenceWarning, stacklevel=stacklevel + 1)
        elif optsum.scaled_gradient > GRADIENT_TOLERANCE:
            warnings.warn(f"model failed to converge with max|grad| = {optsum.scaled_gradient:.3g} (tol = "
                          f"{GRADIENT_TOLERANCE}): the scaled gradient at the estimates is not small; check the "
                          "scales of the predictors, or refit from another start", ConvergenceWarning,
                          stacklevel=stacklevel + 1)
    if fit.is_singular:
        warnings.warn("boundary (singular) fit: some variance is estimated as 0 or a correlation as +/-1 (see "
                      "LmerFit.is_singular); the model may be too complex for the data",
                      SingularFitWarning, stacklevel=stacklevel + 1)


def lmer(formula: str, data: pd.DataFrame, reml: bool = True, *,
         start: np.ndarray | None = None) -> LmerFit:
    """Fit a linear mixed model written as in lme4, e.g. ``"y ~ x + (x | g)"``.

    Parameters
    ----------
    formula : lme4 formula: a fixed-effects part and random-effects terms
        ``(expr | group)``, ``(expr || group)``, with ``group`` a factor,
        ``a:b`` or ``a/b``.
    data : DataFrame holding the columns the formula uses; it is not
        modified. Rows with missing values in those columns are dropped
        with a warning.
    reml : fit by REML (default, as lme4) or by maximum likelihood
        (``reml=False``).
    start : starting value of theta (default: each relative covariance
        factor diagonal, 1 for the intercept and about 1 / rms(x) for a
        column x: lme4's identity in the units of the columns; for a large
        model, on the sparse path, one EM step from there, ``em_step``).

    Warns as lme4 does (``warn_about_fit``): ``SingularFitWarning``,
    ``ConvergenceWarning``, and at the design step ``RankDeficiencyWarning``,
    ``PredictorScaleWarning`` and ``MissingValuesWarning`` (all in
    ``lmmnotes.checks``, subclasses of ``LmmWarning``).
    """
    # every step on one BLAS thread (see optimize_theta)
    with single_blas_thread():
        design = build_design(parse_formula(formula), data)
        cp = CrossProducts.from_design(design)
        opt = optimize_theta(design, cp, reml, start)
        fit = LmerFit.from_theta(design, cp, reml, opt.theta, optsum=opt)
        # lme4's check of the answer (see warn_about_fit)
        if fit.converged and not fit.is_singular:
            scaled = lme4_gradient_check(fit.theta, design, cp, reml,
                                         gradient=opt.gradient)
            if scaled is None:  # the criterion is flat in some direction
                scaled = np.inf
            opt = dataclasses.replace(opt, scaled_gradient=scaled)
            fit = dataclasses.replace(fit, optsum=opt)
    warn_about_fit(fit, stacklevel=2)
    return fit
