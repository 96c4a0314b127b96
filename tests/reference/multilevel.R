# Reference values for the multilevel chapters (10: schools and group-level predictors; 11:
# random-effects structures and correlations by group), from lme4, on the hsb data.
# Run from the repository root:  Rscript tests/reference/multilevel.R
# Writes tests/reference/multilevel.json, which the Python tests read (they never need R).
suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})

source(file.path("tests", "reference", "book_data.R"))

# School-level variables used by the chapters: the group-mean-centred ses and one 0/1 indicator
# per sector (numeric columns, so that `cath:ses` is a plain product).
hsb$cses <- hsb$ses - hsb$meanses
hsb$cath <- as.numeric(hsb$sector == "Catholic")
hsb$pub <- as.numeric(hsb$sector == "Public")

fit_summary <- function(fit, formula_text) {
  vc <- as.data.frame(VarCorr(fit))
  vc$var1[is.na(vc$var1)] <- ""
  vc$var2[is.na(vc$var2)] <- ""
  conv <- fit@optinfo$conv$lme4
  list(
    formula = formula_text,
    reml = isREML(fit),
    fixef = as.list(fixef(fit)),
    stderr = as.list(sqrt(diag(as.matrix(vcov(fit))))),
    n_theta = length(getME(fit, "theta")),
    theta = unname(getME(fit, "theta")),
    sigma = sigma(fit),
    loglik = as.numeric(logLik(fit)),
    criterion = if (isREML(fit)) as.numeric(REMLcrit(fit)) else deviance(fit),
    is_singular = isSingular(fit),
    lme4_messages = if (is.null(conv$messages)) list() else as.list(conv$messages),
    varcorr = list(grp = vc$grp, var1 = vc$var1, var2 = vc$var2, vcov = vc$vcov, sdcor = vc$sdcor)
  )
}

models <- list(
  # chapter 10: group-level predictors (sector, school mean ses) and cross-level interactions,
  # with ses centred at the school mean
  hsb_context_ml = list("mathach ~ meanses * cses + sector * cses + (cses | school)", FALSE),
  # chapter 11: the four random-effects structures of the source (REML, lme4's default)
  ses_reml = list("mathach ~ ses * sector + (ses | school)", TRUE),
  ses_times_sector_reml = list("mathach ~ ses * sector + (ses * sector | school)", TRUE),
  ses_colon_sector_reml = list("mathach ~ ses * sector + (ses:sector | school)", TRUE),
  ses_plus_sector_reml = list("mathach ~ ses * sector + (ses + sector | school)", TRUE),
  # a separate intercept and slope, and their correlation, in each sector
  by_sector_reml = list("mathach ~ ses * sector + (0 + cath + cath:ses | school) + (0 + pub + pub:ses | school)", TRUE),
  # the dummy-variable form of the source: each term brings its own intercept
  dummy_slopes_reml = list("mathach ~ ses * sector + (cath:ses | school) + (pub:ses | school)", TRUE)
)

out <- list()
for (name in names(models)) {
  spec <- models[[name]]
  fit <- suppressWarnings(suppressMessages(lmer(as.formula(spec[[1]]), data = hsb, REML = spec[[2]])))
  out[[name]] <- fit_summary(fit, spec[[1]])
}

# The separate fits, one per sector
separate <- list()
for (s in levels(hsb$sector)) {
  fit <- suppressMessages(lmer(mathach ~ ses + (ses | school), data = droplevels(hsb[hsb$sector == s, ])))
  separate[[s]] <- fit_summary(fit, "mathach ~ ses + (ses | school)")
}

# Chapter 10's two-step ("ad hoc") estimates: per-school OLS of mathach on ses, then the plain
# mean and covariance of the 160 coefficient pairs.
ols <- coef(lmList(mathach ~ ses | school, data = hsb))
two_step <- list(
  mean = as.list(colMeans(ols)),
  cov = unname(cov(ols)),
  n_schools = nrow(ols)
)

result <- list(
  lme4_version = as.character(packageVersion("lme4")),
  r_version = R.version.string,
  data_md5 = data_md5(c("hsb")),
  models = out,
  separate_by_sector = separate,
  two_step = two_step
)
writeLines(toJSON(result, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"),
           "tests/reference/multilevel.json")
cat("wrote tests/reference/multilevel.json\n")
