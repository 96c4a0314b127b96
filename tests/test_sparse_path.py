"""The sparse path of the criterion (N = Z_2'Z_1 sparse, the Schur complement through SchurMap)
against the dense path, the brute-force likelihood of the dense marginal covariance, and lme4."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from lmmnotes import LmerFit
from lmmnotes import criterion as criterion_module
from lmmnotes.criterion import (TRIANGULAR_LEAF, CrossProducts, SchurMap, _weight_derivatives, cholesky_inverse,
                                criterion_and_gradient, factorize, inverse_blocks, profiled_criterion)
from lmmnotes.design import build_design
from lmmnotes.optimizer import em_step, optimize_theta
from lmmnotes.formula import parse_formula

from .conftest import REFERENCE, book_data
from .test_lmer import brute_force_criterion
from .test_lmer_reference import check_ranef


def fit_on_path(design, reml, sparse, whole=False):
    cp = CrossProducts.from_design(design, sparse=sparse, whole=whole)
    assert (cp.schur is not None) == sparse and isinstance(cp.Z2Z1, np.ndarray) == (not sparse)
    opt = optimize_theta(design, cp, reml)
    return LmerFit.from_theta(design, cp, reml, opt.theta, converged=opt.converged, message=opt.message)


@pytest.mark.parametrize("sparse, whole", [(False, False), (True, False), (False, True)])
def test_each_path_reproduces_lme4_on_eggs(sparse, whole):
    ref = REFERENCE["models"]["eggs_reml"]
    design = build_design(parse_formula(ref["formula"]), book_data("eggs"))
    fit = fit_on_path(design, True, sparse, whole)
    assert fit.converged
    assert fit.loglik > ref["loglik"] - 1e-6
    assert fit.reml_criterion == pytest.approx(ref["reml_criterion"], abs=2e-6)
    np.testing.assert_allclose(fit.theta, ref["theta"], rtol=1e-4, atol=1e-6)
    at = LmerFit.from_theta(design, fit.cross_products, True, np.array(ref["theta"], dtype=float))
    assert at.loglik == pytest.approx(ref["loglik"], abs=1e-8)
    np.testing.assert_allclose(at.stderr.to_numpy(), list(ref["stderr"].values()), rtol=1e-7)
    check_ranef(at, ref, dict(rtol=1e-6, atol=1e-9))
    L = at.solution.L  # the blocks assemble to the Cholesky factor of Lambda'Z'Z Lambda + I
    ZL = (design.Z() @ design.Lambda(at.theta)).toarray()
    np.testing.assert_allclose(L @ L.T, ZL.T @ ZL + np.eye(design.q), atol=1e-10)


def ratings(students=40, instructors=18, per_student=6, depts=4, seed=11):
    """A small crossed design of the benchmark's shape (benchmarks/run.py, simulate_crossed)."""
    rng = np.random.default_rng(seed)
    instructor = np.argsort(rng.random((students, instructors)), axis=1)[:, :per_student].ravel()
    student = np.repeat(np.arange(students), per_student)
    dept = rng.integers(0, depts, size=instructors)[instructor]
    x = rng.normal(size=len(student))
    y = (3 + 0.3 * rng.standard_normal(students)[student] + 0.5 * rng.standard_normal(instructors)[instructor]
         + 0.2 * rng.standard_normal(depts)[dept] + 0.3 * x * rng.standard_normal(instructors)[instructor]
         + rng.standard_normal(len(student)))
    service = np.where(rng.random(len(x)) < 0.4, "yes", "no")
    return pd.DataFrame({"student": pd.Categorical(student), "instructor": pd.Categorical(instructor),
                         "dept": pd.Categorical(dept), "service": service, "x": x, "y": y,
                         "in_service": (service == "yes").astype(float), "not_in_service": (service == "no").astype(float)})


CROSSED = [
    ("y ~ service + (1 | student) + (1 | instructor) + (1 | dept)", [0.4, 0.7, 0.3]),
    ("y ~ service + x + (1 | student) + (x | instructor)", [0.4, 0.6, -0.2, 0.3]),  # Lambda_2 not diagonal
    ("y ~ x + (x | student) + (1 | instructor)", [0.4, 0.1, 0.2, 0.6]),  # p_1 = 2
    # dummy-variable terms (chapter 11): no row has effects of both terms, so Z_2'Z_1 = 0 and the
    # positions of Z_2'Z_2 are not among those of N N'
    ("y ~ service + (0 + in_service + x:in_service | student) + (0 + not_in_service | student)", [0.4, 0.1, 0.2, 0.6]),
]


@pytest.mark.parametrize("formula, theta", CROSSED)
@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("leaf", [None, 8])
def test_sparse_and_dense_paths_equal_brute_force(formula, theta, reml, leaf, monkeypatch):
    """Both paths against the criterion computed from the n x n covariance; with ``leaf`` = 8 the
    inverse of L_22 (order about 120 here) is taken by halves down to order 8."""
    if leaf is not None:
        monkeypatch.setattr(criterion_module, "TRIANGULAR_LEAF", leaf)
    design = build_design(parse_formula(formula), ratings())
    dense, sparse = (CrossProducts.from_design(design, sparse=s, whole=False) for s in (False, True))
    for scale in (1.0, 0.3, 2.0):
        t = np.array(theta) * scale
        brute = brute_force_criterion(design, t, reml)
        for cp in (dense, sparse):
            assert profiled_criterion(t, design, cp, reml) == pytest.approx(brute, rel=1e-10)
        f_dense, g_dense = criterion_and_gradient(t, design, dense, reml)
        f_sparse, g_sparse = criterion_and_gradient(t, design, sparse, reml)
        assert f_sparse == pytest.approx(f_dense, rel=1e-12)
        np.testing.assert_allclose(g_sparse, g_dense, rtol=1e-8, atol=1e-8 * np.abs(g_dense).max())
    # the gradient on the sparse path against central differences of the brute-force criterion
    t, h = np.array(theta), 1e-5
    numeric = [(brute_force_criterion(design, t + h * e, reml) - brute_force_criterion(design, t - h * e, reml))
               / (2 * h) for e in np.eye(len(t))]
    np.testing.assert_allclose(criterion_and_gradient(t, design, sparse, reml)[1], numeric, rtol=1e-5, atol=1e-4)


ONE_TERM = [
    ("y ~ service + (1 | instructor)", [0.7]),  # Lambda diagonal
    ("y ~ x + (x | instructor)", [0.6, -0.2, 0.3]),  # Lambda block diagonal, 2 x 2 blocks
    ("y ~ 0 + x + (0 + x | dept)", [0.5]),  # no intercept anywhere
]


@pytest.mark.parametrize("formula, theta", CROSSED + ONE_TERM)
@pytest.mark.parametrize("reml", [True, False])
def test_whole_matrix_evaluation_equals_the_blocks_and_brute_force(formula, theta, reml):
    design = build_design(parse_formula(formula), ratings(students=10, instructors=6, per_student=3, depts=2))
    assert design.q <= 64
    whole, blocked = (CrossProducts.from_design(design, sparse=False, whole=w) for w in (True, False))
    assert CrossProducts.from_design(design).whole  # the default for a small model
    for scale in (1.0, 0.3, 2.0):
        t = np.array(theta) * scale
        f_whole, g_whole = criterion_and_gradient(t, design, whole, reml)
        f_blocked, g_blocked = criterion_and_gradient(t, design, blocked, reml)
        assert f_whole == pytest.approx(f_blocked, rel=1e-12)
        assert f_whole == pytest.approx(brute_force_criterion(design, t, reml), rel=1e-10)
        np.testing.assert_allclose(g_whole, g_blocked, rtol=1e-8, atol=1e-8 * np.abs(g_blocked).max())
    t, h = np.array(theta), 1e-5
    numeric = [(brute_force_criterion(design, t + h * e, reml) - brute_force_criterion(design, t - h * e, reml))
               / (2 * h) for e in np.eye(len(t))]
    np.testing.assert_allclose(criterion_and_gradient(t, design, whole, reml)[1], numeric, rtol=1e-5, atol=1e-4)


def test_whole_matrix_evaluation_is_chosen_for_small_models_only():
    one_term = build_design(parse_formula("bright ~ 1 + (1 | operator)"), book_data("pulp"))
    assert CrossProducts.from_design(one_term).whole
    large = build_design(parse_formula(CROSSED[0][0]), ratings(students=60))
    assert large.q > 64 and not CrossProducts.from_design(large).whole
    large_one_term = build_design(parse_formula("y ~ 1 + (1 | student)"), ratings(students=65))
    assert large_one_term.q == 65 and not CrossProducts.from_design(large_one_term).whole
    with pytest.raises(ValueError, match="dense path"):
        CrossProducts.from_design(large, sparse=True, whole=True)


def test_fits_on_both_paths_agree():
    design = build_design(parse_formula(CROSSED[0][0]), ratings(students=70, instructors=24))
    dense, sparse = fit_on_path(design, True, False), fit_on_path(design, True, True)
    assert dense.converged and sparse.converged
    assert sparse.loglik == pytest.approx(dense.loglik, rel=1e-10)
    assert sparse.loglik == pytest.approx(-0.5 * brute_force_criterion(design, sparse.theta, True), rel=1e-10)
    np.testing.assert_allclose(sparse.theta, dense.theta, rtol=1e-5)
    for group, frame in dense.ranef(condvar=True).items():
        np.testing.assert_allclose(sparse.ranef(condvar=True)[group], frame, rtol=1e-5, atol=1e-8)


def test_the_stored_response_is_the_least_squares_residual():
    # a response with a mean of 60 is stored as its residual on X: orthogonal to X, with the
    # residual sum of squares of an SVD-based least-squares fit
    from lmmnotes.criterion import _least_squares

    pulp = book_data("pulp").assign(x=np.arange(20.0))
    design = build_design(parse_formula("bright ~ x + (1 | operator)"), pulp)
    cp = CrossProducts.from_design(design)
    X, y = design.X, design.y
    gamma, rss = np.linalg.lstsq(X, y, rcond=None)[:2]
    np.testing.assert_allclose(cp.gamma, gamma, rtol=1e-12)
    np.testing.assert_allclose(cp.Xty, 0.0, atol=1e-10 * np.abs(X.T @ y).max())
    assert cp.yty == pytest.approx(rss[0], rel=1e-10)
    # two equal columns (which the design drops, but the helper must survive): the fit X gamma is right
    X2 = np.column_stack([X, X[:, 1]])
    np.testing.assert_allclose(X2 @ _least_squares(X2, X2.T @ X2, y), X @ gamma, rtol=1e-10)


@pytest.mark.parametrize("formula", ["y ~ x + (1 | g)", "y ~ x + (x | g)", "y ~ x + (1 | g) + (1 | h)"])
@pytest.mark.parametrize("factor", [3e-155, 1e150])
def test_a_response_on_an_extreme_scale_gives_the_same_fit(formula, factor):
    """Rescaling y rescales beta and sigma and leaves theta alone. At 3e-155, r^2 is about 5e-308:
    the whole-matrix gradient must divide (Z'e)_r u_c by r^2, not multiply by 1 / r^2, which
    overflows."""
    rng = np.random.default_rng(4)
    g = np.repeat(np.arange(6), 10)
    x = rng.normal(size=60)
    data = pd.DataFrame({"g": [f"g{k}" for k in g], "h": [f"h{k % 5}" for k in range(60)], "x": x,
                         "y": 1 + 0.5 * x + rng.normal(size=6)[g] + 0.4 * rng.normal(size=6)[g] * x
                         + rng.normal(size=60)})
    design = build_design(parse_formula(formula), data)
    cp = CrossProducts.from_design(design)
    assert cp.whole
    theta = design.default_start * 1.3
    scaled_design = build_design(parse_formula(formula), data.assign(y=data["y"] * factor))
    scaled_cp = CrossProducts.from_design(scaled_design)
    _, gradient = criterion_and_gradient(theta, design, cp, True)
    _, scaled_gradient = criterion_and_gradient(theta, scaled_design, scaled_cp, True)
    np.testing.assert_allclose(scaled_gradient, gradient, rtol=1e-8, atol=1e-10)
    fit = LmerFit.from_theta(design, cp, True, optimize_theta(design, cp, True).theta)
    scaled_opt = optimize_theta(scaled_design, scaled_cp, True)
    assert scaled_opt.converged
    np.testing.assert_allclose(scaled_opt.theta, fit.theta, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("theta", [[0.4, 0.7, 0.3], [0.4, 0.7, 1e-5], [0.4, 0.0, 0.3], [0.4, 1e-3, 2.0]])
def test_the_sparse_paths_shortcut_for_a_diagonal_lambda_2_equals_the_sums(theta):
    """With scalar terms after the first, the sparse path reads diag(M_22) as (1 - diag G_22) / lam
    while every 1 - (G_22)_rr exceeds IDENTITY_FLOOR, else sums it over the positions; both
    must give the dense path's gradient, near the boundary (1e-5, 1e-3) and on it (0) too."""
    design = build_design(parse_formula(CROSSED[0][0]), ratings())
    dense, sparse = (CrossProducts.from_design(design, sparse=s, whole=False) for s in (False, True))
    for reml in (True, False):
        f_dense, g_dense = criterion_and_gradient(np.array(theta), design, dense, reml)
        f_sparse, g_sparse = criterion_and_gradient(np.array(theta), design, sparse, reml)
        assert f_sparse == pytest.approx(f_dense, rel=1e-12)
        np.testing.assert_allclose(g_sparse, g_dense, rtol=1e-8, atol=1e-8 * np.abs(g_dense).max())


def with_dense_share(cp, design, share):
    """The sparse path's cross-products with SchurMap's dense rows chosen by ``share``."""
    s = cp.schur
    schur = SchurMap.from_pattern(cp.Z2Z1, cp.Z2Z2, design.terms[0].p, s.scalar, s.row_term, dense_share=share)
    return dataclasses.replace(cp, schur=schur)


def dense_path_results(design, dense, theta):
    """The dense path's REML criterion, gradient and blocks of A^{-1} at theta."""
    f, g = criterion_and_gradient(theta, design, dense, True)
    return f, g, inverse_blocks(factorize(theta, design, dense), dense)


def assert_as_on_the_dense_path(design, cp, theta, expected):
    f_dense, g_dense, (G11_dense, G22_dense) = expected
    f, g = criterion_and_gradient(theta, design, cp, True)
    assert f == pytest.approx(f_dense, rel=1e-12)
    np.testing.assert_allclose(g, g_dense, rtol=1e-9, atol=1e-9 * np.abs(g_dense).max())
    G11, G22 = inverse_blocks(factorize(theta, design, cp), cp)
    np.testing.assert_allclose(G11, G11_dense, atol=1e-12)
    np.testing.assert_allclose(G22, G22_dense, atol=1e-12)


@pytest.mark.parametrize("formula, theta", CROSSED)
def test_dense_rows_of_N_give_the_dense_paths_criterion_gradient_and_inverse(formula, theta):
    """Rows of N put apart from K (every row, some of them, none) change nothing but rounding: the
    criterion, its gradient and the blocks of A^{-1} are the dense path's."""
    design = build_design(parse_formula(formula), ratings())
    dense, sparse = (CrossProducts.from_design(design, sparse=s, whole=False) for s in (False, True))
    theta = np.array(theta)
    expected = dense_path_results(design, dense, theta)
    splits = set()
    for share in (0.0, 0.3, 2.0):
        cp = with_dense_share(sparse, design, share)
        s = cp.schur
        splits.add((len(s.dense_rows), s.K.nnz > 0))
        # K holds no pair at a dense position
        assert not np.isin(np.flatnonzero(np.diff(s.K.tocsr().indptr)), s.dense_positions).any()
        assert_as_on_the_dense_path(design, cp, theta, expected)
    if sparse.schur.K.nnz or sparse.schur.dense_rows.size:  # not the dummy-variable design, whose N is 0
        assert len(splits) == 3  # all rows dense, a mix, none


def test_a_factor_with_few_levels_gives_the_dense_rows_by_default():
    """400 students rating 6 of 120 instructors in 4 departments: each department meets nearly every
    student, each instructor about 5% of them, so only the departments' rows are dense."""
    design = build_design(parse_formula(CROSSED[0][0]), ratings(students=400, instructors=120))
    cp = CrossProducts.from_design(design, sparse=True)
    s = cp.schur
    np.testing.assert_array_equal(s.dense_rows, np.flatnonzero(s.row_term == 1))  # the department term
    undivided = with_dense_share(cp, design, 2.0)
    assert undivided.schur.dense_rows.size == 0 and s.K.nnz < undivided.schur.K.nnz
    theta = np.array([0.4, 0.7, 0.3])
    for reml in (True, False):
        f, g = criterion_and_gradient(theta, design, cp, reml)
        f_undivided, g_undivided = criterion_and_gradient(theta, design, undivided, reml)
        assert f == pytest.approx(f_undivided, rel=1e-12)
        np.testing.assert_allclose(g, g_undivided, rtol=1e-9)


def test_scaled_values_at_the_positions_are_lambda_r_v_lambda_c():
    design = build_design(parse_formula(CROSSED[0][0]), ratings(students=400, instructors=120))
    s = CrossProducts.from_design(design, sparse=True).schur
    lam = np.where(s.row_term == 0, 0.7, 0.3)  # Lambda_2 = diag(theta_2 I, theta_3 I)
    v = np.random.default_rng(1).normal(size=len(s.rows))
    np.testing.assert_allclose(s.scaled(lam, v), lam[s.rows] * v * lam[s.cols], rtol=1e-15)
    lam[0] = 0.5  # two values on the instructor term's rows: not a Lambda_2 of scalar terms
    with pytest.raises(ValueError, match="one value of lam per term"):
        s.scaled(lam, v)


def test_weight_derivatives_equal_differences_of_W():
    """dW_k/dtheta_i for a 2 x 2 template against central differences of
    W_k = T A_k^{-1} T', A_k = T'C_k T + I."""
    rng = np.random.default_rng(3)
    C = np.array([B @ B.T for B in rng.normal(size=(5, 2, 3))])  # Z_1'Z_1 level blocks
    lower = (np.array([0, 1, 1]), np.array([0, 0, 1]))
    theta = np.array([0.8, -0.3, 0.5])

    def weights(theta):
        T = np.zeros((2, 2))
        T[lower] = theta
        TA = T @ np.linalg.inv(T.T @ C @ T + np.eye(2))
        return TA, TA @ T.T

    TA, W = weights(theta)
    dW = _weight_derivatives(TA, W, C, lower)
    h = 1e-6
    for i in range(3):
        e = np.eye(3)[i] * h
        numeric = (weights(theta + e)[1] - weights(theta - e)[1]) / (2 * h)
        np.testing.assert_allclose(dW[:, i], numeric, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("formula, theta", [
    ("y ~ x + (1 | g) + (1 | h) + (0 + x | d)", [0.8, 0.5, 0.7]),
    ("y ~ x + (1 + x | g) + (1 | h) + (0 + x | d)", [0.8, 0.3, 0.6, 0.5, 0.7]),  # p_1 = 2
])
def test_dense_rows_keep_positions_where_the_entries_of_N_cancel(formula, theta):
    """With a +-1 covariate, sum_k N[r, k] N[d, k] can be exactly 0 where N W N' is not: the dense
    rows' positions must come from the pattern of N (merged over a level's columns), not from its
    values."""
    frame = pd.DataFrame({"g": [0, 1, 0, 1, 2, 2, 3, 3, 2, 3, 0, 1], "h": [0, 0, 1, 2, 1, 2, 1, 2, 1, 2, 2, 1],
                          "d": [0, 0, 1, 1, 0, 1, 0, 1, 0, 1, 1, 0],
                          "x": [1.0, -1.0, 1.0, 1.0, -1.0, 1.0, 1.0, -1.0, 1.0, 1.0, 1.0, -1.0]})
    frame["y"] = np.random.default_rng(1).normal(size=len(frame))
    for column in "ghd":
        frame[column] = pd.Categorical(frame[column])
    design = build_design(parse_formula(formula), frame)
    dense, sparse = (CrossProducts.from_design(design, sparse=s, whole=False) for s in (False, True))
    theta = np.array(theta)
    expected = dense_path_results(design, dense, theta)
    assert expected[0] == pytest.approx(brute_force_criterion(design, theta, True), rel=1e-10)
    for share in (None, 0.0, 2.0):
        cp = sparse if share is None else with_dense_share(sparse, design, share)
        assert_as_on_the_dense_path(design, cp, theta, expected)


@pytest.mark.parametrize("order", [1, 7, TRIANGULAR_LEAF, TRIANGULAR_LEAF + 1, 2 * TRIANGULAR_LEAF + 3, 700])
@pytest.mark.parametrize("layout", ["F", "C"])
def test_cholesky_inverse_by_halves_equals_lapack_and_numpy(order, layout):
    """(L L')^{-1} from L, its triangular inverse taken by halves above TRIANGULAR_LEAF (one,
    two and three levels of halving here): LAPACK's dpotri and numpy's inverse of L L' agree.
    Only L's lower triangle is read (its upper one here holds noise), and L is left as it was."""
    from scipy.linalg.lapack import dpotrf, dpotri
    rng = np.random.default_rng(order)
    B = rng.normal(size=(order, order + 5))
    A = B @ B.T / order + np.diag(rng.uniform(0.5, 2.0, order))
    L = dpotrf(A, lower=1, clean=1)[0]
    expected = np.tril(dpotri(L, lower=1)[0])
    noisy = np.array(L + np.triu(rng.normal(size=(order, order)), 1), order=layout)
    before = noisy.copy()
    G = cholesky_inverse(noisy)
    np.testing.assert_array_equal(noisy, before)
    assert G.flags.f_contiguous
    lower = np.tril(G)
    np.testing.assert_allclose(lower, expected, rtol=0, atol=1e-12 * np.abs(lower).max())
    np.testing.assert_allclose(lower + np.tril(G, -1).T, np.linalg.inv(A), rtol=0, atol=1e-10 * np.abs(lower).max())


def test_cholesky_inverse_of_a_singular_factor_raises():
    L = np.tril(np.random.default_rng(0).normal(size=(3 * TRIANGULAR_LEAF, 3 * TRIANGULAR_LEAF)))
    L[2 * TRIANGULAR_LEAF + 5, 2 * TRIANGULAR_LEAF + 5] = 0.0
    with pytest.raises(np.linalg.LinAlgError, match="singular"):
        cholesky_inverse(np.asfortranarray(L))


def test_the_positions_run_column_by_column_down_the_lower_triangle():
    """The order of LAPACK's Fortran arrays: S is scattered, and G_22 gathered, in memory order."""
    design = build_design(parse_formula(CROSSED[0][0]), ratings(students=400, instructors=120))
    s = CrossProducts.from_design(design, sparse=True).schur
    assert np.all(s.rows >= s.cols)
    assert np.all(np.diff(s.cols * s.q2 + s.rows) > 0)


@pytest.mark.parametrize("formula, theta", CROSSED)
@pytest.mark.parametrize("sparse", [True, False])
def test_an_em_step_equals_the_conditional_moments_of_the_marginal_model(formula, theta, sparse):
    """em_step against the same step from the n x n marginal model: with W = I + Z Lambda Lambda' Z',
    beta by GLS and sigma^2 = e'W^{-1}e / n, b given y has mean Lambda Lambda' Z' W^{-1} e and
    covariance sigma^2 (Lambda Lambda' - Lambda Lambda' Z' W^{-1} Z Lambda Lambda'); each term's new
    T T' is the average over its levels of E(b_k b_k' | y) / sigma^2."""
    design = build_design(parse_formula(formula), ratings())
    cp = CrossProducts.from_design(design, sparse=sparse, whole=False)
    theta = np.array(theta)
    Z, Lam = design.Z().toarray(), design.Lambda(theta).toarray()
    X, y, n = design.X, design.y, design.nobs
    LLt = Lam @ Lam.T
    W_inv = np.linalg.inv(np.eye(n) + Z @ LLt @ Z.T)
    beta = np.linalg.solve(X.T @ W_inv @ X, X.T @ W_inv @ y)
    e = y - X @ beta
    sigma2 = e @ W_inv @ e / n
    mean = LLt @ Z.T @ W_inv @ e
    cov = sigma2 * (LLt - LLt @ Z.T @ W_inv @ Z @ LLt)
    expected, start = [], 0
    for t in design.terms:
        level = start + np.arange(t.n_levels * t.p).reshape(t.n_levels, t.p)
        second_moment = (np.einsum("ka,kb->ab", mean[level], mean[level])
                         + cov[level[:, :, None], level[:, None, :]].sum(axis=0)) / t.n_levels
        expected.append(np.linalg.cholesky(second_moment / sigma2)[t.lower])
        start += t.n_levels * t.p
    np.testing.assert_allclose(em_step(theta, design, cp), np.concatenate(expected), rtol=1e-8, atol=1e-12)


def test_a_large_model_starts_after_one_em_step():
    """On the sparse path the search starts at em_step(T_t = I) and reaches the optimum that the
    start T_t = I reaches; on the dense path it starts at T_t = I."""
    design = build_design(parse_formula(CROSSED[0][0]), ratings(students=400, instructors=120))
    sparse = CrossProducts.from_design(design)
    assert sparse.schur is not None
    for reml in (False, True):
        opt = optimize_theta(design, sparse, reml)
        np.testing.assert_array_equal(opt.start, em_step(design.default_start, design, sparse))
        from_identity = optimize_theta(design, sparse, reml, start=design.default_start)
        assert opt.criterion == pytest.approx(from_identity.criterion, rel=1e-12)
        np.testing.assert_allclose(opt.theta, from_identity.theta, rtol=1e-5)
    dense = CrossProducts.from_design(design, sparse=False)
    np.testing.assert_array_equal(optimize_theta(design, dense, False).start, design.default_start)


def test_an_em_step_keeps_a_term_on_the_boundary_and_lowers_the_deviance():
    """A scalar theta at 0 has T M T' = 0, which has no Cholesky factor: it stays 0 (EM never
    leaves 0), while the other terms move; and the step lowers the ML criterion d(theta)."""
    design = build_design(parse_formula(CROSSED[0][0]), ratings())
    cp = CrossProducts.from_design(design, sparse=True)
    theta = np.array([0.4, 0.0, 0.3])
    new = em_step(theta, design, cp)
    assert new[1] == 0.0 and new[0] != theta[0] and new[2] != theta[2]
    for start in (theta, design.default_start):
        assert profiled_criterion(em_step(start, design, cp), design, cp, False) < profiled_criterion(start, design, cp, False)
