"""Tests of lmmnotes.datasets."""

import hashlib
import json
import pathlib

import pandas as pd
import pytest
from pandas.api.types import is_float_dtype, is_integer_dtype

from lmmnotes import DataError, datasets

EXPECTED = {
    # name: (rows, {column: "category" | "int" | "float"})
    "pulp": (20, {"bright": "float", "operator": "category"}),
    # exercise data sets (faraway 1.0.9)
    "breaking": (16, {"y": "int", "operator": "category", "day": "category", "supplier": "category"}),
    "denim": (95, {"waste": "float", "supplier": "category"}),
    "eggprod": (12, {"treat": "category", "block": "category", "eggs": "int"}),
    "lawn": (24, {"manufact": "category", "machine": "category", "speed": "category", "time": "int"}),
    "ratdrink": (135, {"wt": "int", "weeks": "int", "subject": "category", "treat": "category"}),
    "vision": (56, {"acuity": "int", "power": "category", "eye": "category", "subject": "category"}),
    # exercise data sets (nlme 3.1-162, mlmRev 1.0-8, R datasets)
    "rail": (18, {"Rail": "category", "travel": "int"}),
    "ergostool": (36, {"effort": "int", "Type": "category", "Subject": "category"}),
    "early": (309, {"id": "category", "cog": "int", "age": "float", "trt": "category"}),
    "orange": (35, {"Tree": "category", "age": "int", "circumference": "int"}),
    "eggs": (48, {"Fat": "float", "Lab": "category", "Technician": "category", "Sample": "category"}),
    "irrigation": (16, {"field": "category", "irrigation": "category", "variety": "category", "yield": "float"}),
    "psid": (1661, {"age": "int", "educ": "int", "sex": "category", "income": "int", "year": "int", "person": "category"}),
    "hsb": (
        7185,
        {
            "school": "category", "minority": "category", "sex": "category", "ses": "float",
            "mathach": "float", "meanses": "float", "size": "int", "sector": "category",
            "pracad": "float", "disclim": "float", "himinty": "category",
        },
    ),
}

KIND = {"category": lambda s: isinstance(s.dtype, pd.CategoricalDtype), "int": is_integer_dtype, "float": is_float_dtype}


def test_names_lists_every_data_set():
    assert datasets.names() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_data_set_loads_with_documented_dtypes(name):
    rows, columns = EXPECTED[name]
    frame = datasets.load(name)
    assert len(frame) == rows
    assert list(frame.columns) == list(columns)
    for column, kind in columns.items():
        assert KIND[kind](frame[column]), f"{name}.{column} is {frame[column].dtype}, expected {kind}"
    assert not frame.isna().any().any()


def test_level_orders_follow_r():
    assert list(datasets.load("pulp")["operator"].cat.categories) == ["a", "b", "c", "d"]
    assert list(datasets.load("eggs")["Lab"].cat.categories) == ["I", "II", "III", "IV", "V", "VI"]
    assert list(datasets.load("hsb")["sector"].cat.categories) == ["Catholic", "Public"]
    # numeric-looking identifiers sort as numbers, not as strings
    persons = list(datasets.load("psid")["person"].cat.categories)
    assert persons[:3] == ["1", "2", "3"] and persons.index("10") == 9
    schools = [int(s) for s in datasets.load("hsb")["school"].cat.categories]
    assert schools == sorted(schools) and len(schools) == 160


def test_each_load_is_a_fresh_copy():
    first = datasets.load("pulp")
    first.loc[0, "bright"] = -1.0
    assert datasets.load("pulp").loc[0, "bright"] == 59.8


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(DataError, match="unknown data set 'pulpp'.*breaking, denim, early, eggprod, eggs, ergostool, hsb, irrigation, lawn, orange, psid, pulp, rail, ratdrink, vision"):
        datasets.load("pulpp")


@pytest.mark.parametrize("reference", ["lme4_fits.json", "inference.json", "multilevel.json",
                                       "satterthwaite.json", "chapter14.json"])
def test_reference_values_were_computed_from_these_data_files(reference):
    """The R scripts record the MD5 of each CSV they read: an edited data file must come with
    reference values recomputed from it (Rscript tests/reference/*.R)."""
    root = pathlib.Path(__file__).resolve().parent.parent
    recorded = json.loads((root / "tests" / "reference" / reference).read_text())["data_md5"]
    assert recorded, "no checksums recorded"
    for name, md5 in recorded.items():
        actual = hashlib.md5((root / "data" / f"{name}.csv").read_bytes()).hexdigest()
        assert actual == md5, f"data/{name}.csv is not the file {reference} was computed from; re-run the R scripts"
