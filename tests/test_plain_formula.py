"""Model matrices of plain formulas, built without formulaic, must equal formulaic's."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from formulaic import model_matrix

import lmmnotes
from lmmnotes import datasets
from lmmnotes.checks import DataError
from lmmnotes.design import build_design
from lmmnotes.formula import parse_formula
from lmmnotes.plain_formula import parse_plain, parse_plain_response, plain_columns

from .conftest import book_data


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n = 60
    return pd.DataFrame({
        "x": rng.normal(size=n),
        "z": rng.integers(0, 5, n),  # int: numeric, not a factor
        "w": rng.normal(size=n),
        "f": rng.choice(["b", "a", "c", "B", "10", "9"], n),  # strings: levels sorted as text
        "g": pd.Categorical(rng.choice(["y", "x"], n), categories=["y", "x"]),  # categories in their own order
        "h": pd.Categorical(rng.choice([1, 2], n), categories=[1, 2, 3]),  # numeric labels, one unused
        "flag": rng.random(n) < 0.5,
        "s": pd.array(rng.choice(["u", "v"], n), dtype="string"),  # formulaic cannot encode this dtype
        "x32": rng.normal(size=n).astype(np.float32),  # formulaic multiplies in float32
        "Intercept": rng.normal(size=n),
        "y": rng.normal(size=n),
    })


PLAIN = [
    "1", "x", "0 + x", "-1 + x + w", "x + z", "x*z", "z + x + x:z", "z:x + x + z", "x*z*w", "f", "g", "h",
    "x*f", "f*g", "g*f", "x*z*f", "f:x + f + x", "g + x:g + x", "x*f*g", "f*g*h", "1 + f + x + f:x",
    "x + x", "f + f:g + g", "x*w + f", "0 + 1 + x", "x + 0 + 1", "-1 + 1 + x",
]


@pytest.mark.parametrize("rhs", PLAIN)
def test_plain_matrix_equals_formulaic(frame, rhs):
    plain = plain_columns(parse_plain(rhs), frame)
    assert plain is not None, rhs
    expected = model_matrix(rhs, frame)
    X, names = plain
    assert names == list(expected.columns)
    np.testing.assert_array_equal(X, expected.to_numpy(dtype=float))


@pytest.mark.parametrize("seed", range(20))
def test_random_hierarchical_formulas_equal_formulaic(frame, seed):
    """Products of two or three of the columns, plus a main effect: every one is plain."""
    rng = np.random.default_rng(seed)
    names = ["x", "z", "w", "f", "g", "h"]
    parts = rng.choice(names, size=rng.integers(2, 4), replace=False)
    extra = rng.choice([n for n in names if n not in parts])
    rhs = f"{extra} + {' * '.join(parts)}" if seed % 2 else f"{' * '.join(parts)} + {extra}"
    X, columns = plain_columns(parse_plain(rhs), frame)
    expected = model_matrix(rhs, frame)
    assert columns == list(expected.columns), rhs
    np.testing.assert_array_equal(X, expected.to_numpy(dtype=float))


@pytest.mark.parametrize("rhs", [
    "C(f)", "I(x**2)", "log(w)", "x + f:x", "f:g", "0 + f", "x:x", "x:z + z:x", "x.real", "flag", "x + flag", "`x`", "(x)", "s", "x + s",
    "x32 * x", "x + Intercept", "1 + x - 1",
])
def test_other_formulas_are_left_to_formulaic(frame, rhs):
    assert plain_columns(parse_plain(rhs), frame) is None


def test_responses():
    assert parse_plain_response("y") == ("y", None)
    assert parse_plain_response("`yield`") == ("yield", None)
    assert parse_plain_response("log(income)") == ("income", np.log)
    assert parse_plain_response("sin(x)") is None
    assert parse_plain_response("I(y * 2)") is None


@pytest.mark.parametrize("name, formula", [
    ("psid", "log(income) ~ cyear * sex + age + educ + (cyear | person)"),
    ("hsb", "mathach ~ ses * sector + (ses | school)"),
    ("irrigation", "yield ~ irrigation * variety + (1 | field)"),
    ("eggs", "Fat ~ 1 + (1 | Lab) + (1 | Lab:Technician)"),
])
def test_book_designs_equal_formulaic(name, formula):
    data = book_data(name)
    design = build_design(parse_formula(formula), data)
    parsed = design.formula
    expected = model_matrix(f"{parsed.response} ~ {parsed.fixed}", data, context={"log": np.log})
    np.testing.assert_array_equal(design.X, expected.rhs.to_numpy(dtype=float))
    np.testing.assert_array_equal(design.y, expected.lhs.to_numpy(dtype=float).ravel())
    assert list(design.x_names) == [c.replace("Intercept", "(Intercept)") for c in expected.rhs.columns]
    for t in design.terms:
        np.testing.assert_array_equal(t.X, model_matrix(t.term.expr, data).to_numpy(dtype=float))
    # the fixed part's formulaic spec, built on demand, rebuilds X for the data (prediction)
    np.testing.assert_array_equal(design.fixed_spec.get_model_matrix(data).to_numpy(dtype=float), design.X)


def test_plain_design_predicts_new_data_with_the_fitted_levels():
    """Prediction rebuilds X by formulaic with the levels of the fit, even for one level in newdata."""
    data = datasets.load("hsb")
    fit = lmmnotes.lmer("mathach ~ ses * sector + (ses | school)", data, reml=False)
    rows = data[data["sector"] == data["sector"].cat.categories[1]].head(5)
    new = rows.assign(sector=rows["sector"].astype(str))  # strings: one level only
    np.testing.assert_allclose(fit.predict(new).to_numpy(), fit.predict().loc[rows.index].to_numpy(), rtol=1e-12)


def test_random_term_columns_must_be_numeric_in_new_data():
    data = datasets.load("hsb")
    fit = lmmnotes.lmer("mathach ~ 1 + (ses | school)", data, reml=False)
    with pytest.raises(DataError, match="must be numeric"):
        fit.predict(data.head(3).assign(ses=["a", "b", "c"]))
    with pytest.raises(DataError, match="'ses' not found"):
        fit.predict(data.head(3).drop(columns="ses"))


def test_missing_rows_are_dropped_from_the_model_frame():
    data = datasets.load("pulp")
    data.loc[[0, 5], "bright"] = np.nan
    before = data.copy()
    with pytest.warns(UserWarning, match="2 of 20 rows"):
        design = build_design(parse_formula("bright ~ 1 + (1 | operator)"), data)
    assert design.nobs == 18 and list(design.model_frame.index) == [i for i in range(20) if i not in (0, 5)]
    pd.testing.assert_frame_equal(data, before)


def test_parse_plain_expands_products_in_formulaic_order():
    terms = parse_plain("c + a * b").terms
    assert terms == (("c",), ("a",), ("b",), ("a", "b"))
    assert parse_plain("a * b * c").terms == tuple(
        t for k in (1, 2, 3) for t in itertools.combinations(("a", "b", "c"), k))


@pytest.mark.parametrize("formula, by_formulaic", [("mathach ~ I(ses**2) + sector + (1 | school)", True),
                                                   ("mathach ~ ses + sector + (1 | school)", False)])
def test_formulaic_builds_the_fixed_part_once(formula, by_formulaic):
    """A formula formulaic builds keeps formulaic's ModelSpec in the design (predict needs no second
    build); a plain one builds it on demand. Either way it rebuilds X for the data."""
    data = datasets.load("hsb")
    design = build_design(parse_formula(formula), data)
    assert (design.formulaic_spec is not None) == by_formulaic
    assert design.fixed_spec is design.fixed_spec and (not by_formulaic or design.fixed_spec is design.formulaic_spec)
    rebuilt = design.fixed_spec.get_model_matrix(data)
    np.testing.assert_array_equal(rebuilt.to_numpy(dtype=float), design.X)


def test_a_random_slope_predicts_new_data_given_in_float32():
    """The fit's (ses | school) was built directly from float64; float32 columns in new data are widened."""
    data = datasets.load("hsb")
    fit = lmmnotes.lmer("mathach ~ ses + (ses | school)", data, reml=False)
    new = data.head(5).assign(ses=data["ses"].head(5).astype(np.float32))
    widened = new.assign(ses=new["ses"].astype(float))
    np.testing.assert_array_equal(fit.predict(new).to_numpy(), fit.predict(widened).to_numpy())
