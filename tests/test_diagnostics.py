"""Chapter 14's diagnostics against R: lme4's rePCA and leave-one-group-out influence
(influence.merMod with groups=, cooks.distance), and the R package performance's r2_nakagawa and
icc (tests/reference/chapter14.json, written by tests/reference/chapter14.R); the simulation
check against the closed-form distribution of the mean of the response."""

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lmmnotes
from lmmnotes import DataError, diagnostics
from lmmnotes.checks import SingularFitWarning

REF = json.loads((Path(__file__).parent / "reference" / "chapter14.json").read_text())
CASES = ["early_intercept", "early_maximal", "early_zcp", "psid_slopes", "ergostool"]


def data(name: str) -> pd.DataFrame:
    frame = lmmnotes.datasets.load(name)
    if name == "early":
        frame = frame.assign(agec=frame["age"] - 1)
    if name == "psid":
        frame = frame.assign(cyear=frame["year"] - 78)
    return frame


def fit(case: str):
    ref = REF[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)
        return lmmnotes.lmer(ref["formula"], data(ref["data"]))


@pytest.mark.parametrize("case", CASES)
def test_repca_matches_lme4(case):
    ref = REF[case]
    f = fit(case)
    assert f.is_singular == ref["singular"]
    out = lmmnotes.repca(f)
    assert list(out) == list(ref["repca"])
    for group, sdev in ref["repca"].items():
        np.testing.assert_allclose(out[group]["sdev"], np.atleast_1d(sdev), rtol=2e-4, atol=1e-6)
        assert out[group]["cumulative"].iloc[-1] == pytest.approx(1.0)


def test_repca_of_a_singular_maximal_fit_has_a_zero_component():
    out = lmmnotes.repca(fit("early_maximal"))["id"]
    assert len(out) == 2 and out["sdev"].iloc[1] < 1e-6 and out["proportion"].iloc[0] == pytest.approx(1.0)


@pytest.mark.parametrize("case", ["early_intercept", "psid_slopes", "ergostool"])
def test_r2_and_icc_match_performance(case):
    ref = REF[case]
    f = fit(case)
    v = diagnostics.variance_components(f)
    rtol = 2e-4 if case == "psid_slopes" else 1e-6  # psid's theta agrees with lme4's to about 1e-5
    assert v.fixed == pytest.approx(ref["var_fixed"], rel=rtol)
    assert v.random == pytest.approx(ref["var_random"], rel=rtol)
    assert v.residual == pytest.approx(ref["var_residual"], rel=rtol)
    r2 = lmmnotes.r2_nakagawa(f)
    assert r2["marginal"] == pytest.approx(ref["r2_marginal"], rel=rtol)
    assert r2["conditional"] == pytest.approx(ref["r2_conditional"], rel=rtol)
    icc = lmmnotes.icc(f)
    assert icc["adjusted"] == pytest.approx(ref["icc_adjusted"], rel=rtol)
    assert icc["unadjusted"] == pytest.approx(ref["icc_unadjusted"], rel=rtol)


def test_icc_of_a_random_intercept_is_the_variance_share():
    f = fit("ergostool")
    vc = f.varcorr["vcov"].to_numpy()
    assert lmmnotes.icc(f)["adjusted"] == pytest.approx(vc[0] / (vc[0] + vc[1]), rel=1e-12)


def test_r2_of_a_singular_fit_warns():
    f = fit("early_maximal")
    with pytest.warns(SingularFitWarning, match="singular"):
        lmmnotes.r2_nakagawa(f)


@pytest.mark.parametrize("case, group", [("early_intercept", "id"), ("ergostool", "Subject")])
def test_leave_one_group_out_matches_lme4(case, group):
    ref = REF[case]
    frame = data(ref["data"])
    before = frame.copy()
    infl = lmmnotes.influence_groups(fit(case), frame, group)
    pd.testing.assert_frame_equal(frame, before)  # the data are not modified
    assert list(infl.fixef_without.index) == ref["influence"]["groups"]
    assert list(infl.fixef_without.columns.str.replace(r"\[T\.(.*)\]", r"\1", regex=True)) == \
        ref["influence"]["fixef_names"]
    np.testing.assert_allclose(infl.fixef_without.to_numpy(), np.array(ref["influence"]["fixef_without"]).T,
                               rtol=1e-6)
    np.testing.assert_allclose(infl.cooks_distance.to_numpy(), ref["influence"]["cooks"], rtol=1e-5)
    assert (infl.status == "converged").all()


def test_leave_one_group_out_refuses_a_missing_column_and_too_few_groups():
    f = fit("ergostool")
    with pytest.raises(DataError, match="Operator"):
        lmmnotes.influence_groups(f, data("ergostool"), "Operator")
    frame = data("ergostool")
    two = frame[frame["Subject"].isin(frame["Subject"].unique()[:2])]
    with pytest.raises(DataError, match="at least 3"):
        lmmnotes.influence_groups(f, two, "Subject")


def test_simulation_check_reproduces_the_distribution_of_the_mean():
    """The mean of y simulated from a random-intercept fit is normal with mean mean(X beta) and
    variance 1'V1/n^2, V = sigma_a^2 ZZ' + sigma^2 I (closed form)."""
    f = fit("ergostool")
    B = 4000
    check = lmmnotes.simulation_check(f, lambda y: y.mean(), nsim=B, seed=1)
    assert check.observed["statistic"] == pytest.approx(data("ergostool")["effort"].mean())
    n = f.nobs
    codes = f.design.terms[0].codes
    sa2, s2 = f.varcorr["vcov"].iloc[0], f.sigma**2
    sizes = np.bincount(codes)
    var = (sa2 * np.sum(sizes**2) + s2 * n) / n**2
    mean = np.mean(f.design.X @ f.fixef.to_numpy())
    sims = check.simulated["statistic"]
    assert abs(sims.mean() - mean) < 4 * np.sqrt(var / B)
    assert sims.var() == pytest.approx(var, rel=4 * np.sqrt(2 / B))
    p = check.p_values()["statistic"]
    assert 0 < p <= 1


def test_simulation_check_p_values():
    """Several statistics at once; an observed value beyond every simulated one gets the smallest
    two-sided p-value, 2/(B + 1)."""
    f = fit("ergostool")
    check = lmmnotes.simulation_check(f, lambda y: pd.Series({"max": y.max(), "mean": y.mean()}), nsim=199,
                                      seed=2)
    p = check.p_values()
    assert list(p.index) == ["max", "mean"]
    assert p.between(0, 1).all()
    shifted = diagnostics.SimulationCheck(observed=check.observed + 100, simulated=check.simulated)
    assert shifted.p_values()["max"] == pytest.approx(2 / 200)
