# lme4's time for the crossed benchmark of benchmarks/run.py (72,500 ratings, ML), for chapter 8's
# comparison; R is not needed by the tests or by make benchmark. From the repository root:
#   .venv/bin/python -c "import sys; sys.path.insert(0, 'benchmarks'); import run; \
#       run.simulate_crossed().to_csv('/tmp/crossed.csv', index=False)"
#   Rscript benchmarks/lme4_crossed.R /tmp/crossed.csv > benchmarks/results/lme4_crossed.txt
# Prints the versions, the log-likelihood (to compare with lmmnotes') and the elapsed seconds of
# three fits with lme4's default settings.
suppressPackageStartupMessages(library(lme4))

path <- commandArgs(trailingOnly = TRUE)[1]
ratings <- read.csv(path, colClasses = c(student = "factor", instructor = "factor", dept = "factor",
                                         service = "factor"))
formula <- y ~ 1 + service + (1 | student) + (1 | instructor) + (1 | dept)
cat(sprintf("%s; lme4 %s; Matrix %s; %d ratings\n", R.version.string, packageVersion("lme4"),
            packageVersion("Matrix"), nrow(ratings)))
for (run in 1:3) {
  seconds <- system.time(fit <- lmer(formula, ratings, REML = FALSE))[["elapsed"]]
  cat(sprintf("fit %d: %.1f s elapsed, logLik %.6f\n", run, seconds, as.numeric(logLik(fit))))
}
