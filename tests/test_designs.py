"""Designs: nested and split-plot ANOVA, simulation with a known truth, diagnostic plots."""

import json
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import statsmodels.api as sm  # noqa: E402
import statsmodels.formula.api as smf  # noqa: E402

from lmmnotes import DataError, anova, lmer, plots  # noqa: E402
from lmmnotes.simulate import simulate_design  # noqa: E402

from .conftest import REFERENCE as LME4  # noqa: E402
from .conftest import book_data  # noqa: E402

INFERENCE = json.loads((pathlib.Path(__file__).parent / "reference" / "inference.json").read_text())
DESIGNS = INFERENCE["designs"]
EGGS = "Fat ~ 1 + (1 | Lab) + (1 | Lab:Technician) + (1 | Lab:Technician:Sample)"


# ---- nested designs -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def eggs_anova():
    return anova.nested(book_data("eggs"), "Fat", ["Lab", "Technician", "Sample"])


def test_nested_anova_matches_r_aov_strata(eggs_anova):
    table = eggs_anova.table
    for name, stratum in [("Lab", "Error: Lab"), ("Lab:Technician", "Error: Lab:Technician"),
                          ("Lab:Technician:Sample", "Error: Lab:Technician:Sample"), ("Residual", "Error: Within")]:
        ref = DESIGNS["eggs_nested"][stratum]
        assert table.loc[name, "df"] == ref["df"]
        assert table.loc[name, "sum_sq"] == pytest.approx(ref["ss"], rel=1e-10)
        assert table.loc[name, "mean_sq"] == pytest.approx(ref["ms"], rel=1e-10)


def test_nested_anova_matches_statsmodels_sequential_sums_of_squares(eggs_anova):
    ols = smf.ols("Fat ~ C(Lab) + C(Lab):C(Technician) + C(Lab):C(Technician):C(Sample)", book_data("eggs")).fit()
    sm_table = sm.stats.anova_lm(ols, typ=1)
    np.testing.assert_allclose(eggs_anova.table["sum_sq"].to_numpy(), sm_table["sum_sq"].to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(eggs_anova.table["df"].to_numpy(), sm_table["df"].to_numpy())


def test_nested_estimates_equal_reml_on_balanced_data(eggs_anova):
    fit = lmer(EGGS, book_data("eggs"))
    reml = fit.varcorr.set_index("grp")["vcov"]
    assert not eggs_anova.negative  # all positive, so REML equals the moment estimates
    for name in ["Lab", "Lab:Technician", "Lab:Technician:Sample", "Residual"]:
        assert eggs_anova.components[name] == pytest.approx(reml[name], rel=1e-5)
    assert eggs_anova.per_level == (8, 4, 2)


def test_nested_expected_mean_squares_by_simulation():
    # closed form: E(MS_k) = sigma2 + sum_{j >= k} w_j sigma2_j; check the unbiasedness of the
    # estimators over many simulated balanced designs (3 x 2 x 3 with 2 replicates)
    rng = np.random.default_rng(3)
    design = pd.DataFrame([(f"A{i}", f"B{j}", f"C{k}") for i in range(3) for j in range(2) for k in range(3) for _ in range(2)],
                          columns=["A", "B", "C"])
    truth = np.array([0.5, 0.3, 0.2, 1.0])
    estimates = []
    for _ in range(400):
        a = rng.normal(0, np.sqrt(truth[0]), 3)[pd.factorize(design["A"])[0]]
        b = rng.normal(0, np.sqrt(truth[1]), 6)[design.groupby(["A", "B"]).ngroup()]
        c = rng.normal(0, np.sqrt(truth[2]), 18)[design.groupby(["A", "B", "C"]).ngroup()]
        y = a + b + c + rng.normal(0, 1.0, len(design))
        estimates.append(anova.nested(design.assign(y=y), "y", ["A", "B", "C"]).components.to_numpy())
    estimates = np.array(estimates)
    se = estimates.std(axis=0) / np.sqrt(len(estimates))
    assert np.all(np.abs(estimates.mean(axis=0) - truth) < 4 * se)


def test_nested_refuses_unbalanced_and_unreplicated_designs():
    eggs = book_data("eggs")
    with pytest.raises(DataError, match="unbalanced.*REML"):
        anova.nested(eggs.iloc[1:], "Fat", ["Lab", "Technician", "Sample"])
    with pytest.raises(DataError, match="single observation"):
        anova.nested(eggs.drop_duplicates(["Lab", "Technician", "Sample"]), "Fat", ["Lab", "Technician", "Sample"])
    with pytest.raises(DataError, match="not found"):
        anova.nested(eggs, "Fat", ["Lab", "Technican"])


# ---- split plots -----------------------------------------------------------------------------------------
def test_split_plot_matches_r_aov_strata():
    result = anova.split_plot(book_data("irrigation"), "yield", "irrigation", "variety", "field")
    table = result.table
    field, within = DESIGNS["irrigation_split_plot"]["field"], DESIGNS["irrigation_split_plot"]["within"]
    rows = [("irrigation", field, 0), ("field (whole-plot error)", field, 1), ("variety", within, 0),
            ("irrigation:variety", within, 1), ("Residual", within, 2)]
    for name, ref, k in rows:
        assert table.loc[name, "df"] == ref["df"][k]
        assert table.loc[name, "sum_sq"] == pytest.approx(ref["ss"][k], rel=1e-10)
        if ref["F"][k] is not None:
            assert table.loc[name, "F"] == pytest.approx(ref["F"][k], rel=1e-8)
            assert table.loc[name, "p_value"] == pytest.approx(ref["p"][k], rel=1e-6)
    # pbkrtest's Kenward-Roger F tests are the strata's F tests for this balanced design
    kr = INFERENCE["kenward_roger"]
    assert table.loc["irrigation", "F"] == pytest.approx(kr["irrigation_irrigation"]["statistic"], rel=1e-6)
    assert table.loc["irrigation:variety", "F"] == pytest.approx(kr["irrigation_interaction"]["statistic"], rel=1e-6)
    # positive moment estimates equal REML's (lme4's standard deviations, to its optimizer's 1e-8)
    sd_field, sd_resid = LME4["models"]["irrigation_reml"]["varcorr"]["sdcor"]
    assert np.sqrt(result.sigma2_whole_plot) == pytest.approx(sd_field, rel=1e-7)
    assert np.sqrt(result.sigma2_resid) == pytest.approx(sd_resid, rel=1e-7)


def test_split_plot_refuses_bad_designs():
    irr = book_data("irrigation")
    with pytest.raises(DataError, match="unbalanced"):
        anova.split_plot(irr.iloc[1:], "yield", "irrigation", "variety", "field")
    swapped = irr.assign(field=irr["variety"].astype(str) + irr["irrigation"].astype(str).str[:0])
    with pytest.raises(DataError, match="more than one level"):
        anova.split_plot(swapped, "yield", "irrigation", "variety", "field")


# ---- simulation with a known truth ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def crossed():
    rng = np.random.default_rng(0)
    design = pd.DataFrame([(f"w{i:03d}", f"l{j:02d}") for i in range(150) for j in range(80)], columns=["worker", "location"])
    design["x"] = rng.normal(size=len(design))
    sim = simulate_design(design, "y ~ 1 + x + (1 | worker) + (1 | location)", {"(Intercept)": 10.0, "x": 2.0},
                          {"worker": 4.0, "location": 1.0}, sigma=1.5, seed=1)
    return design, sim


def test_simulation_recovers_the_truth_on_a_large_crossed_design(crossed):
    design, sim = crossed
    assert "y" not in design.columns  # the design is not modified
    fit = lmer("y ~ 1 + x + (1 | worker) + (1 | location)", sim.data)
    vc = fit.varcorr.set_index("grp")["vcov"]
    # approximate SE of a variance estimated from m levels: sigma2 * sqrt(2 / (m - 1))
    assert abs(vc["worker"] - 4.0) < 4 * 4.0 * np.sqrt(2 / 149)
    assert abs(vc["location"] - 1.0) < 4 * 1.0 * np.sqrt(2 / 79)
    assert abs(vc["Residual"] - 2.25) < 4 * 2.25 * np.sqrt(2 / len(design))
    assert np.all(np.abs(fit.fixef - sim.fixef) < 4 * fit.stderr)
    # the random effects drawn are the truth behind the data: the BLUPs track them closely
    drawn = sim.ranef["worker"]["(Intercept)"]
    predicted = fit.ranef()["worker"]["(Intercept)"].reindex(drawn.index)
    assert np.corrcoef(drawn, predicted)[0, 1] > 0.95


def test_simulation_with_a_random_slope_and_seeding():
    design = pd.DataFrame({"g": np.repeat([f"g{i}" for i in range(300)], 8), "t": np.tile(np.arange(8.0), 300)})
    Sigma = np.array([[1.0, 0.3], [0.3, 0.25]])
    args = (design, "y ~ t + (t | g)", [1.0, 0.5], {"g": Sigma}, 0.5)
    one, two = simulate_design(*args, seed=9), simulate_design(*args, seed=9)
    pd.testing.assert_frame_equal(one.data, two.data)
    assert not np.allclose(one.data["y"], simulate_design(*args, seed=10).data["y"])
    fit = lmer("y ~ t + (t | g)", one.data)
    cov = fit.covariances()["g"].to_numpy()
    # each entry within 4 approximate SEs, sqrt(2 / (m - 1)) * sqrt(Sigma_ii Sigma_jj), of the truth
    tolerance = 4 * np.sqrt(2 / 299) * np.sqrt(np.outer(np.diag(Sigma), np.diag(Sigma)))
    assert np.all(np.abs(cov - Sigma) < tolerance)


def test_simulation_refuses_bad_parameters(crossed):
    design, _ = crossed
    formula = "y ~ 1 + x + (1 | worker) + (1 | location)"
    with pytest.raises(DataError, match="missing"):
        simulate_design(design, formula, {"(Intercept)": 1.0}, {"worker": 1.0, "location": 1.0}, 1.0)
    with pytest.raises(DataError, match="keyed by the grouping factors"):
        simulate_design(design, formula, [1.0, 1.0], {"worker": 1.0}, 1.0)
    with pytest.raises(DataError, match="positive semi-definite"):
        simulate_design(design, formula, [1.0, 1.0], {"worker": -1.0, "location": 1.0}, 1.0)
    with pytest.raises(DataError, match="plain column name"):
        simulate_design(design, "log(y) ~ 1 + (1 | worker)", [1.0], {"worker": 1.0}, 1.0)


# ---- plots -----------------------------------------------------------------------------------------------------
def test_plots_draw_one_point_per_observation_and_level():
    fit = lmer(EGGS, book_data("eggs"))
    ax = plots.caterpillar(fit, "Lab")
    labs = fit.ranef(condvar=True)["Lab"].sort_values("(Intercept)")
    assert [t.get_text() for t in ax.get_yticklabels()] == list(labs.index)  # sorted by mode
    points = ax.lines[0].get_xydata()  # the modes, at 0, 1, ..., 5
    np.testing.assert_allclose(points[:, 0], labs["(Intercept)"])
    segments = ax.collections[0].get_segments()  # the 95% intervals: mode -+ 1.96 conditional SD
    np.testing.assert_allclose([s[1, 0] - s[0, 0] for s in segments], 2 * 1.959964 * labs["condsd_(Intercept)"], rtol=1e-6)
    axes = plots.residual_plots(fit)
    assert len(axes[0].collections[0].get_offsets()) == fit.nobs
    axes = plots.residual_plots(fit, level="population")
    marginal = axes[0].collections[0].get_offsets()
    np.testing.assert_allclose(marginal[:, 1], fit.design.y - fit.predict(re_form="~0").to_numpy())
    axes = plots.residual_plots(fit, level="group")
    assert sum(len(c.get_offsets()) for c in axes[0].collections) == 6 + 12 + 24
    with pytest.raises(ValueError, match="level"):
        plots.residual_plots(fit, level="person")
    with pytest.raises(ValueError, match="no grouping factor"):
        plots.caterpillar(fit, "Technician")
    plt.close("all")
