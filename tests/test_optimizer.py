"""The optimizer over theta: units, signs, the boundary, and the precision of its stop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import lmmnotes
from lmmnotes import datasets
from lmmnotes.checks import ConvergenceWarning
from lmmnotes.criterion import CrossProducts, criterion_and_gradient, profiled_criterion
from lmmnotes.design import build_design, canonical_theta
from lmmnotes.optimizer import _scaled_gradient, lme4_gradient_check, optimize_theta
from lmmnotes.formula import parse_formula
from lmmnotes.results import LmerFit

from .conftest import book_data


def _design(formula, data):
    design = build_design(parse_formula(formula), data)
    return design, CrossProducts.from_design(design)


@pytest.fixture(scope="module")
def psid():
    return book_data("psid")


def test_theta_scale_is_a_power_of_two_near_one_over_the_column_rms(psid):
    design, _ = _design("log(income) ~ cyear + (cyear | person)", psid)
    rms = np.sqrt(np.mean(psid["cyear"].to_numpy(float) ** 2))
    # entries (row, col) of T: (0, 0) multiplies the intercept, (1, 0) and (1, 1) the column cyear
    assert rms == pytest.approx(6.4, abs=0.1)
    np.testing.assert_array_equal(design.theta_scale, [1.0, 0.125, 0.125])
    assert np.all(np.log2(design.theta_scale) == np.round(np.log2(design.theta_scale)))


def test_changing_the_sign_of_a_template_column_changes_nothing(psid):
    """The criterion sees T only through T T'; canonical_theta picks the nonnegative diagonal."""
    design, cp = _design("log(income) ~ cyear * sex + (cyear | person)", psid)
    theta = np.array([0.7, 0.02, 0.06])
    flipped = np.array([-0.7, -0.02, 0.06])  # first column negated
    both = np.array([-0.7, -0.02, -0.06])
    for reml in (True, False):
        value = profiled_criterion(theta, design, cp, reml)
        assert profiled_criterion(flipped, design, cp, reml) == pytest.approx(value, rel=1e-13)
        assert profiled_criterion(both, design, cp, reml) == pytest.approx(value, rel=1e-13)
    np.testing.assert_array_equal(canonical_theta(flipped, design), theta)
    np.testing.assert_array_equal(canonical_theta(both, design), theta)
    # an off-diagonal entry's sign alone is a different model: it stays
    np.testing.assert_array_equal(canonical_theta([0.7, -0.02, 0.06], design), [0.7, -0.02, 0.06])
    # a zero in a negated column stays +0.0 (fit.theta prints 0, not -0)
    assert not np.any(np.signbit(canonical_theta([-0.7, 0.0, -0.0], design)))


def test_a_fit_at_a_theta_with_negative_diagonal_entries_is_the_fit_at_its_mirror_image(psid):
    """from_theta keeps the model a theta specifies: a negative diagonal entry (a scalar term's
    theta, or a template's) is a column sign, not a value to clip to 0."""
    design, cp = _design("log(income) ~ cyear * sex + (cyear | person) + (1 | educ)", psid)
    theta = np.array([0.7, 0.02, 0.06, 0.3])
    mirrored = np.array([-0.7, -0.02, 0.06, -0.3])  # the first template column and the scalar negated
    at_mirror = LmerFit.from_theta(design, cp, False, mirrored)
    np.testing.assert_array_equal(at_mirror.theta, theta)
    assert at_mirror.deviance == pytest.approx(profiled_criterion(mirrored, design, cp, False), rel=1e-13)
    with pytest.raises(ValueError, match=r"shape \(3,\) given, but this model has 4 covariance parameters"):
        LmerFit.from_theta(design, cp, False, theta[:3])


@pytest.mark.parametrize("start", [[-1.0, 0.0, -1.0], [1.0, 0.0, 1.0], [0.3, -0.5, 2.0]])
def test_optimum_does_not_depend_on_the_start_or_its_signs(psid, start):
    design, cp = _design("log(income) ~ cyear * sex + age + educ + (cyear | person)", psid)
    reference = optimize_theta(design, cp, True)
    opt = optimize_theta(design, cp, True, start=np.array(start))
    assert opt.converged and np.all(opt.theta[[0, 2]] > 0)
    assert opt.criterion == pytest.approx(reference.criterion, abs=1e-8)
    np.testing.assert_allclose(opt.theta, reference.theta, rtol=1e-6)


def test_a_singular_fit_ends_exactly_on_the_boundary():
    """hsb's (ses | school) ML fit has correlation 1: the last diagonal entry is exactly 0, and
    the criterion at the snapped point is no higher than at any point nearby inside."""
    hsb = datasets.load("hsb")
    design, cp = _design("mathach ~ ses * sector + (ses | school)", hsb)
    opt = optimize_theta(design, cp, False)
    assert opt.theta[2] == 0.0 and opt.theta[0] > 0
    for inside in (1e-6, 1e-4, 1e-2):
        assert profiled_criterion(opt.theta + [0, 0, inside], design, cp, False) >= opt.criterion - 1e-9
    assert lmmnotes.lmer("mathach ~ ses * sector + (ses | school)", hsb, reml=False).is_singular


def test_a_refit_started_on_the_boundary_leaves_it(psid):
    """At a template's last diagonal entry = 0 the gradient in it is 0: the probe must move it."""
    design, cp = _design("log(income) ~ cyear * sex + age + educ + (cyear | person)", psid)
    reference = optimize_theta(design, cp, True)
    opt = optimize_theta(design, cp, True, start=np.array([0.8, 0.01, 0.0]))
    assert opt.theta[2] > 0.05
    assert opt.criterion == pytest.approx(reference.criterion, abs=1e-8)


def test_precision_of_the_stop_on_a_flat_likelihood():
    """Different starts agree on the criterion to 1e-8 (2e-13 relative) and on theta to 3e-5 relative, not better:
    the criterion (46,000 here) is flat in the slope's entries to within its own rounding. This is
    why chapter 10 prints that fit's variances to 4 significant digits (lme4's tightest BOBYQA
    settings leave the slope variance 0.0652378 where these starts give 0.065235-0.065236)."""
    hsb = datasets.load("hsb")
    hsb["cses"] = hsb["ses"] - hsb["meanses"]
    design, cp = _design("mathach ~ meanses * cses + sector * cses + (cses | school)", hsb)
    a = optimize_theta(design, cp, False)
    for factors in ([1.3, 0.5, 2.0], [0.9, 1.1, 0.7], [0.5, 2.0, 1.5]):
        b = optimize_theta(design, cp, False, start=a.theta * factors)
        assert b.criterion == pytest.approx(a.criterion, abs=1e-8)
        np.testing.assert_allclose(b.theta, a.theta, rtol=3e-5)


@pytest.mark.parametrize("size", [1e-2, 1.0, 1e4])
def test_probe_leaves_the_boundary_in_the_units_of_the_column(size):
    """A refit started with an uncorrelated slope's theta at 0 (its gradient there is 0) must
    reach the default start's optimum whatever the scale of the column: the probe's steps are
    taken in the units of theta_scale."""
    rng = np.random.default_rng(5)
    g = np.repeat(np.arange(30), 8)
    x = rng.normal(size=g.size) * size
    y = 1 + rng.normal(size=30)[g] + 0.5 * rng.normal(size=30)[g] * x / size + rng.normal(size=g.size)
    data = pd.DataFrame({"y": y, "x": x, "g": g.astype(str)})
    design, cp = _design("y ~ x + (1 | g) + (0 + x | g)", data)
    reference = optimize_theta(design, cp, False)
    assert reference.theta[1] > 0.1 / size
    for start in ([reference.theta[0], 0.0], [0.0, 0.0]):
        opt = optimize_theta(design, cp, False, start=np.array(start))
        assert opt.criterion == pytest.approx(reference.criterion, abs=1e-7)


def test_a_stop_at_a_worse_trial_point_is_not_taken_for_convergence():
    """With the optimizer's units halved, L-BFGS-B's line search on this model tries theta = 0,
    where the gradient of both scalar thetas vanishes, and reports convergence there although
    its best point (theta = 0.65, 0.65 in those units) has gradient (286, 380). The fit must go
    on from the best point to the optimum that the default units reach."""
    hsb = datasets.load("hsb")
    formula = "mathach ~ ses * sector + (ses || school)"
    design, cp = _design(formula, hsb)
    reference = optimize_theta(design, cp, True)
    halved, cp_halved = _design(formula, hsb)
    halved.__dict__["theta_scale"] = 0.5 * design.theta_scale  # the cached property, overridden
    fit = optimize_theta(halved, cp_halved, True, start=design.default_start)
    assert fit.converged and reference.converged
    assert fit.criterion == pytest.approx(reference.criterion, abs=1e-6)
    np.testing.assert_allclose(fit.theta, reference.theta, atol=1e-4)
    assert fit.n_evaluations > 3  # the false stop came after 3 evaluations


def test_a_stop_without_convergence_at_the_optimum_is_accepted_by_its_scaled_gradient(psid, monkeypatch):
    """When every L-BFGS-B run reports failure (as "ABNORMAL" after a line search finds nothing
    better than rounding), the point is accepted if its scaled gradient R^{-T} g is below 2e-3:
    at the optimum it is, and the message says so; 0.05 away in each entry (in the units
    theta_scale), it is not."""
    import lmmnotes.optimizer as optimizer_module

    design, cp = _design("log(income) ~ cyear * sex + age + educ + (cyear | person)", psid)
    reference = optimize_theta(design, cp, True)
    original = optimizer_module.minimize

    def failing(*args, **kwargs):
        result = original(*args, **kwargs)
        result.success, result.message = False, "ABNORMAL: (a test)"
        return result

    monkeypatch.setattr(optimizer_module, "minimize", failing)
    accepted = optimize_theta(design, cp, True, start=reference.theta)
    assert accepted.converged and "scaled gradient" in accepted.message
    np.testing.assert_allclose(accepted.theta, reference.theta, rtol=1e-6)

    def stopped(fun, x0, *args, **kwargs):  # a run that stops where it started
        value, _ = fun(x0)
        return optimizer_module.OptimizeResult(x=x0, fun=value, success=False, message="ABNORMAL: (a test)")

    monkeypatch.setattr(optimizer_module, "minimize", stopped)
    away = optimize_theta(design, cp, True, start=reference.theta + 0.05 * design.theta_scale)
    assert not away.converged and "scaled gradient" not in away.message


# ---- the record's gradient and lme4's convergence check ------------------------------------------
def test_the_record_keeps_the_gradient_at_theta(psid):
    fit = lmmnotes.lmer("log(income) ~ cyear * sex + age + educ + (cyear | person)", psid)
    _, gradient = criterion_and_gradient(fit.theta, fit.design, fit.cross_products, True)
    np.testing.assert_allclose(fit.optsum.gradient, gradient, rtol=1e-12, atol=1e-12 * np.abs(gradient).max())


def _central_difference_hessian(theta, design, cp, reml):
    """The Hessian of the criterion by central differences of its gradient, written out here
    independently of the package's own."""
    H = np.empty((len(theta), len(theta)))
    for j in range(len(theta)):
        h = 1e-5 * max(abs(theta[j]), 1e-2 * design.theta_scale[j])
        e = np.zeros_like(theta)
        e[j] = h
        H[j] = (criterion_and_gradient(theta + e, design, cp, reml)[1]
                - criterion_and_gradient(theta - e, design, cp, reml)[1]) / (2 * h)
    return 0.5 * (H + H.T)


def _central_difference_check(theta, design, cp, reml):
    """lme4's max(pmin(|R^{-1} g|, |g|)) with the Hessian by central differences of the gradient."""
    _, g = criterion_and_gradient(theta, design, cp, reml)
    R = np.linalg.cholesky(_central_difference_hessian(theta, design, cp, reml)).T
    return float(np.max(np.minimum(np.abs(np.linalg.solve(R, g)), np.abs(g))))


def _two_crossed_factors(seed):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"g": [f"g{k}" for k in np.repeat(np.arange(10), 4)],
                         "h": [f"h{k}" for k in np.tile(np.arange(8), 5)], "y": rng.normal(size=40)})


@pytest.mark.parametrize("case", ["interior", "moved", "scalar at 0", "template diagonal at 0"])
def test_the_scaled_gradient_of_a_stop_without_convergence(psid, case):
    """optimize_theta's acceptance test after a failed stop, max |R^{-T} g| with R'R = H by
    central differences, against this file's own Hessian: inside, away from the optimum, and
    with a scalar theta or a template's last diagonal entry exactly at 0 (the criterion is even
    in it, so H has no cross terms with it there)."""
    if case in ("interior", "moved"):
        formula, data, reml = "log(income) ~ cyear * sex + age + educ + (cyear | person)", psid, True
    elif case == "scalar at 0":
        formula, data, reml = "y ~ 1 + (1 | g) + (1 | h)", _two_crossed_factors(1), True
    else:
        formula, data, reml = "mathach ~ ses * sector + (ses | school)", datasets.load("hsb"), False
    design, cp = _design(formula, data)
    theta = optimize_theta(design, cp, reml).theta * (1.05 if case == "moved" else 1.0)
    H = _central_difference_hessian(theta, design, cp, reml)
    if case.endswith("at 0"):
        zero = np.flatnonzero(theta == 0)
        assert zero.size == 1
        off = np.delete(H[zero[0]], zero[0])
        assert np.all(off == 0.0)
    _, g = criterion_and_gradient(theta, design, cp, reml)
    expected = np.max(np.abs(np.linalg.solve(np.linalg.cholesky(H), g)))  # R' = cholesky(H)
    assert _scaled_gradient(theta, design, cp, reml) == pytest.approx(expected, rel=1e-6)
    assert (expected > 2e-3) == (case == "moved")


@pytest.mark.parametrize("formula, data", [
    ("log(income) ~ cyear * sex + age + educ + (cyear | person)", "psid"),
    ("Fat ~ 1 + (1 | Lab/Technician/Sample)", "eggs"),
    ("bright ~ 1 + (1 | operator)", "pulp"),
])
def test_the_convergence_check_agrees_with_central_differences(formula, data):
    fit = lmmnotes.lmer(formula, book_data(data))
    theta, design, cp = fit.theta, fit.design, fit.cross_products
    central = _central_difference_check(theta, design, cp, True)
    for gradient in (None, fit.optsum.gradient):
        assert lme4_gradient_check(theta, design, cp, True, gradient=gradient) == pytest.approx(central, rel=1e-3)
    # away from the optimum the scaled gradient is large, and the two still agree
    moved = theta * 1.05
    assert lme4_gradient_check(moved, design, cp, True) == pytest.approx(
        _central_difference_check(moved, design, cp, True), rel=1e-3)
    assert lme4_gradient_check(moved, design, cp, True) > 2e-3


def test_a_criterion_flat_in_some_direction_is_reported():
    """Two grouping factors with the same levels: only theta_1^2 + theta_2^2 is identified."""
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(12), 6)
    data = pd.DataFrame({"g": [f"g{k}" for k in g], "h": [f"h{k}" for k in g],
                         "y": rng.normal(size=12)[g] + rng.normal(size=72)})
    with pytest.warns(ConvergenceWarning, match="flat in some direction"):
        fit = lmmnotes.lmer("y ~ 1 + (1 | g) + (1 | h)", data)
    assert np.isinf(fit.optsum.scaled_gradient)
    assert lme4_gradient_check(fit.theta, fit.design, fit.cross_products, True) is None
