r"""The exact restricted likelihood-ratio test of one variance component (Crainiceanu and Ruppert 2004).

For :math:`y = X\beta + Zb + \varepsilon` with :math:`b \sim N(0, \sigma_b^2 I_K)`, test
:math:`H_0: \sigma_b^2 = 0` with :math:`\mathrm{RLRT} = 2\{\ell_R(\hat\lambda) - \ell_R(0)\}`, the
restricted log-likelihood maximized over :math:`\lambda = \sigma_b^2/\sigma^2 \ge 0` against its
value at 0 (the ordinary regression). Under :math:`H_0` the statistic has the distribution of

.. math::
    \sup_{\lambda \ge 0}\Bigl\{(n-p)\log\Bigl(1 + \frac{N(\lambda)}{D(\lambda)}\Bigr)
        - \sum_{s=1}^{k}\log(1 + \lambda\mu_s)\Bigr\},\qquad
    N(\lambda) = \sum_{s=1}^{k}\frac{\lambda\mu_s}{1+\lambda\mu_s}w_s^2,\quad
    D(\lambda) = \sum_{s=1}^{k}\frac{w_s^2}{1+\lambda\mu_s} + \sum_{s=k+1}^{n-p} w_s^2,

with :math:`w_s` independent standard normal and :math:`\mu_1, \dots, \mu_k` the nonzero eigenvalues
of :math:`Z^\top(I - X(X^\top X)^{-1}X^\top)Z`. The distribution does not depend on any unknown
parameter, so it is simulated directly, without refitting a model: a draw costs a few vector
operations over a grid of :math:`\lambda` (as R's RLRsim does).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .resampling import upper_tail_p
from .checks import check_nsim, whole_number
from .checks import DataError
from .criterion import profiled_criterion
from .results import LmerFit


@dataclass(frozen=True)
class ExactRlrtResult:
    """The exact restricted likelihood-ratio test of a variance component."""

    statistic: float
    p_value: float
    nsim: int
    eigenvalues: np.ndarray = field(repr=False)  # the mu_s
    samples: np.ndarray = field(repr=False)  # the simulated null distribution

    def __str__(self) -> str:
        return f"RLRT = {self.statistic:.4f}, p-value = {self.p_value:.4f} (simulated null distribution, {self.nsim} draws)"


def rlrt_eigenvalues(fit: LmerFit) -> np.ndarray:
    """The nonzero eigenvalues mu_s of Z'(I - H_X)Z for the model's single random-effects term."""
    X, Z = fit.design.X, fit.design.Z().toarray()
    Q, _ = np.linalg.qr(X)
    resid = Z - Q @ (Q.T @ Z)
    mu = np.linalg.svd(resid, compute_uv=False) ** 2
    return mu[mu > 1e-10 * mu.max()]


def simulate_rlrt(mu: np.ndarray, n_minus_p: int, nsim: int, seed=None, grid_size: int = 200) -> np.ndarray:
    """Draws from the null distribution of the RLRT (module docstring), maximized over a grid of lambda.

    The grid is log-spaced over lambda * max(mu) in [exp(-10), exp(8)], plus 0, as in RLRsim.
    """
    nsim = check_nsim(nsim)
    grid = whole_number(grid_size)
    if grid is None or grid < 2:
        raise DataError(f"grid_size must be a whole number >= 2 (0 and that many - 1 values of lambda), got "
                        f"{grid_size!r}; the default is 200")
    mu = np.asarray(mu, dtype=float)
    if mu.ndim != 1 or len(mu) == 0 or not np.all(np.isfinite(mu)) or np.any(mu <= 0):
        raise DataError(f"mu must be the positive eigenvalues of Z'(I - H_X)Z, a non-empty 1-d array, got {mu!r}; "
                        "compute them with rlrt_eigenvalues(fit)")
    df = whole_number(n_minus_p)
    if df is None or df < len(mu):
        raise DataError(f"n_minus_p (n - p, the residual degrees of freedom) must be a whole number >= len(mu) = "
                        f"{len(mu)}, got {n_minus_p!r}")
    n_minus_p = df
    rng = np.random.default_rng(seed)
    k = len(mu)
    scaled = mu / mu.max()
    lam = np.concatenate([[0.0], np.exp(np.linspace(-10.0, 8.0, grid - 1))])
    lm = lam[None, :] * scaled[:, None]  # (k, grid)
    w2 = rng.standard_normal((nsim, k)) ** 2
    rest = rng.chisquare(n_minus_p - k, size=nsim) if n_minus_p > k else np.zeros(nsim)
    N = w2 @ (lm / (1.0 + lm))  # (nsim, grid)
    D = w2 @ (1.0 / (1.0 + lm)) + rest[:, None]
    values = n_minus_p * np.log1p(N / D) - np.sum(np.log1p(lm), axis=0)[None, :]
    return np.maximum(values.max(axis=1), 0.0)


def exact_rlrt(fit: LmerFit, nsim: int = 10000, seed=None) -> ExactRlrtResult:
    """Exact restricted LRT of H0: the model's only variance component is 0 (R's RLRsim::exactRLRT).

    Parameters
    ----------
    fit : a REML fit with exactly one scalar random-effects term, e.g. ``y ~ x + (1 | g)``.
    nsim : draws from the null distribution (a whole number >= 1).
    seed : seed of ``numpy.random.default_rng``.
    """
    nsim = check_nsim(nsim)
    if not fit.reml:
        raise ValueError("exact_rlrt tests with the restricted likelihood: fit the model by REML (the default)")
    if len(fit.design.terms) != 1 or fit.design.terms[0].p != 1:
        raise ValueError("exact_rlrt needs a model with one variance component, a single term like (1 | g); "
                         "for several components test one at a time against a model without it (see lrt)")
    n, p = fit.nobs, len(fit.design.x_names)
    null_criterion = profiled_criterion(np.zeros(1), fit.design, fit.cross_products, reml=True)
    statistic = max(null_criterion - fit.criterion, 0.0)
    mu = rlrt_eigenvalues(fit)
    if len(mu) == 0:
        raise DataError("the random effect lies in the column space of the fixed effects (e.g. its grouping factor "
                        "is also a fixed effect), so there is no variance component left to test; drop it from "
                        "the fixed effects")
    samples = simulate_rlrt(mu, n - p, nsim, seed)
    return ExactRlrtResult(float(statistic), upper_tail_p(samples, statistic), nsim, mu, samples)
