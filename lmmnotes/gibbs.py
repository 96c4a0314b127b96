r"""Gibbs samplers for the one-way model and for any lmer model.

Both samplers alternate between the two full conditionals that have closed forms:

* the location parameters (:math:`\mu` and the :math:`a_i`, or :math:`\beta` and :math:`b`) given the
  variances are jointly normal;
* each variance (or covariance matrix) given the location parameters is inverse gamma (or inverse
  Wishart).

Parameterizations. :math:`\mathrm{InvGamma}(\alpha, \beta)` has density proportional to
:math:`x^{-\alpha-1} e^{-\beta/x}` (mean :math:`\beta/(\alpha-1)` for :math:`\alpha > 1`);
:math:`\mathrm{InvWishart}(\nu, S)` for a :math:`p \times p` matrix has density proportional to
:math:`|D|^{-(\nu+p+1)/2} \exp\{-\operatorname{tr}(S D^{-1})/2\}` (mean :math:`S/(\nu-p-1)` for
:math:`\nu > p+1`); for :math:`p = 1` it is :math:`\mathrm{InvGamma}(\nu/2, S/2)`.

Default priors are weakly informative, and scaled to the data in location and in scale, so that
they say the same thing whatever the units of the response and of the covariates. With
:math:`\bar y` the mean and :math:`s^2` the sample variance of y (1 if y is constant), and
:math:`v_j` the variance (divisor n) of the model matrix's column :math:`x_j` (1 for a constant
column such as the intercept's):

* the residual variance gets the scale-invariant prior :math:`p(\sigma^2) \propto 1/\sigma^2`, the
  limit :math:`\mathrm{InvGamma}(0, 0)` (``resid_shape = 0``, ``resid_scale = 0``). Its full
  conditional is :math:`\sigma^2 \mid \beta, b, y \sim \mathrm{InvGamma}(n/2,\ \|y - X\beta - Zb\|^2/2)`,
  proper for any :math:`n \ge 1`, and the posterior is proper as long as the random effects
  cannot fit every observation (:math:`\operatorname{rank}[X\ Z] < n`; in the one-way model
  :math:`N > m` and a nonzero within-group sum of squares; otherwise DataError). It has no
  scale, so it is equivariant by itself, and it adds nothing to the data's
  :math:`n` observations, which always pin :math:`\sigma^2` down. A proper
  :math:`\mathrm{InvGamma}(1, s^2/20)` on :math:`\sigma^2` (``resid_shape=1, resid_scale=None``) is
  informative when the groups carry most of the variance of y: :math:`s^2` then far exceeds
  :math:`\sigma^2`, and the prior scale :math:`s^2/20` adds to the half residual sum of squares in the
  conditional above, pulling :math:`\sigma^2` up (chapter 12 measures what that does to the coverage
  of its intervals);
* every group-level variance gets :math:`\mathrm{InvGamma}(1, s^2/20)` (prior median about
  :math:`0.07 s^2`, no prior mean, a heavy right tail, density zero at 0). It must stay proper:
  under :math:`1/\sigma^2_a` the posterior is improper, since the likelihood does not vanish as
  :math:`\sigma^2_a \to 0` (chapter 13). Chapter 12's repeated simulation (20 groups) finds the
  intervals of the group standard deviations calibrated under it, so it is kept. A half-t prior
  on :math:`\sigma_a` is the alternative (below);
* a covariance block of a term with columns :math:`x_1, \dots, x_p` gets
  :math:`\mathrm{InvWishart}(p+1, S)` with :math:`S = \operatorname{diag}(s^2 / (10\, v_j))` -- the same
  as the inverse gamma for :math:`p = 1`, and uniform on each correlation;
* the locations get normal priors whose standard deviations are :math:`K^{1/2} = 100` times the
  data's own scale, :math:`K = 10^4` (``VAGUE``). In ``one_way``, :math:`\mu \sim N(\bar y, K s^2)`. In
  ``lmm``, when X has an intercept column ``(Intercept)``, the prior is put on the coefficients of
  the centred columns, as rstanarm does: the intercept at the columns' means,
  :math:`\alpha = \beta_0 + \sum_{j \ge 1} \bar x_j \beta_j \sim N(\bar y, K s^2)`, and each other
  coefficient :math:`\beta_j \sim N(0, K s^2 / v_j)`, all independent. On :math:`\beta` itself this
  is :math:`N(m, V)` with :math:`m = (\bar y, 0, \dots, 0)` and :math:`V = A\,\operatorname{diag}(K s^2,
  K s^2/v_1, \dots)\,A^\top`, :math:`A` the identity but for :math:`A_{0j} = -\bar x_j`: the intercept's
  prior widens with the distance of the columns' means from 0. Without an intercept column the
  model's origin is meaningful, and the prior is :math:`\beta_j \sim N(0, K \overline{y^2} / \overline{x_j^2})`
  (second moments about 0).

So the defaults follow the data: replacing y by :math:`c y + d` (:math:`c > 0`) replaces the
posterior of :math:`\mu` (of the intercept) by that of :math:`c\mu + d`, of every other fixed effect
and random effect :math:`\beta` by that of :math:`c\beta`, and of every variance by :math:`c^2` times
it; replacing a column :math:`x_j` by :math:`c x_j` divides its coefficient by c (and scales the
variances of its random slopes by :math:`1/c^2`). With the same seed the draws themselves move so,
to rounding error, since the starting values follow the data too. An explicit prior argument
replaces the corresponding default, and is used as given, in the units of the data. The book's
chapters 12 and 13 show when the choice matters (few groups; a residual variance much smaller
than the response's).

Half-t prior on a standard deviation. ``one_way(..., group_prior=HalfT(df, scale))`` puts the
half-t prior of Gelman (2006) on :math:`\sigma_a` in place of the inverse gamma on
:math:`\sigma^2_a` (``df = 1``: the half-Cauchy). It is not conjugate, but it is a scale mixture
of inverse gammas (Wand et al. 2011): if :math:`\sigma^2_a \mid \xi \sim \mathrm{InvGamma}(\nu/2,
\nu/\xi)` and :math:`\xi \sim \mathrm{InvGamma}(1/2, 1/A^2)`, then :math:`\sigma_a \sim
\text{half-}t(\nu, A)`, density proportional to :math:`(1 + \sigma_a^2/(\nu A^2))^{-(\nu+1)/2}`
on :math:`\sigma_a > 0`. The sampler carries :math:`\xi` along, and both its conditionals stay
inverse gamma.

Chains are reproducible from ``seed`` and independent: chain k uses the k-th child of
``numpy.random.SeedSequence(seed)``, so its draws do not depend on how many chains run beside it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.linalg import cholesky, solve_triangular

with warnings.catch_warnings():  # ArviZ 0.23 announces its 1.0 refactor on the day's first import
    warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing", category=FutureWarning)
    import arviz as az

from .checks import (DataError, check_level, drop_incomplete_rows, require_columns, require_finite, require_frame,
                     require_numeric, whole_number)
from .design import Design, build_design, factor_codes
from .optimizer import single_blas_thread
from .formula import parse_formula


# ----------------------------------------------------------------------------------------------
# The result


@dataclass(frozen=True)
class Posterior:
    """Draws from a posterior distribution, chain by chain.

    ``draws`` has columns ``chain``, ``draw`` and one column per parameter; ``priors`` records the
    priors used (as plain numbers), ``n_warmup`` and ``thin`` how the chains were run.
    """

    draws: pd.DataFrame
    model: str
    priors: dict = field(repr=False)
    n_warmup: int = 0
    thin: int = 1

    @property
    def parameters(self) -> list[str]:
        return [c for c in self.draws.columns if c not in ("chain", "draw")]

    @property
    def n_chains(self) -> int:
        return int(self.draws["chain"].nunique())

    def values(self, name: str) -> np.ndarray:
        """The draws of one parameter as an array of shape (chains, draws)."""
        if name not in self.parameters:
            raise KeyError(f"no parameter {name!r}; the parameters are {', '.join(self.parameters)}")
        return self.draws[name].to_numpy().reshape(self.n_chains, -1)

    def to_arviz(self):
        """An ``arviz.InferenceData`` with one variable per parameter, dimensions (chain, draw)."""
        return az.from_dict(posterior={name: self.values(name) for name in self.parameters})

    def summary(self, prob: float = 0.95) -> pd.DataFrame:
        """Mean, sd, the equal-tailed ``prob`` interval and median, and ArviZ's diagnostics:
        Monte Carlo standard errors, bulk and tail effective sample sizes, and rank-normalized
        split R-hat (Vehtari et al. 2021), one row per parameter."""
        prob = check_level(prob, "prob")
        lo, hi = (1 - prob) / 2, (1 + prob) / 2
        x = self.draws[self.parameters]
        table = pd.DataFrame({
            "mean": x.mean(),
            "sd": x.std(ddof=1),
            f"{100 * lo:g}%": x.quantile(lo),
            "50%": x.quantile(0.5),
            f"{100 * hi:g}%": x.quantile(hi),
        })
        diagnostics = az.summary(self.to_arviz(), kind="diagnostics")
        return table.join(diagnostics[["mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "r_hat"]])


# ----------------------------------------------------------------------------------------------
# Checks and random numbers


VAGUE = 1e4  # the default prior variance of a location, in the data's units (see the module docstring)


@dataclass(frozen=True)
class HalfT:
    r"""A half-t prior on a standard deviation, :math:`\sigma \sim \text{half-}t(\nu, A)`: density
    proportional to :math:`(1 + \sigma^2/(\nu A^2))^{-(\nu+1)/2}` on :math:`\sigma > 0`, i.e. the law of
    :math:`A|t_\nu|`. ``df`` is :math:`\nu` (1, the default: the half-Cauchy that Gelman (2006)
    recommends for a group-level standard deviation; large: close to the half-normal
    :math:`A|Z|`); ``scale`` is :math:`A`, in the units of the response, None for the response's
    sample standard deviation :math:`s` (so that the prior follows the data's units, as the other
    defaults do). Used by ``one_way(group_prior=...)``.
    """

    df: float = 1.0
    scale: float | None = None


def _number(name: str, value) -> float:
    """``value`` as a float, or DataError naming the argument."""
    if isinstance(value, (bool, np.bool_, str, bytes)) or not np.ndim(value) == 0:
        raise DataError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a number, got {value!r}") from None


def _finite(name: str, value) -> float:
    value = _number(name, value)
    if not np.isfinite(value):
        raise DataError(f"{name} must be a finite number, got {value}; it is a parameter of a prior")
    return value


def _positive(name: str, value) -> float:
    value = _number(name, value)
    if not np.isfinite(value) or value <= 0:
        raise DataError(f"{name} must be a positive number, got {value}; it is a shape, scale or variance of a prior")
    return value


def _nonnegative(name: str, value) -> float:
    value = _number(name, value)
    if not np.isfinite(value) or value < 0:
        raise DataError(f"{name} must be a number of at least 0, got {value}; it is a shape or scale of the "
                        "inverse gamma prior of the residual variance (0 and 0: the prior 1/sigma^2)")
    return value


def _resid_prior(shape, scale, s2y: float) -> tuple[float, float]:
    """The residual variance's prior InvGamma(shape, scale), checked: shape and scale finite and at
    least 0 (both 0, the default: p(sigma^2) proportional to 1/sigma^2); a scale of None is var(y) / 20."""
    return _nonnegative("resid_shape", shape), _nonnegative("resid_scale", s2y / 20 if scale is None else scale)


def _response_variance(y: np.ndarray) -> float:
    """var(y), the unit of the default prior scales (1 for a constant response)."""
    return float(np.var(y, ddof=1)) if np.var(y) > 0 else 1.0


def _column_variances(X: np.ndarray) -> np.ndarray:
    """The variance (divisor n) of each column of X, 1 for a constant column (the intercept's)."""
    constant = np.ptp(X, axis=0) == 0
    return np.where(constant, 1.0, X.var(axis=0))


def _scale(name: str, value: float | None, s2y: float) -> float:
    """A prior scale: ``value`` if given, else the default var(y) / 20."""
    return _positive(name, s2y / 20 if value is None else value)


def _check_iterations(n_iter: int, n_warmup: int | None, n_chains: int, thin: int) -> tuple[int, int, int, int]:
    counts = {}
    for name, value, least in (("n_chains", n_chains, 1), ("thin", thin, 1), ("n_iter", n_iter, 1),
                               ("n_warmup", 0 if n_warmup is None else n_warmup, 0)):
        counts[name] = whole_number(value)
        if counts[name] is None or counts[name] < least:
            raise DataError(f"{name} must be a whole number of at least {least}, got {value!r}")
    n_chains, thin, n_iter = counts["n_chains"], counts["thin"], counts["n_iter"]
    n_warmup = n_iter // 2 if n_warmup is None else counts["n_warmup"]
    if n_iter - n_warmup < thin:
        raise DataError(
            f"n_iter = {n_iter} leaves no draws after the warm-up of n_warmup = {n_warmup} iterations"
            f"{f' thinned by {thin}' if thin > 1 else ''}; n_iter counts the warm-up, so raise n_iter "
            "or lower n_warmup"
        )
    return n_iter, n_warmup, int(n_chains), int(thin)


def _chain_generators(seed, n_chains: int) -> list[np.random.Generator]:
    """Independent generators, one per chain, from one seed."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n_chains)]


def _inv_wishart(rng: np.random.Generator, df: float, scale: np.ndarray) -> np.ndarray:
    """One draw of InvWishart(df, scale) by Bartlett's decomposition of its inverse, a
    Wishart(df, scale^-1) matrix W = (L A)(L A)' with L L' = scale^-1, A lower triangular with
    sqrt(chi2(df - i)) on the diagonal and N(0, 1) below it."""
    p = scale.shape[0]
    L = np.linalg.cholesky(np.linalg.inv(scale))
    A = np.tril(rng.standard_normal((p, p)), -1)
    A[np.diag_indices(p)] = np.sqrt(rng.chisquare(df - np.arange(p)))
    M = np.linalg.inv(L @ A)  # D = W^-1 = M' M
    return M.T @ M


def _draw_covariance(rng: np.random.Generator, df: float, S: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The full conditional of a term's covariance matrix given its l x p random effects b.

    For p = 1 the prior is InvGamma(df, S) (df is the shape, S the 1 x 1 scale) and the draw is
    InvGamma(df + l/2, S + b'b/2); for p > 1 the prior is InvWishart(df, S) and the draw is
    InvWishart(df + l, S + b'b).
    """
    l, p = b.shape
    if p == 1:
        return np.array([[(S[0, 0] + 0.5 * b[:, 0] @ b[:, 0]) / rng.standard_gamma(df + l / 2)]])
    return _inv_wishart(rng, df + l, S + b.T @ b)


# ----------------------------------------------------------------------------------------------
# The one-way model


def one_way(data: pd.DataFrame, response: str, group: str, *, mu_mean: float | None = None,
            mu_var: float | None = None,
            group_shape: float | None = None, group_scale: float | None = None, resid_shape: float = 0.0,
            resid_scale: float | None = 0.0, group_prior: HalfT | None = None, n_iter: int = 2000,
            n_warmup: int | None = None, n_chains: int = 4, thin: int = 1, seed=None,
            update: str = "blocked") -> Posterior:
    r"""Gibbs sampler for :math:`y_{ij} = \mu + a_i + e_{ij}`, :math:`a_i \sim N(0, \sigma^2_a)`,
    :math:`e_{ij} \sim N(0, \sigma^2_e)`, with priors :math:`\mu \sim N(m_0, v_0)`,
    :math:`\sigma^2_a \sim \mathrm{InvGamma}(\alpha_a, \beta_a)`,
    :math:`\sigma^2_e \sim \mathrm{InvGamma}(\alpha_e, \beta_e)`.

    With :math:`n_i` observations and mean :math:`\bar y_i` in group i, :math:`N = \sum n_i` and
    :math:`m` groups, each iteration draws

    * :math:`\sigma^2_a \mid a \sim \mathrm{InvGamma}(\alpha_a + m/2,\ \beta_a + \tfrac12\sum_i a_i^2)`;
    * :math:`\sigma^2_e \mid \mu, a \sim \mathrm{InvGamma}(\alpha_e + N/2,\ \beta_e + \tfrac12\sum_{ij}(y_{ij} - \mu - a_i)^2)`;
    * ``update="blocked"``: :math:`(\mu, a)` jointly, first :math:`\mu` with the :math:`a_i` integrated
      out, :math:`\mu \sim N(M, 1/P)` with :math:`w_i = 1/(\sigma^2_a + \sigma^2_e/n_i)`,
      :math:`P = 1/v_0 + \sum_i w_i`, :math:`M = (m_0/v_0 + \sum_i w_i \bar y_i)/P`, then each
      :math:`a_i \mid \mu \sim N\big(\frac{n_i(\bar y_i - \mu)/\sigma^2_e}{n_i/\sigma^2_e + 1/\sigma^2_a},\
      \frac{1}{n_i/\sigma^2_e + 1/\sigma^2_a}\big)`;
    * ``update="single"``: :math:`\mu \mid a \sim N\big(\frac{\sum_{ij}(y_{ij} - a_i)/\sigma^2_e + m_0/v_0}{N/\sigma^2_e + 1/v_0},\
      \frac{1}{N/\sigma^2_e + 1/v_0}\big)`, then the :math:`a_i \mid \mu` as above (the textbook
      sampler; it mixes slowly when :math:`\mu` is poorly identified, i.e. when :math:`v_0` is large
      and the groups are few or :math:`\sigma^2_a` is large).

    Parameters
    ----------
    data, response, group : the data, the numeric response column and the grouping column
        (any dtype; unbalanced groups are fine). Rows with a missing response or group are
        dropped with a :class:`~lmmnotes.checks.MissingValuesWarning` (as R's na.omit); an
        infinite response is a DataError; a category of a categorical group with no rows at all
        is a DataError.
    mu_mean, mu_var : the normal prior of mu, :math:`N(m_0, v_0)`. Both None (the default): the
        scaled default :math:`m_0 = \bar y`, :math:`v_0 = 10^4 s^2` (``VAGUE`` times the sample
        variance of y; see the module docstring). ``mu_var`` given alone: :math:`m_0 = 0`, the prior
        :math:`N(0, \text{mu\_var})`; ``mu_mean`` given alone: :math:`v_0 = 10^4 s^2`.
    group_shape, group_scale : the inverse gamma prior of sigma2_group; None (the defaults)
        means a shape of 1 and a scale of :math:`s^2/20`.
    resid_shape, resid_scale : the inverse gamma prior of sigma2_resid. The default 0 and 0 is
        :math:`p(\sigma^2_e) \propto 1/\sigma^2_e` (see the module docstring; it needs a nonzero
        within-group sum of squares); ``resid_shape=1, resid_scale=None`` gives the proper
        :math:`\mathrm{InvGamma}(1, s^2/20)`. Every prior parameter must be a finite number (the
        group's shape and scale and mu_var positive, the residual's shape and scale at least 0),
        else DataError naming it.
    group_prior : None (the inverse gamma prior of sigma2_group above) or :class:`HalfT`: the
        half-t prior :math:`\sigma_a \sim \text{half-}t(\nu, A)` on the group standard deviation
        (then ``group_shape`` and ``group_scale`` must be left at their defaults). The sampler
        uses the mixture :math:`\sigma^2_a \mid \xi \sim \mathrm{InvGamma}(\nu/2, \nu/\xi)`,
        :math:`\xi \sim \mathrm{InvGamma}(1/2, 1/A^2)`, and draws, in place of the first step above,
        :math:`\sigma^2_a \mid a, \xi \sim \mathrm{InvGamma}((\nu + m)/2,\ \nu/\xi + \tfrac12\sum_i a_i^2)`
        and :math:`\xi \mid \sigma^2_a \sim \mathrm{InvGamma}((\nu + 1)/2,\ \nu/\sigma^2_a + 1/A^2)`.
        ``priors`` then records ``group_prior`` ("half-t"), ``group_df`` and ``group_sd_scale``.
    n_iter : iterations per chain, warm-up included; n_warmup (default n_iter // 2) are discarded,
        and of the rest every ``thin``-th is kept.
    n_chains, seed : chains are vectorized; chain k draws from the k-th child of SeedSequence(seed).

    The priors used are recorded in ``priors`` (``mu_mean`` and ``mu_var`` as numbers also when
    they are the defaults).

    Returns a :class:`Posterior` with columns ``mu``, ``sigma2_group``, ``sigma2_resid`` and
    ``a[level]`` for each group level.
    """
    require_frame(data)
    require_columns(data, [response, group])
    require_numeric(data, response)
    if update not in ("blocked", "single"):
        raise DataError(f"update must be 'blocked' or 'single', got {update!r}")
    n_iter, n_warmup, n_chains, thin = _check_iterations(n_iter, n_warmup, n_chains, thin)
    frame = drop_incomplete_rows(data, [response, group], stacklevel=2)  # the warning names the caller's line
    require_finite(frame, [response, group])
    y = frame[response].to_numpy(dtype=float)
    codes, levels = factor_codes(frame, (group,))  # levels in lmer's order, observed levels only
    m = len(levels)
    if m < 2:
        raise DataError(f"the grouping column {group!r} has {m} level; the one-way model needs at least 2 groups")
    n = np.bincount(codes, minlength=m).astype(float)
    N = float(n.sum())
    if N <= m:
        raise DataError(f"{int(N)} observations in {m} groups: some group needs a second observation, "
                        "or the residual variance cannot be told from the group variance")
    ybar = np.bincount(codes, weights=y, minlength=m) / n
    ssw = float(np.sum((y - ybar[codes]) ** 2))
    s2y = _response_variance(y)
    half_t = _half_t_prior(group_prior, group_shape, group_scale, s2y)
    priors = {
        "mu_mean": (float(np.mean(y)) if mu_var is None else 0.0) if mu_mean is None else _finite("mu_mean", mu_mean),
        "mu_var": _positive("mu_var", VAGUE * s2y if mu_var is None else mu_var),
        "group_shape": _positive("group_shape", 1.0 if group_shape is None else group_shape),
        "group_scale": _scale("group_scale", group_scale, s2y),
    }
    priors["resid_shape"], priors["resid_scale"] = _resid_prior(resid_shape, resid_scale, s2y)
    if priors["resid_scale"] == 0 and ssw == 0:
        raise DataError(f"{response!r} is constant within every group of {group!r}: with resid_scale = 0 the "
                        "posterior of the residual variance is improper (its mass piles up at 0); give a "
                        "proper prior, e.g. resid_shape=1, resid_scale=None")
    if half_t is not None:
        del priors["group_shape"], priors["group_scale"]
        priors.update(half_t)
    draws = _one_way_chains(ybar, n, ssw, priors, n_iter, n_warmup, n_chains, thin, seed, update)
    names = ["mu", "sigma2_group", "sigma2_resid"] + [f"a[{level}]" for level in levels]
    return _posterior(draws, names, f"{response} ~ 1 + (1 | {group}), Gibbs ({update} updates)",
                      priors, n_warmup, thin)


def _half_t_prior(group_prior, group_shape, group_scale, s2y: float) -> dict | None:
    """The half-t prior's entries of ``priors`` (None for the inverse gamma prior), checked."""
    if group_prior is None:
        return None
    if not isinstance(group_prior, HalfT):
        raise DataError(f"group_prior must be None or gibbs.HalfT(df, scale), got {group_prior!r}")
    if group_scale is not None or group_shape is not None:
        raise DataError("group_shape and group_scale set the inverse gamma prior of sigma2_group; with "
                        "group_prior=HalfT(...) leave them out (the half-t prior replaces it)")
    return {"group_prior": "half-t", "group_df": _positive("HalfT df", group_prior.df),
            "group_sd_scale": _positive("HalfT scale",
                                        np.sqrt(s2y) if group_prior.scale is None else group_prior.scale)}


def _one_way_chains(ybar, n, ssw, priors, n_iter, n_warmup, n_chains, thin, seed, update) -> np.ndarray:
    """The sampler's loop, vectorized across chains; returns (chains, kept draws, 3 + m).

    ``ybar`` may also be (chains, m) and ``ssw`` (chains,): one data set per chain, with the same
    group sizes ``n`` (the calibration tests run hundreds of simulated data sets at once so).
    All random numbers are drawn before the loop, chain by chain from the chain's own generator:
    the shapes of the inverse gamma conditionals do not change, so sigma^2 = scale / Gamma(shape, 1).
    With a half-t prior (``priors["group_prior"] == "half-t"``) the mixing variable xi's gammas are
    drawn after the others, so that the inverse gamma prior's stream of numbers is unchanged.
    """
    m, N = len(n), n.sum()
    m0, v0 = priors["mu_mean"], priors["mu_var"]
    half_t = priors.get("group_prior") == "half-t"
    if half_t:
        nu, inv_A2 = priors["group_df"], 1.0 / priors["group_sd_scale"] ** 2
        shape_a = (nu + m) / 2
    else:
        shape_a, scale_a = priors["group_shape"] + m / 2, priors["group_scale"]
    shape_e, scale_e = priors["resid_shape"] + N / 2, priors["resid_scale"]
    rngs = _chain_generators(seed, n_chains)
    # Starting values, dispersed: variances around rough moment estimates, mu and a from their conditionals.
    s2e0 = np.maximum(ssw / (N - m), 1e-8 * np.maximum(np.var(ybar, axis=-1), 1.0))
    s2a0 = np.maximum(np.var(ybar, axis=-1, ddof=1), s2e0 / n.mean())
    start = np.array([rng.standard_normal(2) for rng in rngs])
    s2a = s2a0 * np.exp(start[:, 0])
    s2e = s2e0 * np.exp(start[:, 1])
    z = np.stack([rng.standard_normal((n_iter, 1 + m)) for rng in rngs], axis=1)  # (iter, chain, 1 + m)
    ga = np.stack([rng.standard_gamma(shape_a, n_iter) for rng in rngs], axis=1)  # (iter, chain)
    ge = np.stack([rng.standard_gamma(shape_e, n_iter) for rng in rngs], axis=1)
    if half_t:  # xi | s2a ~ InvGamma((nu + 1)/2, nu/s2a + 1/A^2): its start, then one per iteration
        gx = np.stack([rng.standard_gamma((nu + 1) / 2, n_iter + 1) for rng in rngs], axis=1)
        xi = (nu / s2a + inv_A2) / gx[0]
    kept = (n_iter - n_warmup) // thin
    out = np.empty((kept, n_chains, 3 + m))
    a = np.zeros((n_chains, m))
    mu = np.broadcast_to(np.average(ybar, weights=n, axis=-1), (n_chains,)).copy()
    blocked = update == "blocked"
    nsum_ybar = n * ybar
    k = 0
    for t in range(n_iter):
        zt = z[t]
        pe = 1.0 / s2e[:, None]
        pa = n * pe + 1.0 / s2a[:, None]  # precision of a_i given mu
        if blocked:
            w = 1.0 / (s2a[:, None] + s2e[:, None] / n)
            P = 1.0 / v0 + w.sum(axis=1)
            mu = (m0 / v0 + (w * ybar).sum(axis=1)) / P + zt[:, 0] / np.sqrt(P)
        else:
            P = N * pe[:, 0] + 1.0 / v0
            mu = ((nsum_ybar - n * a).sum(axis=1) * pe[:, 0] + m0 / v0) / P + zt[:, 0] / np.sqrt(P)
        a = n * pe * (ybar - mu[:, None]) / pa + zt[:, 1:] / np.sqrt(pa)
        if half_t:
            s2a = (nu / xi + 0.5 * (a * a).sum(axis=1)) / ga[t]
            xi = (nu / s2a + inv_A2) / gx[t + 1]
        else:
            s2a = (scale_a + 0.5 * (a * a).sum(axis=1)) / ga[t]
        r = ybar - mu[:, None] - a
        s2e = (scale_e + 0.5 * (ssw + (n * r * r).sum(axis=1))) / ge[t]
        if t >= n_warmup and (t - n_warmup) % thin == thin - 1:
            out[k, :, 0], out[k, :, 1], out[k, :, 2], out[k, :, 3:] = mu, s2a, s2e, a
            k += 1
    return out.transpose(1, 0, 2)


def one_way_exact(data: pd.DataFrame, response: str, group: str, *, mu_mean: float, mu_var: float,
                  group_shape: float | None = None, group_scale: float | None = None, resid_shape: float,
                  resid_scale: float, group_prior: HalfT | None = None, grid: int = 400) -> pd.DataFrame:
    r"""The exact posterior means and sds of mu, sigma2_group and sigma2_resid of the one-way model
    (the model and priors of :func:`one_way`; every prior must be given: ``group_shape`` and
    ``group_scale``, or ``group_prior=HalfT(df, scale)`` with its scale), by quadrature.
    ``resid_shape`` and ``resid_scale`` may be 0, as in :func:`one_way`: the residual variance's
    prior enters as its unnormalized log density :math:`-(\alpha_e + 1)\log\sigma^2_e - \beta_e/\sigma^2_e`
    (0 and 0: :math:`p(\sigma^2_e) \propto 1/\sigma^2_e`).

    The half-t prior enters through its own density, not through the mixture the sampler uses:
    with :math:`\sigma_a = A|t_\nu|`, the density of :math:`\sigma^2_a` is
    :math:`f_{t_\nu}(\sigma_a/A)/(A\,\sigma_a)` (``scipy.stats.t``).

    Given (s2a, s2e), the group means are independent, ybar_i | mu ~ N(mu, s2a + s2e/n_i), and the
    within-group sum of squares SSW is s2e chi2(N - m), independent of them. With
    w_i = n_i / (s2e + n_i s2a), integrating mu ~ N(m0, v0) out gives

        log p(y | s2a, s2e) = -1/2 [(N - m) log s2e + SSW/s2e + sum log(s2e + n_i s2a) - sum log n_i
                                    + sum w_i ybar_i^2 + m0^2/v0 - P M^2 + log(v0 P)] + const,

    P = 1/v0 + sum w_i, M = (m0/v0 + sum w_i ybar_i)/P, and mu | s2a, s2e, y ~ N(M, 1/P). The
    posterior of (log s2a, log s2e) is evaluated on a grid x grid lattice over the region where it
    is within exp(-40) of its maximum (found on a coarse lattice first). Returns a DataFrame with
    columns ``mean`` and ``sd``, one row per parameter.
    """
    from scipy import stats

    require_frame(data)
    require_columns(data, [response, group])
    require_numeric(data, response)
    mu_mean, mu_var = _finite("mu_mean", mu_mean), _positive("mu_var", mu_var)
    if group_prior is None:
        group_shape, group_scale = _positive("group_shape", group_shape), _positive("group_scale", group_scale)
    else:
        if not isinstance(group_prior, HalfT) or group_prior.scale is None:
            raise DataError(f"group_prior must be gibbs.HalfT(df, scale) with its scale given, got {group_prior!r}")
        if group_shape is not None or group_scale is not None:
            raise DataError("give either group_shape and group_scale or group_prior, not both")
        half_df, half_scale = _positive("HalfT df", group_prior.df), _positive("HalfT scale", group_prior.scale)
    resid_shape, resid_scale = _nonnegative("resid_shape", resid_shape), _nonnegative("resid_scale", resid_scale)
    y = data[response].to_numpy(dtype=float)
    _, codes = np.unique(data[group].astype(str).to_numpy(), return_inverse=True)
    n = np.bincount(codes).astype(float)
    centre = y.mean()  # centred for accuracy; mu's mean is shifted back at the end
    ybar = np.bincount(codes, weights=y - centre) / n
    ssw = float(((y - centre - ybar[codes]) ** 2).sum())
    N, m, m0 = n.sum(), len(n), mu_mean - centre
    if resid_scale == 0 and ssw == 0:
        raise DataError(f"{response!r} is constant within every group: with resid_scale = 0 the posterior is improper")

    def log_post(u, v):  # u = log s2a, v = log s2e (arrays of one shape)
        s2a, s2e = np.exp(u)[..., None], np.exp(v)[..., None]
        w = n / (s2e + n * s2a)
        P = 1 / mu_var + w.sum(-1)
        M = (m0 / mu_var + (w * ybar).sum(-1)) / P
        loglik = -0.5 * ((N - m) * v[...] + ssw / np.exp(v) + np.log(s2e + n * s2a).sum(-1)
                         + (w * ybar ** 2).sum(-1) + m0 ** 2 / mu_var - P * M ** 2 + np.log(mu_var * P))
        if group_prior is None:
            prior_a = stats.invgamma.logpdf(np.exp(u), group_shape, scale=group_scale)
        else:  # sigma_a = A |t|: density of s2a = t_df(sigma_a / A) / (A sigma_a)
            sd_a = np.exp(u / 2)
            prior_a = stats.t.logpdf(sd_a / half_scale, half_df) - np.log(half_scale * sd_a)
        prior = prior_a - (resid_shape + 1) * v - resid_scale * np.exp(-v)  # InvGamma, unnormalized
        return loglik + prior + u + v, M, P  # + u + v: the Jacobian of the log scale

    s2e_hat = ssw / (N - m)
    lo_u, hi_u = np.log(s2e_hat) - 15, np.log(s2e_hat) + 15
    lo_v, hi_v = np.log(s2e_hat) - 8, np.log(s2e_hat) + 8
    for size in (200, grid):
        u, v = np.meshgrid(np.linspace(lo_u, hi_u, size), np.linspace(lo_v, hi_v, size), indexing="ij")
        lp, M, P = log_post(u, v)
        keep = lp > lp.max() - 40
        if size < grid:  # the region that matters, with a margin of one coarse step
            du, dv = (hi_u - lo_u) / size, (hi_v - lo_v) / size
            lo_u, hi_u = u[keep].min() - du, u[keep].max() + du
            lo_v, hi_v = v[keep].min() - dv, v[keep].max() + dv
    p = np.exp(lp - lp.max())
    p /= p.sum()
    s2a, s2e = np.exp(u), np.exp(v)
    mu_mean_post = (p * M).sum()
    out = {"mu": (mu_mean_post + centre, np.sqrt((p * (1 / P + M ** 2)).sum() - mu_mean_post ** 2))}
    for name, x in (("sigma2_group", s2a), ("sigma2_resid", s2e)):
        mean = (p * x).sum()
        out[name] = (mean, np.sqrt((p * x ** 2).sum() - mean ** 2))
    return pd.DataFrame(out, index=["mean", "sd"]).T


def _posterior(draws: np.ndarray, names: list[str], model: str, priors: dict, n_warmup: int, thin: int) -> Posterior:
    n_chains, kept, _ = draws.shape
    frame = pd.DataFrame(draws.reshape(n_chains * kept, -1), columns=names)
    frame.insert(0, "draw", np.tile(np.arange(kept), n_chains))
    frame.insert(0, "chain", np.repeat(np.arange(n_chains), kept))
    return Posterior(frame, model, priors, n_warmup, thin)


# ----------------------------------------------------------------------------------------------
# Any lmer model


def _default_cov_scale(term, s2y: float) -> np.ndarray:
    return np.diag(s2y / (10 * _column_variances(term.X)))


@dataclass(frozen=True)
class _FixefPrior:
    """The normal prior of beta as the sampler uses it: its precision and precision times mean, and
    what ``Posterior.priors`` records (``mean`` and ``var``, numbers or lists)."""

    precision: np.ndarray  # (p, p)
    h: np.ndarray  # (p,), precision @ mean
    mean: object
    var: object


def _default_fixef_prior(X: np.ndarray, names: list[str], y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, covariance and precision of the default prior of beta (see the module docstring).

    With an intercept column k, beta = A gamma, gamma = (alpha at k, the other beta_j), alpha the
    intercept at the columns' means: A is the identity but for A[k, j] = -xbar_j, and gamma ~
    N((ybar at k, 0, ...), G), G = diag(K s2, K s2 / v_j). So V = A G A' and V^-1 = B' G^-1 B with
    B = A^-1, the identity but for B[k, j] = +xbar_j.
    """
    p = X.shape[1]
    mean = np.zeros(p)
    intercept = [j for j, name in enumerate(names) if name == "(Intercept)" and np.all(X[:, j] == 1)]
    if intercept:
        k = intercept[0]
        others = np.array([j for j in range(p) if j != k], dtype=int)
        s2y = _response_variance(y)
        g = np.full(p, VAGUE * s2y)
        g[others] /= _column_variances(X[:, others])
        B = np.eye(p)
        B[k, others] = X[:, others].mean(axis=0)
        A = np.eye(p)
        A[k, others] = -B[k, others]
        mean[k] = float(np.mean(y))
        return mean, (A * g) @ A.T, (B.T / g) @ B
    second = np.mean(X * X, axis=0)
    g = VAGUE * (float(np.mean(y * y)) or 1.0) / np.where(second > 0, second, 1.0)
    return mean, np.diag(g), np.diag(1.0 / g)


def _fixef_prior(fixef_mean, fixef_var, X: np.ndarray, names: list[str], y: np.ndarray) -> _FixefPrior:
    """The prior of beta from the arguments of ``lmm``: numbers, per-coefficient arrays (and a
    covariance matrix for ``fixef_var``) or None for the defaults."""
    p = len(names)
    listed = ", ".join(names)
    for name, value in (("fixef_mean", fixef_mean), ("fixef_var", fixef_var)):
        if isinstance(value, (dict, pd.Series)):
            raise DataError(f"{name} must be a number or an array with one entry per fixed effect, in the order "
                            f"{listed}; got a {type(value).__name__}")

    def per_coefficient(name: str, value) -> np.ndarray:
        try:
            array = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            raise DataError(f"{name} must be a number or an array of numbers, got {value!r}") from None
        if array.ndim > 1 or (array.ndim == 1 and array.shape[0] != p):
            raise DataError(f"{name} must be a number or have one entry per fixed effect ({p}: {listed}), "
                            f"got shape {array.shape}")
        if not np.all(np.isfinite(array)):
            raise DataError(f"{name} must be finite, got {array.tolist()}; it is a parameter of a prior")
        return np.broadcast_to(array, (p,)).copy()

    def recorded(value, array: np.ndarray):
        return float(array[0]) if np.ndim(value) == 0 else array.tolist()

    if fixef_var is None:
        default_mean, V, precision = _default_fixef_prior(X, names, y)
        if fixef_mean is None:
            mean, record_mean = default_mean, default_mean.tolist()
        else:
            mean = per_coefficient("fixef_mean", fixef_mean)
            record_mean = recorded(fixef_mean, mean)
        return _FixefPrior(precision, precision @ mean, record_mean, V.tolist())
    mean = np.zeros(p) if fixef_mean is None else per_coefficient("fixef_mean", fixef_mean)
    record_mean = 0.0 if fixef_mean is None else recorded(fixef_mean, mean)
    try:
        var = np.asarray(fixef_var, dtype=float)
    except (TypeError, ValueError):
        raise DataError(f"fixef_var must be a positive number or an array of them, got {fixef_var!r}") from None
    if var.ndim == 2:  # a covariance matrix
        if var.shape != (p, p) or not np.all(np.isfinite(var)) or not np.allclose(var, var.T) \
                or np.any(np.linalg.eigvalsh(var) <= 0):
            raise DataError(f"fixef_var as a matrix must be a finite symmetric positive definite {p} x {p} matrix "
                            f"(rows and columns {listed}), got {var.tolist()}")
        precision = np.linalg.inv(var)
        return _FixefPrior(precision, precision @ mean, record_mean, var.tolist())
    if var.ndim == 0:
        diag = np.full(p, _positive("fixef_var", fixef_var))
    else:
        diag = per_coefficient("fixef_var", var)
        if np.any(diag <= 0):
            raise DataError(f"fixef_var must be positive, got {diag.tolist()}; it is the variance of a prior")
    return _FixefPrior(np.diag(1.0 / diag), mean / diag, record_mean, recorded(fixef_var, diag))


def _term_priors(design: Design, priors: dict, cov_df, cov_scale, s2y: float) -> list:
    """(df, S) of each random-effects term's prior; records the vector terms' in ``priors``.

    ``cov_df`` and ``cov_scale`` apply to the terms with more than one column; ``cov_scale`` may be
    a dict keyed by those terms' grouping factors. An unknown key, or either argument given for a
    model with no such term, is a DataError."""
    vector = [t.group for t in design.terms if t.p > 1]
    scalar = [t.group for t in design.terms if t.p == 1]
    hint = "the prior of a term with one column, such as (1 | g), is InvGamma(var_shape, var_scale)"
    for name, value in (("cov_df", cov_df), ("cov_scale", cov_scale)):
        if value is not None and not vector:
            raise DataError(f"{name} is the inverse Wishart prior of a term with more than one column, such as "
                            f"(x | g), and this model has none; {hint}")
    if cov_df is not None:
        cov_df = _finite("cov_df", cov_df)
    if isinstance(cov_scale, (dict, pd.Series)):
        unknown = [key for key in cov_scale if key not in vector]
        if unknown:
            scalar_keys = [key for key in unknown if key in scalar]
            raise DataError(
                f"cov_scale has the key(s) {', '.join(map(repr, unknown))}, which name no term with more than one "
                f"column; its keys are grouping factors of such terms: {', '.join(map(repr, vector))}"
                + (f" ({', '.join(map(repr, scalar_keys))} has only a scalar term: {hint})" if scalar_keys else "")
            )
    term_priors = []
    for t in design.terms:
        if t.p == 1:
            term_priors.append((priors["var_shape"], np.array([[priors["var_scale"]]])))
            continue
        df = t.p + 1.0 if cov_df is None else cov_df
        if not df > t.p - 1:
            raise DataError(f"cov_df must exceed p - 1 = {t.p - 1} for the term ({t.term.expr} | {t.group}), got {df}")
        S = cov_scale.get(t.group) if isinstance(cov_scale, (dict, pd.Series)) else cov_scale
        if S is None:
            S = _default_cov_scale(t, s2y)
        else:
            try:
                S = np.atleast_2d(np.asarray(S, dtype=float))
            except (TypeError, ValueError):
                raise DataError(f"cov_scale for the term ({t.term.expr} | {t.group}) must be a matrix of numbers, "
                                f"got {S!r}") from None
        if S.shape != (t.p, t.p) or not np.all(np.isfinite(S)) or not np.allclose(S, S.T) \
                or np.any(np.linalg.eigvalsh(S) <= 0):
            raise DataError(f"cov_scale for the term ({t.term.expr} | {t.group}) must be a symmetric positive "
                            f"definite {t.p} x {t.p} matrix (columns {', '.join(t.columns)}), got {S.tolist()}")
        term_priors.append((df, S))
        priors[f"cov_df[{t.group}]"], priors[f"cov_scale[{t.group}]"] = df, S.tolist()
    return term_priors


def _cov_names(design: Design) -> list[str]:
    names = []
    for t in design.terms:
        for j in range(t.p):
            for i in range(j, t.p):
                if i == j:
                    names.append(f"var[{t.columns[i]}|{t.group}]")
                else:
                    names.append(f"cov[{t.columns[j]},{t.columns[i]}|{t.group}]")
    return names


def lmm(formula: str, data: pd.DataFrame, *, fixef_mean=None, fixef_var=None,
        var_shape: float = 1.0, var_scale: float | None = None, cov_df: float | None = None,
        cov_scale=None, resid_shape: float = 0.0, resid_scale: float | None = 0.0,
        n_iter: int = 2000, n_warmup: int | None = None, n_chains: int = 4, thin: int = 1,
        seed=None) -> Posterior:
    r"""Gibbs sampler for the linear mixed model of an lme4 formula,
    :math:`y = X\beta + Zb + e`, :math:`e \sim N(0, \sigma^2 I)`, with priors
    :math:`\beta \sim N(m, V)` (``fixef_mean`` and ``fixef_var``, or the defaults below); for each
    random-effects term k
    (levels :math:`j = 1..l_k`, :math:`p_k` columns) :math:`b_{kj} \sim N(0, D_k)` independently, with
    :math:`D_k \sim \mathrm{InvGamma}(\text{var\_shape}, \text{var\_scale})` when :math:`p_k = 1` and
    :math:`D_k \sim \mathrm{InvWishart}(\text{cov\_df}, \text{cov\_scale})` otherwise; and
    :math:`\sigma^2 \sim \mathrm{InvGamma}(\text{resid\_shape}, \text{resid\_scale})`.

    X and Z are the package's design matrices (``design.build_design``), so every formula ``lmer``
    takes works here: random slopes, several terms, nested and crossed factors, ``||``. Each
    iteration draws

    * :math:`\gamma = (\beta, b)` jointly from :math:`N(Q^{-1}h, Q^{-1})` with
      :math:`Q = C^\top C/\sigma^2 + \operatorname{blockdiag}(V^{-1}, I_{l_1}\otimes D_1^{-1}, \dots)`,
      :math:`C = [X\ Z]` and :math:`h = C^\top y/\sigma^2 + (V^{-1}m, 0)`,
      through the Cholesky factor :math:`Q = LL^\top`: :math:`\gamma = Q^{-1}h + L^{-\top}z`;
    * :math:`D_k \mid b \sim \mathrm{InvWishart}(\text{cov\_df} + l_k, \text{cov\_scale} + \sum_j b_{kj}b_{kj}^\top)`
      (:math:`\mathrm{InvGamma}(\text{var\_shape} + l_k/2, \text{var\_scale} + \tfrac12\sum_j b_{kj}^2)` for scalar terms);
    * :math:`\sigma^2 \mid \beta, b \sim \mathrm{InvGamma}(\text{resid\_shape} + n/2, \text{resid\_scale} + \tfrac12\|y - X\beta - Zb\|^2)`.

    Priors. ``fixef_mean`` and ``fixef_var`` give :math:`\beta \sim N(\text{fixef\_mean}, \text{fixef\_var})`:
    each a number (the same for every coefficient; ``fixef_var`` a number v means :math:`vI`) or an
    array with one entry per coefficient in the order of ``lmer``'s names (``fixef_var`` then the
    diagonal), or for ``fixef_var`` a :math:`p \times p` covariance matrix. Both None (the default):
    the prior scaled to the data of the module docstring -- with an intercept column, the intercept
    at the columns' means :math:`\sim N(\bar y, 10^4 s^2)` and each other coefficient
    :math:`\beta_j \sim N(0, 10^4 s^2 / v_j)`, :math:`s^2` the sample variance of y and :math:`v_j` the
    variance of column :math:`x_j`; without one, :math:`\beta_j \sim N(0, 10^4\, \overline{y^2}/\overline{x_j^2})`.
    ``fixef_var`` given alone: ``fixef_mean`` is 0; ``fixef_mean`` given alone: the default covariance.
    var_scale defaults to :math:`s^2/20`, with shape 1 (a var_scale of None means that too);
    resid_shape and resid_scale default to 0 and 0, the prior :math:`p(\sigma^2) \propto 1/\sigma^2`
    (module docstring), which needs :math:`\operatorname{rank}[X\ Z] < n` (else DataError);
    ``resid_shape=1, resid_scale=None`` gives the proper :math:`\mathrm{InvGamma}(1, s^2/20)`, and
    either may be 0 (neither negative); cov_df defaults to :math:`p_k + 1` and
    cov_scale to :math:`\operatorname{diag}(s^2 / (10 v_j))` (1 for the intercept's :math:`v_j`).
    ``cov_df`` and ``cov_scale`` apply to the terms with more than one column; ``cov_scale`` may be a
    matrix (used for every such term) or a dict from such a term's grouping factor (as ``lmer`` prints
    it, ``a:b`` for nested factors) to a matrix, the others keeping the default. A key that names no
    such term, either argument for a model without such terms, or a NaN or infinite prior parameter
    is a DataError naming it. ``Posterior.priors`` records what was used: ``fixef_mean`` and
    ``fixef_var`` as given, or for the defaults the mean vector and the covariance matrix (as lists).

    Returns a :class:`Posterior` with one column per fixed effect (named as in ``lmer``), then
    ``var[col|group]`` and ``cov[col1,col2|group]`` for each term's covariance matrix, then ``sigma2``.
    """
    n_iter, n_warmup, n_chains, thin = _check_iterations(n_iter, n_warmup, n_chains, thin)
    require_frame(data)
    parsed = parse_formula(formula)
    design = build_design(parsed, data)
    y, X = design.y, design.X
    n, p = X.shape
    s2y = _response_variance(y)
    fixef = _fixef_prior(fixef_mean, fixef_var, X, list(design.x_names), y)
    priors = {
        "fixef_mean": fixef.mean, "fixef_var": fixef.var,
        "var_shape": _positive("var_shape", var_shape),
        "var_scale": _scale("var_scale", var_scale, s2y),
    }
    priors["resid_shape"], priors["resid_scale"] = _resid_prior(resid_shape, resid_scale, s2y)
    term_priors = _term_priors(design, priors, cov_df, cov_scale, s2y)
    if priors["resid_scale"] == 0:
        _require_residual_freedom(design)
    with single_blas_thread():  # small matrices: BLAS threads cost more than they save
        draws = [_lmm_chain(design, priors, term_priors, fixef, n_iter, n_warmup, thin, rng)
                 for rng in _chain_generators(seed, n_chains)]
    names = list(design.x_names) + _cov_names(design) + ["sigma2"]
    return _posterior(np.stack(draws), names, f"{formula}, Gibbs", priors, n_warmup, thin)


def _require_residual_freedom(design: Design) -> None:
    """DataError when X and Z together can fit y exactly: then the likelihood stays bounded as
    sigma^2 -> 0, and with resid_scale = 0 the posterior is improper. rank[X Z] < n holds whenever
    the model has fewer coefficients than observations; otherwise the rank is computed."""
    y, X = design.y, design.X
    Z = design.Z()
    n, k = X.shape[0], X.shape[1] + Z.shape[1]
    if k < n:
        return
    C = np.hstack([X, Z.toarray()])
    fitted = C @ np.linalg.lstsq(C, y, rcond=None)[0]
    if np.linalg.matrix_rank(C) >= n or np.allclose(fitted, y, rtol=0, atol=1e-10 * max(np.abs(y).max(), 1.0)):
        raise DataError(f"the fixed and random effects have {k} coefficients for {n} observations and can fit "
                        "every observation exactly: with resid_scale = 0 the posterior of the residual variance is "
                        "improper; give it a proper prior, e.g. resid_shape=1, resid_scale=None")


@dataclass(frozen=True)
class _Blocks:
    """The cross-products of the lmm sampler, split as the fit splits them (``criterion``): the
    first random-effects term (most levels) has a block-diagonal Z_1'Z_1, one p_1 x p_1 block per
    level; the rest, R = [Z_2 ... X], is dense and small."""

    Z1Z1: np.ndarray  # (l_1, p_1, p_1)
    Z1y: np.ndarray  # (l_1, p_1)
    RZ1: np.ndarray  # (r, l_1, p_1)
    RR: np.ndarray  # (r, r)
    Ry: np.ndarray  # (r,)
    Z: object  # sparse n x q, for the residuals

    @classmethod
    def from_design(cls, design: Design) -> "_Blocks":
        t1 = design.terms[0]
        y, Z = design.y, design.Z()
        q1 = t1.n_levels * t1.p
        R = np.hstack([Z[:, q1:].toarray(), design.X])
        outer = t1.X[:, :, None] * t1.X[:, None, :]
        Z1Z1 = np.zeros((t1.n_levels, t1.p, t1.p))
        np.add.at(Z1Z1, t1.codes, outer)
        Z1y = np.zeros((t1.n_levels, t1.p))
        np.add.at(Z1y, t1.codes, t1.X * y[:, None])
        RZ1 = np.asarray((Z[:, :q1].T @ R).T).reshape(R.shape[1], t1.n_levels, t1.p)
        return cls(Z1Z1, Z1y, RZ1, R.T @ R, R.T @ y, Z)


def _lmm_chain(design: Design, priors: dict, term_priors: list, fixef: _FixefPrior, n_iter: int, n_warmup: int,
               thin: int, rng: np.random.Generator) -> np.ndarray:
    """One chain of the lmm sampler; returns (kept draws, parameters).

    The normal draw of (b, beta) uses the blocked Cholesky factor of its precision Q,
    L = [[L_11, 0], [L_21, L_22]] with L_11 a batch of p_1 x p_1 factors (one per level of the
    first term), L_21 = Q_21 L_11^-T and L_22 L_22' = Q_22 - L_21 L_21': then
    gamma = L^-T (L^-1 h + z), z standard normal, has mean Q^-1 h and covariance Q^-1.
    """
    y, X = design.y, design.X
    n, p = X.shape
    cp = _Blocks.from_design(design)
    t1, rest = design.terms[0], design.terms[1:]
    l1, p1 = t1.n_levels, t1.p
    q1 = l1 * p1
    r = cp.RR.shape[0]
    # Where the other terms' blocks D_k^-1 go in Q_22 (their b first, then beta).
    blocks, offset = [], 0
    for t in rest:
        i, j = np.meshgrid(np.arange(t.p), np.arange(t.p), indexing="ij")
        base = offset + np.arange(t.n_levels)[:, None, None] * t.p
        blocks.append(((base + i).ravel(), (base + j).ravel(), slice(q1 + offset, q1 + offset + t.n_levels * t.p)))
        offset += t.n_levels * t.p
    prior_h = np.zeros(r)
    prior_h[r - p:] = fixef.h
    lower = [t.lower for t in design.terms]  # column by column, as theta
    # Starting values: sigma2 and D_k around rough values from least squares, dispersed per chain.
    beta_ols, *_ = np.linalg.lstsq(X, y, rcond=None)
    s2 = float(np.var(y - X @ beta_ols)) * np.exp(0.5 * rng.standard_normal())
    # (D_k's start is diagonal, 0.5 s2 / var(x_j) for its columns: it follows the units of y and x.)
    D = [np.diag(s2 * 0.5 * np.exp(0.5 * rng.standard_normal()) / _column_variances(t.X)) for t in design.terms]
    shape_e = priors["resid_shape"] + n / 2
    kept = (n_iter - n_warmup) // thin
    out = np.empty((kept, p + sum(t.n_theta for t in design.terms) + 1))
    k = 0
    for it in range(n_iter):
        # Q_11 blocks, their factors and inverses; L_21 = Q_21 L_11^-T, level by level.
        L11 = np.linalg.cholesky(cp.Z1Z1 / s2 + np.linalg.inv(D[0]))
        L11inv = np.linalg.inv(L11)  # (l_1, p_1, p_1)
        L21 = np.einsum("rlj,lij->rli", cp.RZ1 / s2, L11inv)  # (r, l_1, p_1)
        L21m = L21.reshape(r, q1)
        Q22 = cp.RR / s2
        Q22[r - p:, r - p:] += fixef.precision
        for (rows, cols, _), Dk, t in zip(blocks, D[1:], rest):
            Q22[rows, cols] += np.tile(np.linalg.inv(Dk).ravel(), t.n_levels)
        L22 = cholesky(Q22 - L21m @ L21m.T, lower=True, check_finite=False)
        # Forward: c = L^-1 h; then add z and solve L' gamma = c + z.
        c1 = np.einsum("lij,lj->li", L11inv, cp.Z1y / s2)
        c2 = solve_triangular(L22, cp.Ry / s2 + prior_h - L21m @ c1.ravel(), lower=True, check_finite=False)
        gamma2 = solve_triangular(L22, c2 + rng.standard_normal(r), lower=True, trans="T", check_finite=False)
        u1 = c1 + rng.standard_normal((l1, p1)) - (gamma2 @ L21m).reshape(l1, p1)
        b1 = np.einsum("lji,lj->li", L11inv, u1)
        gamma = np.concatenate([b1.ravel(), gamma2])  # b in Z's order, then beta
        for j, (t, (df, S)) in enumerate(zip(design.terms, term_priors)):
            bk = (b1 if j == 0 else gamma[blocks[j - 1][2]].reshape(t.n_levels, t.p))
            D[j] = _draw_covariance(rng, df, S, bk)
        beta = gamma[q1 + r - p:]
        resid = y - X @ beta - cp.Z @ gamma[:q1 + r - p]
        s2 = (priors["resid_scale"] + 0.5 * resid @ resid) / rng.standard_gamma(shape_e)
        if it >= n_warmup and (it - n_warmup) % thin == thin - 1:
            out[k] = np.concatenate([beta, *[Dk[low] for Dk, low in zip(D, lower)], [s2]])
            k += 1
    return out
