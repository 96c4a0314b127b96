"""Shared fixtures: the book's data sets and the lme4 reference fits."""

import json
import pathlib

import numpy as np
import pytest

from lmmnotes import datasets, lmer

REFERENCE = json.loads((pathlib.Path(__file__).parent / "reference" / "lme4_fits.json").read_text())


def book_data(name: str):
    """A data set as the reference script prepared it (psid gains cyear = year - 78)."""
    frame = datasets.load(name)
    if name == "psid":
        frame["cyear"] = frame["year"] - 78
    return frame


@pytest.fixture(scope="session")
def reference():
    return REFERENCE


@pytest.fixture(scope="module")
def pulp():
    """The pulp data, one copy per test module (a module that modifies it must copy it)."""
    return book_data("pulp")


@pytest.fixture(scope="module")
def pulp_reml(pulp):
    """The REML fit of chapters 1-5, ``bright ~ 1 + (1 | operator)``."""
    return lmer("bright ~ 1 + (1 | operator)", pulp)


def quantile_agrees(samples, a: float, reference: float, B_ref: int | None = None) -> bool:
    """Whether ``reference``, the a-quantile of a distribution (estimated from B_ref draws, or
    exact when B_ref is None), lies between the empirical quantiles of ``samples`` at
    a -+ 4 sqrt(a (1 - a) (1/B + 1/B_ref)): four Monte Carlo standard errors in probability."""
    samples = np.asarray(samples)[np.isfinite(samples)]
    width = 4 * np.sqrt(a * (1 - a) * (1 / len(samples) + (1 / B_ref if B_ref else 0.0)))
    lo, hi = np.quantile(samples, [max(a - width, 0.0), min(a + width, 1.0)])
    return lo - 1e-12 <= reference <= hi + 1e-12
