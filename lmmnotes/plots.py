"""Figures for fitted models: caterpillar plots of the random effects and residual diagnostics.

Every function draws on matplotlib axes (new ones unless ``ax`` is given) and returns the axes,
so a notebook can adjust them and end the cell with ``plt.show()``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from scipy import stats

from .results import LmerFit


def caterpillar(fit: LmerFit, group: str | None = None, term: str | None = None, level: float = 0.95, ax=None):
    """Conditional modes of one grouping factor's random effects with conditional intervals.

    The interval for level g is the mode +- z * conditional SD, the SD of
    sigma^2 Lambda (L L')^{-1} Lambda' (conditional on the estimates, as lme4's ``condVar``).
    Levels are sorted by their mode. ``group`` defaults to the first grouping factor and
    ``term`` to the first column of its random effects (e.g. "(Intercept)").
    """
    effects = fit.ranef(condvar=True)
    group = group if group is not None else next(iter(effects))
    if group not in effects:
        raise ValueError(f"no grouping factor {group!r}; the model has {list(effects)}")
    frame = effects[group]
    term = term if term is not None else frame.columns[0]
    if term not in frame.columns:
        raise ValueError(f"no random effect {term!r} for {group!r}; choose one of {[c for c in frame.columns if not c.startswith('condsd_')]}")
    z = stats.norm.ppf(0.5 + level / 2.0)
    frame = frame.sort_values(term)
    mode, sd = frame[term].to_numpy(), frame[f"condsd_{term}"].to_numpy()
    if ax is None:
        _, ax = plt.subplots(figsize=(6, max(2.0, 0.25 * len(frame) + 1)), layout="constrained")
    position = np.arange(len(frame))
    ax.errorbar(mode, position, xerr=z * sd, fmt="o", color="C0", ecolor="C0", capsize=2, markersize=4)
    ax.axvline(0.0, color="grey", lw=0.8, ls="--")
    ax.set_yticks(position, [str(i) for i in frame.index])
    ax.set_xlabel(f"conditional mode of {term} ({100 * level:.0f}% interval)")
    ax.set_ylabel(group)
    return ax


def residual_plots(fit: LmerFit, level: str = "observation", axes=None):
    """Residuals against fitted values and a normal QQ plot.

    ``level="observation"``: the conditional residuals y - X beta - Z b against the fitted
    values X beta + Z b, scaled by sigma in the QQ plot. ``level="population"``: the marginal
    residuals y - X beta against the population-level predictions X beta (their spread includes
    the random effects, so the QQ plot scales them by their total SD). ``level="group"``: the
    conditional modes of each grouping factor's random effects (the group-level "residuals")
    against the group's mean population-level prediction X beta, and their QQ plot,
    standardized by their estimated standard deviation.
    """
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
    if level in ("observation", "population"):
        if level == "observation":
            fitted, resid = fit.fitted().to_numpy(), fit.residuals().to_numpy()
            scale, label = fit.sigma, "residual / sigma"
        else:
            fitted = fit.predict(re_form="~0").to_numpy()
            resid = fit.design.response - fitted
            scale, label = resid.std(), "marginal residual / its SD"
        axes[0].scatter(fitted, resid, s=12, alpha=0.7)
        axes[0].axhline(0.0, color="grey", lw=0.8)
        axes[0].set_xlabel("fitted value" if level == "observation" else "population-level prediction")
        axes[0].set_ylabel("residual" if level == "observation" else "marginal residual")
        (osm, osr), (slope, intercept, _) = stats.probplot(resid / scale)
        axes[1].scatter(osm, osr, s=12, alpha=0.7)
        axes[1].plot(osm, slope * osm + intercept, color="grey", lw=0.8)
        axes[1].set_xlabel("normal quantile")
        axes[1].set_ylabel(label)
        return axes
    if level == "group":
        fitted = fit.predict(re_form="~0").to_numpy()
        for k, (t, s, b) in enumerate(zip(fit.design.terms, fit.design.theta_slices, fit.ranef_blocks())):
            mean_fitted = np.bincount(t.codes, weights=fitted) / np.bincount(t.codes)
            T = t.template(fit.theta[s])
            sd = fit.sigma * np.linalg.norm(T[0])  # SD of the term's first random effect
            modes = b[:, 0]
            axes[0].scatter(mean_fitted, modes, s=14, alpha=0.7, color=f"C{k}", label=f"{t.group}: {t.columns[0]}")
            (osm, osr), _ = stats.probplot(modes / sd if sd > 0 else modes)
            axes[1].scatter(osm, osr, s=14, alpha=0.7, color=f"C{k}")
        axes[0].axhline(0.0, color="grey", lw=0.8)
        axes[0].set_xlabel("mean population-level prediction of the group")
        axes[0].set_ylabel("conditional mode")
        axes[0].legend(fontsize="small")
        lim = np.array(axes[1].get_xlim())
        axes[1].plot(lim, lim, color="grey", lw=0.8)
        axes[1].set_xlabel("normal quantile")
        axes[1].set_ylabel("mode / estimated SD")
        return axes
    raise ValueError(f"level must be 'observation', 'population' or 'group', got {level!r}")


def lmlist_intervals(fits, level: float = 0.95, *, pool: bool = False, order: str | None = None, axes=None):
    """Per-group confidence intervals of an ``lmlist`` fit, one panel per coefficient (lme4's
    ``plot(confint(lmList(...)))``): groups on the y axis, an interval segment and the estimate.

    ``pool`` is passed to ``LmList.confint``. ``order`` names a coefficient to sort the groups by
    (default: the grouping factor's level order). Groups without their own fit are left blank.
    """
    ci = fits.confint(level, pool=pool)
    coef = fits.coef
    if order is not None:
        if order not in coef.columns:
            raise ValueError(f"order must be one of the coefficients {list(coef.columns)}, got {order!r}")
        coef = coef.sort_values(order, na_position="first")
        ci = ci.loc[coef.index]
    terms = list(coef.columns)
    if axes is None:
        height = max(2.5, 0.14 * len(coef) + 1.0)
        _, axes = plt.subplots(1, len(terms), figsize=(3.2 * len(terms), height), sharey=True,
                               layout="constrained", squeeze=False)
        axes = axes[0]
    position = np.arange(len(coef))
    for ax, term in zip(axes, terms):
        lower, upper = ci[(term, "lower")].to_numpy(), ci[(term, "upper")].to_numpy()
        ax.hlines(position, lower, upper, color="C0", lw=1.2)
        ax.plot(coef[term].to_numpy(), position, "o", color="C0", markersize=3)
        ax.set_title(term, fontsize="medium")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(position, [str(g) for g in coef.index], fontsize="x-small" if len(coef) > 30 else None)
    axes[0].set_ylabel(fits.group)
    kind = "pooled SD" if pool else "each group's own SD"
    axes[0].figure.suptitle(f"{100 * level:.0f}% intervals of per-group fits ({kind})", fontsize="medium")
    return axes
