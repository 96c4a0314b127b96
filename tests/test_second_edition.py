"""Closed-form claims that the second edition of chapters 1-4 makes, checked against the package.

Expected values come from the distribution theory of the balanced one-way model (MSA and MSE are
independent scaled chi-squares), from simulation, or from a dense computation that does not use
the package's fitting code.
"""

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import linalg, stats

import lmmnotes
from lmmnotes import lmer, lrt
from lmmnotes.anova import estimator_variance


def mean_squares(y, a, n):
    """MSA and MSE of a balanced one-way layout, from sums of squares (no package code)."""
    groups = np.asarray(y, dtype=float).reshape(a, n)
    ssa = n * np.sum((groups.mean(axis=1) - groups.mean()) ** 2)
    sse = np.sum((groups - groups.mean(axis=1, keepdims=True)) ** 2)
    return ssa / (a - 1), sse / (a * (n - 1))


def one_way_data(a, n, sigma2_group, seed):
    rng = np.random.default_rng(seed)
    y = rng.normal(scale=np.sqrt(sigma2_group), size=a)[np.repeat(np.arange(a), n)] + rng.normal(size=a * n)
    return pd.DataFrame({"y": y, "g": pd.Categorical(np.repeat(np.arange(a), n))})


# ---- chapter 1: the variance of the ANOVA estimator -------------------------------------------------
@pytest.mark.parametrize("icc, a, n", [(0.0, 4, 5), (0.1, 4, 5), (0.1, 10, 2), (0.5, 2, 10), (0.3, 5, 4)])
def test_estimator_variance_matches_simulation(icc, a, n):
    nsim = 40_000
    rng = np.random.default_rng(12)
    y = rng.normal(scale=np.sqrt(icc), size=(nsim, a, 1)) + rng.normal(scale=np.sqrt(1 - icc), size=(nsim, a, n))
    group_means = y.mean(axis=2)
    msa = n * group_means.var(axis=1, ddof=1)
    mse = ((y - group_means[:, :, None]) ** 2).sum(axis=(1, 2)) / (a * (n - 1))
    estimate = (msa - mse) / n
    squares = (estimate - estimate.mean()) ** 2
    se = squares.std() / np.sqrt(nsim)  # Monte Carlo standard error of the sample variance
    assert abs(estimate.var(ddof=1) - estimator_variance(icc, a, n)) < 4 * se
    assert abs(estimate.mean() - icc) < 4 * np.sqrt(estimator_variance(icc, a, n) / nsim)  # unbiased


def test_estimator_variance_formula_and_scale():
    # 2/n^2 [(sigma^2 + n sigma_a^2)^2/(a-1) + sigma^4/(a(n-1))] with sigma_a^2 = 0.1, sigma^2 = 0.9
    expected = 2 / 25 * ((0.9 + 5 * 0.1) ** 2 / 3 + 0.9**2 / 16)
    assert estimator_variance(0.1, 4, 5) == pytest.approx(expected, rel=1e-12)
    assert estimator_variance(0.1, 4, 5, total=3.0) == pytest.approx(9 * expected, rel=1e-12)
    # the chapter's claim: at ICC 0.1, 10 x 2 has about twice the variance of 4 x 5; at 0.5 it is better
    assert 1.8 < estimator_variance(0.1, 10, 2) / estimator_variance(0.1, 4, 5) < 2.0
    assert estimator_variance(0.5, 10, 2) < estimator_variance(0.5, 4, 5)
    np.testing.assert_allclose(estimator_variance(np.array([0.1, 0.5]), 4, 5),
                               [expected, estimator_variance(0.5, 4, 5)], rtol=1e-12)


@pytest.mark.parametrize("icc, a, n, total, message", [(1.0, 4, 5, 1.0, "icc"), (-0.1, 4, 5, 1.0, "icc"),
                                                        (0.1, 1, 5, 1.0, "a >= 2"), (0.1, 4, 1, 1.0, "n >= 2"),
                                                        (0.1, 4, 5, 0.0, "total")])
def test_estimator_variance_rejects_bad_input(icc, a, n, total, message):
    with pytest.raises(ValueError, match=message):
        estimator_variance(icc, a, n, total=total)


# ---- chapter 2: ML and REML in the balanced one-way model ------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_ml_estimate_is_the_shrunken_reml_estimate(seed):
    """sigma2_ML = (1 - 1/a) sigma2_REML - MSE/(a n) when neither is truncated."""
    a, n = 5, 4
    data = one_way_data(a, n, 1.5, seed)
    msa, mse = mean_squares(data["y"], a, n)
    ml = lmer("y ~ 1 + (1 | g)", data, reml=False)
    reml = lmer("y ~ 1 + (1 | g)", data)
    expected = ((a - 1) * msa / a - mse) / n  # (SSA/a - MSE)/n
    assert expected > 0.05, "this draw truncates the ML estimate: choose other seeds"
    assert reml.varcorr.loc[0, "vcov"] == pytest.approx((msa - mse) / n, rel=1e-5)
    assert ml.varcorr.loc[0, "vcov"] == pytest.approx(expected, rel=1e-5)
    assert ml.varcorr.loc[0, "vcov"] == pytest.approx((1 - 1 / a) * (msa - mse) / n - mse / (a * n), rel=1e-5)
    assert ml.sigma**2 == pytest.approx(mse, rel=1e-5)


def test_reml_loglik_is_the_density_of_orthonormal_contrasts_minus_half_log_det_xtx():
    """log f(K'y) = l_R + log|X'X|/2 for K'K = I, K'X = 0, at the REML estimates (p = 3 here)."""
    eggprod = lmmnotes.datasets.load("eggprod")
    fit = lmer("eggs ~ treat + (1 | block)", eggprod)
    X, y = fit.design.X, fit.design.y
    Z = fit.design.Z().toarray()
    V = fit.varcorr.loc[0, "vcov"] * Z @ Z.T + fit.sigma**2 * np.eye(len(y))
    K = linalg.null_space(X.T)
    density = stats.multivariate_normal(np.zeros(K.shape[1]), K.T @ V @ K).logpdf(K.T @ y)
    assert density == pytest.approx(fit.loglik + 0.5 * np.linalg.slogdet(X.T @ X)[1], abs=1e-8)
    M = np.random.default_rng(3).normal(size=(K.shape[1], K.shape[1]))  # another basis: shifts by -log|det M|
    other = stats.multivariate_normal(np.zeros(K.shape[1]), M.T @ K.T @ V @ K @ M).logpdf(M.T @ K.T @ y)
    assert other - density == pytest.approx(-np.linalg.slogdet(M)[1], abs=1e-8)


# ---- chapter 4: the LRT of sigma_a^2 = 0 is a function of F -----------------------------------------
def lrt_from_f(f_value, a, n):
    """T = N log(1 + r) - a log r + a log a + a(n-1) log(a(n-1)) - N log N, r = (a-1)F/(a(n-1)); 0 if F <= a/(a-1)."""
    N = a * n
    if f_value <= a / (a - 1):
        return 0.0
    r = (a - 1) * f_value / (a * (n - 1))
    return N * np.log1p(r) - a * np.log(r) + a * np.log(a) + a * (n - 1) * np.log(a * (n - 1)) - N * np.log(N)


@pytest.mark.parametrize("sigma2_group, seed", [(0.3, s) for s in range(12)] + [(0.0, s) for s in range(12, 20)])
def test_lrt_statistic_and_zero_thresholds_follow_from_f(sigma2_group, seed):
    a, n = 4, 5
    data = one_way_data(a, n, sigma2_group, seed)
    msa, mse = mean_squares(data["y"], a, n)
    f_value = msa / mse
    if min(abs(f_value - 1), abs(f_value - a / (a - 1))) < 1e-3:
        pytest.skip("F on a threshold")
    ml = lmer("y ~ 1 + (1 | g)", data, reml=False)
    reml = lmer("y ~ 1 + (1 | g)", data)
    T = max(2 * (ml.loglik - smf.ols("y ~ 1", data).fit().llf), 0.0)
    assert T == pytest.approx(lrt_from_f(f_value, a, n), abs=1e-6)
    assert (ml.theta[0] < 1e-4) == (f_value < a / (a - 1))  # ML estimate zero iff F <= a/(a-1)
    assert (reml.theta[0] < 1e-4) == (f_value < 1)  # REML estimate zero iff F <= 1


def test_pulp_bootstrap_estimates_the_exact_f_test():
    pulp = lmmnotes.datasets.load("pulp")
    null = smf.ols("bright ~ 1", pulp).fit()
    alt = lmer("bright ~ 1 + (1 | operator)", pulp, reml=False)
    result = lrt(null, alt, nsim=4000, seed=99)
    assert (pulp["operator"].cat.codes.to_numpy() == np.repeat(np.arange(4), 5)).all()
    f_value = np.divide(*mean_squares(pulp["bright"], 4, 5))
    p_exact = stats.f.sf(f_value, 3, 16)
    zero_exact = stats.f.cdf(4 / 3, 3, 16)
    assert p_exact == pytest.approx(0.0226, abs=5e-5)
    assert zero_exact == pytest.approx(0.701, abs=5e-4)
    assert abs(result.p_boot - p_exact) < 4 * np.sqrt(p_exact * (1 - p_exact) / 4000)
    assert abs(result.fraction_zero - zero_exact) < 4 * np.sqrt(zero_exact * (1 - zero_exact) / 4000)
    assert result.statistic == pytest.approx(lrt_from_f(f_value, 4, 5), abs=1e-6)


def test_lrt_draws_the_responses_of_the_plain_loop():
    """For an OLS null, lrt(seed=s) simulates mu + sigma_ML * default_rng(s).standard_normal((n, B))."""
    pulp = lmmnotes.datasets.load("pulp")
    null = smf.ols("bright ~ 1", pulp).fit()
    alt = lmer("bright ~ 1 + (1 | operator)", pulp, reml=False)
    B = 40
    Y = null.params["Intercept"] + np.sqrt(null.ssr / 20) * np.random.default_rng(13).standard_normal((20, B))
    # pulp is sorted by operator (4 x 5), so each replicate's T is the closed form in its F
    assert (pulp["operator"].cat.codes.to_numpy() == np.repeat(np.arange(4), 5)).all()
    T = [lrt_from_f(np.divide(*mean_squares(y, 4, 5)), 4, 5) for y in Y.T]
    assert 0 < np.mean(np.array(T) == 0) < 1  # both branches of the closed form are exercised
    np.testing.assert_allclose(lrt(null, alt, nsim=B, seed=13).samples, T, atol=1e-6)


def test_lrt_share_of_zeros_is_the_share_of_f_below_the_threshold():
    """fraction_zero counts statistics below a tolerance of 1e-5, so it may add a data set or two
    whose F lies just above a/(a-1) (T grows like (F - 4/3)^2), never many."""
    pulp = lmmnotes.datasets.load("pulp")
    null = smf.ols("bright ~ 1", pulp).fit()
    alt = lmer("bright ~ 1 + (1 | operator)", pulp, reml=False)
    B = 1000
    Y = null.params["Intercept"] + np.sqrt(null.ssr / 20) * np.random.default_rng(13).standard_normal((20, B))
    share = np.mean([np.divide(*mean_squares(y, 4, 5)) <= 4 / 3 for y in Y.T])
    fraction = lrt(null, alt, nsim=B, seed=13).fraction_zero
    assert share <= fraction <= share + 3 / B


def test_share_of_zeros_with_four_groups_tends_to_chi2_limit():
    """With a = 4 groups and large n, lrt's share of zero statistics is near P(chi2_3 <= 4), not 1/2."""
    a, n, nsim = 4, 400, 4000
    shares = [stats.f.cdf(a / (a - 1), a - 1, a * (m - 1)) for m in (5, 50, 5000, 500_000)]
    assert np.all(np.diff(shares) > 0)
    assert shares[-1] == pytest.approx(stats.chi2.cdf(4, 3), abs=1e-4)
    assert stats.chi2.cdf(4, 3) == pytest.approx(0.7385, abs=1e-4)
    data = one_way_data(a, n, 0.0, seed=21)
    result = lrt(smf.ols("y ~ 1", data).fit(), lmer("y ~ 1 + (1 | g)", data, reml=False), nsim=nsim, seed=21)
    exact = stats.f.cdf(a / (a - 1), a - 1, a * (n - 1))
    assert abs(result.fraction_zero - exact) < 4 * np.sqrt(exact * (1 - exact) / nsim)
    assert result.fraction_zero > 0.7
