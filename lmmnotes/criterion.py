r"""The penalized least squares step and the profiled criterion (Bates et al. 2015, sec. 3).

With spherical random effects :math:`u` (:math:`b = \Lambda_\theta u`), the conditional mode of
:math:`u` and the estimate of :math:`\beta` for a given :math:`\theta` solve

.. math::
    \begin{bmatrix} \Lambda^\top Z^\top Z \Lambda + I & \Lambda^\top Z^\top X \\
                    X^\top Z \Lambda & X^\top X \end{bmatrix}
    \begin{bmatrix} u \\ \beta \end{bmatrix}
    = \begin{bmatrix} \Lambda^\top Z^\top y \\ X^\top y \end{bmatrix},

whose blocked Cholesky factor is

.. math::
    L_\theta L_\theta^\top = \Lambda^\top Z^\top Z \Lambda + I, \quad
    L_\theta R_{ZX} = \Lambda^\top Z^\top X, \quad
    R_X^\top R_X = X^\top X - R_{ZX}^\top R_{ZX}.

With :math:`c_u = L_\theta^{-1}\Lambda^\top Z^\top y` and
:math:`c_\beta = R_X^{-\top}(X^\top y - R_{ZX}^\top c_u)`, the estimates are
:math:`\hat\beta = R_X^{-1} c_\beta`, :math:`\tilde u = L_\theta^{-\top}(c_u - R_{ZX}\hat\beta)`, and the
penalized residual sum of squares is :math:`r^2(\theta) = y^\top y - \|c_u\|^2 - \|c_\beta\|^2`.
The profiled deviance (ML) and REML criterion are

.. math::
    d(\theta) = \log|L_\theta|^2 + n\left[1 + \log\frac{2\pi r^2(\theta)}{n}\right], \qquad
    d_R(\theta) = \log|L_\theta|^2 + \log|R_X|^2 + (n-p)\left[1 + \log\frac{2\pi r^2(\theta)}{n-p}\right].

The gradient (:func:`criterion_and_gradient`) needs no more than the same factorization. With
:math:`A = L_\theta L_\theta^\top` and :math:`E_i = \partial\Lambda/\partial\theta_i` (the
positions that hold :math:`\theta_i`), by the envelope theorem for the penalized least squares
problem and Jacobi's formula,

.. math::
    \frac{\partial r^2}{\partial\theta_i} = -2\,(Z^\top e)^\top E_i \tilde u, \quad
    \frac{\partial \log|A|}{\partial\theta_i} = 2\operatorname{tr}(E_i^\top Z^\top Z\Lambda A^{-1}), \quad
    \frac{\partial \log|R_X|^2}{\partial\theta_i} = -2\operatorname{tr}(E_i^\top W (R_X^\top R_X)^{-1} W^\top\Lambda),

with :math:`e = y - X\hat\beta - Z\Lambda\tilde u` and :math:`W = Z^\top X - Z^\top Z\Lambda A^{-1}\Lambda^\top Z^\top X`
(:math:`= Z^\top V^{-1} X` for :math:`V = I + Z\Lambda\Lambda^\top Z^\top`).

Only cross-products of ``[Z X y]`` are needed, computed once in :class:`CrossProducts`; no
n x n matrix is ever formed. With one random-effects term, :math:`Z^\top Z` is block diagonal
(one :math:`p \times p` block per level) and every step is a batch of tiny dense operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg.lapack import dpotrf, dtrtrs

from .design import Design


def _Zt_times(design: Design, v: np.ndarray, blocked: bool) -> np.ndarray:
    """Z'v: per level (l, p) for a single term, else a flat (q,) vector."""
    if blocked:
        t = design.terms[0]
        out = np.zeros((t.n_levels, t.p))
        np.add.at(out, t.codes, t.X * v[:, None])
        return out
    return np.asarray(design.Z().T @ v)


@dataclass(frozen=True)
class CrossProducts:
    """Z'Z, Z'X, Z'y, X'X, X'y and y'y for a design.

    ``blocked`` is True for a single random-effects term: then ``ZtZ`` has shape (l, p, p),
    ``ZtX`` (l, p, P) and ``Zty`` (l, p); otherwise they are dense (q, q), (q, P) and (q,).
    """

    blocked: bool
    ZtZ: np.ndarray
    ZtX: np.ndarray
    Zty: np.ndarray
    XtX: np.ndarray
    Xty: np.ndarray
    yty: float
    n: int
    p: int

    @classmethod
    def from_design(cls, design: Design, y: np.ndarray | None = None) -> "CrossProducts":
        y = design.y if y is None else y
        X = design.X
        if len(design.terms) == 1:
            t = design.terms[0]
            l, codes, Xt = t.n_levels, t.codes, t.X
            # sum over the rows of each level of outer products, by np.add.at on the level codes
            ZtZ = np.zeros((l, t.p, t.p))
            np.add.at(ZtZ, codes, Xt[:, :, None] * Xt[:, None, :])
            ZtX = np.zeros((l, t.p, X.shape[1]))
            np.add.at(ZtX, codes, Xt[:, :, None] * X[:, None, :])
            blocked = True
        else:
            Z = design.Z()
            ZtZ = (Z.T @ Z).toarray()
            ZtX = np.asarray(Z.T @ X)
            blocked = False
        Zty = _Zt_times(design, y, blocked)
        return cls(blocked, ZtZ, ZtX, Zty, X.T @ X, X.T @ y, float(y @ y), len(y), X.shape[1])

    def with_response(self, design: Design, y: np.ndarray) -> "CrossProducts":
        """The same cross-products for a new response: only Z'y, X'y and y'y change."""
        Zty = _Zt_times(design, y, self.blocked)
        return CrossProducts(self.blocked, self.ZtZ, self.ZtX, Zty, self.XtX, design.X.T @ y, float(y @ y), self.n, self.p)


@dataclass(frozen=True)
class PlsSolution:
    """The solution of the penalized least squares problem at one theta."""

    theta: np.ndarray
    logdet_L2: float  # log |L_theta|^2
    logdet_RX2: float  # log |R_X|^2
    r2: float
    beta: np.ndarray
    u: np.ndarray  # spherical random effects, level by level within each term
    R_X: np.ndarray
    L: np.ndarray  # (l, p, p) blocks or a dense (q, q) lower-triangular factor


def _cholesky_blocks(A: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of a stack of small p x p matrices, shape (l, p, p).

    A loop over the p columns with every operation vectorized over the l levels: for the
    tiny blocks of a single random-effects term this is much faster than l LAPACK calls.
    """
    p = A.shape[1]
    L = np.zeros_like(A)
    for j in range(p):
        L[:, j, j] = np.sqrt(A[:, j, j] - np.sum(L[:, j, :j] ** 2, axis=1))
        for i in range(j + 1, p):
            L[:, i, j] = (A[:, i, j] - np.sum(L[:, i, :j] * L[:, j, :j], axis=1)) / L[:, j, j]
    return L


def _solve_blocks(L: np.ndarray, B: np.ndarray, transpose: bool = False) -> np.ndarray:
    """Solve L_k x_k = B_k (or L_k' x_k = B_k) for every level k; L (l, p, p), B (l, p, m)."""
    p = L.shape[1]
    x = np.empty_like(B)
    order = range(p - 1, -1, -1) if transpose else range(p)
    for i in order:
        done = range(i + 1, p) if transpose else range(i)
        acc = B[:, i, :].copy()
        for k in done:
            acc -= (L[:, k, i] if transpose else L[:, i, k])[:, None] * x[:, k, :]
        x[:, i, :] = acc / L[:, i, i][:, None]
    return x


def _trsolve(R: np.ndarray, b: np.ndarray, **kwargs) -> np.ndarray:
    """Triangular solve by LAPACK; an empty system (no fixed effects) has an empty solution."""
    return dtrtrs(R, b, **kwargs)[0] if R.size else np.zeros_like(b)


def _lambda_dense(theta: np.ndarray, design: Design) -> np.ndarray:
    """Lambda_theta as a dense q x q array, filled through the index map ``design.lambda_index``."""
    rows, cols, which = design.lambda_index
    Lam = np.zeros((design.q, design.q))
    Lam[rows, cols] = theta[which]
    return Lam


@dataclass(frozen=True)
class _Factor:
    """The blocked Cholesky factor at one theta, with c_u, c_beta and r^2."""

    L: np.ndarray
    RZX: np.ndarray  # (q, P)
    R_X: np.ndarray
    cu: np.ndarray  # (q,)
    c_beta: np.ndarray
    logdet_L2: float
    logdet_RX2: float
    r2: float


def _factorize(theta: np.ndarray, design: Design, cp: CrossProducts) -> _Factor:
    """L_theta, R_ZX and R_X (module docstring), and r^2(theta) = y'y - |c_u|^2 - |c_beta|^2."""
    if cp.blocked:
        T = design.terms[0].template(theta)
        A = T.T @ cp.ZtZ @ T + np.eye(T.shape[0])  # Lambda' Z'Z Lambda + I, level by level: (l, p, p)
        L = _cholesky_blocks(A)
        logdet_L2 = 2.0 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum()
        cu = _solve_blocks(L, (cp.Zty @ T)[:, :, None]).ravel()
        RZX = _solve_blocks(L, T.T @ cp.ZtX).reshape(L.shape[0] * L.shape[1], cp.p)
    else:
        Lam = _lambda_dense(theta, design)
        A = Lam.T @ cp.ZtZ @ Lam + np.eye(design.q)
        L, info = dpotrf(A, lower=1, clean=1)
        if info != 0:
            raise np.linalg.LinAlgError("Lambda' Z'Z Lambda + I is not positive definite")
        logdet_L2 = 2.0 * np.log(np.diag(L)).sum()
        cu = dtrtrs(L, Lam.T @ cp.Zty, lower=1)[0]
        RZX = dtrtrs(L, Lam.T @ cp.ZtX, lower=1)[0]
    R_X, info = dpotrf(cp.XtX - RZX.T @ RZX, lower=0, clean=1) if cp.p else (np.zeros((0, 0)), 0)
    if info != 0:
        raise np.linalg.LinAlgError("X'X - R_ZX'R_ZX is not positive definite: X is rank deficient")
    c_beta = _trsolve(R_X, cp.Xty - RZX.T @ cu, lower=0, trans=1)
    r2 = max(cp.yty - cu @ cu - c_beta @ c_beta, np.finfo(float).tiny)
    logdet_RX2 = 2.0 * np.log(np.abs(np.diag(R_X))).sum()
    return _Factor(L, RZX, R_X, cu, c_beta, float(logdet_L2), float(logdet_RX2), float(r2))


def pls(theta: np.ndarray, design: Design, cp: CrossProducts) -> PlsSolution:
    """Solve the penalized least squares problem for ``theta``: beta-hat and u-tilde (module docstring)."""
    theta = np.atleast_1d(np.asarray(theta, dtype=float))
    f = _factorize(theta, design, cp)
    beta = _trsolve(f.R_X, f.c_beta, lower=0)
    rhs = f.cu - f.RZX @ beta
    if cp.blocked:
        u = _solve_blocks(f.L, rhs.reshape(f.L.shape[0], -1, 1), transpose=True).ravel()
    else:
        u = dtrtrs(f.L, rhs, lower=1, trans=1)[0]
    return PlsSolution(theta, f.logdet_L2, f.logdet_RX2, f.r2, beta, u, f.R_X, f.L)


def _criterion(f: "_Factor | PlsSolution", n: int, p: int, reml: bool) -> float:
    """d(theta) or d_R(theta) from the log-determinants and r^2 (module docstring)."""
    if reml:
        dof = n - p
        return f.logdet_L2 + f.logdet_RX2 + dof * (1.0 + np.log(2.0 * np.pi * f.r2 / dof))
    return f.logdet_L2 + n * (1.0 + np.log(2.0 * np.pi * f.r2 / n))


def deviance_from_pls(sol: PlsSolution, n: int, p: int, reml: bool) -> float:
    """The profiled deviance d(theta) (ML) or REML criterion d_R(theta) from a PLS solution."""
    return float(_criterion(sol, n, p, reml))


def profiled_criterion(theta: np.ndarray, design: Design, cp: CrossProducts, reml: bool) -> float:
    """The objective minimized over theta: d_R(theta) if ``reml`` else d(theta)."""
    theta = np.atleast_1d(np.asarray(theta, dtype=float))
    return float(_criterion(_factorize(theta, design, cp), cp.n, cp.p, reml))


def _pattern_sum(M: np.ndarray, design: Design, blocked: bool) -> np.ndarray:
    """tr(E_i' M) for every theta_i: the sum of M over the positions of Lambda that hold theta_i.

    ``M`` is (l, p, p) level blocks for a single term, else a dense (q, q) matrix.
    """
    if blocked:
        rows, cols = design.terms[0]._lower
        return M.sum(axis=0)[rows, cols]
    rows, cols, which = design.lambda_index
    return np.bincount(which, weights=M[rows, cols], minlength=len(design.theta_lower))


def criterion_and_gradient(theta: np.ndarray, design: Design, cp: CrossProducts, reml: bool) -> tuple[float, np.ndarray]:
    """The profiled criterion and its gradient in theta (formulas in the module docstring)."""
    theta = np.atleast_1d(np.asarray(theta, dtype=float))
    f = _factorize(theta, design, cp)
    beta = _trsolve(f.R_X, f.c_beta, lower=0)
    rhs = f.cu - f.RZX @ beta
    R_inv = _trsolve(f.R_X, np.eye(cp.p), lower=0)
    Phi = R_inv @ R_inv.T  # (R_X' R_X)^{-1}
    if cp.blocked:
        T = design.terms[0].template(theta)
        l, pt = f.L.shape[0], f.L.shape[1]
        u = _solve_blocks(f.L, rhs.reshape(l, pt, 1), transpose=True)[:, :, 0]
        L_inv = np.linalg.inv(f.L)
        A_inv = np.swapaxes(L_inv, 1, 2) @ L_inv
        M = cp.ZtZ @ T @ A_inv  # Z'Z Lambda A^{-1}, level by level
        Zte = cp.Zty - cp.ZtX @ beta - (cp.ZtZ @ (u @ T.T)[:, :, None])[:, :, 0]
        d_r2 = -2.0 * _pattern_sum(Zte[:, :, None] * u[:, None, :], design, True)
        d_logdet = 2.0 * _pattern_sum(M, design, True)
        if reml:
            W = cp.ZtX - M @ T.T @ cp.ZtX
            d_logdet_RX = -2.0 * _pattern_sum(W @ Phi @ np.swapaxes(W, 1, 2) @ T, design, True)
    else:
        Lam = _lambda_dense(theta, design)
        u = dtrtrs(f.L, rhs, lower=1, trans=1)[0]
        L_inv = dtrtrs(f.L, np.eye(design.q), lower=1)[0]
        M = cp.ZtZ @ Lam @ (L_inv.T @ L_inv)
        Zte = cp.Zty - cp.ZtX @ beta - cp.ZtZ @ (Lam @ u)
        d_r2 = -2.0 * _pattern_sum(np.outer(Zte, u), design, False)
        d_logdet = 2.0 * _pattern_sum(M, design, False)
        if reml:
            W = cp.ZtX - M @ Lam.T @ cp.ZtX
            d_logdet_RX = -2.0 * _pattern_sum(W @ Phi @ W.T @ Lam, design, False)
    dof = cp.n - cp.p if reml else cp.n
    gradient = d_logdet + dof * d_r2 / f.r2
    if reml:
        gradient = gradient + d_logdet_RX
    return float(_criterion(f, cp.n, cp.p, reml)), gradient
