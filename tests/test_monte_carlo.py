"""Simulation-based code checked against exact answers, tightly enough to notice a 10% error.

Every simulator is compared with a moment it must have exactly, and every bootstrap or simulated
p-value with an exact p-value, at a tolerance derived from the number of draws B:

* a mean of B independent draws with standard deviation s has standard error s / sqrt(B);
* a sample variance of B normal draws has relative standard error sqrt(2 / (B - 1));
* a proportion p from B draws has standard error sqrt(p (1 - p) / B).

Each comparison allows 4 standard errors (a false alarm about once in 16,000 for one check; the
draws are seeded, so a test gives the same answer every run), and B is chosen so that 4 standard
errors are well below the 10% errors that tools/mutation_probe.py plants.
"""

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats

import lmmnotes
from lmmnotes import bootstrap, exact_rlrt, lmer, lrt, simulate_design
from lmmnotes.prediction import _draw_parts, _draws, _new_effects

from .conftest import book_data, quantile_agrees

Z4 = 4.0  # standard errors allowed


def _mean_squares(Y, codes, a):
    """Between- and within-group mean squares of each column of Y (balanced one-way layout)."""
    n = Y.shape[0] // a
    means = np.stack([Y[codes == j].mean(axis=0) for j in range(a)])
    msa = n * ((means - Y.mean(axis=0)) ** 2).sum(axis=0) / (a - 1)
    mse = sum(((Y[codes == j] - means[j]) ** 2).sum(axis=0) for j in range(a)) / (a * (n - 1))
    return msa, mse


# ---- simulate: the marginal and the conditional distribution ------------------------------------
def test_simulate_has_the_model_covariance(pulp, pulp_reml):
    """y* ~ N(X beta, sigma^2 (I + Z Lambda Lambda' Z')): for pulp, E(MSA) = sigma^2 + 5 sigma_a^2
    and E(MSE) = sigma^2. MSA/E(MSA) ~ chi2_3/3, so the mean of B of them has relative standard
    error sqrt(2 / (3 B)) = 0.41% at B = 40,000 (tolerance 1.6%; a 5% error in the random-effect
    SD moves E(MSA) by 7.8%)."""
    B = 40_000
    Y = pulp_reml.simulate(B, seed=11).to_numpy()
    msa, mse = _mean_squares(Y, pulp["operator"].cat.codes.to_numpy(), 4)
    s2, s2a = pulp_reml.sigma**2, pulp_reml.varcorr["vcov"].iloc[0]
    assert msa.mean() == pytest.approx(s2 + 5 * s2a, rel=Z4 * np.sqrt(2 / (3 * B)))
    assert mse.mean() == pytest.approx(s2, rel=Z4 * np.sqrt(2 / (16 * B)))


def test_simulate_with_a_random_slope_has_the_model_covariance():
    """For one PSID person, the B draws' sample covariance against sigma^2 (I + Z_i Lambda Lambda' Z_i');
    each entry's standard error is sqrt((S_jk^2 + S_jj S_kk) / B)."""
    psid = book_data("psid")
    fit = lmer("log(income) ~ cyear + (cyear | person)", psid)
    rows = np.flatnonzero(psid["person"] == psid["person"].iloc[0])
    B = 20_000
    Y = fit.simulate(B, seed=5).to_numpy()[rows]
    Zi = np.column_stack([np.ones(len(rows)), psid["cyear"].to_numpy()[rows]])
    D = fit.covariances()["person"].to_numpy()
    S = Zi @ D @ Zi.T + fit.sigma**2 * np.eye(len(rows))
    se = np.sqrt((S**2 + np.outer(np.diag(S), np.diag(S))) / B)
    assert np.all(np.abs(np.cov(Y) - S) < Z4 * se)
    assert np.all(np.abs(Y.mean(axis=1) - fit.predict(re_form="~0").to_numpy()[rows]) < Z4 * np.sqrt(np.diag(S) / B))
    # The slope's own variance, sharply: each draw's least-squares slope on cyear has variance
    # exactly D_11 + sigma^2 / Sxx (relative SE sqrt(2 / B) = 1%); a 10% error in the slope's SD
    # moves it by about 14%.
    x = psid["cyear"].to_numpy()[rows]
    slopes = (x - x.mean()) @ Y / np.sum((x - x.mean()) ** 2)
    exact = D[1, 1] + fit.sigma**2 / np.sum((x - x.mean()) ** 2)
    assert np.var(slopes, ddof=1) == pytest.approx(exact, rel=Z4 * np.sqrt(2 / B))


def test_simulate_keeping_the_modes_adds_only_residual_noise(pulp_reml):
    """use_u=True: y* ~ N(fitted values, sigma^2 I). The pooled variance of B x 20 draws has
    relative standard error sqrt(2 / (20 B)) = 0.22% at B = 20,000."""
    B = 20_000
    Y = pulp_reml.simulate(B, seed=3, use_u=True).to_numpy()
    fitted = pulp_reml.fitted().to_numpy()
    s2 = pulp_reml.sigma**2
    assert np.mean((Y - fitted[:, None]) ** 2) == pytest.approx(s2, rel=Z4 * np.sqrt(2 / (20 * B)))
    assert np.all(np.abs(Y.mean(axis=1) - fitted) < Z4 * np.sqrt(s2 / B))
    C = np.corrcoef(Y)
    assert np.all(np.abs(C[~np.eye(20, dtype=bool)]) < Z4 / np.sqrt(B))  # independent rows


# ---- simulate_design: the truth it is given ------------------------------------------------------
def test_simulate_design_draws_the_given_variances():
    """20,000 groups of two: the pair means have variance sigma_b^2 + sigma^2 / 2, and half the
    squared difference within a pair has mean sigma^2; each estimate has relative SE
    sqrt(2 / 20,000) = 1% (tolerance 4%; a 10% error in sigma_b^2 moves the first by 7.8%, one in
    sigma^2 the second by 10%)."""
    groups = 20_000
    design = pd.DataFrame({"g": np.repeat(np.arange(groups), 2).astype(str)})
    sim = simulate_design(design, "y ~ 1 + (1 | g)", fixef=[10.0], covariances={"g": 4.0}, sigma=1.5, seed=2)
    y = sim.data["y"].to_numpy().reshape(groups, 2)
    tolerance = Z4 * np.sqrt(2 / groups)
    assert np.var(y.mean(axis=1), ddof=1) == pytest.approx(4.0 + 1.5**2 / 2, rel=tolerance)
    assert np.mean((y[:, 0] - y[:, 1]) ** 2 / 2) == pytest.approx(1.5**2, rel=tolerance)
    assert np.var(sim.ranef["g"].to_numpy(), ddof=1) == pytest.approx(4.0, rel=tolerance)


def test_simulate_design_draws_the_given_covariance_matrix():
    """A random intercept and slope: the sample covariance of 20,000 drawn effects against the
    given matrix, entry by entry (standard error sqrt((S_jk^2 + S_jj S_kk) / B))."""
    groups = 20_000
    design = pd.DataFrame({"g": np.repeat(np.arange(groups), 3).astype(str), "x": np.tile([0.0, 1.0, 2.0], groups)})
    S = np.array([[2.0, -0.6], [-0.6, 0.5]])
    sim = simulate_design(design, "y ~ 1 + x + (1 + x | g)", fixef=[1.0, 0.5], covariances={"g": S}, sigma=0.0, seed=4)
    b = sim.ranef["g"].to_numpy()
    assert np.all(np.abs(np.cov(b.T) - S) < Z4 * np.sqrt((S**2 + np.outer(np.diag(S), np.diag(S))) / groups))
    y = sim.data["y"].to_numpy().reshape(groups, 3)  # sigma = 0: y = 1 + 0.5 x + b0 + b1 x exactly
    assert np.allclose(y, 1.0 + b[:, [0]] + (0.5 + b[:, [1]]) * np.array([0.0, 1.0, 2.0]))


def test_simulate_design_with_crossed_factors_adds_each_drawn_effect():
    """sigma = 0: each response is exactly X beta plus its worker's and its location's drawn effect."""
    rng = np.random.default_rng(0)
    design = pd.DataFrame({"worker": rng.choice([f"w{i}" for i in range(30)], 400),
                           "location": rng.choice([f"l{j}" for j in range(12)], 400), "x": rng.normal(size=400)})
    sim = simulate_design(design, "y ~ 1 + x + (1 | worker) + (1 | location)", fixef=[10.0, 2.0],
                          covariances={"worker": 4.0, "location": 1.0}, sigma=0.0, seed=6)
    worker = sim.ranef["worker"]["(Intercept)"].reindex(design["worker"]).to_numpy()
    location = sim.ranef["location"]["(Intercept)"].reindex(design["location"]).to_numpy()
    np.testing.assert_allclose(sim.data["y"], 10.0 + 2.0 * design["x"] + worker + location, rtol=1e-12)


# ---- prediction intervals: the recipe's draws --------------------------------------------------
def test_new_group_effects_have_the_estimated_covariance(pulp_reml):
    """Each row with a new level gets an effect with variance sigma_a^2 (relative SE sqrt(2 / B))."""
    B = 100_000
    new = pd.DataFrame({"operator": ["new"] * B})
    effects = _new_effects(pulp_reml, pulp_reml.prediction_matrices(new, allow_new_levels=True), np.random.default_rng(8))
    s2a = pulp_reml.varcorr["vcov"].iloc[0]
    assert np.var(effects) == pytest.approx(s2a, rel=Z4 * np.sqrt(2 / B))
    assert abs(np.mean(effects)) < Z4 * np.sqrt(s2a / B)
    known = pd.DataFrame({"operator": ["a"] * 10})
    assert np.all(_new_effects(pulp_reml, pulp_reml.prediction_matrices(known), np.random.default_rng(8)) == 0)


def test_prediction_draws_for_a_new_group_have_the_exact_variance(pulp_reml):
    """For balanced one-way data the refitted intercept is the grand mean of the simulated data,
    whatever the refitted theta, so each part of a new operator's draw has an exact variance: the
    estimate's sigma_a^2 / 4 + sigma^2 / 20, the new effect's sigma_a^2, the new error's sigma^2.
    B = 8000 draws: relative SE sqrt(2 / B) = 1.6% for each, tolerance 6.3%, so a 5% error in
    one standard deviation (10% in its variance) fails."""
    B = 8000
    parts = _draw_parts(pulp_reml, pd.DataFrame({"operator": ["new"]}), B, np.random.default_rng(21))
    s2, s2a = pulp_reml.sigma**2, pulp_reml.varcorr["vcov"].iloc[0]
    tolerance = Z4 * np.sqrt(2 / B)
    for part, variance in zip(parts[:, :, 0], [s2a / 4 + s2 / 20, s2a, s2]):
        assert np.var(part, ddof=1) == pytest.approx(variance, rel=tolerance)
    draws = parts.sum(axis=0)[:, 0]  # the parts are independent: their variances add
    assert np.var(draws, ddof=1) == pytest.approx(1.25 * s2a + 1.05 * s2, rel=tolerance)
    assert np.mean(draws) == pytest.approx(pulp_reml.fixef.iloc[0], abs=Z4 * np.sqrt(np.var(draws) / B))
    # the recipe's draws are the sum of these parts
    new = pd.DataFrame({"operator": ["new", "a"]})
    np.testing.assert_array_equal(_draws(pulp_reml, new, 20, np.random.default_rng(1)),
                                  _draw_parts(pulp_reml, new, 20, np.random.default_rng(1)).sum(axis=0))


def test_prediction_draws_for_a_known_group_have_no_new_effect(pulp_reml):
    """A known operator's draws keep its effect (no new one) and add the same new error."""
    parts = _draw_parts(pulp_reml, pd.DataFrame({"operator": ["a"]}), 1000, np.random.default_rng(3))
    assert np.all(parts[1] == 0)
    assert np.var(parts[2], ddof=1) == pytest.approx(pulp_reml.sigma**2, rel=Z4 * np.sqrt(2 / 1000))


# ---- bootstrap and simulated p-values against exact ones ---------------------------------------
@pytest.fixture(scope="module")
def pulp_lrt_40000(pulp):
    ml = lmer("bright ~ 1 + (1 | operator)", pulp, reml=False)
    return lrt(smf.ols("bright ~ 1", pulp).fit(), ml, nsim=40_000, seed=2026)


def _f_statistic(data) -> float:
    return smf.ols("bright ~ C(operator)", data).fit().fvalue


def test_pulp_bootstrap_lrt_estimates_the_exact_f_test(pulp, pulp_lrt_40000):
    """Balanced one-way data: the LRT is a monotone function of F = MSA/MSE, and under the null
    F ~ F(3, 16) exactly, so the bootstrap p-value estimates P(F(3,16) >= 4.2039) = 0.0226 and the
    share of zero statistics is exactly P(F(3,16) < 4/3) = 0.7015 (the ML estimate of sigma_a^2
    is zero exactly when SSA/a < MSE). B = 40,000: standard errors 0.00074 and 0.0023."""
    B, test = 40_000, pulp_lrt_40000
    p_exact, zero_exact = stats.f.sf(_f_statistic(pulp), 3, 16), stats.f.cdf(4 / 3, 3, 16)
    assert test.p_boot == pytest.approx(p_exact, abs=Z4 * np.sqrt(p_exact * (1 - p_exact) / B))
    assert test.fraction_zero == pytest.approx(zero_exact, abs=Z4 * np.sqrt(zero_exact * (1 - zero_exact) / B))


@pytest.mark.parametrize("u", [0.8, 0.9, 0.95, 0.99])
def test_pulp_bootstrap_lrt_quantiles_are_the_exact_ones(pulp, pulp_lrt_40000, u):
    """The same monotone map gives the exact null quantiles of T: the u-quantile is T computed on
    data whose F is the u-quantile of F(3, 16) (pulp with its operator deviations rescaled). The
    bootstrap's empirical quantiles at u -+ 4 sqrt(u (1 - u) / B) must bracket it (B = 40,000:
    u -+ 0.004 at u = 0.95)."""
    grand, group_mean = pulp["bright"].mean(), pulp.groupby("operator", observed=True)["bright"].transform("mean")
    scale = np.sqrt(stats.f.ppf(u, 3, 16) / _f_statistic(pulp))
    rescaled = pulp.assign(bright=grand + scale * (group_mean - grand) + (pulp["bright"] - group_mean))
    exact = 2 * (lmer("bright ~ 1 + (1 | operator)", rescaled, reml=False).loglik
                 - smf.ols("bright ~ 1", rescaled).fit().llf)
    assert quantile_agrees(pulp_lrt_40000.samples, u, exact)


def test_exact_rlrt_estimates_the_exact_f_test(pulp, pulp_reml):
    """The restricted LRT is monotone in F too, so its simulated p-value estimates the same 0.0226."""
    B = 100_000
    result = exact_rlrt(pulp_reml, nsim=B, seed=9)
    p_exact = stats.f.sf(_f_statistic(pulp), 3, 16)
    assert result.p_value == pytest.approx(p_exact, abs=Z4 * np.sqrt(p_exact * (1 - p_exact) / B))


@pytest.fixture(scope="module")
def equal_means(pulp):
    """Pulp with every operator's mean moved to the grand mean: no evidence of an operator effect."""
    centred = pulp.copy()
    group_means = centred.groupby("operator", observed=True)["bright"].transform("mean")
    centred["bright"] = centred["bright"] - group_means + centred["bright"].mean()
    return centred


def test_an_observed_statistic_of_zero_has_p_value_one(equal_means):
    """With equal group means the ML and REML estimates of sigma_a^2 are 0 and the statistics are
    0, so every simulated statistic is at least as large: both p-values are exactly 1."""
    ml = lmer("bright ~ 1 + (1 | operator)", equal_means, reml=False)
    assert ml.theta[0] == 0.0
    test = lrt(smf.ols("bright ~ 1", equal_means).fit(), ml, nsim=2000, seed=1)
    assert test.statistic == 0.0
    assert test.p_boot == 1.0 and test.p_boot_se == 0.0
    zero = stats.f.cdf(4 / 3, 3, 16)  # many ties at zero, which is what makes ">=" matter
    assert test.fraction_zero == pytest.approx(zero, abs=Z4 * np.sqrt(zero * (1 - zero) / 2000))
    rlrt = exact_rlrt(lmer("bright ~ 1 + (1 | operator)", equal_means), nsim=2000, seed=1)
    assert rlrt.statistic == pytest.approx(0.0, abs=1e-12)
    assert rlrt.p_value == 1.0


def test_pulp_bootstrap_of_the_reml_estimates_has_the_exact_distribution(pulp_reml):
    """Balanced one-way REML is closed form in MSA and MSE: sd = sqrt(max(0, (MSA - MSE) / 5)),
    sigma^2 = MSE (or SST / 19 when MSA < MSE, the boundary), intercept = the grand mean. Under the
    parametric bootstrap MSA ~ (sigma^2 + 5 sigma_a^2) chi2_3 / 3 and MSE ~ sigma^2 chi2_16 / 16,
    independent, and the grand mean ~ N(mu, (sigma^2 + 5 sigma_a^2) / 20), so 10^6 such draws give the bootstrap distribution to within 0.0001 in
    probability. Our B = 4000 refits must put its 2.5% and 97.5% points between their quantiles at
    u -+ 4 sqrt(u (1 - u) / B), that is u -+ 0.0099."""
    B = 4000
    result = bootstrap(pulp_reml, lmmnotes.intervals.all_parameters, nsim=B, seed=17)
    s2, s2a = pulp_reml.sigma**2, pulp_reml.varcorr["vcov"].iloc[0]
    rng = np.random.default_rng(0)
    msa = (s2 + 5 * s2a) * rng.chisquare(3, 10**6) / 3
    mse = s2 * rng.chisquare(16, 10**6) / 16
    exact = {
        "sd_(Intercept)|operator": np.sqrt(np.maximum(0.0, (msa - mse) / 5)),
        "sigma": np.sqrt(np.where(msa >= mse, mse, (3 * msa + 16 * mse) / 19)),
        "(Intercept)": pulp_reml.fixef.iloc[0] + np.sqrt((s2 + 5 * s2a) / 20) * rng.standard_normal(10**6),
    }
    for name, draws in exact.items():
        ours = result.replicates[name].to_numpy()
        for u in (0.025, 0.975):
            assert quantile_agrees(ours, u, np.quantile(draws, u)), (name, u)
