"""The optimizer step of the lmer pipeline: theta-hat = argmin of the profiled criterion.

``optimize_theta`` minimizes ``criterion.profiled_criterion`` (or d_R) over theta from a start,
on one BLAS thread, and returns an ``OptimizerResult``: the record of the optimization, as
MixedModels.jl's ``OptSummary`` and lme4's ``@optinfo``. A large model's search starts after one
step of the EM algorithm (``em_step``). ``lme4_gradient_check`` is lme4's test of convergence at
the answer. A fitted template has a nonnegative diagonal, as in lme4
(``design.canonical_theta``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.optimize import OptimizeResult, minimize
from threadpoolctl import ThreadpoolController

from .criterion import CrossProducts, criterion_and_gradient, inverse_blocks, pls, profiled_criterion
from .design import Design, canonical_theta

GRADIENT_TOLERANCE = 2e-3  # the default tolerance of lme4's check.conv.grad


@dataclass(frozen=True, kw_only=True)
class OptimizerResult:
    """The record of one optimization of theta (MixedModels.jl's ``OptSummary``, lme4's ``@optinfo``)."""

    optimizer: str  # the algorithm: L-BFGS-B
    start: np.ndarray  # where L-BFGS-B began (lme4's start is design.default_start; see em_step)
    theta: np.ndarray  # where it ended (canonical: nonnegative template diagonals)
    criterion: float  # d(theta) or d_R(theta) at theta
    converged: bool
    message: str  # the optimizer's reason for stopping
    n_evaluations: int  # of the criterion (with or without its gradient), restarts and probes included; an EM step counts one
    restarts: int = 0  # fresh L-BFGS-B runs after the first (from a probe inside the boundary, or a stall)
    snapped: tuple[int, ...] = ()  # entries of theta set to exactly 0 at the end (``_snap_to_boundary``)
    # the criterion's gradient at theta, as the last evaluation there gave it (None if theta was
    # reached otherwise: a boundary snap, or a sign change of a template column)
    gradient: np.ndarray | None = None
    # lme4's convergence test at theta (``lme4_gradient_check``), made by ``lmer``: nan if not made,
    # inf if the criterion is flat in some direction
    scaled_gradient: float = float("nan")


class _Stalled(Exception):
    """The line search keeps asking for points within rounding distance of the best one."""


FTOL = 1e-12  # L-BFGS-B stops when an iteration lowers the criterion by less than this, relative
STALL_DISTANCE = 1e-8  # relative (max norm): closer than this, theta cannot improve the criterion
STALL_CHANGE = 1e-14  # relative: a criterion this close to the best one differs from it by rounding only


def _bounds(design: Design) -> list[tuple[float | None, None]]:
    """L-BFGS-B's bounds: theta >= 0 for a scalar term (lme4's bound), none for a template's entries.

    The diagonal of a p x p template (p > 1) needs no bound, since theta and its canonical form
    give the same criterion. A bounded search can stop on a false boundary point: the last
    diagonal entry of a template enters the criterion only through its square, so the gradient
    in it vanishes there. Among the 1000 fits of chapter 11's Monte Carlo study, a bounded
    search (in the units of ``_lbfgsb``) ended 19 times at a worse boundary point, which the
    probe of ``optimize_theta`` did not repair; the unbounded search, never. Unbounded, a step
    through 0 lands on the mirror image of a point inside, and a singular fit is an ordinary
    minimum at 0, approached quadratically (``_snap_to_boundary`` ends it there). A scalar term
    keeps its bound, which makes no such trouble (the probe handles a stop at 0) and saves
    evaluations in crossed designs.
    """
    return [(0.0, None) if s else (None, None) for s in _scalar_entries(design)]


def _scalar_entries(design: Design) -> np.ndarray:
    """Which entries of theta belong to a scalar term (p = 1)."""
    return np.concatenate([np.full(t.n_theta, t.p == 1) for t in design.terms])


def _lbfgsb(design: Design, cp: CrossProducts, reml: bool, start: np.ndarray):
    """L-BFGS-B with tight tolerances and ``_bounds``, stopped early when it stalls; the point
    found is returned with nonnegative diagonals (``canonical_theta``).

    The search runs on theta / ``design.theta_scale``, so that each entry is measured in the
    unit of its column of X_t: L-BFGS-B's first step has length 1 and then learns the curvature,
    and with a column such as years since 1978 (rms about 6) a unit step in theta overshoots
    far. This halves the evaluations of a random-slope model.

    At the optimum of a large model the last line search can spend a dozen evaluations on points
    within 1e-12 of the best one, whose criterion agrees to all printed digits. When two
    requests in a row are at rounding distance from the best point, each either within
    ``STALL_DISTANCE`` of it or with a criterion within ``STALL_CHANGE`` (relative) of its value,
    the search stops there and reports it: no point it could still find would differ by more
    than rounding error.
    """
    scale = design.theta_scale
    best = {"scaled": None, "fun": np.inf, "gradient": None, "near": 0, "nfev": 0, "radius": 0.0}

    def fun(scaled):
        # best["radius"]: how close to the best point counts as the same point
        close = best["scaled"] is not None and abs(scaled - best["scaled"]).max() <= best["radius"]
        if close and best["near"]:
            raise _Stalled
        value, gradient = criterion_and_gradient(scaled * scale, design, cp, reml)
        best["nfev"] += 1
        unchanged = (best["scaled"] is not None
                     and abs(value - best["fun"]) <= STALL_CHANGE * max(1.0, abs(best["fun"])))
        best["near"] = best["near"] + 1 if close or unchanged else 0
        if value < best["fun"]:
            best.update(scaled=scaled.copy(), fun=value, gradient=gradient,
                        radius=STALL_DISTANCE * max(1.0, abs(scaled).max()))
        if best["near"] >= 2:
            raise _Stalled
        return value, gradient * scale

    try:
        result = minimize(fun, start / scale, jac=True, method="L-BFGS-B", bounds=_bounds(design),
                          options={"ftol": FTOL, "gtol": 1e-8, "maxiter": 2000})
        success, message = result.success, result.message
        if success and result.fun > best["fun"]:
            # L-BFGS-B can report convergence at a trial point worse than its best one: a step
            # onto the bound of scalar thetas lands where the gradient vanishes (their squares
            # enter the criterion), the projected gradient there is 0, and it stops. The best
            # point is then no optimum: report that, and optimize_theta starts again from it.
            success, message = False, f"{message}, at a point worse than the best one evaluated"
    except _Stalled:
        success, message = True, "CONVERGENCE: the line search stalled within rounding distance of the best point"
    theta = best["scaled"] * scale
    x = canonical_theta(theta, design)
    # the gradient at x: the best point's, unless a template column changed sign on the way
    gradient = best["gradient"] if np.array_equal(x, theta) else None
    return OptimizeResult(x=x, fun=best["fun"], jac=gradient, success=success, nfev=best["nfev"],
                          message=message)


BOUNDARY_DISTANCE = 1e-4  # a diagonal entry this close to 0 (in its unit, theta_scale) counts as on the boundary


def _near_boundary(theta: np.ndarray, design: Design) -> np.ndarray:
    """Which entries of theta are diagonal entries within ``BOUNDARY_DISTANCE`` of 0, in their units."""
    return (design.theta_lower == 0) & (np.abs(theta) < BOUNDARY_DISTANCE * design.theta_scale)


def _snap_to_boundary(theta: np.ndarray, value: float, criterion, design: Design) -> tuple[np.ndarray, float]:
    """Set the diagonal entries within ``BOUNDARY_DISTANCE`` of 0 to exactly 0 unless the criterion
    increases beyond rounding: a singular fit reported as lme4 reports it, on the boundary."""
    near = _near_boundary(theta, design) & (theta != 0)
    if not near.any():
        return theta, value
    snapped = np.where(near, 0.0, theta)
    snapped_value = criterion(snapped)
    # at 1e-8 from a singular optimum the criterion differs from it by about 1e-16: rounding decides
    return (snapped, snapped_value) if snapped_value <= value + 1e-12 * abs(value) else (theta, value)


def _scaled_gradient(theta: np.ndarray, design: Design, cp: CrossProducts, reml: bool) -> float:
    """max |R^{-T} g| for the gradient g and R'R = H, the Hessian by central differences of g
    (``_hessian``); inf if H is not positive definite."""
    _, g = criterion_and_gradient(theta, design, cp, reml)
    H = _hessian(theta, g, np.ones(len(theta), dtype=bool), design, cp, reml, central=True)
    try:
        R = np.linalg.cholesky(H).T
    except np.linalg.LinAlgError:
        return np.inf
    return float(np.max(np.abs(np.linalg.solve(R.T, g))))


def em_step(theta: np.ndarray, design: Design, cp: CrossProducts) -> np.ndarray:
    r"""One step of the EM algorithm for the templates, from theta (Laird and Ware 1982; nlme's
    ``lme`` starts with 25 such iterations, Pinheiro and Bates 2000). It is the step for the
    likelihood (ML), taken as a start for REML too.

    Given y, the spherical random effects of level k of term t have mean :math:`\tilde u_k` and
    covariance :math:`\hat\sigma^2 G_{kk}`, with :math:`G = (L_\theta L_\theta^\top)^{-1}` and
    :math:`\hat\sigma^2 = r^2(\theta)/n` (the penalized least squares solution at theta, with
    beta at its estimate). With :math:`\sigma^2` held there, the M-step sets each term's
    relative covariance to the average of :math:`E(b_k b_k^\top \mid y)/\hat\sigma^2` over its
    :math:`l_t` levels:

    .. math::
        T_t^{\text{new}} T_t^{\text{new}\top} = T_t \Bigl(\frac{1}{l_t}\sum_k
            \bigl(\tilde u_k\tilde u_k^\top/\hat\sigma^2 + G_{kk}\bigr)\Bigr) T_t^\top,

    and theta takes the lower triangles of the new templates (Cholesky factors). With beta and
    sigma^2 then profiled again, the step cannot raise the profiled deviance d(theta) (it is a
    conditional maximization step of EM). A term whose new template is not finite and positive
    definite (one on the boundary, whose T T' is singular) keeps its old one. The step costs one
    factorization and the diagonal blocks of its inverse, about one evaluation of the gradient.
    """
    solution = pls(theta, design, cp)
    sigma2 = solution.factor.r2 / cp.n
    G11, G22 = inverse_blocks(solution.factor, cp)
    q1 = design.effect_slices[0].stop
    new = theta.copy()
    for i, (t, part, effects) in enumerate(zip(design.terms, design.theta_slices, design.effect_slices)):
        u = solution.u[effects].reshape(t.n_levels, t.p)
        if i == 0:
            G = G11
        else:  # the term's p_t x p_t diagonal blocks of G_22
            level = np.arange(effects.start - q1, effects.stop - q1).reshape(t.n_levels, t.p)
            G = G22[level[:, :, None], level[:, None, :]]
        T = t.template(theta[part])
        M = (u.T @ u / sigma2 + G.sum(axis=0)) / t.n_levels
        try:
            T_new = np.linalg.cholesky(T @ M @ T.T)
        except np.linalg.LinAlgError:
            continue
        if np.all(np.isfinite(T_new)):
            new[part] = T_new[t.lower]
    return new


@functools.cache
def _blas() -> ThreadpoolController:
    """The process's BLAS libraries, found once (a lookup costs about 0.2 ms; a limit 10 us)."""
    return ThreadpoolController()


def single_blas_thread():
    """Context manager: run the enclosed (small-matrix) linear algebra on one BLAS thread."""
    return _blas().limit(limits=1, user_api="blas")


def optimize_theta(design: Design, cp: CrossProducts, reml: bool,
                   start: np.ndarray | None = None) -> OptimizerResult:
    """Minimize the profiled criterion over theta, from ``start`` (default:
    each T_t diagonal with ``design.theta_scale``, i.e. lme4's T_t = I in the
    units of the columns of X_t, and for a large model, on the sparse path,
    one EM step from there: ``em_step``).

    L-BFGS-B with the analytic gradient (``criterion.criterion_and_gradient``),
    a template's entries unbounded (``_bounds``); a stop on the boundary is
    checked by probing inside, and a diagonal entry that ends next to 0 is set
    to 0 (``_snap_to_boundary``). Tolerances are tight so that the
    log-likelihood matches lme4's to 1e-6 or better.

    One BLAS thread: most evaluations work on small matrices, for which the
    synchronization of several threads costs more than it saves (a refit of
    this book's models is about three times faster single-threaded). For the
    largest model of the book (72,500 ratings, a dense block L_22 of order
    1114) two threads save 15-20% on an idle two-core machine, but take twice
    as long as one thread when one other process computes, and ten times as
    long under heavier load (``make benchmark``, "busy machine").
    """
    with single_blas_thread():
        lower, scale = design.theta_lower, design.theta_scale
        # evaluations of the criterion, with or without its gradient, in
        # every step below
        evaluations = 0
        if start is None:
            start = design.default_start
            if cp.schur is not None:
                # a large model: an evaluation costs a dense factor of order
                # q_2, and one EM step, at about that cost, brings the start
                # closer to the optimum than T_t = I (for three data sets of
                # 72,500 ratings, 26 to 40 evaluations became 17)
                start = em_step(start, design, cp)
                evaluations += 1
        else:
            start = canonical_theta(np.asarray(start, dtype=float), design)

        def criterion(theta: np.ndarray) -> float:
            nonlocal evaluations
            evaluations += 1
            return profiled_criterion(theta, design, cp, reml)

        def lbfgsb(start: np.ndarray) -> OptimizeResult:
            nonlocal evaluations
            run = _lbfgsb(design, cp, reml, start)
            evaluations += run.nfev
            return run

        result = lbfgsb(start)
        restarts = 0
        scalar = _scalar_entries(design)
        for _ in range(3):
            # A scalar term's theta, and the last diagonal entry of a
            # template, enter the criterion only through their squares, so
            # the gradient in them vanishes at 0: a bounded search can stop
            # there, and a search started there (a refit from a singular
            # fit's theta) never leaves. Probe inside (steps in the units
            # theta_scale) along each scalar theta that ends near 0 and each
            # diagonal entry of a template that ends exactly at 0, and
            # restart when the criterion drops.
            near = _near_boundary(result.x, design)
            at_zero = (lower == 0) & (result.x == 0)
            on_boundary = np.flatnonzero(np.where(scalar, near, at_zero))
            best_x, best_f = result.x, result.fun
            for j in on_boundary:
                for delta in (1e-3, 1e-2, 1e-1, 1.0):
                    x = result.x.copy()
                    x[j] = delta * scale[j]
                    value = criterion(x)
                    if value < best_f - 1e-10:
                        best_x, best_f = x, value
            if best_x is result.x:
                break
            again = lbfgsb(best_x)
            restarts += 1
            if again.fun >= result.fun:
                break
            result = again
        # a stalled line search usually recovers from a fresh start (a new
        # Hessian estimate)
        for _ in range(2):
            if result.success:
                break
            again = lbfgsb(result.x)
            restarts += 1
            if again.fun <= result.fun:
                result = again
        converged, message = bool(result.success), str(result.message)
        if not converged:
            # L-BFGS-B may stop with "ABNORMAL" when no line search can
            # improve on rounding error. Accept the point if its scaled
            # gradient R^{-T} g, with R'R = H (its Euclidean length is a
            # Newton step's length in the metric of H), is below 2e-3 in
            # every entry: a test modelled on lme4's check.conv.grad, which
            # tests max(pmin(|R^{-1} g|, |g|)) instead.
            scaled = _scaled_gradient(result.x, design, cp, reml)
            evaluations += 1 + 2 * len(result.x)
            if scaled < GRADIENT_TOLERANCE:
                converged = True
                message += (f" (scaled gradient {scaled:.1e}"
                            f" < {GRADIENT_TOLERANCE})")
        theta, value = _snap_to_boundary(result.x, float(result.fun),
                                         criterion, design)
        snapped = tuple(int(j) for j in
                        np.flatnonzero((theta == 0) & (result.x != 0)))
        return OptimizerResult(
            optimizer="L-BFGS-B (scipy.optimize.minimize)", start=start,
            theta=theta, criterion=value, converged=converged,
            message=message, n_evaluations=evaluations, restarts=restarts,
            snapped=snapped, gradient=None if snapped else result.jac)


# relative: a smaller eigenvalue of the Hessian (in the units of theta_scale) is a flat direction.
# Finite differences leave noise of about 1e-7 to 1e-5 of the largest eigenvalue in a truly flat
# direction (chapter 11's unidentified parameters), while identified directions sit above 1e-2
# there: 1e-4 keeps the verdict put when theta moves by 1e-6 (make test-portable).
IDENTIFIED_CURVATURE = 1e-4


def _hessian(theta: np.ndarray, gradient: np.ndarray, free: np.ndarray, design: Design, cp: CrossProducts,
             reml: bool, central: bool) -> np.ndarray:
    """The Hessian of the criterion in the ``free`` entries of theta, by differences of the analytic
    gradient (given at theta): forward, g(theta + h e_j) - g(theta), one evaluation a column and
    accurate to about h / |theta_j| = 1e-5 relative, or ``central``, two a column and accurate to
    about 1e-10; symmetrized."""
    columns = []
    for j in np.flatnonzero(free):
        h = 1e-5 * max(abs(theta[j]), 1e-2 * design.theta_scale[j])
        up = theta.copy()
        up[j] += h
        g_up = criterion_and_gradient(up, design, cp, reml)[1]
        if central:
            down = theta.copy()
            down[j] -= h
            columns.append((g_up - criterion_and_gradient(down, design, cp, reml)[1])[free] / (2 * h))
        else:
            columns.append((g_up - gradient)[free] / h)
    H = np.array(columns)
    return 0.5 * (H + H.T)


def lme4_gradient_check(theta: np.ndarray, design: Design, cp: CrossProducts, reml: bool,
                        gradient: np.ndarray | None = None) -> float | None:
    """lme4's convergence test (``check.conv.grad``): max over the free entries of theta of
    min(|R^{-1} g|, |g|), with g the criterion's gradient (``gradient`` if given, as the
    optimizer's record keeps it, else evaluated) and R'R = H its Hessian (by differences of the
    analytic gradient, ``_hessian``). Entries held at their bound of 0 are not free.

    None when H is not clearly positive definite: an eigenvalue of H in the units of
    ``design.theta_scale`` at or below ``IDENTIFIED_CURVATURE`` times the largest (a direction
    in which the criterion is flat, so that no scaled gradient is defined; lme4 says "unable to
    evaluate scaled gradient" or "Hessian is numerically singular"). The relative threshold
    keeps rounding noise in a flat direction from deciding the answer; a direction that flat is
    at best weakly identified (its standard error 100 times the best one's, in scaled units).

    Forward differences decide every clear case; when the smallest relative eigenvalue is below
    100 times the threshold, or the scaled gradient within a factor 2 of ``GRADIENT_TOLERANCE``,
    central differences decide, so that the error of forward differences (about 1e-5 relative)
    does not decide a close verdict. A verdict on a criterion whose curvature is at the level of
    its rounding noise (a variance ratio of 1e12, say) is decided by that noise either way."""
    free = ~((design.theta_lower == 0) & (theta == 0))
    if not free.any():
        return 0.0
    g = criterion_and_gradient(theta, design, cp, reml)[1] if gradient is None else gradient
    scale = design.theta_scale[free]
    for central in (False, True):
        H = _hessian(theta, g, free, design, cp, reml, central)
        curvatures = np.linalg.eigvalsh(H * np.outer(scale, scale))
        identified = curvatures[0] > IDENTIFIED_CURVATURE * curvatures[-1]
        scaled = np.nan
        if identified:
            R = np.linalg.cholesky(H).T
            scaled = float(np.max(np.minimum(np.abs(np.linalg.solve(R, g[free])), np.abs(g[free]))))
        clear = (curvatures[0] > 100 * IDENTIFIED_CURVATURE * curvatures[-1]
                 and not 0.5 * GRADIENT_TOLERANCE < scaled < 2 * GRADIENT_TOLERANCE)
        if clear:
            break
    return scaled if identified else None
