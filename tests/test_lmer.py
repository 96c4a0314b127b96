"""Behaviour of lmmnotes.lmer beyond the lme4 reference numbers: formulas, bad input,
prediction, simulation, refitting, and the profiled criterion against brute force."""

import dataclasses
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from lmmnotes import DataError, FormulaError, lmer
from lmmnotes.criterion import CrossProducts, factorize, criterion_and_gradient, pls, profiled_criterion
from lmmnotes.design import build_design
from lmmnotes.formula import parse_formula
from lmmnotes.display import fixed_decimals

from .conftest import book_data


# ---- formulas -----------------------------------------------------------------------------
def test_parse_nested_uncorrelated_and_powers():
    parsed = parse_formula("y ~ I(x^2) + (x || g) + (1 | a/b)")
    assert parsed.fixed == "I(x**2)"
    assert [(t.expr, t.group) for t in parsed.random] == [("1", "g"), ("0 + x", "g"), ("1", "a"), ("1", "a:b")]


def test_keyword_column_names_are_quoted():
    parsed = parse_formula("yield ~ class + (1 | g)")
    assert parsed.response == "`yield`" and parsed.fixed == "`class`"


@pytest.mark.parametrize("bad", ["y ~ x | g", "y ~ (1 | )", "~ x + (1|g)", "y ~ (1 | g", "y + x"])
def test_unreadable_formulas(bad):
    with pytest.raises(FormulaError):
        parse_formula(bad)


def test_nested_shorthand_fits_like_explicit_terms():
    eggs = book_data("eggs")
    a = lmer("Fat ~ 1 + (1 | Lab/Technician/Sample)", eggs)
    b = lmer("Fat ~ 1 + (1 | Lab) + (1 | Lab:Technician) + (1 | Lab:Technician:Sample)", eggs)
    assert a.loglik == pytest.approx(b.loglik, abs=1e-9)


def test_uncorrelated_terms_have_no_correlation(reference):
    """(cyear || person) against lme4: two variances and no correlation parameter (theta of length
    2), the same estimates; tolerances as test_lmer_reference's."""
    ref = reference["models"]["psid_uncorrelated_reml"]
    fit = lmer(ref["formula"], book_data("psid"))
    assert list(fit.varcorr["grp"]) == ref["varcorr"]["grp"] == ["person", "person.1", "Residual"]
    assert [v if isinstance(v, str) else "" for v in fit.varcorr["var2"]] == ref["varcorr"]["var2"] == ["", "", ""]
    assert list(fit.ranef()["person"].columns) == ["(Intercept)", "cyear"]
    assert len(fit.theta) == len(ref["theta"]) == 2
    np.testing.assert_allclose(fit.theta, ref["theta"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fit.varcorr["sdcor"], ref["varcorr"]["sdcor"], rtol=1e-4)
    assert fit.loglik == pytest.approx(ref["loglik"], abs=1e-4)
    assert fit.loglik > ref["loglik"] - 1e-6


def test_keyword_column_and_r_power():
    irrigation = book_data("irrigation")
    fit = lmer("yield ~ irrigation + (1 | field)", irrigation)
    assert fit.nobs == 16
    data = pd.DataFrame({"class": [1.0, 2, 3, 4, 5, 6, 7, 8.5], "x": np.arange(8.0), "g": list("aabbccdd")})
    fit = lmer("class ~ I(x^2) + (1 | g)", data)
    assert list(fit.fixef.index) == ["(Intercept)", "I(x ** 2)"]


def test_numeric_grouping_column_is_a_factor():
    psid = book_data("psid")
    psid["person_number"] = psid["person"].astype(int)
    a = lmer("log(income) ~ cyear + (1 | person)", psid)
    b = lmer("log(income) ~ cyear + (1 | person_number)", psid)
    assert a.loglik == pytest.approx(b.loglik, abs=1e-9)
    assert b.ngroups == {"person_number": 85}


# ---- bad input ----------------------------------------------------------------------------
def test_errors_name_the_problem():
    pulp = book_data("pulp")
    with pytest.raises(DataError, match="'brightness' not found"):
        lmer("brightness ~ 1 + (1 | operator)", pulp)
    with pytest.raises(DataError, match="no random-effects term.*ordinary least squares"):
        lmer("bright ~ operator", pulp)
    with pytest.raises(DataError, match="no rows"):
        lmer("bright ~ 1 + (1 | operator)", pulp.iloc[:0])
    with pytest.raises(DataError, match="is it a factor"):
        lmer("operator ~ 1 + (1 | operator)", pulp)
    pulp["sheet"] = np.arange(20)
    with pytest.raises(DataError, match="sheet has 20 levels for 20 observations"):
        lmer("bright ~ 1 + (1 | sheet)", pulp)


def test_missing_values_are_dropped_with_a_warning_and_data_is_untouched():
    pulp = book_data("pulp")
    pulp.loc[[3, 7], "bright"] = np.nan
    before = pulp.copy()
    with pytest.warns(UserWarning, match="2 of 20 rows have missing values"):
        fit = lmer("bright ~ 1 + (1 | operator)", pulp)
    assert fit.nobs == 18 and 3 not in fit.fitted().index
    pd.testing.assert_frame_equal(pulp, before)


def test_rank_deficient_fixed_effects_drop_aliased_columns():
    pulp = book_data("pulp")
    pulp["x"] = np.arange(20.0)
    pulp["x2"] = 2 * pulp["x"]
    with pytest.warns(UserWarning, match="dropped: x2"):
        fit = lmer("bright ~ x + x2 + (1 | operator)", pulp)
    assert list(fit.fixef.index) == ["(Intercept)", "x"]


@pytest.mark.parametrize("size, dropped", [(1e-3, False), (1e-6, False), (1e-9, True), (0.0, True)])
def test_a_nearly_aliased_column_is_kept_or_dropped_by_its_residual(size, dropped):
    # x3 = x1 + size * noise: its residual on the columns before it has length about
    # size * |noise|, against the tolerance 1e-7 * (the column's own length, here about 100)
    from lmmnotes.design import drop_aliased

    rng = np.random.default_rng(2)
    x1 = 10 * rng.standard_normal(100)
    X = np.column_stack([np.ones(100), x1, x1 + size * 10 * rng.standard_normal(100)])
    _, names, gone = drop_aliased(X, ["a", "b", "c"])
    assert gone == (["c"] if dropped else []) and names == (["a", "b"] if dropped else ["a", "b", "c"])


@pytest.mark.parametrize("values, labels", [
    (np.array([0.1, 0.2, 0.1], dtype=np.float32), ["0.1", "0.2", "0.1"]),
    (pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-01"]),
     ["2020-01-01 00:00:00", "2020-01-02 00:00:00", "2020-01-01 00:00:00"]),
    (np.array([1, 1.0, 2, 1], dtype=object), ["1", "1", "2", "1"]),
    (np.array([3.0, 2.5, 3.0]), ["3", "2.5", "3"]),
    ([3, 1, 10, 2, 3], ["3", "1", "10", "2", "3"]),
])
def test_a_factor_has_one_level_per_distinct_value(values, labels):
    # levels are labelled by value (3 and 3.0 are one level), as predict matches new data
    from lmmnotes.design import factor_codes

    column = pd.Series(values)
    codes, levels = factor_codes(pd.DataFrame({"g": column}), ("g",))
    assert [levels[c] for c in codes] == labels and len(levels) == len(set(labels))


# ---- accessors, prediction, simulation -----------------------------------------------------
@pytest.fixture(scope="module")
def psid_fit():
    return lmer("log(income) ~ cyear * sex + age + educ + (cyear | person)", book_data("psid"))


def test_predict_population_and_conditional(psid_fit):
    data = book_data("psid")
    np.testing.assert_allclose(psid_fit.predict(), psid_fit.fitted())
    np.testing.assert_allclose(psid_fit.predict(data), psid_fit.fitted(), rtol=1e-12)
    population = psid_fit.predict(re_form="~0")
    np.testing.assert_allclose(psid_fit.predict(data, re_form="~0"), population, rtol=1e-12)
    np.testing.assert_allclose(psid_fit.fitted() - population,
                               psid_fit.fitted() - psid_fit.design.X @ psid_fit.fixef.to_numpy())
    new = data.iloc[:3].copy()
    new["person"] = "not a person in the data"
    np.testing.assert_allclose(psid_fit.predict(new, allow_new_levels=True), population.iloc[:3].to_numpy(),
                               rtol=1e-12)


def test_coef_is_fixef_plus_ranef(psid_fit):
    coef, ranef = psid_fit.coef()["person"], psid_fit.ranef()["person"]
    np.testing.assert_allclose(coef["cyear"], psid_fit.fixef["cyear"] + ranef["cyear"])
    np.testing.assert_allclose(coef["age"], psid_fit.fixef["age"])


def test_simulate_is_seeded_and_use_u_keeps_the_modes(psid_fit):
    a = psid_fit.simulate(nsim=3, seed=5)
    b = psid_fit.simulate(nsim=3, seed=5)
    pd.testing.assert_frame_equal(a, b)
    assert a.shape == (psid_fit.nobs, 3)
    kept = psid_fit.simulate(nsim=400, seed=1, use_u=True)
    # with use_u only residual noise is added: the mean over draws is close to the fitted values
    assert np.abs(kept.mean(axis=1) - psid_fit.fitted()).max() < 5 * psid_fit.sigma / np.sqrt(400)


def test_refit_same_response_reproduces_the_fit(psid_fit):
    again = psid_fit.refit(psid_fit.design.y)
    assert again.loglik == pytest.approx(psid_fit.loglik, abs=1e-7)
    y = psid_fit.simulate(seed=3).iloc[:, 0]
    direct = lmer("log(income) ~ cyear * sex + age + educ + (cyear | person)", book_data("psid").assign(income=np.exp(y)))
    assert psid_fit.refit(y).loglik == pytest.approx(direct.loglik, abs=1e-6)


def test_a_refit_keeps_the_designs_model_spec_and_its_new_response(psid_fit):
    spec = psid_fit.design.fixed_spec  # built on first use
    y = psid_fit.simulate(seed=4).iloc[:, 0].to_numpy()
    refit = psid_fit.refit(y)
    assert refit.design.fixed_spec is spec  # not built again
    np.testing.assert_array_equal(refit.design.theta_scale, psid_fit.design.theta_scale)
    np.testing.assert_array_equal(refit.design.y, y)
    assert not np.array_equal(psid_fit.design.y, y)
    # predictions for new data through the carried-over spec equal those of a fresh fit to y
    data = book_data("psid")
    direct = lmer("log(income) ~ cyear * sex + age + educ + (cyear | person)", data.assign(income=np.exp(y)))
    new = data.iloc[[0, 500, 1000]]
    np.testing.assert_allclose(refit.predict(new, re_form="~0"), direct.predict(new, re_form="~0"), rtol=1e-6)
    np.testing.assert_allclose(refit.predict(new), direct.predict(new), rtol=1e-6)


def test_summary_shows_the_tables(psid_fit):
    text = str(psid_fit.summary())
    for part in ["REML criterion at convergence", "Scaled residuals", "Random effects", "person", "cyear",
                 "Residual", "Number of obs: 1661", "Fixed effects", "t value"]:
        assert part in text
    assert "Fixed effects" not in repr(psid_fit) or "Scaled residuals" not in repr(psid_fit)


def test_a_value_that_rounds_to_zero_has_no_sign():
    assert fixed_decimals(-1e-17, 4) == "0.0000"
    assert fixed_decimals(-0.00004, 4) == "0.0000"
    assert fixed_decimals(-0.00006, 4) == "-0.0001"


@pytest.mark.parametrize("name, formula, decimals", [
    ("pulp", "bright ~ 1 + (1 | operator)", 4),  # smallest SE 0.1494
    ("irrigation", "yield ~ irrigation * variety + (1 | field)", 3),  # smallest SE 1.452
    ("psid", "log(income) ~ cyear * sex + age + educ + (cyear | person)", 6),  # smallest SE 0.008882
])
def test_summary_gives_the_smallest_standard_error_four_significant_digits(name, formula, decimals):
    fit = lmer(formula, book_data(name))
    table = str(fit.summary()).split("Fixed effects:\n")[1].splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in table[1:] if line.strip()}
    for term, (estimate, stderr, tvalue) in rows.items():
        assert len(estimate.split(".")[1]) == decimals and len(stderr.split(".")[1]) == decimals
        assert float(stderr) == pytest.approx(fit.stderr[term], abs=0.5 * 10**-decimals)
        assert float(tvalue) == pytest.approx(fit.tvalues[term], abs=0.005)
    smallest = min(rows.values(), key=lambda r: float(r[1]))[1]
    assert len(smallest.replace(".", "").lstrip("0")) == 4  # significant digits


# ---- the profiled criterion against a brute-force dense likelihood ---------------------------
def brute_force_criterion(design, theta, reml):
    """-2 log-likelihood (ML) or -2 log restricted likelihood (REML) at theta, profiled over
    beta and sigma, from the dense marginal normal y ~ N(X beta, sigma^2 (I + Z Lambda Lambda' Z'))."""
    Z, Lam = design.Z().toarray(), design.Lambda(theta).toarray()
    X, y, n, p = design.X, design.y, design.nobs, design.X.shape[1]
    W = np.eye(n) + Z @ Lam @ Lam.T @ Z.T
    Winv = np.linalg.inv(W)
    beta = np.linalg.solve(X.T @ Winv @ X, X.T @ Winv @ y)  # GLS
    resid = y - X @ beta
    sigma2 = resid @ Winv @ resid / (n - p if reml else n)
    loglik = stats.multivariate_normal(mean=X @ beta, cov=sigma2 * W).logpdf(y)
    if not reml:
        return -2 * loglik
    _, logdet = np.linalg.slogdet(X.T @ Winv @ X / sigma2)
    return -2 * loglik + logdet - p * np.log(2 * np.pi)


@st.composite
def small_designs(draw):
    n_groups = draw(st.integers(2, 5))
    sizes = draw(st.lists(st.integers(1, 4), min_size=n_groups, max_size=n_groups))
    second = draw(st.booleans())  # add a crossed second factor (exercises the dense path)
    slope = draw(st.booleans()) and not second
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    g = np.repeat([f"g{i}" for i in range(n_groups)], sizes)
    n = len(g)
    frame = pd.DataFrame({"g": g, "x": rng.normal(size=n), "h": rng.choice(["h1", "h2", "h3"], size=n),
                          "y": rng.normal(size=n) * 2 + 1})
    formula = "y ~ x + " + ("(x | g)" if slope else "(1 | g)") + (" + (1 | h)" if second else "")
    n_theta = 3 if slope else (2 if second else 1)
    theta = rng.uniform(0.05, 2.0, size=n_theta)
    if slope:
        theta[1] = rng.normal()
    return frame, formula, theta


@settings(max_examples=40, deadline=None)
@given(small_designs(), st.booleans())
def test_profiled_criterion_equals_brute_force_likelihood(case, reml):
    frame, formula, theta = case
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            design = build_design(parse_formula(formula), frame)
    except DataError:
        return  # too few observations for the random effects: refused, as lme4 does
    if np.linalg.matrix_rank(design.X) < design.X.shape[1] or design.nobs <= design.X.shape[1] + 1:
        return
    cp = CrossProducts.from_design(design)
    ours = profiled_criterion(theta, design, cp, reml)
    assert ours == pytest.approx(brute_force_criterion(design, theta, reml), rel=1e-9, abs=1e-8)
    # the conditional modes solve the penalized least squares problem's normal equations
    sol = pls(theta, design, cp)
    Z, Lam = design.Z().toarray(), design.Lambda(theta).toarray()
    ZL = Z @ Lam
    resid = design.y - design.X @ sol.beta - ZL @ sol.u
    np.testing.assert_allclose(ZL.T @ resid, sol.u, atol=1e-8 * (1 + np.abs(sol.u).max()))
    # the analytic gradient equals central differences of the brute-force criterion
    _, gradient = criterion_and_gradient(theta, design, cp, reml)
    h = 1e-5
    numeric = [(brute_force_criterion(design, theta + h * e, reml) - brute_force_criterion(design, theta - h * e, reml))
               / (2 * h) for e in np.eye(len(theta))]
    np.testing.assert_allclose(gradient, numeric, rtol=1e-5, atol=1e-5)


def test_predict_new_data_for_a_random_intercept():
    fit = lmer("bright ~ 1 + (1 | operator)", book_data("pulp"))
    new = pd.DataFrame({"operator": ["a", "someone new"]})
    # an unseen operator is an error, as in lme4, unless allowed: then it gets the population mean
    # 60.4, and operator a its BLUP (seed 001: 60.27806)
    with pytest.raises(DataError, match="levels of operator that the fit has not seen: someone new"):
        fit.predict(new)
    np.testing.assert_allclose(fit.predict(new, allow_new_levels=True), [60.27806, 60.4], atol=1e-5)


def test_a_constant_response_has_the_smallest_r2_and_still_gives_estimates():
    # y = 3: the stored response y - X gamma is exactly 0, so r^2(theta) = 0 and the last pivot of
    # the augmented factor fails. Closed forms for 6 balanced groups of 5: log|L|^2 =
    # 6 log(1 + 5 theta^2), R_X'R_X = 1' V^{-1} 1 = 30 / (1 + 5 theta^2), r^2 = the smallest float.
    frame = pd.DataFrame({"g": np.repeat([f"g{k}" for k in range(6)], 5), "y": np.full(30, 3.0)})
    with pytest.raises(DataError, match="is constant"):  # lmer refuses it; the criterion is still defined
        build_design(parse_formula("y ~ 1 + (1 | g)"), frame)
    design = build_design(parse_formula("y ~ 1 + (1 | g)"), frame, check_response=False)
    cp = CrossProducts.from_design(design)
    theta = np.array([0.7])
    logdet_L2, logdet_RX2 = 6 * np.log(1 + 5 * theta[0] ** 2), np.log(30 / (1 + 5 * theta[0] ** 2))
    tiny = np.finfo(float).tiny
    expected = logdet_L2 + logdet_RX2 + 29 * (1 + np.log(2 * np.pi * tiny / 29))
    assert profiled_criterion(theta, design, cp, True) == pytest.approx(expected, rel=1e-12)
    sol = pls(theta, design, cp)
    assert sol.r2 == tiny and sol.logdet_RX2 == pytest.approx(logdet_RX2, rel=1e-12)
    np.testing.assert_allclose(sol.beta, [3.0], rtol=1e-14)
    np.testing.assert_allclose(sol.u, 0.0, atol=1e-14)


@pytest.mark.parametrize("formula, sparse", [("y ~ x + (x | g) + (1 | h)", False), ("y ~ x + (1 | g) + (1 | h)", True),
                                             ("y ~ 0 + (1 | g)", False)])
def test_when_only_the_last_pivot_fails_the_factor_is_still_right(formula, sparse):
    # Lowering y'y by more than r^2(theta) makes the last pivot of the augmented factor
    # negative; R_X, c_beta, R_ZX and c_u do not depend on y'y, so they must not change.
    rng = np.random.default_rng(5)
    g, h = np.repeat(np.arange(8), 6), np.tile(np.arange(6), 8)
    frame = pd.DataFrame({"g": g, "h": h, "x": rng.normal(size=48)})
    frame["y"] = 1 + frame.x + rng.normal(size=8)[g] + rng.normal(size=6)[h] + rng.normal(size=48)
    design = build_design(parse_formula(formula), frame)
    cp = CrossProducts.from_design(design, sparse=sparse)
    theta = design.default_start * 0.8
    ok = factorize(theta, design, cp)
    failed = factorize(theta, design, dataclasses.replace(cp, yty=cp.yty - ok.r2 - 1.0))
    assert failed.r2 == np.finfo(float).tiny
    for name in ("R_X", "c_beta", "RZX", "cu"):
        np.testing.assert_allclose(getattr(failed, name), getattr(ok, name), rtol=1e-12, atol=1e-14)
