"""lmmnotes on data that is not the book's, against lme4 (tests/reference/user_data.json, written by
tests/reference/user_data.R with the data sets it wrote to tests/reference/user_data/).

The cases are the formulas lme4 users write every day and the data they often have: poly() and
scale() computed on every row before incomplete rows are dropped, factor() of a numeric column,
offset(), dotted column names, a POSIX-time covariate (a column of size 1.7e9 next to the
intercept) and one of size 1e-8, and predict's rule for levels not seen in the fit.
"""

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmmnotes import DataError, lmer
from lmmnotes.checks import MissingValuesWarning, PredictorScaleWarning

HERE = Path(__file__).parent / "reference"
USER = json.loads((HERE / "user_data.json").read_text())["cases"]


def r_name(name: str) -> str:
    """formulaic's column name in R's spelling: f[T.a] -> fa, poly(x, 2)[1] -> poly(x, 2)1."""
    return re.sub(r"\[(?:T\.)?([^\]]+)\]", r"\1", name)


def data(case: str) -> pd.DataFrame:
    return pd.read_csv(HERE / "user_data" / f"{case}.csv")


def fit_case(case: dict, frame: pd.DataFrame):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingValuesWarning)
        return lmer(case["formula"], frame, reml=case["reml"])


def assert_matches(fit, ref: dict, rtol: float = 1e-5) -> None:
    """The fit against one lme4 fit: names, estimates, standard errors, sigma, criterion."""
    assert fit.nobs == ref["nobs"]
    assert [r_name(n) for n in fit.fixef.index] == list(ref["fixef"]) == ref["x_colnames"]
    np.testing.assert_allclose(fit.fixef.to_numpy(), list(ref["fixef"].values()), rtol=rtol)
    np.testing.assert_allclose(fit.stderr.to_numpy(), list(ref["stderr"].values()), rtol=rtol)
    assert fit.sigma == pytest.approx(ref["sigma"], rel=rtol)
    np.testing.assert_allclose(fit.theta, ref["theta"], rtol=rtol, atol=1e-6)
    assert fit.loglik > ref["loglik"] - 1e-6  # never a worse optimum than lme4's
    assert fit.reml_criterion == pytest.approx(ref["reml_criterion"], abs=2e-6)


@pytest.mark.parametrize("name", ["poly", "scale", "factor", "offset", "dotted", "newlevels"])
def test_fit_matches_lme4(name):
    case = USER[name]
    frame = data(name)
    if name == "newlevels":
        frame["g"] = frame["g"].astype(int)  # integer ids, as R's factor of integers
    assert_matches(fit_case(case, frame), case)


def test_poly_and_scale_are_computed_on_every_row_before_incomplete_rows_go():
    # R evaluates poly(x, 2) and scale(x) on all rows (y is missing in some), then drops those
    # rows: the columns kept are not exactly orthonormal or standardized over the rows used
    for name in ("poly", "scale"):
        frame = data(name)
        assert frame["y"].isna().any() and frame["x"].notna().all()
        with pytest.warns(MissingValuesWarning, match=f"{frame['y'].isna().sum()} of {len(frame)} rows"):
            fit = lmer(USER[name]["formula"], frame)
        if name == "scale":
            x = fit.design.X[:, 1]
            complete = frame["x"][frame["y"].notna()]
            np.testing.assert_allclose(x, (complete - USER[name]["scaled_center"]) / USER[name]["scaled_scale"],
                                       rtol=1e-12)


@pytest.mark.parametrize("name", ["poly", "scale", "offset"])
def test_predictions_for_new_data_use_the_fits_transforms(name):
    case = USER[name]
    fit = fit_case(case, data(name))
    new = pd.DataFrame(case["newdata"])
    np.testing.assert_allclose(fit.predict(new), case["predict"], rtol=1e-6)
    np.testing.assert_allclose(fit.predict(new, re_form="~0"), case["predict_population"], rtol=1e-6)
    if "fitted_head" in case:
        np.testing.assert_allclose(fit.fitted().iloc[:5], case["fitted_head"], rtol=1e-6)


def test_offset_is_the_same_model_as_the_response_minus_the_offset():
    case = USER["offset"]
    frame = data("offset")
    with_offset = fit_case(case, frame)
    difference = lmer("I(y - z) ~ x + (1 | g)", frame)
    assert_matches(difference, case["difference_fit"])
    np.testing.assert_allclose(with_offset.fixef, difference.fixef, rtol=1e-8)
    # simulate and refit keep the offset: responses simulated with use_u=True average to the fitted
    # values (the offset included) within 5 standard errors sigma / sqrt(400); without the offset
    # (z is about 1.7) they would miss by far more
    sims = with_offset.simulate(nsim=400, seed=1, use_u=True).mean(axis=1)
    assert np.abs(sims - with_offset.fitted()).max() < 5 * with_offset.sigma / np.sqrt(400)
    again = with_offset.refit(with_offset.design.response)
    np.testing.assert_allclose(again.fixef, with_offset.fixef, rtol=1e-6)


def test_posix_time_keeps_the_intercept_and_warns_about_scales():
    case = USER["posix"]
    frame = data("posix")
    for formula, ref in ((case["formula"], case), (case["small_fit"]["formula"], case["small_fit"])):
        with pytest.warns(PredictorScaleWarning, match="very different scales"):
            fit = lmer(formula, frame)
        assert list(fit.fixef.index) == ref["x_colnames"]  # nothing dropped
        assert_matches(fit, ref, rtol=1e-5)


def test_new_levels_are_an_error_unless_allowed_and_ids_match_by_value():
    case = USER["newlevels"]
    frame = data("newlevels")
    fit = lmer(case["formula"], frame)  # integer ids
    new = pd.DataFrame(case["newdata"])
    with pytest.raises(DataError, match="levels of g that the fit has not seen: 9"):
        fit.predict(new)
    np.testing.assert_allclose(fit.predict(new, allow_new_levels=True), case["predict_allow_new"], rtol=1e-6)
    np.testing.assert_allclose(fit.predict(new, re_form="~0"), case["predict_population"], rtol=1e-6)
    # the same ids as floats (a column that had a NaN) and as strings are the same levels
    for ids in (new["g"].astype(float), new["g"].astype(str)):
        np.testing.assert_allclose(fit.predict(new.assign(g=ids), allow_new_levels=True), case["predict_allow_new"],
                                   rtol=1e-6)
    known = pd.DataFrame(case["newdata_known"])
    np.testing.assert_allclose(fit.predict(known.assign(g=known["g"].astype(float))), case["predict_known"],
                               rtol=1e-6)
