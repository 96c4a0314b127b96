"""Speed and memory of lmmnotes.lmer on the book's models, beside statsmodels' MixedLM.

Run with `make benchmark` (or .venv/bin/python benchmarks/run.py). Prints, for each model, the
median wall time of a whole fit (formula to result) over repeated runs and the log-likelihood,
for lmmnotes and, where it can express the model, statsmodels; then the peak memory that the
hsb fit adds (tracemalloc, which sees numpy's allocations); then the parametric bootstrap:
pulp's LRT with B = 10^4 (target < 1 s; lme4's loop takes about 9.6 ms a replicate here) and
1000 refits of the PSID model (target < 5 s; lme4's bootMer about 25 ms a refit), in one
process and in two. Figures, not pass/fail tests.
"""

from __future__ import annotations

import time
import tracemalloc
import warnings

import numpy as np
import statsmodels.formula.api as smf

import lmmnotes
from lmmnotes import datasets

TARGET_MS = {"pulp": 10, "eggs": 10, "irrigation": 10, "psid": 30, "hsb": 60}  # the targets
LME4_MS = {"pulp": 10, "eggs": 16, "irrigation": 11, "psid": 34, "hsb": 67}  # lme4 on this machine


def data(name):
    frame = datasets.load(name)
    if name == "psid":
        frame["cyear"] = frame["year"] - 78
        frame["log_income"] = np.log(frame["income"])
    return frame


MODELS = {
    "pulp": ("bright ~ 1 + (1 | operator)", False,
             lambda d: smf.mixedlm("bright ~ 1", d, groups="operator")),
    "eggs": ("Fat ~ 1 + (1 | Lab) + (1 | Lab:Technician) + (1 | Lab:Technician:Sample)", True,
             lambda d: smf.mixedlm("Fat ~ 1", d, groups="Lab",
                                   vc_formula={"tech": "0 + C(Technician)", "sample": "0 + C(Technician):C(Sample)"})),
    "irrigation": ("yield ~ irrigation * variety + (1 | field)", True,
                   lambda d: smf.mixedlm("Q('yield') ~ irrigation * variety", d, groups="field")),
    "psid": ("log(income) ~ cyear * sex + age + educ + (cyear | person)", True,
             lambda d: smf.mixedlm("log_income ~ cyear * sex + age + educ", d, groups="person", re_formula="~cyear")),
    "hsb": ("mathach ~ ses * sector + (ses | school)", False,
            lambda d: smf.mixedlm("mathach ~ ses * sector", d, groups="school", re_formula="~ses")),
}
# pulp is fitted by REML in the book; the ML fit has the same cost. hsb is the ML fit of chapter 10.
REML = {"pulp": True, "eggs": True, "irrigation": True, "psid": True, "hsb": False}


def median_ms(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times)), result


def main() -> None:
    print(f"{'model':11s} {'lmmnotes ms':>11s} {'target':>6s} {'lme4':>5s} {'statsmodels ms':>14s}   "
          f"{'logLik lmmnotes':>16s} {'logLik statsmodels':>18s}")
    for name, (formula, _, sm_model) in MODELS.items():
        frame = data(name)
        reml = REML[name]
        lmmnotes.lmer(formula, frame, reml=reml)  # warm-up (imports, caches)
        ours_ms, fit = median_ms(lambda: lmmnotes.lmer(formula, frame, reml=reml), 21)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sm_ms, sm_fit = median_ms(lambda: sm_model(frame).fit(reml=reml), 5)
        print(f"{name:11s} {ours_ms:11.1f} {TARGET_MS[name]:6d} {LME4_MS[name]:5d} {sm_ms:14.1f}   "
              f"{fit.loglik:16.4f} {sm_fit.llf:18.4f}")

    frame = data("hsb")
    lmmnotes.lmer(MODELS["hsb"][0], frame, reml=False)
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    lmmnotes.lmer(MODELS["hsb"][0], frame, reml=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"\nhsb (n = {len(frame)}): peak memory added by one fit = {(peak - base) / 2**20:.1f} MiB "
          f"(one dense n x n matrix would be {len(frame) ** 2 * 8 / 2**20:.0f} MiB)")


def bootstrap_figures() -> None:
    pulp = data("pulp")
    alt = lmmnotes.lmer("bright ~ 1 + (1 | operator)", pulp, reml=False)
    null = smf.ols("bright ~ 1", pulp).fit()
    lmmnotes.lrt(null, alt, nsim=100, seed=0)  # warm-up
    start = time.perf_counter()
    result = lmmnotes.lrt(null, alt, nsim=10_000, seed=1)
    seconds = time.perf_counter() - start
    print(f"\npulp LRT, B = 10^4: {seconds:.2f} s ({1e6 * seconds / 1e4:.0f} us per replicate; target < 1 s, "
          f"lme4 about 9600 us per replicate); p = {result.p_boot:.4f}, {100 * result.fraction_zero:.1f}% zeros")

    fit = lmmnotes.lmer(MODELS["psid"][0], data("psid"))
    for n_jobs in (1, 2):
        start = time.perf_counter()
        boot = lmmnotes.bootstrap(fit, lambda f: f.fixef, nsim=1000, seed=1, n_jobs=n_jobs)
        seconds = time.perf_counter() - start
        print(f"PSID, 1000 refits, n_jobs = {n_jobs}: {seconds:.2f} s ({1e3 * seconds / 1000:.1f} ms per refit; "
              f"target < 5 s, lme4 about 25 ms per refit); {boot.n_failed} failed")


if __name__ == "__main__":
    main()
    bootstrap_figures()
    from gibbs import gibbs_figures  # benchmarks/gibbs.py: the Gibbs samplers' speed

    gibbs_figures()
