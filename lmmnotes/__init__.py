"""lmmnotes: linear mixed-effects models, as taught in the lmmnotes book.

Modules, in the order the book introduces them:

- ``datasets``: the book's data sets (``load``, ``names``);
- ``anova``: method-of-moments (ANOVA) estimators of variance components;
- ``formula``, ``design``, ``criterion``, ``fit``, ``results``: the lmer pipeline,
  formula -> design matrices -> profiled criterion -> optimizer -> fitted model;
- ``checks``: the input checks and the ``DataError`` they raise.
"""

from . import anova, datasets
from .checks import DataError
from .fit import lmer
from .formula import FormulaError
from .results import LmerFit

__all__ = ["anova", "datasets", "lmer", "LmerFit", "DataError", "FormulaError"]
__version__ = "0.1.0"
