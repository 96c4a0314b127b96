"""Speed of the Gibbs samplers (lmmnotes.gibbs), called from benchmarks/run.py.

one_way on pulp, 4 chains x 10^4 iterations (target < 0.5 s), and lmm on the PSID model
log(income) ~ cyear * sex + age + educ + (cyear | person), 4 chains x 2000 iterations (target
< 10 s); for each, the wall time and the effective samples per second of the slowest-mixing
parameter (smallest bulk ESS, from ArviZ). The CPU time is printed beside the wall time: on a
shared machine the wall time can be several times larger.
"""

from __future__ import annotations

import time

import numpy as np

from lmmnotes import datasets, gibbs


def _report(name: str, run, target_s: float) -> None:
    run()  # warm-up (imports, caches)
    start, cpu = time.perf_counter(), time.process_time()
    post = run()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    table = post.summary()
    worst = table["ess_bulk"].idxmin()
    print(f"{name}: {seconds:.2f} s wall, {cpu:.2f} s CPU (target < {target_s:g} s); smallest bulk ESS {table.loc[worst, 'ess_bulk']:.0f} "
          f"({worst}), {table.loc[worst, 'ess_bulk'] / seconds:.0f} effective samples per second")


def gibbs_figures() -> None:
    pulp = datasets.load("pulp")
    psid = datasets.load("psid")
    psid["cyear"] = psid["year"] - 78
    print()
    _report("one_way, pulp, 4 x 10^4 iterations (blocked)",
            lambda: gibbs.one_way(pulp, "bright", "operator", n_iter=10_000, n_chains=4, seed=1), 0.5)
    _report("one_way, pulp, 4 x 10^4 iterations (single-site)",
            lambda: gibbs.one_way(pulp, "bright", "operator", n_iter=10_000, n_chains=4, seed=1, update="single"), 0.5)
    _report("lmm, PSID (cyear | person), 4 x 2000 iterations",
            lambda: gibbs.lmm("log(income) ~ cyear * sex + age + educ + (cyear | person)", psid,
                              n_iter=2000, n_chains=4, seed=1), 10)


if __name__ == "__main__":
    gibbs_figures()
