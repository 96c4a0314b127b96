r"""Confidence intervals for the parameters of a fitted model: profile, bootstrap and Wald.

The parameters are laid out as lme4's ``confint(..., oldNames = FALSE)``: for each random-effects
term the standard deviations and correlations of its covariance matrix (in theta's order), then
the residual standard deviation ``sigma``, then the fixed effects.

**Profile intervals** (lme4's ``profile``): always from the maximum-likelihood deviance (a REML
fit is refitted by ML first). With :math:`\beta` profiled out, the deviance as a function of the
standard deviations and correlations :math:`\psi` and of :math:`\sigma` is

.. math::
    D(\psi, \sigma) = \log|L_\theta|^2 + n \log(2\pi\sigma^2) + r^2(\theta)/\sigma^2,
    \qquad \sigma^2 T_t T_t^\top = \Sigma_t(\psi),

and for a fixed effect :math:`\beta_j = b` it is the profiled deviance of the model with the
offset :math:`b x_j`. For each parameter, the profile :math:`\tilde D(v)` minimizes the deviance
over the other parameters with this one held at :math:`v`, and the signed root

.. math::
    \zeta(v) = \operatorname{sign}(v - \hat v)\sqrt{\tilde D(v) - D_{\min}}

is compared with standard normal quantiles: the interval is :math:`\{v : |\zeta(v)| \le z_{1-\alpha/2}\}`.
A standard deviation whose profile at 0 stays inside gets the lower end 0.

**Bootstrap intervals**: percentile intervals of the same parameters over parametric bootstrap
refits (``resampling.bootstrap``; REML fits are refitted by REML, as lme4's ``bootMer``).

**Wald intervals**: :math:`\hat\beta_j \pm z_{1-\alpha/2}\,\mathrm{SE}_j` for the fixed effects;
lme4 gives none for the variance parameters, and neither does this (NaN).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize, stats

from .resampling import bootstrap
from .checks import check_level, check_nsim, resolve_n_jobs
from .checks import DataError
from .fixed_effect_tests import unprofiled_deviance
from .optimizer import optimize_theta
from .results import LmerFit
from .simulate import psd_cholesky


# ---- the variance parameters psi = (sd's and correlations of each term, sigma) ----------------------
def parameter_names(fit: LmerFit) -> list[str]:
    """lme4's names (oldNames = FALSE): sd_<col>|<group>, cor_<col2>.<col1>|<group>, sigma, fixed effects."""
    names = []
    for group, t in zip(fit.group_names(), fit.design.terms):
        rows, cols = t.lower
        for r, c in zip(rows, cols):
            names.append(f"sd_{t.columns[r]}|{group}" if r == c else f"cor_{t.columns[r]}.{t.columns[c]}|{group}")
    return names + ["sigma"] + list(fit.design.x_names)


def theta_to_psi(fit: LmerFit, theta: np.ndarray, sigma: float) -> np.ndarray:
    """Standard deviations and correlations of sigma^2 T_t T_t' for each term, then sigma."""
    out = []
    for t, s in zip(fit.design.terms, fit.design.theta_slices):
        T = t.template(theta[s])
        S = sigma**2 * T @ T.T
        sd = np.sqrt(np.diag(S))
        for r, c in zip(*t.lower):
            out.append(sd[r] if r == c else (S[r, c] / (sd[r] * sd[c]) if sd[r] * sd[c] > 0 else 0.0))
    return np.array(out + [sigma])


def psi_to_theta(fit: LmerFit, psi: np.ndarray) -> np.ndarray | None:
    """The inverse of :func:`theta_to_psi` (without sigma): theta, or None if psi is not a covariance."""
    sigma = psi[-1]
    theta, k = [], 0
    for t in fit.design.terms:
        rows, cols = t.lower
        values = psi[k:k + t.n_theta]
        k += t.n_theta
        sd = np.zeros(t.p)
        corr = np.eye(t.p)
        for v, r, c in zip(values, rows, cols):
            if r == c:
                sd[r] = v
            else:
                corr[r, c] = corr[c, r] = v
        L = psd_cholesky(np.outer(sd, sd) * corr)
        if L is None:
            return None
        theta.append(L[rows, cols] / sigma)
    return np.concatenate(theta)


def _deviance(fit: LmerFit, psi: np.ndarray) -> float:
    """ML deviance D(psi, sigma) with beta profiled out (module docstring)."""
    sigma = psi[-1]
    if not sigma > 0 or np.any(~np.isfinite(psi)):
        return np.inf
    theta = psi_to_theta(fit, psi)
    if theta is None:
        return np.inf
    try:
        return unprofiled_deviance(fit, theta, sigma, reml=False)
    except np.linalg.LinAlgError:
        return np.inf


def _psi_bounds(fit: LmerFit) -> list[tuple[float | None, float | None]]:
    bounds = []
    for t in fit.design.terms:
        for r, c in zip(*t.lower):
            bounds.append((0.0, None) if r == c else (-1.0, 1.0))
    return bounds + [(1e-12, None)]


# ---- profiles ------------------------------------------------------------------------------------------
class _Profile:
    """The profiled ML deviance of one parameter, with warm starts between evaluations."""

    def __init__(self, fit: LmerFit, index: int):
        self.fit = fit
        self.index = index
        self.psi_hat = theta_to_psi(fit, fit.theta, fit.sigma)
        self.n_var = len(self.psi_hat)
        self.d_min = fit.deviance
        self.start = self.psi_hat.copy()  # warm starts: the last inner optimum
        self.start_theta = fit.theta

    @property
    def estimate(self) -> float:
        if self.index < self.n_var:
            return float(self.psi_hat[self.index])
        return float(self.fit.solution.beta[self.index - self.n_var])

    def deviance(self, value: float) -> float:
        if self.index < self.n_var:
            return self._variance_profile(value)
        return self._fixed_profile(value)

    def _variance_profile(self, value: float) -> float:
        j = self.index
        others = [k for k in range(self.n_var) if k != j]
        bounds = [_psi_bounds(self.fit)[k] for k in others]

        def objective(x: np.ndarray) -> float:
            psi = np.empty(self.n_var)
            psi[others], psi[j] = x, value
            return _deviance(self.fit, psi)

        if not others:
            return objective(np.zeros(0))
        lo = np.array([-np.inf if b[0] is None else b[0] for b in bounds])
        hi = np.array([np.inf if b[1] is None else b[1] for b in bounds])
        x0 = np.clip(self.start[others], lo, hi)
        step = np.where(np.abs(x0) > 1e-8, 0.1 * np.abs(x0), 0.01 * self.fit.sigma)
        simplex = np.clip(np.vstack([x0, x0 + np.diag(step)]), lo, hi)
        result = optimize.minimize(objective, x0, method="Nelder-Mead", bounds=bounds,
                                   options={"initial_simplex": simplex, "xatol": 1e-8, "fatol": 1e-9, "maxfev": 4000})
        self.start[others] = result.x
        return float(result.fun)

    def _fixed_profile(self, value: float) -> float:
        j = self.index - self.n_var
        fit = self.fit
        restricted = fit.cross_products.with_offset(j, value)
        opt = optimize_theta(fit.design, restricted, False, self.start_theta)
        self.start_theta = opt.theta
        return opt.criterion

    def zeta(self, value: float) -> float:
        change = max(self.deviance(value) - self.d_min, 0.0)
        return float(np.sign(value - self.estimate) * np.sqrt(change))


def _profile_limit(profile: _Profile, z: float, side: int, lower_bound: float, upper_bound: float, scale: float) -> float:
    """The value where zeta crosses side * z, searching outward from the estimate."""
    est = profile.estimate
    step = scale
    inner = est
    for _ in range(60):
        candidate = est + side * step
        if candidate <= lower_bound or candidate >= upper_bound:
            limit = lower_bound if side < 0 else upper_bound
            if side * profile.zeta(limit) < z:
                return limit
            candidate = limit
        if side * profile.zeta(candidate) >= z:
            return float(optimize.brentq(lambda v: side * profile.zeta(v) - z, min(inner, candidate),
                                         max(inner, candidate), xtol=1e-9 * max(1.0, abs(est)), rtol=1e-10))
        inner = candidate
        step *= 1.6
    return np.nan


def _selected(names: list[str], parm) -> list[int]:
    """Indices of the parameters chosen by ``parm``: None (all), a name, names, indices or a slice."""
    if parm is None:
        return list(range(len(names)))
    if isinstance(parm, slice):
        return list(range(len(names)))[parm]
    chosen = [parm] if isinstance(parm, (str, int)) else list(parm)
    out = []
    for p in chosen:
        if isinstance(p, str):
            if p not in names:
                raise ValueError(f"no parameter {p!r}; the parameters are {names}")
            out.append(names.index(p))
        else:
            out.append(int(p))
    return out


def _profile_intervals(fit: LmerFit, level: float, parm) -> pd.DataFrame:
    ml = fit.update(reml=False)  # profiles use the ML deviance, as lme4
    z = stats.norm.ppf(0.5 + level / 2.0)
    names = parameter_names(ml)
    n_var = len(ml.theta) + 1
    se = ml.stderr.to_numpy()
    rows = []
    chosen = _selected(names, parm)
    for k in chosen:
        name = names[k]
        lo, hi = [], []
        for side, out in ((-1, lo), (1, hi)):
            profile = _Profile(ml, k)
            est = profile.estimate
            if k < n_var and name.startswith("cor_"):
                bounds, scale = (-1.0, 1.0), 0.05
            elif k < n_var:
                bounds, scale = (0.0, np.inf), max(0.1 * est, 0.01 * ml.sigma)
            else:
                bounds, scale = (-np.inf, np.inf), 0.5 * se[k - n_var]
            out.append(_profile_limit(profile, z, side, *bounds, scale))
        rows.append((lo[0], hi[0]))
    return pd.DataFrame(rows, index=[names[k] for k in chosen], columns=_columns(level))


def _columns(level: float) -> list[str]:
    alpha = (1.0 - level) / 2.0
    return [f"{100 * alpha:.3g} %", f"{100 * (1 - alpha):.3g} %"]


def all_parameters(fit: LmerFit) -> pd.Series:
    """The parameters in confint's layout: sd's and correlations, sigma, fixed effects."""
    values = np.concatenate([theta_to_psi(fit, fit.theta, fit.sigma), fit.solution.beta])
    return pd.Series(values, index=parameter_names(fit))


def confint(fit: LmerFit, method: str = "profile", level: float = 0.95, *, parm=None, nsim: int = 500, seed=None,
            n_jobs: int = 1) -> pd.DataFrame:
    """Confidence intervals for the standard deviations and correlations, sigma and the fixed effects.

    Parameters
    ----------
    method : ``"profile"`` (likelihood profile of the ML deviance, as lme4's default),
        ``"boot"`` (parametric bootstrap percentile intervals) or ``"wald"`` (fixed effects only).
    level : confidence level.
    parm : which parameters (default all): a name, a list of names or positions, or a slice.
    nsim, seed, n_jobs : bootstrap size (a whole number >= 1), seed of ``numpy.random.default_rng``
        and processes (-1: all cores, as joblib) (``method="boot"`` only).

    Returns a DataFrame with one row per parameter (lme4's names) and the lower and upper limits
    as columns named like lme4's (``"2.5 %"``, ``"97.5 %"``).
    """
    level = check_level(level)
    if not isinstance(method, str) or method.lower() not in ("profile", "boot", "wald"):
        raise DataError(f"method must be 'profile', 'boot' or 'wald', got {method!r}")
    method = method.lower()
    if method == "boot":  # the bootstrap's arguments, checked before anything is computed
        nsim, n_jobs = check_nsim(nsim), resolve_n_jobs(n_jobs)
    chosen = _selected(parameter_names(fit), parm)  # an unknown name is refused before the ML refit of a profile
    if method == "profile":
        return _profile_intervals(fit, level, parm)
    if method == "boot":
        result = bootstrap(fit, all_parameters, nsim=nsim, seed=seed, n_jobs=n_jobs)
        out = result.percentile_interval(level)
        out.columns = _columns(level)
        return out.iloc[chosen]
    # method == "wald"
    z = stats.norm.ppf(0.5 + level / 2.0)
    names = parameter_names(fit)
    n_var = len(fit.theta) + 1
    lower = np.full(len(names), np.nan)
    upper = np.full(len(names), np.nan)
    se = fit.stderr.to_numpy()
    lower[n_var:] = fit.solution.beta - z * se
    upper[n_var:] = fit.solution.beta + z * se
    return pd.DataFrame({c: v for c, v in zip(_columns(level), (lower, upper))}, index=names).iloc[chosen]
