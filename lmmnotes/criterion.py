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

The off-diagonal block keeps the sparsity of the data. With :math:`N = Z_2^\top Z_1` (one
nonzero block per pair of levels that share an observation), :math:`A_{21} = \Lambda_2^\top N
(I \otimes T_1)`, so :math:`L_{21} = \Lambda_2^\top N (I \otimes T_1 L_{11,k}^{-\top})` has the pattern of
:math:`N`, and the Schur complement is

.. math::
    A_{22} - L_{21}L_{21}^\top = \Lambda_2^\top (Z_2^\top Z_2 - N W N^\top) \Lambda_2 + I, \qquad
    W = \operatorname{diag}_k(T_1 A_{11,k}^{-1} T_1^\top),

a sum over the first term's levels k of products of the sparse columns of N. Small models
keep N as a dense array and form :math:`N W N^\top` by a matrix product. Large ones (a crossed
design with thousands of levels) keep N sparse and compute the :math:`N W N^\top` entries that
can be nonzero as one sparse matrix :math:`K`, fixed by the pattern of N, times the
:math:`l_1 p_1^2` numbers of W (:class:`SchurMap`): the cost is that of the nonzeros, not of
:math:`q_2^2 l_1`. A row of N that is nonzero for most levels of the first term (a factor with few
levels) would pair with nearly everything; its entries come from a product of N with that row
instead. Only :math:`L_{22}` is dense, in lme4's order of the terms (no further reordering: for
crossed factors the Schur complement is nearly full, so a fill-reducing order would not thin it).

The gradient (:func:`criterion_and_gradient`) needs no more than the same factorization. With
:math:`E_i = \partial\Lambda/\partial\theta_i` (the positions that hold :math:`\theta_i`), by the
envelope theorem for the penalized least squares problem and Jacobi's formula,

.. math::
    \frac{\partial r^2}{\partial\theta_i} = -2\,(Z^\top e)^\top E_i \tilde u, \quad
    \frac{\partial \log|A|}{\partial\theta_i} = 2\operatorname{tr}(E_i^\top Z^\top Z\Lambda A^{-1}), \quad
    \frac{\partial \log|R_X|^2}{\partial\theta_i} = -2\operatorname{tr}(E_i^\top W_X (R_X^\top R_X)^{-1} W_X^\top\Lambda),

with :math:`e = y - X\hat\beta - Z\Lambda\tilde u` and :math:`W_X = Z^\top X - Z^\top Z\Lambda A^{-1}\Lambda^\top Z^\top X`
(:math:`= Z^\top V^{-1} X` for :math:`V = I + Z\Lambda\Lambda^\top Z^\top`). Only the diagonal blocks of
:math:`M = Z^\top Z\Lambda A^{-1}` enter, and for the first term not even those: the two-block factor gives
:math:`\log|A| = \sum_k \log|A_{11,k}| + \log|\Lambda_2^\top S_{22}\Lambda_2 + I|` with
:math:`S_{22} = Z_2^\top Z_2 - N W N^\top`, and for an entry :math:`\theta_i` of :math:`T_1`

.. math::
    \frac{\partial \log|A|}{\partial\theta_i} = 2\sum_k \operatorname{tr}(E_i^\top Z_1^\top Z_{1,k} T_1 A_{11,k}^{-1})
        + \operatorname{tr}\Bigl(H \frac{\partial S_{22}}{\partial\theta_i}\Bigr), \qquad
    \frac{\partial S_{22}}{\partial\theta_i} = -N \frac{\partial W}{\partial\theta_i} N^\top,

with :math:`G_{22} = (L_{22}L_{22}^\top)^{-1}` and :math:`H = \Lambda_2 G_{22}\Lambda_2^\top`
(``_weight_derivatives`` gives :math:`\partial W_k/\partial\theta_i`). On the sparse path
:math:`\partial S_{22}/\partial\theta_i` at the positions comes from the same product with K as
:math:`S_{22}`. For the other terms, :math:`M_{22} = (Z_2^\top Z_2 - N W N^\top)\Lambda_2 G_{22}`, of which
only the diagonal level blocks are computed: no block of :math:`A^{-1}` between the first term and
the others is ever formed. When :math:`\Lambda_2` is diagonal, even those come for free:
:math:`\Lambda^\top M = \Lambda^\top Z^\top Z\Lambda A^{-1} = (A - I)A^{-1} = I - A^{-1}`, so
:math:`(M_{22})_{rr} = (1 - (G_{22})_{rr})/\lambda_r`, which the sparse path uses away from the boundary.
The conditional variances need the first term's diagonal blocks of :math:`A^{-1}`,
:math:`G_{11,kk} = A_{11,k}^{-1} + A_{11,k}^{-1} T_1^\top Q_k T_1 A_{11,k}^{-1}` with
:math:`Q_k = N_k^\top H N_k` (``inverse_blocks``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
import scipy.sparse as sp
from scipy.linalg.blas import dtrmm
from scipy.linalg.lapack import dlauum, dpotrf, dtrtri, dtrtrs

from .design import Design

# Keep N = Z_2'Z_1 dense while it has at most this many entries (q_2 x q_1): below it, dense
# products beat sparse ones, whose every call costs tens of microseconds (benchmarks/run.py).
DENSE_LIMIT = 40_000
# A model with at most this many random effects in all is evaluated in one piece, the formulas
# above with dense q x q matrices (``CrossProducts.whole``): at such sizes a handful of dense
# products costs less than the many small steps of the blocked factor. For three crossed scalar
# terms on one BLAS thread, an evaluation with its gradient took a third of the blocked time at
# q = 35, two thirds at q = 65, and as long at about q = 85; for one scalar term with q <= 8, half.
WHOLE_LIMIT = 64
# A small model's cross-products come from Z formed as a dense n x q array when it has at most this
# many entries (0.8 MB): one matrix product then replaces a dozen sparse ones, each of which costs
# tens of microseconds in scipy.sparse's checks whatever its size.
DENSE_Z_LIMIT = 100_000
# A row of N = Z_2'Z_1 with nonzeros in more than this share of its columns is "dense" on the
# sparse path (``SchurMap``): its entries of N W N' come from a product with N, not from K.
DENSE_ROW_SHARE = 0.5
# The sparse path takes M_rr = (1 - G22_rr) / lam_r (``_inverse_products``) while every 1 - G22_rr
# exceeds this: its rounding error, about 1e-16, is then below 1e-12 of it.
IDENTITY_FLOOR = 1e-4


@dataclass(frozen=True, kw_only=True)
class SchurMap:
    r"""The sparse path's map from W to :math:`N W N^\top` (module docstring).

    ``rows``, ``cols`` (``rows >= cols``, column by column) are the positions of the lower triangle of
    :math:`N N^\top` and of :math:`Z_2^\top Z_2` that can be nonzero (usually the second are among
    the first, since two effects that share an observation share its level of the first term, but
    not where the first term's columns are 0 for some rows, as in ``(0 + d | g)``), ``c22`` holds
    :math:`Z_2^\top Z_2` there, and ``K`` (positions x :math:`l_1 p_1^2`) has
    :math:`K[s, (k, a, b)] = N[r_s, (k, a)]\, N[c_s, (k, b)]`, so that :math:`Z_2^\top Z_2 - N W N^\top`
    is ``c22 - K @ W.ravel()`` at the positions, and :math:`K^\top` applied to the lower
    triangle of a symmetric H gives the level blocks of :math:`N^\top H N`. ``scalar``: every
    term after the first has one random effect per level, so :math:`\Lambda_2` is diagonal and
    everything stays on the positions. ``row_term`` (q_2,): the term (0 for the second term of the
    model, 1 for the third, ...) of each row and column of :math:`Z_2^\top Z_2`.

    A row of N with nonzeros in more than ``DENSE_ROW_SHARE`` of its columns (a factor with few
    levels, such as a department across thousands of students) would pair with nearly every
    nonzero of every level: in the benchmark's crossed design the 14 department rows give half of
    the pairs, for 3% of the positions. K leaves out the positions in such ``dense_rows`` (or
    columns), ``dense_positions``; there :math:`N W N^\top` comes from
    :math:`N\,(W N_D^\top)` with :math:`N_D` the dense rows as a dense array ``N_dense``: one
    product of the sparse N with a thin dense matrix. Position ``dense_positions[j]`` is entry
    ``dense_other[j]`` of column ``dense_index[j]`` of that product.
    """

    rows: np.ndarray
    cols: np.ndarray
    c22: np.ndarray
    K: sp.csc_matrix
    q2: int
    scalar: bool
    row_term: np.ndarray
    N: sp.csr_matrix  # N = Z_2'Z_1
    dense_rows: np.ndarray
    N_dense: np.ndarray  # N's dense rows, (|D|, q_1)
    dense_positions: np.ndarray
    dense_other: np.ndarray
    dense_index: np.ndarray

    @classmethod
    def from_pattern(cls, N: sp.spmatrix, Z2Z2: sp.spmatrix, p1: int, scalar: bool,
                     row_term: np.ndarray, dense_share: float | None = None) -> "SchurMap":
        """Every pair of nonzeros of N in the columns of one level of the first term.

        The index arrays, of K's length (millions for a large crossed design), are 32-bit
        integers when every index fits, and built with few temporaries: fresh memory costs
        more than the arithmetic here."""
        N_all = sp.csr_matrix(N)
        N = sp.csc_matrix(N)
        N.sort_indices()
        q2, q1 = N.shape
        l1 = q1 // p1
        share = DENSE_ROW_SHARE if dense_share is None else dense_share
        dense_rows = np.flatnonzero(np.bincount(N.indices, minlength=q2) > share * q1)
        is_dense = np.zeros(q2, dtype=bool)
        is_dense[dense_rows] = True
        N_dense = N_all[dense_rows].toarray()
        # the pairs of K come from the other rows; the dense rows' positions from the pattern of
        # N N_D' with the p_1 columns of a level merged (from the pattern, not the values, whose
        # sums can cancel where N W N' does not)
        by_level = sp.csr_matrix((np.ones(q1), (np.arange(q1), np.arange(q1) // p1)), shape=(q1, l1))
        levels_met = sp.csr_matrix((np.ones(N_all.nnz), N_all.indices, N_all.indptr), shape=N_all.shape) @ by_level
        dense_pairs = sp.coo_matrix(levels_met @ levels_met[dense_rows].T)
        if dense_rows.size:
            N = sp.csc_matrix((np.where(is_dense[N.indices], 0.0, N.data), N.indices, N.indptr), shape=N.shape)
            N.eliminate_zeros()
        starts = N.indptr[:-1:p1].astype(np.int64)
        sizes = N.indptr[p1::p1] - starts  # nonzeros of each level's p_1 columns
        nonzero_level = np.repeat(np.arange(l1), sizes)
        first = starts[nonzero_level]  # the first nonzero of each nonzero's level
        # pair each nonzero e1 with nonzeros e2 of its level: with p_1 = 1 a level is one column,
        # whose row indices are sorted, so e2 <= e1 are the pairs in the lower triangle; else all
        # of the level's nonzeros, and the lower triangle is picked by row index
        reps = np.arange(N.nnz) - first + 1 if p1 == 1 else sizes[nonzero_level]
        index = np.int32 if max(int(reps.sum()), q2 * q2, q1 * p1) < 2**31 else np.int64
        e1 = np.repeat(np.arange(N.nnz, dtype=index), reps)
        e2 = np.arange(len(e1), dtype=index)
        e2 -= np.repeat((np.cumsum(reps) - reps - first).astype(index), reps)
        level = nonzero_level.astype(index)[e1]
        del reps, first, nonzero_level
        if p1 > 1:
            lower = N.indices[e1] >= N.indices[e2]
            e1, e2, level = e1[lower], e2[lower], level[lower]
            del lower
            column = np.repeat(np.arange(q1, dtype=index), np.diff(N.indptr))  # the column of each nonzero
            k_col = column[e1] * p1 + column[e2] - level * p1  # the column (k, a, b) of K: (k p_1 + a) p_1 + b
        else:
            k_col = level  # the column of K is the level
        # number the positions through a q_2 x q_2 table (no sort; L_22 is q_2 x q_2 anyway), keyed
        # c q_2 + r for (r, c): the positions run column by column down the lower triangle, the
        # order of the Fortran arrays LAPACK factors and inverts (``dense``, ``at_positions``)
        key = N.indices[e2].astype(index)
        key *= q2
        key += N.indices[e1]
        values = N.data[e1]
        values *= N.data[e2]
        del e1, e2
        C = sp.coo_matrix(Z2Z2)
        below = C.row >= C.col
        c22_key = C.col[below].astype(np.int64) * q2 + C.row[below]
        number = np.full(q2 * q2, -1, dtype=index)
        number[key] = 0
        number[c22_key] = 0  # Z_2'Z_2 adds positions when rows have no effect of the first term (a 0 + dummy term)
        r, c = dense_pairs.row, dense_rows[dense_pairs.col]
        number[np.minimum(r, c).astype(np.int64) * q2 + np.maximum(r, c)] = 0
        positions = np.flatnonzero(number == 0)
        number[positions] = np.arange(len(positions), dtype=index)
        if p1 > 1:  # entries come level by level; within a level, sort by (a, b)
            order = np.argsort(k_col, kind="stable")
            key, values, k_col = key[order], values[order], k_col[order]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(k_col, minlength=l1 * p1 * p1))])
        K = sp.csc_matrix((values, number[key], indptr), shape=(len(positions), l1 * p1 * p1))
        K.sort_indices()  # each column's positions in order: K @ W then writes through memory in order
        cols, rows = np.divmod(positions, q2)
        c22 = np.zeros(len(positions))
        c22[number[c22_key]] = C.data[below]
        # a dense position (r, c), r >= c, is entry (r, c) of N W N_D' if c is a dense row, else (c, r)
        dense_positions = np.flatnonzero(is_dense[rows] | is_dense[cols])
        r, c = rows[dense_positions], cols[dense_positions]
        column_dense = is_dense[c]
        index_of = np.cumsum(is_dense) - 1  # a dense row's index among the dense rows
        return cls(rows=rows, cols=cols, c22=c22, K=K, q2=q2, scalar=scalar, row_term=row_term, N=N_all,
                   dense_rows=dense_rows, N_dense=N_dense, dense_positions=dense_positions,
                   dense_other=np.where(column_dense, r, c), dense_index=index_of[np.where(column_dense, c, r)])

    # the positions as indices into a raveled q_2 x q_2 array: (r, c) in C order, (c, r) mirrored
    @cached_property
    def flat(self) -> np.ndarray:
        return self.rows * self.q2 + self.cols

    @cached_property
    def flat_mirrored(self) -> np.ndarray:
        return self.cols * self.q2 + self.rows

    @cached_property
    def K_transposed(self) -> sp.csr_matrix:
        """K' stored by rows (the arrays of the CSC matrix K, shared): K' h then runs through
        consecutive memory."""
        return self.K.T.tocsr()

    @cached_property
    def on_diagonal(self) -> np.ndarray:
        """The indices of the positions on the diagonal (r = c)."""
        return np.flatnonzero(self.rows == self.cols)

    @cached_property
    def term_pairs(self) -> np.ndarray:
        """The terms of each position's row and column, (a, b), as one index a T + b for T terms."""
        n_terms = int(self.row_term.max()) + 1
        return self.row_term[self.rows] * n_terms + self.row_term[self.cols]

    def scaled(self, lam: np.ndarray, values: np.ndarray) -> np.ndarray:
        """diag(lam) V diag(lam) at the positions, for the symmetric V with ``values`` there: for a
        diagonal Lambda_2 = diag(lam) (``scalar``), which has one value on each term's rows, the
        factors lam_r lam_c are read from the T x T products of those values (a quarter of the
        time of lam[rows] * lam[cols])."""
        per_term = np.zeros(int(self.row_term.max()) + 1)
        per_term[self.row_term] = lam
        if not np.array_equal(per_term[self.row_term], lam, equal_nan=True):
            raise ValueError("SchurMap.scaled needs one value of lam per term (a diagonal Lambda_2 of scalar terms)")
        products = np.outer(per_term, per_term).ravel().take(self.term_pairs)
        products *= values
        return products

    def schur(self, W: np.ndarray, dW: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Z_2'Z_2 - N W N' at the positions, and with the derivatives dW (l_1, n, p_1, p_1) of W
        also -N dW_i N' there, (positions, n): all from one product with K and, at the dense
        positions, one with N."""
        X = W[:, None] if dW is None else np.concatenate([W[:, None], dW], axis=1)  # (l_1, m, p_1, p_1)
        NXN = self.K @ np.moveaxis(X, 1, 3).reshape(W.size, -1)  # N X_j N' at the positions
        if self.dense_rows.size:
            NXN[self.dense_positions] = self._dense_products(X)[self.dense_other, :, self.dense_index]
        S22 = self.c22 - NXN[:, 0]
        return S22, (None if dW is None else np.negative(NXN[:, 1:], out=NXN[:, 1:]))

    def _dense_products(self, X: np.ndarray) -> np.ndarray:
        """N X_j N_D' for level blocks X (l_1, m, p_1, p_1), as (q_2, m, |D|)."""
        l1, m, p1 = X.shape[:3]
        n_dense = len(self.dense_rows)
        XND = np.einsum("kjab,dkb->kajd", X, self.N_dense.reshape(n_dense, l1, p1))  # X_j N_D', level by level
        return (self.N @ XND.reshape(l1 * p1, m * n_dense)).reshape(-1, m, n_dense)

    def dense(self, values: np.ndarray, full: bool = True) -> np.ndarray:
        """The symmetric q_2 x q_2 matrix with ``values`` at the positions (lower triangle only if not ``full``)."""
        # filled as its transpose in C order, returned in Fortran order: LAPACK takes it uncopied
        M = np.zeros(self.q2 * self.q2)
        if full:  # the mirror image (r, c) -> (c, r); on the diagonal both write the same entry
            M[self.flat] = values
        M[self.flat_mirrored] = values
        return M.reshape(self.q2, self.q2).T

    def at_positions(self, M: np.ndarray) -> np.ndarray:
        """The entries of a q_2 x q_2 array at the positions (read from its lower triangle)."""
        if M.flags.f_contiguous:  # as LAPACK returns it: M' is C-contiguous, and M[r, c] = M'[c, r]
            return M.T.reshape(-1)[self.flat_mirrored]
        return M.reshape(-1)[self.flat]

    def level_quadratics(self, h: np.ndarray, l1: int, p1: int) -> np.ndarray:
        """The level blocks of N' H N from the lower triangle h of H at the positions.

        Over the pairs of K, K' h; over the pairs with a dense row D (``dense_rows``), with
        V = H[:, D] and N_S the other rows of N, Q_k gains N_D,k' (N_k' V)' + (N_S,k' V) N_D,k."""
        h_pairs = h.copy()
        h_pairs[self.on_diagonal] *= 0.5  # K holds each pair once (i >= j): R + R' counts both orders
        R = (self.K_transposed @ h_pairs).reshape(l1, p1, p1)
        Q = R + np.swapaxes(R, 1, 2)
        if not self.dense_rows.size:
            return Q
        n_dense = len(self.dense_rows)
        V = np.zeros((self.q2, n_dense))  # V[r, d] = H[r, D_d], both triangles
        h_dense = h[self.dense_positions]
        V[self.dense_other, self.dense_index] = h_dense
        # a position between two dense rows also gives the mirrored entry
        mirror = (np.isin(self.dense_other, self.dense_rows)
                  & (self.dense_other != self.dense_rows[self.dense_index]))
        V[self.dense_rows[self.dense_index[mirror]],
          np.searchsorted(self.dense_rows, self.dense_other[mirror])] = h_dense[mirror]
        NtV = (self.N.T @ V).reshape(l1, p1, n_dense)  # N' V, level by level
        NsV = NtV - (self.N_dense.T @ V[self.dense_rows]).reshape(l1, p1, n_dense)  # N_S' V
        N_D = self.N_dense.reshape(n_dense, l1, p1)
        return Q + np.einsum("dka,kbd->kab", N_D, NtV) + np.einsum("kad,dkb->kab", NsV, N_D)


@dataclass(frozen=True, kw_only=True)
class CrossProducts:
    """Cross-products of [Z X y], split after the first random-effects term.

    Term 1 has l_1 levels of p_1 random effects (q_1 = l_1 p_1); the other terms have q_2 random
    effects in all. ``Z1Z1`` (l_1, p_1, p_1), ``Z1X`` (l_1, p_1, P) and ``Z1y`` (l_1, p_1) hold the
    first term's blocks level by level; ``Z2Z1`` (q_2, q_1), ``Z2Z2`` (q_2, q_2), ``Z2X`` (q_2, P)
    and ``Z2y`` (q_2,) the rest (empty with a single term). ``Z2Z1`` and ``Z2Z2`` are dense arrays
    on the dense path and scipy sparse matrices on the sparse path, which also has ``schur``.
    """

    Z1Z1: np.ndarray
    Z1X: np.ndarray
    Z1y: np.ndarray
    Z2Z1: np.ndarray | sp.csr_matrix
    Z2Z2: np.ndarray | sp.csr_matrix
    Z2X: np.ndarray
    Z2y: np.ndarray
    XtX: np.ndarray
    Xty: np.ndarray
    yty: float
    n: int
    p: int
    gamma: np.ndarray  # the response is stored as y - X gamma (docstring of with_response)
    schur: SchurMap | None = None  # the sparse path's map (None: the dense path)
    whole: bool = False  # criterion_and_gradient works on the whole q x q matrices (WHOLE_LIMIT)
    scalar_terms: bool = False  # every term has one random effect per level: Lambda is diagonal

    @property
    def q2(self) -> int:
        return self.Z2Z2.shape[0]

    # The response rides along as one more column of X: one solve gives [R_ZX c_u], one Cholesky
    # factor [R_X c_beta; 0 r] (``factorize``). Computed once per response.
    @cached_property
    def Z1Xy(self) -> np.ndarray:
        """[Z_1'X Z_1'y] level by level, (l_1, p_1, P + 1)."""
        return np.concatenate([self.Z1X, self.Z1y[:, :, None]], axis=2)

    @cached_property
    def Z2Xy(self) -> np.ndarray:
        """[Z_2'X Z_2'y], (q_2, P + 1)."""
        return np.column_stack([self.Z2X, self.Z2y])

    @cached_property
    def ZtZ(self) -> np.ndarray:
        """Z'Z as one dense (q, q) array, the first term's columns first (dense path only)."""
        if self.schur is not None:
            raise ValueError("ZtZ is formed on the dense path only (sparse=False)")
        l1, p1 = self.Z1Z1.shape[:2]
        q1 = l1 * p1
        ZtZ = np.zeros((q1 + self.q2, q1 + self.q2))
        level = np.arange(q1).reshape(l1, p1)
        ZtZ[level[:, :, None], level[:, None, :]] = self.Z1Z1
        ZtZ[q1:, :q1] = self.Z2Z1
        ZtZ[:q1, q1:] = self.Z2Z1.T
        ZtZ[q1:, q1:] = self.Z2Z2
        return ZtZ

    @cached_property
    def ZtXy(self) -> np.ndarray:
        """[Z'X Z'y] as one (q, P + 1) array."""
        return np.vstack([self.Z1Xy.reshape(-1, self.p + 1), self.Z2Xy])

    @cached_property
    def gram(self) -> np.ndarray:
        """[Z X y]'[Z X y] as one (q + P + 1) square array (dense path only)."""
        q = self.ZtXy.shape[0]
        C = np.empty((q + self.p + 1, q + self.p + 1))
        C[:q, :q] = self.ZtZ
        C[:q, q:] = self.ZtXy
        C[q:, :q] = self.ZtXy.T
        C[q:, q:] = self.XyXy
        return C

    @cached_property
    def XyXy(self) -> np.ndarray:
        """[X y]'[X y], (P + 1, P + 1)."""
        XyXy = np.empty((self.p + 1, self.p + 1))
        XyXy[:-1, :-1] = self.XtX
        XyXy[:-1, -1] = XyXy[-1, :-1] = self.Xty
        XyXy[-1, -1] = self.yty
        return XyXy

    @classmethod
    def from_design(cls, design: Design, *, sparse: bool | None = None, whole: bool | None = None) -> "CrossProducts":
        """The cross-products of the design and its response; ``sparse`` chooses the path
        (default: sparse when N = Z_2'Z_1 has more than ``DENSE_LIMIT`` entries), and ``whole``
        whether ``criterion_and_gradient`` works on the whole q x q matrices (default: on the
        dense path, for at most ``WHOLE_LIMIT`` random effects in all)."""
        X = design.X
        t = design.terms[0]
        l1, p1 = t.n_levels, t.p
        q1 = l1 * p1
        q2 = design.q - q1
        if sparse is None:
            sparse = q2 * q1 > DENSE_LIMIT
        if whole is None:
            whole = design.q <= WHOLE_LIMIT and not sparse
        if whole and sparse:
            raise ValueError("the whole-matrix evaluation needs the dense path (sparse=False)")
        schur = None
        if not sparse and design.nobs * design.q <= DENSE_Z_LIMIT:
            # a small model: every block from one product of the dense Z with [Z X]
            q = design.q
            Z = _dense_Z(design)
            ZtZX = Z.T @ np.column_stack([Z, X])
            level = np.arange(q1).reshape(l1, p1)
            Z1Z1 = ZtZX[level[:, :, None], level[:, None, :]]
            Z1X = ZtZX[:q1, q:].reshape(l1, p1, X.shape[1])
            N, Z2Z2, Z2X = (np.ascontiguousarray(block) for block in (ZtZX[q1:, :q1], ZtZX[q1:, q1:q], ZtZX[q1:, q:]))
        else:
            # Z_1'Z_1 is block diagonal: its block for level k is the sum of X_t[i] X_t[i]' over the
            # level's rows, which is row block k of Z_1'X_t; one sparse product gives it and Z_1'X
            Z1XtX = (t.Z.T @ np.column_stack([t.X, X])).reshape(l1, p1, p1 + X.shape[1])
            Z1Z1, Z1X = np.ascontiguousarray(Z1XtX[:, :, :p1]), np.ascontiguousarray(Z1XtX[:, :, p1:])
            if q2:
                Z2 = sp.hstack([term.Z for term in design.terms[1:]], format="csr")
                N, Z2Z2 = (Z2.T @ t.Z).tocsr(), (Z2.T @ Z2).tocsr()
                scalar = all(term.p == 1 for term in design.terms[1:])
                row_term = np.repeat(np.arange(len(design.terms) - 1),
                                     [term.n_levels * term.p for term in design.terms[1:]])
                schur = SchurMap.from_pattern(N, Z2Z2, p1, scalar, row_term) if sparse else None
                if not sparse:
                    N, Z2Z2 = N.toarray(), Z2Z2.toarray()
                Z2X = np.asarray(Z2.T @ X)
            else:  # a single term: no second block
                N, Z2Z2, Z2X = np.zeros((0, q1)), np.zeros((0, 0)), np.zeros((0, X.shape[1]))
        empty = np.zeros(0)
        base = cls(Z1Z1=Z1Z1, Z1X=Z1X, Z1y=empty, Z2Z1=N, Z2Z2=Z2Z2, Z2X=Z2X, Z2y=empty, XtX=X.T @ X, Xty=empty,
                   yty=0.0, n=design.nobs, p=X.shape[1], gamma=empty, schur=schur, whole=whole,
                   scalar_terms=all(term.p == 1 for term in design.terms))
        return base.with_response(design, design.y)

    def with_response(self, design: Design, y: np.ndarray) -> "CrossProducts":
        """The same cross-products for a new response: only those with y change.

        The response is stored as its least-squares residual y - X gamma. The penalized least
        squares problem for it has the same u-tilde and r^2 and the estimate beta-hat - gamma,
        and r^2 = y'y - |c_u|^2 - |c_beta|^2 is then a difference of numbers of the size of the
        residuals, not of y itself: without this, a response with a large mean (pulp's
        brightness is about 60) loses about five digits of r^2 to cancellation.
        """
        X = design.X
        gamma = _least_squares(X, self.XtX, y)
        resid = y - X @ gamma
        Z1y, Z2y = _Zt_times(design, resid)
        return replace(self, Z1y=Z1y, Z2y=Z2y, Xty=X.T @ resid, yty=float(resid @ resid), gamma=gamma)

    def with_offset(self, j: int, value: float) -> "CrossProducts":
        """Cross-products of the model without fixed effect j, for the response y - value * x_j.

        With y = r + X gamma stored as r, the new response is r + X_{-j} gamma_{-j} + (gamma_j - value) x_j:
        it is stored as r + (gamma_j - value) x_j with gamma_{-j}.
        """
        keep = [k for k in range(self.p) if k != j]
        c = self.gamma[j] - value
        return replace(self, Z1X=self.Z1X[..., keep], Z1y=self.Z1y + c * self.Z1X[..., j],
                       Z2X=self.Z2X[:, keep], Z2y=self.Z2y + c * self.Z2X[:, j], XtX=self.XtX[np.ix_(keep, keep)],
                       Xty=self.Xty[keep] + c * self.XtX[keep, j],
                       yty=self.yty + 2 * c * self.Xty[j] + c**2 * self.XtX[j, j], p=self.p - 1, gamma=self.gamma[keep])


def _least_squares(X: np.ndarray, XtX: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The least-squares coefficients of y on X, by the normal equations X'X gamma = X'y.

    Any gamma gives the same fit (``with_response``: the estimates are shifted by gamma
    exactly); gamma only has to make y - X gamma small, to spare r^2 the cancellation. The
    normal equations do that at a fifth of the cost of an SVD-based solve: their error in
    X gamma is about eps cond(X) |X gamma|, far below the residuals of any model whose X
    survived ``design._drop_aliased``. Should X'X have no Cholesky factor, numpy's least
    squares takes over.
    """
    if not X.shape[1]:
        return np.zeros(0)
    R, info = dpotrf(XtX, lower=0, clean=1)
    if info != 0:
        return np.linalg.lstsq(X, y, rcond=None)[0]
    return _trsolve(R, _trsolve(R, X.T @ y, lower=0, trans=1), lower=0)


def _Zt_times(design: Design, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Z'v split as the first term's (l_1, p_1) blocks and the other terms' (q_2,) vector: entry
    (k, a) of a term's part is the sum of X_t[i, a] v[i] over the rows i of its level k."""
    parts = []
    for t in design.terms:
        columns = t.codes[:, None] * t.p + np.arange(t.p)  # Z_t's column of each entry of X_t
        parts.append(np.bincount(columns.ravel(), weights=(t.X * v[:, None]).ravel(),
                                 minlength=t.n_levels * t.p))
    return _split(np.concatenate(parts), design)


def _dense_Z(design: Design) -> np.ndarray:
    """Z as a dense n x q array, [Z_1 Z_2 ...]: row i of Z_t holds X_t[i] in the columns of its level."""
    Z = np.zeros((design.nobs, design.q))
    rows = np.arange(design.nobs)[:, None]
    offset = 0
    for t in design.terms:
        Z[rows, offset + t.codes[:, None] * t.p + np.arange(t.p)] = t.X
        offset += t.n_levels * t.p
    return Z


@dataclass(frozen=True, kw_only=True)
class PlsSolution:
    """The solution of the penalized least squares problem at one theta: the
    blocked Cholesky factor of ``factorize`` and the estimates it gives."""

    theta: np.ndarray
    factor: "CholeskyFactor"
    beta: np.ndarray
    u: np.ndarray  # spherical random effects, level by level within each term
    N: np.ndarray | sp.csr_matrix = field(repr=False)  # Z_2'Z_1, for L21

    @cached_property
    def L21(self) -> np.ndarray | sp.csr_matrix:
        """The block L_21 = Lambda_2' N (I x T_1 L_11,k^{-T}) of L_theta,
        (q_2, q_1), with the pattern of N = Z_2'Z_1 (sparse on the sparse
        path). The computations never need it: ``L`` shows it."""
        f, N = self.factor, self.N
        if sp.issparse(N):
            k, a, b = np.indices(f.TLt.shape).reshape(3, -1)
            p1 = f.TLt.shape[1]
            blocks = sp.csr_matrix((f.TLt.ravel(), (k * p1 + a, k * p1 + b)),
                                   shape=(N.shape[1],) * 2)
            return sp.csr_matrix(f.Lam2.T @ (N @ blocks))
        N_levels = N.reshape(N.shape[0], *f.TLt.shape[:2])
        return f.Lam2.T @ np.einsum("ika,kab->ikb", N_levels,
                                    f.TLt).reshape(N.shape)

    # the factor's numbers in the book's notation
    @property
    def r2(self) -> float:
        """r^2(theta), the penalized residual sum of squares."""
        return self.factor.r2

    @property
    def logdet_L2(self) -> float:
        """log |L_theta|^2."""
        return self.factor.logdet_L2

    @property
    def logdet_RX2(self) -> float:
        """log |R_X|^2."""
        return self.factor.logdet_RX2

    @property
    def R_X(self) -> np.ndarray:
        """R_X, with R_X'R_X = X'X - R_ZX'R_ZX."""
        return self.factor.R_X

    @property
    def L(self) -> np.ndarray:
        """L_theta as one dense q x q lower-triangular matrix (for display;
        the code uses the blocks)."""
        f = self.factor
        l1, p1 = f.L11.shape[:2]
        q1, q2 = l1 * p1, f.L22.shape[0]
        L = np.zeros((q1 + q2, q1 + q2))
        for k in range(l1):
            L[k * p1:(k + 1) * p1, k * p1:(k + 1) * p1] = f.L11[k]
        L[q1:, :q1] = (self.L21.toarray() if sp.issparse(self.L21)
                       else self.L21)
        L[q1:, q1:] = f.L22
        return L


def _cholesky_blocks(A: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of a stack of small p x p matrices, shape (l, p, p).

    A loop over the p columns with every operation vectorized over the l levels: for the
    tiny blocks of a random-effects term this is much faster than l LAPACK calls.
    """
    p = A.shape[1]
    if p == 1:
        return np.sqrt(A)
    L = np.zeros_like(A)
    for j in range(p):  # column j: its diagonal, then everything below it at once
        d = A[:, j, j] - np.einsum("lk,lk->l", L[:, j, :j], L[:, j, :j]) if j else A[:, j, j]
        L[:, j, j] = np.sqrt(d)
        if j + 1 < p:
            below = A[:, j + 1:, j] - np.einsum("lik,lk->li", L[:, j + 1:, :j], L[:, j, :j]) if j else A[:, j + 1:, j]
            L[:, j + 1:, j] = below / L[:, j, j, None]
    return L


def _invert_lower_blocks(L: np.ndarray) -> np.ndarray:
    """Inverses of a stack of lower-triangular p x p blocks, column by column, vectorized over levels."""
    p = L.shape[1]
    if p == 1:
        return 1.0 / L
    inv = np.zeros_like(L)
    for j in range(p):
        inv[:, j, j] = 1.0 / L[:, j, j]
        for i in range(j + 1, p):
            inv[:, i, j] = -np.sum(L[:, i, j:i] * inv[:, j:i, j], axis=1) / L[:, i, i]
    return inv


def _trsolve(R: np.ndarray, b: np.ndarray, **kwargs) -> np.ndarray:
    """Triangular solve by LAPACK; an empty system has an empty solution."""
    return dtrtrs(R, b, **kwargs)[0] if R.size else np.zeros_like(b)


TRIANGULAR_LEAF = 128  # below this order, LAPACK's dtrtri inverts a triangle directly


def lower_triangular_inverse(L: np.ndarray) -> np.ndarray:
    r"""The lower triangle of :math:`L^{-1}` for a lower-triangular L (only its lower triangle is
    read), in Fortran order (the upper triangle is left undefined), by halves:

    .. math::
        \begin{bmatrix} L_{11} & 0 \\ L_{21} & L_{22} \end{bmatrix}^{-1}
        = \begin{bmatrix} X_{11} & 0 \\ -X_{22} L_{21} X_{11} & X_{22} \end{bmatrix}, \qquad
        X_{ii} = L_{ii}^{-1},

    down to blocks of order ``TRIANGULAR_LEAF``, which LAPACK's dtrtri inverts. Most of the work
    is then in two triangular matrix products (dtrmm), which run faster than dtrtri's own
    blocking on a large triangle (about 12 against 16 ms at order 1114 on one core)."""
    n = L.shape[0]
    if n <= TRIANGULAR_LEAF:
        X, info = dtrtri(L, lower=1)
        if info != 0:
            raise np.linalg.LinAlgError("a triangular factor is singular")
        return X
    m = n // 2
    X11 = lower_triangular_inverse(np.asfortranarray(L[:m, :m]))
    X22 = lower_triangular_inverse(np.asfortranarray(L[m:, m:]))
    X = np.zeros((n, n), order="F")
    X[m:, :m] = dtrmm(-1.0, X22, dtrmm(1.0, X11, L[m:, :m], side=1, lower=1), lower=1, overwrite_b=1)
    X[:m, :m] = X11
    X[m:, m:] = X22
    return X


def cholesky_inverse(L: np.ndarray) -> np.ndarray:
    r""":math:`(LL^\top)^{-1} = L^{-\top}L^{-1}` from a lower Cholesky factor L, in Fortran
    order: its lower triangle (the upper one is left undefined). What LAPACK's dpotri computes, with
    the triangular inverse taken by halves (``lower_triangular_inverse``) and multiplied out by
    dlauum."""
    G, info = dlauum(lower_triangular_inverse(L), lower=1, overwrite_c=1)
    assert info == 0, "dlauum reports only invalid arguments"
    return G


def _lambda_rest(theta: np.ndarray, design: Design, sparse: bool = False) -> np.ndarray | sp.csr_matrix:
    """Lambda_2, the block of Lambda_theta for the terms after the first (q_2, q_2), dense or sparse."""
    rows, cols, which = design.lambda_index_rest
    q2 = design.q - design.terms[0].n_levels * design.terms[0].p
    if sparse:
        return sp.csr_matrix((theta[which], (rows, cols)), shape=(q2, q2))
    Lam = np.zeros((q2, q2))
    Lam[rows, cols] = theta[which]
    return Lam


def _sandwich(Lam: np.ndarray | sp.csr_matrix, M: np.ndarray) -> np.ndarray:
    """Lam' M Lam for a symmetric dense M, with Lam dense or sparse."""
    if sp.issparse(Lam):
        return Lam.T @ np.ascontiguousarray((Lam.T @ M).T)
    return Lam.T @ M @ Lam


def _schur_complement(cp: CrossProducts, W: np.ndarray, Lam2, dW: np.ndarray | None = None):
    """S22 = Z_2'Z_2 - N W N' for the level blocks W (l_1, p_1, p_1), the matrix
    Lambda_2' S22 Lambda_2 + I = A_22 - L_21 L_21' (its lower triangle) that L_22 factors, and,
    given the derivatives dW (l_1, n, p_1, p_1) of W, those of S22, -N dW_i N' (else None).

    Dense path: S22 is a dense array, N W N' a matrix product, and the derivatives are n dense
    arrays. Sparse path: S22 is its values at ``cp.schur``'s positions, and the derivatives their
    values there, all from one product with K (and one with N for the dense rows,
    ``SchurMap.schur``); with a diagonal Lambda_2 only the lower triangle is ever filled.
    """
    s = cp.schur
    if s is None:
        N = cp.Z2Z1
        l1, p1 = W.shape[:2]

        def N_X_Nt(X: np.ndarray) -> np.ndarray:  # N X N' for level blocks X (l_1, p_1, p_1)
            NX = N * X[:, 0, 0] if p1 == 1 else np.einsum("ika,kab->ikb", N.reshape(-1, l1, p1), X).reshape(N.shape)
            return NX @ N.T

        S22 = cp.Z2Z2 - N_X_Nt(W)
        dS22 = None if dW is None else np.stack([-N_X_Nt(dW[:, i]) for i in range(dW.shape[1])])
        S = _sandwich(Lam2, S22)
    else:
        S22, dS22 = s.schur(W, dW)
        if s.scalar:
            S = s.dense(s.scaled(Lam2.diagonal(), S22), full=False)
        else:
            S = _sandwich(Lam2, s.dense(S22))
    S[np.diag_indices_from(S)] += 1.0
    return S22, S, dS22


def _weight_derivatives(TA: np.ndarray, W: np.ndarray, Z1Z1: np.ndarray,
                        lower: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    r"""The derivatives of :math:`W_k = T_1 A_{11,k}^{-1} T_1^\top` in the first term's
    :math:`\theta_i`, (l_1, n_theta_1, p_1, p_1): with :math:`E_i = \partial T_1/\partial\theta_i`
    (a 1 at ``lower``'s position i) and ``TA`` holding :math:`T_1 A_{11,k}^{-1}`,

    .. math::
        \frac{\partial W_k}{\partial\theta_i} = B_k + B_k^\top, \qquad
        B_k = (I - W_k Z_1^\top Z_{1,k})\,E_i\,(T_1 A_{11,k}^{-1})^\top

    (from :math:`\partial A^{-1} = -A^{-1}(\partial A)A^{-1}`; for a scalar term,
    :math:`2\theta/(1 + \theta^2 n_k)^2`)."""
    r, c = lower
    I_WC = np.eye(W.shape[1]) - W @ Z1Z1
    # B[k, i, a, b] = (I - W_k Z_1'Z_1,k)[a, r_i] (T_1 A_11,k^{-1})[b, c_i]
    B = np.swapaxes(I_WC[:, :, r], 1, 2)[:, :, :, None] * np.swapaxes(TA[:, :, c], 1, 2)[:, :, None, :]
    return B + np.swapaxes(B, 2, 3)


def _inverse_products(cp: CrossProducts, f, rows: np.ndarray | None = None, cols: np.ndarray | None = None):
    r"""From :math:`G_{22} = (L_{22}L_{22}^\top)^{-1}`: :math:`H = \Lambda_2 G_{22}\Lambda_2^\top` and
    the values of :math:`M_{22} = (Z_2^\top Z_2 - N W N^\top)\Lambda_2 G_{22}` at the positions
    (rows, cols) of :math:`\Lambda_2` if given (module docstring). Returns :math:`G_{22}` (its lower
    triangle on the sparse path with a diagonal :math:`\Lambda_2`), H (on the sparse path, its
    values at ``cp.schur``'s positions) and those values of :math:`M_{22}` (None without rows).
    """
    G22 = cholesky_inverse(f.L22)
    s, Lam2 = cp.schur, f.Lam2
    if s is not None and s.scalar:  # everything on the positions: H = lam G22 lam
        lam = Lam2.diagonal()
        g = s.at_positions(G22)
        h = s.scaled(lam, g)
        if rows is None:
            return G22, h, None
        # With Lambda_2 diagonal, Lambda'M = Lambda'Z'Z Lambda A^{-1} = (A - I) A^{-1} = I - A^{-1}
        # gives M_rr = (1 - G22_rr) / lam_r directly, while 1 - G22_rr is far from rounding
        # (then its relative error is below 1e-12)
        complement = 1.0 - np.diagonal(G22)
        if np.all(complement > IDENTITY_FLOOR):
            return G22, h, (complement / lam)[rows]
        # else (S22 Lambda_2 G22)_rr = sum_j S22_rj lam_j G22_jr, over both triangles: each
        # position (r, c) adds to row r, and to row c unless on the diagonal
        e = f.S22 * g
        lam_rows, lam_cols = lam[s.rows], lam[s.cols]
        mirrored = e * lam_rows
        mirrored[s.on_diagonal] = 0.0
        m22 = (np.bincount(s.rows, weights=e * lam_cols, minlength=s.q2)
               + np.bincount(s.cols, weights=mirrored, minlength=s.q2))
        return G22, h, m22[rows]
    G22 = np.tril(G22) + np.tril(G22, -1).T
    H = _sandwich(Lam2.T, G22)  # Lambda_2 G22 Lambda_2'
    h = H if s is None else s.at_positions(H)
    if rows is None:
        return G22, h, None
    LG = np.asarray(Lam2 @ G22)
    S22 = f.S22 if s is None else s.dense(f.S22)
    return G22, h, np.einsum("ij,ji->i", S22[rows], LG[:, cols])


def _level_quadratics(cp: CrossProducts, h: np.ndarray, l1: int, p1: int) -> np.ndarray:
    r"""The level blocks :math:`Q_k = N_k^\top H N_k` (l_1, p_1, p_1) of :math:`N^\top H N`, from H as
    ``_inverse_products`` gives it."""
    if cp.schur is not None:
        return cp.schur.level_quadratics(h, l1, p1)
    N = cp.Z2Z1
    if p1 == 1:
        return np.einsum("ik,ik->k", N, h @ N)[:, None, None]
    return np.einsum("ika,ikb->kab", N.reshape(-1, l1, p1), (h @ N).reshape(-1, l1, p1))


def _schur_traces(f, cp: CrossProducts, h: np.ndarray) -> np.ndarray:
    r""":math:`\operatorname{tr}(H\,\partial S_{22}/\partial\theta_i)` for each entry :math:`\theta_i` of
    the first term's template, from ``f.dS22`` (``factorize(derivatives=True)``) and H as
    ``_inverse_products`` gives it: over the whole matrices on the dense path, over the lower
    triangle's positions on the sparse path, where off-diagonal positions count twice."""
    s = cp.schur
    if s is None:
        return np.einsum("rc,irc->i", h, f.dS22)
    return 2.0 * (h @ f.dS22) - h[s.on_diagonal] @ f.dS22[s.on_diagonal]


@dataclass(frozen=True, kw_only=True)
class CholeskyFactor:
    """The blocked Cholesky factor at one theta, with c_u, c_beta and r^2 (``factorize``). The
    fields from ``RZX`` on are filled once L_theta is known (L_theta alone solves with it)."""

    T1: np.ndarray  # the first term's template
    Lam2: np.ndarray | sp.csr_matrix  # Lambda for the other terms
    L11: np.ndarray
    L11_inv: np.ndarray  # inverses of the tiny L11 blocks: triangular solves become batched products
    TLt: np.ndarray  # T_1 L_11,k^{-T}, level by level: L_21 = Lambda_2' N (I x TLt)
    S22: np.ndarray  # Z_2'Z_2 - N W N', so that A_22 - L_21 L_21' = Lambda_2' S22 Lambda_2 + I
    L22: np.ndarray
    # dS22 / dtheta_i for the first term's theta_i (factorize(derivatives=True)): (n, q_2, q_2) on the
    # dense path, (positions, n) on the sparse path
    dS22: np.ndarray | None = None
    RZX: np.ndarray | None = None  # (q, P): the first term's rows level by level, then the rest
    R_X: np.ndarray | None = None
    cu: np.ndarray | None = None  # (q,)
    c_beta: np.ndarray | None = None
    logdet_L2: float = float("nan")  # log |L_theta|^2
    logdet_RX2: float = float("nan")  # log |R_X|^2
    r2: float = float("nan")  # r^2(theta)


def _lower_solve(f: CholeskyFactor, cp: CrossProducts, B1: np.ndarray, B2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve L_theta x = [B1; B2] with B1 (l_1, p_1, m), B2 (q_2, m): forward substitution by blocks."""
    x1 = f.L11_inv @ B1
    if not cp.q2:
        return x1, B2
    L21x1 = f.Lam2.T @ (cp.Z2Z1 @ (f.TLt @ x1).reshape(cp.Z2Z1.shape[1], B1.shape[2]))
    return x1, _trsolve(f.L22, B2 - L21x1, lower=1)


def _upper_solve(f: CholeskyFactor, cp: CrossProducts, B1: np.ndarray, B2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve L_theta' x = [B1; B2]: back substitution by blocks (the second block first)."""
    if not cp.q2:
        return np.swapaxes(f.L11_inv, 1, 2) @ B1, B2
    x2 = _trsolve(f.L22, B2, lower=1, trans=1)
    L21tx2 = np.swapaxes(f.TLt, 1, 2) @ (cp.Z2Z1.T @ (f.Lam2 @ x2)).reshape(B1.shape)
    return np.swapaxes(f.L11_inv, 1, 2) @ (B1 - L21tx2), x2


def factorize(theta: np.ndarray, design: Design, cp: CrossProducts, *,
              derivatives: bool = False) -> CholeskyFactor:
    """L_theta (two blocks, module docstring), R_ZX and R_X, and
    r^2(theta) = y'y - |c_u|^2 - |c_beta|^2.

    With y as one more column of X, one blocked solve gives
    [R_ZX c_u] = L_theta^{-1} Lambda'Z'[X y], and the Cholesky factor of
    [X y]'[X y] - [R_ZX c_u]'[R_ZX c_u] is [R_X c_beta; 0 r] with
    r^2 = r^2(theta): its last pivot is y'y - |c_u|^2 - |c_beta|^2.
    With ``derivatives`` (for the gradient), the factor also holds the
    derivatives of S22 in the first term's theta.
    """
    t = design.terms[0]
    T1 = t.template(theta[design.theta_slices[0]])
    # A_11, level by level
    L11 = _cholesky_blocks(T1.T @ cp.Z1Z1 @ T1 + np.eye(t.p))
    L11_inv = _invert_lower_blocks(L11)
    TLt = T1 @ np.swapaxes(L11_inv, 1, 2)
    Lam2, S22, L22 = np.zeros((0, 0)), np.zeros((0, 0)), np.zeros((0, 0))
    dS22 = None
    if cp.q2:
        Lam2 = _lambda_rest(theta, design, sparse=cp.schur is not None)
        W = TLt @ np.swapaxes(TLt, 1, 2)  # W_k = T_1 A_11,k^{-1} T_1'
        dW = (_weight_derivatives(TLt @ L11_inv, W, cp.Z1Z1, t.lower)
              if derivatives else None)
        S22, S, dS22 = _schur_complement(cp, W, Lam2, dW)
        L22, info = dpotrf(S, lower=1, clean=1, overwrite_a=1)
        if info != 0:
            raise np.linalg.LinAlgError(
                "Lambda' Z'Z Lambda + I is not positive definite")
    # L_theta alone
    lower = CholeskyFactor(T1=T1, Lam2=Lam2, L11=L11, L11_inv=L11_inv,
                           TLt=TLt, S22=S22, L22=L22, dS22=dS22)
    R1, R2 = _lower_solve(lower, cp, T1.T @ cp.Z1Xy, Lam2.T @ cp.Z2Xy)
    RZXy = np.vstack([R1.reshape(t.n_levels * t.p, cp.p + 1), R2])
    RZX, cu, R_X, c_beta, r2 = _fixed_effects_factor(cp, RZXy)
    logdet_L2 = 2.0 * (np.log(np.diagonal(L11, axis1=1, axis2=2)).sum()
                       + np.log(np.diag(L22)).sum())
    logdet_RX2 = 2.0 * np.log(np.abs(np.diag(R_X))).sum()
    return replace(lower, RZX=RZX, R_X=R_X, cu=cu, c_beta=c_beta,
                   logdet_L2=float(logdet_L2),
                   logdet_RX2=float(logdet_RX2), r2=float(r2))


def _fixed_effects_factor(cp: CrossProducts, RZXy: np.ndarray):
    """R_ZX, c_u, R_X, c_beta and r^2 from
    [R_ZX c_u] = L_theta^{-1} Lambda'Z'[X y]: the Cholesky factor of
    [X y]'[X y] - [R_ZX c_u]'[R_ZX c_u] is [R_X c_beta; 0 r], with
    r^2 = r^2(theta)."""
    RXy, info = dpotrf(cp.XyXy - RZXy.T @ RZXy, lower=0, clean=1)
    RZX, cu = RZXy[:, :-1], RZXy[:, -1]
    if info == cp.p + 1:
        # Only the last pivot failed: r^2(theta) <= 0 in floating point (a
        # response fitted exactly). LAPACK does not document what a failed
        # factorization leaves behind, so R_X and c_beta are computed on
        # their own.
        R_X, info = (dpotrf(cp.XtX - RZX.T @ RZX, lower=0, clean=1)
                     if cp.p else (np.zeros((0, 0)), 0))
        c_beta = _trsolve(R_X, cp.Xty - RZX.T @ cu, lower=0, trans=1)
        r2 = np.finfo(float).tiny
    else:
        R_X, c_beta = RXy[:-1, :-1], RXy[:-1, -1]
        r2 = max(RXy[-1, -1] ** 2, np.finfo(float).tiny)
    if info:
        raise np.linalg.LinAlgError(
            "X'X - R_ZX'R_ZX is not positive definite: X is rank deficient")
    return RZX, cu, R_X, c_beta, r2


def _split(v: np.ndarray, design: Design) -> tuple[np.ndarray, np.ndarray]:
    """A q-vector (or q x m matrix) as the first term's (l_1, p_1, ...) blocks and the rest."""
    t = design.terms[0]
    q1 = t.n_levels * t.p
    return v[:q1].reshape(t.n_levels, t.p, *v.shape[1:]), v[q1:]


def _estimates(f: CholeskyFactor, design: Design, cp: CrossProducts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """beta-hat - gamma = R_X^{-1} c_beta and u-tilde = L_theta^{-T}(c_u - R_ZX (beta-hat - gamma)), u as (blocks, rest)."""
    beta = _trsolve(f.R_X, f.c_beta, lower=0)
    r1, r2 = _split(f.cu - f.RZX @ beta, design)
    u1, u2 = _upper_solve(f, cp, r1[:, :, None], r2[:, None])
    return beta, u1[:, :, 0], u2[:, 0]


def pls(theta: np.ndarray, design: Design, cp: CrossProducts) -> PlsSolution:
    """Solve the penalized least squares problem for ``theta``: beta-hat and
    u-tilde (module docstring)."""
    theta = np.atleast_1d(np.asarray(theta, dtype=float))
    f = factorize(theta, design, cp)
    beta, u1, u2 = _estimates(f, design, cp)
    return PlsSolution(theta=theta, factor=f, beta=beta + cp.gamma,
                       u=np.concatenate([u1.ravel(), u2]), N=cp.Z2Z1)


def criterion_from_parts(logdet_L2, logdet_RX2, r2, n: int, p: int,
                         reml: bool):
    """The REML criterion
    d_R = log|L|^2 + log|R_X|^2 + (n - p)(1 + log(2 pi r^2 / (n - p)))
    if ``reml``, else the profiled deviance
    d = log|L|^2 + n (1 + log(2 pi r^2 / n)) (module docstring).

    Elementwise for arrays: the vectorized replicates of ``resampling.lrt``
    use it for many responses at once."""
    if reml:
        dof = n - p
        return (logdet_L2 + logdet_RX2
                + dof * (1.0 + np.log(2.0 * np.pi * r2 / dof)))
    return logdet_L2 + n * (1.0 + np.log(2.0 * np.pi * r2 / n))


def criterion_value(f: "CholeskyFactor | PlsSolution", n: int, p: int, reml: bool) -> float:
    """The profiled deviance d(theta) (ML) or REML criterion d_R(theta) from the log-determinants
    and r^2 of a factor or a PLS solution (``criterion_from_parts``)."""
    return float(criterion_from_parts(f.logdet_L2, f.logdet_RX2, f.r2, n, p, reml))


def profiled_criterion(theta: np.ndarray, design: Design, cp: CrossProducts, reml: bool) -> float:
    """The objective minimized over theta: d_R(theta) if ``reml`` else d(theta)."""
    theta = np.atleast_1d(np.asarray(theta, dtype=float))
    return criterion_value(factorize(theta, design, cp), cp.n, cp.p, reml)


# ---- A^{-1} by blocks, and the gradient ------------------------------------------------------------
def inverse_blocks(f: CholeskyFactor, cp: CrossProducts) -> tuple[np.ndarray, np.ndarray]:
    r"""The blocks of :math:`G = A^{-1} = (L_\theta L_\theta^\top)^{-1}` that the conditional
    variances need: the first term's diagonal blocks :math:`G_{11,kk}` (l_1, p_1, p_1),
    :math:`A_{11,k}^{-1} + A_{11,k}^{-1}T_1^\top Q_k T_1 A_{11,k}^{-1}`, and
    :math:`G_{22} = (L_{22}L_{22}^\top)^{-1}` (q_2, q_2). The block between them is never formed.
    """
    A11_inv = np.swapaxes(f.L11_inv, 1, 2) @ f.L11_inv
    if not cp.q2:
        return A11_inv, np.zeros((0, 0))
    TA = f.T1 @ A11_inv  # T_1 A_11,k^{-1}
    G22, h, _ = _inverse_products(cp, f)
    Q = _level_quadratics(cp, h, *A11_inv.shape[:2])
    G11 = A11_inv + np.swapaxes(TA, 1, 2) @ Q @ TA
    return G11, np.tril(G22) + np.tril(G22, -1).T


def _pattern_sums(M11: np.ndarray, m22: np.ndarray, design: Design) -> np.ndarray:
    """tr(E_i' M) for every theta_i: the sum of M over the positions of Lambda that hold theta_i.

    Only the diagonal blocks of M are needed: M11 (l_1, p_1, p_1) for the first term and, for
    the others, the values ``m22`` of M at the positions of Lambda_2 (``design.lambda_index_rest``).
    """
    out = np.zeros(len(design.theta_lower))
    t = design.terms[0]
    rows, cols = t.lower
    out[design.theta_slices[0]] = M11.sum(axis=0)[rows, cols]
    if m22.size:
        out += np.bincount(design.lambda_index_rest[2], weights=m22, minlength=len(out))
    return out


def _ZtZ_times(cp: CrossProducts, v1: np.ndarray, v2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Z'Z v for v = [v1 (l_1, p_1, m); v2 (q_2, m)], as blocks."""
    out1 = cp.Z1Z1 @ v1
    if not cp.q2:
        return out1, np.zeros((0, v1.shape[2]))
    out2 = cp.Z2Z1 @ v1.reshape(cp.Z2Z1.shape[1], v1.shape[2]) + cp.Z2Z2 @ v2
    return out1 + (cp.Z2Z1.T @ v2).reshape(v1.shape), out2


def criterion_and_gradient(theta: np.ndarray, design: Design, cp: CrossProducts, reml: bool) -> tuple[float, np.ndarray]:
    """The profiled criterion and its gradient in theta (formulas in the module docstring), by
    blocks, or on the whole q x q matrices for a small model (``cp.whole``)."""
    theta = np.atleast_1d(np.asarray(theta, dtype=float))
    if cp.whole:
        return _whole_criterion_and_gradient(theta, design, cp, reml)
    f = factorize(theta, design, cp, derivatives=True)
    T1, Lam2 = f.T1, f.Lam2
    beta, u1, u2 = _estimates(f, design, cp)
    rows, cols, _ = design.lambda_index_rest
    TA = f.TLt @ f.L11_inv  # T_1 A_11,k^{-1} = (T_1 L_11,k^{-T}) L_11,k^{-1}, as factorize forms it for dW
    # the first term: d log|A_11,k| / d theta_i level by level, and tr(H dS22 / d theta_i) for
    # log|Lambda_2' S22 Lambda_2 + I|; the others: M22 at the positions of Lambda_2
    if cp.q2:
        _, h, m22 = _inverse_products(cp, f, rows, cols)
    else:
        m22 = np.zeros(0)
    d_logdet = 2.0 * _pattern_sums(cp.Z1Z1 @ TA, m22, design)
    if cp.q2:
        d_logdet[design.theta_slices[0]] += _schur_traces(f, cp, h)
    # Z'e with e = y - X beta - Z Lambda u
    ZZb1, ZZb2 = _ZtZ_times(cp, (u1 @ T1.T)[:, :, None], (Lam2 @ u2)[:, None])
    Zte1 = cp.Z1y - cp.Z1X @ beta - ZZb1[:, :, 0]
    Zte2 = cp.Z2y - cp.Z2X @ beta - ZZb2[:, 0]
    d_r2 = -2.0 * _pattern_sums(Zte1[:, :, None] * u1[:, None, :], Zte2[rows] * u2[cols], design)
    dof = cp.n - cp.p if reml else cp.n
    gradient = d_logdet + dof * d_r2 / f.r2
    if reml and cp.p:
        R_inv = _trsolve(f.R_X, np.eye(cp.p), lower=0)
        Phi = R_inv @ R_inv.T  # (R_X' R_X)^{-1}
        # W = Z'X - Z'Z Lambda G Lambda' Z'X, with G Lambda' Z'X = L^{-T} R_ZX
        V1, V2 = _upper_solve(f, cp, *_split(f.RZX, design))
        ZZ1, ZZ2 = _ZtZ_times(cp, T1 @ V1, Lam2 @ V2)
        W1, W2 = cp.Z1X - ZZ1, cp.Z2X - ZZ2
        N11 = W1 @ Phi @ np.swapaxes(W1, 1, 2) @ T1
        n22 = np.einsum("ij,ij->i", (W2 @ Phi)[rows], (Lam2.T @ W2)[cols]) if cp.q2 else np.zeros(0)
        gradient = gradient - 2.0 * _pattern_sums(N11, n22, design)
    return criterion_value(f, cp.n, cp.p, reml), gradient


def _whole_criterion_and_gradient(theta: np.ndarray, design: Design,
                                  cp: CrossProducts,
                                  reml: bool) -> tuple[float, np.ndarray]:
    r"""``criterion_and_gradient`` for a small model, from one Cholesky factor.

    With :math:`\tilde\Lambda = \operatorname{diag}(\Lambda, I)` and
    :math:`C = [Z\,X\,y]^\top[Z\,X\,y]` (``CrossProducts.gram``), the module docstring's
    blocked factor is one factor of one matrix,

    .. math::
        F F^\top = \tilde\Lambda^\top C \tilde\Lambda + \begin{bmatrix} I_q & 0 \\ 0 & 0 \end{bmatrix},
        \qquad F = \begin{bmatrix} L_\theta & 0 \\ [R_{ZX}\; c_u]^\top & T^\top \end{bmatrix},
        \qquad T = \begin{bmatrix} R_X & c_\beta \\ 0 & r \end{bmatrix},

    with :math:`r^2 = r^2(\theta)` (and the response stored as :math:`y - X\gamma`, so that
    :math:`\hat\beta` below stands for :math:`\hat\beta - \gamma`, ``CrossProducts.with_response``).
    Since that matrix times :math:`(\tilde u, \hat\beta, -1)` is
    :math:`(0, 0, -r^2)` (the normal equations), :math:`(\tilde u, \hat\beta, -1) = -r F^{-\top} e`:
    :math:`-r` times the last row of :math:`F^{-1}`. The leading block of :math:`F^{-1}` is
    :math:`L_\theta^{-1}`, so :math:`G = A^{-1} = L_\theta^{-\top}L_\theta^{-1}`, and its rows
    :math:`\Phi` for X are :math:`[-R_X^{-\top}R_{ZX}^\top L_\theta^{-1}\;\; R_X^{-\top}]`, so that
    :math:`W_X R_X^{-1} = Z^\top[Z\,X]\,\tilde\Lambda\,\Phi^\top`. Entry i of the gradient
    sums the module docstring's terms over the positions (r, c) of Lambda that hold theta_i,
    with :math:`M_{rc} = (Z^\top Z\Lambda)_{r\cdot} G_{\cdot c}`. When every term is scalar,
    Lambda is diagonal: its products are scalings, and its positions the diagonal (r = c).
    An exact fit (:math:`r^2 \le 0` in floating point) is left to the blocked evaluation.
    """
    rows, cols, which = design.lambda_index
    q, p = design.q, cp.p
    C = cp.gram
    if cp.scalar_terms:
        lam_all = np.ones(q + p + 1)  # the diagonal of Lambda-tilde
        lam_all[:q] = lam = theta[which]
        augmented = lam_all[:, None] * C * lam_all
    else:
        Lam_all = np.eye(q + p + 1)
        Lam_all[:q, :q] = 0.0
        Lam_all[rows, cols] = theta[which]
        augmented = Lam_all.T @ C @ Lam_all
    np.einsum("ii->i", augmented)[:q] += 1.0  # a writeable view of the diagonal
    F, info = dpotrf(augmented, lower=1, clean=1, overwrite_a=1)
    if info == q + p + 1:  # only the last pivot failed: r^2 <= 0
        return criterion_and_gradient(theta, design, replace(cp, whole=False), reml)
    if 0 < info <= q:
        raise np.linalg.LinAlgError(
            "Lambda' Z'Z Lambda + I is not positive definite")
    if info:
        raise np.linalg.LinAlgError(
            "X'X - R_ZX'R_ZX is not positive definite: X is rank deficient")
    F_inv, _ = dtrtri(F, lower=1)
    r = F[-1, -1]
    estimates = -r * F_inv[-1]  # (u-tilde, beta-hat - gamma, -1)
    u = estimates[:q]
    L_inv = F_inv[:q, :q]
    G = L_inv.T @ L_inv
    r2 = max(r * r, np.finfo(float).tiny)  # as _fixed_effects_factor floors it
    dof = cp.n - p if reml else cp.n
    if cp.scalar_terms:
        Zte = -(C[:q] @ (lam_all * estimates))  # Z'e
        at_positions = (2.0 * ((C[:q, :q] * G) @ lam)
                        - 2.0 * dof * (Zte * u) / r2)
        if reml and p:
            WR = C[:q, :q + p] @ (lam_all[:q + p, None] * F_inv[q:q + p, :q + p].T)
            at_positions -= 2.0 * lam * np.einsum("ij,ij->i", WR, WR)
    else:
        Zte = -(C[:q] @ (Lam_all @ estimates))
        ZtZ_Lam = C[:q, :q] @ Lam_all[:q, :q]
        at_positions = (2.0 * np.einsum("ij,ij->i", ZtZ_Lam[rows], G[cols])
                        - 2.0 * dof * (Zte[rows] * u[cols]) / r2)
        if reml and p:
            WR = C[:q, :q + p] @ (Lam_all[:q + p, :q + p] @ F_inv[q:q + p, :q + p].T)
            Lam_WR = Lam_all[:q, :q].T @ WR
            at_positions -= 2.0 * np.einsum("ij,ij->i", WR[rows], Lam_WR[cols])
    gradient = np.bincount(which, weights=at_positions,
                           minlength=len(theta))
    diagonal = np.log(np.abs(F.diagonal()))
    logdet_L2 = 2.0 * diagonal[:q].sum()
    logdet_RX2 = 2.0 * diagonal[q:q + p].sum()
    value = criterion_from_parts(logdet_L2, logdet_RX2, r2, cp.n, p, reml)
    return float(value), gradient
