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
    sds <- t(apply(pv, 3, function(s) sqrt(diag(s))))
    if (ncol(m) == 1) sds <- matrix(sds, ncol = 1)
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

result <- list(
  lme4_version = as.character(packageVersion("lme4")),
  r_version = R.version.string,
  data_md5 = data_md5(c("pulp", "eggs", "irrigation", "psid", "hsb")),
  models = out,
  median_fit_seconds = timings,
  irrigation_field_variety_error = msg
)
writeLines(toJSON(result, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"),
           "tests/reference/lme4_fits.json")
cat("wrote tests/reference/lme4_fits.json\n")
