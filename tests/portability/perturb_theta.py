"""IPython startup file for the portability check (``make test-portable``): move every fitted theta.

``tools/portability.py`` copies this file into the startup folder of a temporary IPython profile,
so the notebook kernels that nbval starts run it before the first cell. Every ``LmerFit`` is then
built at a theta moved from the optimizer's by the relative amount s = LMMNOTES_THETA_SHIFT, with
alternating signs: theta_k * (1 + s), theta_k * (1 - s), ... (the check runs s = 1e-6 and -1e-6).
The spread of theta across OpenBLAS kernels is about 1e-8 relative (pulp: 0.800490047 to
0.800490058), so a printed number that survives a move a hundred times larger is not on a
rounding edge. Log-likelihoods barely move (they are flat at the optimum); everything linear in
theta does. A theta on the boundary (0) stays there, as the optimizer puts it there exactly.
"""

import os

import numpy as np

from lmmnotes.results import LmerFit

_from_theta = LmerFit.from_theta.__func__
_shift = float(os.environ["LMMNOTES_THETA_SHIFT"])


def _shifted_from_theta(cls, design, cp, reml, theta, **kwargs):
    theta = np.asarray(theta, dtype=float)
    signs = np.where(np.arange(theta.size) % 2 == 0, 1.0, -1.0)
    return _from_theta(cls, design, cp, reml, theta * (1.0 + _shift * signs), **kwargs)


LmerFit.from_theta = classmethod(_shifted_from_theta)
