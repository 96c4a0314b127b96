"""The multilevel chapters' tools against lme4 (tests/reference/multilevel.json, from multilevel.R)
and against exact answers: random-effects structures on hsb, a group's implied intercept-slope
correlation (``random_slope_correlation``), fit status, and the Monte Carlo machinery
(``simulate_responses``, ``refit_responses``)."""

import json
import pathlib
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

import lmmnotes
from lmmnotes import (DataError, bootstrap, intercept_slope, lmer, random_slope_correlation, refit_responses,
                      simulate_responses)

from .conftest import book_data

ML_REFERENCE = json.loads((pathlib.Path(__file__).parent / "reference" / "multilevel.json").read_text())
MODELS = ML_REFERENCE["models"]
SECTORS = ("Catholic", "Public")


def _hsb() -> pd.DataFrame:
    """hsb as multilevel.R prepares it: centred ses and one 0/1 indicator per sector."""
    hsb = book_data("hsb")
    hsb["cses"] = hsb["ses"] - hsb["meanses"]
    hsb["cath"] = (hsb["sector"] == "Catholic").astype(float)
    hsb["pub"] = (hsb["sector"] == "Public").astype(float)
    return hsb


@pytest.fixture(scope="module")
def hsb():
    return _hsb()


@pytest.fixture(scope="module")
def fits(hsb):
    return {name: lmer(m["formula"], hsb, reml=m["reml"]) for name, m in MODELS.items()}


def _r_varcorr(column: str, name: str, grp: str, var1: str, var2: str = "") -> float:
    """One entry of lme4's as.data.frame(VarCorr(fit)): ``column`` is "sdcor" or "vcov"."""
    vc = MODELS[name]["varcorr"]
    for g, a, b, value in zip(vc["grp"], vc["var1"], vc["var2"], vc[column]):
        if (g, a, b) == (grp, var1, var2):
            return value
    raise KeyError((name, grp, var1, var2))


def _r_sdcor(name: str, grp: str, var1: str, var2: str = "") -> float:
    return _r_varcorr("sdcor", name, grp, var1, var2)


def _r_vcov(name: str, grp: str, var1: str, var2: str = "") -> float:
    return _r_varcorr("vcov", name, grp, var1, var2)


# ---- the fits against lme4 -----------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MODELS))
def test_criterion_matches_or_beats_lme4(fits, name):
    """Every structure of chapters 10 and 11 reaches lme4's criterion or a lower one. lme4 stops
    short on several of these boundary fits (on (ses | school) it warns max|grad| = 0.006), so
    ours may be lower by up to 1e-4, never higher by more than 1e-6."""
    fit, ref = fits[name], MODELS[name]
    assert fit.criterion < ref["criterion"] + 1e-6
    assert fit.criterion == pytest.approx(ref["criterion"], abs=1e-4)
    assert len(fit.theta) == ref["n_theta"]
    if any("failed to converge" in m for m in ref["lme4_messages"]):
        # lme4 stopped at a correlation of 0.9999, short of the boundary we reach
        assert fit.is_singular and fit.criterion < ref["criterion"] - 1e-6
    else:
        assert fit.is_singular == ref["is_singular"]


def test_group_level_predictors_fit_matches_lme4(fits):
    """Chapter 10's model with sector, school mean ses and their cross-level interactions (ML)."""
    fit, ref = fits["hsb_context_ml"], MODELS["hsb_context_ml"]
    np.testing.assert_allclose(fit.fixef.to_numpy(), list(ref["fixef"].values()), rtol=1e-5)
    np.testing.assert_allclose(fit.stderr.to_numpy(), list(ref["stderr"].values()), rtol=1e-4)
    np.testing.assert_allclose(fit.varcorr["sdcor"].to_numpy(), ref["varcorr"]["sdcor"], rtol=2e-3)
    assert fit.status == "converged"


@pytest.mark.parametrize("sector", SECTORS)
def test_two_parametrizations_of_per_sector_effects_agree_with_lme4(fits, sector):
    """(ses * sector | school) has 10 covariance parameters, of which only the 6 that describe
    each sector's intercept and slope are identified; the two-term dummy form has exactly those 6.
    lme4 reaches the same criterion with both, and the per-sector SDs and correlation implied by
    our fit of the first equal lme4's estimates in the second."""
    assert MODELS["ses_times_sector_reml"]["criterion"] == pytest.approx(MODELS["by_sector_reml"]["criterion"],
                                                                          abs=1e-4)
    d = "cath" if sector == "Catholic" else "pub"
    grp = "school" if sector == "Catholic" else "school.1"
    expected = [_r_sdcor("by_sector_reml", grp, d), _r_sdcor("by_sector_reml", grp, f"{d}:ses"),
                _r_sdcor("by_sector_reml", grp, d, f"{d}:ses")]
    for name, at in [("ses_times_sector_reml", {"sector": sector}),
                     ("by_sector_reml", {"cath": float(sector == "Catholic"), "pub": float(sector == "Public")})]:
        got = random_slope_correlation(fits[name], "ses", at=at)
        np.testing.assert_allclose(got.to_numpy(), expected, rtol=5e-3, atol=2e-3)


@pytest.mark.parametrize("sector", SECTORS)
def test_colon_form_correlations_by_sector(fits, sector):
    """In (ses:sector | school) a school's intercept is the shared (Intercept) column and its slope
    its sector's column, so the implied correlation is the printed one of that pair."""
    col = f"ses:sector{sector}"
    expected = [_r_sdcor("ses_colon_sector_reml", "school", "(Intercept)"),
                _r_sdcor("ses_colon_sector_reml", "school", col),
                _r_sdcor("ses_colon_sector_reml", "school", "(Intercept)", col)]
    got = random_slope_correlation(fits["ses_colon_sector_reml"], "ses", at={"sector": sector})
    np.testing.assert_allclose(got.to_numpy(), expected, rtol=5e-3, atol=2e-3)


@pytest.mark.parametrize("sector", SECTORS)
def test_dummy_form_prints_the_wrong_correlation(fits, sector):
    """(cath:ses | school) + (pub:ses | school): a school's intercept is the sum of both terms'
    intercepts, only one of which is correlated with its slope. The correlation that answers the
    question, Cov(a1, s) / sqrt((v1 + v2) Var(s)), computed here from lme4's estimates, is what
    random_slope_correlation gives for our fit; the printed one (denominator v1 alone) is not it."""
    name = "dummy_slopes_reml"
    d, own, other = ("cath", "school", "school.1") if sector == "Catholic" else ("pub", "school.1", "school")
    v_own = _r_vcov(name, own, "(Intercept)")
    v_other = _r_vcov(name, other, "(Intercept)")
    v_slope = _r_vcov(name, own, f"{d}:ses")
    c = _r_vcov(name, own, "(Intercept)", f"{d}:ses")
    implied = c / np.sqrt((v_own + v_other) * v_slope)
    got = random_slope_correlation(fits[name], "ses",
                                   at={"cath": float(sector == "Catholic"), "pub": float(sector == "Public")})
    assert got["sd_intercept"] == pytest.approx(np.sqrt(v_own + v_other), rel=1e-3)
    assert got["sd_slope"] == pytest.approx(np.sqrt(v_slope), rel=2e-2)
    assert got["corr"] == pytest.approx(implied, abs=2e-2)
    if sector == "Catholic":  # most of the intercept variance sits in the other (Public) term
        printed = _r_sdcor(name, own, "(Intercept)", f"{d}:ses")
        assert printed < -0.99 and abs(printed - implied) > 0.5  # the printed correlation is not the answer


@pytest.mark.parametrize("sector", SECTORS)
def test_separate_fits_by_sector(hsb, sector):
    ref = ML_REFERENCE["separate_by_sector"][sector]
    fit = lmer("mathach ~ ses + (ses | school)", hsb[hsb["sector"] == sector])
    assert fit.criterion < ref["criterion"] + 1e-6
    assert fit.criterion == pytest.approx(ref["criterion"], abs=1e-4)
    np.testing.assert_allclose(fit.fixef.to_numpy(), list(ref["fixef"].values()), rtol=1e-4)
    np.testing.assert_allclose(random_slope_correlation(fit, "ses").to_numpy(), ref["varcorr"]["sdcor"][:3],
                               rtol=5e-3, atol=2e-3)
    assert fit.status == ("singular" if ref["is_singular"] else "converged")


def test_one_term_correlation_is_the_printed_one(fits):
    """With (ses | school) the intercept and slope are the term's own columns: A C A' gives back
    the term's covariance (an identity, checked exactly) and lme4's numbers."""
    fit = fits["ses_reml"]
    got = random_slope_correlation(fit, "ses", at={"sector": "Public"})
    cov = fit.covariances()["school"].to_numpy()
    assert got["sd_intercept"] == pytest.approx(np.sqrt(cov[0, 0]), rel=1e-12)
    assert got["sd_slope"] == pytest.approx(np.sqrt(cov[1, 1]), rel=1e-12)
    np.testing.assert_allclose(got.to_numpy(), MODELS["ses_reml"]["varcorr"]["sdcor"][:3], rtol=2e-3, atol=2e-4)
    prepared = intercept_slope(fit, "ses", at={"sector": "Public"})
    pd.testing.assert_series_equal(prepared(fit), got)


def test_intercept_slope_refuses_bad_arguments(fits):
    fit = fits["ses_colon_sector_reml"]
    with pytest.raises(DataError, match="slope variable"):
        random_slope_correlation(fit, "ses", at={"ses": 1.0, "sector": "Public"})
    with pytest.raises(DataError, match="not a grouping factor.*school"):
        random_slope_correlation(fit, "ses", at={"sector": "Public"}, group="sector")
    with pytest.raises(DataError, match="give at= a value for each column"):
        random_slope_correlation(fit, "ses")
    with pytest.raises(TypeError, match="lmmnotes.lmer"):
        random_slope_correlation("not a fit", "ses")
    prepared = intercept_slope(fits["by_sector_reml"], "ses", at={"cath": 1.0, "pub": 0.0})
    with pytest.raises(DataError, match="another model"):
        prepared(fits["ses_reml"])


def test_several_grouping_factors_need_group():
    eggs = book_data("eggs")
    fit = lmer("Fat ~ 1 + (1 | Lab) + (1 | Lab:Technician)", eggs)
    with pytest.raises(DataError, match="several grouping factors"):
        random_slope_correlation(fit, "Fat")


# ---- fit status ------------------------------------------------------------------------------------
def test_status_names_the_three_outcomes(fits):
    pulp = lmer("bright ~ 1 + (1 | operator)", book_data("pulp"))
    assert pulp.status == "converged"
    assert fits["ses_reml"].status == "singular"  # correlation 1 (lme4 stops at 0.9999 and warns)
    assert replace(pulp, converged=False).status == "not converged"
    assert replace(fits["ses_reml"], converged=False).status == "not converged"


# ---- simulate_responses and refit_responses ---------------------------------------------------------
def _two_sector_design(n_school: int = 3, n_per: int = 6) -> pd.DataFrame:
    design = pd.DataFrame({"school": np.repeat(np.arange(1, 2 * n_school + 1), n_per),
                           "ses": np.tile(np.arange(1.0, n_per + 1.0), 2 * n_school)})
    design["sector"] = np.where(design["school"] <= n_school, "A", "B")
    return design


def test_simulate_responses_has_the_exact_mean_and_covariance():
    """Column k is X beta + Z b_k + e_k: over B columns the mean of each row is X beta and the
    covariance of a school's rows is Z_j D_s Z_j' + sigma^2 I, with D_s its sector's block.
    Tolerances are 4 Monte Carlo standard errors (B = 20000)."""
    design = _two_sector_design()
    SA = np.array([[4.0, 0.8], [0.8, 1.0]])
    SB = np.array([[4.0, -0.8], [-0.8, 1.0]])
    D = np.zeros((4, 4))  # columns sector[A], sector[B], sector[A]:ses, sector[B]:ses
    D[np.ix_([0, 2], [0, 2])] = SA
    D[np.ix_([1, 3], [1, 3])] = SB
    B, sigma = 20000, 2.0
    Y = simulate_responses(design, "y ~ ses * sector + (0 + sector + sector:ses | school)",
                           {"(Intercept)": 1.0, "ses": 2.0, "sector[T.B]": 0.0, "ses:sector[T.B]": 1.0},
                           {"school": D}, sigma=sigma, nsim=B, seed=11).to_numpy()
    assert Y.shape == (len(design), B)
    mean = 1.0 + np.where(design["sector"] == "A", 2.0, 3.0) * design["ses"].to_numpy()
    for school, S in [(1, SA), (4, SB)]:
        rows = np.flatnonzero(design["school"] == school)
        Zj = np.column_stack([np.ones(len(rows)), design["ses"].to_numpy()[rows]])
        V = Zj @ S @ Zj.T + sigma**2 * np.eye(len(rows))
        np.testing.assert_array_less(np.abs(Y[rows].mean(axis=1) - mean[rows]), 4 * np.sqrt(np.diag(V) / B))
        # the covariance of two normal variables with variances a, b and covariance c is estimated
        # with variance (a b + c^2) / B
        se = np.sqrt((np.outer(np.diag(V), np.diag(V)) + V**2) / B)
        np.testing.assert_array_less(np.abs(np.cov(Y[rows]) - V), 4 * se)
    # schools are independent
    r1, r2 = np.flatnonzero(design["school"] == 1)[0], np.flatnonzero(design["school"] == 2)[0]
    assert abs(np.corrcoef(Y[r1], Y[r2])[0, 1]) < 4 / np.sqrt(B)


def test_simulate_responses_refuses_bad_input():
    design = _two_sector_design()
    args = ("y ~ ses + (ses | school)", {"(Intercept)": 1.0, "ses": 2.0}, {"school": np.eye(2)})
    with pytest.raises(DataError, match="nsim must be a positive whole number"):
        simulate_responses(design, *args, sigma=1.0, nsim=0)
    with pytest.raises(DataError, match="already has a column 'y'"):
        simulate_responses(design.assign(y=1.0), *args, sigma=1.0, nsim=2)
    with pytest.raises(DataError, match="sigma must be a non-negative"):
        simulate_responses(design, *args, sigma=-1.0, nsim=2)
    with pytest.raises(DataError, match="keyed by the grouping factors"):
        simulate_responses(design, args[0], args[1], {"class": np.eye(2)}, sigma=1.0, nsim=2)
    design["d"] = 1.0
    with pytest.raises(DataError, match="share a grouping factor"):
        simulate_responses(design, "y ~ 1 + (1 | school) + (0 + d | school)", {"(Intercept)": 0.0},
                           {"school": 1.0}, sigma=1.0, nsim=2)
    before = design.copy()
    simulate_responses(design, "y ~ ses + (ses | school)", [1.0, 2.0], {"school": np.eye(2)}, sigma=1.0, nsim=2)
    pd.testing.assert_frame_equal(design, before)


def _fixef(fit):
    return fit.fixef


def test_refit_responses_is_the_bootstrap_loop():
    """Given the responses the bootstrap draws (one chunk: fit.simulate with the same generator),
    refit_responses returns the bootstrap's replicates exactly, with one worker or two."""
    fit = lmer("bright ~ 1 + (1 | operator)", book_data("pulp"))
    boot = bootstrap(fit, _fixef, nsim=30, seed=5)
    Y = fit.simulate(30, seed=np.random.default_rng(5))
    for n_jobs in (1, 2):
        result = refit_responses(fit, Y, _fixef, n_jobs=n_jobs)
        pd.testing.assert_frame_equal(result.replicates, boot.replicates)
        pd.testing.assert_series_equal(result.observed, boot.observed)
        assert result.n_failed == 0


def test_refit_responses_from_a_given_start_is_a_fresh_fit():
    """With start = lmer's own start for a small model (design.default_start) each refit is the fit lmer makes from scratch."""
    hsb = book_data("hsb")
    school_rows = hsb[hsb["school"].isin(hsb["school"].cat.categories[:20])].copy()
    fit = lmer("mathach ~ ses + (ses | school)", school_rows)
    Y = fit.simulate(4, seed=3)
    for n_jobs in (1, 2):
        result = refit_responses(fit, Y, _fixef_and_theta, start=fit.design.default_start, n_jobs=n_jobs)
        for k, column in enumerate(Y.columns):
            fresh = lmer("mathach ~ ses + (ses | school)", school_rows.assign(mathach=Y[column]))
            np.testing.assert_allclose(result.replicates.iloc[k].to_numpy(), _fixef_and_theta(fresh).to_numpy(),
                                       rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError, match=r"shape \(2,\) given, but this model has 3 covariance parameters"):
        refit_responses(fit, Y, _fixef, start=[1.0, 0.0])
    with pytest.raises(ValueError, match=r"shape \(1,\) given, but this model has 3 covariance parameters"):
        fit.refit(Y.iloc[:, 0], start=[1.0])


def _fixef_and_theta(fit):
    return pd.concat([fit.fixef, pd.Series(fit.theta, index=["t1", "t2", "t3"])])


def test_refit_responses_counts_failures_and_refuses_bad_shapes():
    fit = lmer("bright ~ 1 + (1 | operator)", book_data("pulp"))
    Y = fit.simulate(3, seed=1).to_numpy()

    def fails_on_second(refit):
        if refit.design.y[0] == Y[0, 1]:
            raise ValueError("planted failure")
        return refit.fixef

    result = refit_responses(fit, Y, fails_on_second)
    assert result.n_failed == 1
    assert result.replicates.iloc[1].isna().all() and result.replicates.drop(index=1).notna().all().all()
    with pytest.raises(ValueError, match="one row per observation of the fit \\(20 rows"):
        refit_responses(fit, Y[:5], _fixef)
    with pytest.raises(ValueError, match="missing or infinite"):
        refit_responses(fit, np.where(np.arange(20)[:, None] == 3, np.nan, Y), _fixef)
    one = refit_responses(fit, Y[:, 0], _fixef)  # a single response is one replicate
    assert one.nsim == 1


def test_public_names():
    for name in ("simulate_responses", "refit_responses", "random_slope_correlation", "intercept_slope"):
        assert name in lmmnotes.__all__ and hasattr(lmmnotes, name)
