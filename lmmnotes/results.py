r"""The fitted model: estimates, lme4's accessors, prediction and simulation.

At the optimum :math:`\hat\theta` everything follows from one penalized least squares solution
(``criterion.pls``): :math:`\hat\beta`, the conditional modes :math:`\tilde b = \Lambda_{\hat\theta}\tilde u`,
:math:`\hat\sigma^2 = r^2/n` (ML) or :math:`r^2/(n-p)` (REML),
:math:`\widehat{\operatorname{Var}}(\hat\beta) = \hat\sigma^2 R_X^{-1} R_X^{-\top}`, the covariance
of each term's random effects :math:`\hat\sigma^2 T_t T_t^\top`, and the conditional variance of
the random effects :math:`\hat\sigma^2 \Lambda (L L^\top)^{-1} \Lambda^\top`.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.sparse as sp

from .checks import DataError, check_nsim, require_columns
from .criterion import CrossProducts, PlsSolution, criterion_value, inverse_blocks, pls
from .datasets import level_labels
from .design import Design, canonical_theta
from .display import Summary, summary_text
from .model_frame import apply_spec, conform, factor_calls, formula_variables, unseen_levels
from .optimizer import OptimizerResult, optimize_theta, single_blas_thread

SINGULAR_TOLERANCE = 1e-4  # lme4's isSingular(tol = 1e-4)


@dataclass(frozen=True, kw_only=True)
class LmerFit:
    """A linear mixed model fitted by ``lmmnotes.lmer``: the result step of the pipeline."""

    design: Design = field(repr=False)
    cross_products: CrossProducts = field(repr=False)
    solution: PlsSolution = field(repr=False)
    reml: bool
    theta: np.ndarray
    sigma: float
    criterion: float
    converged: bool
    message: str
    optsum: OptimizerResult | None = field(repr=False, default=None)  # the optimization's record

    @classmethod
    def from_theta(cls, design: Design, cp: CrossProducts, reml: bool, theta: np.ndarray, *,
                   optsum: OptimizerResult | None = None, converged: bool = True, message: str = "") -> "LmerFit":
        """The fit at a given theta (the optimizer's answer, whose record ``optsum`` then also
        gives ``converged`` and ``message``), stored in its canonical form: a column of a template
        whose diagonal entry is negative is negated, which leaves the model unchanged
        (``canonical_theta``)."""
        theta = canonical_theta(theta, design)
        sol = pls(theta, design, cp)
        dof = cp.n - cp.p if reml else cp.n
        if optsum is not None:
            converged, message = optsum.converged, optsum.message
        return cls(design=design, cross_products=cp, solution=sol, reml=reml, theta=theta,
                   sigma=float(np.sqrt(sol.r2 / dof)), criterion=criterion_value(sol, cp.n, cp.p, reml),
                   converged=converged, message=message, optsum=optsum)

    # ---- sizes -------------------------------------------------------------------------------
    @property
    def formula(self) -> str:
        return self.design.formula.formula

    @property
    def nobs(self) -> int:
        return self.design.nobs

    @property
    def ngroups(self) -> dict[str, int]:
        """Number of levels of each grouping factor."""
        return {t.group: t.n_levels for t in self.design.terms}

    @property
    def n_parameters(self) -> int:
        """Fixed effects + covariance parameters + residual variance (for AIC and BIC)."""
        return len(self.design.x_names) + len(self.theta) + 1

    # ---- fixed effects -----------------------------------------------------------------------
    @property
    def fixef(self) -> pd.Series:
        return pd.Series(self.solution.beta, index=list(self.design.x_names), name="fixef")

    @property
    def vcov(self) -> pd.DataFrame:
        """sigma^2 R_X^{-1} R_X^{-T}, the estimated covariance matrix of the fixed effects."""
        Rinv = scipy.linalg.solve_triangular(self.solution.R_X, np.eye(len(self.solution.beta)))
        names = list(self.design.x_names)
        return pd.DataFrame(self.sigma**2 * Rinv @ Rinv.T, index=names, columns=names)

    @property
    def stderr(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self.vcov)), index=list(self.design.x_names), name="stderr")

    @property
    def tvalues(self) -> pd.Series:
        return (self.fixef / self.stderr).rename("t value")

    # ---- likelihood --------------------------------------------------------------------------
    @property
    def loglik(self) -> float:
        """The maximized log-likelihood (ML fits) or log restricted likelihood (REML fits)."""
        return -0.5 * self.criterion

    @property
    def aic(self) -> float:
        return -2.0 * self.loglik + 2.0 * self.n_parameters

    @property
    def bic(self) -> float:
        return -2.0 * self.loglik + np.log(self.nobs) * self.n_parameters

    @property
    def deviance(self) -> float:
        """-2 log-likelihood of an ML fit."""
        if self.reml:
            raise ValueError("deviance is defined for ML fits; this is a REML fit (use reml_criterion, "
                             "or refit with lmer(..., reml=False))")
        return self.criterion

    @property
    def reml_criterion(self) -> float:
        """-2 log restricted likelihood of a REML fit."""
        if not self.reml:
            raise ValueError("reml_criterion is defined for REML fits; this is an ML fit (use deviance)")
        return self.criterion

    @property
    def is_singular(self) -> bool:
        """True when some bounded theta is within 1e-4 of its bound of 0 (lme4's rule)."""
        bounded = self.design.theta_lower == 0
        return bool(np.any(self.theta[bounded] < SINGULAR_TOLERANCE))

    @property
    def status(self) -> str:
        """``"converged"``, ``"singular"`` (converged, but on the boundary: ``is_singular``) or
        ``"not converged"``: the three outcomes a simulation study counts."""
        if not self.converged:
            return "not converged"
        return "singular" if self.is_singular else "converged"

    # ---- variance components -----------------------------------------------------------------
    def group_names(self) -> list[str]:
        """Term labels as lme4 prints them: a repeated grouping factor gets .1, .2, ..."""
        seen: dict[str, int] = {}
        names = []
        for t in self.design.terms:
            k = seen.get(t.group, 0)
            names.append(t.group if k == 0 else f"{t.group}.{k}")
            seen[t.group] = k + 1
        return names

    def covariances(self) -> dict[str, pd.DataFrame]:
        """Covariance matrix sigma^2 T_t T_t' of each term's random effects."""
        out = {}
        for name, t, s in zip(self.group_names(), self.design.terms, self.design.theta_slices):
            T = t.template(self.theta[s])
            out[name] = pd.DataFrame(self.sigma**2 * T @ T.T, index=list(t.columns), columns=list(t.columns))
        return out

    @property
    def varcorr(self) -> pd.DataFrame:
        """Variance components laid out like lme4's ``as.data.frame(VarCorr(fit))``."""
        rows = []
        for name, cov in self.covariances().items():
            cols, values = list(cov.columns), cov.to_numpy()
            sd = np.sqrt(np.diag(values))
            rows += [(name, c, None, values[i, i], sd[i]) for i, c in enumerate(cols)]
            for j in range(len(cols)):
                for i in range(j + 1, len(cols)):
                    corr = values[i, j] / (sd[i] * sd[j]) if sd[i] * sd[j] > 0 else np.nan
                    rows.append((name, cols[j], cols[i], values[i, j], corr))
        rows.append(("Residual", None, None, self.sigma**2, self.sigma))
        frame = pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])
        for column in ("grp", "var1", "var2"):  # missing names show as <NA>, like R's NA
            frame[column] = pd.array(frame[column].tolist(), dtype="string")
        return frame

    # ---- random effects ----------------------------------------------------------------------
    def ranef_blocks(self) -> list[np.ndarray]:
        """Conditional modes b = Lambda u of each term, as (levels x p_t) arrays (``Design.term_effects``)."""
        return self.design.term_effects(self.solution.u, self.theta)

    def _conditional_sd_blocks(self) -> list[np.ndarray]:
        """sqrt of the diagonal of sigma^2 Lambda G Lambda', G = (L L')^{-1}, per term (levels x p_t)."""
        d = self.design
        G11, G22 = inverse_blocks(self.solution.factor, self.cross_products)
        first = d.terms[0]
        T1 = first.template(self.theta[d.theta_slices[0]])
        out = [self.sigma * np.sqrt(np.diagonal(T1 @ G11 @ T1.T, axis1=1, axis2=2))]
        if G22.size:
            Lam2 = self.solution.factor.Lam2
            LG = np.asarray(Lam2 @ G22)  # the diagonal of Lambda_2 G_22 Lambda_2', row by row
            diag = Lam2.multiply(LG).sum(axis=1).A1 if sp.issparse(Lam2) else np.einsum("ij,ij->i", LG, Lam2)
            sd = self.sigma * np.sqrt(diag)
            q1 = d.effect_slices[0].stop
            for t, effects in zip(d.terms[1:], d.effect_slices[1:]):
                out.append(sd[effects.start - q1:effects.stop - q1].reshape(t.n_levels, t.p))
        return out

    def ranef(self, condvar: bool = False) -> dict[str, pd.DataFrame]:
        """Conditional modes of the random effects: one DataFrame per grouping factor.

        Rows are the factor's levels, columns the term's columns; with ``condvar=True``, columns
        ``condsd_<name>`` hold the conditional standard deviations (conditional on the estimates,
        as lme4's ``condVar``). Terms on the same factor (from ``||``) share one DataFrame.
        """
        sds = self._conditional_sd_blocks() if condvar else None
        out: dict[str, pd.DataFrame] = {}
        for k, (t, b) in enumerate(zip(self.design.terms, self.ranef_blocks())):
            frame = pd.DataFrame(b, index=pd.Index(t.levels, name=t.group), columns=list(t.columns))
            if condvar:
                frame = frame.join(pd.DataFrame(sds[k], index=frame.index, columns=[f"condsd_{c}" for c in t.columns]))
            out[t.group] = frame if t.group not in out else out[t.group].join(frame)
        if condvar:  # put the modes first, then their standard deviations
            out = {g: f[[c for c in f.columns if not c.startswith("condsd_")] +
                        [c for c in f.columns if c.startswith("condsd_")]] for g, f in out.items()}
        return out

    def coef(self) -> dict[str, pd.DataFrame]:
        """Per-group coefficients: fixed effects plus the group's random effects (lme4's coef)."""
        out = {}
        fixef = self.fixef
        for group, re in self.ranef().items():
            frame = pd.DataFrame(np.tile(fixef.to_numpy(), (len(re), 1)), index=re.index, columns=fixef.index)
            for c in re.columns:
                if c in frame.columns:
                    frame[c] += re[c]
                else:
                    frame[c] = re[c]
            out[group] = frame
        return out

    # ---- fitted values, residuals, prediction -------------------------------------------------
    def _Zb(self) -> np.ndarray:
        out = np.zeros(self.nobs)
        for t, b in zip(self.design.terms, self.ranef_blocks()):
            out += np.sum(t.X * b[t.codes], axis=1)
        return out

    @property
    def offset(self) -> np.ndarray | float:
        """The offset of each row used (the sum of the formula's ``offset(...)`` terms), 0.0 without one."""
        return 0.0 if self.design.offset is None else self.design.offset

    def fitted(self) -> pd.Series:
        """offset + X beta + Z b, for the rows of the data the model used."""
        values = self.offset + self.design.X @ self.solution.beta + self._Zb()
        return pd.Series(values, index=self.design.row_index, name="fitted")

    def residuals(self) -> pd.Series:
        """y - fitted: the conditional (within-group) residuals."""
        return pd.Series(self.design.y - self.design.X @ self.solution.beta - self._Zb(), index=self.design.row_index,
                         name="residuals")

    def predict(self, newdata: pd.DataFrame | None = None, re_form: str | None = None, *,
                allow_new_levels: bool = False) -> pd.Series:
        """Predictions with the random effects (default) or at the population level (``re_form="~0"``),
        the offset included.

        For ``newdata``, a level of a grouping factor not seen in the fit is an error, as in lme4;
        with ``allow_new_levels=True`` it gets random effects of zero, i.e. the population-level
        prediction. A level of a fixed-effects factor not seen in the fit is always an error.
        """
        population = _is_population_form(re_form)
        if newdata is None:
            fixed = self.offset + self.design.X @ self.solution.beta
            values = fixed if population else fixed + self._Zb()
            return pd.Series(values, index=self.design.row_index, name="predicted")
        matrices = self.prediction_matrices(newdata, population, allow_new_levels=allow_new_levels)
        return pd.Series(self.predict_with(matrices), index=newdata.index, name="predicted")

    def prediction_matrices(self, newdata: pd.DataFrame, population: bool = False, *,
                            allow_new_levels: bool = False) -> "PredictionMatrices":
        """X and the offset for ``newdata`` and, per term, (X_t, level row, level known): what a
        prediction needs besides beta and b, so reusable across refits (``prediction_interval``).

        Checks ``newdata`` as ``predict`` describes: every column the model uses present, levels
        of fixed factors seen in the fit, no missing grouping label, and levels of grouping
        factors seen in the fit unless ``allow_new_levels``."""
        if not isinstance(newdata, pd.DataFrame) or len(newdata) == 0:
            raise DataError("newdata must be a pandas DataFrame with at least one row")
        design = self.design
        expressions = [design.formula.fixed, *design.formula.offsets]
        if not population:
            expressions += [t.term.expr for t in design.terms]
        used = formula_variables(*expressions)
        require_columns(newdata, used, "newdata")
        for name in used:  # factors of the fixed part and of the random-effects expressions
            if name in design.model_frame.columns and _is_factor(design.model_frame[name]):
                _require_known_levels(design.model_frame[name], newdata[name], name)
        for name in factor_calls(" + ".join(expressions)):
            _require_known_levels(design.model_frame[name], newdata[name], name)
        # only the model's columns go to formulaic: a column named like a function the formula
        # calls (log) would hide the function
        coded = conform(design.model_frame, newdata[used])  # factors coded as in the fit
        X = apply_spec(design.fixed_spec, coded)
        X = X[:, [list(design.fixed_spec.column_names).index(_formulaic_name(c)) for c in design.x_names]]
        terms = []
        if not population:
            for t in design.terms:
                require_columns(newdata, list(t.term.factors), "newdata")
                missing = newdata[list(t.term.factors)].isna().any(axis=1)
                if missing.any():
                    raise DataError(f"{int(missing.sum())} rows of newdata have no level of the grouping factor "
                                    f"{t.group} (a missing value); give each row a level, or predict at the "
                                    "population level with re_form='~0'")
                index = t.level_index(newdata)
                known = index >= 0
                if not known.all() and not allow_new_levels:
                    unseen = newdata.loc[~known, list(t.term.factors)]
                    new = sorted(set(map(":".join, zip(*(level_labels(unseen[f]) for f in t.term.factors)))))
                    raise DataError(f"newdata has levels of {t.group} that the fit has not seen: "
                                    f"{', '.join(new[:5])}{', ...' if len(new) > 5 else ''}; pass "
                                    "allow_new_levels=True to predict them at the population level (random "
                                    "effects of 0), as lme4's allow.new.levels")
                terms.append((t.model_matrix(coded), np.where(known, index, 0), known))
        return PredictionMatrices(X, terms, design.offset_for(coded))

    def predict_with(self, matrices: "PredictionMatrices") -> np.ndarray:
        """offset + X beta + Z b for prepared prediction matrices; new levels get random effects of 0."""
        values = matrices.offset + matrices.X @ self.solution.beta
        for (Xt, rows, known), b in zip(matrices.terms, self.ranef_blocks()):
            values = values + np.where(known, np.sum(Xt * b[rows], axis=1), 0.0)
        return values

    # ---- simulation and refitting -------------------------------------------------------------
    def simulate(self, nsim: int = 1, seed: int | np.random.Generator | None = None, use_u: bool = False) -> pd.DataFrame:
        """Draw ``nsim`` responses from the fitted model, one column each.

        New random effects u ~ N(0, sigma^2 I) are drawn for each response, unless ``use_u`` is
        True, in which case the conditional modes are kept and only the residual noise is new.
        """
        nsim = check_nsim(nsim)
        rng = np.random.default_rng(seed)
        n, q = self.nobs, len(self.solution.u)
        mean = self.offset + self.design.X @ self.solution.beta
        if use_u:
            signal = np.repeat((mean + self._Zb())[:, None], nsim, axis=1)
        else:
            Z = self.design.Z()
            Lam = self.design.Lambda(self.theta)
            signal = mean[:, None] + Z @ (Lam @ (self.sigma * rng.standard_normal((q, nsim))))
        y = signal + self.sigma * rng.standard_normal((n, nsim))
        return pd.DataFrame(y, index=self.design.row_index, columns=[f"sim_{k + 1}" for k in range(nsim)])

    def refit(self, y, *, start=None) -> "LmerFit":
        """Fit the same model to a new response ``y`` (same rows; the offset, if any, is
        subtracted as at fit time), starting at this fit's theta, or at ``start`` if given (e.g.
        ``fit.design.default_start``, lme4's start)."""
        y = np.asarray(y, dtype=float).ravel()
        if y.shape != self.design.y.shape:
            raise ValueError(f"refit needs a response of length {self.nobs}, got {y.shape[0]}")
        if not np.all(np.isfinite(y)):
            raise ValueError("refit: the new response has missing or infinite values")
        y = y - self.offset
        design = self.design.with_response(y)
        with single_blas_thread():
            cp = self.cross_products.with_response(design, y)
            opt = optimize_theta(design, cp, self.reml, self.theta if start is None else start)
            return LmerFit.from_theta(design, cp, self.reml, opt.theta, optsum=opt)

    def update(self, *, reml: bool) -> "LmerFit":
        """The same model fitted by REML (``reml=True``) or ML, starting at this fit's theta (lme4's
        ``update(fit, REML = ...)``); returns this fit if it already uses that criterion."""
        if reml == self.reml:
            return self
        opt = optimize_theta(self.design, self.cross_products, reml, self.theta)
        return LmerFit.from_theta(self.design, self.cross_products, reml, opt.theta, optsum=opt)

    # ---- display ------------------------------------------------------------------------------
    def summary(self, digits: int = 5) -> Summary:
        """A printed summary in lme4's layout, variances and standard deviations to ``digits``
        significant digits (lme4's 5 by default; fewer where the likelihood is so flat that the
        optimizer leaves the fifth uncertain, as for a variance determined to 1e-5 relative)."""
        return Summary(summary_text(self, digits=digits))

    def __repr__(self) -> str:
        return summary_text(self, brief=True)

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(summary_text(self, brief=True))}</pre>"


class PredictionMatrices(NamedTuple):
    """What a prediction for new data needs besides beta and b (``LmerFit.prediction_matrices``)."""

    X: np.ndarray
    terms: list  # per term: (X_t, each row's level index, whether that level was seen in the fit)
    offset: np.ndarray


def _is_factor(column: pd.Series) -> bool:
    return isinstance(column.dtype, pd.CategoricalDtype)


def _require_known_levels(fitted: pd.Series, new: pd.Series, name: str) -> None:
    """DataError if ``new`` has a missing value, or a level of the factor ``name`` that ``fitted``
    does not have: a fixed effect or random slope cannot be predicted for it."""
    if new.isna().any():
        raise DataError(f"{int(new.isna().sum())} rows of newdata have no value of the factor {name} (a missing "
                        "value); give each row a level, or leave those rows out")
    unseen = unseen_levels(fitted, new)
    if unseen:
        raise DataError(f"newdata has levels of the factor {name} that the fit has not seen: "
                        f"{', '.join(unseen[:5])}{', ...' if len(unseen) > 5 else ''}; no effect can be "
                        "predicted for them (the levels seen are those of the data the model was fitted to)")


def _formulaic_name(name: str) -> str:
    return "Intercept" if name == "(Intercept)" else name


def _is_population_form(re_form: str | None) -> bool:
    if re_form is None:
        return False
    if re_form.replace(" ", "") in ("~0", "0", "~-1", "NA"):
        return True
    raise ValueError(f"re_form must be None (all random effects) or '~0' (none), got {re_form!r}")
