"""Second edition, chapters 5-8: the corrected bootstrap prediction interval for a known group.

For balanced one-way data the REML refit has a closed form (chapter 2): with MSA and MSE of the
simulated data, sigma_a^2 = (MSA - MSE)/n and sigma^2 = MSE when MSA > MSE, else sigma_a^2 = 0; the
refit's BLUP for group j is then ybar.. + gamma (ybar_j. - ybar..) with gamma = 1 - MSE/MSA (or 0).
So the recipe's draws for a known operator can be recomputed without any refit from the same random
numbers (the order is documented in ``lmmnotes.prediction._draw_parts``) and compared draw by draw.
"""

import json
import pathlib

import numpy as np
import pandas as pd
import pytest

import lmmnotes
from lmmnotes.prediction import _draw_parts

from .conftest import REFERENCE

REF = json.loads((pathlib.Path(__file__).parent / "reference" / "inference.json").read_text())


def _closed_form_draws(fit, codes, group: int, nsim: int, seed: int) -> np.ndarray:
    """EBLUP + (truth* - closed-form refitted BLUP*) + new error, for known group ``group``."""
    rng = np.random.default_rng(seed)
    a, N = codes.max() + 1, len(codes)
    n = N // a
    mu, sigma, theta = fit.fixef.iloc[0], fit.sigma, fit.theta[0]
    eblup = fit.predict(pd.DataFrame({"operator": [fit.ranef()["operator"].index[group]]})).iloc[0]
    out = np.empty(nsim)
    for k in range(nsim):
        b = theta * (sigma * rng.standard_normal(a))  # b* = Lambda u*, u* ~ N(0, sigma^2 I)
        y = mu + b[codes] + sigma * rng.standard_normal(N)
        means = np.bincount(codes, y) / n
        grand = y.mean()
        msa = n * np.sum((means - grand) ** 2) / (a - 1)
        mse = np.sum((y - means[codes]) ** 2) / (N - a)
        gamma = 1.0 - mse / msa if msa > mse else 0.0
        blup_star = grand + gamma * (means[group] - grand)
        out[k] = eblup + (mu + b[group]) - blup_star + sigma * rng.standard_normal(1)[0]
    return out


def test_known_group_draws_equal_the_closed_form_recipe(pulp, pulp_reml):
    """Draw by draw, to the refit's optimizer tolerance (REML theta to about 1e-6 relative). The
    first edition's recipe (keep the modes, take the refit's BLUP) gives different draws, centred
    0.03 higher, and fails."""
    nsim = 200
    codes = pulp["operator"].cat.codes.to_numpy()
    ours = _draw_parts(pulp_reml, pd.DataFrame({"operator": ["a"]}), nsim, np.random.default_rng(5)).sum(axis=0)[:, 0]
    exact = _closed_form_draws(pulp_reml, codes, group=0, nsim=nsim, seed=5)
    np.testing.assert_allclose(ours, exact, atol=1e-5)


def test_known_group_draws_are_centred_at_the_eblup(pulp_reml):
    """Flipping the signs of all simulated effects and errors leaves the refitted variances and so
    gamma unchanged and flips the prediction error m* - yhat*: its distribution is symmetric about 0,
    so the draws are centred at the EBLUP 60.27806 exactly. The prediction-error part alone has SD
    about 0.13: with B = 1000 four standard errors are 0.017, half the 0.03 by which the doubly shrunk
    recipe missed. lme4's draws of the same recipe (4000, SD about 0.35 with the new error) are
    centred there too."""
    B = 1000
    parts = _draw_parts(pulp_reml, pd.DataFrame({"operator": ["a"]}), B, np.random.default_rng(17))
    error_part = parts[0, :, 0]
    eblup = pulp_reml.predict(pd.DataFrame({"operator": ["a"]})).iloc[0]
    lme4_blup_a = REFERENCE["models"]["pulp_reml"]["fitted_head"][0]  # lme4's fitted value for operator a
    assert eblup == pytest.approx(lme4_blup_a, abs=1e-5)
    assert abs(error_part.mean() - lme4_blup_a) < 4 * error_part.std() / np.sqrt(B)
    ref = REF["prediction"]
    assert abs(ref["known_operator_a_centre"] - lme4_blup_a) < 4 * 0.35 / np.sqrt(ref["nsim"])


def test_known_group_prediction_error_variance_is_the_plug_in_mse_or_more(pulp_reml):
    """The bootstrap prediction error's variance estimates the EBLUP's MSE: at least the known-parameter
    value g1 + g2 = (n/sigma^2 + 1/sigma_a^2)^-1 + (1 - gamma)^2 (sigma_a^2 + sigma^2/n)/a (Prasad and
    Rao 1990), plus a term for the estimated variances. The bootstrap must not fall below g1 + g2 by
    more than Monte Carlo error (relative SE sqrt(2/B))."""
    B = 1000
    parts = _draw_parts(pulp_reml, pd.DataFrame({"operator": ["a"]}), B, np.random.default_rng(29))
    s2, s2a, n, a = pulp_reml.sigma**2, pulp_reml.varcorr["vcov"].iloc[0], 5, 4
    gamma = n * s2a / (n * s2a + s2)
    g12 = 1 / (n / s2 + 1 / s2a) + (1 - gamma) ** 2 * (s2a + s2 / n) / a
    assert np.var(parts[0, :, 0], ddof=1) > g12 * (1 - 4 * np.sqrt(2 / B))


def test_prediction_interval_does_not_modify_newdata(pulp_reml):
    new = pd.DataFrame({"operator": ["a", "someone new"]})
    before = new.copy()
    lmmnotes.prediction_interval(pulp_reml, new, nsim=20, seed=1)
    pd.testing.assert_frame_equal(new, before)
