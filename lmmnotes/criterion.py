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
n x n matrix is ever formed. The first random-effects term (the one with most levels, as lme4
orders them) has a block-diagonal :math:`Z_1^\top Z_1`, one :math:`p_1 \times p_1` block per level, so
:math:`L_\theta` is computed in two blocks,

.. math::
    L_\theta = \begin{bmatrix} L_{11} & 0 \\ L_{21} & L_{22} \end{bmatrix}, \quad
    L_{11}L_{11}^\top = A_{11}, \quad L_{21} = A_{21}L_{11}^{-\top}, \quad
    L_{22}L_{22}^\top = A_{22} - L_{21}L_{21}^\top,

where :math:`A = \Lambda^\top Z^\top Z\Lambda + I` is split after the first term: :math:`L_{11}` is a
batch of tiny :math:`p_1 \times p_1` factors, and only the remaining terms (usually far fewer random
effects) need a dense factor :math:`L_{22}`. With a single term the second block is empty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg.lapack import dpotrf, dtrtrs

from .design import Design


@dataclass(frozen=True)
class CrossProducts:
    """Cross-products of [Z X y], split after the first random-effects term.

    Term 1 has l_1 levels of p_1 random effects; the other terms have q_2 random effects in all.
    ``Z1Z1`` (l_1, p_1, p_1), ``Z1X`` (l_1, p_1, P) and ``Z1y`` (l_1, p_1) hold the first term's
    blocks level by level; ``Z2Z1`` (q_2, l_1, p_1), ``Z2Z2`` (q_2, q_2), ``Z2X`` (q_2, P) and
    ``Z2y`` (q_2,) the rest (empty with a single term).
    """

    Z1Z1: np.ndarray
    Z1X: np.ndarray
    Z1y: np.ndarray
    Z2Z1: np.ndarray
    Z2Z2: np.ndarray
    Z2X: np.ndarray
    Z2y: np.ndarray
    XtX: np.ndarray
    Xty: np.ndarray
    yty: float
    n: int
    p: int
    gamma: np.ndarray  # the response is stored as y - X gamma (module docstring of CrossProducts)

    @property
    def q2(self) -> int:
        return self.Z2Z2.shape[0]

    @classmethod
    def from_design(cls, design: Design, y: np.ndarray | None = None) -> "CrossProducts":
        y = design.y if y is None else y
        X = design.X
        t = design.terms[0]
        l1, p1, codes, Xt = t.n_levels, t.p, t.codes, t.X
        # sums over the rows of each level of outer products, by np.add.at on the level codes
        Z1Z1 = np.zeros((l1, p1, p1))
        np.add.at(Z1Z1, codes, Xt[:, :, None] * Xt[:, None, :])
        Z1X = np.zeros((l1, p1, X.shape[1]))
        np.add.at(Z1X, codes, Xt[:, :, None] * X[:, None, :])
        Z2 = design.Z()[:, l1 * p1:]
        q2 = Z2.shape[1]
        Z2Z1 = np.zeros((q2, l1, p1))
        if q2:
            Z1 = design.Z()[:, :l1 * p1]
            Z2Z1 = (Z2.T @ Z1).toarray().reshape(q2, l1, p1)
        Z2Z2 = (Z2.T @ Z2).toarray()
        Z2X = np.asarray(Z2.T @ X)
        empty = np.zeros(0)
        base = cls(Z1Z1, Z1X, empty, Z2Z1, Z2Z2, Z2X, empty, X.T @ X, empty, 0.0, len(y), X.shape[1], empty)
        return base.with_response(design, y)

    def with_response(self, design: Design, y: np.ndarray) -> "CrossProducts":
        """The same cross-products for a new response: only those with y change.

        The response is stored as its least-squares residual y - X gamma. The penalized least
        squares problem for it has the same u-tilde and r^2 and the estimate beta-hat - gamma,
        and r^2 = y'y - |c_u|^2 - |c_beta|^2 is then a difference of numbers of the size of the
        residuals, not of y itself: without this, a response with a large mean (pulp's
        brightness is about 60) loses about five digits of r^2 to cancellation.
        """
        X = design.X
        gamma = np.linalg.lstsq(X, y, rcond=None)[0] if X.shape[1] else np.zeros(0)
        resid = y - X @ gamma
        Z1y, Z2y = _Zt_times(design, resid)
        return CrossProducts(self.Z1Z1, self.Z1X, Z1y, self.Z2Z1, self.Z2Z2, self.Z2X, Z2y, self.XtX,
                             X.T @ resid, float(resid @ resid), self.n, self.p, gamma)

    def with_offset(self, j: int, value: float) -> "CrossProducts":
        """Cross-products of the model without fixed effect j, for the response y - value * x_j.

        With y = r + X gamma stored as r, the new response is r + X_{-j} gamma_{-j} + (gamma_j - value) x_j:
        it is stored as r + (gamma_j - value) x_j with gamma_{-j}.
        """
        keep = [k for k in range(self.p) if k != j]
        c = self.gamma[j] - value
        return CrossProducts(
            self.Z1Z1, self.Z1X[..., keep], self.Z1y + c * self.Z1X[..., j], self.Z2Z1, self.Z2Z2,
            self.Z2X[:, keep], self.Z2y + c * self.Z2X[:, j], self.XtX[np.ix_(keep, keep)],
            self.Xty[keep] + c * self.XtX[keep, j],
            self.yty + 2 * c * self.Xty[j] + c**2 * self.XtX[j, j], self.n, self.p - 1, self.gamma[keep])


def _Zt_times(design: Design, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Z'v split as the first term's (l_1, p_1) blocks and the other terms' (q_2,) vector."""
    t = design.terms[0]
    first = np.zeros((t.n_levels, t.p))
    np.add.at(first, t.codes, t.X * v[:, None])
    rest = np.asarray(design.Z()[:, t.n_levels * t.p:].T @ v) if len(design.terms) > 1 else np.zeros(0)
    return first, rest


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
    L11: np.ndarray  # (l_1, p_1, p_1) lower-triangular blocks
    L21: np.ndarray  # (q_2, l_1, p_1)
    L22: np.ndarray  # (q_2, q_2) lower triangular
    L11_inv: np.ndarray  # the inverses of the L11 blocks

    @property
    def L(self) -> np.ndarray:
        """L_theta as one dense q x q lower-triangular matrix (for display; the code uses the blocks)."""
        l1, p1 = self.L11.shape[:2]
        q1, q2 = l1 * p1, self.L22.shape[0]
        L = np.zeros((q1 + q2, q1 + q2))
        for k in range(l1):
            L[k * p1:(k + 1) * p1, k * p1:(k + 1) * p1] = self.L11[k]
        L[q1:, :q1] = self.L21.reshape(q2, q1)
        L[q1:, q1:] = self.L22
        return L


def _cholesky_blocks(A: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of a stack of small p x p matrices, shape (l, p, p).

    A loop over the p columns with every operation vectorized over the l levels: for the
    tiny blocks of a random-effects term this is much faster than l LAPACK calls.
    """
    p = A.shape[1]
    L = np.zeros_like(A)
    for j in range(p):
        L[:, j, j] = np.sqrt(A[:, j, j] - np.sum(L[:, j, :j] ** 2, axis=1))
        for i in range(j + 1, p):
            L[:, i, j] = (A[:, i, j] - np.sum(L[:, i, :j] * L[:, j, :j], axis=1)) / L[:, j, j]
    return L


def _invert_lower_blocks(L: np.ndarray) -> np.ndarray:
    """Inverses of a stack of lower-triangular p x p blocks, column by column, vectorized over levels."""
    p = L.shape[1]
    inv = np.zeros_like(L)
    for j in range(p):
        inv[:, j, j] = 1.0 / L[:, j, j]
        for i in range(j + 1, p):
            inv[:, i, j] = -np.sum(L[:, i, j:i] * inv[:, j:i, j], axis=1) / L[:, i, i]
    return inv


def _trsolve(R: np.ndarray, b: np.ndarray, **kwargs) -> np.ndarray:
    """Triangular solve by LAPACK; an empty system has an empty solution."""
    return dtrtrs(R, b, **kwargs)[0] if R.size else np.zeros_like(b)


def _lambda_rest(theta: np.ndarray, design: Design) -> np.ndarray:
    """Lambda_2, the block of Lambda_theta for the terms after the first, as a dense (q_2, q_2) array."""
    rows, cols, which = _rest_index(design)
    q1 = design.terms[0].n_levels * design.terms[0].p
    Lam = np.zeros((design.q - q1, design.q - q1))
    Lam[rows, cols] = theta[which]
    return Lam


def _rest_index(design: Design) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """design.lambda_index restricted to the terms after the first, with rows/columns from 0."""
    rows, cols, which = design.lambda_index
    q1 = design.terms[0].n_levels * design.terms[0].p
    keep = rows >= q1
    return rows[keep] - q1, cols[keep] - q1, which[keep]


@dataclass(frozen=True)
class _Factor:
    """The blocked Cholesky factor at one theta, with c_u, c_beta and r^2."""

    T1: np.ndarray  # the first term's template
    Lam2: np.ndarray  # Lambda for the other terms
    L11: np.ndarray
    L21: np.ndarray
    L22: np.ndarray
    L11_inv: np.ndarray  # inverses of the tiny L11 blocks: triangular solves become batched products
    RZX: np.ndarray  # (q, P): the first term's rows level by level, then the rest
    R_X: np.ndarray
    cu: np.ndarray  # (q,)
    c_beta: np.ndarray
    logdet_L2: float
    logdet_RX2: float
    r2: float


def _lower_solve(f: "_Factor | PlsSolution", B1: np.ndarray, B2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve L_theta x = [B1; B2] with B1 (l_1, p_1, m), B2 (q_2, m): forward substitution by blocks."""
    x1 = f.L11_inv @ B1
    if not f.L22.size:
        return x1, B2
    q1 = x1.shape[0] * x1.shape[1]
    rhs2 = B2 - f.L21.reshape(f.L22.shape[0], q1) @ x1.reshape(q1, B1.shape[2])
    return x1, _trsolve(f.L22, rhs2, lower=1)


def _upper_solve(f: "_Factor | PlsSolution", B1: np.ndarray, B2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve L_theta' x = [B1; B2]: back substitution by blocks (the second block first)."""
    x2 = _trsolve(f.L22, B2, lower=1, trans=1) if f.L22.size else B2
    if f.L22.size:
        B1 = B1 - np.einsum("qkp,qm->kpm", f.L21, x2)
    return np.swapaxes(f.L11_inv, 1, 2) @ B1, x2


def _factorize(theta: np.ndarray, design: Design, cp: CrossProducts) -> _Factor:
    """L_theta (two blocks, module docstring), R_ZX and R_X, and r^2(theta) = y'y - |c_u|^2 - |c_beta|^2."""
    t = design.terms[0]
    T1 = t.template(theta[design.theta_slices[0]])
    L11 = _cholesky_blocks(T1.T @ cp.Z1Z1 @ T1 + np.eye(t.p))  # A_11, level by level
    L11_inv = _invert_lower_blocks(L11)
    Lam2 = _lambda_rest(theta, design) if cp.q2 else np.zeros((0, 0))
    L21 = np.zeros((0, t.n_levels, t.p))
    L22 = np.zeros((0, 0))
    if cp.q2:
        # Lambda_2' Z_2'Z_1 (I x T_1), as two matrix products (a three-operand einsum without a
        # contraction path loops over all five indices at once: 400 times slower at q_2 = 80)
        A21 = (Lam2.T @ cp.Z2Z1.reshape(cp.q2, -1)).reshape(cp.Z2Z1.shape) @ T1
        L21 = (np.swapaxes(A21, 0, 1) @ np.swapaxes(L11_inv, 1, 2)).swapaxes(0, 1)  # A_21 L_11^{-T}, level by level
        flat = L21.reshape(cp.q2, -1)
        L22, info = dpotrf(Lam2.T @ cp.Z2Z2 @ Lam2 + np.eye(cp.q2) - flat @ flat.T, lower=1, clean=1)
        if info != 0:
            raise np.linalg.LinAlgError("Lambda' Z'Z Lambda + I is not positive definite")
    f0 = _Factor(T1, Lam2, L11, L21, L22, L11_inv, None, None, None, None, 0.0, 0.0, 0.0)
    cu1, cu2 = _lower_solve(f0, (cp.Z1y @ T1)[:, :, None], (Lam2.T @ cp.Z2y)[:, None])
    R1, R2 = _lower_solve(f0, T1.T @ cp.Z1X, Lam2.T @ cp.Z2X)
    cu = np.concatenate([cu1.ravel(), cu2.ravel()])
    RZX = np.vstack([R1.reshape(t.n_levels * t.p, cp.p), R2])
    R_X, info = dpotrf(cp.XtX - RZX.T @ RZX, lower=0, clean=1) if cp.p else (np.zeros((0, 0)), 0)
    if info != 0:
        raise np.linalg.LinAlgError("X'X - R_ZX'R_ZX is not positive definite: X is rank deficient")
    c_beta = _trsolve(R_X, cp.Xty - RZX.T @ cu, lower=0, trans=1)
    r2 = max(cp.yty - cu @ cu - c_beta @ c_beta, np.finfo(float).tiny)
    logdet_L2 = 2.0 * (np.log(np.diagonal(L11, axis1=1, axis2=2)).sum() + np.log(np.diag(L22)).sum())
    logdet_RX2 = 2.0 * np.log(np.abs(np.diag(R_X))).sum()
    return _Factor(T1, Lam2, L11, L21, L22, L11_inv, RZX, R_X, cu, c_beta, float(logdet_L2), float(logdet_RX2),
                   float(r2))


def _split(v: np.ndarray, design: Design) -> tuple[np.ndarray, np.ndarray]:
    """A q-vector (or q x m matrix) as the first term's (l_1, p_1, ...) blocks and the rest."""
    t = design.terms[0]
    q1 = t.n_levels * t.p
    return v[:q1].reshape(t.n_levels, t.p, *v.shape[1:]), v[q1:]


def _estimates(f: _Factor, design: Design, p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """beta-hat - gamma = R_X^{-1} c_beta and u-tilde = L_theta^{-T}(c_u - R_ZX (beta-hat - gamma)), u as (blocks, rest)."""
    beta = _trsolve(f.R_X, f.c_beta, lower=0)
    r1, r2 = _split(f.cu - f.RZX @ beta, design)
    u1, u2 = _upper_solve(f, r1[:, :, None], r2[:, None])
    return beta, u1[:, :, 0], u2[:, 0]


def pls(theta: np.ndarray, design: Design, cp: CrossProducts) -> PlsSolution:
    """Solve the penalized least squares problem for ``theta``: beta-hat and u-tilde (module docstring)."""
    theta = np.atleast_1d(np.asarray(theta, dtype=float))
    f = _factorize(theta, design, cp)
    beta, u1, u2 = _estimates(f, design, cp.p)
    return PlsSolution(theta, f.logdet_L2, f.logdet_RX2, f.r2, beta + cp.gamma, np.concatenate([u1.ravel(), u2]), f.R_X,
                       f.L11, f.L21, f.L22, f.L11_inv)


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


# ---- A^{-1} by blocks, and the gradient ------------------------------------------------------------
def inverse_blocks(f: "_Factor | PlsSolution") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""The blocks of :math:`G = A^{-1} = (L_\theta L_\theta^\top)^{-1}` that the gradient and the
    conditional variances need: the diagonal blocks :math:`G_{11,kk}` (l_1, p_1, p_1), the
    off-diagonal block :math:`G_{21}` (q_2, l_1, p_1) and :math:`G_{22}` (q_2, q_2). With
    :math:`B = L_{21}L_{11}^{-1} = A_{21}A_{11}^{-1}`,
    :math:`G_{22} = (L_{22}L_{22}^\top)^{-1}`, :math:`G_{21} = -G_{22}B` and
    :math:`G_{11,kk} = A_{11,k}^{-1} + B_k^\top G_{22} B_k`.
    """
    L11_inv = f.L11_inv
    G11 = np.swapaxes(L11_inv, 1, 2) @ L11_inv
    q2 = f.L22.shape[0]
    if not q2:
        return G11, np.zeros((0,) + G11.shape[:2]), np.zeros((0, 0))
    L22_inv = _trsolve(f.L22, np.eye(q2), lower=1)
    G22 = L22_inv.T @ L22_inv
    B = (np.swapaxes(f.L21, 0, 1) @ L11_inv).swapaxes(0, 1)  # L_21 L_11^{-1}, level by level
    G21 = -(G22 @ B.reshape(q2, -1)).reshape(B.shape)
    G11 = G11 - np.einsum("qkp,qks->kps", B, G21)
    return G11, G21, G22


def _pattern_sums(M11: np.ndarray, M22: np.ndarray, design: Design) -> np.ndarray:
    """tr(E_i' M) for every theta_i: the sum of M over the positions of Lambda that hold theta_i.

    Only the diagonal blocks of M are needed: M11 (l_1, p_1, p_1) for the first term and the
    dense M22 (q_2, q_2) for the others.
    """
    out = np.zeros(len(design.theta_lower))
    t = design.terms[0]
    rows, cols = t._lower
    out[design.theta_slices[0]] = M11.sum(axis=0)[rows, cols]
    if M22.size:
        r, c, which = _rest_index(design)
        out += np.bincount(which, weights=M22[r, c], minlength=len(out))
    return out


def _ZtZ_times(cp: CrossProducts, v1: np.ndarray, v2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Z'Z v for v = [v1 (l_1, p_1, m); v2 (q_2, m)], as blocks."""
    out1 = cp.Z1Z1 @ v1
    if not cp.q2:
        return out1, np.zeros((0, v1.shape[2]))
    q1 = v1.shape[0] * v1.shape[1]
    out2 = cp.Z2Z1.reshape(cp.q2, q1) @ v1.reshape(q1, v1.shape[2]) + cp.Z2Z2 @ v2
    return out1 + np.einsum("qkp,qm->kpm", cp.Z2Z1, v2), out2


def criterion_and_gradient(theta: np.ndarray, design: Design, cp: CrossProducts, reml: bool) -> tuple[float, np.ndarray]:
    """The profiled criterion and its gradient in theta (formulas in the module docstring)."""
    theta = np.atleast_1d(np.asarray(theta, dtype=float))
    f = _factorize(theta, design, cp)
    T1, Lam2 = f.T1, f.Lam2
    beta, u1, u2 = _estimates(f, design, cp.p)
    G11, G21, G22 = inverse_blocks(f)
    # the diagonal blocks of M = Z'Z Lambda G
    M11 = cp.Z1Z1 @ T1 @ G11
    M22 = np.zeros((0, 0))
    if cp.q2:
        ZL = (cp.Z2Z1.reshape(cp.q2, -1).T @ Lam2).reshape(cp.Z2Z1.shape[1], cp.Z2Z1.shape[2], -1)  # (Z_1'Z_2 Lambda_2), level by level
        M11 = M11 + np.einsum("kpr,rks->kps", ZL, G21)
        ZT = (cp.Z2Z1 @ T1).reshape(cp.q2, -1)  # Z_2'Z_1 (I x T_1)
        M22 = ZT @ G21.reshape(cp.q2, -1).T + cp.Z2Z2 @ Lam2 @ G22
    d_logdet = 2.0 * _pattern_sums(M11, M22, design)
    # Z'e with e = y - X beta - Z Lambda u
    ZZb1, ZZb2 = _ZtZ_times(cp, (u1 @ T1.T)[:, :, None], (Lam2 @ u2)[:, None])
    Zte1 = cp.Z1y - cp.Z1X @ beta - ZZb1[:, :, 0]
    Zte2 = cp.Z2y - cp.Z2X @ beta - ZZb2[:, 0]
    d_r2 = -2.0 * _pattern_sums(Zte1[:, :, None] * u1[:, None, :], np.outer(Zte2, u2), design)
    dof = cp.n - cp.p if reml else cp.n
    gradient = d_logdet + dof * d_r2 / f.r2
    if reml and cp.p:
        R_inv = _trsolve(f.R_X, np.eye(cp.p), lower=0)
        Phi = R_inv @ R_inv.T  # (R_X' R_X)^{-1}
        # W = Z'X - Z'Z Lambda G Lambda' Z'X, with G Lambda' Z'X = L^{-T} R_ZX
        V1, V2 = _upper_solve(f, *_split(f.RZX, design))
        ZZ1, ZZ2 = _ZtZ_times(cp, T1 @ V1, Lam2 @ V2)
        W1, W2 = cp.Z1X - ZZ1, cp.Z2X - ZZ2
        N11 = W1 @ Phi @ np.swapaxes(W1, 1, 2) @ T1
        N22 = W2 @ Phi @ W2.T @ Lam2 if cp.q2 else np.zeros((0, 0))
        gradient = gradient - 2.0 * _pattern_sums(N11, N22, design)
    return float(_criterion(f, cp.n, cp.p, reml)), gradient
