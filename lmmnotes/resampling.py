r"""The parametric bootstrap: simulate from a fitted model, refit, collect a statistic.

``bootstrap(fit, statistic, nsim, seed)`` is lme4's ``bootMer``: draw ``nsim`` responses
:math:`y^* = X\hat\beta + Z\Lambda_{\hat\theta}u^* + \varepsilon^*` from the fit, refit the model
to each and evaluate ``statistic`` on the refit.

``lrt(null, alt, nsim, seed)`` is the parametric bootstrap of the likelihood-ratio statistic
:math:`2\{\ell(\hat\psi_1) - \ell(\hat\psi_0)\}` between nested models fitted by maximum
likelihood: responses are drawn from the *null* fit and both models are refitted to each. The
bootstrap p-value is :math:`(k+1)/(B+1)`, with :math:`k` the number of the :math:`B` replicates at
least as large as the observed statistic: a valid p-value (chapter 7 of the book explains why
:math:`k/B` is not, and why :math:`k = 0` never means p = 0), with Monte Carlo standard error
:math:`\sqrt{p(1-p)/B}`.

Only the response changes between replicates, so everything that depends on the design alone
(X, Z and their cross-products) is computed once, and each refit starts at the fitted theta.
``lrt`` goes further when both models have at most one scalar random-effects term (e.g.
``(1 | g)``): the profiled criterion is evaluated for all replicates at once (a grid over theta,
then golden-section refinement, vectorized over replicates), which is what makes 10^4 replicates
take well under a second. ``bootstrap`` and ``refit_responses`` refit replicate by replicate.
"""

from __future__ import annotations

import multiprocessing
import pickle
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from .checks import DataError, check_level, check_nsim, resolve_n_jobs
from .criterion import criterion_from_parts
from .design import canonical_theta, column_space_coefficients
from .display import format_p
from .optimizer import single_blas_thread
from .results import LmerFit

ZERO_TOLERANCE = 1e-5  # a bootstrap LRT below this counts as zero (theta-hat on the boundary)
CHUNK = 50  # responses are simulated in chunks of this size, whatever n_jobs, so a seed gives the same draws
TIE_TOLERANCE = 1e-10  # statistics this close count as equal (a difference of criteria that is 0 exactly)


def exceedances(samples: np.ndarray, observed: float) -> int:
    """k, the number of ``samples`` at least as large as ``observed``.

    Values within ``TIE_TOLERANCE`` of ``observed`` count as ties, hence as at least as large: a
    statistic that is 0 in exact arithmetic (the alternative's variance estimated at 0) comes out
    as a difference of two criteria, +-1e-15, and must still count every simulated statistic that
    is exactly 0.
    """
    return int(np.sum(samples >= observed - TIE_TOLERANCE))


def upper_tail_p(samples: np.ndarray, observed: float) -> float:
    """k / B, the share of ``samples`` at least as large as ``observed`` (``exceedances``): the
    Monte Carlo estimate of a p-value whose null distribution is known exactly (the exact RLRT,
    as RLRsim reports it)."""
    return exceedances(samples, observed) / len(samples)


# ---- the general simulate / refit loop ----------------------------------------------------------
@dataclass(frozen=True)
class BootstrapResult:
    """Replicates of a statistic from ``bootstrap``."""

    observed: pd.Series  # the statistic on the original fit
    replicates: pd.DataFrame = field(repr=False)  # one row per replicate; NaN where the refit failed
    n_failed: int
    seed: object = None

    @property
    def nsim(self) -> int:
        return len(self.replicates)

    def percentile_interval(self, level: float = 0.95) -> pd.DataFrame:
        """Percentile intervals of each statistic over the successful replicates."""
        level = check_level(level)
        alpha = (1.0 - level) / 2.0
        q = self.replicates.quantile([alpha, 1.0 - alpha]).T
        q.columns = [_percent(alpha), _percent(1.0 - alpha)]
        return q


def _percent(p: float) -> str:
    return f"{100 * p:.3g} %"


def _as_series(value) -> pd.Series:
    if isinstance(value, pd.Series):
        return value.astype(float)
    if isinstance(value, dict):
        return pd.Series(value, dtype=float)
    return pd.Series(np.atleast_1d(np.asarray(value, dtype=float)))


def _refit_statistics(fit: LmerFit, statistic: Callable, Y: np.ndarray, start=None) -> tuple[list, int]:
    """Refit ``fit`` to each column of Y and evaluate ``statistic``; None marks a failed refit."""
    values = []
    with single_blas_thread():
        for k in range(Y.shape[1]):
            values.append(_refit_statistic(fit, statistic, Y[:, k], start))
    return values, sum(v is None for v in values)


def _refit_statistics_from(fit: LmerFit, statistic: Callable, start, Y: np.ndarray) -> tuple[list, int]:
    """``_refit_statistics`` with the start first, for the workers (shared arguments come first)."""
    return _refit_statistics(fit, statistic, Y, start)


def _refit_statistic(fit: LmerFit, statistic: Callable, y: np.ndarray, start=None) -> pd.Series | None:
    try:
        refit = fit.refit(y, start=start)
        if not refit.converged:
            raise RuntimeError(refit.message)
        return _as_series(statistic(refit))
    except (ArithmeticError, ValueError, RuntimeError, np.linalg.LinAlgError):
        return None


_WORKER: dict = {}  # set in each worker process by _start_worker, never in the parent


def _start_worker(*shared) -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # one BLAS thread per worker: n_jobs processes must not share the cores n_jobs-fold
    _WORKER["shared"] = shared


def _in_worker(function: Callable, Y: np.ndarray):
    return function(*_WORKER["shared"], Y)


def _pool(n_jobs: int, *shared) -> ProcessPoolExecutor:
    """Worker processes holding ``shared`` (the fit, the statistic); only the simulated responses
    travel to them afterwards.

    Where the platform can fork (Linux, macOS), the workers inherit ``shared``, so any statistic
    works, a lambda included. Elsewhere (Windows) they are spawned and receive ``shared`` by
    pickling, which a lambda or a function defined inside another cannot survive: that is
    refused here with the way out, rather than failing inside the pool.
    """
    if "fork" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("fork")
    else:
        context = multiprocessing.get_context("spawn")
        try:
            pickle.dumps(shared)
        except (pickle.PicklingError, AttributeError, TypeError) as error:
            raise ValueError(
                "n_jobs > 1 starts new Python processes, which on this platform (no 'fork') receive the "
                "statistic by pickling, and it cannot be pickled: define it with def at the top level of a "
                f"module (not as a lambda or inside a function), or use n_jobs=1 ({error})") from None
    return ProcessPoolExecutor(max_workers=n_jobs, mp_context=context, initializer=_start_worker, initargs=shared)


def _chunks(nsim: int, size: int) -> list[range]:
    return [range(start, min(start + size, nsim)) for start in range(0, nsim, size)]


def _progress(iterable, total: int, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="chunk")


def bootstrap(fit: LmerFit, statistic: Callable[[LmerFit], object], nsim: int = 1000, seed=None, *,
              use_u: bool = False, n_jobs: int = 1, progress: bool = False) -> BootstrapResult:
    """Parametric bootstrap of ``statistic`` (lme4's ``bootMer``).

    Parameters
    ----------
    fit : the fitted model to simulate from and refit (ML or REML, as fitted).
    statistic : function of a fitted model returning a number, an array, a dict or a Series,
        e.g. ``lambda f: f.fixef``.
    nsim : number of bootstrap replicates.
    seed : seed of ``numpy.random.default_rng``; the same seed gives the same replicates for
        any ``n_jobs``.
    use_u : keep the conditional modes of the random effects and draw only new residuals
        (lme4's ``use.u = TRUE``); by default new random effects are drawn as well.
    n_jobs : number of processes for the refits; -1 means all cores, -2 all but one (joblib's
        convention).
    progress : show a tqdm progress bar.

    Replicates whose refit fails or does not converge are kept as rows of NaN and counted in
    ``n_failed``; they are never dropped silently.
    """
    nsim = check_nsim(nsim)
    n_jobs = resolve_n_jobs(n_jobs)
    observed = _as_series(statistic(fit))
    rng = np.random.default_rng(seed)
    chunks = _chunks(nsim, CHUNK)
    # all responses are drawn in the parent, chunk by chunk, so n_jobs does not change them
    responses = (fit.simulate(len(c), seed=rng, use_u=use_u).to_numpy() for c in chunks)
    replicates, failed = _refit_chunks(fit, statistic, observed, responses, len(chunks), n_jobs, progress, "bootstrap")
    return BootstrapResult(observed, replicates, failed, seed)


def _refit_chunks(fit: LmerFit, statistic: Callable, observed: pd.Series, responses, n_chunks: int, n_jobs: int,
                  progress: bool, desc: str, start=None) -> tuple[pd.DataFrame, int]:
    """Refit ``fit`` to each column of each chunk of responses (in ``n_jobs`` processes, each refit
    from ``start``, default the fit's theta) and stack the statistics, one row per response; a
    failed refit gives a row of NaN."""
    values, failed = [], 0
    if n_jobs == 1:
        for Y in _progress(responses, n_chunks, progress, desc):
            v, f = _refit_statistics(fit, statistic, Y, start)
            values += v
            failed += f
    else:
        with _pool(n_jobs, fit, statistic, start) as pool:
            futures = [pool.submit(_in_worker, _refit_statistics_from, Y) for Y in responses]
            for future in _progress(futures, len(futures), progress, desc):
                v, f = future.result()
                values += v
                failed += f
    rows = [v.to_numpy() if v is not None else np.full(len(observed), np.nan) for v in values]
    return pd.DataFrame(np.vstack(rows), columns=observed.index), failed


def refit_responses(fit: LmerFit, responses, statistic: Callable[[LmerFit], object], *, start=None,
                    n_jobs: int = 1, progress: bool = False) -> BootstrapResult:
    """Refit ``fit`` to each column of ``responses`` and evaluate ``statistic`` on each refit.

    The bootstrap's loop, for responses drawn elsewhere: in a Monte Carlo study they come from a
    known truth (``simulate_responses``), not from the fit. ``responses`` is an n x B array or
    DataFrame whose rows are the rows the fit used, in its order. Each refit starts at the fit's
    theta and reuses everything that depends on the design alone, so a refit costs a fraction of
    ``lmer``; ``start`` replaces the starting theta (e.g. ``fit.design.default_start``, lme4's
    start, so that each replicate's result depends on its response alone, not on where
    the first fit happened to stop). ``n_jobs`` processes do the refits (-1: all cores, -2: all but
    one, as joblib). The result's ``replicates`` has one row per column of ``responses``; refits
    that raise or do not converge give rows of NaN and are counted in ``n_failed``. ``observed``
    is the statistic on ``fit`` itself.
    """
    n_jobs = resolve_n_jobs(n_jobs)
    if isinstance(responses, pd.Series):
        responses = responses.to_frame()
    Y = np.asarray(responses, dtype=float)
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.ndim != 2 or Y.shape[0] != fit.nobs:
        raise ValueError(f"responses must have one row per observation of the fit ({fit.nobs} rows, one column "
                         f"per replicate); got shape {Y.shape}")
    if Y.shape[1] < 1:
        raise ValueError("responses has no columns; pass at least one response to refit")
    if not np.all(np.isfinite(Y)):
        raise ValueError("responses has missing or infinite values; refit needs complete responses (take the "
                         "rows the fit used: responses.loc[fit.design.row_index])")
    observed = _as_series(statistic(fit))
    chunks = _chunks(Y.shape[1], CHUNK)
    parts = (Y[:, c.start:c.stop] for c in chunks)
    if start is not None:  # checked here, before any worker starts
        start = canonical_theta(start, fit.design)
    replicates, failed = _refit_chunks(fit, statistic, observed, parts, len(chunks), n_jobs, progress, "refits", start)
    return BootstrapResult(observed, replicates, failed)


# ---- the likelihood-ratio test ----------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class LrtResult:
    """Parametric bootstrap of a likelihood-ratio test, from ``lrt``."""

    statistic: float  # observed 2 (loglik_alt - loglik_null)
    df: int  # difference in the number of parameters
    p_chisq: float  # chi-square(df) reference distribution
    p_mixture: float  # 50:50 mixture of chi-square(df - 1) and chi-square(df); NaN unless alt adds one random term
    exceed: int  # k: the bootstrap statistics at least as large as the observed one
    replicates: int  # B: the bootstrap statistics computed (failed refits excluded)
    fraction_zero: float  # fraction of bootstrap statistics at zero
    samples: np.ndarray = field(repr=False)

    @property
    def nsim(self) -> int:
        """The replicates asked for (``replicates`` of them succeeded)."""
        return len(self.samples)

    @property
    def p_boot(self) -> float:
        """The bootstrap p-value (k + 1)/(B + 1) (module docstring)."""
        return (self.exceed + 1) / (self.replicates + 1)

    @property
    def p_boot_se(self) -> float:
        """Its Monte Carlo standard error, sqrt(p (1 - p) / B)."""
        return float(np.sqrt(self.p_boot * (1.0 - self.p_boot) / self.replicates))

    def __str__(self) -> str:
        mixture = "" if np.isnan(self.p_mixture) else f"mixture p = {format_p(self.p_mixture)}, "
        return (f"LRT = {self.statistic:.4f} on {self.df} df: chi-square p = {format_p(self.p_chisq)}, "
                f"{mixture}bootstrap p = (k + 1)/(B + 1) = {self.p_boot:.4f} (k = {self.exceed} of B = "
                f"{self.replicates}, MC SE {self.p_boot_se:.4f}; {100 * self.fraction_zero:.1f}% zeros)")


@dataclass(frozen=True, kw_only=True)
class ComparedModel:
    """What ``lrt`` needs of either model: X, y, the log-likelihood and parameter count."""

    X: np.ndarray
    y: np.ndarray
    loglik: float
    n_parameters: int
    fit: LmerFit | None  # None for an ordinary least-squares fit
    sigma_ml: float = 0.0
    beta: np.ndarray | None = None


def _ols_model(result) -> ComparedModel:
    model = getattr(result, "model", None)
    if model is None or not hasattr(model, "exog") or not hasattr(result, "ssr"):
        raise TypeError("a null model without random effects must be a statsmodels OLS fit, e.g. "
                        "statsmodels.formula.api.ols('y ~ 1', data).fit()")
    if getattr(model, "weights", None) is not None and not np.all(np.asarray(model.weights) == 1):
        raise ValueError("the null model must be an unweighted OLS fit")
    X = np.asarray(model.exog, dtype=float)
    y = np.asarray(model.endog, dtype=float)
    n = len(y)
    loglik = -0.5 * n * (1.0 + np.log(2.0 * np.pi * result.ssr / n))
    return ComparedModel(X=X, y=y, loglik=float(loglik), n_parameters=X.shape[1] + 1, fit=None,
                         sigma_ml=float(np.sqrt(result.ssr / n)), beta=np.asarray(result.params, dtype=float))


def compared_model(fit: LmerFit, role: str) -> ComparedModel:
    if fit.reml:
        raise ValueError(f"the {role} model was fitted by REML; likelihood-ratio tests need ML fits: "
                         "refit with lmer(..., reml=False)")
    return ComparedModel(X=fit.design.X, y=fit.design.y, loglik=fit.loglik, n_parameters=fit.n_parameters, fit=fit)


def check_nested(null: ComparedModel, alt: ComparedModel) -> None:
    if len(null.y) != len(alt.y) or not np.allclose(null.y, alt.y, rtol=1e-12, atol=1e-12):
        raise DataError("the two models were fitted to different data (responses differ); fit both to the "
                         "same rows of the same data, after removing missing values")
    if column_space_coefficients(alt.X, null.X) is None:
        raise DataError("the models are not nested: the null model's fixed effects are not contained in the "
                         "alternative's")
    if null.n_parameters >= alt.n_parameters:
        raise DataError(f"the null model must have fewer parameters than the alternative "
                         f"({null.n_parameters} vs {alt.n_parameters}); did you swap null and alt?")
    if null.fit is not None:
        alt_terms = {(t.group, c) for t in alt.fit.design.terms for c in t.columns}
        missing = [f"({c} | {t.group})" for t in null.fit.design.terms for c in t.columns
                   if (t.group, c) not in alt_terms]
        if missing:
            raise DataError(f"the models are not nested: the alternative lacks the random effect(s) "
                             f"{', '.join(missing)} of the null model")


def _adds_one_random_term(null: ComparedModel, alt: ComparedModel) -> bool:
    """Same fixed effects, and the alternative has exactly one random-effects term more."""
    n_null = 0 if null.fit is None else len(null.fit.design.terms)
    return null.X.shape[1] == alt.X.shape[1] and len(alt.fit.design.terms) == n_null + 1


def _ols_deviances(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """-2 max log-likelihood of y ~ N(X beta, sigma^2 I) for each column of Y."""
    n = Y.shape[0]
    Q, _ = np.linalg.qr(X)
    rss = np.sum(Y**2, axis=0) - np.sum((Q.T @ Y) ** 2, axis=0)
    return n * (1.0 + np.log(2.0 * np.pi * rss / n))


def _scalar_term_deviances(fit: LmerFit, Y: np.ndarray, reml: bool) -> np.ndarray:
    r"""The minimized criterion for each column of Y, for a model with one scalar random term.

    With :math:`Z^\top Z = \mathrm{diag}(s_k)` and :math:`A_k = \theta^2 s_k + 1`, the quantities of
    ``criterion.factorize`` become, replicate by replicate,
    :math:`R_{ZX} = \theta Z^\top X / \sqrt{A}`, :math:`c_u = \theta Z^\top y/\sqrt{A}`,
    :math:`R_X^\top R_X = X^\top X - R_{ZX}^\top R_{ZX}`, :math:`c_\beta = R_X^{-\top}(X^\top y - R_{ZX}^\top c_u)`
    and :math:`r^2 = y^\top y - \|c_u\|^2 - \|c_\beta\|^2`, and the criterion follows from them by the
    formula every fit uses (``criterion.criterion_from_parts``). The minimum over theta is found on
    a log-spaced grid (and 0), then refined by golden-section search, all vectorized.
    """
    design, cp = fit.design, fit.cross_products
    t = design.terms[0]
    n, p = cp.n, cp.p
    if p:  # use least-squares residuals as responses: same criterion, no cancellation (CrossProducts.with_response)
        Q, _ = np.linalg.qr(design.X)
        Y = Y - Q @ (Q.T @ Y)
    s = cp.Z1Z1[:, 0, 0]  # (l,)
    ZtX = cp.Z1X[:, 0, :]  # (l, p)
    Zty = np.zeros((t.n_levels, Y.shape[1]))
    np.add.at(Zty, t.codes, t.X[:, [0]] * Y)  # (l, B)
    Xty = design.X.T @ Y  # (p, B)
    yty = np.sum(Y**2, axis=0)
    outer = ZtX[:, :, None] * ZtX[:, None, :]  # (l, p, p)

    def criterion(theta: np.ndarray) -> np.ndarray:  # theta (B,) -> criterion (B,)
        A = theta[:, None] ** 2 * s[None, :] + 1.0  # (B, l)
        w = theta[:, None] ** 2 / A  # theta^2 / A_k
        RXtRX = cp.XtX[None] - np.einsum("bl,lij->bij", w, outer)
        R = np.linalg.cholesky(RXtRX)  # lower: R R' = R_X' R_X
        cu2 = np.sum(w * Zty.T**2, axis=1)  # |c_u|^2
        rhs = Xty.T - np.einsum("bl,li,lb->bi", w, ZtX, Zty)
        c_beta = np.linalg.solve(R, rhs[:, :, None])[:, :, 0]
        r2 = np.maximum(yty - cu2 - np.sum(c_beta**2, axis=1), np.finfo(float).tiny)
        logdet_L2 = np.sum(np.log(A), axis=1)
        logdet_RX2 = 2.0 * np.sum(np.log(np.diagonal(R, axis1=1, axis2=2)), axis=1)
        return criterion_from_parts(logdet_L2, logdet_RX2, r2, n, p, reml)

    B = Y.shape[1]
    grid = np.concatenate([[0.0], np.geomspace(1e-3, 1e3, 80)]) * max(fit.theta[0], 0.1)
    values = np.stack([criterion(np.full(B, g)) for g in grid])  # (grid, B)
    best = np.argmin(values, axis=0)
    lo = grid[np.maximum(best - 1, 0)]
    hi = grid[np.minimum(best + 1, len(grid) - 1)]
    golden = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = lo.copy(), hi.copy()
    c, d = b - golden * (b - a), a + golden * (b - a)
    fc, fd = criterion(c), criterion(d)
    for _ in range(60):
        left = fc < fd  # the minimum lies in [a, d]: keep c as the new d; else in [c, b]
        a, b = np.where(left, a, c), np.where(left, d, b)
        c_next = np.where(left, b - golden * (b - a), d)
        d_next = np.where(left, c, a + golden * (b - a))
        f_new = criterion(np.where(left, c_next, d_next))
        fc, fd = np.where(left, f_new, fd), np.where(left, fc, f_new)
        c, d = c_next, d_next
    refined = np.minimum(fc, fd)
    return np.minimum(refined, values.min(axis=0))


def _has_one_scalar_term(fit: LmerFit | None) -> bool:
    return fit is not None and len(fit.design.terms) == 1 and fit.design.terms[0].p == 1


def _deviances(model: ComparedModel, Y: np.ndarray) -> np.ndarray:
    """-2 max log-likelihood of ``model`` refitted to each column of Y."""
    if model.fit is None:
        return _ols_deviances(model.X, Y)
    if _has_one_scalar_term(model.fit):
        return _scalar_term_deviances(model.fit, Y, reml=False)
    out = np.empty(Y.shape[1])
    for k in range(Y.shape[1]):
        refit = model.fit.refit(Y[:, k])
        out[k] = refit.criterion if refit.converged else np.nan
    return out


def _simulate(model: ComparedModel, nsim: int, rng: np.random.Generator) -> np.ndarray:
    if model.fit is None:
        return (model.X @ model.beta)[:, None] + model.sigma_ml * rng.standard_normal((len(model.y), nsim))
    return model.fit.simulate(nsim, seed=rng).to_numpy()


def _lrt_chunk(null: ComparedModel, alt: ComparedModel, Y: np.ndarray) -> np.ndarray:
    return np.maximum(_deviances(null, Y) - _deviances(alt, Y), 0.0)


def lrt(null, alt: LmerFit, nsim: int = 1000, seed=None, *, n_jobs: int = 1, progress: bool = False) -> LrtResult:
    """Parametric bootstrap likelihood-ratio test of ``null`` against the larger model ``alt``.

    Parameters
    ----------
    null : the smaller model: an ``LmerFit`` fitted by ML, or, for a null without random
        effects, a statsmodels OLS fit (``statsmodels.formula.api.ols("y ~ 1", data).fit()``).
    alt : the larger model, an ``LmerFit`` fitted by ML (``lmer(..., reml=False)``), to the
        same data.
    nsim : number of bootstrap replicates B.
    seed : seed of ``numpy.random.default_rng``; the same seed gives the same result for any
        ``n_jobs``.
    n_jobs : number of processes for the refits (-1: all cores, -2: all but one, as joblib).

    Responses are simulated from the null fit and both models refitted to each; replicates whose
    refit fails are excluded from the p-value and reported in the error message if they are
    more than 1% of the total.
    """
    if not isinstance(alt, LmerFit):
        raise TypeError("alt must be a model fitted with lmmnotes.lmer(..., reml=False)")
    nsim = check_nsim(nsim)
    n_jobs = resolve_n_jobs(n_jobs)
    null_model = compared_model(null, "null") if isinstance(null, LmerFit) else _ols_model(null)
    alt_model = compared_model(alt, "alternative")
    check_nested(null_model, alt_model)
    observed = max(2.0 * (alt_model.loglik - null_model.loglik), 0.0)
    df = alt_model.n_parameters - null_model.n_parameters

    rng = np.random.default_rng(seed)
    batched = (null_model.fit is None or _has_one_scalar_term(null_model.fit)) and _has_one_scalar_term(alt)
    chunks = _chunks(nsim, nsim if batched else CHUNK)
    responses = (_simulate(null_model, len(c), rng) for c in chunks)
    if n_jobs == 1 or batched:
        parts = [_lrt_chunk(null_model, alt_model, Y) for Y in _progress(responses, len(chunks), progress, "LRT")]
    else:
        with _pool(n_jobs, null_model, alt_model) as pool:
            futures = [pool.submit(_in_worker, _lrt_chunk, Y) for Y in responses]
            parts = [f.result() for f in _progress(futures, len(futures), progress, "LRT")]
    samples = np.concatenate(parts)
    ok = np.isfinite(samples)
    if (~ok).mean() > 0.01:
        raise RuntimeError(f"{int((~ok).sum())} of {nsim} bootstrap refits failed; the p-value would be unreliable")
    kept = samples[ok]
    p_chisq = float(stats.chi2.sf(observed, df))
    p_mixture = np.nan
    if _adds_one_random_term(null_model, alt_model):  # Self and Liang (1987); Stram and Lee (1994)
        p_lower = float(stats.chi2.sf(observed, df - 1)) if df > 1 else float(observed <= 0)
        p_mixture = 0.5 * (p_chisq + p_lower)
    return LrtResult(statistic=observed, df=df, p_chisq=p_chisq, p_mixture=p_mixture,
                     exceed=exceedances(kept, observed), replicates=len(kept),
                     fraction_zero=float(np.mean(kept < ZERO_TOLERANCE)), samples=samples)
