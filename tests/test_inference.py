"""Inference against lme4, pbkrtest and RLRsim (tests/reference/inference.R -> inference.json).

Deterministic quantities (statistics, profile intervals, Kenward-Roger tests) are compared to a
fixed tolerance. Random ones (bootstrap p-values and intervals, the simulated RLRT p-value) are
compared to Monte Carlo error: both sides are estimates from B and B_R draws, so a p-value must
agree within 4 standard errors sqrt(p (1 - p) (1/B + 1/B_R)), and a reference quantile at
probability a must lie between our empirical quantiles at a -+ 4 sqrt(a (1 - a) (1/B + 1/B_R)).
"""

import json
import multiprocessing
import pathlib
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats

import lmmnotes
from lmmnotes import bootstrap, confint, exact_rlrt, kenward_roger, lmer, lrt, prediction_interval, vcov_adjusted
from lmmnotes.resampling import _scalar_term_deviances

from .conftest import REFERENCE as LME4
from .conftest import book_data, quantile_agrees

REF = json.loads((pathlib.Path(__file__).parent / "reference" / "inference.json").read_text())
PULP = "bright ~ 1 + (1 | operator)"
EGGS = "Fat ~ 1 + (1 | Lab) + (1 | Lab:Technician) + (1 | Lab:Technician:Sample)"
PSID = "log(income) ~ cyear * sex + age + educ + (cyear | person)"


def agrees_to_mc_error(p: float, B: int, p_ref: float, B_ref: int) -> bool:
    p_bar = (p * B + p_ref * B_ref) / (B + B_ref)
    se = np.sqrt(max(p_bar * (1 - p_bar), 1e-4) * (1 / B + 1 / B_ref))
    return abs(p - p_ref) <= 4 * se


@pytest.fixture(scope="module")
def pulp_ml():
    return lmer(PULP, book_data("pulp"), reml=False)


@pytest.fixture(scope="module")
def eggs_fit():
    return lmer(EGGS, book_data("eggs"))


def test_update_switches_between_reml_and_ml(pulp_ml, pulp_reml):
    assert pulp_reml.update(reml=False).loglik == pytest.approx(pulp_ml.loglik, abs=1e-8)
    assert pulp_ml.update(reml=True).criterion == pytest.approx(pulp_reml.criterion, abs=1e-8)
    assert pulp_reml.update(reml=True) is pulp_reml


# ---- the likelihood-ratio test -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def pulp_lrt(pulp_ml):
    null = smf.ols("bright ~ 1", book_data("pulp")).fit()
    return lrt(null, pulp_ml, nsim=10_000, seed=2024)


def test_pulp_lrt_statistic_and_chisquare(pulp_lrt):
    ref = REF["pulp_lrt"]
    assert pulp_lrt.statistic == pytest.approx(ref["statistic"], abs=1e-6)  # seed 001: 2.568371
    assert pulp_lrt.p_chisq == pytest.approx(ref["p_chisq"], abs=1e-6)  # 0.1090
    assert pulp_lrt.df == 1
    assert pulp_lrt.p_mixture == pytest.approx(ref["p_chisq"] / 2, abs=1e-6)


def test_pulp_lrt_bootstrap_matches_lme4_to_monte_carlo_error(pulp_lrt):
    ref = REF["pulp_lrt"]
    B, B_ref = pulp_lrt.nsim, ref["boot_nsim"]
    assert agrees_to_mc_error(pulp_lrt.p_boot, B, ref["boot_p"], B_ref)
    assert agrees_to_mc_error(pulp_lrt.fraction_zero, B, ref["boot_fraction_zero"], B_ref)
    # the seed's B = 1000 run: about 69% zeros and p about 0.026
    assert agrees_to_mc_error(pulp_lrt.p_boot, B, 0.026, 1000)
    assert agrees_to_mc_error(pulp_lrt.fraction_zero, B, 0.69, 1000)
    assert pulp_lrt.p_boot_se == pytest.approx(np.sqrt(pulp_lrt.p_boot * (1 - pulp_lrt.p_boot) / B))
    for a, q in zip([0.75, 0.9, 0.95, 0.99], ref["boot_quantiles"][1:]):
        assert quantile_agrees(pulp_lrt.samples, a, q, B_ref)


def test_batched_refits_equal_one_by_one_refits(pulp_ml):
    Y = pulp_ml.simulate(25, seed=8).to_numpy()
    fast = _scalar_term_deviances(pulp_ml, Y, reml=False)
    slow = np.array([pulp_ml.refit(Y[:, k]).criterion for k in range(Y.shape[1])])
    np.testing.assert_allclose(fast, slow, atol=1e-7)


def test_lrt_is_seeded_and_lmer_null_works(pulp_ml):
    null = smf.ols("bright ~ 1", book_data("pulp")).fit()
    a, b = lrt(null, pulp_ml, nsim=200, seed=1), lrt(null, pulp_ml, nsim=200, seed=1)
    np.testing.assert_array_equal(a.samples, b.samples)
    # a null that is itself a mixed model: eggs without the lab term against the full model
    eggs = book_data("eggs")
    small = lmer("Fat ~ 1 + (1 | Lab:Technician) + (1 | Lab:Technician:Sample)", eggs, reml=False)
    big = lmer(EGGS, eggs, reml=False)
    one = lrt(small, big, nsim=40, seed=3)
    two = lrt(small, big, nsim=40, seed=3, n_jobs=2)
    np.testing.assert_allclose(one.samples, two.samples)
    # lme4's anova(small, big): its Chisq and p, from lme4's own log-likelihoods
    assert one.statistic == pytest.approx(REF["eggs_lrt"]["chisq"], abs=1e-6)
    assert one.p_chisq == pytest.approx(REF["eggs_lrt"]["p_value"], abs=1e-6) and one.df == REF["eggs_lrt"]["df"]
    assert one.p_mixture == pytest.approx(0.5 * one.p_chisq)  # one variance added: the 50:50 mixture
    # three variances added at once: the 50:50 mixture does not apply and is not reported
    three = lrt(smf.ols("Fat ~ 1", eggs).fit(), big, nsim=20, seed=3)
    assert three.df == 3 and np.isnan(three.p_mixture) and "mixture" not in str(three)


def test_lrt_refuses_bad_comparisons(pulp_ml, pulp_reml):
    pulp = book_data("pulp")
    null = smf.ols("bright ~ 1", pulp).fit()
    with pytest.raises(ValueError, match="REML"):
        lrt(null, pulp_reml)
    with pytest.raises(ValueError, match="different data"):
        lrt(smf.ols("bright ~ 1", pulp.assign(bright=pulp.bright + 1)).fit(), pulp_ml)
    with pytest.raises(ValueError, match="not nested"):
        lrt(smf.ols("bright ~ C(operator)", pulp).fit(), pulp_ml)
    with pytest.raises(ValueError, match="fewer parameters"):
        lrt(pulp_ml, lmer("bright ~ 1 + (1 | operator)", pulp, reml=False))
    with pytest.raises(TypeError, match="OLS"):
        lrt("bright ~ 1", pulp_ml)


# ---- the general bootstrap ------------------------------------------------------------------------------
def test_bootstrap_reports_failures_and_is_the_same_for_any_n_jobs(pulp_reml):
    def statistic(fit):
        if fit.fixef.iloc[0] > 60.5:
            raise ValueError("pretend this refit failed")
        return fit.fixef

    one = bootstrap(pulp_reml, statistic, nsim=60, seed=5)
    two = bootstrap(pulp_reml, statistic, nsim=60, seed=5, n_jobs=2)
    pd.testing.assert_frame_equal(one.replicates, two.replicates)
    # the same seed without failures: NaN rows exactly where the statistic raised, the rest equal
    every = bootstrap(pulp_reml, lambda fit: fit.fixef, nsim=60, seed=5).replicates.iloc[:, 0]
    failed = every > 60.5
    assert len(one.replicates) == 60  # failed replicates are kept as NaN rows
    assert one.replicates.iloc[:, 0].isna().equals(failed)
    assert one.n_failed == int(failed.sum()) > 0
    pd.testing.assert_series_equal(one.replicates.iloc[:, 0][~failed], every[~failed])


def test_parallel_bootstrap_where_processes_cannot_fork(pulp_reml, monkeypatch):
    """Without fork (Windows) the workers are spawned: a statistic defined at module level gives
    the same replicates as one process; a lambda cannot be sent to them and is refused up front."""
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    spawned = bootstrap(pulp_reml, lmmnotes.intervals.all_parameters, nsim=100, seed=4, n_jobs=2)
    single = bootstrap(pulp_reml, lmmnotes.intervals.all_parameters, nsim=100, seed=4)
    pd.testing.assert_frame_equal(spawned.replicates, single.replicates)
    with pytest.raises(ValueError, match="cannot be pickled: define it with def at the top level"):
        bootstrap(pulp_reml, lambda fit: fit.sigma, nsim=10, seed=1, n_jobs=2)


# ---- intervals ----------------------------------------------------------------------------------------------
def _reference_frame(key: str) -> pd.DataFrame:
    ref = REF["intervals"][key]
    return pd.DataFrame({"lower": ref["lower"], "upper": ref["upper"]}, index=ref["names"], dtype=float)


@pytest.mark.parametrize("key,formula,data,reml", [
    ("pulp_profile", PULP, "pulp", True), ("pulp_ml_profile", PULP, "pulp", False),
    ("eggs_profile", EGGS, "eggs", True), ("psid_profile", PSID, "psid", True)])
def test_profile_intervals_match_lme4(key, formula, data, reml):
    ours = confint(lmer(formula, book_data(data), reml=reml), method="profile")
    ref = _reference_frame(key)
    assert list(ours.columns) == ["2.5 %", "97.5 %"]
    r_names = [re.sub(r"\[T\.(.*?)\]", r"\1", name) for name in ours.index]  # formulaic's sex[T.M] is R's sexM
    assert r_names == list(ref.index)
    np.testing.assert_allclose(ours.to_numpy(), ref.to_numpy(), atol=1e-4)  # observed: 4e-5 (eggs), 5e-6 (pulp), 7e-7 (PSID)


def test_profile_intervals_with_a_correlation_match_lme4():
    fit = lmer(PSID, book_data("psid"))
    ours = confint(fit, method="profile", level=0.90, parm=slice(0, 4))
    ref = _reference_frame("psid_profile_level90")
    assert list(ours.index) == list(ref.index)
    assert list(ours.columns) == ["5 %", "95 %"]
    np.testing.assert_allclose(ours.to_numpy(), ref.to_numpy(), atol=1e-4)  # observed: 7e-7


def test_wald_intervals_match_lme4(eggs_fit):
    ours = confint(eggs_fit, method="wald")
    ref = _reference_frame("eggs_wald")
    np.testing.assert_allclose(ours.to_numpy(), ref.to_numpy(), atol=1e-6, equal_nan=True)


def test_bootstrap_intervals_match_lme4_to_monte_carlo_error(pulp_reml):
    result = bootstrap(pulp_reml, lmmnotes.intervals.all_parameters, nsim=1000, seed=11)
    ref = _reference_frame("pulp_boot")
    assert result.n_failed == 0
    for k, name in enumerate(ref.index):
        samples = result.replicates.iloc[:, k].to_numpy()
        assert quantile_agrees(samples, 0.025, ref.loc[name, "lower"], 1000), name
        assert quantile_agrees(samples, 0.975, ref.loc[name, "upper"], 1000), name
    ours = confint(pulp_reml, method="boot", nsim=1000, seed=11)
    np.testing.assert_allclose(ours.to_numpy(), np.quantile(result.replicates.to_numpy(), [0.025, 0.975], axis=0).T)


def test_bootstrap_of_a_model_with_three_terms_matches_lme4_to_monte_carlo_error(eggs_fit):
    """lme4's confint(method = "boot") of the eggs model: every refit re-estimates three variances."""
    result = bootstrap(eggs_fit, lmmnotes.intervals.all_parameters, nsim=1000, seed=5)
    ref = _reference_frame("eggs_boot")
    assert result.n_failed == 0
    assert list(result.replicates.columns[:-1]) == list(ref.index[:-1])
    for k, name in enumerate(ref.index):
        samples = result.replicates.iloc[:, k].to_numpy()
        assert quantile_agrees(samples, 0.025, ref.loc[name, "lower"], 1000), name
        assert quantile_agrees(samples, 0.975, ref.loc[name, "upper"], 1000), name


def test_confint_refuses_unknown_method(pulp_reml):
    with pytest.raises(ValueError, match="method"):
        confint(pulp_reml, method="bayes")
    with pytest.raises(ValueError, match="level"):
        confint(pulp_reml, level=95)


# ---- Kenward-Roger and the exact RLRT ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def irrigation_fits():
    irr = book_data("irrigation")
    return {name: lmer(formula, irr) for name, formula in {
        "full": "yield ~ irrigation * variety + (1 | field)",
        "additive": "yield ~ irrigation + variety + (1 | field)",
        "no_variety": "yield ~ irrigation + (1 | field)",
        "no_irrigation": "yield ~ variety + (1 | field)"}.items()}


def _assert_kr_matches(test, ref, tolerance=1e-6):
    """Statistic, degrees of freedom, scaling and p-value, at the agreement actually achieved."""
    assert test.ndf == ref["ndf"]
    for name in ("statistic", "ddf", "scaling", "p_value"):
        assert getattr(test, name) == pytest.approx(ref[name], rel=tolerance, abs=tolerance), name


@pytest.mark.parametrize("key,large,small", [
    ("irrigation_interaction", "full", "additive"),
    ("irrigation_variety", "additive", "no_variety"),
    ("irrigation_irrigation", "additive", "no_irrigation")])
def test_kenward_roger_matches_pbkrtest(irrigation_fits, key, large, small):
    # the balanced split plot: V2 = 1 - c3 B is 0 up to rounding, and may be exactly 0 (then
    # rho = inf and m = 4, as in R, without a RuntimeWarning)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        test = kenward_roger(irrigation_fits[large], irrigation_fits[small])
    _assert_kr_matches(test, REF["kenward_roger"][key])


@pytest.fixture(scope="module")
def psid_at_lme4():
    """PSID's REML fit at lme4's theta: lme4's optimizer stopped a little short on this model
    (test_lmer_reference.py), and Kenward-Roger depends on theta at the 1e-4 level."""
    full = lmer(PSID, book_data("psid"))
    return lmmnotes.LmerFit.from_theta(full.design, full.cross_products, True,
                                       np.array(REF["kenward_roger"]["psid_full_theta"]))


def test_kenward_roger_with_a_random_slope_matches_pbkrtest(psid_at_lme4):
    psid = book_data("psid")
    small = lmer("log(income) ~ cyear + sex + age + educ + (cyear | person)", psid)
    _assert_kr_matches(kenward_roger(psid_at_lme4, small), REF["kenward_roger"]["psid_interaction"])
    np.testing.assert_allclose(vcov_adjusted(psid_at_lme4).to_numpy(), REF["kenward_roger"]["psid_full_vcov_adjusted"],
                               rtol=1e-5, atol=1e-10)
    # at our own optimum the test differs from pbkrtest's in the fourth digit, no more
    ours = kenward_roger(lmer(PSID, psid), small)
    _assert_kr_matches(ours, REF["kenward_roger"]["psid_interaction"], tolerance=1e-3)


def test_kenward_roger_of_two_effects_scales_the_statistic_as_pbkrtest(psid_at_lme4):
    """Two numerator degrees of freedom on unbalanced data: the scaling lambda is not 1."""
    small = lmer("log(income) ~ cyear + age + educ + (cyear | person)", book_data("psid"))
    ref = REF["kenward_roger"]["psid_sex"]
    assert abs(ref["scaling"] - 1) > 1e-4
    _assert_kr_matches(kenward_roger(psid_at_lme4, small), ref)


def test_kenward_roger_with_a_restriction_matrix_matches_pbkrtest(psid_at_lme4):
    ref = REF["kenward_roger"]["psid_restriction"]
    assert abs(ref["scaling"] - 1) > 1e-4
    _assert_kr_matches(kenward_roger(psid_at_lme4, np.array(ref["L"], dtype=float)), ref)


def test_kenward_roger_adjusted_vcov_and_refusals(irrigation_fits):
    np.testing.assert_allclose(vcov_adjusted(irrigation_fits["full"]).to_numpy(),
                               REF["kenward_roger"]["irrigation_full_vcov_adjusted"], rtol=1e-4)
    with pytest.raises(ValueError, match="not nested"):
        kenward_roger(irrigation_fits["no_variety"], irrigation_fits["no_irrigation"])
    with pytest.raises(ValueError, match="nothing to test"):
        kenward_roger(irrigation_fits["full"], irrigation_fits["full"])


def test_exact_rlrt_matches_rlrsim(irrigation_fits, pulp_reml):
    for key, fit in (("irrigation", irrigation_fits["full"]), ("pulp", pulp_reml)):
        ref = REF["exact_rlrt"][key]
        ours = exact_rlrt(fit, nsim=20_000, seed=4)
        assert ours.statistic == pytest.approx(ref["statistic"], abs=1e-4)  # irrigation: 6.1118
        assert agrees_to_mc_error(ours.p_value, ours.nsim, ref["p_value"], ref["nsim"])


def test_exact_rlrt_refuses_models_it_does_not_cover(eggs_fit, pulp_ml):
    with pytest.raises(ValueError, match="one variance component"):
        exact_rlrt(eggs_fit)
    with pytest.raises(ValueError, match="REML"):
        exact_rlrt(pulp_ml)


# ---- prediction ---------------------------------------------------------------------------------------------
def test_prediction_intervals_match_lme4_to_monte_carlo_error(pulp_reml):
    ref = REF["prediction"]
    new = pd.DataFrame({"operator": ["a", "someone new"]})
    ours = prediction_interval(pulp_reml, new, nsim=1000, seed=21)
    assert list(ours["group"]) == ["known", "new"]
    np.testing.assert_allclose(ours["fit"], [60.27806, 60.4], atol=1e-5)  # seed 001's BLUP and mean
    # Each limit is a 2.5% or 97.5% quantile of B draws from a distribution with SD about 0.44, so
    # its Monte Carlo SD is sqrt(0.025 * 0.975 / B) / (phi(1.96) / 0.44): 0.037 for B = 1000 and
    # 0.019 for lme4's B = 4000; four combined SDs are 0.17.
    np.testing.assert_allclose(ours.loc[0, ["lower", "upper"]].astype(float), ref["known_operator_a"], atol=0.17)
    np.testing.assert_allclose(ours.loc[1, ["lower", "upper"]].astype(float), ref["new_operator"], atol=0.17)


def test_prediction_interval_for_a_new_group_is_the_exact_normal_one(pulp_reml):
    """Balanced one-way data: a new operator's draw is the refitted grand mean (normal, variance
    sigma_a^2/4 + sigma^2/20) plus a new effect and a new error, so it is exactly normal with
    variance 1.25 sigma_a^2 + 1.05 sigma^2 and the interval is 60.4 -+ 1.96 x 0.4435 (59.531,
    61.269). With B = 4000 each limit's Monte Carlo SD is 0.019 (as above); 4 of them are 0.075,
    less than the 0.087 by which a 10% error in the predictive SD would move a limit."""
    B = 4000
    s2, s2a = pulp_reml.sigma**2, pulp_reml.varcorr["vcov"].iloc[0]
    sd = np.sqrt(1.25 * s2a + 1.05 * s2)
    exact = pulp_reml.fixef.iloc[0] + stats.norm.ppf([0.025, 0.975]) * sd
    ours = prediction_interval(pulp_reml, pd.DataFrame({"operator": ["someone new"]}), nsim=B, seed=3)
    limit_sd = np.sqrt(0.025 * 0.975 / B) / stats.norm.pdf(1.96) * sd
    np.testing.assert_allclose(ours.loc[0, ["lower", "upper"]].astype(float), exact, atol=4 * limit_sd)


def test_lrt_never_prints_a_zero_p_value():
    """When no simulated statistic reaches the observed one (k = 0) the bootstrap p-value is
    (k + 1)/(B + 1) = 1/(B + 1), printed with k and B (chapter 7); and a chi-square p below 1e-4 is
    printed to 2 significant digits, not as 0.0000."""
    data = book_data("pulp")
    data["bright"] = data["bright"] + 5.0 * data["operator"].cat.codes  # operators far apart
    result = lrt(smf.ols("bright ~ 1", data).fit(), lmer("bright ~ 1 + (1 | operator)", data, reml=False),
                 nsim=50, seed=1)
    assert result.exceed == 0 and result.replicates == 50 and result.p_chisq < 1e-4
    assert result.p_boot == 1 / 51
    text = str(result)
    assert "0.0000" not in text
    assert f"bootstrap p = (k + 1)/(B + 1) = {1 / 51:.4f} (k = 0 of B = 50" in text
    assert f"chi-square p = {result.p_chisq:.1e}" in text
