"""lmmnotes: linear mixed-effects models, as taught in the lmmnotes book.

Modules, in the order the book introduces them:

- ``datasets``: the book's data sets (``load``, ``names``);
- ``anova``: method-of-moments (ANOVA) estimators of variance components;
- ``checks``: the input checks and the ``DataError`` they raise.
"""

from . import anova, datasets
from .checks import DataError

__all__ = ["anova", "datasets", "DataError"]
__version__ = "0.1.0"
