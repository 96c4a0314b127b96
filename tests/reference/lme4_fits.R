# Reference values from R's lme4 for the book's models.
# Run from the repository root:  Rscript tests/reference/lme4_fits.R
# Writes tests/reference/lme4_fits.json, which the Python tests read (they never need R).
suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})

source(file.path("tests", "reference", "book_data.R"))

summarise_fit <- function(fit, formula_text, data_name) {
  vc <- as.data.frame(VarCorr(fit))
  vc$var1[is.na(vc$var1)] <- ""
  vc$var2[is.na(vc$var2)] <- ""
  re <- ranef(fit, condVar = TRUE)
  ranef_out <- lapply(names(re), function(g) {
    m <- re[[g]]
    pv <- attr(m, "postVar")
    if (is.list(pv)) {  # a factor in several scalar terms, (x || g): one 1 x 1 x levels array per term
      sds <- sapply(pv, function(a) sqrt(a[1, 1, ]))
    } else {
      sds <- t(apply(pv, 3, function(s) sqrt(diag(s))))
      if (ncol(m) == 1) sds <- matrix(sds, ncol = 1)
    }
    list(levels = rownames(m), terms = colnames(m),
         values = unname(as.matrix(m)), condsd = unname(sds))
  })
  names(ranef_out) <- names(re)
  reml <- isREML(fit)
  list(
    formula = formula_text,
    data = data_name,
    reml = reml,
    nobs = nobs(fit),
    ngroups = as.list(ngrps(fit)),
    fixef = as.list(fixef(fit)),
    stderr = as.list(sqrt(diag(as.matrix(vcov(fit))))),
    vcov = unname(as.matrix(vcov(fit))),
    theta = unname(getME(fit, "theta")),
    sigma = sigma(fit),
    loglik = as.numeric(logLik(fit)),
    aic = AIC(fit),
    bic = BIC(fit),
    deviance = if (reml) NULL else deviance(fit),
    reml_criterion = if (reml) as.numeric(REMLcrit(fit)) else NULL,
    is_singular = isSingular(fit),
    varcorr = list(grp = vc$grp, var1 = vc$var1, var2 = vc$var2, vcov = vc$vcov, sdcor = vc$sdcor),
    ranef = ranef_out,
    fitted_head = unname(head(fitted(fit), 10)),
    residuals_head = unname(head(residuals(fit), 10))
  )
}

models <- list(
  pulp_reml = list("bright ~ 1 + (1 | operator)", "pulp", TRUE),
  pulp_ml = list("bright ~ 1 + (1 | operator)", "pulp", FALSE),
  eggs_reml = list("Fat ~ 1 + (1 | Lab) + (1 | Lab:Technician) + (1 | Lab:Technician:Sample)", "eggs", TRUE),
  irrigation_reml = list("yield ~ irrigation * variety + (1 | field)", "irrigation", TRUE),
  psid_reml = list("log(income) ~ cyear * sex + age + educ + (cyear | person)", "psid", TRUE),
  psid_uncorrelated_reml = list("log(income) ~ cyear + (cyear || person)", "psid", TRUE),
  hsb_ml = list("mathach ~ ses * sector + (ses | school)", "hsb", FALSE)
)

out <- list()
timings <- list()
for (name in names(models)) {
  spec <- models[[name]]
  data <- get(spec[[2]])
  fit <- lmer(as.formula(spec[[1]]), data = data, REML = spec[[3]])
  out[[name]] <- summarise_fit(fit, spec[[1]], spec[[2]])
  times <- replicate(20, system.time(lmer(as.formula(spec[[1]]), data = data, REML = spec[[3]]))[["elapsed"]])
  timings[[name]] <- median(times)
}

# The split-plot model with a field:variety term has as many random effects as observations.
msg <- tryCatch({
  lmer(yield ~ irrigation * variety + (1 | field) + (1 | field:variety), data = irrigation)
  "fitted"
}, error = function(e) conditionMessage(e))

# lmList: separate least-squares fits per group, with lme4's pooled residual SE (summary) and
# its confint, which uses each group's own lm (confint.lmList4 ignores the fit's pool setting)
# unless pool = TRUE is passed.
summarise_lmlist <- function(formula_text, data_name) {
  data <- get(data_name)
  fits <- lmList(as.formula(formula_text), data = data)
  s <- summary(fits)
  own <- confint(fits)
  pooled <- confint(fits, pool = TRUE)
  interval <- function(ci, term) list(lower = unname(ci[, 1, term]), upper = unname(ci[, 2, term]))
  terms <- colnames(coef(fits))
  list(
    formula = formula_text,
    data = data_name,
    groups = rownames(coef(fits)),
    nobs = unname(as.vector(table(data[[all.vars(as.formula(formula_text))[length(all.vars(as.formula(formula_text)))]]]))),
    coef = lapply(setNames(nm = terms), function(t) unname(coef(fits)[, t])),
    stderr = lapply(setNames(nm = terms), function(t) unname(s$coefficients[, "Std. Error", t])),
    rse = s$RSE,
    df_residual = s$df.residual,
    confint = lapply(setNames(nm = terms), function(t) interval(own, t)),
    confint_pooled = lapply(setNames(nm = terms), function(t) interval(pooled, t))
  )
}
lmlists <- list(
  psid_person = summarise_lmlist("log(income) ~ cyear | person", "psid"),
  hsb_school = summarise_lmlist("mathach ~ ses | school", "hsb")
)

# anova() of nested PSID models; m3 is fitted by REML, so anova refits it by ML
anova_models <- list(
  m1 = list("log(income) ~ cyear * sex + age + educ + (1 | person)", FALSE),
  m2 = list("log(income) ~ cyear * sex + age + educ + (cyear || person)", FALSE),
  m3 = list("log(income) ~ cyear * sex + age + educ + (cyear | person)", TRUE)
)
m1 <- lmer(as.formula(anova_models$m1[[1]]), data = psid, REML = anova_models$m1[[2]])
m2 <- lmer(as.formula(anova_models$m2[[1]]), data = psid, REML = anova_models$m2[[2]])
m3 <- lmer(as.formula(anova_models$m3[[1]]), data = psid, REML = anova_models$m3[[2]])
table <- suppressMessages(anova(m3, m1, m2))  # out of order on purpose: anova sorts by npar
psid_anova <- list(
  models = lapply(anova_models, function(m) list(formula = m[[1]], reml = m[[2]])),
  argument_order = c("m3", "m1", "m2"),
  rows = rownames(table),
  npar = table$npar, AIC = table$AIC, BIC = table$BIC, logLik = table$logLik,
  deviance = table$deviance, Chisq = table$Chisq, Df = table$Df, p = table[["Pr(>Chisq)"]]
)

result <- list(
  lme4_version = as.character(packageVersion("lme4")),
  r_version = R.version.string,
  data_md5 = data_md5(c("pulp", "eggs", "irrigation", "psid", "hsb")),
  models = out,
  median_fit_seconds = timings,
  irrigation_field_variety_error = msg,
  lmlist = lmlists,
  psid_anova = psid_anova
)
writeLines(toJSON(result, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"),
           "tests/reference/lme4_fits.json")
cat("wrote tests/reference/lme4_fits.json\n")
