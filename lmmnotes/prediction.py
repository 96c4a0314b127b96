r"""Prediction intervals for new observations, by parametric bootstrap.

A new observation :math:`y_0 = x_0^\top\beta + z_0^\top b_g + \varepsilon_0` is uncertain for three
reasons: the estimates :math:`\hat\beta`, the group's random effect :math:`b_g`, and the new
error :math:`\varepsilon_0`. The bootstrap draws all three:

* **a group seen in the fit**: simulate responses keeping the predicted random effects
  (``use_u=True``), refit, predict for the group with the refit's conditional modes, and add
  a new error :math:`N(0, \hat\sigma^2)`;
* **a new group**: simulate responses with new random effects, refit, predict at the
  population level, add a new random effect :math:`N(0, \hat\Sigma_t)` for each term whose level
  is new, and a new error.

The :math:`\alpha/2` and :math:`1-\alpha/2` quantiles of the draws form the interval. Leaving out
the new error would give an interval for the group's mean instead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .results import LmerFit


def _new_effects(fit: LmerFit, matrices: tuple, rng: np.random.Generator) -> np.ndarray:
    """z_0' b_new for each row: a fresh random effect for every term whose level is new."""
    _, terms = matrices
    out = np.zeros(len(matrices[0]))
    for t, s, (Xt, _, known) in zip(fit.design.terms, fit.design.theta_slices, terms):
        if not known.all():
            T = fit.sigma * t.template(fit.theta[s])  # b_new = T e, e ~ N(0, I): covariance sigma^2 T T'
            b = rng.standard_normal((len(Xt), t.p)) @ T.T
            out += np.where(known, 0.0, np.sum(Xt * b, axis=1))
    return out


def _draw_parts(fit: LmerFit, newdata: pd.DataFrame, nsim: int, rng: np.random.Generator, known: bool) -> np.ndarray:
    """The three parts of each bootstrap draw, shape (3, nsim, rows): the refitted prediction (the
    estimates' uncertainty), the new group's random effect (0 for a known group), the new error."""
    Y = fit.simulate(nsim, seed=rng, use_u=known).to_numpy()
    matrices = fit.prediction_matrices(newdata)  # built once; only beta and b change between refits
    parts = np.zeros((3, nsim, len(newdata)))
    for k in range(nsim):
        parts[0, k] = fit.refit(Y[:, k])._predict_with(matrices)
        if not known:
            parts[1, k] = _new_effects(fit, matrices, rng)
        parts[2, k] = fit.sigma * rng.standard_normal(len(newdata))
    return parts


def _draws(fit: LmerFit, newdata: pd.DataFrame, nsim: int, rng: np.random.Generator, known: bool) -> np.ndarray:
    """Bootstrap draws of new observations at the rows of ``newdata``, shape (nsim, rows)."""
    return _draw_parts(fit, newdata, nsim, rng, known).sum(axis=0)


def prediction_interval(fit: LmerFit, newdata: pd.DataFrame, level: float = 0.95, nsim: int = 1000, seed=None) -> pd.DataFrame:
    """Parametric bootstrap prediction intervals for new observations at the rows of ``newdata``.

    Rows whose groups were all seen in the fit are predicted for those groups; rows with a new
    level of some grouping factor get a new random effect for it (module docstring).

    Returns a DataFrame indexed like ``newdata`` with the point prediction ``fit``, the limits
    ``lower`` and ``upper``, and ``group`` ("known" or "new").
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    if not isinstance(newdata, pd.DataFrame) or len(newdata) == 0:
        raise ValueError("newdata must be a DataFrame with at least one row")
    rng = np.random.default_rng(seed)
    _, terms = fit.prediction_matrices(newdata)  # raises if newdata lacks a grouping column
    known = np.logical_and.reduce([k for _, _, k in terms])  # every grouping level seen in the fit
    alpha = (1.0 - level) / 2.0
    lower = np.empty(len(newdata))
    upper = np.empty(len(newdata))
    for is_known in (True, False):
        rows = known == is_known
        if rows.any():
            draws = _draws(fit, newdata[rows], nsim, rng, is_known)
            lower[rows], upper[rows] = np.quantile(draws, [alpha, 1.0 - alpha], axis=0)
    return pd.DataFrame({"fit": fit.predict(newdata).to_numpy(), "lower": lower, "upper": upper,
                         "group": np.where(known, "known", "new")}, index=newdata.index)
