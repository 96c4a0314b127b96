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

Default priors are proper and weakly informative, scaled to the data so that they mean the same
thing whatever the units of the response: with :math:`s^2` the sample variance of y, every variance
gets :math:`\mathrm{InvGamma}(1, s^2/20)` (prior median about :math:`0.07 s^2`, no prior mean, a
heavy right tail, density zero at 0), a covariance block of a term with columns
:math:`x_1, \dots, x_p` gets :math:`\mathrm{InvWishart}(p+1, S)` with
:math:`S = \operatorname{diag}(s^2 / (10\, v_j))`, :math:`v_j` the variance of :math:`x_j` (1 for the
intercept column) -- the same as the inverse gamma for :math:`p = 1`, and uniform on each
correlation -- and locations get :math:`N(0, 10^6)`. Pass your own to change them; the book's
chapters 12 and 13 show when the choice matters (few groups).

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

from .checks import DataError, require_columns, require_frame, require_numeric
from .design import Design, build_design, factor_codes
from .fit import single_blas_thread
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
        if not 0 < prob < 1:
            raise ValueError(f"prob must be strictly between 0 and 1, got {prob}")
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


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise DataError(f"{name} must be a positive number, got {value}; it is a shape, scale or variance of a prior")
    return value


def _response_variance(y: np.ndarray) -> float:
    """var(y), the unit of the default prior scales (1 for a constant response)."""
    return float(np.var(y, ddof=1)) if np.var(y) > 0 else 1.0


def _scale(name: str, value: float | None, s2y: float) -> float:
    """A prior scale: ``value`` if given, else the default var(y) / 20."""
    return _positive(name, s2y / 20 if value is None else value)


def _check_iterations(n_iter: int, n_warmup: int | None, n_chains: int, thin: int) -> tuple[int, int, int, int]:
    if int(n_chains) < 1:
        raise DataError(f"n_chains must be at least 1, got {n_chains}")
    if int(thin) < 1:
        raise DataError(f"thin must be at least 1, got {thin}")
    n_iter = int(n_iter)
    n_warmup = n_iter // 2 if n_warmup is None else int(n_warmup)
    if n_warmup < 0:
        raise DataError(f"n_warmup must be 0 or more, got {n_warmup}")
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


def one_way(data: pd.DataFrame, response: str, group: str, *, mu_mean: float = 0.0, mu_var: float = 1e6,
            group_shape: float = 1.0, group_scale: float | None = None, resid_shape: float = 1.0,
            resid_scale: float | None = None, n_iter: int = 2000, n_warmup: int | None = None,
            n_chains: int = 4, thin: int = 1, seed=None, update: str = "blocked") -> Posterior:
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
        (any dtype; unbalanced groups are fine; unused categories are dropped).
    mu_mean, mu_var : the normal prior of mu (mean and variance).
    group_shape, group_scale, resid_shape, resid_scale : inverse gamma priors of sigma2_group and
        sigma2_resid; a scale of None means var(y)/20.
    n_iter : iterations per chain, warm-up included; n_warmup (default n_iter // 2) are discarded,
        and of the rest every ``thin``-th is kept.
    n_chains, seed : chains are vectorized; chain k draws from the k-th child of SeedSequence(seed).

    Returns a :class:`Posterior` with columns ``mu``, ``sigma2_group``, ``sigma2_resid`` and
    ``a[level]`` for each group level.
    """
    require_frame(data)
    require_columns(data, [response, group])
    require_numeric(data, response)
    if update not in ("blocked", "single"):
        raise DataError(f"update must be 'blocked' or 'single', got {update!r}")
    n_iter, n_warmup, n_chains, thin = _check_iterations(n_iter, n_warmup, n_chains, thin)
    frame = data[[response, group]]
    if frame.isna().any().any():
        raise DataError(f"{int(frame.isna().any(axis=1).sum())} rows have a missing {response!r} or {group!r}; "
                        f"drop them first, e.g. data.dropna(subset=[{response!r}, {group!r}])")
    y = frame[response].to_numpy(dtype=float)
    if not np.all(np.isfinite(y)):
        raise DataError(f"the response {response!r} has non-finite values; remove those rows")
    g = frame[group]
    if isinstance(g.dtype, pd.CategoricalDtype):
        empty = [str(c) for c, k in g.value_counts(sort=False).items() if k == 0]
        if empty:
            raise DataError(f"the group(s) {', '.join(empty)} of {group!r} have no observations; drop the unused "
                            f"categories first, e.g. data[{group!r}].cat.remove_unused_categories()")
    codes, levels = factor_codes(frame, (group,))  # levels in lmer's order
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
    priors = {
        "mu_mean": float(mu_mean), "mu_var": _positive("mu_var", mu_var),
        "group_shape": _positive("group_shape", group_shape),
        "group_scale": _scale("group_scale", group_scale, s2y),
        "resid_shape": _positive("resid_shape", resid_shape),
        "resid_scale": _scale("resid_scale", resid_scale, s2y),
    }
    draws = _one_way_chains(ybar, n, ssw, priors, n_iter, n_warmup, n_chains, thin, seed, update)
    names = ["mu", "sigma2_group", "sigma2_resid"] + [f"a[{level}]" for level in levels]
    return _posterior(draws, names, f"{response} ~ 1 + (1 | {group}), Gibbs ({update} updates)",
                      priors, n_warmup, thin)


def _one_way_chains(ybar, n, ssw, priors, n_iter, n_warmup, n_chains, thin, seed, update) -> np.ndarray:
    """The sampler's loop, vectorized across chains; returns (chains, kept draws, 3 + m).

    ``ybar`` may also be (chains, m) and ``ssw`` (chains,): one data set per chain, with the same
    group sizes ``n`` (the calibration tests run hundreds of simulated data sets at once so).
    All random numbers are drawn before the loop, chain by chain from the chain's own generator:
    the shapes of the inverse gamma conditionals do not change, so sigma^2 = scale / Gamma(shape, 1).
    """
    m, N = len(n), n.sum()
    m0, v0 = priors["mu_mean"], priors["mu_var"]
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
        s2a = (scale_a + 0.5 * (a * a).sum(axis=1)) / ga[t]
        r = ybar - mu[:, None] - a
        s2e = (scale_e + 0.5 * (ssw + (n * r * r).sum(axis=1))) / ge[t]
        if t >= n_warmup and (t - n_warmup) % thin == thin - 1:
            out[k, :, 0], out[k, :, 1], out[k, :, 2], out[k, :, 3:] = mu, s2a, s2e, a
            k += 1
    return out.transpose(1, 0, 2)


def one_way_exact(data: pd.DataFrame, response: str, group: str, *, mu_mean: float, mu_var: float,
                  group_shape: float, group_scale: float, resid_shape: float, resid_scale: float,
                  grid: int = 400) -> pd.DataFrame:
    """The exact posterior means and sds of mu, sigma2_group and sigma2_resid of the one-way model
    (the model and priors of :func:`one_way`; every prior must be given), by quadrature.

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
    y = data[response].to_numpy(dtype=float)
    _, codes = np.unique(data[group].astype(str).to_numpy(), return_inverse=True)
    n = np.bincount(codes).astype(float)
    centre = y.mean()  # centred for accuracy; mu's mean is shifted back at the end
    ybar = np.bincount(codes, weights=y - centre) / n
    ssw = float(((y - centre - ybar[codes]) ** 2).sum())
    N, m, m0 = n.sum(), len(n), mu_mean - centre

    def log_post(u, v):  # u = log s2a, v = log s2e (arrays of one shape)
        s2a, s2e = np.exp(u)[..., None], np.exp(v)[..., None]
        w = n / (s2e + n * s2a)
        P = 1 / mu_var + w.sum(-1)
        M = (m0 / mu_var + (w * ybar).sum(-1)) / P
        loglik = -0.5 * ((N - m) * v[...] + ssw / np.exp(v) + np.log(s2e + n * s2a).sum(-1)
                         + (w * ybar ** 2).sum(-1) + m0 ** 2 / mu_var - P * M ** 2 + np.log(mu_var * P))
        prior = (stats.invgamma.logpdf(np.exp(u), group_shape, scale=group_scale)
                 + stats.invgamma.logpdf(np.exp(v), resid_shape, scale=resid_scale))
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
    v = term.X.var(axis=0)
    v = np.where(v > 1e-12 * max(1.0, v.max()), v, 1.0)  # the intercept column (constant) counts as 1
    return np.diag(s2y / (10 * v))


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


def lmm(formula: str, data: pd.DataFrame, *, fixef_mean: float = 0.0, fixef_var: float = 1e6,
        var_shape: float = 1.0, var_scale: float | None = None, cov_df: float | None = None,
        cov_scale=None, resid_shape: float = 1.0, resid_scale: float | None = None,
        n_iter: int = 2000, n_warmup: int | None = None, n_chains: int = 4, thin: int = 1,
        seed=None) -> Posterior:
    r"""Gibbs sampler for the linear mixed model of an lme4 formula,
    :math:`y = X\beta + Zb + e`, :math:`e \sim N(0, \sigma^2 I)`, with priors
    :math:`\beta \sim N(\text{fixef\_mean}, \text{fixef\_var}\, I)`; for each random-effects term k
    (levels :math:`j = 1..l_k`, :math:`p_k` columns) :math:`b_{kj} \sim N(0, D_k)` independently, with
    :math:`D_k \sim \mathrm{InvGamma}(\text{var\_shape}, \text{var\_scale})` when :math:`p_k = 1` and
    :math:`D_k \sim \mathrm{InvWishart}(\text{cov\_df}, \text{cov\_scale})` otherwise; and
    :math:`\sigma^2 \sim \mathrm{InvGamma}(\text{resid\_shape}, \text{resid\_scale})`.

    X and Z are the package's design matrices (``design.build_design``), so every formula ``lmer``
    takes works here: random slopes, several terms, nested and crossed factors, ``||``. Each
    iteration draws

    * :math:`\theta = (\beta, b)` jointly from :math:`N(Q^{-1}h, Q^{-1})` with
      :math:`Q = C^\top C/\sigma^2 + \operatorname{blockdiag}(I/\text{fixef\_var}, I_{l_1}\otimes D_1^{-1}, \dots)`,
      :math:`C = [X\ Z]` and :math:`h = C^\top y/\sigma^2 + (\text{fixef\_mean}/\text{fixef\_var}, 0)`,
      through the Cholesky factor :math:`Q = LL^\top`: :math:`\theta = Q^{-1}h + L^{-\top}z`;
    * :math:`D_k \mid b \sim \mathrm{InvWishart}(\text{cov\_df} + l_k, \text{cov\_scale} + \sum_j b_{kj}b_{kj}^\top)`
      (:math:`\mathrm{InvGamma}(\text{var\_shape} + l_k/2, \text{var\_scale} + \tfrac12\sum_j b_{kj}^2)` for scalar terms);
    * :math:`\sigma^2 \mid \beta, b \sim \mathrm{InvGamma}(\text{resid\_shape} + n/2, \text{resid\_scale} + \tfrac12\|y - X\beta - Zb\|^2)`.

    Defaults (see the module docstring): fixef N(0, 10^6); var_scale and resid_scale var(y)/20 with
    shape 1; cov_df = p_k + 1 and cov_scale = diag(var(y) / (10 var(x_j))). ``cov_scale`` may be a
    matrix (used for every vector term) or a dict from the grouping factor's name to a matrix.

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
    priors = {
        "fixef_mean": float(fixef_mean), "fixef_var": _positive("fixef_var", fixef_var),
        "var_shape": _positive("var_shape", var_shape),
        "var_scale": _scale("var_scale", var_scale, s2y),
        "resid_shape": _positive("resid_shape", resid_shape),
        "resid_scale": _scale("resid_scale", resid_scale, s2y),
    }
    term_priors = []
    for t in design.terms:
        if t.p == 1:
            term_priors.append((priors["var_shape"], np.array([[priors["var_scale"]]])))
            continue
        df = t.p + 1.0 if cov_df is None else float(cov_df)
        if not df > t.p - 1:
            raise DataError(f"cov_df must exceed p - 1 = {t.p - 1} for the term ({t.term.expr} | {t.group}), got {df}")
        S = cov_scale.get(t.group) if isinstance(cov_scale, dict) else cov_scale
        S = _default_cov_scale(t, s2y) if S is None else np.atleast_2d(np.asarray(S, dtype=float))
        if S.shape != (t.p, t.p) or not np.allclose(S, S.T) or np.any(np.linalg.eigvalsh(S) <= 0):
            raise DataError(f"cov_scale for the term ({t.term.expr} | {t.group}) must be a symmetric positive "
                            f"definite {t.p} x {t.p} matrix (columns {', '.join(t.columns)}), got {S.tolist()}")
        term_priors.append((df, S))
        priors[f"cov_df[{t.group}]"], priors[f"cov_scale[{t.group}]"] = df, S.tolist()
    with single_blas_thread():  # small matrices: BLAS threads cost more than they save
        draws = [_lmm_chain(design, priors, term_priors, n_iter, n_warmup, thin, rng)
                 for rng in _chain_generators(seed, n_chains)]
    names = list(design.x_names) + _cov_names(design) + ["sigma2"]
    return _posterior(np.stack(draws), names, f"{formula}, Gibbs", priors, n_warmup, thin)


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


def _lmm_chain(design: Design, priors: dict, term_priors: list, n_iter: int, n_warmup: int, thin: int,
               rng: np.random.Generator) -> np.ndarray:
    """One chain of the lmm sampler; returns (kept draws, parameters).

    The normal draw of (b, beta) uses the blocked Cholesky factor of its precision Q,
    L = [[L_11, 0], [L_21, L_22]] with L_11 a batch of p_1 x p_1 factors (one per level of the
    first term), L_21 = Q_21 L_11^-T and L_22 L_22' = Q_22 - L_21 L_21': then
    theta = L^-T (L^-1 h + z), z standard normal, has mean Q^-1 h and covariance Q^-1.
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
    beta_diag = np.arange(r - p, r)
    prior_h = np.zeros(r)
    prior_h[r - p:] = priors["fixef_mean"] / priors["fixef_var"]
    lower = [np.triu_indices(t.p)[::-1] for t in design.terms]  # column by column, as theta
    # Starting values: sigma2 and D_k around rough values from least squares, dispersed per chain.
    beta_ols, *_ = np.linalg.lstsq(X, y, rcond=None)
    s2 = float(np.var(y - X @ beta_ols)) * np.exp(0.5 * rng.standard_normal())
    D = [np.diag(np.diag(S) / np.diag(S).max() * s2 * 0.5 * np.exp(0.5 * rng.standard_normal())) for _, S in term_priors]
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
        Q22[beta_diag, beta_diag] += 1.0 / priors["fixef_var"]
        for (rows, cols, _), Dk, t in zip(blocks, D[1:], rest):
            Q22[rows, cols] += np.tile(np.linalg.inv(Dk).ravel(), t.n_levels)
        L22 = cholesky(Q22 - L21m @ L21m.T, lower=True, check_finite=False)
        # Forward: c = L^-1 h; then add z and solve L' theta = c + z.
        c1 = np.einsum("lij,lj->li", L11inv, cp.Z1y / s2)
        c2 = solve_triangular(L22, cp.Ry / s2 + prior_h - L21m @ c1.ravel(), lower=True, check_finite=False)
        theta2 = solve_triangular(L22, c2 + rng.standard_normal(r), lower=True, trans="T", check_finite=False)
        u1 = c1 + rng.standard_normal((l1, p1)) - (theta2 @ L21m).reshape(l1, p1)
        b1 = np.einsum("lji,lj->li", L11inv, u1)
        theta = np.concatenate([b1.ravel(), theta2])  # b in Z's order, then beta
        for j, (t, (df, S)) in enumerate(zip(design.terms, term_priors)):
            bk = (b1 if j == 0 else theta[blocks[j - 1][2]].reshape(t.n_levels, t.p))
            D[j] = _draw_covariance(rng, df, S, bk)
        beta = theta[q1 + r - p:]
        resid = y - X @ beta - cp.Z @ theta[:q1 + r - p]
        s2 = (priors["resid_scale"] + 0.5 * resid @ resid) / rng.standard_gamma(shape_e)
        if it >= n_warmup and (it - n_warmup) % thin == thin - 1:
            out[k] = np.concatenate([beta, *[Dk[low] for Dk, low in zip(D, lower)], [s2]])
            k += 1
    return out
