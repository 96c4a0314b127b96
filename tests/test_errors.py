"""Every error the package promises, with its message: bad input is named, with the way out.

One row per raise site that the other test modules do not reach (found with coverage): the call,
the exception type and a piece of the message that names the problem or the fix.
"""

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from lmmnotes import DataError, FormulaError, anova, bootstrap, confint, kenward_roger, lmer, lrt, plots
from lmmnotes import prediction_interval, simulate_design
from lmmnotes.anova import balanced_mean_squares

from .conftest import book_data

PULP = "bright ~ 1 + (1 | operator)"


@pytest.fixture(scope="module")
def fits(pulp):
    return {"reml": lmer(PULP, pulp), "ml": lmer(PULP, pulp, reml=False)}


@pytest.mark.parametrize("formula, message", [
    ("bright ~ 1 + 1 | operator) + (1", "unbalanced parentheses"),
    ("bright ~ 1 + (1 | operator//sheet)", "cannot read the grouping factor"),
    ("bright ~ 1 + (1 | operator-sheet)", "use column names joined by ':' or '/'"),
    ("bright ~ 1 ~ operator", "more than one '~'"),
    ("bright ~ 1 + (1 | operator | sheet)", "cannot read the random-effects term"),
])
def test_formulas_lme4_would_reject(pulp, formula, message):
    with pytest.raises(FormulaError, match=message):
        lmer(formula, pulp)


def test_design_errors_name_the_problem(pulp):
    with pytest.raises(DataError, match="no rows are left"), pytest.warns(UserWarning, match="missing values"):
        lmer(PULP, pulp.assign(bright=np.nan))
    with pytest.raises(DataError, match="could not build the fixed-effects model matrix"):
        lmer("bright ~ 1 + log(operator) + (1 | operator)", pulp)  # log of a factor
    with pytest.raises(DataError, match="must be one numeric column.*is it a factor"):
        lmer("operator ~ 1 + (1 | operator)", pulp.assign(sheet=np.arange(20) % 5))
    with pytest.raises(DataError, match=r"the random-effects term \(0 \| operator\) has no columns"):
        lmer("bright ~ 1 + (0 | operator)", pulp)


def test_anova_designs_that_do_not_fit():
    with pytest.raises(ValueError, match=r"shape \(\.\.\., a, n\) with a >= 2 and n >= 2"):
        balanced_mean_squares(np.zeros((3, 1)))
    eggs = book_data("eggs")
    with pytest.raises(DataError, match="give at least one nesting factor"):
        anova.nested(eggs, "Fat", [])
    lab_one_short = eggs[~((eggs["Lab"] == "I") & (eggs["Technician"] == "two"))]
    with pytest.raises(DataError, match="unbalanced.*number of 'Technician' levels differs"):
        anova.nested(lab_one_short, "Fat", ["Lab", "Technician", "Sample"])
    one_technician = eggs[eggs["Technician"] == "one"]
    with pytest.raises(DataError, match="holds a single 'Technician' level"):
        anova.nested(one_technician, "Fat", ["Lab", "Technician", "Sample"])
    irrigation = book_data("irrigation")
    first_four = irrigation[irrigation["field"].isin(["f1", "f2", "f3", "f4"])]
    with pytest.raises(DataError, match="has a single whole plot, so there is no whole-plot error"):
        anova.split_plot(first_four, "yield", whole_plot_factor="irrigation", split_plot_factor="variety",
                         whole_plot="field")


def test_bootstrap_and_lrt_refuse_what_they_cannot_do(pulp, fits):
    with pytest.raises(ValueError, match="nsim must be a positive number"):
        bootstrap(fits["reml"], lambda f: f.sigma, nsim=0)
    with pytest.raises(ValueError, match="nsim must be a positive number"):
        lrt(smf.ols("bright ~ 1", pulp).fit(), fits["ml"], nsim=0)
    with pytest.raises(ValueError, match="must be an unweighted OLS fit"):
        lrt(smf.wls("bright ~ 1", pulp, weights=np.arange(1, 21)).fit(), fits["ml"], nsim=10)
    eggs = book_data("eggs")
    lab = lmer("Fat ~ 1 + (1 | Lab)", eggs, reml=False)
    technician = lmer("Fat ~ 1 + (1 | Lab:Technician) + (1 | Lab:Technician:Sample)", eggs, reml=False)
    with pytest.raises(ValueError, match="not nested: the alternative lacks the random effect"):
        lrt(lab, technician, nsim=10)


def test_inference_functions_name_bad_arguments(pulp, fits):
    with pytest.raises(ValueError, match="no parameter 'sd_nothing'"):
        confint(fits["reml"], method="wald", parm=["sd_nothing"])
    other = lmer(PULP, pulp.assign(bright=pulp["bright"][::-1].to_numpy()))
    with pytest.raises(ValueError, match="fitted to different data"):
        kenward_roger(fits["reml"], other)
    with pytest.raises(ValueError, match=r"L must have one column per fixed effect \(1\), got 2"):
        kenward_roger(fits["reml"], np.ones((1, 2)))
    with pytest.raises(ValueError, match="no random effect 'slope' for 'operator'"):
        plots.caterpillar(fits["reml"], "operator", term="slope")
    with pytest.raises(ValueError, match="level must be between 0 and 1, got 95"):
        prediction_interval(fits["reml"], pulp.head(1), level=95)
    with pytest.raises(ValueError, match="newdata must be a DataFrame with at least one row"):
        prediction_interval(fits["reml"], pulp.head(0))


def test_fitted_model_methods_refuse_bad_requests(pulp, fits):
    with pytest.raises(ValueError, match="deviance is defined for ML fits"):
        fits["reml"].deviance
    with pytest.raises(ValueError, match="reml_criterion is defined for REML fits"):
        fits["ml"].reml_criterion
    with pytest.raises(DataError, match=r"column\(s\) 'operator' not found in newdata"):
        fits["reml"].predict(pd.DataFrame({"sheet": [1]}))
    with pytest.raises(ValueError, match="refit needs a response of length 20, got 19"):
        fits["reml"].refit(np.ones(19))
    with pytest.raises(ValueError, match="missing or infinite values"):
        fits["reml"].refit(np.r_[np.nan, np.ones(19)])
    with pytest.raises(ValueError, match="re_form must be None"):
        fits["reml"].predict(re_form="~(1 | operator)")


def test_simulate_design_checks_the_truth_it_is_given():
    design = pd.DataFrame({"g": np.repeat(list("abcdef"), 3), "x": np.tile([0.0, 1.0, 2.0], 6)})
    ok = {"fixef": [1.0, 0.5], "covariances": {"g": np.eye(2)}, "sigma": 1.0}
    with pytest.raises(DataError, match="fixef has 1 values but the model has 2 fixed effects"):
        simulate_design(design, "y ~ 1 + x + (1 + x | g)", **{**ok, "fixef": [1.0]})
    with pytest.raises(DataError, match="needs a 2 x 2 covariance matrix.*got a single number"):
        simulate_design(design, "y ~ 1 + x + (1 + x | g)", **{**ok, "covariances": {"g": 1.0}})
    with pytest.raises(DataError, match=r"must be 2 x 2 .*got shape \(3, 3\)"):
        simulate_design(design, "y ~ 1 + x + (1 + x | g)", **{**ok, "covariances": {"g": np.eye(3)}})
    with pytest.raises(DataError, match="already has a column 'x'"):
        simulate_design(design, "x ~ 1 + (1 | g)", fixef=[1.0], covariances={"g": 1.0}, sigma=1.0)
    with pytest.raises(DataError, match="sigma must be a non-negative standard deviation, got -1"):
        simulate_design(design, "y ~ 1 + x + (1 + x | g)", **{**ok, "sigma": -1.0})
    with pytest.raises(DataError, match=r"two random-effects terms share a grouping factor \(\['g', 'g'\]\)"):
        simulate_design(design, "y ~ 1 + x + (x || g)", **{**ok, "covariances": {"g": 1.0}})  # which term gets it?


def test_lmmnotes_errors_are_value_errors():
    """Callers can catch the package's input errors as ValueError, as numpy's and pandas' are."""
    assert issubclass(DataError, ValueError) and issubclass(FormulaError, ValueError)


def test_a_grouping_factor_with_one_level_is_refused_as_in_lme4(pulp):
    one_operator = pulp[pulp["operator"] == "a"]
    with pytest.raises(DataError, match=r"grouping factors must have > 1 sampled level.*operator has the single "
                                        r"level 'a'.*Remove the term"):
        lmer(PULP, one_operator)
    eggs = book_data("eggs")
    with pytest.raises(DataError, match=r"grouping factors must have > 1 sampled level \(as lme4 says\): Lab has the single level"):
        lmer("Fat ~ 1 + (1 | Lab) + (1 | Sample)", eggs[eggs["Lab"] == "I"])
    assert len(one_operator) == 5 and list(pulp["operator"].unique()) == ["a", "b", "c", "d"]  # nothing modified
