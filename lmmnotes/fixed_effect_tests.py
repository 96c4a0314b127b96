r"""Kenward-Roger F tests for fixed effects (Kenward and Roger 1997; R's pbkrtest::KRmodcomp), and
t and F tests with Satterthwaite's degrees of freedom (R's lmerTest; at the end).

Write the marginal covariance of a REML fit as :math:`\Sigma = \sum_i \gamma_i G_i`, one term for
each distinct entry of each random-effects covariance matrix (:math:`G_i = Z_t (I \otimes S_i) Z_t^\top`,
:math:`S_i` the symmetric unit matrix of that entry) and one for the residual variance
(:math:`G = I`). With :math:`\Phi = (X^\top\Sigma^{-1}X)^{-1}` and

.. math::
    P_i = -X^\top\Sigma^{-1}G_i\Sigma^{-1}X, \qquad
    Q_{ij} = X^\top\Sigma^{-1}G_i\Sigma^{-1}G_j\Sigma^{-1}X, \qquad
    W = 2\,\mathcal{I}^{-1},\quad
    \mathcal{I}_{ij} = \operatorname{tr}(\Sigma^{-1}G_i\Sigma^{-1}G_j) - 2\operatorname{tr}(\Phi Q_{ij})
        + \operatorname{tr}(\Phi P_i \Phi P_j),

the small-sample adjusted covariance of :math:`\hat\beta` is
:math:`\Phi_A = \Phi + 2\Phi\,\bigl[\sum_{ij} W_{ij}(Q_{ij} - P_i\Phi P_j)\bigr]\Phi`.
For :math:`H_0: L\beta = 0` with :math:`L` of rank :math:`\ell`, the statistic
:math:`F = \hat\beta^\top L^\top (L\Phi_A L^\top)^{-1} L\hat\beta / \ell` is scaled by :math:`\lambda`
and referred to :math:`F(\ell, m)`, where :math:`\lambda` and :math:`m` match the first two moments
(``_moment_matching``, following pbkrtest).

All the :math:`n \times n` quantities are reduced to :math:`q \times q` ones (q random effects) by the Woodbury identity
:math:`\Sigma^{-1} = \sigma^{-2}(I - Z M Z^\top)`, :math:`M = \Lambda (\Lambda^\top Z^\top Z\Lambda + I)^{-1}\Lambda^\top`,
so no :math:`n \times n` matrix is formed.

Satterthwaite's degrees of freedom (Satterthwaite 1946; Kuznetsova, Brockhoff and Christensen
2017, R's lmerTest) need no adjusted covariance. The variance parameters are
:math:`\varphi = (\theta, \sigma)`; the deviance of the fit (REML or ML, as fitted),
unprofiled in :math:`\sigma`, is

.. math::
    d(\theta, \sigma) = \log|L_\theta|^2 + r^2_\theta/\sigma^2 + n\log(2\pi\sigma^2)
        \;\bigl[ + \log|R_X|^2 - p\log(2\pi\sigma^2) \text{ for REML} \bigr],

:math:`A = 2\,H^{-1}` with :math:`H` its Hessian at :math:`\hat\varphi` is the asymptotic covariance
of :math:`\hat\varphi`, and :math:`C(\varphi) = \sigma^2 (R_X^\top R_X)^{-1}` is the covariance of
:math:`\hat\beta`. For one contrast :math:`\ell^\top\beta` with :math:`v = \ell^\top C\ell` and
:math:`g_k = \ell^\top (\partial C/\partial\varphi_k)\,\ell`,

.. math::
    \nu = \frac{2 v^2}{g^\top A g}, \qquad t = \ell^\top\hat\beta / \sqrt{v} \sim t_\nu .

For an :math:`L` of several rows, :math:`L C L^\top = P D P^\top` splits the F statistic into
:math:`q` independent squared t statistics :math:`(P^\top L\hat\beta)_m^2 / d_m`, each with its
:math:`\nu_m`; with :math:`E = \sum_m \nu_m/(\nu_m - 2)` the denominator df is
:math:`2E/(E - q)` (2 if some :math:`\nu_m \le 2`). :math:`H` and :math:`\partial C/\partial\varphi`
are central finite differences (statsmodels' ``approx_hess3`` and ``approx_fprime``), as lmerTest
uses numerical derivatives; on the boundary (a singular fit) they step to negative
:math:`\theta`, where the deviance is the mirror image, and eigenvalues of :math:`H` within
1e-8 of 0 are left out of the inverse, with a warning, as in lmerTest.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.sparse as sp
from scipy import stats
from statsmodels.tools.numdiff import approx_fprime, approx_hess3

from .checks import ConvergenceWarning, DataError
from .criterion import factorize, pls
from .display import format_p
from .design import column_space_coefficients
from .results import LmerFit


@dataclass(frozen=True, kw_only=True)
class KenwardRogerTest:
    """The Kenward-Roger F test of a smaller fixed-effects structure against a larger one."""

    statistic: float  # the scaled F statistic, lambda * F
    ndf: int
    ddf: float
    scaling: float  # lambda
    p_value: float
    unscaled: float  # F before scaling

    def __str__(self) -> str:
        return (f"Kenward-Roger F = {self.statistic:.4f} on ({self.ndf}, {self.ddf:.2f}) df, "
                f"p = {self.p_value:.4f} (scaling {self.scaling:.4f})")


def _variance_patterns(fit: LmerFit) -> list[sp.csr_matrix]:
    """The q x q matrices I (x) S_i of each distinct entry of each term's covariance matrix."""
    patterns, offset = [], 0
    q = fit.design.q
    for t in fit.design.terms:
        base = offset + t.p * np.arange(t.n_levels)
        for r, c in zip(*t.lower):
            rows = np.concatenate([base + r, base + c]) if r != c else base + r
            cols = np.concatenate([base + c, base + r]) if r != c else base + c
            patterns.append(sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(q, q)))
        offset += t.n_levels * t.p
    return patterns


def kr_pieces(fit: LmerFit) -> tuple[np.ndarray, list[np.ndarray], np.ndarray, np.ndarray]:
    """Phi, the P_i, W and Phi_A of the module docstring (the last G_i is the residual's identity)."""
    d = fit.design
    Z = d.Z()
    X = d.X
    n = d.nobs
    s2 = fit.sigma**2
    ZtZ = (Z.T @ Z).toarray()
    ZtX = np.asarray(Z.T @ X)
    Lam = d.Lambda(fit.theta).toarray()
    A = Lam.T @ ZtZ @ Lam + np.eye(d.q)
    M = Lam @ scipy.linalg.solve(A, Lam.T, assume_a="pos")
    F = np.eye(d.q) - M @ ZtZ  # Sigma^{-1} Z = Z F / sigma^2
    N = M @ ZtX  # Sigma^{-1} X = (X - Z N) / sigma^2
    ZtR = ZtX - ZtZ @ N  # Z'(X - Z N)
    C = ZtZ @ F / s2  # Z' Sigma^-1 Z
    D = ZtR / s2  # Z' Sigma^-1 X
    RtR = X.T @ X - ZtX.T @ N - N.T @ ZtX + N.T @ ZtZ @ N  # (X - Z N)'(X - Z N)
    D2 = F.T @ ZtR / s2**2  # Z' Sigma^-2 X
    ZS2Z = F.T @ ZtZ @ F / s2**2  # Z' Sigma^-2 Z
    XS2X = RtR / s2**2  # X' Sigma^-2 X
    XS3X = (RtR - ZtR.T @ M @ ZtR) / s2**3  # X' Sigma^-3 X
    MZ = M @ ZtZ
    trS2 = (n - 2.0 * np.trace(MZ) + np.sum(MZ * MZ.T)) / s2**2  # tr(Sigma^-2)
    Phi = fit.vcov.to_numpy()

    E = _variance_patterns(fit)
    k = len(E) + 1  # plus the residual variance
    P = [-(D.T @ (Ei @ D)) for Ei in E] + [-XS2X]
    EC = [np.asarray(Ei @ C) for Ei in E]
    ECD = [np.asarray(Ei @ D) for Ei in E]
    Q = np.empty((k, k), dtype=object)
    K = np.empty((k, k))
    for i in range(k):
        for j in range(i, k):
            if j < k - 1:  # two random-effect entries
                Q[i, j] = D.T @ EC[i] @ ECD[j]
                K[i, j] = np.sum(EC[i] * EC[j].T)  # tr(E_i C E_j C)
            elif i < k - 1:  # entry i and the residual
                Q[i, j] = D.T @ (E[i] @ D2)
                K[i, j] = float(E[i].multiply(ZS2Z).sum())  # tr(E_i Z' Sigma^-2 Z), E_i symmetric
            else:
                Q[i, j] = XS3X
                K[i, j] = trS2
            Q[j, i] = Q[i, j].T
            K[j, i] = K[i, j]
    info = np.empty((k, k))
    for i in range(k):
        for j in range(i, k):
            info[i, j] = info[j, i] = K[i, j] - 2.0 * np.sum(Phi * Q[i, j].T) + np.sum((Phi @ P[i]) * (Phi @ P[j]).T)
    W = 2.0 * (np.linalg.inv(info) if np.min(np.abs(np.linalg.eigvalsh(info))) > 1e-10 else np.linalg.pinv(info))
    U = sum(W[i, j] * (Q[i, j] - P[i] @ Phi @ P[j]) for i in range(k) for j in range(k))
    Phi_A = Phi + 2.0 * Phi @ U @ Phi
    return Phi, P, W, Phi_A


def vcov_adjusted(fit: LmerFit) -> pd.DataFrame:
    """The Kenward-Roger adjusted covariance matrix Phi_A of the fixed effects (pbkrtest's vcovAdj)."""
    fit = fit.update(reml=True)
    Phi_A = kr_pieces(fit)[3]
    names = list(fit.design.x_names)
    return pd.DataFrame(0.5 * (Phi_A + Phi_A.T), index=names, columns=names)


def restriction_matrix(large: LmerFit, small_X: np.ndarray) -> np.ndarray:
    """L with L beta = 0 exactly when X beta lies in the column space of the smaller model's X."""
    X = large.design.X
    B0 = column_space_coefficients(X, small_X)  # small model's columns in the large model's coefficients
    if B0 is None:
        raise DataError("the models are not nested: the smaller model's fixed effects are not contained in "
                         "the larger model's")
    rank = np.linalg.matrix_rank(B0) if B0.size else 0
    if rank >= X.shape[1]:
        raise DataError("the two models have the same fixed effects; there is nothing to test")
    return scipy.linalg.null_space(B0.T).T if rank else np.eye(X.shape[1])


def reduce_restriction(L, n_fixed: int) -> np.ndarray:
    """An orthonormal basis of the row space of a restriction matrix ``L`` (one column per fixed
    effect): L beta = 0 and the basis times beta = 0 are the same hypothesis, so zero rows and rows
    that are combinations of others are dropped, and the number of rows left is the rank of L,
    the numerator degrees of freedom (as pbkrtest, which uses the rank of L). The rank counts the
    singular values above ``max(L.shape) * eps`` times the largest (numpy's ``matrix_rank``);
    an L with no nonzero row is a DataError."""
    try:
        L = np.asarray(L, dtype=float)
    except (TypeError, ValueError):
        raise DataError(f"L must be a numeric matrix with one column per fixed effect ({n_fixed}), got "
                        f"{type(L).__name__}; or pass the smaller model, a fit from lmmnotes.lmer") from None
    if L.ndim == 1:
        L = L[None, :]
    if L.ndim != 2:
        raise DataError(f"L must be a matrix (rows: combinations of the fixed effects), got an array of shape "
                        f"{L.shape}")
    if L.shape[1] != n_fixed:
        raise DataError(f"L must have one column per fixed effect ({n_fixed}), got {L.shape[1]}")
    if not np.all(np.isfinite(L)):
        raise DataError("L has missing or infinite entries; every entry must be a finite number")
    if L.shape[0] == 0 or not np.any(L):
        raise DataError(f"L has no nonzero row (shape {L.shape}), so it restricts nothing; give at least one "
                        "combination of the fixed effects to test, e.g. a row with 1 in the coefficient's column")
    _, singular, Vt = np.linalg.svd(L, full_matrices=False)
    rank = int(np.sum(singular > singular[0] * max(L.shape) * np.finfo(float).eps))
    return Vt[:rank]


def _by_label(L, names: list[str]):
    """A labelled L (a DataFrame with one column per fixed effect, or a Series for one row) as an
    array in the fit's order of the fixed effects; anything else, and a DataFrame or Series
    without labels (the default 0, 1, ...), unchanged: read by position."""
    if not isinstance(L, pd.DataFrame | pd.Series):
        return L
    axis = L.columns if isinstance(L, pd.DataFrame) else L.index
    if isinstance(axis, pd.RangeIndex) and axis.start == 0 and axis.step == 1:
        return L.to_numpy()
    labels = list(axis)
    unknown = [c for c in labels if c not in names]
    missing = [n for n in names if n not in labels]
    if unknown or missing or len(set(labels)) < len(labels):
        raise DataError(f"L's labels must be the fixed effects {names}, each once (give 0 to a coefficient "
                        f"that is not in a combination); not fixed effects: {unknown}, missing: {missing}")
    return L[names].to_numpy() if isinstance(L, pd.DataFrame) else L[names].to_numpy()[None, :]


def _hypothesis(large: LmerFit, small, reduce: bool) -> np.ndarray:
    """The restriction matrix of a test: from a smaller fit of the same data
    (``restriction_matrix``), or the given L (labels matched to the fixed effects), reduced to
    a basis of its row space (``reduce_restriction``) if ``reduce``, else only checked."""
    names = list(large.design.x_names)
    if isinstance(small, LmerFit):
        if small.nobs != large.nobs or not np.allclose(small.design.y, large.design.y):
            raise DataError("the two models were fitted to different data; fit both to the same rows")
        return restriction_matrix(large, small.design.X)
    L = _by_label(small, names)
    basis = reduce_restriction(L, len(names))  # the checks: width, finite entries, a nonzero row
    return basis if reduce else np.atleast_2d(np.asarray(L, dtype=float))


def _moment_matching(Phi: np.ndarray, P: list[np.ndarray], W: np.ndarray, L: np.ndarray) -> tuple[float, float, float]:
    """pbkrtest's approximation: scaling lambda, denominator df m, and A2 (Kenward and Roger 1997, sec. 4)."""
    ell = L.shape[0]
    Theta = L.T @ np.linalg.solve(L @ Phi @ L.T, L)
    u = [Theta @ Phi @ Pi @ Phi for Pi in P]
    A1 = sum(W[i, j] * np.trace(u[i]) * np.trace(u[j]) for i in range(len(P)) for j in range(len(P)))
    A2 = sum(W[i, j] * np.sum(u[i] * u[j].T) for i in range(len(P)) for j in range(len(P)))
    B = (A1 + 6.0 * A2) / (2.0 * ell)
    g = ((ell + 1) * A1 - (ell + 4) * A2) / ((ell + 2) * A2)
    denom = 3 * ell + 2 * (1 - g)
    c1, c2, c3 = g / denom, (ell - g) / denom, (ell + 2 - g) / denom
    V0 = 1 + c1 * B
    V0 = 0.0 if abs(V0) < 1e-10 else V0
    V1, V2 = 1 - c2 * B, 1 - c3 * B
    # In a balanced design V2 is 0 in exact arithmetic and, rounding permitting, in floating
    # point too: rho is then infinite and m = 4, as R's pbkrtest computes it (R divides by 0
    # silently), not a warning.
    with np.errstate(divide="ignore"):
        rho = (1.0 / ell) * ((1 - A2 / ell) / V1) ** 2 * np.float64(V0) / V2
    m = 4 + (ell + 2) / (ell * rho - 1)
    scaling = 1.0 if abs(m - 2) < 1e-2 else m * (1 - A2 / ell) / (m - 2)
    return scaling, m, A2


def kenward_roger(large: LmerFit, small) -> KenwardRogerTest:
    """Kenward-Roger F test of the fixed effects of ``large`` against those of ``small``.

    Parameters
    ----------
    large : the larger model (fitted by REML; an ML fit is refitted by REML first).
    small : the smaller model with the same random effects, fitted to the same data (an
        ``LmerFit``), or directly the restriction matrix L (rows: linear combinations of the
        larger model's fixed effects that are 0 under the null; a DataFrame is read by its
        column labels, the names of ``large.fixef``). Zero rows and rows that are
        combinations of others are dropped (``reduce_restriction``), so the numerator degrees of
        freedom are the rank of L, as in pbkrtest.
    """
    L = _hypothesis(large, small, reduce=True)  # full row rank: rows = rank
    fit = large.update(reml=True)
    Phi, P, W, Phi_A = kr_pieces(fit)
    ell = L.shape[0]  # the rank of L (chapter 6's l)
    Lb = L @ fit.solution.beta
    F = float(Lb @ np.linalg.solve(L @ Phi_A @ L.T, Lb)) / ell
    scaling, m, _ = _moment_matching(Phi, P, W, L)
    statistic = scaling * F
    return KenwardRogerTest(statistic=statistic, ndf=int(ell), ddf=float(m), scaling=float(scaling),
                            p_value=float(stats.f.sf(statistic, ell, m)), unscaled=F)


# ---- Satterthwaite --------------------------------------------------------------------------------
EIGEN_TOLERANCE = 1e-8  # lmerTest: eigenvalues of the Hessian within this of 0 are dropped


@dataclass(frozen=True, kw_only=True)
class SatterthwaiteTest:
    r"""The F test of :math:`H_0: L\beta = 0` with Satterthwaite's denominator degrees of freedom
    (lmerTest's ``contestMD``). ``mean_sq`` is :math:`F\hat\sigma^2` and ``sum_sq`` is ``ndf`` times it,
    as lmerTest's anova table reports them."""

    statistic: float  # F
    ndf: int  # the rank of L C L'
    ddf: float
    p_value: float
    mean_sq: float
    sum_sq: float

    def to_frame(self) -> pd.DataFrame:
        """One row in lmerTest's columns: Sum Sq, Mean Sq, NumDF, DenDF, F value, Pr(>F)."""
        return pd.DataFrame({"Sum Sq": [self.sum_sq], "Mean Sq": [self.mean_sq], "NumDF": [self.ndf],
                             "DenDF": [self.ddf], "F value": [self.statistic], "Pr(>F)": [self.p_value]})

    def __str__(self) -> str:
        return (f"Satterthwaite F = {self.statistic:.4f} on ({self.ndf}, {self.ddf:.2f}) df, "
                f"p = {format_p(self.p_value)}")


@dataclass(frozen=True, kw_only=True)
class SatterthwaitePieces:
    """What every Satterthwaite df needs (module docstring): C, the covariance of beta-hat; A, the
    asymptotic covariance of (theta, sigma); and the derivatives dC/dphi_k, one p x p matrix each."""

    vcov_beta: np.ndarray
    vcov_varpar: np.ndarray
    jacobian: np.ndarray  # (k, p, p)


def unprofiled_deviance(fit: LmerFit, theta: np.ndarray, sigma: float, reml: bool) -> float:
    r"""The deviance :math:`d(\theta, \sigma)` of the module docstring, unprofiled in
    :math:`\sigma` (:math:`\beta` profiled out): ML, or REML if ``reml``. Used by the
    Satterthwaite df here and by the profile intervals (``intervals``, ML)."""
    f = factorize(np.atleast_1d(np.asarray(theta, dtype=float)), fit.design, fit.cross_products)
    n, p = fit.cross_products.n, fit.cross_products.p
    sigma2 = sigma**2
    dev = f.logdet_L2 + f.r2 / sigma2 + n * np.log(2.0 * np.pi * sigma2)
    if reml:
        dev += f.logdet_RX2 - p * np.log(2.0 * np.pi * sigma2)
    return float(dev)


def _unprofiled_deviance(varpar: np.ndarray, fit: LmerFit) -> float:
    return unprofiled_deviance(fit, varpar[:-1], varpar[-1], fit.reml)


def _covariance_of_beta(varpar: np.ndarray, fit: LmerFit) -> np.ndarray:
    sol = pls(varpar[:-1], fit.design, fit.cross_products)
    Rinv = scipy.linalg.solve_triangular(sol.R_X, np.eye(sol.R_X.shape[0]))
    return (varpar[-1] ** 2 * Rinv @ Rinv.T).ravel()


def satterthwaite_pieces(fit: LmerFit) -> SatterthwaitePieces:
    """C, A = 2 H^{-1} and dC/dphi at the fit's (theta, sigma) (module docstring). A Hessian with a
    negative eigenvalue (the fit is not at a minimum) gives a ``ConvergenceWarning``, as lmerTest
    warns; eigenvalues within 1e-8 of 0 are left out of the inverse, with a ``ConvergenceWarning``
    too, as lmerTest ("may not have converged ... close to zero")."""
    varpar = np.append(fit.theta, fit.sigma)
    H = approx_hess3(varpar, _unprofiled_deviance, args=(fit,))
    values, vectors = np.linalg.eigh(0.5 * (H + H.T))
    if np.any(values < -EIGEN_TOLERANCE):
        warnings.warn(f"the Hessian of the deviance in (theta, sigma) has negative eigenvalues "
                      f"({', '.join(f'{v:.1e}' for v in values[values < -EIGEN_TOLERANCE])}): the fit may not "
                      "have converged, and the Satterthwaite df are unreliable", ConvergenceWarning, stacklevel=3)
    zero = np.abs(values) <= EIGEN_TOLERANCE
    if np.any(zero):
        warnings.warn(f"the Hessian of the deviance in (theta, sigma) has eigenvalues close to zero "
                      f"({', '.join(f'{v:.1e}' for v in values[zero])}): the fit may not have converged; "
                      "those directions are left out of the covariance of (theta, sigma), as lmerTest does",
                      ConvergenceWarning, stacklevel=3)
    keep = values > EIGEN_TOLERANCE
    A = 2.0 * (vectors[:, keep] / values[keep]) @ vectors[:, keep].T
    p = len(fit.solution.beta)
    J = approx_fprime(varpar, _covariance_of_beta, args=(fit,), centered=True)  # (p * p, k)
    J = np.moveaxis(J.reshape(p, p, len(varpar)), 2, 0)
    return SatterthwaitePieces(vcov_beta=fit.vcov.to_numpy(), vcov_varpar=A, jacobian=0.5 * (J + np.swapaxes(J, 1, 2)))


def _contrast_df(pieces: SatterthwaitePieces, ell: np.ndarray) -> tuple[float, float]:
    """Var(ell' beta-hat) and its Satterthwaite df, 2 v^2 / (g' A g)."""
    v = float(ell @ pieces.vcov_beta @ ell)
    g = np.einsum("i,kij,j->k", ell, pieces.jacobian, ell)
    denominator = float(g @ pieces.vcov_varpar @ g)
    with np.errstate(divide="ignore"):
        return v, float(np.float64(2.0 * v**2) / denominator)


def _combined_df(nu: np.ndarray) -> float:
    """lmerTest's denominator df of an F test from the q df of its t statistics."""
    if len(nu) == 1:
        return float(nu[0])
    if np.all(np.abs(np.diff(nu)) < 1e-8):
        return float(np.mean(nu))
    if np.any(nu <= 2):
        return 2.0
    E = float(np.sum(nu / (nu - 2.0)))
    return 2.0 * E / (E - len(nu))


def satterthwaite(fit: LmerFit, L=None):
    r"""t and F tests of fixed effects with Satterthwaite's degrees of freedom (R's lmerTest).

    Parameters
    ----------
    fit : a fit from ``lmmnotes.lmer``, by REML or ML (the df use the criterion it was fitted by,
        as lmerTest does).
    L : ``None`` for the t test of each coefficient; or a restriction matrix (one column per fixed
        effect, one row per combination; a vector is one row; a DataFrame, or a Series for one
        row, is read by its labels, the names of ``fit.fixef``) for the F test of
        :math:`L\beta = 0`; or a smaller ``LmerFit`` with the same random effects, fitted to the
        same data, whose fixed effects are the null hypothesis.

    Returns
    -------
    For ``L=None`` a DataFrame, one row per coefficient, in lmerTest's columns Estimate,
    Std. Error, df, t value, Pr(>|t|). Otherwise a ``SatterthwaiteTest`` (``to_frame()`` gives
    lmerTest's anova row). The F test follows lmerTest's ``contestMD``: the numerator df are the
    number of eigenvalues of :math:`LCL^\top` above :math:`\sqrt{\epsilon}` times the largest, and
    the result depends on L only through its row space up to rotations of the rows, as in lmerTest
    (rescaling one row of a several-row L can change the denominator df slightly).
    """
    if not isinstance(fit, LmerFit):
        raise DataError(f"satterthwaite needs a fit from lmmnotes.lmer, got {type(fit).__name__}")
    names = list(fit.design.x_names)
    p = len(names)
    if L is not None:
        L = _hypothesis(fit, L, reduce=False)
    pieces = satterthwaite_pieces(fit)
    beta = fit.solution.beta
    if L is None:
        rows = []
        for j in range(p):
            v, df = _contrast_df(pieces, np.eye(p)[j])
            t = beta[j] / np.sqrt(v)
            rows.append((beta[j], np.sqrt(v), df, t, 2.0 * stats.t.sf(abs(t), df)))
        return pd.DataFrame(rows, index=names, columns=["Estimate", "Std. Error", "df", "t value", "Pr(>|t|)"])
    d, P = np.linalg.eigh(L @ pieces.vcov_beta @ L.T)
    d, P = d[::-1], P[:, ::-1]  # largest first, as R's eigen
    q = int(np.sum(d > max(np.sqrt(np.finfo(float).eps) * d[0], 0.0)))  # >= 1: L != 0, C definite
    PtL = P[:, :q].T @ L
    nu = np.array([_contrast_df(pieces, row)[1] for row in PtL])
    F = float(np.sum((PtL @ beta) ** 2 / d[:q]) / q)
    ddf = _combined_df(nu)
    mean_sq = F * fit.sigma**2
    return SatterthwaiteTest(statistic=F, ndf=q, ddf=ddf, p_value=float(stats.f.sf(F, q, ddf)),
                             mean_sq=mean_sq, sum_sq=q * mean_sq)
