# Reference values for inference (tests, intervals, prediction) and designs (ANOVA strata),
# from lme4, pbkrtest and RLRsim. Run from the repository root:
#     Rscript tests/reference/inference.R
# Writes tests/reference/inference.json, which the Python tests read (they never need R).
# Random quantities (bootstrap p-values and intervals, the simulated RLRT p-value) are recorded
# with their Monte Carlo size so the tests can compare to Monte Carlo error.
suppressPackageStartupMessages({
  library(lme4)
  library(pbkrtest)
  library(RLRsim)
  library(jsonlite)
})

source(file.path("tests", "reference", "book_data.R"))

as_interval_list <- function(ci) {
  list(names = rownames(ci), lower = unname(ci[, 1]), upper = unname(ci[, 2]))
}

# ---- pulp: LRT of the operator variance against an ordinary regression ------------------------
pulp_ml <- lmer(bright ~ 1 + (1 | operator), data = pulp, REML = FALSE)
pulp_lm <- lm(bright ~ 1, data = pulp)
lrt_obs <- as.numeric(2 * (logLik(pulp_ml) - logLik(pulp_lm)))

# Parametric bootstrap of the LRT under the null (our own loop; B replicates).
boot_lrt <- function(B, seed) {
  set.seed(seed)
  mu <- coef(pulp_lm)[[1]]
  s <- sigma(pulp_lm) * sqrt((nrow(pulp) - 1) / nrow(pulp))  # ML estimate under the null
  stats <- vapply(seq_len(B), function(i) {
    ystar <- rnorm(nrow(pulp), mu, s)
    alt <- refit(pulp_ml, ystar)
    null_ll <- as.numeric(logLik(lm(ystar ~ 1)))
    max(0, 2 * (as.numeric(logLik(alt)) - null_ll))
  }, numeric(1))
  stats
}
lrt_boot <- suppressMessages(boot_lrt(4000, 2024))

pulp_lrt <- list(
  statistic = lrt_obs,
  p_chisq = pchisq(lrt_obs, df = 1, lower.tail = FALSE),
  boot_nsim = length(lrt_boot),
  boot_p = mean(lrt_boot >= lrt_obs),
  boot_fraction_zero = mean(lrt_boot < 1e-5),
  boot_quantiles = unname(quantile(lrt_boot, c(0.5, 0.75, 0.9, 0.95, 0.99)))
)

# ---- irrigation: Kenward-Roger F tests and the exact restricted LRT ----------------------------
irr_full <- lmer(yield ~ irrigation * variety + (1 | field), data = irrigation)
irr_add <- lmer(yield ~ irrigation + variety + (1 | field), data = irrigation)
irr_no_variety <- lmer(yield ~ irrigation + (1 | field), data = irrigation)
irr_no_irrigation <- lmer(yield ~ variety + (1 | field), data = irrigation)

kr <- function(large, small) {  # small: the smaller model, or a restriction matrix L
  t <- KRmodcomp(large, small)$test
  list(statistic = t["Ftest", "stat"], ndf = t["Ftest", "ndf"], ddf = t["Ftest", "ddf"],
       scaling = t["Ftest", "F.scaling"], p_value = t["Ftest", "p.value"])
}
# KR on a model with a correlated random slope: does the cyear:sex interaction matter?
psid_full <- lmer(log(income) ~ cyear * sex + age + educ + (cyear | person), data = psid)
psid_small <- lmer(log(income) ~ cyear + sex + age + educ + (cyear | person), data = psid)

# Tests of two fixed effects at once on unbalanced data, where the scaling lambda is not 1: sex and
# its interaction with time (a smaller model), and an explicit restriction matrix L (rows: cyear
# equals educ's coefficient, age's coefficient is 0), both at lme4's fit of psid_full.
psid_no_sex <- lmer(log(income) ~ cyear + age + educ + (cyear | person), data = psid)
psid_L <- rbind(c(0, 1, 0, 0, -1, 0), c(0, 0, 0, 1, 0, 0))

kenward_roger <- list(
  psid_sex = kr(psid_full, psid_no_sex),
  psid_restriction = c(kr(psid_full, psid_L), list(L = psid_L)),
  psid_full_theta = unname(getME(psid_full, "theta")),
  irrigation_interaction = kr(irr_full, irr_add),
  irrigation_variety = kr(irr_add, irr_no_variety),
  irrigation_irrigation = kr(irr_add, irr_no_irrigation),
  psid_interaction = kr(psid_full, psid_small),
  irrigation_full_vcov_adjusted = unname(as.matrix(vcovAdj(irr_full))),
  psid_full_vcov_adjusted = unname(as.matrix(vcovAdj(psid_full)))
)

set.seed(1)
rl_irr <- exactRLRT(irr_full, nsim = 10000)
set.seed(2)
pulp_reml <- lmer(bright ~ 1 + (1 | operator), data = pulp)
rl_pulp <- exactRLRT(pulp_reml, nsim = 10000)
exact_rlrt <- list(
  irrigation = list(statistic = unname(rl_irr$statistic), p_value = rl_irr$p.value, nsim = 10000),
  pulp = list(statistic = unname(rl_pulp$statistic), p_value = rl_pulp$p.value, nsim = 10000)
)

# ---- intervals -----------------------------------------------------------------------------------
eggs_reml <- lmer(Fat ~ 1 + (1 | Lab) + (1 | Lab:Technician) + (1 | Lab:Technician:Sample), data = eggs)
set.seed(123)
eggs_boot <- suppressMessages(confint(eggs_reml, method = "boot", nsim = 1000, oldNames = FALSE))
set.seed(7)
pulp_boot <- suppressMessages(confint(pulp_reml, method = "boot", nsim = 1000, oldNames = FALSE))
intervals <- list(
  eggs_profile = as_interval_list(suppressMessages(confint(eggs_reml, method = "profile", oldNames = FALSE))),
  eggs_wald = as_interval_list(confint(eggs_reml, method = "Wald", oldNames = FALSE)),
  eggs_boot = c(as_interval_list(eggs_boot), nsim = 1000),
  pulp_profile = as_interval_list(suppressMessages(confint(pulp_reml, method = "profile", oldNames = FALSE))),
  pulp_ml_profile = as_interval_list(suppressMessages(confint(pulp_ml, method = "profile", oldNames = FALSE))),
  pulp_boot = c(as_interval_list(pulp_boot), nsim = 1000),
  psid_profile = as_interval_list(suppressMessages(confint(psid_full, method = "profile", oldNames = FALSE))),
  psid_profile_level90 = as_interval_list(suppressMessages(
    confint(psid_full, parm = 1:4, level = 0.90, method = "profile", oldNames = FALSE)))
)

# ---- prediction intervals for pulp, by parametric bootstrap ----------------------------------------
# Each draw is the prediction plus a bootstrap prediction error (truth - refitted prediction in a data
# set simulated from the fit with new random effects) plus a new observation error. New operator: the
# truth is the population mean plus a new operator effect, the refitted prediction the refit's
# population mean. Known operator "a": the truth is the population mean plus the simulated effect of
# "a", the refitted prediction the refit's BLUP for "a"; the draws are centred at the EBLUP. (The first
# edition kept the predicted effects, use.u = TRUE, and took the refit's BLUP for "a": that shrinks
# the BLUP a second time, and its draws were centred at 60.31 rather than at the EBLUP 60.28.)
sd_operator <- as.data.frame(VarCorr(pulp_reml))$sdcor[1]
sd_resid <- sigma(pulp_reml)
mu_hat <- fixef(pulp_reml)[[1]]
blup_a <- predict(pulp_reml, newdata = data.frame(operator = "a"))[[1]]
stopifnot(levels(pulp$operator)[1] == "a")
B <- 4000
set.seed(99)
new_op <- vapply(seq_len(B), function(i) {
  fit <- suppressMessages(refit(pulp_reml, simulate(pulp_reml)[[1]]))
  truth <- mu_hat + rnorm(1, 0, sd_operator)  # the population mean plus a new operator's effect
  mu_hat + truth - predict(fit, re.form = ~0)[[1]] + rnorm(1, 0, sd_resid)
}, numeric(1))
known_op <- vapply(seq_len(B), function(i) {
  b <- rnorm(nlevels(pulp$operator), 0, sd_operator)
  y <- mu_hat + b[as.integer(pulp$operator)] + rnorm(nrow(pulp), 0, sd_resid)
  fit <- suppressMessages(refit(pulp_reml, y))
  truth <- mu_hat + b[[1]]
  blup_a + truth - predict(fit, newdata = data.frame(operator = "a"))[[1]] + rnorm(1, 0, sd_resid)
}, numeric(1))
prediction <- list(
  nsim = B,
  new_operator = unname(quantile(new_op, c(0.025, 0.975))),
  known_operator_a = unname(quantile(known_op, c(0.025, 0.975))),
  known_operator_a_centre = mean(known_op)
)

# ---- designs: ANOVA strata --------------------------------------------------------------------------
split <- summary(aov(yield ~ irrigation * variety + Error(field), data = irrigation))
stratum <- function(tab) {
  tab <- tab[[1]]
  list(terms = trimws(rownames(tab)), df = unname(tab[, "Df"]), ss = unname(tab[, "Sum Sq"]),
       ms = unname(tab[, "Mean Sq"]),
       F = unname(if ("F value" %in% colnames(tab)) tab[, "F value"] else rep(NA, nrow(tab))),
       p = unname(if ("Pr(>F)" %in% colnames(tab)) tab[, "Pr(>F)"] else rep(NA, nrow(tab))))
}
eggs_aov <- summary(aov(Fat ~ 1 + Error(Lab / Technician / Sample), data = eggs))
designs <- list(
  irrigation_split_plot = list(field = stratum(split[["Error: field"]]), within = stratum(split[["Error: Within"]])),
  eggs_nested = lapply(eggs_aov, stratum)
)

# ---- eggs: the likelihood-ratio statistic of two nested ML fits, as anova() reports it ------------
eggs_full_ml <- lmer(Fat ~ 1 + (1 | Lab) + (1 | Lab:Technician) + (1 | Lab:Technician:Sample), data = eggs,
                     REML = FALSE)
eggs_no_lab_ml <- lmer(Fat ~ 1 + (1 | Lab:Technician) + (1 | Lab:Technician:Sample), data = eggs, REML = FALSE)
eggs_anova <- anova(eggs_no_lab_ml, eggs_full_ml)
eggs_lrt <- list(chisq = eggs_anova$Chisq[2], df = eggs_anova$Df[2], p_value = eggs_anova$`Pr(>Chisq)`[2])

result <- list(
  lme4_version = as.character(packageVersion("lme4")),
  pbkrtest_version = as.character(packageVersion("pbkrtest")),
  rlrsim_version = as.character(packageVersion("RLRsim")),
  r_version = R.version.string,
  data_md5 = data_md5(c("pulp", "eggs", "irrigation", "psid")),
  pulp_lrt = pulp_lrt,
  eggs_lrt = eggs_lrt,
  kenward_roger = kenward_roger,
  exact_rlrt = exact_rlrt,
  intervals = intervals,
  prediction = prediction,
  designs = designs
)
writeLines(toJSON(result, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null", na = "null"),
           "tests/reference/inference.json")
cat("wrote tests/reference/inference.json\n")
