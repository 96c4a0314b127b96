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

ROOT = Path(__file__).resolve().parent.parent
REF = json.loads((ROOT / "tests" / "reference" / "chapter14.json").read_text())
CASES = ["early_intercept", "early_maximal", "early_zcp", "psid_slopes", "ergostool", "lawn_nested"]


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


@pytest.mark.parametrize("case", ["early_intercept", "psid_slopes", "ergostool", "lawn_nested"])
def test_r2_and_icc_match_performance(case):
    """One random intercept, a correlated random slope, and two nested grouping factors (lawn:
    machines within manufacturers, sigma^2_r the sum of two variances)."""
    ref = REF[case]
    f = fit(case)
    if case == "lawn_nested":  # a flat criterion: both optima agree to 5e-6 in theta; use lme4's
        f = lmmnotes.LmerFit.from_theta(f.design, f.cross_products, True, np.array(ref["theta"]))
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
    """Chapter 1's closed form sigma_a^2 / (sigma_a^2 + sigma^2), with lme4's variances."""
    vc = REF["ergostool"]["vcov"]  # Subject, Residual
    assert lmmnotes.icc(fit("ergostool"))["adjusted"] == pytest.approx(vc[0] / (vc[0] + vc[1]), rel=1e-6)


def test_a_singular_fit_warns_once_at_the_callers_line():
    f = fit("early_maximal")
    for function in (diagnostics.variance_components, lmmnotes.r2_nakagawa, lmmnotes.icc):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            function(f)
        singular = [w for w in caught if issubclass(w.category, SingularFitWarning)]
        assert len(singular) == 1
        assert singular[0].filename == __file__


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
    # the observed mean is mean(X beta-hat) (balanced data), the centre of a symmetric
    # distribution: the two-sided p-value is 1 up to Monte Carlo error (sd about 1/sqrt(B))
    assert check.observed["statistic"] == pytest.approx(mean)
    assert check.p_values()["statistic"] == pytest.approx(1.0, abs=4 / np.sqrt(B))


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


def one_way(seed: int = 1, groups=("A", "B", "C", "D"), n: int = 5) -> pd.DataFrame:
    """Groups B, C, D with exactly equal means and A far from them: without A the between-group
    mean square is 0, so the REML estimate of the group variance is 0 (a singular fit)."""
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((len(groups), n))
    e -= e.mean(axis=1, keepdims=True)
    y = 10 + e + np.array([5.0] + [0.0] * (len(groups) - 1))[:, None]
    return pd.DataFrame({"y": y.ravel(), "g": np.repeat(groups, n)})


def test_leave_one_group_out_marks_singular_refits_and_warns():
    frame = one_way()
    full = lmmnotes.lmer("y ~ 1 + (1 | g)", frame)
    assert not full.is_singular
    with pytest.warns(diagnostics.InfluenceWarning, match="1 of 4 refits"):
        infl = lmmnotes.influence_groups(full, frame, "g")
    assert list(infl.status) == ["singular", "converged", "converged", "converged"]


def test_leave_one_group_out_refuses_a_refit_without_some_fixed_effect():
    frame = one_way(groups=(0, 1, 2, 3)).assign(x=["a", "b"] * 10)
    frame.loc[2, "x"] = "c"  # a level only group 0 has
    full = lmmnotes.lmer("y ~ x + (1 | g)", frame)
    with pytest.raises(DataError, match=r"leaving out g = 0 changes the fixed effects \(without it \['x\[T.c\]'\]"):
        lmmnotes.influence_groups(full, frame, "g")
    frame = one_way().assign(z=np.r_[np.arange(5.0), np.zeros(15)])  # z varies in group A only
    full = lmmnotes.lmer("y ~ z + (1 | g)", frame)
    with pytest.raises(DataError, match="constant or aliased in the other groups"):
        lmmnotes.influence_groups(full, frame, "g")


def test_leave_one_group_out_refuses_other_data():
    f = fit("ergostool")
    frame = data("ergostool")
    with pytest.raises(DataError, match="not the data the model was fitted to"):
        lmmnotes.influence_groups(f, frame.assign(effort=frame["effort"] * 10), "Subject")
    with pytest.raises(DataError, match="not the data the model was fitted to"):
        lmmnotes.influence_groups(f, frame.iloc[:-4], "Subject")


def test_p_values_leave_out_missing_simulated_values():
    """Observed 1 above both of the B = 2 simulated values that are not missing:
    2 min(k_le + 1, k_ge + 1) / (B + 1) = 2 (0 + 1) / 3."""
    check = diagnostics.SimulationCheck(observed=pd.Series({"s": 1.0}),
                                        simulated=pd.DataFrame({"s": [0.1, np.nan, 0.2, np.nan]}))
    with pytest.warns(diagnostics.SimulationCheckWarning, match="2 of 4"):
        assert check.p_values()["s"] == pytest.approx(2 / 3)
    missing = diagnostics.SimulationCheck(observed=pd.Series({"s": np.nan}), simulated=check.simulated)
    with pytest.raises(DataError, match=r"observed value of \['s'\] is missing"):
        missing.p_values()


def test_simulation_check_refuses_a_statistic_that_is_not_a_number_or_a_series():
    f = fit("ergostool")
    with pytest.raises(DataError, match="number or a pandas Series.*ndarray; wrap an array"):
        lmmnotes.simulation_check(f, lambda y: y.to_numpy()[:2], nsim=2, seed=1)
    with pytest.raises(DataError, match="number or a pandas Series.*returned str"):
        lmmnotes.simulation_check(f, lambda y: "large", nsim=2, seed=1)
    with pytest.raises(DataError, match="same labels every time"):
        lmmnotes.simulation_check(f, lambda y: (y > y.iloc[0]).value_counts(), nsim=20, seed=1)
