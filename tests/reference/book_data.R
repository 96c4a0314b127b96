# The book's data sets as the reference scripts use them (sourced by lme4_fits.R and inference.R):
# factors as read from the CSVs, person and school as factors, and psid's cyear = year - 78.
read_data <- function(name) read.csv(file.path("data", paste0(name, ".csv")), stringsAsFactors = TRUE)
pulp <- read_data("pulp")
eggs <- read_data("eggs")
irrigation <- read_data("irrigation")
psid <- read_data("psid")
psid$person <- factor(psid$person)
psid$cyear <- psid$year - 78
hsb <- read_data("hsb")
hsb$school <- factor(hsb$school)

# MD5 checksums of the data files a script read, recorded in its JSON: the Python tests compare
# them with the files in data/, so an edited CSV cannot leave the reference values silently stale.
data_md5 <- function(names) {
  paths <- file.path("data", paste0(names, ".csv"))
  setNames(as.list(unname(tools::md5sum(paths))), names)
}
