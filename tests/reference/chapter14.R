# Reference values for chapter 14 (building, checking and reporting a mixed model): lme4's rePCA,
# lme4's leave-one-group-out influence (influence.merMod with groups=, and cooks.distance on it),
# and the R package performance's r2_nakagawa and icc.
#
# Run from the repository root:  Rscript tests/reference/chapter14.R
# It writes tests/reference/chapter14.json (committed, so the Python tests never need R).
# Versions used: R 4.2, lme4 1.1-31, performance 0.10.2 (insight supplies its variances).
suppressPackageStartupMessages({
  library(lme4)
  library(performance)
  library(jsonlite)
})

source(file.path("tests", "reference", "book_data.R"))  # read_data, psid (with cyear), data_md5

early <- read_data("early")
early$id <- factor(early$id)
early$agec <- early$age - 1
ergo <- read_data("ergostool")
ergo$Subject <- factor(ergo$Subject)
lawn <- read_data("lawn")

fits <- list(
  early_intercept = list(data = "early", formula = "cog ~ agec * trt + (1 | id)",
                         fit = lmer(cog ~ agec * trt + (1 | id), early)),
  early_maximal = list(data = "early", formula = "cog ~ agec * trt + (agec | id)",
                       fit = suppressMessages(lmer(cog ~ agec * trt + (agec | id), early))),
  early_zcp = list(data = "early", formula = "cog ~ agec * trt + (agec || id)",
                   fit = suppressMessages(lmer(cog ~ agec * trt + (agec || id), early))),
  psid_slopes = list(data = "psid", formula = "log(income) ~ cyear * sex + age + educ + (cyear | person)",
                     fit = lmer(log(income) ~ cyear * sex + age + educ + (cyear | person), psid)),
  ergostool = list(data = "ergostool", formula = "effort ~ Type + (1 | Subject)",
                   fit = lmer(effort ~ Type + (1 | Subject), ergo)),
  # two nested grouping factors (machines within manufacturers): sigma^2_r sums two variances
  lawn_nested = list(data = "lawn", formula = "time ~ speed + (1 | manufact) + (1 | manufact:machine)",
                     fit = lmer(time ~ speed + (1 | manufact) + (1 | manufact:machine), lawn))
)

out <- list()
for (name in names(fits)) {
  f <- fits[[name]]$fit
  case <- list(data = fits[[name]]$data, formula = fits[[name]]$formula,
               theta = unname(getME(f, "theta")), sigma = sigma(f), fixef = as.list(fixef(f)),
               singular = isSingular(f),
               # lme4's variances, in as.data.frame(VarCorr(f)) order (the residual last)
               vcov = as.data.frame(VarCorr(f))$vcov,
               # rePCA: singular values of each grouping factor's relative covariance factor
               repca = lapply(rePCA(f), function(p) p$sdev))
  if (!isSingular(f)) {
    r2 <- r2_nakagawa(f)
    ic <- icc(f)
    v <- insight::get_variance(f)
    case$r2_marginal <- unname(r2$R2_marginal)
    case$r2_conditional <- unname(r2$R2_conditional)
    case$icc_adjusted <- unname(ic$ICC_adjusted)
    case$icc_unadjusted <- unname(ic$ICC_unadjusted)
    case$var_fixed <- unname(v$var.fixed)
    case$var_random <- unname(v$var.random)
    case$var_residual <- unname(v$var.residual)
  }
  out[[name]] <- case
}

# leave-one-group-out: fixed effects refitted without each group, and lme4's Cook's distance
influence_case <- function(name, data, groups) {
  f <- fits[[name]]$fit
  infl <- influence(f, groups = groups, data = data)
  fixed_minus <- infl[["fixed.effects[-id]"]]
  if (is.null(fixed_minus)) fixed_minus <- infl[[grep("^fixed.effects\\[-", names(infl))[1]]]
  list(groups = as.character(rownames(fixed_minus)),
       fixef_without = lapply(seq_len(ncol(fixed_minus)), function(j) unname(fixed_minus[, j])),
       fixef_names = colnames(fixed_minus),
       cooks = unname(cooks.distance(infl)))
}
out$early_intercept$influence <- influence_case("early_intercept", early, "id")
out$ergostool$influence <- influence_case("ergostool", ergo, "Subject")

out$data_md5 <- data_md5(c("early", "psid", "ergostool", "lawn"))
out$versions <- list(R = paste(R.version$major, R.version$minor, sep = "."),
                     lme4 = as.character(packageVersion("lme4")),
                     performance = as.character(packageVersion("performance")),
                     insight = as.character(packageVersion("insight")))
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE),
           file.path("tests", "reference", "chapter14.json"))
