"""Does the test suite notice small bugs? Apply one-line mutants to a copy of the package and run it.

Usage: python tools/mutation_probe.py [--list] [NAME ...]          (make mutation-probe)

Each mutant below changes one expression of ``lmmnotes`` the way a plausible bug would (a
comparison off by its boundary, a simulation scaled by 10%, a tolerance loosened). For each, the
package and the tests are copied to a temporary folder, the mutant is applied there, and the unit
tests run against the copy (``pytest -x``, stopping at the first failure). A mutant is *caught*
when some test fails; one that passes the whole suite shows where the tests are blind. The
repository itself is never modified. Prints a line per mutant and the score; exits non-zero when
any mutant survives. Run it after changing the tests, and add a mutant for every bug the tests
should have caught but did not.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # file under the repository root
    original: str  # text that must occur exactly once in the file
    mutated: str


MUTANTS = [
    # The bootstrap LRT and the exact RLRT share exceedances; "lrt-p-strict" and "rlrt-p-strict"
    # break each caller, "p-strict" the shared comparison.
    Mutant("p-strict", "lmmnotes/resampling.py",
           "np.sum(samples >= observed - TIE_TOLERANCE)", "np.sum(samples > observed)"),
    Mutant("lrt-p-strict", "lmmnotes/resampling.py",
           "exceed=exceedances(kept, observed)", "exceed=int(np.sum(kept > observed))"),
    Mutant("rlrt-p-strict", "lmmnotes/rlrt.py",
           "upper_tail_p(samples, statistic)", "float(np.mean(samples > statistic))"),
    Mutant("simulate-ranef-sd-x1.1", "lmmnotes/results.py",
           "Z @ (Lam @ (self.sigma * rng.standard_normal((q, nsim))))",
           "Z @ (Lam @ (1.1 * self.sigma * rng.standard_normal((q, nsim))))"),
    Mutant("simulate-use-u-noise-x1.1", "lmmnotes/results.py",
           "y = signal + self.sigma * rng.standard_normal((n, nsim))",
           "y = signal + (1.1 if use_u else 1.0) * self.sigma * rng.standard_normal((n, nsim))"),
    Mutant("prediction-new-error-x1.1", "lmmnotes/prediction.py",
           "parts[2, k] = fit.sigma * rng.standard_normal(len(newdata))",
           "parts[2, k] = 1.1 * fit.sigma * rng.standard_normal(len(newdata))"),
    Mutant("prediction-new-group-x1.2", "lmmnotes/prediction.py",
           "T = fit.sigma * t.template(fit.theta[s])", "T = 1.2 * fit.sigma * t.template(fit.theta[s])"),
    Mutant("simulate-design-variance-x1.1", "lmmnotes/simulate.py",
           "rng.multivariate_normal(np.zeros(t.p), S, size=t.n_levels",
           "rng.multivariate_normal(np.zeros(t.p), 1.1 * S, size=t.n_levels"),
    Mutant("lrt-zero-tolerance-1e-2", "lmmnotes/resampling.py",
           "ZERO_TOLERANCE = 1e-5", "ZERO_TOLERANCE = 1e-2"),
    Mutant("kr-no-scaling", "lmmnotes/fixed_effect_tests.py",
           "statistic = scaling * F", "statistic = F"),
    # The Gibbs samplers (tests/test_gibbs.py): the source's bug in mu's conditional mean, a
    # variance's conditional scaled by 10%, the inverse Wishart's degrees of freedom off by one.
    Mutant("gibbs-single-mu-without-resid-variance", "lmmnotes/gibbs.py",
           "mu = ((nsum_ybar - n * a).sum(axis=1) * pe[:, 0] + m0 / v0) / P",
           "mu = ((nsum_ybar - n * a).sum(axis=1) + m0 / v0) / P"),
    Mutant("gibbs-one-way-group-variance-x1.1", "lmmnotes/gibbs.py",
           "s2a = (scale_a + 0.5 * (a * a).sum(axis=1)) / ga[t]",
           "s2a = 1.1 * (scale_a + 0.5 * (a * a).sum(axis=1)) / ga[t]"),
    Mutant("gibbs-lmm-resid-variance-x1.1", "lmmnotes/gibbs.py",
           "s2 = (priors[\"resid_scale\"] + 0.5 * resid @ resid) / rng.standard_gamma(shape_e)",
           "s2 = 1.1 * (priors[\"resid_scale\"] + 0.5 * resid @ resid) / rng.standard_gamma(shape_e)"),
    Mutant("gibbs-lmm-wishart-df-plus-1", "lmmnotes/gibbs.py",
           "return _inv_wishart(rng, df + l, S + b.T @ b)",
           "return _inv_wishart(rng, df + l + 1, S + b.T @ b)"),
    Mutant("simulate-responses-variance-x1.1", "lmmnotes/simulate.py",
           "rng.multivariate_normal(np.zeros(t.p), S, size=(nsim, t.n_levels)",
           "rng.multivariate_normal(np.zeros(t.p), 1.1 * S, size=(nsim, t.n_levels)"),
    # the model frame and the fit's warnings (issue "trustworthy on the reader's own data")
    Mutant("rank-check-unscaled", "lmmnotes/design.py",
           "if np.linalg.norm(column) > RANK_TOLERANCE:", "if np.linalg.norm(column) * lengths[j] > RANK_TOLERANCE:"),
    Mutant("level-label-by-dtype", "lmmnotes/datasets.py",
           "            return str(int(number))\n", "            return repr(value)\n"),
    Mutant("new-levels-allowed-silently", "lmmnotes/results.py",
           "if not known.all() and not allow_new_levels:", "if False:"),
    Mutant("exact-fit-not-refused", "lmmnotes/design.py",
           "and _residual(target, regressors) <= threshold", "and _residual(target, regressors) < 0"),
    Mutant("singular-fit-silent", "lmmnotes/fit.py",
           "    if fit.is_singular:\n        warnings.warn(", "    if False:\n        warnings.warn("),
    Mutant("poly-on-complete-rows-only", "lmmnotes/design.py",
           "    matrices = evaluate(_fixed_formula(parsed), frame,", "    matrices = evaluate(_fixed_formula(parsed), kept,"),
    # the whole-matrix criterion, its cross-products, the optimizer's stop and lme4's check
    Mutant("dense-rows-mirror-dropped", "lmmnotes/criterion.py",
           "np.searchsorted(self.dense_rows, self.dense_other[mirror])] = h_dense[mirror]",
           "np.searchsorted(self.dense_rows, self.dense_other[mirror])] = 0.0"),
    Mutant("dense-positions-left-to-K", "lmmnotes/criterion.py",
           "NXN[self.dense_positions] = self._dense_products(X)[self.dense_other, :, self.dense_index]",
           "pass"),
    Mutant("schur-traces-diagonal-twice", "lmmnotes/criterion.py",
           "return 2.0 * (h @ f.dS22) - h[s.on_diagonal] @ f.dS22[s.on_diagonal]",
           "return 2.0 * (h @ f.dS22)"),
    Mutant("triangular-inverse-corner-sign", "lmmnotes/criterion.py",
           "X[m:, :m] = dtrmm(-1.0, X22,", "X[m:, :m] = dtrmm(1.0, X22,"),
    Mutant("weight-derivative-unsymmetrized", "lmmnotes/criterion.py",
           "return B + np.swapaxes(B, 2, 3)", "return 2.0 * B"),
    Mutant("whole-reml-term-sign", "lmmnotes/criterion.py",
           "at_positions -= 2.0 * lam * np.einsum(\"ij,ij->i\", WR, WR)",
           "at_positions += 2.0 * lam * np.einsum(\"ij,ij->i\", WR, WR)"),
    Mutant("whole-template-M-transposed", "lmmnotes/criterion.py",
           "np.einsum(\"ij,ij->i\", ZtZ_Lam[rows], G[cols])", "np.einsum(\"ij,ij->i\", ZtZ_Lam[cols], G[rows])"),
    Mutant("dense-Z-term-offset", "lmmnotes/criterion.py",
           "        offset += t.n_levels * t.p\n    return Z", "        offset += t.n_levels\n    return Z"),
    Mutant("Zt-times-without-X", "lmmnotes/criterion.py",
           "weights=(t.X * v[:, None]).ravel()", "weights=np.repeat(v, t.p)"),
    Mutant("stall-at-1e-6", "lmmnotes/optimizer.py",
           "STALL_CHANGE = 1e-14", "STALL_CHANGE = 1e-6"),
    Mutant("forward-difference-halved", "lmmnotes/optimizer.py",
           "columns.append((g_up - gradient)[free] / h)", "columns.append((g_up - gradient)[free] / (2 * h))"),
    Mutant("central-difference-doubled", "lmmnotes/optimizer.py",
           "columns.append((g_up - criterion_and_gradient(down, design, cp, reml)[1])[free] / (2 * h))",
           "columns.append((g_up - criterion_and_gradient(down, design, cp, reml)[1])[free] / h)"),
    Mutant("em-step-without-conditional-covariance", "lmmnotes/optimizer.py",
           "M = (u.T @ u / sigma2 + G.sum(axis=0)) / t.n_levels", "M = (u.T @ u / sigma2) / t.n_levels"),
    Mutant("satterthwaite-df-halved", "lmmnotes/fixed_effect_tests.py",
           "return v, float(np.float64(2.0 * v**2) / denominator)", "return v, float(np.float64(v**2) / denominator)"),
    Mutant("icc-adjusted-with-fixed", "lmmnotes/diagnostics.py",
           "pd.Series({\"adjusted\": v.random / (v.random + v.residual),",
           "pd.Series({\"adjusted\": v.random / (v.fixed + v.random + v.residual),"),
    Mutant("intercept-slope-first-term-only", "lmmnotes/structures.py",
           "C = sum(Z @ covariances[k].to_numpy() @ Z.T for k, Z in zip(self.terms, self.rows))",
           "C = sum(Z @ covariances[k].to_numpy() @ Z.T for k, Z in zip(self.terms[:1], self.rows[:1]))"),
]


def apply(mutant: Mutant, root: Path) -> None:
    path = root / mutant.path
    text = path.read_text()
    if text.count(mutant.original) != 1:
        raise SystemExit(f"mutant {mutant.name}: the original text occurs {text.count(mutant.original)} "
                         f"times in {mutant.path}; update the mutant to the current code")
    path.write_text(text.replace(mutant.original, mutant.mutated))


def copy_repository(root: Path) -> None:
    """The files git knows of (tracked, or new and not ignored), as they are in the work tree."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    for name in listed:
        if (ROOT / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, root / name)


def run_suite(root: Path) -> tuple[int, str, float]:
    """Run the unit tests on the copy at ``root``: pytest's exit status, its verdict, seconds."""
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    where = subprocess.run([sys.executable, "-c", "import lmmnotes; print(lmmnotes.__file__)"],
                           cwd=root, env=env, capture_output=True, text=True, check=True).stdout.strip()
    if not Path(where).is_relative_to(root):  # the tests would run the unmutated package
        raise SystemExit(f"the copy imports lmmnotes from {where}, not from {root}")
    start = time.perf_counter()
    # the notebooks' setup cells are the book's business, not the package's: not run per mutant
    result = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                             "tests", "--ignore=tests/test_notebook_setup.py"],
                            cwd=root, env=env, capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    verdict = lines[0] if lines else (result.stdout.strip().splitlines() or ["(no output)"])[-1]
    return result.returncode, verdict[:160], time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="run only these mutants")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if not args.names or m.name in args.names]
    if args.list or not chosen:
        for m in MUTANTS:
            print(f"{m.name:32} {m.path}: {m.original!r} -> {m.mutated!r}")
        return 0 if args.list else 2
    survivors, broken = [], []
    with tempfile.TemporaryDirectory() as folder:
        baseline = Path(folder, "unmutated")
        copy_repository(baseline)
        status, detail, seconds = run_suite(baseline)
        print(f"{'passes  ' if status == 0 else 'FAILS   '} {'(no mutant)':32} ({seconds:4.0f} s)  {detail}", flush=True)
        if status != 0:
            print("mutation probe: the unmutated copy does not pass its tests; fix that first")
            return 1
        for mutant in chosen:
            root = Path(folder, mutant.name)
            shutil.copytree(baseline, root)
            apply(mutant, root)
            status, detail, seconds = run_suite(root)
            verdict = {0: "SURVIVED", 1: "caught  "}.get(status, "ERROR   ")
            (survivors if status == 0 else broken if status != 1 else []).append(mutant.name)
            print(f"{verdict} {mutant.name:32} ({seconds:4.0f} s)  {detail}", flush=True)
    caught = len(chosen) - len(survivors) - len(broken)
    print(f"mutation probe: {caught} of {len(chosen)} mutants caught"
          + (f"; survived: {', '.join(survivors)}" if survivors else "")
          + (f"; the suite could not run with: {', '.join(broken)}" if broken else ""))
    return 1 if survivors or broken else 0


if __name__ == "__main__":
    sys.exit(main())
