"""lmlist (lme4's lmList) and compare (lme4's anova of nested fits) against lme4 1.1-31
(tests/reference/lme4_fits.json, from lme4_fits.R), and their refusals of bad input."""

import warnings

import numpy as np
import pandas as pd
import pytest

from lmmnotes import DataError, compare, lmer, lmlist

from .conftest import book_data

LMLISTS = {"psid_person": "psid", "hsb_school": "hsb"}


def nan_from_r(values):
    """JSON from R writes NA as the string "NA"."""
    return np.array([np.nan if v == "NA" else v for v in values], dtype=float)


# ---- lmlist -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lmlists(reference):
    return {k: lmlist(reference["lmlist"][k]["formula"], book_data(d)) for k, d in LMLISTS.items()}


@pytest.mark.parametrize("name", sorted(LMLISTS))
def test_lmlist_coefficients_standard_errors_and_rse(reference, lmlists, name):
    ref, fits = reference["lmlist"][name], lmlists[name]
    assert list(fits.coef.index) == ref["groups"]  # the factor's level order, as lme4
    assert list(fits.coef.columns) == list(ref["coef"])
    np.testing.assert_array_equal(fits.nobs.to_numpy(), ref["nobs"])
    for term in ref["coef"]:
        np.testing.assert_allclose(fits.coef[term].to_numpy(), ref["coef"][term], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(fits.stderr[term].to_numpy(), ref["stderr"][term], rtol=1e-9)
    assert fits.sigma == pytest.approx(ref["rse"], rel=1e-10)
    assert fits.df_residual == ref["df_residual"]
    assert fits.n_failed == 0


@pytest.mark.parametrize("name", sorted(LMLISTS))
@pytest.mark.parametrize("pool", [False, True])
def test_lmlist_confint(reference, lmlists, name, pool):
    ref = reference["lmlist"][name]["confint_pooled" if pool else "confint"]
    ci = lmlists[name].confint(0.95, pool=pool)
    for term, bounds in ref.items():
        np.testing.assert_allclose(ci[(term, "lower")].to_numpy(), bounds["lower"], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(ci[(term, "upper")].to_numpy(), bounds["upper"], rtol=1e-9, atol=1e-12)


def test_lmlist_confint_level_is_checked_and_narrows(lmlists):
    fits = lmlists["psid_person"]
    wide, narrow = fits.confint(0.99), fits.confint(0.5)
    assert ((wide.xs("upper", axis=1, level=1) - wide.xs("lower", axis=1, level=1))
            > (narrow.xs("upper", axis=1, level=1) - narrow.xs("lower", axis=1, level=1))).all().all()
    with pytest.raises(ValueError, match="level must be between 0 and 1"):
        fits.confint(95)


def test_lmlist_small_group_gets_nan_row_and_a_warning(reference):
    """A person with one observation cannot have an intercept and a slope: NaN row, counted,
    warned; the other groups' fits and the pooled RSE are those of lme4 without that person
    (a one-row group has no residual degrees of freedom to add)."""
    psid = book_data("psid")
    lonely = psid.iloc[[0]].assign(person="lonely")
    data = pd.concat([psid.astype({"person": str}), lonely], ignore_index=True)
    with pytest.warns(UserWarning, match="1 of 86 groups of 'person' have too few rows.*lonely"):
        fits = lmlist("log(income) ~ cyear | person", data)
    ref = reference["lmlist"]["psid_person"]
    assert fits.n_failed == 1 and fits.failed == ["lonely"]
    assert fits.coef.loc["lonely"].isna().all()
    assert fits.stderr.loc["lonely"].isna().all()
    assert fits.confint().loc["lonely"].isna().all()
    assert fits.nobs.loc["lonely"] == 1
    np.testing.assert_allclose(fits.coef.loc[ref["groups"], "cyear"].to_numpy(), ref["coef"]["cyear"], rtol=1e-9)
    assert fits.sigma == pytest.approx(ref["rse"], rel=1e-10)
    assert "1 group(s) too small" in repr(fits)


def test_lmlist_does_not_modify_its_input():
    psid = book_data("psid")
    before = psid.copy(deep=True)
    lmlist("log(income) ~ cyear | person", psid)
    pd.testing.assert_frame_equal(psid, before)


@pytest.mark.parametrize("formula, message", [
    ("log(income) ~ cyear", "needs a formula 'response ~ predictors | group'"),
    ("log(income) ~ cyear | ", "needs a formula 'response ~ predictors | group'"),
    ("log(income) ~ cyear | person | year", "one '|'"),
    ("log(income) ~ cyear | persn", "grouping column 'persn' .* is not a column"),
    ("log(income) ~ cyaer | person", "column.*'cyaer' not found"),
])
def test_lmlist_bad_formulas(formula, message):
    with pytest.raises(DataError, match=message):
        lmlist(formula, book_data("psid"))


def test_lmlist_refuses_groups_that_are_all_too_small():
    data = pd.DataFrame({"y": [1.0, 2.0, 3.0], "x": [0.0, 1.0, 2.0], "g": ["a", "b", "c"]})
    with pytest.warns(UserWarning, match="too few rows"), pytest.raises(DataError, match="no residual degree"):
        lmlist("y ~ x | g", data)


def test_lmlist_plot_draws_one_panel_per_coefficient(lmlists):
    import matplotlib.pyplot as plt

    axes = lmlists["psid_person"].plot(pool=True)
    assert [ax.get_title() for ax in axes] == ["(Intercept)", "cyear"]
    assert len(axes[0].get_yticks()) == 85
    plt.close("all")


# ---- compare ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def psid_models(reference):
    psid = book_data("psid")
    return {k: lmer(m["formula"], psid, reml=m["reml"]) for k, m in reference["psid_anova"]["models"].items()}


def test_compare_matches_lme4_anova(reference, psid_models):
    ref = reference["psid_anova"]
    order = ref["argument_order"]  # m3 (REML) first: anova refits it by ML and sorts by npar
    result = compare(*[psid_models[k] for k in order], names=order)
    table = result.table
    assert list(table.index) == ref["rows"]
    assert list(table.columns) == ["npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df", "Pr(>Chisq)"]
    np.testing.assert_array_equal(table["npar"], ref["npar"])
    # tolerances of the other reference tests: log-likelihoods to 1e-4, p-values follow
    for column in ["AIC", "BIC", "logLik", "deviance"]:
        np.testing.assert_allclose(table[column], ref[column], rtol=0, atol=2e-4)
    np.testing.assert_allclose(table["Chisq"], nan_from_r(ref["Chisq"]), rtol=0, atol=4e-4)
    np.testing.assert_array_equal(table["Df"], nan_from_r(ref["Df"]))
    np.testing.assert_allclose(table["Pr(>Chisq)"], nan_from_r(ref["p"]), rtol=1e-3)
    assert result.refitted == ("m3",)
    text = str(result)
    assert text.startswith("Models fitted by ML (REML fits refitted: m3)")
    assert "m3: log(income) ~ cyear * sex + age + educ + (cyear | person)" in text
    assert "< 2.2e-16" in text  # m2 against m1: p = 2.4e-32, as R prints it
    assert result._repr_html_().startswith("<pre>")


def test_compare_leaves_the_fits_as_they_were(psid_models):
    m3 = psid_models["m3"]
    before = m3.theta.copy()
    compare(psid_models["m1"], m3)
    assert m3.reml and np.array_equal(m3.theta, before)


def test_compare_refuses_a_single_fit_and_non_fits(psid_models):
    with pytest.raises(DataError, match="at least two nested models"):
        compare(psid_models["m1"])
    with pytest.raises(DataError, match="argument 2 of compare is a str"):
        compare(psid_models["m1"], "m2")


def test_compare_refuses_fits_to_different_data(psid_models):
    psid = book_data("psid")
    other = lmer("log(income) ~ cyear * sex + age + educ + (cyear | person)", psid.iloc[10:], reml=False)
    with pytest.raises(DataError, match="different data"):
        compare(psid_models["m1"], other)


def test_compare_refuses_models_that_are_not_nested():
    psid = book_data("psid")
    age = lmer("log(income) ~ age + (1 | person)", psid, reml=False)
    educ_slope = lmer("log(income) ~ educ + (cyear | person)", psid, reml=False)
    with pytest.raises(DataError, match="not nested: the null model's fixed effects"):
        compare(age, educ_slope)
    same_size = lmer("log(income) ~ educ + (1 | person)", psid, reml=False)
    with pytest.raises(DataError, match="same number of parameters"):
        compare(age, same_size)
    slope_only = lmer("log(income) ~ age + (0 + cyear | person)", psid, reml=False)
    intercept_and_year = lmer("log(income) ~ age + (1 | person) + (1 | year)", psid, reml=False)
    with pytest.raises(DataError, match=r"lacks the random effect\(s\) \(cyear \| person\)"):
        compare(slope_only, intercept_and_year)


def test_compare_names_must_match_the_fits(psid_models):
    with pytest.raises(DataError, match="names must give 2 distinct labels"):
        compare(psid_models["m1"], psid_models["m2"], names=["a"])
