"""Arguments checked at the door, and the one missing-value policy of the ANOVA tables.

Each bad argument gets a DataError (a ValueError) naming the argument, the value and the fix,
never a traceback from inside numpy; nothing the user passed is modified. The data are mostly
built here (integer group ids, float32 responses, column names of our own), with pulp where a
quick fit is handy.
"""

import os
import re
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

import lmmnotes
from lmmnotes import DataError, anova, bootstrap, compare, confint, exact_rlrt, kenward_roger, lmer, lrt
from lmmnotes import prediction_interval
from lmmnotes.resampling import refit_responses
from lmmnotes.checks import MissingValuesWarning
from lmmnotes.rlrt import simulate_rlrt

PULP = "bright ~ 1 + (1 | operator)"


@pytest.fixture(scope="module")
def pulp_data():
    return lmmnotes.datasets.load("pulp")


@pytest.fixture(scope="module")
def reml(pulp_data):
    return lmer(PULP, pulp_data)


@pytest.fixture(scope="module")
def ml(pulp_data):
    return lmer(PULP, pulp_data, reml=False)


def _sigma(fit):
    return fit.sigma


def _unchanged(frame: pd.DataFrame, copy: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(frame, copy, check_exact=True)


# ---- 1. nsim: a whole number >= 1 wherever it is taken ----------------------------------------------
BAD_NSIM = [0, -5, 2.5, True, "100", None, np.nan]


@pytest.mark.parametrize("nsim", BAD_NSIM, ids=repr)
def test_bootstrap_lrt_and_boot_confint_refuse_a_bad_nsim(reml, ml, nsim):
    pattern = rf"nsim must be a positive number of replicates \(a whole number >= 1\), got {re.escape(repr(nsim))}"
    with pytest.raises(DataError, match=pattern + "; pass e.g. nsim=1000"):
        bootstrap(reml, _sigma, nsim=nsim, seed=1)
    with pytest.raises(DataError, match=pattern):
        lrt(smf.ols("bright ~ 1", lmmnotes.datasets.load("pulp")).fit(), ml, nsim=nsim, seed=1)
    with pytest.raises(DataError, match=pattern):
        confint(reml, method="boot", nsim=nsim, seed=1)


@pytest.mark.parametrize("nsim", [0, 1.5, "10"], ids=repr)
def test_prediction_interval_and_exact_rlrt_refuse_a_bad_nsim(reml, pulp_data, nsim):
    newdata = pd.DataFrame({"operator": ["a", "new"]})
    before = newdata.copy()
    with pytest.raises(DataError, match=rf"nsim must be a positive number.*got {re.escape(repr(nsim))}"):
        prediction_interval(reml, newdata, nsim=nsim, seed=1)
    _unchanged(newdata, before)
    with pytest.raises(DataError, match=rf"nsim must be a positive number.*got {re.escape(repr(nsim))}"):
        exact_rlrt(reml, nsim=nsim, seed=1)
    with pytest.raises(DataError, match="nsim must be a positive number"):
        simulate_rlrt(np.array([1.0, 2.0]), 10, nsim, seed=1)


def test_a_whole_number_of_any_type_is_an_nsim(reml):
    reference = bootstrap(reml, _sigma, nsim=7, seed=3).replicates
    for nsim in (np.int64(7), 7.0, np.float32(7)):
        result = bootstrap(reml, _sigma, nsim=nsim, seed=3)
        assert result.nsim == 7
        pd.testing.assert_frame_equal(result.replicates, reference)
    assert exact_rlrt(reml, nsim=1e3, seed=2).nsim == 1000


# ---- 2. level strictly between 0 and 1 --------------------------------------------------------------
@pytest.mark.parametrize("level", [0, 1, 1.5, -0.1, np.nan, "0.95", True], ids=repr)
def test_levels_outside_zero_one_are_refused(reml, level):
    newdata = pd.DataFrame({"operator": ["b"]})
    shown = re.escape(repr(level))
    with pytest.raises(DataError, match=rf"level must be between 0 and 1, got {shown}; pass a confidence level "
                                        r"such as level=0\.95"):
        prediction_interval(reml, newdata, level=level, nsim=5, seed=1)
    result = bootstrap(reml, _sigma, nsim=5, seed=1)
    with pytest.raises(DataError, match=rf"level must be between 0 and 1, got {shown}"):
        result.percentile_interval(level)
    with pytest.raises(DataError, match=rf"level must be between 0 and 1, got {shown}"):
        confint(reml, method="wald", level=level)


def test_a_percentage_is_recognised(reml):
    result = bootstrap(reml, _sigma, nsim=5, seed=1)
    with pytest.raises(DataError, match=r"got 95; 95 looks like a percentage: pass level=0\.95"):
        result.percentile_interval(95)
    with pytest.raises(DataError, match=r"got 90\.0; 90\.0 looks like a percentage: pass level=0\.9"):
        prediction_interval(reml, pd.DataFrame({"operator": ["b"]}), level=np.float64(90.0), nsim=5)
    assert list(result.percentile_interval(np.float32(0.5)).columns) == ["25 %", "75 %"]


# ---- 3. n_jobs: joblib's convention ------------------------------------------------------------------
def test_negative_n_jobs_count_back_from_all_cores(monkeypatch):
    from lmmnotes.checks import resolve_n_jobs

    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert [resolve_n_jobs(n) for n in (-1, -2, -4, 1, 3, 8, None, np.int64(2))] == [4, 3, 1, 1, 3, 8, 1, 2]
    for bad in (0, -5, 1.5, True, "all"):
        with pytest.raises(DataError, match=rf"n_jobs must be a whole number of processes.*-1 for all 4 cores.*"
                                            rf"got {re.escape(repr(bad))}"):
            resolve_n_jobs(bad)


@pytest.mark.parametrize("n_jobs", [0, -1000, 0.5])
def test_every_n_jobs_is_checked_at_the_door(reml, ml, pulp_data, n_jobs):
    message = rf"n_jobs must be a whole number of processes.*got {re.escape(repr(n_jobs))}"
    null = smf.ols("bright ~ 1", pulp_data).fit()
    with pytest.raises(DataError, match=message):
        bootstrap(reml, _sigma, nsim=5, seed=1, n_jobs=n_jobs)
    with pytest.raises(DataError, match=message):
        lrt(null, ml, nsim=5, seed=1, n_jobs=n_jobs)  # refused even where the batched path needs no processes
    with pytest.raises(DataError, match=message):
        confint(reml, method="boot", nsim=5, seed=1, n_jobs=n_jobs)
    with pytest.raises(DataError, match=message):
        refit_responses(reml, reml.simulate(3, seed=1), _sigma, n_jobs=n_jobs)


def test_n_jobs_minus_one_uses_every_core(reml, monkeypatch):
    module = sys.modules["lmmnotes.resampling"]

    workers = []
    original = module._pool

    def spy(n_jobs, *shared):
        workers.append(n_jobs)
        return original(n_jobs, *shared)

    monkeypatch.setattr(module, "_pool", spy)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    serial = bootstrap(reml, lmmnotes.intervals.all_parameters, nsim=12, seed=8)
    parallel = bootstrap(reml, lmmnotes.intervals.all_parameters, nsim=12, seed=8, n_jobs=-1)
    pd.testing.assert_frame_equal(parallel.replicates, serial.replicates)
    two = refit_responses(reml, reml.simulate(4, seed=2), _sigma, n_jobs=-2)
    np.testing.assert_allclose(two.replicates.to_numpy(),
                               refit_responses(reml, reml.simulate(4, seed=2), _sigma).replicates.to_numpy())
    assert workers == [3, 2]


# ---- 4. Kenward-Roger with a restriction matrix of deficient rank -----------------------------------
@pytest.fixture(scope="module")
def two_slopes_data():
    rng = np.random.default_rng(20240611)
    n_groups, per_group = 9, 6
    unit = np.repeat(np.arange(n_groups) * 10 + 3, per_group)  # integer group ids
    dose, age = rng.normal(size=unit.size), rng.uniform(20, 60, size=unit.size)
    effect = rng.normal(scale=0.8, size=n_groups)[np.repeat(np.arange(n_groups), per_group)]
    score = 1.0 + 0.4 * dose + 0.02 * age + effect + rng.normal(scale=0.5, size=unit.size)
    return pd.DataFrame({"score": score.astype(np.float32), "dose": dose, "age": age, "unit": unit})


@pytest.fixture(scope="module")
def two_slopes(two_slopes_data):
    return lmer("score ~ dose + age + (1 | unit)", two_slopes_data)


def _same_test(a, b):
    assert a.ndf == b.ndf
    np.testing.assert_allclose([a.statistic, a.ddf, a.scaling, a.p_value, a.unscaled],
                               [b.statistic, b.ddf, b.scaling, b.p_value, b.unscaled], rtol=1e-8)


def test_kenward_roger_reduces_a_restriction_matrix_to_its_rank(two_slopes, two_slopes_data):
    reduced = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    base = kenward_roger(two_slopes, reduced)
    assert base.ndf == 2
    duplicated = np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    before = duplicated.copy()
    _same_test(kenward_roger(two_slopes, duplicated), base)
    np.testing.assert_array_equal(duplicated, before)  # the user's L is not modified
    with_zero_row = [[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    _same_test(kenward_roger(two_slopes, with_zero_row), base)
    combination = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 2.0, -3.0]])
    _same_test(kenward_roger(two_slopes, combination), base)
    # one restriction written twice (and scaled) is the test of the dose effect alone, on 1 df
    dose = kenward_roger(two_slopes, [0.0, 1.0, 0.0])
    _same_test(kenward_roger(two_slopes, [[0.0, 1.0, 0.0], [0.0, -2.5, 0.0]]), dose)
    _same_test(kenward_roger(two_slopes, lmer("score ~ age + (1 | unit)", two_slopes_data)), dose)
    assert dose.ndf == 1


@pytest.mark.parametrize("L, message", [
    (np.zeros((2, 3)), r"L has no nonzero row \(shape \(2, 3\)\), so it restricts nothing"),
    (np.zeros((0, 3)), r"L has no nonzero row \(shape \(0, 3\)\)"),
    ([[0.0, np.nan, 0.0]], "L has missing or infinite entries"),
    (np.ones((1, 3, 1)), r"L must be a matrix .*shape \(1, 3, 1\)"),
    ("score ~ age", "L must be a numeric matrix with one column per fixed effect \\(3\\), got str"),
    (np.ones((1, 2)), r"L must have one column per fixed effect \(3\), got 2"),
])
def test_kenward_roger_refuses_an_empty_or_broken_restriction(two_slopes, L, message):
    with pytest.raises(DataError, match=message):
        kenward_roger(two_slopes, L)


# ---- 5. a string where a list is expected --------------------------------------------------------------
@pytest.fixture(scope="module")
def nested_data():
    """A balanced three-level design: 3 sites x 2 benches (labels repeat across sites) x 2 plates x 2."""
    rng = np.random.default_rng(7)
    site = np.repeat(np.arange(3), 8)
    bench = np.tile(np.repeat([1, 2], 4), 3)
    plate = np.tile(np.repeat([10, 20], 2), 6)
    site_effect, bench_effect = rng.normal(size=3)[site], rng.normal(scale=0.5, size=6)[site * 2 + bench - 1]
    value = 5 + site_effect + bench_effect + rng.normal(scale=0.3, size=24)
    return pd.DataFrame({"site": site, "bench": bench, "plate": plate, "value": value.astype(np.float32)})


def test_a_string_for_factors_is_refused_with_the_fix(nested_data):
    before = nested_data.copy()
    with pytest.raises(DataError, match=r"factors must be a list of column names, got the string 'site'; "
                                        r"pass factors=\['site'\]"):
        anova.nested(nested_data, "value", "site")
    with pytest.raises(DataError, match=r"factors names 'site' more than once"):
        anova.nested(nested_data, "value", ["site", "bench", "site"])
    with pytest.raises(DataError, match=r"factors must be a list of column names, e.g\. .*got set"):
        anova.nested(nested_data, "value", {"site", "bench"})
    with pytest.raises(DataError, match=r"the response 'value' is also listed in factors"):
        anova.nested(nested_data, "value", ["site", "value"])
    with pytest.raises(DataError, match=r"response must be the name of one column, got list \['value'\]; "
                                        r"pass response='value'"):
        anova.nested(nested_data, ["value"], ["site"])
    with pytest.raises(DataError, match=r"group must be the name of one column, got list \['site'\]; "
                                        r"pass group='site'"):
        anova.one_way(nested_data, "value", ["site"])
    with pytest.raises(DataError, match=r"whole_plot must be the name of one column, got list"):
        anova.split_plot(nested_data, "value", "site", "plate", ["bench"])
    _unchanged(nested_data, before)
    # a tuple or an Index of names is a list of factors
    table = anova.nested(nested_data, "value", ("site", "bench")).table
    pd.testing.assert_frame_equal(anova.nested(nested_data, "value", pd.Index(["site", "bench"])).table, table)


def test_compare_refuses_a_string_of_names_and_bad_digits():
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(8), 5)
    data = pd.DataFrame({"y": rng.normal(size=8)[g] + rng.normal(size=40), "x": rng.normal(size=40), "g": g})
    m1, m2 = lmer("y ~ 1 + (1 | g)", data, reml=False), lmer("y ~ x + (1 | g)", data, reml=False)
    with pytest.raises(DataError, match=r"names must be a list of 2 labels, one per model, got the string 'ab'"):
        compare(m1, m2, names="ab")
    for digits in (-1, 1.5, "2"):
        message = rf"digits must be a whole number of decimals >= 0, got {re.escape(repr(digits))}"
        with pytest.raises(DataError, match=message):
            compare(m1, m2, digits=digits)
    assert list(compare(m1, m2, names=("null", "dose")).table.index) == ["null", "dose"]


# ---- 6. the ANOVA tables: incomplete rows dropped with a warning, infinities refused ------------------
@pytest.fixture(scope="module")
def one_way_data():
    rng = np.random.default_rng(11)
    batch = np.repeat([101, 102, 103, 104, 105], 4)  # integer group ids
    reading = (10 + rng.normal(size=5)[batch - 101] + rng.normal(scale=0.5, size=20)).astype(np.float32)
    return pd.DataFrame({"reading": reading, "batch": batch, "note": list("abcd") * 5})


def test_one_way_drops_incomplete_rows_with_a_warning(one_way_data):
    data = one_way_data.copy()  # float32 responses, integer batch ids
    data.loc[[2, 9], "reading"] = np.nan
    data["batch"] = data["batch"].astype("Int64")
    data.loc[15, "batch"] = pd.NA
    data.loc[0, "note"] = None  # a column the table does not use: not a reason to drop the row
    before = data.copy()
    with pytest.warns(MissingValuesWarning, match="3 of 20 rows have missing values") as record:
        result = anova.one_way(data, "reading", "batch")
    assert record[0].filename == __file__  # the warning points at the caller's line
    _unchanged(data, before)
    complete = data.dropna(subset=["reading", "batch"])  # the same rows as float64 with string labels
    complete = complete.assign(reading=complete["reading"].astype(float), batch=complete["batch"].astype(str))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        expected = anova.one_way(complete, "reading", "batch")
    assert result.nobs == 17 and not result.balanced
    for name in ("ssa", "sse", "msa", "mse", "sigma2_group", "sigma2_resid", "n0"):
        assert getattr(result, name) == pytest.approx(getattr(expected, name), rel=1e-12)


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_infinite_responses_are_refused(one_way_data, nested_data, bad):
    data = one_way_data.assign(reading=one_way_data["reading"].astype(float))
    data.loc[4, "reading"] = bad
    before = data.copy()
    with pytest.raises(DataError, match=r"'reading' has 1 infinite value\(s\)"):
        anova.one_way(data, "reading", "batch")
    _unchanged(data, before)
    data = nested_data.assign(value=nested_data["value"].astype(float))
    data.loc[[0, 5], "value"] = bad
    with pytest.raises(DataError, match=r"'value' has 2 infinite value\(s\)"):
        anova.nested(data, "value", ["site", "bench", "plate"])


def test_nested_drops_incomplete_rows_and_then_checks_balance(nested_data):
    data = nested_data.copy()
    data.loc[3, "value"] = np.nan  # one replicate of one plate: unbalanced once dropped
    before = data.copy()
    with pytest.warns(MissingValuesWarning, match="1 of 24 rows"), \
            pytest.raises(DataError, match=r"unbalanced.*have \[1, 2\] observations.*this is the design of the 23 "
                                           r"complete rows: 1 of 24 rows had missing values and were dropped"):
        anova.nested(data, "value", ["site", "bench", "plate"])
    _unchanged(data, before)
    # a whole site missing its factor leaves a balanced design, with the same table as the complete rows
    data = nested_data.assign(site=nested_data["site"].astype(float))
    data.loc[data["site"] == 2, "site"] = np.nan
    with pytest.warns(MissingValuesWarning, match="8 of 24 rows") as record:
        result = anova.nested(data, "value", ["site", "bench", "plate"])
    assert record[0].filename == __file__
    expected = anova.nested(data.dropna(), "value", ["site", "bench", "plate"])
    pd.testing.assert_frame_equal(result.table, expected.table)
    assert result.table.loc["Residual", "df"] == 8


@pytest.fixture(scope="module")
def split_data():
    """2 treatments x 3 whole plots each (integer ids) x 3 varieties, one observation per cell."""
    rng = np.random.default_rng(5)
    plot = np.repeat(np.arange(6), 3)
    treatment = np.where(plot < 3, "dry", "wet")
    variety = np.tile(["v1", "v2", "v3"], 6)
    harvest = 20 + (treatment == "wet") * 2 + rng.normal(size=6)[plot] + rng.normal(scale=0.5, size=18)
    return pd.DataFrame({"harvest": harvest.astype(np.float32), "treatment": treatment, "variety": variety,
                         "plot": plot})


def test_split_plot_drops_incomplete_rows_and_then_checks_balance(split_data):
    args = dict(whole_plot_factor="treatment", split_plot_factor="variety", whole_plot="plot")
    data = split_data.assign(harvest=split_data["harvest"].astype(float))
    data.loc[4, "harvest"] = np.nan
    before = data.copy()
    with pytest.warns(MissingValuesWarning, match="1 of 18 rows"), \
            pytest.raises(DataError, match=r"unbalanced.*1 of 18 rows had missing values and were dropped"):
        anova.split_plot(data, "harvest", **args)
    _unchanged(data, before)
    # one whole plot of each treatment missing entirely: still balanced
    data = split_data.copy()
    data["treatment"] = data["treatment"].astype(object)
    data.loc[data["plot"].isin([0, 5]), "treatment"] = None
    with pytest.warns(MissingValuesWarning, match="6 of 18 rows") as record:
        result = anova.split_plot(data, "harvest", **args)
    assert record[0].filename == __file__
    expected = anova.split_plot(data.dropna(), "harvest", **args)
    pd.testing.assert_frame_equal(result.table, expected.table)
    assert result.table.loc["plot (whole-plot error)", "df"] == 2
    data.loc[7, "harvest"] = np.inf
    with pytest.warns(MissingValuesWarning), pytest.raises(DataError, match=r"'harvest' has 1 infinite value"):
        anova.split_plot(data, "harvest", **args)


def test_no_complete_rows_left_is_a_clear_error(one_way_data):
    data = one_way_data.assign(reading=np.nan)
    with pytest.warns(MissingValuesWarning), pytest.raises(DataError, match="no rows are left"):
        anova.one_way(data, "reading", "batch")
