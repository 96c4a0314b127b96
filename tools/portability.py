"""Run nbval over every notebook under several OpenBLAS kernels and with theta shifted.

Usage: python tools/portability.py PYTEST_ARGUMENTS        (make test-portable)

PYTEST_ARGUMENTS are the nbval run's (the Makefile's NBVAL: -m pytest --nbval ... book/*.ipynb).

The committed outputs must come out the same on any x86-64 machine. The last digits of a fit
depend on the BLAS kernel the CPU selects, so the notebooks are re-run with OPENBLAS_CORETYPE set
to each kernel below (kernels that OpenBLAS maps to one already run are reported and skipped), then
twice more with every fitted theta moved by 1e-6 relative, with alternating signs across its
components (tests/portability/perturb_theta.py), a hundred times the spread seen across kernels: an output that changes there is printed on a
rounding edge or to more digits than the fit guarantees. Prints a table of the runs with their
times, and exits non-zero when any run failed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CORETYPES = ["Prescott", "Haswell", "SkylakeX", "Zen"]
THETA_SHIFTS = ["1e-6", "-1e-6"]
ROOT = Path(__file__).resolve().parent.parent
PERTURBATION = ROOT / "tests" / "portability" / "perturb_theta.py"


def kernel_architecture(env: dict[str, str]) -> str:
    """The kernel numpy's OpenBLAS selects in this environment (threadpoolctl's 'architecture')."""
    code = ("import numpy, threadpoolctl; numpy.ones(2) @ numpy.ones(2); "
            "print(' '.join(sorted({i.get('architecture') or '?' for i in threadpoolctl.threadpool_info() "
            "if i['internal_api'] == 'openblas'})))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip() or "unknown"


# A one-cell notebook that prints pulp's fitted theta, run in a kernel as nbval runs them.
PROBE = """
import nbclient, nbformat
cell = nbformat.v4.new_code_cell(
    "import lmmnotes\\n"
    "fit = lmmnotes.lmer('bright ~ 1 + (1 | operator)', lmmnotes.datasets.load('pulp'))\\n"
    "print(repr(float(fit.theta[0])))")
notebook = nbformat.v4.new_notebook(cells=[cell])
nbclient.NotebookClient(notebook, kernel_name="python3").execute()
print(cell.outputs[0]["text"].strip())
"""


def kernel_theta(env: dict[str, str]) -> float:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def run_nbval(arguments: list[str], env: dict[str, str]) -> tuple[bool, float]:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *arguments], env=env, cwd=ROOT)
    return result.returncode == 0, time.perf_counter() - start


def main(arguments: list[str]) -> int:
    base = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "IPYTHONDIR")}
    own = kernel_architecture(base)
    plan: list[tuple[str, dict[str, str] | None, str]] = [(f"own kernel ({own})", base, "")]
    seen = {own}
    for coretype in CORETYPES:
        env = {**base, "OPENBLAS_CORETYPE": coretype}
        arch = kernel_architecture(env)
        name = f"OPENBLAS_CORETYPE={coretype} ({arch})"
        plan.append((name, None, "skipped: same kernel as a run above") if arch in seen else (name, env, ""))
        seen.add(arch)
    rows = []
    with tempfile.TemporaryDirectory() as ipython_dir:
        startup = Path(ipython_dir, "profile_default", "startup")
        startup.mkdir(parents=True)
        shutil.copy(PERTURBATION, startup / "00-perturb-theta.py")
        theta = kernel_theta(base)
        for shift in THETA_SHIFTS:
            name = f"theta moved by {shift} relative (sign alternating across components)"
            env = {**base, "IPYTHONDIR": ipython_dir, "LMMNOTES_THETA_SHIFT": shift}
            # The shift must reach the notebooks' kernels, or these runs would prove nothing
            # (pulp has one theta, moved by +shift).
            moved = kernel_theta(env) / theta - 1
            if abs(moved - float(shift)) > 1e-9:
                plan.append((name, None, f"FAILED: a kernel's theta moved by {moved:.2e}, not {shift}"))
            else:
                plan.append((name, env, ""))
        for name, env, note in plan:
            if env is None:
                rows.append((name, note))
                continue
            print(f"\n=== nbval, {name}", flush=True)
            ok, seconds = run_nbval(arguments, env)
            rows.append((name, f"{'passed' if ok else 'FAILED'} ({seconds:.0f} s)"))
    print("\nPortability of the notebooks' outputs")
    width = max(len(name) for name, _ in rows)
    for name, result in rows:
        print(f"  {name:<{width}}  {result}")
    return 1 if any(result.startswith("FAILED") for _, result in rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
