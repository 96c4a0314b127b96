r"""Random-effects structures: the intercept and slope that a model gives each group.

A model may spread a group's random coefficients over several columns and terms: ``(ses | g)``
gives every school one intercept and one ses slope; ``(ses:sector | g)`` gives one intercept and
a slope column per sector, of which a school uses the one of its own sector;
``(0 + d0 + d0:ses | g) + (0 + d1 + d1:ses | g)`` puts each sector's pair in a term of its own.
Whatever the parametrization, what a school *has* is the random part of its linear predictor,

.. math::
    r_j(x) = \sum_t z_t(x)^\top b_{t,j}, \qquad b_{t,j} \sim N(0, \Sigma_t) \text{ independently},

summed over the terms grouped by the same factor. For covariates ``at`` (a school's sector, say)
and a slope variable s, the school's random intercept is :math:`a_j = r_j(s = 0)` and its random
slope :math:`c_j = r_j(s = 1) - r_j(s = 0)` (the random part is linear in s). With
:math:`Z_0` the 2-row matrix of :math:`z_t` at s = 0 and s = 1, :math:`\operatorname{Cov}(r_j(0), r_j(1))
= C = \sum_t Z_{t} \Sigma_t Z_{t}^\top`, and :math:`(a_j, c_j)` has covariance :math:`A C A^\top` with
:math:`A = \begin{pmatrix} 1 & 0 \\ -1 & 1 \end{pmatrix}`. This is identified even where a model's
own parameters are not (the correlation of the two sector slopes in ``(ses:sector | g)``, or the
split of the intercept variance between the two terms of ``(d0:ses | g) + (d1:ses | g)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .checks import DataError
from .results import LmerFit


@dataclass(frozen=True)
class InterceptSlope:
    """A kind of group's random intercept and slope, ready to evaluate on a fit and its refits.

    Built once by ``intercept_slope`` (evaluating the terms' model matrices is the slow part);
    calling it on a fit of the same model (the fit it was built from, or a ``refit``) returns
    ``sd_intercept``, ``sd_slope`` and ``corr`` from that fit's covariances.
    """

    slope: str
    at: dict
    group: str
    terms: tuple[int, ...]  # indices of the group's terms in the design
    rows: tuple[np.ndarray, ...] = field(repr=False)  # each term's 2 x p_t model matrix at slope = 0, 1

    def __call__(self, fit: LmerFit) -> pd.Series:
        terms = fit.design.terms
        if max(self.terms) >= len(terms) or any(terms[k].group != self.group for k in self.terms) or any(
                terms[k].p != Z.shape[1] for k, Z in zip(self.terms, self.rows)):
            raise DataError("this intercept_slope was built for another model; build it from a fit of this one")
        covariances = list(fit.covariances().values())
        C = sum(Z @ covariances[k].to_numpy() @ Z.T for k, Z in zip(self.terms, self.rows))
        A = np.array([[1.0, 0.0], [-1.0, 1.0]])
        S = A @ C @ A.T
        sd = np.sqrt(np.maximum(np.diag(S), 0.0))
        corr = float(np.clip(S[0, 1] / (sd[0] * sd[1]), -1.0, 1.0)) if sd[0] * sd[1] > 0 else np.nan
        return pd.Series({"sd_intercept": sd[0], "sd_slope": sd[1], "corr": corr})


def intercept_slope(fit: LmerFit, slope: str, at: dict | None = None, group: str | None = None) -> InterceptSlope:
    """Prepare ``random_slope_correlation`` for many refits of one model (same arguments)."""
    if not isinstance(fit, LmerFit):
        raise TypeError("fit must be a model fitted with lmmnotes.lmer")
    factors = list(dict.fromkeys(t.group for t in fit.design.terms))
    if group is None:
        if len(factors) > 1:
            raise DataError(f"the model has several grouping factors {factors}; say which with group=")
        group = factors[0]
    if group not in factors:
        raise DataError(f"{group!r} is not a grouping factor of the model; its grouping factors are {factors}")
    at = dict(at or {})
    if slope in at:
        raise DataError(f"at= gives a value for {slope!r}, the slope variable; leave it out (it is set to 0 and 1)")
    frame = pd.DataFrame([{**at, slope: 0.0}, {**at, slope: 1.0}])
    indices, rows = [], []
    for k, t in enumerate(fit.design.terms):
        if t.group != group:
            continue
        try:
            Z = t.model_matrix(frame)
        except Exception as error:  # formulaic names the column it could not find or encode
            raise DataError(f"cannot evaluate the random-effects term ({' + '.join(t.columns)} | {t.group}) at "
                            f"{slope} = 0, 1 and at={at}: give at= a value for each column the term uses "
                            f"({type(error).__name__}: {error})") from None
        indices.append(k)
        rows.append(np.asarray(Z, dtype=float))
    return InterceptSlope(slope, at, group, tuple(indices), tuple(rows))


def random_slope_correlation(fit: LmerFit, slope: str, at: dict | None = None, group: str | None = None) -> pd.Series:
    """The SDs of a group's random intercept and random slope in ``slope``, and their correlation.

    Parameters
    ----------
    fit : a fitted model.
    slope : the covariate whose random slope is wanted (a numeric column, e.g. ``"ses"``).
    at : values of the other columns the random-effects terms use, describing the kind of group,
        e.g. ``{"sector": "Public"}``; not needed when the terms use ``slope`` alone.
    group : the grouping factor (default: the model's only one).

    Returns a Series ``sd_intercept``, ``sd_slope``, ``corr`` (NaN when an SD is 0), computed from
    the summed covariance of all the factor's terms (module docstring). For many refits of one
    model, build ``intercept_slope(fit, slope, at)`` once and call it on each refit.
    """
    return intercept_slope(fit, slope, at, group)(fit)
