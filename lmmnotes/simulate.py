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

import numbers
from collections.abc import Mapping
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
    """A term's covariance as a p x p array. A DataFrame is read by its labels, which must be the
    term's columns (in any order); one without labels (a default index on both axes) by position."""
    if isinstance(value, pd.DataFrame):
        columns = list(term.columns)
        unlabelled = all(isinstance(axis, pd.RangeIndex) and axis.start == 0 for axis in value.axes)
        if not unlabelled:
            if sorted(map(str, value.index)) != sorted(columns) or sorted(map(str, value.columns)) != sorted(columns):
                raise DataError(f"the covariance for {term.group!r} must have rows and columns labelled by the "
                                f"term's columns {columns} (in any order), got rows {list(value.index)} and "
                                f"columns {list(value.columns)}")
            value = value.set_axis(list(map(str, value.index)), axis=0)
            value = value.set_axis(list(map(str, value.columns)), axis=1).loc[columns, columns]
        value = value.to_numpy()
    try:
        S = np.atleast_2d(np.asarray(value, dtype=float))
    except (TypeError, ValueError):
        raise DataError(f"the covariance for {term.group!r} must be a number or a matrix of numbers, "
                        f"got {value!r}") from None
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


def _check_sigma(sigma, *, zero_allowed: bool) -> float:
    """sigma as a float: a finite number, positive (or non-negative when ``zero_allowed``)."""
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise DataError(f"sigma must be a number, the residual standard deviation, got {sigma!r}")
    sigma = float(sigma)
    if not (0 <= sigma < np.inf if zero_allowed else 0 < sigma < np.inf):
        kind = "a non-negative standard deviation" if zero_allowed else "a positive, finite residual standard deviation"
        raise DataError(f"sigma must be {kind}, got {sigma}; it must be finite")
    return sigma


def term_labels(design: Design) -> list[str]:
    """The random-effects terms' labels as lme4 prints them and ``LmerFit.covariances()`` keys
    them: the grouping factor, with .1, .2, ... added when a factor has several terms."""
    seen: dict[str, int] = {}
    labels = []
    for t in design.terms:
        k = seen.get(t.group, 0)
        labels.append(t.group if k == 0 else f"{t.group}.{k}")
        seen[t.group] = k + 1
    return labels


def _covariances_by_term(design: Design, covariances) -> list:
    """The covariance of each term, in the order of the terms, from a dict or Series keyed by the
    terms' labels (``term_labels``) or a sequence in the terms' order."""
    labels = term_labels(design)
    if isinstance(covariances, Mapping | pd.Series):
        keys = list(covariances.keys())
        missing = [g for g in labels if g not in keys]
        extra = [g for g in keys if g not in labels]
        if missing or extra:
            raise DataError(f"covariances must be keyed by the grouping factors {labels} (fit.covariances() "
                            f"shows them); missing {missing}, not in the model {extra}")
        return [covariances[g] for g in labels]
    if isinstance(covariances, list | tuple):
        if len(covariances) != len(labels):
            raise DataError(f"covariances has {len(covariances)} entries but the model has {len(labels)} "
                            f"random-effects terms (grouping factors {labels})")
        return list(covariances)
    raise DataError(f"covariances must be a dict keyed by the grouping factors {labels} or a list in the "
                    f"order of the terms, got {type(covariances).__name__}")


def _simulation_design(design: pd.DataFrame, formula: str, fixef, covariances: dict, sigma: float):
    """The checks shared by the simulators, and the model's design, fixed effects and each term's
    covariance: (response name, Design, beta, covariances in the terms' order, sigma)."""
    require_frame(design)
    parsed = parse_formula(formula)
    response = parsed.response
    if not response.isidentifier():
        raise DataError(f"the response of a simulation formula must be a plain column name, got {response!r}")
    if response in design.columns:
        raise DataError(f"the design already has a column {response!r}; drop it or name the response differently")
    sigma = _check_sigma(sigma, zero_allowed=True)
    d = build_design(parsed, design.assign(**{response: 0.0}), stacklevel=3, check_response=False)
    beta = _fixed_effects(list(d.x_names), fixef)
    groups = [t.group for t in d.terms]
    if len(set(groups)) < len(groups):
        raise DataError(f"two random-effects terms share a grouping factor ({groups}), so one covariance per "
                        "factor cannot describe them; write them as one term with a block-diagonal covariance")
    values = [_covariance(t, v) for t, v in zip(d.terms, _covariances_by_term(d, covariances))]
    return response, d, beta, values, sigma


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
        effects (a DataFrame is read by its labels, the term's columns), or a variance for a
        scalar term; or a list of them in the order of the terms.
    sigma : residual standard deviation.
    seed : seed of ``numpy.random.default_rng``.
    """
    response, d, beta, values, sigma = _simulation_design(design, formula, fixef, covariances, sigma)
    rng = np.random.default_rng(seed)
    y = d.X @ beta if d.offset is None else d.offset + d.X @ beta
    drawn, cov_frames = {}, {}
    for t, S in zip(d.terms, values):
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
    response, d, beta, values, sigma = _simulation_design(design, formula, fixef, covariances, sigma)
    rng = np.random.default_rng(seed)
    mean = d.X @ beta if d.offset is None else d.offset + d.X @ beta
    Y = np.repeat(mean[:, None], nsim, axis=1)
    for t, S in zip(d.terms, values):
        b = rng.multivariate_normal(np.zeros(t.p), S, size=(nsim, t.n_levels), method="eigh")  # (nsim, l, p)
        Y += np.einsum("ip,kip->ik", t.X, b[:, t.codes, :])
    Y += sigma * rng.standard_normal(Y.shape)
    out = pd.DataFrame(np.nan, index=design.index, columns=[f"sim_{k + 1}" for k in range(nsim)])
    out.loc[d.row_index] = Y
    return out


def psd_cholesky(S: np.ndarray) -> np.ndarray | None:
    """Lower Cholesky factor :math:`L` (:math:`LL^\top = S`, nonnegative diagonal) of a positive
    semi-definite matrix, zero columns allowed where :math:`S` is singular; None if :math:`S` is
    not positive semi-definite."""
    p = S.shape[0]
    L = np.zeros_like(S)
    for j in range(p):
        d = S[j, j] - L[j, :j] @ L[j, :j]
        if d < -1e-12 * max(1.0, abs(S[j, j])):
            return None
        L[j, j] = np.sqrt(max(d, 0.0))
        for i in range(j + 1, p):
            off = S[i, j] - L[i, :j] @ L[j, :j]
            if L[j, j] > 0:
                L[i, j] = off / L[j, j]
            elif abs(off) > 1e-12:
                return None
    return L


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
        (``fit.covariances()`` shows them; a DataFrame is read by its row and column labels): a
        dict or Series keyed as ``fit.covariances()`` (the grouping factor, with .1, .2, ...
        when a factor has several terms, as in ``(x || g)``), or a list in the order of the
        terms; a number for a scalar term.
    sigma : the residual standard deviation, positive.
    """
    design = getattr(model, "design", model)
    if not isinstance(design, Design):
        raise DataError(f"true_theta needs a fitted model or its design, got {type(model).__name__}")
    sigma = _check_sigma(sigma, zero_allowed=False)
    parts = []
    for t, value in zip(design.terms, _covariances_by_term(design, covariances)):
        S = _covariance(t, value)
        T = psd_cholesky(S / sigma**2)
        if T is None:  # within _covariance's tolerance but not the factor's
            raise DataError(f"the covariance for {t.group!r} is not positive semi-definite")
        parts.append(T[t.lower])
    return canonical_theta(np.concatenate(parts), design)
