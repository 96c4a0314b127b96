"""Tests of lmmnotes.anova.one_way."""

from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from statsmodels.stats.anova import anova_lm

from lmmnotes import DataError, datasets
from scipy import stats

from lmmnotes.anova import balanced_mean_squares, one_way, prob_negative


@pytest.fixture
def pulp():
    return datasets.load("pulp")


def test_pulp_matches_statsmodels_anova_lm(pulp):
    result = one_way(pulp, "bright", "operator")
    table = anova_lm(smf.ols("bright ~ C(operator)", data=pulp).fit())
    assert result.df_group == table.loc["C(operator)", "df"]
    assert result.df_resid == table.loc["Residual", "df"]
    assert result.ssa == pytest.approx(table.loc["C(operator)", "sum_sq"], rel=1e-12)
    assert result.sse == pytest.approx(table.loc["Residual", "sum_sq"], rel=1e-12)
    assert result.f_value == pytest.approx(table.loc["C(operator)", "F"], rel=1e-12)
    assert result.p_value == pytest.approx(table.loc["C(operator)", "PR(>F)"], rel=1e-10)


def test_pulp_matches_the_seed_numbers(pulp):
    # Seed 001: F = 4.204 on (3, 16), p = 0.0226, MSA = 0.4467, MSE = 0.1062,
    # sigma_a^2 = (0.4467 - 0.1062) / 5 = 0.0681; lme4's REML gives 0.06808 and 0.10625.
    result = one_way(pulp, "bright", "operator")
    assert (result.df_group, result.df_resid) == (3, 16)
    assert round(result.f_value, 3) == 4.204
    assert round(result.p_value, 4) == 0.0226
    assert round(result.msa, 4) == 0.4467
    assert result.mse == pytest.approx(0.10625, abs=5e-6)
    assert result.sigma2_group == pytest.approx(0.06808, abs=5e-6)
    assert result.n0 == 5 and result.balanced
    assert result.sst == pytest.approx(result.ssa + result.sse, rel=1e-12)
    assert result.icc == pytest.approx(0.06808 / (0.06808 + 0.10625), abs=1e-4)
    assert not result.negative


def test_unbalanced_example_checked_by_hand():
    # Groups A = (1, 3), B = (4, 5, 6), C = (10): N = 6, a = 3, grand mean 29/6.
    # SSE = 2 + 2 + 0 = 4;  SSA = 2(17/6)^2 + 3(1/6)^2 + (31/6)^2 = 257/6;
    # n0 = (6 - (4 + 9 + 1)/6) / 2 = 11/6;  sigma2_group = (257/12 - 4/3) / (11/6) = 241/22.
    data = pd.DataFrame({"y": [1, 3, 4, 5, 6, 10], "g": list("AABBBC")})
    result = one_way(data, "y", "g")
    assert result.sse == pytest.approx(4)
    assert result.ssa == pytest.approx(float(Fraction(257, 6)))
    assert result.sst == pytest.approx(float(Fraction(281, 6)))
    assert result.n0 == pytest.approx(float(Fraction(11, 6)))
    assert result.sigma2_group == pytest.approx(float(Fraction(241, 22)))
    assert result.sigma2_resid == pytest.approx(4 / 3)
    assert not result.balanced
    assert result.group_sizes.to_dict() == {"A": 2, "B": 3, "C": 1}


def test_negative_estimate_is_flagged_and_optionally_truncated():
    # Identical group means: MSA = 0, MSE = 2, so (MSA - MSE) / n0 = -1.
    data = pd.DataFrame({"y": [1.0, 3.0, 1.0, 3.0], "g": ["a", "a", "b", "b"]})
    raw = one_way(data, "y", "g")
    assert raw.negative and not raw.truncated
    assert raw.sigma2_group == pytest.approx(-1.0)
    assert raw.icc == pytest.approx(-1.0)
    cut = one_way(data, "y", "g", truncate=True)
    assert cut.negative and cut.truncated
    assert cut.sigma2_group == 0.0 and cut.icc == 0.0
    assert "negative" in repr(raw)


def test_unused_categorical_levels_are_ignored(pulp):
    subset = pulp[pulp["operator"] != "d"]
    assert "d" in subset["operator"].cat.categories
    result = one_way(subset, "bright", "operator")
    assert result.n_groups == 3 and result.df_group == 2


def test_input_is_not_modified(pulp):
    before = pulp.copy()
    one_way(pulp, "bright", "operator", truncate=True)
    pd.testing.assert_frame_equal(pulp, before)


def test_table_layout(pulp):
    table = one_way(pulp, "bright", "operator").table
    assert list(table.index) == ["operator", "Residual", "Total"]
    assert table.loc["Total", "df"] == 19


@pytest.mark.parametrize(
    "frame, args, message",
    [
        (pd.DataFrame({"y": [1.0, 2.0], "g": ["a", "b"]}), ("y", "group"), "'group' not found"),
        (pd.DataFrame({"y": ["x", "y", "z", "w"], "g": list("aabb")}), ("y", "g"), "must be numeric"),
        # rows with missing values are dropped (with a warning); an error after that says so
        (pd.DataFrame({"y": [1.0, np.nan, 3.0, np.nan], "g": list("aabb")}), ("y", "g"), "2 of 4 rows"),
        (pd.DataFrame({"y": [1.0, 2.0, 3.0], "g": ["a", None, "b"]}), ("y", "g"), "1 of 3 rows"),
        (pd.DataFrame({"y": [1.0, 2.0, 3.0], "g": list("aaa")}), ("y", "g"), "at least 2 groups"),
        (pd.DataFrame({"y": [1.0, 2.0, 3.0], "g": list("abc")}), ("y", "g"), "no replication"),
        (pd.DataFrame({"y": [], "g": []}), ("y", "g"), "no rows"),
    ],
    ids=["missing-column", "non-numeric", "nan-response", "nan-group", "one-group", "no-replication", "empty"],
)
def test_bad_input_gets_a_clear_error(frame, args, message):
    with pytest.raises(DataError, match=message):
        one_way(frame, *args)


def test_not_a_data_frame():
    with pytest.raises(DataError, match="must be a pandas DataFrame"):
        one_way({"y": [1, 2]}, "y", "g")


def test_balanced_mean_squares_agree_with_one_way():
    rng = np.random.default_rng(1)
    y = rng.normal(size=(3, 4, 5))  # three data sets, a = 4 groups of n = 5
    msa, mse = balanced_mean_squares(y)
    for k in range(3):
        frame = pd.DataFrame({"y": y[k].ravel(), "g": np.repeat(list("abcd"), 5)})
        result = one_way(frame, "y", "g")
        assert msa[k] == pytest.approx(result.msa, rel=1e-12)
        assert mse[k] == pytest.approx(result.mse, rel=1e-12)


def test_prob_negative_closed_form_values():
    # rho = 0: MSA/MSE ~ F(a-1, a(n-1)), so P(F < 1) for (3, 16) degrees of freedom.
    assert prob_negative(0.0, 4, 5) == pytest.approx(stats.f.cdf(1.0, 3, 16), rel=1e-12)
    # gamma = rho/(1-rho) = 1 with n = 5 moves the cut-off to 1/6.
    assert prob_negative(0.5, 4, 5) == pytest.approx(stats.f.cdf(1 / 6, 3, 16), rel=1e-12)
    with pytest.raises(ValueError, match="icc"):
        prob_negative(1.0, 4, 5)


def test_prob_negative_matches_simulation():
    rng = np.random.default_rng(2024)
    a, n, icc, nsim = 4, 5, 0.1, 20_000
    sigma2_group = icc / (1 - icc)  # residual variance 1
    y = rng.normal(scale=np.sqrt(sigma2_group), size=(nsim, a, 1)) + rng.normal(size=(nsim, a, n))
    msa, mse = balanced_mean_squares(y)
    observed = np.mean(msa < mse)
    exact = prob_negative(icc, a, n)
    assert abs(observed - exact) < 4 * np.sqrt(exact * (1 - exact) / nsim)
