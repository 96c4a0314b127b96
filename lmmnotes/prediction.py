r"""Prediction intervals for new observations, by parametric bootstrap.

A new observation :math:`y_0 = x_0^\top\beta + z_0^\top b + \varepsilon_0` is predicted by the EBLUP
:math:`\hat y_0 = x_0^\top\hat\beta + z_0^\top\tilde b` (the plug-in BLUP: conditional modes at the
estimated parameters; a new level of a grouping factor gets :math:`\tilde b = 0`). The interval
bootstraps the error of that prediction. Each draw

1. simulates a data set from the fit with **new** random effects
   :math:`b^* \sim N(0, \hat\Sigma)` and errors, :math:`y^* = X\hat\beta + Zb^* + \varepsilon^*`;
2. refits it and predicts :math:`\hat y_0^*` with the refit (its BLUPs for known levels);
3. takes the truth of that simulated world, :math:`m_0^* = x_0^\top\hat\beta + z_0^\top b^*`, where a
   level not seen in the fit gets a fresh effect :math:`N(0, \hat\Sigma_t)`;
4. returns :math:`\hat y_0 + (m_0^* - \hat y_0^*) + \varepsilon_0^*`, :math:`\varepsilon_0^* \sim N(0, \hat\sigma^2)`.

So the draws are the EBLUP plus a bootstrap prediction error plus a new error, centred at the
EBLUP; their variance estimates the EBLUP's mean squared prediction error plus
:math:`\sigma^2` (Butar and Lahiri 2003). The uncertainty of the estimated variances enters only
through the refits (their shrinkage of known levels and, with unbalanced data, their GLS
weights): a new level's fresh effect is drawn with
:math:`\hat\Sigma_t` held fixed (for balanced one-way data a new group's draws are exactly normal
with the plug-in variance). The :math:`\alpha/2` and :math:`1-\alpha/2` quantiles
of the draws form the interval; leaving out the new error gives an interval for the mean
:math:`m_0` instead.

Why not keep the predicted effects (``use_u=True``) and take the refit's BLUP? That recipe (Eck's
course notes use it, as does a common use of lme4's ``bootMer``) shrinks twice: the refit's BLUP
shrinks :math:`\tilde b`, already shrunk, toward zero once more, so its draws are centred between the
EBLUP and the population mean (pulp, operator a: 60.31 against the EBLUP 60.28), and the spread
misses the uncertainty of the effect itself.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .checks import check_level, check_nsim
from .checks import DataError
from .results import LmerFit


def _new_effects(fit: LmerFit, matrices, rng: np.random.Generator) -> np.ndarray:
    """z_0' b_new for each row: a fresh random effect for every term whose level is new."""
    out = np.zeros(len(matrices.X))
    for t, s, (Xt, _, known) in zip(fit.design.terms, fit.design.theta_slices, matrices.terms):
        if not known.all():
            T = fit.sigma * t.template(fit.theta[s])  # b_new = T e, e ~ N(0, I): covariance sigma^2 T T'
            b = rng.standard_normal((len(Xt), t.p)) @ T.T
            out += np.where(known, 0.0, np.sum(Xt * b, axis=1))
    return out


def _known_effects(fit: LmerFit, matrices, u: np.ndarray) -> np.ndarray:
    """z_0' b for each row from spherical effects u (b = Lambda u), over the levels seen in the fit."""
    out = np.zeros(len(matrices.X))
    for (Xt, rows, known), b in zip(matrices.terms, fit.design.term_effects(u, fit.theta)):
        out += np.where(known, np.sum(Xt * b[rows], axis=1), 0.0)
    return out


def _draw_parts(fit: LmerFit, newdata: pd.DataFrame, nsim: int, rng: np.random.Generator) -> np.ndarray:
    """The three parts of each bootstrap draw, shape (3, nsim, rows): the EBLUP plus the bootstrap
    prediction error m* - yhat* over the levels seen in the fit (module docstring, steps 1-3), the
    fresh random effect of the levels not seen in the fit (0 for a known level), the new error.

    Per draw the random numbers are taken in this order: u* (q), the errors of y* (n), the fresh
    effects (``_new_effects``), the new errors (one per row)."""
    # built once (only beta and b change between refits); new levels are drawn here, not set to 0
    matrices = fit.prediction_matrices(newdata, allow_new_levels=True)
    prediction = fit.predict_with(matrices)  # the offset included
    fixed = matrices.offset + matrices.X @ fit.solution.beta
    mean = fit.offset + fit.design.X @ fit.solution.beta
    Z, Lam = fit.design.Z(), fit.design.Lambda(fit.theta)
    q, n = len(fit.solution.u), fit.nobs
    parts = np.zeros((3, nsim, len(newdata)))
    for k in range(nsim):
        u = fit.sigma * rng.standard_normal(q)  # spherical effects: b* = Lambda u ~ N(0, Sigma-hat)
        y = mean + Z @ (Lam @ u) + fit.sigma * rng.standard_normal(n)
        truth = fixed + _known_effects(fit, matrices, u)
        parts[0, k] = prediction + truth - fit.refit(y).predict_with(matrices)
        parts[1, k] = _new_effects(fit, matrices, rng)
        parts[2, k] = fit.sigma * rng.standard_normal(len(newdata))
    return parts


def _draws(fit: LmerFit, newdata: pd.DataFrame, nsim: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap draws of new observations at the rows of ``newdata``, shape (nsim, rows)."""
    return _draw_parts(fit, newdata, nsim, rng).sum(axis=0)


def prediction_interval(fit: LmerFit, newdata: pd.DataFrame, level: float = 0.95, nsim: int = 1000, seed=None) -> pd.DataFrame:
    """Parametric bootstrap prediction intervals for new observations at the rows of ``newdata``.

    Rows whose groups were all seen in the fit are predicted for those groups; rows with a new
    level of some grouping factor get a new random effect for it (module docstring). ``level``
    is the coverage, between 0 and 1; ``nsim`` the number of bootstrap draws (a whole number >= 1);
    ``seed`` the seed of ``numpy.random.default_rng``. ``newdata`` is not modified.

    Returns a DataFrame indexed like ``newdata`` with the point prediction ``fit``, the limits
    ``lower`` and ``upper``, and ``group`` ("known" or "new").
    """
    level = check_level(level)
    nsim = check_nsim(nsim)
    if not isinstance(newdata, pd.DataFrame) or len(newdata) == 0:
        raise DataError("newdata must be a DataFrame with at least one row")
    rng = np.random.default_rng(seed)
    terms = fit.prediction_matrices(newdata, allow_new_levels=True).terms  # raises if newdata lacks a column
    known = np.logical_and.reduce([k for _, _, k in terms])  # every grouping level seen in the fit
    alpha = (1.0 - level) / 2.0
    lower, upper = np.quantile(_draws(fit, newdata, nsim, rng), [alpha, 1.0 - alpha], axis=0)
    point = fit.predict(newdata, allow_new_levels=True).to_numpy()
    return pd.DataFrame({"fit": point, "lower": lower, "upper": upper, "group": np.where(known, "known", "new")},
                        index=newdata.index)
