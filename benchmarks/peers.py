"""lmmnotes.lmer beside two Rust ports of lme4 on PyPI (lme-python, mixedlm) and statsmodels' MixedLM.

How to run, from the repository root:

    .venv/bin/python benchmarks/peers.py            # about 2-3 minutes on the 2-core machine
    .venv/bin/python benchmarks/peers.py --setup    # first creates the peers' venv if it is missing

The peers are never dependencies of lmmnotes: they live in a separate virtual environment outside
the repository, by default /work/peers-venv (another path: PEERS_VENV=/path/to/venv). `--setup`
creates it with the pinned versions below; by hand:

    python3 -m venv /work/peers-venv
    /work/peers-venv/bin/pip install lme-python==0.2.7 mixedlm==1.3.0 statsmodels==0.15.0 \
        pyarrow pandas numpy scipy threadpoolctl

What it does: this process (the project's .venv) builds every data set (the book's through
lmmnotes.datasets.load, and five simulated designs), writes them to a temporary JSON file, and
runs one fresh worker process per library, one after another, each running this file with
`--worker LIB`: lmmnotes under the project's .venv (the working tree's, through PYTHONPATH), and
lme_python, mixedlm and statsmodels under the peers' venv; three rounds, the libraries in turn in
each, so that other work on the machine falls on all of them alike. The lmmnotes worker times two
variants fit by fit in turn: as shipped, and "nocheck", without lme4's scaled-gradient convergence
check (lmmnotes.fit.warn_about_fit patched to a no-op, and lmmnotes.fit.lme4_gradient_check, which
newer trees call from lmer itself, to return 0); "check ms" is the median of the paired
differences, the check's cost. Every worker starts with
OPENBLAS_NUM_THREADS = OMP_NUM_THREADS = MKL_NUM_THREADS = RAYON_NUM_THREADS = 1 and also limits
BLAS to one thread with threadpoolctl, so every library computes on one thread.

For each model and library: one warm-up fit (imports, caches; its warnings are recorded), then the
median wall time of whole fits, formula and pandas DataFrame to result object (30 runs, fewer when
one library's runs of one model pass 15 s: statsmodels on psid and hsb), and the log-likelihood
(REML log-likelihood = -REML criterion / 2 for REML fits; hsb is the ML fit of chapter 10).
"ratio" is lmmnotes' median over the fastest peer's, among the peers whose log-likelihood agrees
with lmmnotes' to 1e-3 (a peer at a worse optimum has not fitted the same model). The table is
printed and written to benchmarks/results/peers.txt.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "peers.txt"
PEERS_VENV = Path(os.environ.get("PEERS_VENV", "/work/peers-venv"))
PEERS_PYTHON = PEERS_VENV / "bin" / "python"
PEER_PACKAGES = ["lme-python==0.2.7", "mixedlm==1.3.0", "statsmodels==0.15.0", "pyarrow", "pandas", "numpy",
                 "scipy", "threadpoolctl"]
ONE_THREAD = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                     "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "RAYON_NUM_THREADS")}
ROUNDS = 3  # each library's worker runs this many times, the libraries in turn, a share of the runs each time
TIME_CAP_S = 15.0  # stop repeating one library's fits of one model once its rounds took this long (2 runs a round at least)
AGREE = 1e-3  # log-likelihoods this close count as the same fit

# name: (data, lme4 formula, formula for the peers' parsers, REML, runs, statsmodels spec or None)
# statsmodels: (fixed formula, groups column, re_formula, vc_formula); "one" is a column of ones,
# the single group through which MixedLM expresses crossed random effects as variance components.
MODELS = {
    "pulp": ("pulp", "bright ~ 1 + (1 | operator)", None, True, 30,
             ("bright ~ 1", "operator", None, None)),
    "irrigation": ("irrigation", "yield ~ irrigation * variety + (1 | field)", None, True, 30,
                   ("Q('yield') ~ irrigation * variety", "field", None, None)),
    "psid": ("psid", "log(income) ~ cyear * sex + age + educ + (cyear | person)",
             "log_income ~ cyear * sex + age + educ + (cyear | person)", True, 30,
             ("log_income ~ cyear * sex + age + educ", "person", "~cyear", None)),
    "hsb (ML)": ("hsb", "mathach ~ ses * sector + (ses | school)", None, False, 30,
                 ("mathach ~ ses * sector", "school", "~ses", None)),
    "eggs (nested)": ("eggs", "Fat ~ 1 + (1 | Lab) + (1 | Lab:Technician) + (1 | Lab:Technician:Sample)", None,
                      True, 30, ("Fat ~ 1", "Lab", None,
                                 {"tech": "0 + C(Technician)", "sample": "0 + C(Technician):C(Sample)"})),
    "penicillin-like": ("penicillin", "y ~ 1 + (1 | plate) + (1 | sample)", None, True, 30,
                        ("y ~ 1", "one", "0", {"plate": "0 + C(plate)", "sample": "0 + C(sample)"})),
    "pastes-like": ("pastes", "y ~ 1 + (1 | batch) + (1 | batch:cask)", None, True, 30,
                    ("y ~ 1", "batch", None, {"cask": "0 + C(cask)"})),
    "abrasion-like": ("abrasion", "y ~ material + (1 | run) + (1 | position)", None, True, 30,
                      ("y ~ material", "one", "0", {"run": "0 + C(run)", "position": "0 + C(position)"})),
    "singular": ("singular", "y ~ 1 + (1 | g)", None, True, 30, ("y ~ 1", "g", None, None)),
}
LIBRARIES = ["lmmnotes", "lmmnotes-nocheck", "lme_python", "mixedlm", "statsmodels"]
PEERS = LIBRARIES[2:]


# ---- data (built in the project's venv) ------------------------------------------------------
def simulated_frames():
    import numpy as np
    import pandas as pd

    def factor(labels):
        labels = list(labels)
        return pd.Categorical(labels, categories=sorted(set(labels), key=labels.index))

    frames = {}
    # Penicillin-like: 24 plates x 6 samples, each pair once; y = 23 + plate + sample + error.
    rng = np.random.default_rng(1)
    plate, sample = np.repeat(np.arange(24), 6), np.tile(np.arange(6), 24)
    y = 23 + 0.85 * rng.standard_normal(24)[plate] + 1.9 * rng.standard_normal(6)[sample] + 0.55 * rng.standard_normal(144)
    frames["penicillin"] = pd.DataFrame({"plate": factor(f"p{k:02d}" for k in plate),
                                         "sample": factor("ABCDEF"[k] for k in sample), "y": y})
    # Pastes-like: 10 batches x 3 casks (nested) x 2 samples; SDs of lme4's Pastes fit.
    rng = np.random.default_rng(2)
    batch, cask = np.repeat(np.arange(10), 6), np.tile(np.repeat(np.arange(3), 2), 10)
    y = 60 + 1.3 * rng.standard_normal(10)[batch] + 2.9 * rng.standard_normal(30)[3 * batch + cask] + 0.8 * rng.standard_normal(60)
    frames["pastes"] = pd.DataFrame({"batch": factor("ABCDEFGHIJ"[k] for k in batch),
                                     "cask": factor("abc"[k] for k in cask), "y": y})
    # Abrasion-like Latin square: 4 runs x 4 positions, material A-D, each once per run and position.
    rng = np.random.default_rng(3)
    run, position = np.repeat(np.arange(4), 4), np.tile(np.arange(4), 4)
    material = (run + position) % 4
    y = (np.array([265.0, 220.0, 242.0, 230.0])[material] + 8.0 * rng.standard_normal(4)[run]
         + 10.0 * rng.standard_normal(4)[position] + 7.0 * rng.standard_normal(16))
    frames["abrasion"] = pd.DataFrame({"run": factor(str(k + 1) for k in run),
                                       "position": factor(str(k + 1) for k in position),
                                       "material": pd.Categorical(["ABCD"[k] for k in material], categories=list("ABCD")),
                                       "y": y})
    # Singular: 8 groups x 5, no group effect (this seed gives a between-group variance estimate of 0).
    rng = np.random.default_rng(5)
    g = np.repeat(np.arange(8), 5)
    frames["singular"] = pd.DataFrame({"g": factor(f"g{k}" for k in g), "y": 10 + rng.standard_normal(40)})
    return frames


def all_frames():
    import numpy as np
    from lmmnotes import datasets

    frames = {name: datasets.load(name) for name in ("pulp", "irrigation", "psid", "hsb", "eggs")}
    frames["psid"]["cyear"] = frames["psid"]["year"] - 78
    frames["psid"]["log_income"] = np.log(frames["psid"]["income"])
    frames.update(simulated_frames())
    for frame in frames.values():
        frame["one"] = 1  # statsmodels' single group for crossed terms; no formula of the others uses it
    return frames


def to_json(frames) -> dict:
    """Frames as plain JSON (categorical columns as codes and levels), independent of pandas' pickle format."""
    import pandas as pd

    out = {}
    for name, frame in frames.items():
        columns = {}
        for col in frame.columns:
            s = frame[col]
            if isinstance(s.dtype, pd.CategoricalDtype):
                columns[col] = {"codes": s.cat.codes.tolist(), "levels": [str(v) for v in s.cat.categories],
                                "ordered": bool(s.cat.ordered)}
            else:
                columns[col] = {"values": s.tolist(), "dtype": str(s.dtype)}
        out[name] = columns
    return out


def from_json(blob: dict) -> dict:
    import numpy as np
    import pandas as pd

    frames = {}
    for name, columns in blob.items():
        data = {}
        for col, spec in columns.items():
            if "codes" in spec:
                data[col] = pd.Categorical.from_codes(spec["codes"], categories=spec["levels"], ordered=spec["ordered"])
            else:
                data[col] = np.asarray(spec["values"], dtype=spec["dtype"])
        frames[name] = pd.DataFrame(data)
    return frames


# ---- one library's fits (run in a worker process) --------------------------------------------
def fitter(lib: str):
    """(fit(model name, frame) -> log-likelihood, version, API used, a no-argument function that
    switches lmmnotes' convergence check on or off, or None) for one library."""
    if lib == "lmmnotes":
        import lmmnotes
        import lmmnotes.fit

        # lme4's scaled-gradient test: made inside warn_about_fit, or (newer trees) by lmer calling
        # lme4_gradient_check and warn_about_fit only reading the result. Off = both names in
        # lmmnotes.fit replaced: the test returns 0 (passes), warn_about_fit does nothing.
        calls = {}

        def counted(name, value):
            def replacement(*args, **kwargs):
                calls[name] = calls.get(name, 0) + 1
                return value
            return replacement

        patched = {name: counted(name, value) for name, value in
                   (("lme4_gradient_check", 0.0), ("warn_about_fit", None)) if hasattr(lmmnotes.fit, name)}
        shipped = {name: getattr(lmmnotes.fit, name) for name in patched}

        def switch(check: bool):
            for name in patched:
                setattr(lmmnotes.fit, name, shipped[name] if check else patched[name])
            return calls

        def fit(model, frame):
            _, formula, _, reml, _, _ = MODELS[model]
            return lmmnotes.lmer(formula, frame, reml=reml).loglik
        return fit, getattr(lmmnotes, "__version__", "working tree"), \
            "lmmnotes.lmer(formula, frame, reml=...).loglik", switch
    if lib == "lme_python":
        import importlib.metadata

        import lme_python

        def fit(model, frame):
            _, formula, peer_formula, reml, _, _ = MODELS[model]
            return lme_python.lmer(peer_formula or formula, frame, reml=reml).log_likelihood
        return fit, importlib.metadata.version("lme-python"), \
            "lme_python.lmer(formula, frame, reml=...).log_likelihood", None
    if lib == "mixedlm":
        import mixedlm

        def fit(model, frame):
            _, formula, peer_formula, reml, _, _ = MODELS[model]
            return mixedlm.lmer(peer_formula or formula, frame, REML=reml).logLik().value
        return fit, mixedlm.__version__, "mixedlm.lmer(formula, frame, REML=...).logLik().value", None
    if lib == "statsmodels":
        import statsmodels
        import statsmodels.formula.api as smf

        def fit(model, frame):
            _, _, _, reml, _, spec = MODELS[model]
            if spec is None:
                raise NotImplementedError("not expressible")
            formula, groups, re_formula, vc = spec
            return smf.mixedlm(formula, frame, groups=groups, re_formula=re_formula,
                               vc_formula=vc).fit(reml=reml).llf
        return fit, statsmodels.__version__, \
            "smf.mixedlm(fixed, frame, groups=, re_formula=, vc_formula=).fit(reml=...).llf", None
    raise ValueError(lib)


def worker(lib: str, data_path: str, first_round: bool) -> None:
    """One round of one library's fits: per model a warm-up, then ceil(runs / ROUNDS) timed fits;
    prints one JSON line per record. The lmmnotes worker times its two variants (convergence
    check on and off) fit by fit in turn, so that a busy machine slows both alike."""
    import numpy as np
    import pandas as pd
    import scipy

    try:
        from threadpoolctl import threadpool_info, threadpool_limits
        limiter = threadpool_limits(limits=1)
    except ImportError:  # the environment variables still hold
        threadpool_info, limiter = (lambda: []), None

    frames = from_json(json.loads(Path(data_path).read_text()))
    fit, version, api, switch = fitter(lib)
    variants = [(lib, True)] + ([("lmmnotes-nocheck", False)] if switch else [])
    emit = lambda **kw: print(json.dumps(kw), flush=True)  # noqa: E731
    for name, _ in variants:
        emit(lib=name, kind="info", version=version, api=api, python=platform.python_version(),
             numpy=np.__version__, scipy=scipy.__version__, pandas=pd.__version__,
             blas=sorted({f"{i['internal_api']}:{i['num_threads']}" for i in threadpool_info()}))
    for model, (data_name, *_, runs, _spec) in MODELS.items():
        frame = frames[data_name]
        records = []  # one per variant that fits the model
        for name, check in variants:
            try:
                if switch:
                    switch(check)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    loglik = float(fit(model, frame))  # warm-up
            except Exception as error:  # a model the library cannot fit
                emit(lib=name, kind="fit", model=model, error=f"{type(error).__name__}: {str(error)[:160]}")
                continue
            record = {"lib": name, "kind": "fit", "model": model, "loglik": loglik, "times": [], "check": check}
            if first_round:
                record["warnings"] = sorted({f"{w.category.__name__}: {str(w.message)[:90]}" for w in caught})
            records.append(record)
        if not records:
            continue
        wanted = -(-runs // ROUNDS)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            while len(records[0]["times"]) < wanted and (
                    len(records[0]["times"]) < 2 or time.perf_counter() - start < TIME_CAP_S / ROUNDS):
                for record in records:
                    if switch:
                        switch(record["check"])
                    t0 = time.perf_counter()
                    fit(model, frame)
                    record["times"].append(time.perf_counter() - t0)
        for record in records:
            del record["check"]
            emit(**record)
    if switch:
        calls = switch(True)
        emit(lib="lmmnotes-nocheck", kind="info",
             check=("patched lmmnotes.fit." + ", ".join(f"{k} (called {v}x)" for k, v in calls.items()))
             if calls else "PATCH NOT USED: lmer calls neither lmmnotes.fit.lme4_gradient_check nor warn_about_fit")
    if limiter is not None:
        limiter.restore_original_limits()


# ---- the driver (project venv) ---------------------------------------------------------------
def ensure_peers_venv(setup: bool) -> bool:
    if PEERS_PYTHON.exists():
        return True
    if not setup:
        print(f"The peers' virtual environment {PEERS_VENV} is missing. Create it with\n"
              f"    .venv/bin/python benchmarks/peers.py --setup\n"
              f"or by hand:\n    python3 -m venv {PEERS_VENV}\n"
              f"    {PEERS_PYTHON.parent / 'pip'} install {' '.join(PEER_PACKAGES)}\n"
              "(it lives outside the repository: the peers are never dependencies of lmmnotes).", file=sys.stderr)
        return False
    subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    subprocess.run([str(PEERS_VENV / "bin" / "pip"), "install", "-q", *PEER_PACKAGES], check=True)
    return True


def run_worker(lib: str, data_path: str, first_round: bool) -> list[dict]:
    python = sys.executable if lib == "lmmnotes" else str(PEERS_PYTHON)
    env = {**os.environ, **ONE_THREAD}
    if lib == "lmmnotes":  # the working tree's lmmnotes, whether or not it is installed
        env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    done = subprocess.run([python, str(Path(__file__).resolve()), "--worker", lib, data_path, str(int(first_round))],
                          env=env, capture_output=True, text=True, cwd=str(HERE.parent))
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0:
        records.append({"lib": lib, "kind": "crash", "error": done.stderr.strip().splitlines()[-1:] or ["?"]})
    return records


def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 1000 else f"{ms:.0f}"


def report(records: list[dict], seconds: float, load: tuple[float, float]) -> str:
    fits = {(r["lib"], r["model"]): r for r in records if r.get("kind") == "fit"}
    info = {}
    for r in records:
        if r.get("kind") == "info":
            info.setdefault(r["lib"], {}).update(r)
    lines = [f"lmmnotes vs lme4's Rust ports and statsmodels: median wall time of a whole fit (formula and "
             f"pandas frame to result), ms; {platform.machine()}, {os.cpu_count()} cores, "
             f"one BLAS/OpenMP/rayon thread per library; {time.strftime('%Y-%m-%d')}", ""]
    head = f"{'model':16s} {'n':>5s} " + " ".join(f"{lib:>16s}" for lib in LIBRARIES) + \
        f" {'ratio':>6s} {'ratio nochk':>11s} {'check ms':>8s}  fastest peer"
    lines += [head, "-" * len(head)]
    for model, (data_name, *_, runs, _) in MODELS.items():
        ours = fits.get(("lmmnotes", model), {})
        cells, agreeing = [], []
        for lib in LIBRARIES:
            r = fits.get((lib, model), {})
            if "ms" not in r:
                cells.append("fails")
                continue
            same = "ms" in ours and abs(r["loglik"] - ours["loglik"]) <= AGREE
            cells.append(fmt_ms(r["ms"]) + ("" if same or lib == "lmmnotes" else "*") + ("" if r["runs"] >= runs else f"({r['runs']})"))
            if lib in PEERS and same:
                agreeing.append((r["ms"], lib))
        fastest = min(agreeing) if agreeing else None
        ratio = f"{ours['ms'] / fastest[0]:6.2f}" if fastest and "ms" in ours else f"{'-':>6s}"
        nochk = fits.get(("lmmnotes-nocheck", model), {})
        ratio_nc = f"{nochk['ms'] / fastest[0]:11.2f}" if fastest and "ms" in nochk else f"{'-':>11s}"
        n = FRAME_ROWS.get(data_name, "")
        paired = [a - b for a, b in zip(ours.get("times", []), nochk.get("times", []))]
        check = f"{1e3 * statistics.median(paired):8.2f}" if paired else f"{'-':>8s}"
        lines.append(f"{model:16s} {n:>5} " + " ".join(f"{c:>16s}" for c in cells) + f" {ratio} {ratio_nc} {check}  "
                     + (fastest[1] if fastest else "-"))
    lines += ["", "log-likelihood at the estimates (REML log-likelihood for REML fits; hsb by ML)", ""]
    head = f"{'model':16s} " + " ".join(f"{lib:>16s}" for lib in LIBRARIES)
    lines += [head, "-" * len(head)]
    for model in MODELS:
        cells = []
        for lib in LIBRARIES:
            r = fits.get((lib, model), {})
            cells.append(f"{r['loglik']:.6f}" if "loglik" in r else "fails")
        lines.append(f"{model:16s} " + " ".join(f"{c:>16s}" for c in cells))
    lines += ["", f"* log-likelihood differs from lmmnotes' by more than {AGREE:g}: not counted as the same fit. "
              "(k) after a time: only k runs (time cap).",
              "ratio = lmmnotes / fastest agreeing peer; 'ratio nochk' = the same with lmmnotes' scaled-gradient "
              "convergence check switched off; 'check ms' = median of the paired differences (check on - off) "
              "of lmmnotes' fits, timed in turn.", ""]
    lines.append("formulas (peers get log_income = log(income) precomputed for psid; statsmodels expresses "
                 "crossed terms as variance components within one group):")
    for model, (_, formula, peer_formula, reml, runs, spec) in MODELS.items():
        lines.append(f"  {model:16s} {formula}  [{'REML' if reml else 'ML'}, {runs} runs]")
    lines += ["", "libraries and APIs:"]
    for lib in LIBRARIES:
        i = info.get(lib, {})
        extra = f"; {i['check']}" if "check" in i else ""
        lines.append(f"  {lib:17s} {i.get('version', '?'):13s} {i.get('api', '?')}{extra}")
        lines.append(f"  {'':17s} python {i.get('python', '?')}, numpy {i.get('numpy', '?')}, scipy {i.get('scipy', '?')}, "
                     f"pandas {i.get('pandas', '?')}; threadpoolctl sees {', '.join(i.get('blas', [])) or 'nothing'}")
    notes = []
    for lib in LIBRARIES:
        for model in MODELS:
            r = fits.get((lib, model), {})
            if "error" in r:
                notes.append(f"  {lib} cannot fit {model}: {r['error']}")
            for w in r.get("warnings", []):
                notes.append(f"  {lib} on {model} warns {w}")
    for r in records:
        if r.get("kind") == "crash":
            notes.append(f"  worker {r['lib']} crashed: {r['error']}")
    if notes:
        lines += ["", "failures and warnings (warm-up fit):", *notes]
    lines += ["", f"whole run: {seconds:.0f} s in {ROUNDS} rounds (each library's worker once a round, in turn); "
              f"1-minute load average {load[0]:.1f} before, {load[1]:.1f} after ({os.cpu_count()} cores): "
              "other work on the machine inflates times"]
    return "\n".join(lines) + "\n"


FRAME_ROWS: dict[str, int] = {}


def merge(records: list[dict]) -> list[dict]:
    """Pool each (library, model)'s times over the rounds: median ms and number of runs."""
    merged, rest = {}, []
    for r in records:
        if r.get("kind") != "fit":
            rest.append(r)
            continue
        key = (r["lib"], r["model"])
        if "error" in r or key not in merged:  # a failure in any round marks the model as not fitted
            merged[key] = r
        elif "times" in merged[key]:
            merged[key]["times"] += r["times"]
    for r in merged.values():
        if "times" in r:
            r["ms"], r["runs"] = 1e3 * statistics.median(r["times"]), len(r["times"])
    return rest + list(merged.values())


def main() -> None:
    start = time.perf_counter()
    if not ensure_peers_venv("--setup" in sys.argv):
        sys.exit(2)
    load_before = os.getloadavg()[0]
    frames = all_frames()
    FRAME_ROWS.update({name: len(frame) for name, frame in frames.items()})
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        data_path = str(Path(tmp) / "frames.json")
        Path(data_path).write_text(json.dumps(to_json(frames)))
        workers = ["lmmnotes", *PEERS]
        for k in range(ROUNDS):
            for lib in workers[k % len(workers):] + workers[:k % len(workers)]:  # a new order each round
                print(f"round {k + 1}/{ROUNDS}: {lib} ...", file=sys.stderr, flush=True)
                records += run_worker(lib, data_path, first_round=k == 0)
    text = report(merge(records), time.perf_counter() - start, (load_before, os.getloadavg()[0]))
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], sys.argv[4] == "1")
    else:
        main()
