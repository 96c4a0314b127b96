"""Satterthwaite's degrees of freedom against lmerTest (tests/reference/satterthwaite.R ->
satterthwaite.json): t tests of every coefficient and F tests of restriction matrices, on a
balanced split plot (REML and ML), a crossed Latin square whose operator variance is estimated as
0, correlated random slopes (ratdrink, psid) and chapter 10's singular ML fit (correlation 1).

Tolerances, from what the comparison shows. Our theta agrees with lme4's to about 1e-8 on the
small fits and to 2e-6 (relative) on psid, and both programs take numerical derivatives of the
deviance, so the df agree to 2e-7 on the split plot and to 5e-5 on psid: df, t and F are
compared to 2e-4 relative. p-values as small as 1e-15 inherit a relative error of about
t^2 times that of the t value, so they are compared to 5e-3 relative (observed 1.2e-3).
"""

import json
import pathlib
import warnings

import numpy as np
import pandas as pd
import pytest

import lmmnotes
from lmmnotes import DataError, satterthwaite
from lmmnotes.checks import SingularFitWarning
from lmmnotes.fixed_effect_tests import SatterthwaiteTest, satterthwaite_pieces

ROOT = pathlib.Path(__file__).resolve().parent.parent
REF = json.loads((ROOT / "tests" / "reference" / "satterthwaite.json").read_text())
CASES = REF["cases"]
REL = 2e-4
P_REL = 5e-3


def load(name: str) -> pd.DataFrame:
    data = lmmnotes.datasets.load(name)
    return data.assign(cyear=data["year"] - 78) if name == "psid" else data


_FITS: dict = {}


def fit_of(key: str):
    if key not in _FITS:
        case = CASES[key]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SingularFitWarning)
            _FITS[key] = lmmnotes.lmer(case["formula"], load(case["data"]), reml=case["reml"])
    return _FITS[key]


@pytest.mark.parametrize("key", list(CASES))
def test_coefficient_table_matches_lmertest(key):
    case, fit = CASES[key], fit_of(key)
    assert fit.is_singular == case["singular"]
    table = satterthwaite(fit)
    ref = case["coefficients"]
    assert list(table.columns) == ["Estimate", "Std. Error", "df", "t value", "Pr(>|t|)"]
    assert len(table) == len(ref["names"])
    np.testing.assert_allclose(table["Estimate"], ref["estimate"], rtol=REL)
    np.testing.assert_allclose(table["Std. Error"], ref["std_error"], rtol=REL)
    np.testing.assert_allclose(table["df"], ref["df"], rtol=REL)
    np.testing.assert_allclose(table["t value"], ref["t_value"], rtol=REL)
    np.testing.assert_allclose(table["Pr(>|t|)"], ref["p_value"], rtol=P_REL)


F_TESTS = [(key, name) for key, case in CASES.items() for name in (case["f_tests"] or {})]


@pytest.mark.parametrize("key, name", F_TESTS)
def test_f_tests_match_lmertest(key, name):
    ref = CASES[key]["f_tests"][name]
    L = np.array(ref["L"], dtype=float)
    test = satterthwaite(fit_of(key), L)
    assert isinstance(test, SatterthwaiteTest)
    assert test.ndf == ref["ndf"]
    assert test.ddf == pytest.approx(ref["ddf"], rel=REL)
    assert test.statistic == pytest.approx(ref["f_value"], rel=REL)
    assert test.mean_sq == pytest.approx(ref["mean_sq"], rel=REL)
    assert test.sum_sq == pytest.approx(ref["sum_sq"], rel=REL)
    assert test.p_value == pytest.approx(ref["p_value"], rel=P_REL)
    row = test.to_frame()
    assert list(row.columns) == ["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"]


@pytest.mark.parametrize("key", [k for k, c in CASES.items() if not c["singular"]])
def test_covariance_of_the_variance_parameters_matches_lmertest(key):
    """A = 2 H^{-1} in (theta, sigma). On a singular fit the Hessian's entries along the boundary
    coordinate depend on the finite-difference steps (ours and numDeriv's differ by 1e-3 there),
    and the df do not (they are compared above), so only regular fits are compared here."""
    A = satterthwaite_pieces(fit_of(key)).vcov_varpar
    R = np.array(CASES[key]["vcov_varpar"], dtype=float)
    assert np.max(np.abs(A - R)) <= 2e-5 * np.max(np.abs(R))


def test_balanced_split_plot_gives_the_exact_stratum_df():
    """Closed form: in the balanced split plot (8 fields, 4 irrigations, 2 varieties) the
    variety-by-irrigation interaction lies in the sub-plot stratum, with 8 - 4 = 4 residual df,
    and irrigation averaged over varieties in the whole-plot stratum, also with 4."""
    fit = fit_of("irrigation")
    names = list(fit.fixef.index)
    inter = np.zeros((3, len(names)))
    mean = np.zeros((3, len(names)))
    for i, level in enumerate(["i2", "i3", "i4"]):
        inter[i, names.index(f"irrigation[T.{level}]:variety[T.v2]")] = 1
        mean[i, names.index(f"irrigation[T.{level}]")] = 1
        mean[i, names.index(f"irrigation[T.{level}]:variety[T.v2]")] = 0.5
    assert satterthwaite(fit, inter).ddf == pytest.approx(4, abs=1e-4)
    assert satterthwaite(fit, mean).ddf == pytest.approx(4, abs=1e-4)


def test_a_smaller_fit_is_the_same_test_as_its_restriction():
    irrigation = lmmnotes.datasets.load("irrigation")
    large = fit_of("irrigation")
    small = lmmnotes.lmer("yield ~ irrigation + variety + (1 | field)", irrigation)
    ref = CASES["irrigation"]["f_tests"]["interaction"]
    by_fit = satterthwaite(large, small)
    assert by_fit.ndf == 3
    assert by_fit.statistic == pytest.approx(ref["f_value"], rel=REL)
    assert by_fit.ddf == pytest.approx(ref["ddf"], rel=REL)


def test_one_row_is_the_square_of_the_t_test():
    fit = fit_of("psid")
    table = satterthwaite(fit)
    j = 2
    row = np.eye(len(table))[j]
    test = satterthwaite(fit, row)
    assert test.ndf == 1
    assert test.statistic == pytest.approx(table["t value"].iloc[j] ** 2, rel=1e-10)
    assert test.ddf == pytest.approx(table["df"].iloc[j], rel=1e-10)
    assert test.p_value == pytest.approx(table["Pr(>|t|)"].iloc[j], rel=1e-8)
    assert "Satterthwaite F = " in str(test) and "p = " in str(test)


def test_bad_input_is_a_data_error_and_l_is_left_alone():
    fit = fit_of("irrigation")
    p = len(fit.fixef)
    with pytest.raises(DataError, match="one column per fixed effect"):
        satterthwaite(fit, np.ones((1, p + 1)))
    with pytest.raises(DataError, match="finite"):
        satterthwaite(fit, np.r_[np.nan, np.ones(p - 1)])
    with pytest.raises(DataError, match="no nonzero row"):
        satterthwaite(fit, np.zeros((2, p)))
    with pytest.raises(DataError, match="numeric matrix"):
        satterthwaite(fit, "variety")
    with pytest.raises(DataError, match="a fit from lmmnotes.lmer"):
        satterthwaite(pd.DataFrame({"a": [1]}))
    shifted = lmmnotes.datasets.load("irrigation").assign(**{"yield": lambda d: d["yield"] + 1})
    other = lmmnotes.lmer("yield ~ irrigation + (1 | field)", shifted)
    with pytest.raises(DataError, match="different data"):
        satterthwaite(fit, other)
    L = np.eye(p)[[4]]
    before = L.copy()
    satterthwaite(fit, L)
    np.testing.assert_array_equal(L, before)


def test_a_fit_away_from_the_optimum_warns():
    """At theta = 0.3, far from the REML estimate 2.77, the deviance is not convex in (theta,
    sigma): the Hessian has a negative eigenvalue, which lmerTest reports as a convergence
    failure, and so does satterthwaite."""
    from lmmnotes.checks import ConvergenceWarning
    from lmmnotes.results import LmerFit

    fit = fit_of("irrigation")
    away = LmerFit.from_theta(fit.design, fit.cross_products, True, np.array([0.3]))
    with pytest.warns(ConvergenceWarning, match="negative eigenvalues"):
        satterthwaite(away)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        satterthwaite(fit)  # at the optimum: no warning


def test_a_labelled_l_is_read_by_its_labels():
    """L as a DataFrame (or a Series for one row) is matched to the fixed effects by name: the
    cyear row with the columns in reverse order is lmerTest's t test of cyear, squared."""
    fit = fit_of("psid")
    ref = CASES["psid"]["coefficients"]
    names = list(fit.fixef.index)
    j = names.index("cyear")
    row = pd.Series(np.eye(len(names))[j], index=names)
    for L in (row.iloc[::-1].to_frame().T, row.iloc[::-1]):
        test = satterthwaite(fit, L)
        assert test.statistic == pytest.approx(ref["t_value"][j] ** 2, rel=REL)
        assert test.ddf == pytest.approx(ref["df"][j], rel=REL)
    with pytest.raises(DataError, match=r"not fixed effects: \['year'\], missing: \['cyear'\]"):
        satterthwaite(fit, row.rename({"cyear": "year"}))
    with pytest.raises(DataError, match=r"missing: \['educ'\]"):
        satterthwaite(fit, row.drop("educ"))
    unlabelled = satterthwaite(fit, pd.DataFrame([np.eye(len(names))[j]]))  # default labels: by position
    assert unlabelled.statistic == pytest.approx(ref["t_value"][j] ** 2, rel=REL)


def test_kenward_roger_reads_a_labelled_l_by_its_labels():
    """pbkrtest's KRmodcomp of psid with a two-row L (tests/reference/inference.json), the L given
    as a DataFrame whose columns are in another order than the fixed effects."""
    ref = json.loads((ROOT / "tests" / "reference" / "inference.json").read_text())["kenward_roger"]
    full = fit_of("psid")
    at_lme4 = lmmnotes.LmerFit.from_theta(full.design, full.cross_products, True,
                                          np.array(ref["psid_full_theta"]))
    test = ref["psid_restriction"]
    names = list(full.fixef.index)
    L = pd.DataFrame(np.array(test["L"], dtype=float), columns=names).iloc[:, ::-1]
    out = lmmnotes.kenward_roger(at_lme4, L)
    assert out.ndf == test["ndf"]
    assert out.statistic == pytest.approx(test["statistic"], rel=1e-4)
    assert out.ddf == pytest.approx(test["ddf"], rel=1e-4)
    assert out.scaling == pytest.approx(test["scaling"], rel=1e-4)
    with pytest.raises(DataError, match="L's labels must be the fixed effects"):
        lmmnotes.kenward_roger(at_lme4, L.rename(columns={"educ": "education"}))


def test_eigenvalues_of_the_hessian_near_zero_warn_as_lmertest():
    """Closed form: in a balanced one-way layout whose between-group mean square equals the
    within-group one, the REML estimate of the group variance is exactly 0 and the REML criterion
    is flat to second order there, so the Hessian in (theta, sigma) at theta = 0 has an eigenvalue
    0. lmerTest (as_lmerModLT) warns "Model may not have converged with 1 eigenvalue close to
    zero" and leaves that direction out of the inverse."""
    from lmmnotes.checks import ConvergenceWarning
    from lmmnotes.results import LmerFit

    rng = np.random.default_rng(3)
    a, n = 4, 3
    g = np.repeat(np.arange(a), n)
    y = rng.normal(size=a * n)
    means = np.array([y[g == k].mean() for k in range(a)])
    within = y - means[g]
    ratio = (np.sum(within**2) / (a * (n - 1))) / (n * np.sum((means - means.mean()) ** 2) / (a - 1))
    data = pd.DataFrame({"y": 10 + np.sqrt(ratio) * (means[g] - means.mean()) + within,
                         "g": [f"g{k}" for k in g]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)
        fit = lmmnotes.lmer("y ~ 1 + (1 | g)", data)
    at_zero = LmerFit.from_theta(fit.design, fit.cross_products, True, np.array([0.0]))
    with pytest.warns(ConvergenceWarning, match="close to zero"):
        pieces = satterthwaite_pieces(at_zero)
    assert np.linalg.matrix_rank(pieces.vcov_varpar) == 1


def test_combined_df_as_lmertest_get_fstat_ddf():
    """lmerTest's get_Fstat_ddf: 2 when some nu <= 2, else 2E/(E - q) with E = sum nu/(nu - 2)."""
    from lmmnotes.fixed_effect_tests import _combined_df

    assert _combined_df(np.array([1.5, 10.0])) == 2.0
    assert _combined_df(np.array([2.0, 10.0])) == 2.0
    assert _combined_df(np.array([3.0, 4.0, 6.0])) == pytest.approx(2 * 6.5 / (6.5 - 3))
    assert _combined_df(np.array([7.0, 7.0])) == 7.0
