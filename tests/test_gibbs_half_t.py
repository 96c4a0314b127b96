"""The half-t prior on the group standard deviation of gibbs.one_way (``group_prior=HalfT(df, A)``).

The sampler does not use the half-t density: it carries the mixing variable xi of the inverse
gamma representation (Wand et al. 2011). The checks below use only what does not come from it:

* the quadrature of ``one_way_exact``, which puts the half-t density itself (scipy.stats.t) on
  sigma_a, with mu and the a_i integrated out in closed form;
* simulation-based calibration with sigma_a drawn as A |t_df| (numpy's Student t), not through
  the mixture;
* the power of both: a sampler run with another prior fails them.
"""

import numpy as np
import pandas as pd
import pytest

from lmmnotes import DataError, gibbs

from .test_gibbs import N_BINS, agrees, exact_one_way, one_way_frame, uniformity_p

PRIOR = dict(mu_mean=0.0, mu_var=100.0, resid_shape=2.0, resid_scale=1.0)
SIZES = {"balanced": [6] * 8, "unbalanced": [2, 3, 5, 8, 12, 4, 7, 20]}


def frame_for(sizes) -> pd.DataFrame:
    rng = np.random.default_rng(11)
    return one_way_frame(sizes, 1.0, rng.normal(0, 1.0, len(sizes)), 0.5, rng)


@pytest.mark.parametrize("sizes", ["balanced", "unbalanced"])
@pytest.mark.parametrize("half_t", [gibbs.HalfT(df=1.0, scale=1.0), gibbs.HalfT(df=3.0, scale=0.5)],
                         ids=["half-Cauchy", "half-t3"])
def test_half_t_matches_exact_posterior(sizes, half_t):
    """Means and sds of mu, sigma2_group and sigma2_resid from 4 x 4000 draws, blocked and
    single-site, agree with the quadrature under the half-t density to 4 Monte Carlo standard
    errors."""
    frame = frame_for(SIZES[sizes])
    exact = exact_one_way(frame, **PRIOR, group_prior=half_t)
    for update in ("blocked", "single"):
        post = gibbs.one_way(frame, "y", "g", **PRIOR, group_prior=half_t, n_iter=5000, n_warmup=1000,
                             seed=3, update=update)
        result = agrees(post, exact)
        assert all(result.values()), (update, result, post.summary().loc[list(exact)], exact)


def test_half_t_with_default_residual_prior_matches_exact_posterior():
    """The half-Cauchy on sigma_a with the residual variance's default prior 1/s2e (shape and
    scale 0) agrees with the quadrature too."""
    frame = frame_for(SIZES["unbalanced"])
    prior = PRIOR | dict(resid_shape=0.0, resid_scale=0.0)
    half_t = gibbs.HalfT(df=1.0, scale=1.0)
    exact = exact_one_way(frame, **prior, group_prior=half_t)
    post = gibbs.one_way(frame, "y", "g", mu_mean=0.0, mu_var=100.0, group_prior=half_t, n_iter=5000,
                         n_warmup=1000, seed=3)
    result = agrees(post, exact)
    assert all(result.values()), (result, post.summary().loc[list(exact)], exact)


def test_quadrature_check_has_power():
    """The same check fails a sampler run with another prior: draws under the half-Cauchy with
    A = 1 against the quadrature under the half-t(3, 0.5), and draws under the default inverse
    gamma prior against the half-Cauchy's quadrature (sigma2_group is off by many MCSEs)."""
    frame = frame_for(SIZES["balanced"])
    cauchy, t3 = gibbs.HalfT(df=1.0, scale=1.0), gibbs.HalfT(df=3.0, scale=0.5)
    post = gibbs.one_way(frame, "y", "g", **PRIOR, group_prior=cauchy, n_iter=5000, n_warmup=1000, seed=3)
    assert not agrees(post, exact_one_way(frame, **PRIOR, group_prior=t3))["sigma2_group"]
    inverse_gamma = gibbs.one_way(frame, "y", "g", **PRIOR, n_iter=5000, n_warmup=1000, seed=3)
    assert not agrees(inverse_gamma, exact_one_way(frame, **PRIOR, group_prior=cauchy))["sigma2_group"]


SBC_SIZES = [3, 5, 2, 6, 4, 8]
SBC_PRIOR = dict(mu_mean=0.0, mu_var=1.0, resid_shape=3.0, resid_scale=1.0)
N_SBC = 1000


def sbc_ranks(half_t_drawn: gibbs.HalfT, half_t_assumed: gibbs.HalfT, update: str) -> dict:
    """p-values of the uniformity of the ranks of the true mu, sigma2_group, sigma2_resid and a_1
    among 99 draws (one chain per replicate, 100 warm-up, thinned by 5), for N_SBC replicates
    whose sigma_a is drawn as A |t_df| from ``half_t_drawn`` and whose posterior assumes
    ``half_t_assumed``."""
    rng = np.random.default_rng(2025)
    codes = np.repeat(np.arange(len(SBC_SIZES)), SBC_SIZES)
    n = np.bincount(codes).astype(float)
    mu = rng.normal(SBC_PRIOR["mu_mean"], np.sqrt(SBC_PRIOR["mu_var"]), N_SBC)
    sd_a = half_t_drawn.scale * np.abs(rng.standard_t(half_t_drawn.df, N_SBC))
    s2e = SBC_PRIOR["resid_scale"] / rng.gamma(SBC_PRIOR["resid_shape"], size=N_SBC)
    a = sd_a[:, None] * rng.standard_normal((N_SBC, len(SBC_SIZES)))
    ys = mu[:, None] + a[:, codes] + np.sqrt(s2e)[:, None] * rng.standard_normal((N_SBC, codes.size))
    ybar = np.stack([np.bincount(codes, weights=y) for y in ys]) / n
    ssw = ((ys - ybar[:, codes]) ** 2).sum(1)
    priors = SBC_PRIOR | {"group_prior": "half-t", "group_df": half_t_assumed.df,
                          "group_sd_scale": half_t_assumed.scale}
    draws = gibbs._one_way_chains(ybar, n, ssw, priors, 100 + 99 * 5, 100, N_SBC, 5, 1, update)
    truths = {0: mu, 1: sd_a ** 2, 2: s2e, 3: a[:, 0]}
    return {j: uniformity_p((draws[:, :, j] < true[:, None]).sum(1), 100) for j, true in truths.items()}


@pytest.mark.parametrize("update", ["blocked", "single"])
def test_sbc_half_t(update):
    """Simulation-based calibration under the half-Cauchy with A = 1: 1000 replicates (6 groups of
    2 to 8), ranks in 10 bins; p > 0.001 for each of the four parameters."""
    cauchy = gibbs.HalfT(df=1.0, scale=1.0)
    p = sbc_ranks(cauchy, cauchy, update)
    assert N_BINS == 10 and min(p.values()) > 0.001, p


def test_sbc_half_t_has_power():
    """The calibration check, at the same size, rejects a posterior that assumes the wrong scale
    (sigma_a drawn with A = 1, the sampler told A = 0.2): some parameter has p < 1e-6."""
    p = sbc_ranks(gibbs.HalfT(df=1.0, scale=1.0), gibbs.HalfT(df=1.0, scale=0.2), "blocked")
    assert min(p.values()) < 1e-6, p


def test_half_t_default_scale_follows_the_data():
    """HalfT(df) without a scale uses the sample sd of y, so the draws follow y's units: under
    c y + d, with the same seed, mu's draws are c times plus d, the a_i c times, the variances c^2
    times (to 1e-9 relative); the prior used is recorded."""
    frame = frame_for(SIZES["unbalanced"])
    post = gibbs.one_way(frame, "y", "g", group_prior=gibbs.HalfT(df=2.0), n_iter=300, seed=2)
    assert post.priors["group_prior"] == "half-t" and post.priors["group_df"] == 2.0
    assert post.priors["group_sd_scale"] == pytest.approx(frame["y"].std(ddof=1), rel=1e-12)
    assert "group_shape" not in post.priors and "group_scale" not in post.priors
    c, d = 1e3, -50.0
    moved = gibbs.one_way(frame.assign(y=c * frame["y"] + d), "y", "g", group_prior=gibbs.HalfT(df=2.0),
                          n_iter=300, seed=2)
    for name in post.parameters:
        x = post.draws[name].to_numpy()
        expected = c * x + d if name == "mu" else (c * c * x if name.startswith("sigma2") else c * x)
        got = moved.draws[name].to_numpy()
        assert np.max(np.abs(got - expected)) / np.max(np.abs(expected)) < 1e-9, name


@pytest.mark.parametrize("kwargs, message", [
    (dict(group_prior=gibbs.HalfT(), group_scale=1.0), "leave them out"),
    (dict(group_prior=gibbs.HalfT(), group_shape=2.0), "leave them out"),
    # the inverse gamma default written out is refused too: it would not be the prior used
    (dict(group_prior=gibbs.HalfT(), group_shape=1.0), "leave them out"),
    (dict(group_prior="half-cauchy"), "group_prior must be None or gibbs.HalfT"),
    (dict(group_prior=gibbs.HalfT(df=0.0)), "HalfT df must be a positive number"),
    (dict(group_prior=gibbs.HalfT(df=1.0, scale=-1.0)), "HalfT scale must be a positive number"),
    (dict(group_prior=gibbs.HalfT(df=np.nan)), "HalfT df must be a positive number"),
])
def test_half_t_bad_arguments(kwargs, message):
    frame = frame_for(SIZES["balanced"])
    before = frame.copy()
    with pytest.raises(DataError, match=message):
        gibbs.one_way(frame, "y", "g", n_iter=10, **kwargs)
    pd.testing.assert_frame_equal(frame, before)


def test_exact_needs_a_complete_prior():
    frame = frame_for(SIZES["balanced"])
    with pytest.raises(DataError, match="with its scale given"):
        gibbs.one_way_exact(frame, "y", "g", **PRIOR, group_prior=gibbs.HalfT())
    with pytest.raises(DataError, match="not both"):
        gibbs.one_way_exact(frame, "y", "g", **PRIOR, group_prior=gibbs.HalfT(scale=1.0), group_scale=1.0)
    with pytest.raises(DataError, match="group_shape must be a number"):
        gibbs.one_way_exact(frame, "y", "g", **PRIOR)
