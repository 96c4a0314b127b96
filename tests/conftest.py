"""Shared fixtures: the book's data sets and the lme4 reference fits."""

import json
import pathlib

import pytest

from lmmnotes import datasets

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
