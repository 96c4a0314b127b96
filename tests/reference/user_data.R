# Reference values from R's lme4 for "user data" cases: things R users put in their data and
# formulas (poly(), scale(), factor() of a number, offset(), dotted column names, POSIX times,
# predictions for new and unseen levels).
#
# Run from the repository root:  Rscript tests/reference/user_data.R
# It writes the simulated data sets to tests/reference/user_data/<name>.csv and the lme4 results
# to tests/reference/user_data.json. Both outputs are committed, so the Python tests never need R.
#
# Each data set is written to CSV and read back, and lme4 fits the data as read back, so Python
# reading the same CSV sees exactly the numbers lme4 saw. Missing values are empty fields.
suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})

data_dir <- file.path("tests", "reference", "user_data")
dir.create(data_dir, showWarnings = FALSE, recursive = TRUE)

# Write a data set and read it back; stop if anything changed on the way.
save_csv <- function(df, name) {
  path <- file.path(data_dir, paste0(name, ".csv"))
  write.csv(df, path, row.names = FALSE, na = "")
  back <- read.csv(path, stringsAsFactors = FALSE, na.strings = "")
  for (col in names(df)) {
    a <- df[[col]]
    if (is.factor(a)) a <- as.character(a)
    b <- back[[col]]
    if (is.numeric(a)) stopifnot(is.numeric(b), identical(is.na(a), is.na(b)), all(a == b, na.rm = TRUE))
    else stopifnot(identical(a, as.character(b)))
  }
  list(path = path, data = back)
}

# Fit while collecting warnings and messages instead of printing them.
fit_collect <- function(expr) {
  warns <- character(0)
  msgs <- character(0)
  value <- withCallingHandlers(expr,
    warning = function(w) {
      warns <<- c(warns, conditionMessage(w))
      invokeRestart("muffleWarning")
    },
    message = function(m) {
      msgs <<- c(msgs, sub("\n$", "", conditionMessage(m)))
      invokeRestart("muffleMessage")
    })
  list(value = value, warnings = warns, messages = msgs)
}

fit_lmer <- function(formula_text, data, REML = TRUE) {
  res <- fit_collect(lmer(as.formula(formula_text), data = data, REML = REML))
  fit <- res$value
  # lme4 also stores convergence messages in the fit; keep them with the warnings we caught
  conv <- fit@optinfo$conv$lme4$messages
  list(fit = fit, warnings = res$warnings, messages = res$messages,
       convergence_messages = if (is.null(conv)) character(0) else conv)
}

summarise <- function(f, formula_text, csv_path) {
  fit <- f$fit
  vc <- as.data.frame(VarCorr(fit))
  vc$var1[is.na(vc$var1)] <- ""
  vc$var2[is.na(vc$var2)] <- ""
  list(
    formula = formula_text,
    data = csv_path,
    reml = isREML(fit),
    nobs = nobs(fit),
    ngroups = as.list(ngrps(fit)),
    fixef = as.list(fixef(fit)),
    stderr = as.list(sqrt(diag(as.matrix(vcov(fit))))),
    theta = I(unname(getME(fit, "theta"))),
    sigma = sigma(fit),
    reml_criterion = as.numeric(REMLcrit(fit)),
    loglik = as.numeric(logLik(fit)),
    x_colnames = I(colnames(getME(fit, "X"))),
    varcorr = list(grp = I(vc$grp), var1 = I(vc$var1), var2 = I(vc$var2),
                   vcov = I(vc$vcov), sdcor = I(vc$sdcor)),
    warnings = I(f$warnings),
    messages = I(f$messages),
    convergence_messages = I(f$convergence_messages)
  )
}

as_rows <- function(nd) lapply(nd, function(col) I(if (is.factor(col)) as.character(col) else col))

groups <- function(k) sprintf("g%02d", seq_len(k))

cases <- list()

# a. poly(): R computes the orthogonal polynomial on every row of the data (x is present
# everywhere) before dropping the rows where y is NA, and predict() reuses those coefficients.
set.seed(101)
n <- 144
g <- rep(groups(12), each = 12)
x <- round(runif(n, 0, 20), 3)
u <- rnorm(12, sd = 1.5)
y <- round(5 + 0.8 * x - 0.03 * x^2 + u[as.integer(factor(g))] + rnorm(n, sd = 1), 4)
y[c(3, 30, 61, 99, 140)] <- NA
saved <- save_csv(data.frame(y = y, x = x, g = g), "poly")
d <- saved$data
form <- "y ~ poly(x, 2) + (1 | g)"
f <- fit_lmer(form, d)
out <- summarise(f, form, saved$path)
nd <- data.frame(x = c(-2, 0.5, 10, 25), g = c("g01", "g04", "g07", "g12"))
p_all <- poly(d$x, 2)
p_complete <- poly(d$x[!is.na(d$y)], 2)
out$poly_coefs_all_rows <- list(alpha = I(attr(p_all, "coefs")$alpha), norm2 = I(attr(p_all, "coefs")$norm2))
out$poly_coefs_complete_rows <- list(alpha = I(attr(p_complete, "coefs")$alpha),
                                     norm2 = I(attr(p_complete, "coefs")$norm2))
out$x_range_complete_rows <- I(range(d$x[!is.na(d$y)]))
out$newdata <- as_rows(nd)
out$predict <- I(unname(predict(f$fit, newdata = nd)))
out$predict_population <- I(unname(predict(f$fit, newdata = nd, re.form = NA)))
out$fitted_head <- I(unname(head(fitted(f$fit), 5)))
cases$poly <- out

# b. scale(): centre and scale come from x over all rows of the data (the model frame is built
# before the NA rows are dropped); predict() uses those, not the new data's.
set.seed(202)
n <- 120
g <- rep(groups(12), each = 10)
x <- round(runif(n, 0, 20), 3)
u <- rnorm(12, sd = 1)
y <- round(3 + 0.4 * x + u[as.integer(factor(g))] + rnorm(n, sd = 1.2), 4)
y[c(5, 17, 44, 80, 101, 118)] <- NA
saved <- save_csv(data.frame(y = y, x = x, g = g), "scale")
d <- saved$data
form <- "y ~ scale(x) + (1 | g)"
f <- fit_lmer(form, d)
out <- summarise(f, form, saved$path)
s_all <- scale(d$x)
s_complete <- scale(d$x[!is.na(d$y)])
out$scaled_center <- attr(s_all, "scaled:center")
out$scaled_scale <- attr(s_all, "scaled:scale")
out$scaled_center_complete_rows <- attr(s_complete, "scaled:center")
out$scaled_scale_complete_rows <- attr(s_complete, "scaled:scale")
nd <- data.frame(x = c(0, 7.5, 15, 30), g = c("g02", "g05", "g09", "g11"))
out$newdata <- as_rows(nd)
out$predict <- I(unname(predict(f$fit, newdata = nd)))
out$predict_population <- I(unname(predict(f$fit, newdata = nd, re.form = NA)))
cases$scale <- out

# c. factor() of a numeric column: nitro takes 0, 0.2, 0.4, 0.6 (nlme's Oats, plain columns).
if (requireNamespace("nlme", quietly = TRUE)) {
  data(Oats, package = "nlme", envir = environment())
  oats <- data.frame(yield = as.numeric(Oats$yield), nitro = as.numeric(Oats$nitro),
                     Block = as.character(Oats$Block), Variety = as.character(Oats$Variety),
                     stringsAsFactors = FALSE)
  oats_source <- "nlme::Oats"
} else {
  set.seed(303)
  blocks <- c("I", "II", "III", "IV", "V", "VI")
  varieties <- c("Golden Rain", "Marvellous", "Victory")
  oats <- expand.grid(nitro = c(0, 0.2, 0.4, 0.6), Variety = varieties, Block = blocks,
                      stringsAsFactors = FALSE)
  b <- rnorm(6, sd = 15)
  bv <- rnorm(18, sd = 10)
  oats$yield <- round(80 + 75 * oats$nitro + b[match(oats$Block, blocks)] +
                        bv[(match(oats$Block, blocks) - 1) * 3 + match(oats$Variety, varieties)] +
                        rnorm(nrow(oats), sd = 13))
  oats <- oats[, c("yield", "nitro", "Block", "Variety")]
  oats_source <- "simulated"
}
saved <- save_csv(oats, "factor")
d <- saved$data
form <- "yield ~ factor(nitro) + (1 | Block/Variety)"
f <- fit_lmer(form, d)
out <- summarise(f, form, saved$path)
out$source <- oats_source
cases$factor <- out

# d. offset(): the offset is part of fitted() and predict(); refitting y - z without the offset
# gives the same fixed effects.
set.seed(404)
n <- 100
g <- rep(groups(10), each = 10)
x <- round(rnorm(n, 5, 2), 4)
z <- round(runif(n, 0, 3), 4)
u <- rnorm(10, sd = 0.8)
y <- round(1 + 0.5 * x + z + u[as.integer(factor(g))] + rnorm(n, sd = 0.7), 4)
saved <- save_csv(data.frame(y = y, x = x, z = z, g = g), "offset")
d <- saved$data
form <- "y ~ x + offset(z) + (1 | g)"
f <- fit_lmer(form, d)
out <- summarise(f, form, saved$path)
out$fitted_head <- I(unname(head(fitted(f$fit), 5)))
nd <- data.frame(x = c(2, 5, 8), z = c(0, 1.5, 3), g = c("g01", "g05", "g10"))
out$newdata <- as_rows(nd)
out$predict <- I(unname(predict(f$fit, newdata = nd)))
out$predict_population <- I(unname(predict(f$fit, newdata = nd, re.form = NA)))
form2 <- "I(y - z) ~ x + (1 | g)"
f2 <- fit_lmer(form2, d)
out$difference_fit <- summarise(f2, form2, saved$path)
out$difference_fit$fitted_head <- I(unname(head(fitted(f2$fit), 5)))
cases$offset <- out

# e. dotted column names, as in lmerTest's ham data.
set.seed(505)
consumers <- sprintf("C%02d", 1:20)
types <- c("Contrast", "Normal", "Premium")
dd <- expand.grid(Product.type = types, rep = 1:2, Consumer = consumers, stringsAsFactors = FALSE)
cu <- rnorm(20, sd = 1)
dd$Informed.liking <- round(5 + c(0, 0.6, 1.1)[match(dd$Product.type, types)] +
                              cu[match(dd$Consumer, consumers)] + rnorm(nrow(dd), sd = 1.3), 3)
dd <- dd[, c("Informed.liking", "Product.type", "Consumer")]
saved <- save_csv(dd, "dotted")
d <- saved$data
form <- "Informed.liking ~ Product.type + (1 | Consumer)"
f <- fit_lmer(form, d)
cases$dotted <- summarise(f, form, saved$path)

# f. POSIX seconds (about 1.7e9) as a covariate next to the intercept, and a covariate on a tiny
# scale: lme4 keeps both columns and warns about the scales.
set.seed(606)
n <- 150
g <- rep(groups(10), each = 15)
t0 <- as.numeric(as.POSIXct("2024-01-01", tz = "UTC"))
time <- t0 + round(runif(n, 0, 3.15e7))
x <- round(rnorm(n), 4)
x_small <- signif(x * 1e-8, 6)
u <- rnorm(10, sd = 1)
y <- round(2 + 1e-7 * (time - t0) + 0.5 * x + u[as.integer(factor(g))] + rnorm(n, sd = 0.8), 4)
saved <- save_csv(data.frame(y = y, time = time, x = x, x_small = x_small, g = g), "posix")
d <- saved$data
form <- "y ~ time + (1 | g)"
f <- fit_lmer(form, d)
out <- summarise(f, form, saved$path)
out$time_origin <- t0
form2 <- "y ~ x_small + (1 | g)"
f2 <- fit_lmer(form2, d)
out$small_fit <- summarise(f2, form2, saved$path)
form3 <- "y ~ x + (1 | g)"
f3 <- fit_lmer(form3, d)
out$unscaled_fit <- summarise(f3, form3, saved$path)
cases$posix <- out

# g. new levels in predict(): an error by default, the population-level prediction with
# allow.new.levels = TRUE. Group ids are integers, so the CSV column is numeric.
set.seed(707)
n <- 80
gid <- rep(1:8, each = 10)
x <- round(rnorm(n, 0, 1.5), 4)
u <- rnorm(8, sd = 1.2)
y <- round(4 + 1.5 * x + u[gid] + rnorm(n, sd = 0.9), 4)
saved <- save_csv(data.frame(y = y, x = x, g = gid), "newlevels")
d <- saved$data
d$g <- factor(d$g)
form <- "y ~ x + (1 | g)"
f <- fit_lmer(form, d)
out <- summarise(f, form, saved$path)
out$ranef_levels <- I(rownames(ranef(f$fit)$g))
out$ranef <- I(unname(ranef(f$fit)$g[, 1]))
nd <- data.frame(x = c(-1, 0.5, 2), g = c(3, 6, 9))   # numeric ids; 9 was never seen
out$newdata <- as_rows(nd)
out$predict_error <- tryCatch({
  predict(f$fit, newdata = nd)
  NULL
}, error = function(e) conditionMessage(e))
out$predict_allow_new <- I(unname(predict(f$fit, newdata = nd, allow.new.levels = TRUE)))
out$predict_population <- I(unname(predict(f$fit, newdata = nd, re.form = NA)))
nd_char <- nd
nd_char$g <- as.character(nd_char$g)
out$predict_allow_new_character_ids <- I(unname(predict(f$fit, newdata = nd_char, allow.new.levels = TRUE)))
nd_known <- data.frame(x = c(-1, 0.5), g = c(3, 6))
out$newdata_known <- as_rows(nd_known)
out$predict_known <- I(unname(predict(f$fit, newdata = nd_known)))
cases$newlevels <- out

result <- list(
  lme4_version = as.character(packageVersion("lme4")),
  r_version = R.version.string,
  cases = cases
)
writeLines(toJSON(result, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"),
           file.path("tests", "reference", "user_data.json"))
cat("wrote tests/reference/user_data.json\n")
