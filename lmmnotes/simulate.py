r"""Simulating data from a linear mixed model with a known truth.

Given a design (a data frame of factors and covariates), a formula and the parameters, draw

.. math::
    b_{t,g} \sim N(0, \Sigma_t) \text{ independently for every level } g \text{ of every term } t, \qquad
    y = X\beta + \sum_t Z_t b_t + \varepsilon, \quad \varepsilon \sim N(0, \sigma^2 I).

The same formula machinery as ``lmer`` builds :math:`X` and the :math:`Z_t`, so a simulated data
set can be fitted back with the same formula and the estimates compared with the truth.
``true_theta`` writes a known truth in the fit's own parameters, :math:`\theta`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .checks import DataError, require_frame
from .design import Design, build_design, canonical_theta
from .formula import parse_formula


@dataclass(frozen=True)
class SimulatedData:
    """A simulated data set with the truth that generated it."""

    data: pd.DataFrame  # the design with the simulated response added
    fixef: pd.Series
    covariances: dict[str, pd.DataFrame]  # Sigma_t for each term, keyed by its grouping factor
    sigma: float
    ranef: dict[str, pd.DataFrame] = field(repr=False)  # the random effects drawn, one row per level


def _fixed_effects(names: list[str], fixef) -> np.ndarray:
    if isinstance(fixef, dict | pd.Series):
        given = dict(fixef)
        missing = [n for n in names if n not in given]
        extra = [n for n in given if n not in names]
        if missing or extra:
            raise DataError(f"fixef must give a value for each fixed effect of the model, {names}; "
                            f"missing {missing}, not in the model {extra}")
        values = np.array([float(given[n]) for n in names])
    else:
        values = np.atleast_1d(np.asarray(fixef, dtype=float))
        if values.shape != (len(names),):
            raise DataError(f"fixef has {values.size} values but the model has {len(names)} fixed effects {names}")
    if not np.all(np.isfinite(values)):
        raise DataError(f"fixef must be finite numbers, got {dict(zip(names, values.tolist()))}")
    return values


def _covariance(term, value) -> np.ndarray:
    S = np.atleast_2d(np.asarray(value, dtype=float))
    if S.shape == (1, 1) and term.p > 1:
        raise DataError(f"the term ({' + '.join(term.columns)} | {term.group}) needs a {term.p} x {term.p} "
                        f"covariance matrix (columns {list(term.columns)}), got a single number")
    if S.shape != (term.p, term.p):
        raise DataError(f"the covariance for {term.group!r} must be {term.p} x {term.p} (columns {list(term.columns)}), "
                        f"got shape {S.shape}")
    if not np.all(np.isfinite(S)):
        raise DataError(f"the covariance for {term.group!r} must hold finite numbers, got {S.tolist()}")
    if not np.allclose(S, S.T) or np.linalg.eigvalsh(S).min() < -1e-10 * max(1.0, np.abs(S).max()):
        raise DataError(f"the covariance for {term.group!r} is not symmetric positive semi-definite")
    return S


def _simulation_design(design: pd.DataFrame, formula: str, fixef, covariances: dict, sigma: float):
    """The checks shared by the simulators, and the model's design and fixed effects:
    (response name, Design, beta)."""
    require_frame(design)
    parsed = parse_formula(formula)
    response = parsed.response
    if not response.isidentifier():
        raise DataError(f"the response of a simulation formula must be a plain column name, got {response!r}")
    if response in design.columns:
        raise DataError(f"the design already has a column {response!r}; drop it or name the response differently")
    if not 0 <= sigma < np.inf:
        raise DataError(f"sigma must be a non-negative standard deviation, got {sigma}; it must be finite")
    d = build_design(parsed, design.assign(**{response: 0.0}), stacklevel=3, check_response=False)
    beta = _fixed_effects(list(d.x_names), fixef)
    groups = [t.group for t in d.terms]
    missing = [g for g in groups if g not in covariances]
    extra = [g for g in covariances if g not in groups]
    if missing or extra:
        raise DataError(f"covariances must be keyed by the grouping factors {groups}; missing {missing}, "
                        f"not in the model {extra}")
    if len(set(groups)) < len(groups):
        raise DataError(f"two random-effects terms share a grouping factor ({groups}), so one covariance per "
                        "factor cannot describe them; write them as one term with a block-diagonal covariance")
    return response, d, beta


def simulate_design(design: pd.DataFrame, formula: str, fixef, covariances: dict, sigma: float,
                    seed=None) -> SimulatedData:
    """Simulate the response of ``formula`` on ``design`` with known parameters.

    Parameters
    ----------
    design : DataFrame with every column the formula uses except the response; not modified.
    formula : lme4 formula whose response is a plain column name, e.g.
        ``"y ~ 1 + x + (1 | worker) + (1 | location)"``.
    fixef : the fixed effects, a dict or Series keyed by the model's names (``"(Intercept)"``,
        ``"x"``, ...) or a sequence in the model's order.
    covariances : for each random-effects term, keyed by its grouping factor as written in the
        formula (``"worker"``, ``"Lab:Technician"``), the covariance matrix of its random
        effects, or a variance for a scalar term.
    sigma : residual standard deviation.
    seed : seed of ``numpy.random.default_rng``.
    """
    response, d, beta = _simulation_design(design, formula, fixef, covariances, sigma)
    rng = np.random.default_rng(seed)
    y = d.X @ beta if d.offset is None else d.offset + d.X @ beta
    drawn, cov_frames = {}, {}
    for t in d.terms:
        S = _covariance(t, covariances[t.group])
        b = rng.multivariate_normal(np.zeros(t.p), S, size=t.n_levels, method="eigh")
        y = y + np.sum(t.X * b[t.codes], axis=1)
        drawn[t.group] = pd.DataFrame(b, index=pd.Index(t.levels, name=t.group), columns=list(t.columns))
        cov_frames[t.group] = pd.DataFrame(S, index=list(t.columns), columns=list(t.columns))
    y = y + sigma * rng.standard_normal(len(y))
    data = design.copy()
    data[response] = np.nan
    data.loc[d.row_index, response] = y
    return SimulatedData(data, pd.Series(beta, index=list(d.x_names), name="fixef"), cov_frames, float(sigma), drawn)


def simulate_responses(design: pd.DataFrame, formula: str, fixef, covariances: dict, sigma: float, nsim: int,
                       seed=None) -> pd.DataFrame:
    """``nsim`` responses of ``formula`` on ``design`` with known parameters, one column each.

    The same model as ``simulate_design`` (the arguments mean the same), drawn ``nsim`` times at
    once: column k is :math:`o + X\\beta + \\sum_t Z_t b_t^{(k)} + \\varepsilon^{(k)}` with new random
    effects and new errors in every column. For a Monte Carlo study, fit each model once to one
    data set and ``refit`` it to the columns (see ``resampling.refit_responses``); building the
    design once instead of ``nsim`` times is what makes hundreds of replicates cheap.

    Rows follow ``design`` (rows with a missing value in a column the formula uses are NaN).
    """
    if not (isinstance(nsim, int | np.integer) and nsim >= 1):
        raise DataError(f"nsim must be a positive whole number of responses, got {nsim!r}")
    response, d, beta = _simulation_design(design, formula, fixef, covariances, sigma)
    rng = np.random.default_rng(seed)
    mean = d.X @ beta if d.offset is None else d.offset + d.X @ beta
    Y = np.repeat(mean[:, None], nsim, axis=1)
    for t in d.terms:
        S = _covariance(t, covariances[t.group])
        b = rng.multivariate_normal(np.zeros(t.p), S, size=(nsim, t.n_levels), method="eigh")  # (nsim, l, p)
        Y += np.einsum("ip,kip->ik", t.X, b[:, t.codes, :])
    Y += sigma * rng.standard_normal(Y.shape)
    out = pd.DataFrame(np.nan, index=design.index, columns=[f"sim_{k + 1}" for k in range(nsim)])
    out.loc[d.row_index] = Y
    return out


def _lower_factor(S: np.ndarray) -> np.ndarray:
    """A lower-triangular L with L L' = S and a nonnegative diagonal, for any positive
    semi-definite S (Cholesky where S is definite; from a QR of a square root where it is not)."""
    try:
        return np.linalg.cholesky(S)
    except np.linalg.LinAlgError:
        w, V = np.linalg.eigh(S)
        root = V * np.sqrt(np.clip(w, 0.0, None))  # root root' = S
        R = np.linalg.qr(root.T, mode="r")  # root' = Q R, so S = R' R
        return R.T * np.where(np.diag(R) < 0, -1.0, 1.0)


def true_theta(model, covariances, sigma: float) -> np.ndarray:
    r"""The covariance parameters :math:`\theta` of ``model`` at a known truth.

    Each term's covariance is :math:`\Sigma_t = \sigma^2 T_t T_t^\top` with :math:`T_t` lower
    triangular and a nonnegative diagonal, so

    .. math::
        T_t = \operatorname{chol}(\Sigma_t / \sigma^2), \qquad
        \theta = (\text{lower triangles of } T_1, T_2, \dots \text{ column by column}),

    the layout of ``fit.theta`` (lme4's ``getME(fit, "theta")``). A semi-definite
    :math:`\Sigma_t` (a variance 0 or a correlation of :math:`\pm 1`) is allowed: its factor
    has a zero on the diagonal. Useful as ``start=`` of ``refit`` or ``refit_responses``, or to
    compare estimates with the truth on the scale the optimizer works on.

    Parameters
    ----------
    model : a fitted model (``LmerFit``) or its ``Design``; only theta's layout is read.
    covariances : :math:`\Sigma_t` for each random-effects term, in the columns of the term
        (``fit.covariances()`` shows them): a dict keyed by grouping factor, as for
        ``simulate_design``, or a sequence in the order of the terms (needed when two terms
        share a grouping factor, as in ``(x || g)``); a number for a scalar term.
    sigma : the residual standard deviation, positive.
    """
    design = getattr(model, "design", model)
    if not isinstance(design, Design):
        raise DataError(f"true_theta needs a fitted model or its design, got {type(model).__name__}")
    if not 0 < sigma < np.inf:
        raise DataError(f"sigma must be a positive, finite residual standard deviation, got {sigma}")
    terms = design.terms
    if isinstance(covariances, dict | pd.Series):
        groups = [t.group for t in terms]
        if len(set(groups)) < len(groups):
            raise DataError(f"two random-effects terms share a grouping factor ({groups}), so a dict keyed by "
                            "factor cannot tell them apart; pass the covariances as a list in the order of "
                            "the terms")
        missing = [g for g in groups if g not in covariances]
        extra = [g for g in covariances if g not in groups]
        if missing or extra:
            raise DataError(f"covariances must be keyed by the grouping factors {groups}; missing {missing}, "
                            f"not in the model {extra}")
        values = [covariances[g] for g in groups]
    else:
        values = list(covariances)
        if len(values) != len(terms):
            raise DataError(f"covariances has {len(values)} entries but the model has {len(terms)} "
                            f"random-effects terms (grouping factors {[t.group for t in terms]})")
    parts = []
    for t, value in zip(terms, values):
        S = _covariance(t, value.to_numpy() if isinstance(value, pd.DataFrame) else value)
        parts.append(_lower_factor(S / sigma**2)[t.lower])
    return canonical_theta(np.concatenate(parts), design)
