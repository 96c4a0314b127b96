"""IPython startup file for the portability check (``make test-portable``): move every fitted theta.

``tools/portability.py`` copies this file into the startup folder of a temporary IPython profile,
so the notebook kernels that nbval starts run it before the first cell. Every ``LmerFit`` is then
built at theta * (1 + LMMNOTES_THETA_SHIFT) instead of the optimizer's theta. The spread of theta
across OpenBLAS kernels is about 1e-8 relative (pulp: 0.800490047 to 0.800490058); the check shifts
by 1e-6, a hundred times more, so a printed number that survives it is not on a rounding edge.
Log-likelihoods barely move (they are flat at the optimum); everything linear in theta does.
"""

import os

import numpy as np

from lmmnotes.results import LmerFit

_from_theta = LmerFit.from_theta.__func__
_shift = float(os.environ["LMMNOTES_THETA_SHIFT"])


def _shifted_from_theta(cls, design, cp, reml, theta, **kwargs):
    return _from_theta(cls, design, cp, reml, np.asarray(theta, dtype=float) * (1.0 + _shift), **kwargs)


LmerFit.from_theta = classmethod(_shifted_from_theta)
