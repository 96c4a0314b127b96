"""The Gibbs samplers (lmmnotes.gibbs) against results that do not come from them.

* Exact posterior of the one-way model by quadrature: mu and the a_i are integrated out in closed
  form, (sigma2_group, sigma2_resid) on a fine 2-D grid (``exact_one_way`` below).
* Simulation-based calibration (Talts et al. 2018): parameters drawn from the prior, data from the
  model, the rank of each true value among the posterior draws must be uniform. The same check
  rejects the source's sampler with stale variances (``stale_variance_sampler`` below, not in the
  package).
* lmm against one_way on the same data; the posterior mode against REML (closed form for balanced
  one-way data, lme4 for the PSID model).

Every run is seeded; the sizes are chosen so that the file runs in well under a minute.
"""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import lmmnotes
from lmmnotes import DataError, gibbs

from .conftest import REFERENCE, book_data


# ----------------------------------------------------------------------------------------------
# Helpers


def one_way_frame(sizes, mu, a, s2e, rng) -> pd.DataFrame:
    """y_ij = mu + a_i + e_ij with the given group sizes."""
    group = np.repeat(np.arange(len(sizes)), sizes)
    y = mu + np.asarray(a)[group] + np.sqrt(s2e) * rng.standard_normal(group.size)
    return pd.DataFrame({"y": y, "g": [f"g{k}" for k in group]})


def exact_one_way(frame, **prior):
    """The quadrature of ``gibbs.one_way_exact`` on the frame's y and g, as {name: (mean, sd)}."""
    table = gibbs.one_way_exact(frame, "y", "g", **prior)
    return {name: (row["mean"], row["sd"]) for name, row in table.iterrows()}


def agrees(posterior, exact: dict, names=None, k: float = 4.0) -> dict:
    """For each parameter, whether the posterior mean and sd agree with the exact ones to within
    k Monte Carlo standard errors (ArviZ's mcse_mean and mcse_sd, from the effective sample size)."""
    table = posterior.summary()
    names = names or {p: p for p in exact}
    out = {}
    for ours, theirs in names.items():
        mean, sd = exact[theirs]
        row = table.loc[ours]
        out[ours] = (abs(row["mean"] - mean) <= k * row["mcse_mean"]
                     and abs(row["sd"] - sd) <= k * row["mcse_sd"])
    return out


BALANCED = [6] * 8
UNBALANCED = [2, 3, 5, 8, 12, 4, 7, 20]
PRIORS = {
    "A": dict(mu_mean=0.0, mu_var=100.0, group_shape=2.0, group_scale=1.0, resid_shape=2.0, resid_scale=1.0),
    "B": dict(mu_mean=5.0, mu_var=1e6, group_shape=3.0, group_scale=0.5, resid_shape=1.5, resid_scale=2.0),
    # the residual variance's default, p(s2e) proportional to 1/s2e
    "C": dict(mu_mean=0.0, mu_var=100.0, group_shape=2.0, group_scale=1.0, resid_shape=0.0, resid_scale=0.0),
}


# ----------------------------------------------------------------------------------------------
# Exact posterior by quadrature


@pytest.mark.parametrize("sizes", [BALANCED, UNBALANCED], ids=["balanced", "unbalanced"])
@pytest.mark.parametrize("prior", ["A", "B", "C"])
def test_one_way_matches_exact_posterior(sizes, prior):
    """Means and sds of mu, sigma2_group, sigma2_resid from 4 x 4000 draws (blocked and single-site)
    agree with the quadrature to 4 Monte Carlo standard errors."""
    rng = np.random.default_rng(11)
    frame = one_way_frame(sizes, 1.0, rng.normal(0, 1.0, len(sizes)), 0.5, rng)
    exact = exact_one_way(frame, **PRIORS[prior])
    for update in ("blocked", "single"):
        post = gibbs.one_way(frame, "y", "g", **PRIORS[prior], n_iter=5000, n_warmup=1000, seed=3, update=update)
        result = agrees(post, exact)
        assert all(result.values()), (update, result, post.summary().loc[list(exact)], exact)


def test_lmm_matches_exact_posterior_and_one_way():
    """lmm on one-way data, with the same priors, agrees with the quadrature (and so with one_way)."""
    rng = np.random.default_rng(12)
    frame = one_way_frame(UNBALANCED, 1.0, rng.normal(0, 1.0, len(UNBALANCED)), 0.5, rng)
    prior = PRIORS["A"]
    exact = exact_one_way(frame, **prior)
    post = gibbs.lmm("y ~ 1 + (1 | g)", frame, fixef_mean=prior["mu_mean"], fixef_var=prior["mu_var"],
                     var_shape=prior["group_shape"], var_scale=prior["group_scale"],
                     resid_shape=prior["resid_shape"], resid_scale=prior["resid_scale"],
                     n_iter=3000, n_warmup=500, n_chains=2, seed=4)
    names = {"(Intercept)": "mu", "var[(Intercept)|g]": "sigma2_group", "sigma2": "sigma2_resid"}
    result = agrees(post, exact, names)
    assert all(result.values()), (result, post.summary(), exact)


def test_default_priors_match_exact_posterior():
    """one_way and lmm with every prior left at its default (the residual variance's 1/s2e among
    them) agree with the quadrature under the priors they record, on data where the groups carry
    most of the variance of y (sd of the effects 15, residual sd 1)."""
    rng = np.random.default_rng(13)
    frame = one_way_frame(UNBALANCED, 1.0, rng.normal(0, 15.0, len(UNBALANCED)), 1.0, rng)
    one = gibbs.one_way(frame, "y", "g", n_iter=5000, n_warmup=1000, seed=3)
    assert one.priors["resid_shape"] == 0.0 and one.priors["resid_scale"] == 0.0
    exact = exact_one_way(frame, **one.priors)
    result = agrees(one, exact)
    assert all(result.values()), (result, one.summary().loc[list(exact)], exact)
    post = gibbs.lmm("y ~ 1 + (1 | g)", frame, n_iter=3000, n_warmup=500, seed=4)
    assert post.priors["resid_shape"] == 0.0 and post.priors["resid_scale"] == 0.0
    names = {"(Intercept)": "mu", "var[(Intercept)|g]": "sigma2_group", "sigma2": "sigma2_resid"}
    result = agrees(post, exact, names)
    assert all(result.values()), (result, post.summary(), exact)


def test_default_residual_prior_does_not_pull_sigma2_up():
    """Balanced one-way data whose groups carry nearly all the variance of y (20 groups of 10,
    group sd 18, residual sd 1, var(y) about 480). The group means then say almost nothing about
    s2e (their variance s2a + s2e/10 is several hundred), so under p(s2e) proportional to 1/s2e its
    posterior is close to InvGamma((N - m)/2, SSW/2), whose mean is SSW/(N - m - 2). The default
    agrees with that mean to 4 Monte Carlo standard errors plus 0.5% (the approximation; the
    quadrature gives it to 1e-5); the proper InvGamma(1, var(y)/20) adds var(y)/20 = 24 to SSW/2 = 70
    in the conditional and misses it by about 30%."""
    rng = np.random.default_rng(21)
    frame = one_way_frame([10] * 20, 5.0, rng.normal(0, 18.0, 20), 1.0, rng)
    y = frame["y"].to_numpy().reshape(20, 10)
    ssw = ((y - y.mean(1, keepdims=True)) ** 2).sum()
    expected = ssw / (200 - 20 - 2)
    table = gibbs.one_way(frame, "y", "g", n_iter=3000, seed=1).summary().loc["sigma2_resid"]
    assert abs(table["mean"] - expected) < 4 * table["mcse_mean"] + 0.005 * expected, (table, expected)
    old = gibbs.one_way(frame, "y", "g", resid_shape=1.0, resid_scale=None, n_iter=3000, seed=1)
    assert old.priors["resid_scale"] == pytest.approx(frame["y"].var(ddof=1) / 20, rel=1e-12)
    assert old.summary().loc["sigma2_resid", "mean"] > 1.15 * expected


def test_quadrature_catches_stale_variances():
    """The check above has power: the stale-variance sampler (group variance frozen at 0.5) fails it
    on balanced data whose group variance is far from 0.5 (effects drawn with sd 3)."""
    rng = np.random.default_rng(11)
    frame = one_way_frame(BALANCED, 1.0, rng.normal(0, 3.0, len(BALANCED)), 0.5, rng)
    prior = PRIORS["A"]
    exact = exact_one_way(frame, **prior)
    codes = np.unique(frame["g"], return_inverse=True)[1]
    y = frame["y"].to_numpy()
    draws = stale_variance_sampler(y[None, :], codes, prior, n_iter=20000, rng=np.random.default_rng(5))
    mu = draws[0, 2000:, 0]
    mcse = mu.std() / np.sqrt(len(mu) / 50)  # generous: as if only one draw in 50 were independent
    assert abs(mu.std() - exact["mu"][1]) > 4 * mcse


# ----------------------------------------------------------------------------------------------
# Simulation-based calibration


def stale_variance_sampler(y, codes, prior, n_iter, rng, stale=(0.5, 0.5)):
    """The source's sampler (seed 001), for R data sets at once (y is R x N): the variances are
    drawn from their correct conditionals, but mu and the a_i are drawn with the variances' starting
    values ``stale`` = (sigma2_group, sigma2_resid) instead of the current draws. Single-site
    updates. Returns (R, n_iter, 3): mu, sigma2_group, sigma2_resid."""
    R = y.shape[0]
    m = codes.max() + 1
    n = np.bincount(codes).astype(float)
    sums = np.stack([np.bincount(codes, weights=row) for row in y])
    s2a_old, s2e_old = stale
    mu, a = np.zeros(R), np.zeros((R, m))
    out = np.empty((R, n_iter, 3))
    m0, v0 = prior["mu_mean"], prior["mu_var"]
    for t in range(n_iter):
        s2a = (prior["group_scale"] + 0.5 * (a * a).sum(1)) / rng.standard_gamma(prior["group_shape"] + m / 2, R)
        resid_ss = ((y - mu[:, None] - a[:, codes]) ** 2).sum(1)
        s2e = (prior["resid_scale"] + 0.5 * resid_ss) / rng.standard_gamma(prior["resid_shape"] + n.sum() / 2, R)
        P = n.sum() / s2e_old + 1 / v0  # stale: should be the current s2e
        mu = ((sums - n * a).sum(1) / s2e_old + m0 / v0) / P + rng.standard_normal(R) / np.sqrt(P)
        pa = n / s2e_old + 1 / s2a_old  # stale: should be the current s2e, s2a
        a = (sums - n * mu[:, None]) / s2e_old / pa + rng.standard_normal((R, m)) / np.sqrt(pa)
        out[:, t] = np.stack([mu, s2a, s2e], axis=1)
    return out


SBC_PRIOR = dict(mu_mean=0.0, mu_var=1.0, group_shape=3.0, group_scale=2.0, resid_shape=3.0, resid_scale=1.0)
SBC_SIZES = [3, 5, 2, 6, 4, 8]
N_BINS = 10


def uniformity_p(ranks: np.ndarray, n_ranks: int) -> float:
    """Chi-square test that ranks (in 0..n_ranks - 1) are uniform, in N_BINS equal bins."""
    counts = np.bincount(ranks * N_BINS // n_ranks, minlength=N_BINS)
    return float(stats.chisquare(counts).pvalue)


def draw_one_way(rng):
    """Parameters from SBC_PRIOR and data from the model."""
    mu = rng.normal(SBC_PRIOR["mu_mean"], np.sqrt(SBC_PRIOR["mu_var"]))
    s2a = SBC_PRIOR["group_scale"] / rng.gamma(SBC_PRIOR["group_shape"])
    s2e = SBC_PRIOR["resid_scale"] / rng.gamma(SBC_PRIOR["resid_shape"])
    a = rng.normal(0, np.sqrt(s2a), len(SBC_SIZES))
    return {"mu": mu, "sigma2_group": s2a, "sigma2_resid": s2e, "a[g0]": a[0]}, one_way_frame(SBC_SIZES, mu, a, s2e, rng)


N_SBC = 1000


def sbc_data(rng):
    """N_SBC parameter draws and data sets, as the sufficient statistics the sampler uses."""
    truths, ys = [], []
    for _ in range(N_SBC):
        truth, frame = draw_one_way(rng)
        truths.append(truth)
        ys.append(frame["y"].to_numpy())
    return truths, np.array(ys)


def test_sbc_one_way():
    """Simulation-based calibration of one_way's sampler: 1000 replicates, each one chain of 100
    warm-up and 99 kept draws thinned by 5 (ranks 0..99, in 10 bins; a chi-square test of
    uniformity per parameter). The replicates run as the chains of one vectorized call of the
    sampler one_way uses (``_one_way_chains``, one data set per chain). At this size the
    stale-variance sampler is rejected with p < 1e-6 (next test); the correct one must give
    p > 0.001 for each of the four parameters, blocked and single-site."""
    truths, ys = sbc_data(np.random.default_rng(2024))
    codes = np.repeat(np.arange(len(SBC_SIZES)), SBC_SIZES)
    n = np.bincount(codes).astype(float)
    ybar = np.stack([np.bincount(codes, weights=y) for y in ys]) / n
    ssw = ((ys - ybar[:, codes]) ** 2).sum(1)
    columns = {"mu": 0, "sigma2_group": 1, "sigma2_resid": 2, "a[g0]": 3}
    for update in ("blocked", "single"):
        draws = gibbs._one_way_chains(ybar, n, ssw, SBC_PRIOR, 100 + 99 * 5, 100, N_SBC, 5, 1, update)
        p = {}
        for name, j in columns.items():
            true = np.array([t[name] for t in truths])
            p[name] = uniformity_p((draws[:, :, j] < true[:, None]).sum(1), 100)
        assert min(p.values()) > 0.001, (update, p)


def test_sbc_rejects_stale_variances():
    """The same calibration check, at the same size (1000 replicates, 99 draws thinned by 5 after 100
    of warm-up), rejects the source's stale-variance sampler: some parameter's ranks have p < 1e-6.
    (At 300 replicates the smallest p was about 2e-4.)"""
    truths, ys = sbc_data(np.random.default_rng(2024))
    codes = np.repeat(np.arange(len(SBC_SIZES)), SBC_SIZES)
    draws = stale_variance_sampler(ys, codes, SBC_PRIOR, n_iter=100 + 99 * 5, rng=np.random.default_rng(7))
    kept = draws[:, 100 + 4::5]
    assert kept.shape[1] == 99
    p = {}
    for j, name in enumerate(("mu", "sigma2_group", "sigma2_resid")):
        true = np.array([t[name] for t in truths])
        p[name] = uniformity_p((kept[:, :, j] < true[:, None]).sum(1), 100)
    assert min(p.values()) < 1e-6, p


def test_sbc_lmm_random_slope():
    """Simulation-based calibration of lmm for y ~ 1 + x + (x | g) with 6 groups of 5: beta ~ N(0, I),
    D ~ InvWishart(5, 2 I) (drawn with scipy, not with the package's Bartlett sampler), sigma2 ~
    InvGamma(3, 1). 100 replicates of one chain, 50 warm-up, 49 kept draws thinned by 2 (ranks
    0..49, 10 bins); p > 0.001 for each of the six parameters. (Its power against a broken sampler
    is that of the one-way check above, with fewer replicates; the stale-variance sampler's rejection
    is shown there.)"""
    rng = np.random.default_rng(77)
    x = np.tile(np.arange(5.0) - 2, 6)
    g = np.repeat([f"g{k}" for k in range(6)], 5)
    names = ["(Intercept)", "x", "var[(Intercept)|g]", "cov[(Intercept),x|g]", "var[x|g]", "sigma2"]
    ranks = {name: [] for name in names}
    for r in range(100):
        beta = rng.standard_normal(2)
        D = stats.invwishart.rvs(df=5, scale=2 * np.eye(2), random_state=rng)
        s2 = 1.0 / rng.gamma(3.0)
        b = rng.multivariate_normal(np.zeros(2), D, size=6)
        group = np.repeat(np.arange(6), 5)
        y = beta[0] + b[group, 0] + (beta[1] + b[group, 1]) * x + np.sqrt(s2) * rng.standard_normal(30)
        frame = pd.DataFrame({"y": y, "x": x, "g": g})
        post = gibbs.lmm("y ~ 1 + x + (x | g)", frame, fixef_var=1.0, cov_df=5, cov_scale=2 * np.eye(2),
                         resid_shape=3.0, resid_scale=1.0, n_iter=50 + 49 * 2, n_warmup=50, thin=2,
                         n_chains=1, seed=r)
        truth = dict(zip(names, [beta[0], beta[1], D[0, 0], D[0, 1], D[1, 1], s2]))
        for name in names:
            ranks[name].append(int((post.draws[name].to_numpy() < truth[name]).sum()))
    p = {name: uniformity_p(np.array(v), 50) for name, v in ranks.items()}
    assert min(p.values()) > 0.001, p


# ----------------------------------------------------------------------------------------------
# Against REML


def test_posterior_mode_is_reml_for_balanced_one_way():
    """With the prior p(s2) ~ 1/s2 (InvGamma(1e-3, 1e-3) is close to it) and a flat prior on mu,
    the posterior density of (log s2a, log s2e) is proportional to the REML likelihood, so its mode
    is the REML estimate, which for balanced data is closed form: s2e = MSE, s2a = (MSA - MSE)/n.
    The REML point must be in the mode region (KDE density at least 0.9 of the highest density
    over the draws), for one_way and for lmm; a point one posterior sd away must not be."""
    rng = np.random.default_rng(31)
    m, n = 40, 5
    frame = one_way_frame([n] * m, 3.0, rng.normal(0, 1.0, m), 1.0, rng)
    y = frame["y"].to_numpy().reshape(m, n)
    mse = ((y - y.mean(1, keepdims=True)) ** 2).sum() / (m * (n - 1))
    msa = n * ((y.mean(1) - y.mean()) ** 2).sum() / (m - 1)
    reml = np.log([(msa - mse) / n, mse])
    flat = dict(group_shape=1e-3, group_scale=1e-3, resid_shape=1e-3, resid_scale=1e-3)
    one = gibbs.one_way(frame, "y", "g", mu_var=1e8, **flat, n_iter=6000, seed=8)
    lmm = gibbs.lmm("y ~ 1 + (1 | g)", frame, fixef_var=1e8, var_shape=1e-3, var_scale=1e-3, resid_shape=1e-3,
                    resid_scale=1e-3, n_iter=3000, seed=9)
    for post, names in ((one, ["sigma2_group", "sigma2_resid"]), (lmm, ["var[(Intercept)|g]", "sigma2"])):
        logs = np.log(post.draws[names].to_numpy()).T
        kde = stats.gaussian_kde(logs)
        top = kde(logs[:, ::10]).max()
        assert kde(reml)[0] >= 0.9 * top, (names, kde(reml)[0] / top)
        shifted = reml + np.array([logs[0].std(), 0.0])
        assert kde(shifted)[0] < 0.75 * top


def test_lmm_psid_near_lme4_reml():
    """PSID, log(income) ~ cyear * sex + age + educ + (cyear | person), default (weak) priors,
    85 people: the posterior medians of the fixed effects are within 0.25 posterior sd of lme4's
    REML estimates, and the posterior sds within 10% of lme4's standard errors; the variance
    parameters' 95% intervals contain lme4's estimates."""
    data = book_data("psid")
    post = gibbs.lmm("log(income) ~ cyear * sex + age + educ + (cyear | person)", data, n_iter=1500,
                     n_chains=2, seed=10)
    ref = REFERENCE["models"]["psid_reml"]
    table = post.summary()
    for name, value in ref["fixef"].items():
        ours = name.replace("sexM", "sex[T.M]")
        row = table.loc[ours]
        assert abs(row["50%"] - value) < 0.25 * row["sd"], (name, row["50%"], value)
        assert abs(row["sd"] / ref["stderr"][name] - 1) < 0.1, (name, row["sd"], ref["stderr"][name])
    vc = ref["varcorr"]
    vcov = {(a, b): v for a, b, v in zip(vc["var1"], vc["var2"], vc["vcov"])}
    for key, name in ((("(Intercept)", ""), "var[(Intercept)|person]"), (("cyear", ""), "var[cyear|person]"),
                      (("(Intercept)", "cyear"), "cov[(Intercept),cyear|person]"), (("", ""), "sigma2")):
        row = table.loc[name]
        assert row["2.5%"] < vcov[key] < row["97.5%"], (name, vcov[key])


@pytest.mark.parametrize("p", [1, 2, 3])
def test_covariance_conditional_has_the_conjugate_mean(p):
    """The draw of a term's covariance given its effects b (l x p): for p > 1 the mean of
    InvWishart(df + l, S + b'b) is (S + b'b)/(df + l - p - 1); for p = 1, InvGamma(df + l/2, S + b'b/2)
    has mean (S + b'b/2)/(df + l/2 - 1). 20000 draws, each entry within 4 Monte Carlo standard
    errors. (The random-slope calibration above, with 100 replicates, cannot see the degrees of
    freedom off by one; this can: the mean moves by about 1/(df + l - p - 1), here over 10%.)"""
    rng = np.random.default_rng(40 + p)
    b = rng.standard_normal((6, p))
    df, S = (2.0, np.array([[0.5]])) if p == 1 else (p + 3.0, np.eye(p) + 0.3)
    draws = np.array([gibbs._draw_covariance(rng, df, S, b) for _ in range(20000)])
    if p == 1:
        exact = (S + 0.5 * b.T @ b) / (df + 6 / 2 - 1)
    else:
        exact = (S + b.T @ b) / (df + 6 - p - 1)
    mcse = draws.std(axis=0) / np.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(axis=0) - exact) <= 4 * mcse), (draws.mean(axis=0), exact)


# ----------------------------------------------------------------------------------------------
# Reproducibility, shape of the result, errors


def test_chains_reproducible_and_independent_of_chain_count():
    pulp = lmmnotes.datasets.load("pulp")
    two = gibbs.one_way(pulp, "bright", "operator", n_iter=200, n_chains=2, seed=5)
    four = gibbs.one_way(pulp, "bright", "operator", n_iter=200, n_chains=4, seed=5)
    again = gibbs.one_way(pulp, "bright", "operator", n_iter=200, n_chains=4, seed=5)
    pd.testing.assert_frame_equal(four.draws, again.draws)
    pd.testing.assert_frame_equal(two.draws, four.draws[four.draws.chain < 2].reset_index(drop=True))
    assert not np.allclose(four.values("mu")[0], four.values("mu")[1])
    assert list(four.draws.columns) == ["chain", "draw", "mu", "sigma2_group", "sigma2_resid",
                                        "a[a]", "a[b]", "a[c]", "a[d]"]
    idata = four.to_arviz()
    assert idata.posterior["mu"].shape == (4, 100)
    assert {"mean", "sd", "2.5%", "97.5%", "ess_bulk", "ess_tail", "r_hat"} <= set(four.summary().columns)
    with pytest.raises(Exception):
        four.model = "changed"  # frozen


def test_bad_input_errors():
    pulp = lmmnotes.datasets.load("pulp")
    before = pulp.copy()
    with pytest.raises(DataError, match="group_scale must be a positive"):
        gibbs.one_way(pulp, "bright", "operator", group_scale=0.0)
    with pytest.raises(DataError, match="resid_shape must be a number of at least 0"):
        gibbs.one_way(pulp, "bright", "operator", resid_shape=-1.0)
    with pytest.raises(DataError, match="no draws after the warm-up"):
        gibbs.one_way(pulp, "bright", "operator", n_iter=100, n_warmup=100)
    with pytest.raises(DataError, match="must be numeric"):
        gibbs.one_way(pulp, "operator", "operator")
    unused = pulp.assign(operator=pulp["operator"].cat.add_categories(["e"]))  # dropped, as by lmer
    kept = gibbs.one_way(unused, "bright", "operator", n_iter=200, seed=1)
    assert [c for c in kept.parameters if c.startswith("a[")] == ["a[a]", "a[b]", "a[c]", "a[d]"]
    with pytest.raises(DataError, match="update must be"):
        gibbs.one_way(pulp, "bright", "operator", update="gibbs")
    with pytest.raises(DataError, match="not found"):
        gibbs.one_way(pulp, "brightness", "operator")
    with pytest.raises(DataError, match="fixef_var must be a positive"):
        gibbs.lmm("bright ~ 1 + (1 | operator)", pulp, fixef_var=-1)
    with pytest.raises(DataError, match="no draws after the warm-up"):
        gibbs.lmm("bright ~ 1 + (1 | operator)", pulp, n_iter=10, n_warmup=20)
    psid = book_data("psid")
    with pytest.raises(DataError, match="positive definite 2 x 2"):
        gibbs.lmm("log(income) ~ cyear + (cyear | person)", psid, cov_scale=np.eye(3))
    pd.testing.assert_frame_equal(pulp, before)
