"""lmmnotes: linear mixed-effects models, as taught in the lmmnotes book.

Modules, in the order the book introduces them:

- ``datasets``: the book's data sets (``load``, ``names``);
- ``anova``: method-of-moments (ANOVA) estimators of variance components: one-way, balanced
  nested designs of any depth, split plots;
- the lmer pipeline, one public step per module (``fit.lmer`` composes them): ``formula`` and
  ``model_frame`` (the formula and the rows and columns it uses), ``design`` (y, X, Z and theta's
  layout), ``criterion`` (the profiled criterion), ``optimizer`` (theta-hat, with the record of
  the search), ``results`` (``LmerFit``);
- ``resampling``: parametric bootstrap (``bootstrap``, the likelihood-ratio test ``lrt``,
  ``refit_responses``);
- ``intervals``: ``confint`` by profile likelihood, bootstrap or Wald;
- ``rlrt``: the exact restricted likelihood-ratio test of a variance component;
- ``fixed_effect_tests``: Kenward-Roger F tests for fixed effects (``kenward_roger``) and t and F
  tests with Satterthwaite's degrees of freedom (``satterthwaite``, lmerTest's);
- ``separate_fits``: separate least-squares fits per group (``lmlist``); ``comparison``:
  likelihood-ratio tables of nested fits (``compare``, lme4's ``anova``);
- ``prediction``: bootstrap prediction intervals for new observations;
- ``plots``: caterpillar plots and residual diagnostics;
- ``simulate``: data from a mixed model with a known truth (``simulate_design``, and many
  responses at once with ``simulate_responses``, to refit with ``refit_responses``; the truth in
  theta's layout with ``true_theta``);
- ``structures``: a group's random intercept and slope under any random-effects structure
  (``random_slope_correlation``);
- ``diagnostics``: checking and summarizing a fit (``repca``, ``r2_nakagawa``, ``icc``,
  ``influence_groups``, ``simulation_check``; chapter 14);
- ``checks``: the input checks, the ``DataError`` they raise and the warnings' categories;
- ``gibbs``: Gibbs samplers for the one-way model and for any lmer formula (``gibbs.one_way``,
  ``gibbs.lmm``), with ArviZ diagnostics; imported on first use of ``lmmnotes.gibbs``, since ArviZ
  takes seconds to import.
"""

from . import anova, datasets
from .resampling import bootstrap, lrt, refit_responses
from .checks import DataError
from .comparison import compare
from .fit import lmer
from .formula import FormulaError
from .intervals import confint
from .fixed_effect_tests import kenward_roger, satterthwaite, vcov_adjusted
from .separate_fits import lmlist
from .prediction import prediction_interval
from .results import LmerFit
from .rlrt import exact_rlrt
from .simulate import SimulatedData, simulate_design, simulate_responses, true_theta
from .structures import intercept_slope, random_slope_correlation
from . import diagnostics
from .diagnostics import icc, influence_groups, r2_nakagawa, repca, simulation_check

__all__ = ["anova", "datasets", "lmer", "LmerFit", "DataError", "FormulaError", "bootstrap", "lrt", "confint",
           "exact_rlrt", "kenward_roger", "satterthwaite", "vcov_adjusted", "prediction_interval",
           "simulate_design", "SimulatedData", "lmlist", "compare", "simulate_responses", "refit_responses",
           "random_slope_correlation", "intercept_slope", "gibbs", "diagnostics", "repca",
           "r2_nakagawa", "icc", "influence_groups", "simulation_check", "true_theta"]
__version__ = "0.2.0"


def __getattr__(name: str):
    """``lmmnotes.gibbs`` is loaded when first used (PEP 562)."""
    if name == "gibbs":
        import importlib

        return importlib.import_module(".gibbs", __name__)
    raise AttributeError(f"module 'lmmnotes' has no attribute {name!r}")
