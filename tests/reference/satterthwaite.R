# Reference values for Satterthwaite's degrees of freedom, from lmerTest (Kuznetsova, Brockhoff
# and Christensen 2017). Run from the repository root:
#     Rscript tests/reference/satterthwaite.R
# Writes tests/reference/satterthwaite.json, which tests/test_satterthwaite.py reads (the tests
# never need R). For each model: lmerTest's coefficient table (summary), the F tests of given
# restriction matrices L (contestMD, and contest1D for one row), theta and sigma, and any
# warning lmerTest gave while computing its Hessian.
suppressPackageStartupMessages({
  library(lme4)
  library(lmerTest)
  library(jsonlite)
})

source(file.path("tests", "reference", "book_data.R"))
ratdrink <- read_data("ratdrink")
ratdrink$subject <- factor(ratdrink$subject)
breaking <- read_data("breaking")

fit_collect <- function(expr) {
  warns <- character(0)
  value <- withCallingHandlers(expr,
    warning = function(w) {
      warns <<- c(warns, conditionMessage(w))
      invokeRestart("muffleWarning")
    },
    message = function(m) invokeRestart("muffleMessage"))
  list(value = value, warnings = warns)
}

coef_table <- function(fit) {
  tab <- coef(summary(fit, ddf = "Satterthwaite"))
  list(names = rownames(tab), estimate = unname(tab[, "Estimate"]),
       std_error = unname(tab[, "Std. Error"]), df = unname(tab[, "df"]),
       t_value = unname(tab[, "t value"]), p_value = unname(tab[, "Pr(>|t|)"]))
}

f_test <- function(fit, L) {
  tab <- contest(fit, L, joint = TRUE, ddf = "Satterthwaite")
  list(L = unname(L), sum_sq = tab[["Sum Sq"]], mean_sq = tab[["Mean Sq"]], ndf = tab[["NumDF"]],
       ddf = tab[["DenDF"]], f_value = tab[["F value"]], p_value = tab[["Pr(>F)"]])
}

# rows of an L with 1 in the named coefficients' columns
pick <- function(fit, names) {
  stopifnot(!anyNA(match(names, names(fixef(fit)))))
  L <- matrix(0, length(names), length(fixef(fit)))
  for (i in seq_along(names)) L[i, match(names[i], names(fixef(fit)))] <- 1
  L
}

case <- function(formula, data, data_name, reml, tests = list()) {
  res <- fit_collect(lmer(as.formula(formula), data = data, REML = reml))
  fit <- res$value
  list(formula = formula, data = data_name, reml = reml, lme4_warnings = res$warnings,
       singular = isSingular(fit), theta = unname(getME(fit, "theta")), sigma = sigma(fit),
       vcov_varpar = unname(fit@vcov_varpar), coefficients = coef_table(fit),
       f_tests = lapply(tests, function(make) f_test(fit, make(fit))))
}

cases <- list()

# Chapter 6's split plot: balanced, so the df of whole-plot and split-plot contrasts are exact
cases$irrigation <- case("yield ~ irrigation * variety + (1 | field)", irrigation, "irrigation", TRUE,
  list(
    interaction = function(f) pick(f, c("irrigationi2:varietyv2", "irrigationi3:varietyv2",
                                        "irrigationi4:varietyv2")),
    irrigation = function(f) pick(f, c("irrigationi2", "irrigationi3", "irrigationi4")),
    # irrigation averaged over the two varieties: a whole-plot contrast (4 df)
    irrigation_mean = function(f) {
      L <- pick(f, c("irrigationi2", "irrigationi3", "irrigationi4"))
      L + 0.5 * pick(f, c("irrigationi2:varietyv2", "irrigationi3:varietyv2", "irrigationi4:varietyv2"))
    },
    # rows of different scale and stratum: unequal nu_m, lmerTest's 2E / (E - q)
    mixed = function(f) rbind(2 * pick(f, "irrigationi2"), pick(f, "varietyv2"),
                              pick(f, "irrigationi3") - pick(f, "irrigationi4:varietyv2")),
    one_row = function(f) pick(f, "varietyv2") + pick(f, "irrigationi4:varietyv2"),
    # rank deficient: the third row is the sum of the first two
    rank_deficient = function(f) rbind(pick(f, "varietyv2"), pick(f, "irrigationi2"),
                                       pick(f, "varietyv2") + pick(f, "irrigationi2"))))
cases$irrigation_ml <- case("yield ~ irrigation * variety + (1 | field)", irrigation, "irrigation", FALSE,
  list(interaction = function(f) pick(f, c("irrigationi2:varietyv2", "irrigationi3:varietyv2",
                                           "irrigationi4:varietyv2"))))
# Crossed random effects: a Latin square (operator and day crossed, supplier fixed); singular, the
# operator variance is estimated as 0
cases$breaking <- case("y ~ supplier + (1 | operator) + (1 | day)", breaking, "breaking", TRUE,
  list(supplier = function(f) pick(f, c("supplierB", "supplierC", "supplierD"))))
# Random slopes, correlated
cases$ratdrink <- case("wt ~ weeks * treat + (weeks | subject)", ratdrink, "ratdrink", TRUE,
  list(interaction = function(f) pick(f, c("weeks:treatthiouracil", "weeks:treatthyroxine")),
       treat = function(f) pick(f, c("treatthiouracil", "treatthyroxine"))))
cases$psid <- case("log(income) ~ cyear * sex + age + educ + (cyear | person)", psid, "psid", TRUE,
  list(sex = function(f) pick(f, c("sexM", "cyear:sexM"))))
# A singular ML fit: chapter 10's model (correlation 1)
cases$hsb_ml <- case("mathach ~ ses * sector + (ses | school)", hsb, "hsb", FALSE,
  list(sector = function(f) pick(f, c("sectorPublic", "ses:sectorPublic"))))

out <- list(
  lme4_version = as.character(packageVersion("lme4")),
  lmertest_version = as.character(packageVersion("lmerTest")),
  r_version = R.version.string,
  data_md5 = data_md5(c("irrigation", "breaking", "ratdrink", "psid", "hsb")),
  cases = cases)
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE),
           file.path("tests", "reference", "satterthwaite.json"))
