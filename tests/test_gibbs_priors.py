"""The Gibbs samplers' default priors follow the data (lmmnotes.gibbs), and bad priors or data are
errors.

* PSID income in dollars: with N(0, 10^6) on the fixed effects (the old default) the posterior
  put the intercept at about 3,850 where REML says 12,884; the scaled default must not.
* Equivariance: the default priors and the starting values follow the units of y and of the
  covariates, so with the same seed the draws under c y + d are exactly (to rounding) c times
  those under y, shifted by d for the intercept, and the variances' c^2 times; a covariate
  divided by c has its coefficient multiplied by c.
* Unknown keys of a prior given as a dict, NaN or infinite prior parameters: DataError naming them.
  The residual variance's shape and scale may be 0 (the default, p(sigma^2) proportional to
  1/sigma^2), never negative; where that prior gives an improper posterior, DataError.
* one_way drops rows with a missing response or group with a MissingValuesWarning (R's na.omit),
  and an infinite response is a DataError.
"""

import warnings

import numpy as np
import pandas as pd
import pytest

import lmmnotes
from lmmnotes import DataError, gibbs
from lmmnotes.checks import MissingValuesWarning

from .conftest import book_data

PSID_MODEL = "cyear * sex + age + educ + (cyear | person)"


@pytest.fixture(scope="module")
def psid():
    return book_data("psid")


def small_frame(seed=0) -> pd.DataFrame:
    """y = 3 + 2x + b_g0 + b_g1 x + c_h + e, 8 groups g of 6 crossed with 3 groups h."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(8), 6)
    h = np.tile(np.arange(3), 16)
    x = rng.normal(5.0, 2.0, g.size)
    b = rng.normal(0, [1.0, 0.3], (8, 2))
    y = 3 + 2 * x + b[g, 0] + b[g, 1] * x + rng.normal(0, 0.5, 3)[h] + rng.normal(0, 1.0, g.size)
    return pd.DataFrame({"y": y, "x": x, "g": [f"g{k}" for k in g], "h": [f"h{k}" for k in h]})


def assert_transformed(post, moved, transform, rtol=1e-9):
    """Each parameter's draws in ``moved`` equal ``transform(name, draws in post)`` to rtol, relative
    to the largest draw of that parameter."""
    for name in post.parameters:
        expected = transform(name, post.draws[name].to_numpy())
        got = moved.draws[name].to_numpy()
        err = np.max(np.abs(got - expected)) / np.max(np.abs(expected))
        assert err < rtol, (name, err)


def response_transform(c, d, intercept):
    """Where the draws go when y becomes c y + d: the intercept (``intercept``) to c beta + d,
    variances and covariances to c^2 times, every other location to c times."""
    def transform(name, x):
        if name == intercept:
            return c * x + d
        if name.startswith(("var[", "cov[", "sigma2")):
            return c * c * x
        return c * x
    return transform


# ----------------------------------------------------------------------------------------------
# The issue: PSID income in dollars


def test_psid_income_in_dollars_intercept_near_reml(psid):
    """income ~ 1 + (1 | person) in dollars: the posterior mean of the intercept (of mu) is within
    3 posterior sds of the REML estimate 12,884 (the old default prior gave about 3,850, 7.5 sds
    below), and REML's person variance is inside the 95% interval of its posterior (the old
    posterior, with the intercept pulled to 0, put it at 2.0e8 against REML's 1.17e8)."""
    fit = lmmnotes.lmer("income ~ 1 + (1 | person)", psid)
    reml, person_var = fit.fixef.iloc[0], fit.varcorr["vcov"].iloc[0]
    post = gibbs.lmm("income ~ 1 + (1 | person)", psid, n_iter=1000, n_chains=2, seed=1).summary()
    one = gibbs.one_way(psid, "income", "person", n_iter=1000, n_chains=2, seed=1).summary()
    for table, mean, var in ((post, "(Intercept)", "var[(Intercept)|person]"), (one, "mu", "sigma2_group")):
        row = table.loc[mean]
        assert abs(row["mean"] - reml) < 3 * row["sd"], (mean, row["mean"], row["sd"], reml)
        assert table.loc[var, "2.5%"] < person_var < table.loc[var, "97.5%"], (var, table.loc[var], person_var)


def test_default_priors_are_recorded(psid):
    """The priors used are in Posterior.priors: mu ~ N(mean(y), 10^4 var(y)); for lmm the mean vector
    (mean(y) for the intercept, 0 for the rest) and the covariance matrix, whose intercept-only
    entry is 10^4 var(y). An explicit variance alone keeps the mean 0 (the old prior N(0, v))."""
    y = psid["income"].to_numpy(dtype=float)
    one = gibbs.one_way(psid, "income", "person", n_iter=20, n_chains=1, seed=1)
    assert one.priors["mu_mean"] == pytest.approx(y.mean(), rel=1e-12)
    assert one.priors["mu_var"] == pytest.approx(gibbs.VAGUE * y.var(ddof=1), rel=1e-12)
    post = gibbs.lmm("income ~ 1 + (1 | person)", psid, n_iter=20, n_chains=1, seed=1)
    assert post.priors["fixef_mean"] == pytest.approx([y.mean()], rel=1e-12)
    assert np.array(post.priors["fixef_var"]) == pytest.approx(np.array([[gibbs.VAGUE * y.var(ddof=1)]]), rel=1e-12)
    post = gibbs.lmm("log(income) ~ " + PSID_MODEL, psid, n_iter=20, n_chains=1, seed=1)
    assert post.priors["fixef_mean"][1:] == [0.0] * 5
    assert np.array(post.priors["fixef_var"]).shape == (6, 6)
    assert gibbs.one_way(psid, "income", "person", mu_var=0.5, n_iter=20, n_chains=1).priors["mu_mean"] == 0.0
    assert gibbs.lmm("income ~ 1 + (1 | person)", psid, fixef_var=4.0, n_iter=20,
                     n_chains=1).priors["fixef_mean"] == 0.0


# ----------------------------------------------------------------------------------------------
# Equivariance, exact with the same seed


def test_lmm_draws_follow_the_units_of_y(psid):
    """income in dollars against 10^4 income (and 10^4 income + 3e5): same seed, every draw of a
    fixed effect is 10^4 times (the intercept's plus 3e5), every variance draw 10^8 times, to 1e-9
    relative (the run gives about 1e-12)."""
    formula = "income ~ " + PSID_MODEL
    post = gibbs.lmm(formula, psid, n_iter=200, n_chains=2, seed=3)
    for c, d in ((1e4, 0.0), (1e4, 3e5)):
        moved = gibbs.lmm(formula, psid.assign(income=c * psid["income"] + d), n_iter=200, n_chains=2, seed=3)
        assert_transformed(post, moved, response_transform(c, d, "(Intercept)"))
    for name in ("(Intercept)", "cyear", "age"):  # the ratio itself, as the issue asks
        ratio = moved.draws[name].to_numpy() / post.draws[name].to_numpy()
        if name == "(Intercept)":
            ratio = (moved.draws[name].to_numpy() - 3e5) / post.draws[name].to_numpy()
        assert np.median(np.abs(ratio / 1e4 - 1)) < 1e-10, name
    ratio = moved.draws["sigma2"].to_numpy() / post.draws["sigma2"].to_numpy()
    assert np.max(np.abs(ratio / 1e8 - 1)) < 1e-10


@pytest.mark.parametrize("formula", ["y ~ 1 + x + (x | g)", "y ~ 0 + x + (1 | g)", "y ~ x + (1 | g) + (1 | h)",
                                     "y ~ x + (x || g)"])
def test_lmm_draws_follow_the_units_of_y_small(formula):
    """The same for other structures: scalar and vector terms, two terms, no intercept (then only
    scale changes are equivariant, the model's origin being part of it)."""
    frame = small_frame()
    post = gibbs.lmm(formula, frame, n_iter=150, n_chains=2, seed=5)
    changes = [(1e4, 0.0), (1e-3, 0.0)] + ([] if formula.startswith("y ~ 0") else [(1e4, -4e5), (1e-3, 0.04)])
    for c, d in changes:  # (d of the order of c y: a larger one costs the data digits, not the sampler)
        moved = gibbs.lmm(formula, frame.assign(y=c * frame["y"] + d), n_iter=150, n_chains=2, seed=5)
        assert_transformed(post, moved, response_transform(c, d, "(Intercept)"))


def test_lmm_draws_follow_the_units_of_x(psid):
    """cyear in years against cyear / 12, and age against 100 age - 7 (with a random slope on
    cyear): same seed, the draws of cyear's coefficients are 12 times, its slope variance 144 times
    and its covariance 12 times, age's coefficient 1/100 times, and the intercept moves by
    0.07 times age's coefficient; the others are unchanged."""
    formula = "log(income) ~ " + PSID_MODEL
    post = gibbs.lmm(formula, psid, n_iter=200, n_chains=2, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the predictors' scales now differ (PredictorScaleWarning)
        moved = gibbs.lmm(formula, psid.assign(cyear=psid["cyear"] / 12, age=100 * psid["age"] - 7),
                          n_iter=200, n_chains=2, seed=4)
    factor = {"cyear": 12, "cyear:sex[T.M]": 12, "cov[(Intercept),cyear|person]": 12, "var[cyear|person]": 144,
              "age": 0.01}

    def transform(name, x):
        if name == "(Intercept)":
            return x + 0.07 * post.draws["age"].to_numpy()
        return factor.get(name, 1) * x
    assert_transformed(post, moved, transform)


def test_one_way_draws_follow_the_units_of_y(psid):
    """one_way on income and on 10^4 income + 3e5, blocked and single-site: same seed, mu's draws
    are 10^4 times plus 3e5, the a_i's 10^4 times, the variances' 10^8 times."""
    for update in ("blocked", "single"):
        post = gibbs.one_way(psid, "income", "person", n_iter=300, seed=2, update=update)
        for c, d in ((1e4, 0.0), (1e4, 3e5)):
            moved = gibbs.one_way(psid.assign(income=c * psid["income"] + d), "income", "person", n_iter=300,
                                  seed=2, update=update)
            assert_transformed(post, moved, response_transform(c, d, "mu"))


def test_old_residual_prior_follows_the_units_of_y():
    """The proper InvGamma(1, var(y)/20) on the residual variance, still reachable as resid_shape=1,
    resid_scale=None, is scaled to the data too: draws under c y + d move exactly, in both samplers."""
    frame = small_frame()
    kw = dict(resid_shape=1.0, resid_scale=None, n_iter=150, n_chains=2, seed=5)
    post = gibbs.lmm("y ~ 1 + x + (x | g)", frame, **kw)
    one = gibbs.one_way(frame, "y", "g", **kw)
    assert post.priors["resid_scale"] == pytest.approx(frame["y"].var(ddof=1) / 20, rel=1e-12)
    for c, d in ((1e4, -4e5), (1e-3, 0.04)):
        moved = frame.assign(y=c * frame["y"] + d)
        assert_transformed(post, gibbs.lmm("y ~ 1 + x + (x | g)", moved, **kw), response_transform(c, d, "(Intercept)"))
        assert_transformed(one, gibbs.one_way(moved, "y", "g", **kw), response_transform(c, d, "mu"))


def test_default_residual_prior_is_recorded_and_zero_is_accepted():
    """The default residual prior is recorded as shape 0 and scale 0; a 0 given explicitly gives the
    same draws, and so does a 0 for one_way_exact, which refuses negatives as the samplers do."""
    frame = small_frame()
    kw = dict(n_iter=50, n_chains=1, seed=2)
    for run in (lambda **a: gibbs.one_way(frame, "y", "g", **kw, **a),
                lambda **a: gibbs.lmm("y ~ x + (1 | g)", frame, **kw, **a)):
        default = run()
        assert default.priors["resid_shape"] == 0.0 and default.priors["resid_scale"] == 0.0
        pd.testing.assert_frame_equal(default.draws, run(resid_shape=0, resid_scale=0.0).draws)
    prior = dict(mu_mean=0.0, mu_var=100.0, group_shape=1.0, group_scale=1.0)
    assert np.all(np.isfinite(gibbs.one_way_exact(frame, "y", "g", **prior, resid_shape=0.0, resid_scale=0.0)))
    for argument in ("resid_shape", "resid_scale"):
        for value in (-1e-9, np.nan, np.inf):
            bad = dict(resid_shape=0.0, resid_scale=0.0) | {argument: value}
            with pytest.raises(DataError, match=f"{argument} must be a number of at least 0"):
                gibbs.one_way_exact(frame, "y", "g", **prior, **bad)


@pytest.mark.parametrize("argument", ["resid_shape", "resid_scale"])
@pytest.mark.parametrize("value", [-1.0, -1e-300, np.nan, np.inf, -np.inf])
def test_negative_residual_prior_is_an_error(argument, value):
    frame = small_frame()
    with pytest.raises(DataError, match=f"{argument} must be a number of at least 0"):
        gibbs.one_way(frame, "y", "g", n_iter=10, **{argument: value})
    with pytest.raises(DataError, match=f"{argument} must be a number of at least 0"):
        gibbs.lmm("y ~ x + (1 | g)", frame, n_iter=10, **{argument: value})


def test_group_variance_prior_must_stay_proper():
    """A group variance's shape or scale of 0 would make the posterior improper: still an error."""
    frame = small_frame()
    for argument in ("group_shape", "group_scale"):
        with pytest.raises(DataError, match=f"{argument} must be a positive number"):
            gibbs.one_way(frame, "y", "g", n_iter=10, **{argument: 0.0})
    for argument in ("var_shape", "var_scale"):
        with pytest.raises(DataError, match=f"{argument} must be a positive number"):
            gibbs.lmm("y ~ x + (1 | g)", frame, n_iter=10, **{argument: 0.0})


def test_improper_residual_posterior_is_an_error():
    """Where the model fits every observation, 1/sigma^2 gives an improper posterior: a response
    constant within groups (one_way), or crossed factors whose 1 + 2 + 2 free coefficients fit 5
    observations (lmm). A proper prior works on the same data."""
    constant = pd.DataFrame({"y": [1.0, 1.0, 2.0, 2.0, 4.0, 4.0], "g": list("aabbcc")})
    with pytest.raises(DataError, match="constant within every group.*resid_shape=1, resid_scale=None"):
        gibbs.one_way(constant, "y", "g", n_iter=10)
    gibbs.one_way(constant, "y", "g", resid_shape=1.0, resid_scale=None, n_iter=10)
    crossed = pd.DataFrame({"y": [1.0, 2.5, 2.0, 4.2, 3.1], "g": list("aabbc"), "h": list("xyzxy")})
    with pytest.raises(DataError, match="can fit every observation exactly"):
        gibbs.lmm("y ~ 1 + (1 | g) + (1 | h)", crossed, n_iter=10)
    gibbs.lmm("y ~ 1 + (1 | g) + (1 | h)", crossed, resid_shape=1.0, resid_scale=None, n_iter=10)


def test_explicit_fixef_prior_forms_agree():
    """fixef_var as a number, as one variance per coefficient and as the matrix v I give the same
    draws; fixef_mean as a number and as an array too."""
    frame = small_frame(1)
    kw = dict(n_iter=100, n_chains=1, seed=6)
    number = gibbs.lmm("y ~ 1 + x + (1 | g)", frame, fixef_mean=1.0, fixef_var=50.0, **kw)
    vector = gibbs.lmm("y ~ 1 + x + (1 | g)", frame, fixef_mean=[1.0, 1.0], fixef_var=[50.0, 50.0], **kw)
    matrix = gibbs.lmm("y ~ 1 + x + (1 | g)", frame, fixef_mean=np.ones(2), fixef_var=50.0 * np.eye(2), **kw)
    pd.testing.assert_frame_equal(number.draws, vector.draws)
    pd.testing.assert_frame_equal(number.draws, matrix.draws, rtol=1e-10)
    assert number.priors["fixef_mean"] == 1.0 and number.priors["fixef_var"] == 50.0
    assert vector.priors["fixef_var"] == [50.0, 50.0]
    tight = gibbs.lmm("y ~ 1 + x + (1 | g)", frame, fixef_mean=[0.0, 7.0], fixef_var=[1e6, 1e-6], **kw)
    assert np.allclose(tight.draws["x"], 7.0, atol=0.01)  # the prior decides x's coefficient


# ----------------------------------------------------------------------------------------------
# Errors


def test_unknown_cov_scale_key_is_an_error():
    frame = small_frame()
    with pytest.raises(DataError, match=r"'gg'.*grouping factors of such terms: 'g'"):
        gibbs.lmm("y ~ x + (x | g) + (1 | h)", frame, cov_scale={"gg": np.eye(2)}, n_iter=10)
    with pytest.raises(DataError, match=r"'h'.*only a scalar term"):
        gibbs.lmm("y ~ x + (x | g) + (1 | h)", frame, cov_scale={"g": np.eye(2), "h": np.eye(1)}, n_iter=10)
    with pytest.raises(DataError, match="cov_scale is the inverse Wishart prior.*has none"):
        gibbs.lmm("y ~ x + (1 | g)", frame, cov_scale={"g": np.eye(1)}, n_iter=10)
    with pytest.raises(DataError, match="cov_df is the inverse Wishart prior.*has none"):
        gibbs.lmm("y ~ x + (1 | g)", frame, cov_df=3, n_iter=10)
    known = gibbs.lmm("y ~ x + (x | g) + (1 | h)", frame, cov_scale={"g": 2 * np.eye(2)}, n_iter=10, n_chains=1)
    assert known.priors["cov_scale[g]"] == [[2.0, 0.0], [0.0, 2.0]]


@pytest.mark.parametrize("argument, value", [
    ("mu_mean", np.nan), ("mu_mean", np.inf), ("mu_var", np.nan), ("group_shape", np.nan),
    ("group_scale", np.inf), ("resid_shape", np.nan), ("resid_scale", np.nan), ("mu_mean", "0"),
])
def test_one_way_bad_prior_parameter(argument, value):
    with pytest.raises(DataError, match=argument):
        gibbs.one_way(small_frame(), "y", "g", n_iter=10, **{argument: value})


@pytest.mark.parametrize("argument, value", [
    ("fixef_mean", np.nan), ("fixef_mean", -np.inf), ("fixef_mean", [0.0, np.nan]), ("fixef_var", np.nan),
    ("fixef_var", [1.0, np.inf]), ("fixef_var", [1.0, 2.0, 3.0]), ("fixef_var", [[1.0, 2.0], [2.0, 1.0]]),
    ("fixef_mean", {"x": 1.0}), ("var_shape", np.nan), ("var_scale", np.inf), ("resid_shape", np.nan),
    ("resid_scale", np.nan), ("cov_df", np.nan), ("cov_scale", np.full((2, 2), np.nan)),
    ("cov_scale", {"g": [[1.0, np.nan], [np.nan, 1.0]]}),
])
def test_lmm_bad_prior_parameter(argument, value):
    with pytest.raises(DataError, match=argument):
        gibbs.lmm("y ~ x + (x | g) + (1 | h)", small_frame(), n_iter=10, **{argument: value})


def test_one_way_drops_missing_rows_with_a_warning():
    """NaN in the response or the group: those rows are dropped, with a MissingValuesWarning
    that points at the caller's line, and the draws are those of the complete rows."""
    frame = small_frame()
    holes = frame.copy()
    holes.loc[[0, 7], "y"] = np.nan
    holes.loc[[12], "g"] = None
    with pytest.warns(MissingValuesWarning, match="3 of 48 rows") as record:
        post = gibbs.one_way(holes, "y", "g", n_iter=100, seed=1)
    assert record[0].filename == __file__
    complete = gibbs.one_way(frame.drop(index=[0, 7, 12]), "y", "g", n_iter=100, seed=1)
    pd.testing.assert_frame_equal(post.draws, complete.draws)
    assert holes["y"].isna().sum() == 2  # the caller's data are untouched


def test_one_way_infinite_response_is_an_error():
    frame = small_frame()
    for value in (np.inf, -np.inf):
        bad = frame.copy()
        bad.loc[3, "y"] = value
        with pytest.raises(DataError, match=r"'y' has 1 infinite value"):
            gibbs.one_way(bad, "y", "g", n_iter=10)
