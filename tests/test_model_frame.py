"""The one model frame on data that is not the book's: other scales, dtypes, names and shapes.

Each test here failed before the model frame was shared (a dropped intercept, a silent fit of a
constant response, ids matched by dtype, formulas that could not be written ...).
"""

import warnings

import numpy as np
import pandas as pd
import pytest

import lmmnotes
from lmmnotes import DataError, FormulaError, lmer, lmlist, simulate_design
from lmmnotes.checks import (ConvergenceWarning, LmmWarning, MissingValuesWarning, PredictorScaleWarning,
                             RankDeficiencyWarning, SingularFitWarning)
from lmmnotes.design import drop_aliased


def frame(seed=1, groups=12, per_group=10):
    """y = 1 + 0.5 x + a_g + e, with a second covariate w and string ids."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), per_group)
    x, w = rng.normal(size=g.size), rng.normal(size=g.size)
    y = 1 + 0.5 * x + rng.normal(size=groups)[g] + rng.normal(size=g.size)
    return pd.DataFrame({"y": y, "x": x, "w": w, "g": [f"s{k}" for k in g]})


def quiet_lmer(formula, data, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LmmWarning)
        return lmer(formula, data, **options)


# ---- the rank check is scale invariant -------------------------------------------------------
@pytest.mark.parametrize("factor", [1e8, 1e-8, 1.0])
def test_a_covariate_in_large_or_small_units_keeps_the_intercept(factor):
    data = frame()
    reference = quiet_lmer("y ~ x + (1 | g)", data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = lmer("y ~ x + (1 | g)", data.assign(x=data["x"] * factor))
    assert list(fit.fixef.index) == ["(Intercept)", "x"]
    assert not any(issubclass(w.category, RankDeficiencyWarning) for w in caught)
    assert any(issubclass(w.category, PredictorScaleWarning) for w in caught) == (factor != 1.0)
    np.testing.assert_allclose(fit.fixef["x"] * factor, reference.fixef["x"], rtol=1e-6)
    np.testing.assert_allclose(fit.fixef["(Intercept)"], reference.fixef["(Intercept)"], rtol=1e-6)


def test_aliasing_is_judged_on_scaled_columns_and_the_later_column_goes():
    rng = np.random.default_rng(3)
    x = rng.normal(size=50)
    X = np.column_stack([np.ones(50), 1e16 * x, 1e-16 * x, rng.normal(size=50)])
    _, names, gone = drop_aliased(X, ["a", "big", "small", "c"])
    assert gone == ["small"] and names == ["a", "big", "c"]  # small = 1e-32 big: aliased, whatever the units
    X = np.column_stack([1e9 * np.ones(50), x, 1e-9 * np.ones(50)])
    assert drop_aliased(X, ["a", "b", "c"])[2] == ["c"]
    X = np.column_stack([np.ones(50), 1e16 * x])  # 1e16 apart in scale, not aliased
    assert drop_aliased(X, ["a", "b"])[2] == []
    # beside an aliased column, a column in tiny units is judged by its own length, and kept
    X = np.column_stack([np.ones(50), 1e-9 * x, 2 * np.ones(50)])
    assert drop_aliased(X, ["a", "tiny", "twice a"])[1:] == (["a", "tiny"], ["twice a"])


def test_aliased_columns_warn_with_their_category():
    data = frame().assign(x2=lambda d: 3 * d["x"])
    with pytest.warns(RankDeficiencyWarning, match="dropped: x2"):
        fit = lmer("y ~ x + x2 + (1 | g)", data)
    assert list(fit.fixef.index) == ["(Intercept)", "x"]
    assert "rank deficient, so x2 was dropped" in fit.summary()


# ---- values and names ------------------------------------------------------------------------
@pytest.mark.parametrize("column, value", [("x", np.inf), ("x", -np.inf), ("y", np.inf), ("w", np.inf)])
def test_infinite_values_are_an_error_naming_the_column(column, value):
    data = frame()
    data.loc[3, column] = value
    formula = "y ~ x + (w | g)"
    with pytest.raises(DataError, match=rf"'{column}' has 1 infinite value"):
        lmer(formula, data)
    with pytest.raises(DataError, match=rf"'{column}' has 1 infinite value"):
        lmlist("y ~ x + w | g", data)
    with pytest.raises(DataError, match=r"'x' has 1 infinite value"):
        simulate_design(frame().drop(columns="y").assign(x=lambda d: d["x"].where(d.index != 2, np.inf)),
                        "y ~ x + (1 | g)", fixef=[0.0, 1.0], covariances={"g": 1.0}, sigma=1.0, seed=1)


def test_a_column_named_intercept_or_a_duplicated_name_is_an_error():
    data = frame()
    with pytest.raises(DataError, match="column named 'Intercept'"):
        lmer("y ~ Intercept + (1 | g)", data.assign(Intercept=data["x"]))
    twice = pd.concat([data, data[["x"]]], axis=1)
    with pytest.raises(DataError, match="more than one column named 'x'"):
        lmer("y ~ x + (1 | g)", twice)


def test_missing_values_are_dropped_with_a_warning_everywhere():
    data = frame()
    data.loc[[0, 7], "x"] = np.nan
    for call in (lambda: lmer("y ~ x + (1 | g)", data), lambda: lmlist("y ~ x | g", data),
                 lambda: lmmnotes.anova.one_way(data.assign(y=data["y"].where(data["x"].notna())), "y", "g")):
        with pytest.warns(MissingValuesWarning, match="2 of 120 rows"):
            call()


# ---- factors ---------------------------------------------------------------------------------
@pytest.mark.parametrize("convert", [
    lambda s: s.astype("string"),
    lambda s: s.astype(object),
    lambda s: pd.Categorical(s, categories=sorted(set(s)) + ["never seen"]),
], ids=["string-dtype", "object", "categorical-with-unused-level"])
def test_a_fixed_factor_is_coded_the_same_whatever_its_dtype(convert):
    data = frame().assign(kind=lambda d: np.where(d["w"] > 0.3, "hi", np.where(d["w"] < -0.3, "lo", "mid")))
    reference = quiet_lmer("y ~ kind + (1 | g)", data)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RankDeficiencyWarning)  # the unused level is dropped, not aliased
        fit = lmer("y ~ kind + (1 | g)", data.assign(kind=convert(data["kind"])))
    pd.testing.assert_series_equal(fit.fixef, reference.fixef, rtol=1e-8)


def test_a_string_dtype_with_missing_values_drops_those_rows():
    data = frame().assign(kind=lambda d: pd.array(np.where(d["w"] > 0, "hi", "lo"), dtype="string"))
    data.loc[[1, 2], "kind"] = pd.NA
    with pytest.warns(MissingValuesWarning, match="2 of 120 rows"):
        fit = lmer("y ~ kind + (1 | g)", data)
    assert fit.nobs == 118 and list(fit.fixef.index) == ["(Intercept)", "kind[T.lo]"]


def test_integer_float_and_string_ids_are_the_same_levels_when_predicting():
    data = frame().assign(g=lambda d: d["g"].str[1:].astype(int))
    fit = lmer("y ~ x + (1 | g)", data)
    rows = data.head(3)
    expected = fit.predict(rows).to_numpy()
    for ids in (rows["g"].astype(float), rows["g"].astype("Int64"), rows["g"].astype(str)):
        np.testing.assert_allclose(fit.predict(rows.assign(g=ids)), expected, rtol=1e-12)


def test_labels_with_a_colon_cannot_collide_with_an_interaction():
    # a:b and c, against a and b:c, both print as "a:b:c": they are two different groups
    rng = np.random.default_rng(5)
    first, second = np.array(["a:b", "a", "p", "q"] * 30), np.array(["c", "b:c", "r", "s"] * 30)
    data = pd.DataFrame({"f": first, "h": second, "y": rng.normal(size=120) + np.tile([0.0, 3.0, 6.0, 9.0], 30)})
    fit = quiet_lmer("y ~ 1 + (1 | f:h)", data)
    assert fit.ngroups == {"f:h": 4}
    new = pd.DataFrame({"f": ["a:b", "a"], "h": ["c", "b:c"]})
    predicted = fit.predict(new).to_numpy()
    assert predicted[0] != predicted[1]
    first_rows = [data.index[data["f"] == "a:b"][0], data.index[data["f"] == "a"][0]]
    np.testing.assert_allclose(predicted, fit.fitted().loc[first_rows], rtol=1e-12)


# ---- prediction ------------------------------------------------------------------------------
def test_predict_refuses_what_it_cannot_predict():
    data = frame().assign(kind=lambda d: np.where(d["w"] > 0, "hi", "lo"))
    fit = lmer("y ~ x + kind + (1 | g)", data)
    new = data.head(3).copy()
    with pytest.raises(DataError, match="levels of g that the fit has not seen: nobody"):
        fit.predict(new.assign(g="nobody"))
    np.testing.assert_allclose(fit.predict(new.assign(g="nobody"), allow_new_levels=True),
                               fit.predict(new, re_form="~0"), rtol=1e-12)
    with pytest.raises(DataError, match="the factor kind that the fit has not seen: mid"):
        fit.predict(new.assign(kind="mid"))
    with pytest.raises(DataError, match="the factor kind that the fit has not seen: mid"):
        fit.predict(new.assign(kind="mid"), re_form="~0", allow_new_levels=True)
    with pytest.raises(DataError, match="no level of the grouping factor g"):
        fit.predict(new.assign(g=[np.nan, "s0", "s0"]))
    with pytest.raises(DataError, match=r"'x' not found in newdata"):
        fit.predict(new.drop(columns="x"))
    with pytest.raises(DataError, match="at least one row"):
        fit.predict(new.iloc[:0])
    with pytest.raises(DataError, match="1 rows of newdata have no value of the factor kind"):
        fit.predict(new.assign(kind=[None, "hi", "lo"]))
    before = new.copy()
    fit.predict(new)
    pd.testing.assert_frame_equal(new, before)


def test_predict_checks_the_factors_of_random_effects_and_of_any_dtype():
    data = frame().assign(kind=lambda d: np.where(d["w"] > 0, "hi", "lo"), code=lambda d: (d.index % 3).astype(object))
    slope = quiet_lmer("y ~ x + (kind | g)", data)
    with pytest.raises(DataError, match="the factor kind that the fit has not seen: zz"):
        slope.predict(data.head(2).assign(kind="zz"))
    codes = quiet_lmer("y ~ code + (1 | g)", data)  # an object column of integers is a factor
    assert list(codes.fixef.index) == ["(Intercept)", "code[T.1]", "code[T.2]"]
    with pytest.raises(DataError, match="the factor code that the fit has not seen: 7"):
        codes.predict(data.head(2).assign(code=7))
    halves = quiet_lmer("y ~ half + (1 | g)", data.assign(half=pd.Categorical(data.index % 3 * 0.5)))
    assert list(halves.fixef.index) == ["(Intercept)", "half[T.0.5]", "half[T.1.0]"]  # formulaic's names
    np.testing.assert_allclose(halves.predict(data.head(3).assign(half=[0.0, 0.5, 1.0])), halves.fitted().iloc[:3])


def test_a_column_named_like_a_function_does_not_break_predict():
    data = frame().assign(z=lambda d: np.exp(d["w"]))
    fit = quiet_lmer("y ~ log(z) + (1 | g)", data)
    np.testing.assert_allclose(fit.predict(data.head(3).assign(log=1.0)), fit.fitted().iloc[:3], rtol=1e-12)


def test_nullable_and_date_columns():
    data = frame().assign(flag=lambda d: pd.array(d["w"] > 0, dtype="boolean"), n=lambda d: pd.array(d.index % 4,
                                                                                                   dtype="Int64"))
    data.loc[5, "flag"] = pd.NA
    with pytest.warns(MissingValuesWarning, match="1 of 120 rows"):
        fit = lmer("y ~ flag + n + (1 | g)", data)
    assert list(fit.fixef.index) == ["(Intercept)", "flag", "n"]
    with pytest.raises(DataError, match="holds dates or times"):
        lmer("y ~ day + (1 | g)", data.assign(day=pd.Timestamp("2024-01-01") + pd.to_timedelta(data.index, "D")))


def test_an_unseen_level_of_factor_x_is_an_error():
    data = frame().assign(dose=lambda d: np.where(d["w"] > 0, 2, 1))
    fit = lmer("y ~ factor(dose) + (1 | g)", data)
    assert list(fit.fixef.index) == ["(Intercept)", "factor(dose)[T.2]"]
    np.testing.assert_allclose(lmer("y ~ as.factor(dose) + (1 | g)", data).fixef, fit.fixef, rtol=1e-12)
    with pytest.raises(DataError, match="the factor dose that the fit has not seen: 3"):
        fit.predict(data.head(2).assign(dose=3))
    np.testing.assert_allclose(fit.predict(data.head(2).assign(dose=2.0)), fit.predict(data.head(2).assign(dose=2)))


# ---- responses with no residual variation ------------------------------------------------------
@pytest.mark.parametrize("response, message", [
    (lambda d: np.full(len(d), 7.5), "is constant"),
    (lambda d: 2.0 - 3.0 * d["x"], "fixed effects fit the response 'y' exactly"),
    (lambda d: d["g"].str[1:].astype(float) ** 2, r"random effects of \(1 \| g\) fit the response 'y' exactly"),
    (lambda d: 1e6 + d["g"].str[1:].astype(float) + 0.5 * d["x"], r"\(1 \| g\) fit the response"),
])
def test_a_response_with_no_residual_variation_is_an_error(response, message):
    data = frame()
    with pytest.raises(DataError, match=message):
        lmer("y ~ x + (1 | g)", data.assign(y=response))


def test_a_tiny_but_real_residual_variation_is_fitted():
    data = frame()
    fit = lmer("y ~ x + (1 | g)", data.assign(y=1e-6 * data["y"]))
    np.testing.assert_allclose(fit.fixef * 1e6, quiet_lmer("y ~ x + (1 | g)", data).fixef, rtol=1e-6)


# ---- warnings lme4 users rely on -----------------------------------------------------------------
def test_a_singular_fit_warns():
    rng = np.random.default_rng(1)
    data = pd.DataFrame({"g": np.repeat(np.arange(8), 5), "y": rng.normal(size=40)})  # no group effect
    with pytest.warns(SingularFitWarning, match="boundary"):
        fit = lmer("y ~ 1 + (1 | g)", data)
    assert fit.is_singular
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit.refit(fit.simulate(seed=1).iloc[:, 0])  # refits (Monte Carlo, bootstrap) stay quiet


def test_a_regular_fit_gives_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lmer("y ~ x + (1 | g)", frame())


def test_a_fit_stopped_short_warns_of_convergence(monkeypatch):
    # stop the optimizer after a few evaluations: the scaled gradient there is large
    import lmmnotes.optimizer as fit_module

    original = fit_module.minimize

    def short(*args, options=None, **kwargs):
        return original(*args, options={**(options or {}), "maxiter": 1}, **kwargs)

    monkeypatch.setattr(fit_module, "minimize", short)
    data = frame().assign(w=lambda d: d["w"] + d["g"].str[1:].astype(float) / 3)
    with pytest.warns(ConvergenceWarning):
        fit = lmer("y ~ x + (w | g)", data)
    assert "warning:" in fit.summary()  # the one line lme4 users look for


def test_a_fit_keeps_the_record_of_its_optimization():
    data = frame()
    slopes = np.random.default_rng(2).normal(size=12)[data["g"].str[1:].astype(int)]
    fit = lmer("y ~ x + (x | g)", data.assign(y=data["y"] + slopes * data["x"]))
    record = fit.optsum
    assert record.optimizer.startswith("L-BFGS-B") and record.converged and record.n_evaluations > 3
    np.testing.assert_array_equal(record.theta, fit.theta)
    np.testing.assert_allclose(record.start, fit.design.default_start)
    assert 0 <= record.scaled_gradient < 2e-3 and record.criterion == pytest.approx(fit.criterion, abs=1e-9)
    singular = quiet_lmer("y ~ 1 + (1 | g)", pd.DataFrame({"g": np.repeat(np.arange(8), 5),
                                                            "y": np.random.default_rng(1).normal(size=40)}))
    assert singular.optsum.optimizer.startswith("L-BFGS-B") and np.isnan(singular.optsum.scaled_gradient)


# ---- formulas as lme4 users write them -------------------------------------------------------------
def test_formulas_lme4_users_write():
    data = frame()
    base = quiet_lmer("y ~ x + (1 | g)", data)
    same = {
        "y ~ x + ((1 | g))": data,
        "y ~ (x) + (1|g)": data,
        "my.y ~ my.x + (1 | my.g)": data.rename(columns={"y": "my.y", "x": "my.x", "g": "my.g"}),
        "`the y` ~ `an x` + (1 | `a g`)": data.rename(columns={"y": "the y", "x": "an x", "g": "a g"}),
        "y ~ log + (1 | g)": data.rename(columns={"x": "log"}),
        "y ~ x + (1 | factor(g))": data,
    }
    for formula, frame_ in same.items():
        fit = lmer(formula, frame_)
        np.testing.assert_allclose(fit.fixef.to_numpy(), base.fixef.to_numpy(), rtol=1e-8, err_msg=formula)
    centred = lmer("y ~ center(x) + (1 | g)", data)
    np.testing.assert_allclose(centred.fixef.iloc[1], base.fixef["x"], rtol=1e-8)
    assert centred.fixef.iloc[0] == pytest.approx(base.fixef.iloc[0] + base.fixef["x"] * data["x"].mean(), rel=1e-8)
    squared = lmer("y ~ x + I(x^2) + (1 | g)", data)
    assert list(squared.fixef.index) == ["(Intercept)", "x", "I(x ** 2)"]
    raw = lmer("y ~ poly(x, 2, raw = TRUE) + (1 | g)", data)  # R's TRUE
    np.testing.assert_allclose(raw.fixef.to_numpy(), squared.fixef.to_numpy(), rtol=1e-8)
    no_intercept = lmer("y ~ x + (1 | g) - 1", data)  # a term removed after the random effects, as R allows
    assert list(no_intercept.fixef.index) == ["x"]
    np.testing.assert_allclose(no_intercept.fixef, lmer("y ~ 0 + x + (1 | g)", data).fixef, rtol=1e-10)
    separate = lmlist("y ~ x | `a g`", data.rename(columns={"g": "a g"}))
    assert separate.n_groups == 12


@pytest.mark.parametrize("formula, error, message", [
    ("y ~ . + (1 | g)", FormulaError, r"uses '\.' \(all other columns\)"),
    ("y ~ x + offset() + (1 | g)", FormulaError, "needs a column"),
    ("y ~ x + (1 | g) | h", FormulaError, "outside parentheses"),
    ("y ~ nothere + (1 | g)", DataError, "'nothere' not found"),
    ("y ~ x + (1 | nothere)", DataError, "'nothere' not found"),
])
def test_formulas_that_cannot_be_fitted_say_why(formula, error, message):
    with pytest.raises(error, match=message):
        lmer(formula, frame())


def test_nothing_the_user_passed_is_modified():
    data = frame().assign(kind=lambda d: pd.array(np.where(d["w"] > 0, "hi", "lo"), dtype="string"))
    data.loc[4, "x"] = np.nan
    before = data.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingValuesWarning)
        fit = lmer("y ~ scale(x) + kind + offset(w) + (1 | g)", data)
        lmlist("y ~ x | g", data)
    fit.predict(data.dropna())
    pd.testing.assert_frame_equal(data, before)


@pytest.mark.parametrize("change, message", [
    ({"fixef": [np.inf, 1.0]}, "fixef must be finite"),
    ({"covariances": {"g": np.nan}}, "must hold finite numbers"),
    ({"sigma": np.inf}, "sigma must be a non-negative standard deviation, got inf; it must be finite"),
])
def test_simulation_parameters_must_be_finite(change, message):
    arguments = {"fixef": [0.0, 1.0], "covariances": {"g": 1.0}, "sigma": 1.0, **change}
    with pytest.raises(DataError, match=message):
        simulate_design(frame().drop(columns="y"), "y ~ x + (1 | g)", seed=1, **arguments)


def test_simulate_design_honours_an_offset():
    design = frame().drop(columns="y")
    sim = simulate_design(design, "y ~ x + offset(w) + (1 | g)", fixef=[1.0, 2.0], covariances={"g": 0.0},
                          sigma=0.0, seed=1)
    np.testing.assert_allclose(sim.data["y"], 1.0 + 2.0 * design["x"] + design["w"], rtol=1e-12)
