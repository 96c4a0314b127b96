"""Speed and memory of lmmnotes.lmer on the book's models, beside statsmodels' MixedLM.

Run with `make benchmark` (or .venv/bin/python benchmarks/run.py). Prints, for each model, the
median wall time of a whole fit (formula to result) over repeated runs and the log-likelihood,
for lmmnotes and, where it can express the model, statsmodels; then the peak memory that the
hsb fit adds (tracemalloc, which sees numpy's allocations); then the parametric bootstrap:
pulp's LRT with B = 10^4 (target < 1 s; lme4's loop takes about 9.6 ms a replicate here) and
1000 refits of the PSID model (target < 5 s; lme4's bootMer about 25 ms a refit), in one
process and in two. Issue 13 adds a simulated repeated-measures study (18 subjects x 10 days,
random slope; target < 3 ms, as for each book model) and a simulated crossed design of a course
evaluation's shape (2900 students x 1100 instructors, 14 departments, 72,500 ratings; target
< 2 s and < 1 GiB added) at 1/8, 1/4, 1/2 and full size: a table, its CSV
(benchmarks/results/crossed_scaling.csv, used by chapter 8) and a plot
(_build/benchmarks/crossed_scaling.png), and the log-likelihood of the sparse against the dense
path at 1/4 size; and the small fits step by step (design, cross-products, optimizer, result;
the number of criterion evaluations and the cost of one), to show where their time goes.
Last, "busy machine": the crossed fit at 1/3 size (24,175 ratings) and full size, idle and while
one other CPU-bound process runs (lmmnotes fits on one BLAS thread: see fit.optimize_theta);
`python benchmarks/run.py busy` runs this section alone (about a minute on 2 cores). Figures, not
pass/fail tests.
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf

import lmmnotes
from lmmnotes import LmerFit, datasets
from lmmnotes.criterion import CrossProducts, criterion_and_gradient
from lmmnotes.design import build_design
from lmmnotes.optimizer import optimize_theta, single_blas_thread
from lmmnotes.formula import parse_formula

TARGET_MS = 3  # issue 13: a fit of each of the book's models in under 3 ms (issue 6 had asked 10-60 ms)
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
        print(f"{name:11s} {ours_ms:11.1f} {TARGET_MS:6d} {LME4_MS[name]:5d} {sm_ms:14.1f}   "
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


# ---- a repeated-measures study and a large crossed design (issue 13) --------------------------
REPEATED_FORMULA = "reaction ~ days + (days | subject)"
CROSSED_FORMULA = "y ~ 1 + service + (1 | student) + (1 | instructor) + (1 | dept)"
CROSSED_FULL = {"students": 2900, "instructors": 1100, "depts": 14, "per_student": 25}
CROSSED_SCALES = (1 / 8, 1 / 4, 1 / 2, 1)
SCALING_CSV = Path(__file__).resolve().parent / "results" / "crossed_scaling.csv"
PLOT_DIR = Path(__file__).resolve().parent.parent / "_build" / "benchmarks"


def simulate_repeated_measures(seed: int = 2026) -> pd.DataFrame:
    """18 subjects x 10 days with a random intercept and slope (the shape of lme4's sleepstudy:
    beta = (251, 10.5), SDs 25 and 6 with correlation 0.07, sigma 26)."""
    rng = np.random.default_rng(seed)
    days = np.tile(np.arange(10.0), 18)
    subject = np.repeat([f"s{k:02d}" for k in range(18)], 10)
    sd, corr = np.array([25.0, 6.0]), 0.07
    cov = np.outer(sd, sd) * np.array([[1.0, corr], [corr, 1.0]])
    b = rng.multivariate_normal(np.zeros(2), cov, size=18)
    k = np.repeat(np.arange(18), 10)
    reaction = 251.0 + 10.5 * days + b[k, 0] + b[k, 1] * days + 26.0 * rng.standard_normal(180)
    return pd.DataFrame({"subject": subject, "days": days, "reaction": reaction})


def simulate_crossed(scale: float = 1.0, seed: int = 13) -> pd.DataFrame:
    """Ratings of instructors by students, the shape of a university's course evaluations.

    At full size 2900 students each rate 25 distinct instructors, drawn at random from 1100
    (72,500 ratings); each instructor belongs to one of 14 departments; ``service`` (a fixed
    effect with 2 levels) marks about 40% of the ratings. ``scale`` shrinks the numbers of
    students and instructors (25 ratings per student and 14 departments stay). The response is
    y = 3 + 0.1 service + student + instructor + dept + error, with SDs 0.3, 0.5, 0.1 and 1.2.
    """
    rng = np.random.default_rng(seed)
    sizes = CROSSED_FULL
    n_s, n_d = round(scale * sizes["students"]), round(scale * sizes["instructors"])
    m = sizes["per_student"]
    instructor = np.argsort(rng.random((n_s, n_d)), axis=1)[:, :m].ravel()  # m distinct per student
    student = np.repeat(np.arange(n_s), m)
    dept_of = rng.integers(0, sizes["depts"], size=n_d)
    dept = dept_of[instructor]
    service = rng.random(len(student)) < 0.4
    y = (3.0 + 0.1 * service + 0.3 * rng.standard_normal(n_s)[student] + 0.5 * rng.standard_normal(n_d)[instructor]
         + 0.1 * rng.standard_normal(sizes["depts"])[dept] + 1.2 * rng.standard_normal(len(student)))
    return pd.DataFrame({"student": pd.Categorical(student), "instructor": pd.Categorical(instructor),
                         "dept": pd.Categorical(dept), "service": pd.Categorical(np.where(service, "yes", "no")), "y": y})


def repeated_measures_figures() -> None:
    frame = simulate_repeated_measures()
    lmmnotes.lmer(REPEATED_FORMULA, frame)
    ms, fit = median_ms(lambda: lmmnotes.lmer(REPEATED_FORMULA, frame), 51)
    print(f"\nrepeated measures (18 subjects x 10 days, {REPEATED_FORMULA}): median fit {ms:.2f} ms "
          f"(target < 3 ms); REML log-likelihood {fit.loglik:.4f}")


def small_fit_stages() -> None:
    """Where a small fit's time goes: median ms of each step of lmer's pipeline (parse and
    build the design, cross-products, optimizer, result), the number of criterion evaluations
    and the median cost of one at the optimum (with its gradient, as L-BFGS-B needs)."""
    cases = [(name, formula, data(name), REML[name]) for name, (formula, _, _) in MODELS.items()]
    cases.append(("repeated", REPEATED_FORMULA, simulate_repeated_measures(), True))
    print(f"\nstages of a fit, median ms: {'design':>7s} {'cross':>6s} {'optimizer':>9s} {'result':>6s} "
          f"{'evals':>5s} {'ms/eval':>7s}")
    for name, formula, frame, reml in cases:
        steps = []
        for _ in range(21):
            t0 = time.perf_counter()
            design = build_design(parse_formula(formula), frame)
            t1 = time.perf_counter()
            cp = CrossProducts.from_design(design)
            t2 = time.perf_counter()
            opt = optimize_theta(design, cp, reml)
            t3 = time.perf_counter()
            LmerFit.from_theta(design, cp, reml, opt.theta, converged=opt.converged, message=opt.message)
            t4 = time.perf_counter()
            steps.append([t1 - t0, t2 - t1, t3 - t2, t4 - t3])
        design_ms, cross_ms, opt_ms, result_ms = 1e3 * np.median(steps, axis=0)
        with single_blas_thread():  # as the optimizer runs them
            eval_ms, _ = median_ms(lambda: criterion_and_gradient(opt.theta, design, cp, reml), 101)
        print(f"  {name:26s} {design_ms:7.2f} {cross_ms:6.2f} {opt_ms:9.2f} {result_ms:6.2f} "
              f"{opt.n_evaluations:5d} {eval_ms:7.3f}")


def _timed_fit(frame: pd.DataFrame):
    start = time.perf_counter()
    fit = lmmnotes.lmer(CROSSED_FORMULA, frame, reml=False)
    return time.perf_counter() - start, fit


def crossed_scaling(repeats: int = 3) -> pd.DataFrame:
    """Median ML fit time of the crossed design at 1/8, 1/4, 1/2 and full size."""
    rows = []
    for scale in CROSSED_SCALES:
        frame = simulate_crossed(scale)
        times, fit = [], None
        for _ in range(repeats):
            seconds, fit = _timed_fit(frame)
            times.append(seconds)
        t1, t2 = fit.design.terms[0], fit.design.terms[1]
        rows.append({"scale": scale, "n": fit.nobs, "students": t1.n_levels, "instructors": t2.n_levels,
                     "q": fit.design.q, "median_s": float(np.median(times)), "min_s": float(np.min(times)),
                     "loglik": fit.loglik, "converged": fit.converged})
    return pd.DataFrame(rows)


def crossed_figures() -> None:
    """The crossed design: scaling table and plot, memory of the full fit, sparse vs dense path."""
    print(f"\ncrossed design ({CROSSED_FORMULA}, ML), median of 3 fits:")
    table = crossed_scaling()
    print(table.to_string(index=False, formatters={"scale": "{:g}".format, "median_s": "{:.3f}".format,
                                                   "min_s": "{:.3f}".format, "loglik": "{:.6f}".format}))
    full = table.iloc[-1]
    print(f"full size: {full['median_s']:.2f} s (target < 2 s); time per observation from 1/8 to full: "
          + ", ".join(f"{1e6 * r.median_s / r.n:.1f}" for r in table.itertuples()) + " us")
    SCALING_CSV.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(SCALING_CSV, index=False, float_format="%.10g")
    PLOT_DIR.mkdir(parents=True, exist_ok=True)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(table["n"], table["median_s"], "o-")
    ax.set_xlabel("observations")
    ax.set_ylabel("fit time (s)")
    ax.set_title("crossed design: median ML fit time", fontsize=10)
    fig.savefig(PLOT_DIR / "crossed_scaling.png", dpi=110, bbox_inches="tight")
    print(f"table written to {SCALING_CSV}, plot to {PLOT_DIR / 'crossed_scaling.png'}")

    frame = simulate_crossed(1.0)
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    _timed_fit(frame)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"full crossed fit: peak memory added = {(peak - base) / 2**20:.0f} MiB (tracemalloc; target < 1 GiB); "
          f"process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB")
    sparse_versus_dense(CROSSED_SCALES[1])


def sparse_versus_dense(scale: float) -> None:
    """The same ML fit through the sparse and the dense path (the full-size dense path takes too
    long to run each time: its log-likelihood at full size is recorded in the closing note of issue 13)."""
    design = build_design(parse_formula(CROSSED_FORMULA), simulate_crossed(scale))
    fits = {}
    for sparse in (True, False):
        start = time.perf_counter()
        cp = CrossProducts.from_design(design, sparse=sparse)
        opt = optimize_theta(design, cp, False)
        fits[sparse] = (LmerFit.from_theta(design, cp, False, opt.theta), time.perf_counter() - start)
    (s, s_time), (d, d_time) = fits[True], fits[False]
    print(f"crossed design at {scale:g} size (n = {design.nobs}): log-likelihood sparse path {s.loglik:.8f} "
          f"({s_time:.2f} s), dense path {d.loglik:.8f} ({d_time:.2f} s), difference {s.loglik - d.loglik:.1e}")


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


# ---- a busy machine: BLAS threads against one other CPU-bound process -------------------------
BUSY_SCALES = (1 / 3, 1)  # 24,175 and 72,500 ratings (L_22 of order 381 and 1114)
BUSY_LOOP = "import time\nt = time.monotonic() + {seconds}\nwhile time.monotonic() < t: pass"


@contextlib.contextmanager
def one_busy_process(seconds: float = 90.0):
    """Run one other CPU-bound process (a pure-Python spin: one core's worth of work, no memory
    traffic, at most ``seconds``) for the duration of the block; it is always terminated."""
    worker = subprocess.Popen([sys.executable, "-c", BUSY_LOOP.format(seconds=seconds)])
    try:
        time.sleep(0.3)  # let it start spinning
        yield worker
    finally:
        worker.terminate()
        try:
            worker.wait(5)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def _machine_cpu_seconds() -> float:
    """CPU seconds all processes have used since boot (Linux /proc/stat; nan elsewhere)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except OSError:
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _timed_fits(frame: pd.DataFrame, repeats: int, give_up_after: float) -> tuple[list[float], float]:
    """Fit up to ``repeats`` times (not again after a fit slower than ``give_up_after`` s); also
    the CPU load of other processes meanwhile, in cores (machine CPU time less this process's)."""
    times = []
    machine, own, start = _machine_cpu_seconds(), time.process_time(), time.perf_counter()
    for _ in range(repeats):
        times.append(_timed_fit(frame)[0])
        if times[-1] > give_up_after:
            break
    other = (_machine_cpu_seconds() - machine) - (time.process_time() - own)
    return times, other / (time.perf_counter() - start)


def busy_machine_figures(repeats: int = 3) -> pd.DataFrame:
    """Median ML fit time of the crossed design idle and while one other CPU-bound process runs
    (lmmnotes fits on one BLAS thread; the issue asks busy/idle <= 1.5 at full size). ``other`` is
    the CPU load of other processes during the fits, in cores (about 0 idle, 1 busy; more means
    that something else ran too and the figure is not clean). A busy fit more than 5 times slower
    than idle is not repeated.

    Measured before lmmnotes kept to one thread (two OpenBLAS threads in the optimizer from an
    L_22 of order 800): full size 2.1 s idle, 4.3-4.7 s busy (2.1x), 41 s under heavier load."""
    from threadpoolctl import threadpool_info

    blas = [f"{i['internal_api']} {i['version']} {i['architecture']} ({i['num_threads']} threads, "
            f"{i['threading_layer']})" for i in threadpool_info() if i["user_api"] == "blas"]
    print(f"\nbusy machine: {os.cpu_count()} cores, BLAS {'; '.join(blas)}; "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '-')}, "
          f"OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE', '-')}")
    print(f"crossed design, ML, median of {repeats} fits; busy = one other process spinning in pure Python")
    rows = []
    for scale in BUSY_SCALES:
        frame = simulate_crossed(scale)
        _timed_fit(frame)  # warm-up
        row = {"n": len(frame)}
        for state in ("idle", "busy"):
            load = one_busy_process() if state == "busy" else contextlib.nullcontext()
            give_up = 5 * row["idle_s"] if state == "busy" else np.inf
            with load:
                times, other = _timed_fits(frame, repeats, give_up)
            row[f"{state}_s"] = float(np.median(times))
            row[f"{state}_fits"] = len(times)
            row[f"other_{state}"] = other
        row["busy/idle"] = row["busy_s"] / row["idle_s"]
        rows.append(row)
    table = pd.DataFrame(rows)[["n", "idle_s", "other_idle", "busy_s", "busy_fits", "other_busy", "busy/idle"]]
    two = "{:.2f}".format
    print(table.to_string(index=False, formatters={c: two for c in ("idle_s", "busy_s", "busy/idle")}
                          | {c: "{:.1f}".format for c in ("other_idle", "other_busy")}))
    print(f"target busy/idle <= 1.5 at full size: {table['busy/idle'].iloc[-1]:.2f}")
    return table


if __name__ == "__main__":
    if sys.argv[1:] == ["busy"]:  # python benchmarks/run.py busy: this section alone
        busy_machine_figures()
        sys.exit()
    main()
    repeated_measures_figures()
    small_fit_stages()
    crossed_figures()
    bootstrap_figures()
    from gibbs import gibbs_figures  # benchmarks/gibbs.py: the Gibbs samplers' speed

    gibbs_figures()
    busy_machine_figures()
