"""lmmnotes: linear mixed-effects models, as taught in the lmmnotes book.

Modules, in the order the book introduces them:

- ``datasets``: the book's data sets (``load``, ``names``);
- ``anova``: method-of-moments (ANOVA) estimators of variance components: one-way, balanced
  nested designs of any depth, split plots;
- ``formula``, ``design``, ``criterion``, ``fit``, ``results``: the lmer pipeline,
  formula -> design matrices -> profiled criterion -> optimizer -> fitted model;
- ``bootstrap``: parametric bootstrap (``bootstrap``, the likelihood-ratio test ``lrt``);
- ``intervals``: ``confint`` by profile likelihood, bootstrap or Wald;
- ``rlrt``: the exact restricted likelihood-ratio test of a variance component;
- ``kenward_roger``: Kenward-Roger F tests for fixed effects;
- ``lmlist``: separate least-squares fits per group (``lmlist``); ``compare``: likelihood-ratio
  tables of nested fits (lme4's ``anova``);
- ``prediction``: bootstrap prediction intervals for new observations;
- ``plots``: caterpillar plots and residual diagnostics;
- ``simulate``: data from a mixed model with a known truth (``simulate_design``, and many
  responses at once with ``simulate_responses``, to refit with ``refit_responses``);
- ``structures``: a group's random intercept and slope under any random-effects structure
  (``random_slope_correlation``);
- ``checks``: the input checks and the ``DataError`` they raise;
- ``gibbs``: Gibbs samplers for the one-way model and for any lmer formula (``gibbs.one_way``,
  ``gibbs.lmm``), with ArviZ diagnostics; imported on first use of ``lmmnotes.gibbs``, since ArviZ
  takes seconds to import.
"""

from . import anova, datasets
from .bootstrap import bootstrap, lrt, refit_responses
from .checks import DataError
from .compare import compare
from .fit import lmer
from .formula import FormulaError
from .intervals import confint
from .kenward_roger import kenward_roger, vcov_adjusted
from .lmlist import lmlist
from .prediction import prediction_interval
from .results import LmerFit
from .rlrt import exact_rlrt
from .simulate import SimulatedData, simulate_design, simulate_responses
from .structures import intercept_slope, random_slope_correlation

__all__ = ["anova", "datasets", "lmer", "LmerFit", "DataError", "FormulaError", "bootstrap", "lrt", "confint",
           "exact_rlrt", "kenward_roger", "vcov_adjusted", "prediction_interval",
           "simulate_design", "SimulatedData", "lmlist", "compare", "simulate_responses", "refit_responses",
           "random_slope_correlation", "intercept_slope", "gibbs"]
__version__ = "0.2.0"


def __getattr__(name: str):
    """``lmmnotes.gibbs`` is loaded when first used (PEP 562)."""
    if name == "gibbs":
        import importlib

        return importlib.import_module(".gibbs", __name__)
    raise AttributeError(f"module 'lmmnotes' has no attribute {name!r}")
