"""The design step's fast paths give what the plain computations give.

Each fast path of ``design``, ``model_frame``, ``checks``, ``formula``, ``plain_formula`` and
``datasets`` is checked here against the computation it replaces (written out in this file, as the
code was before), bit for bit where the fast path claims it, and on cases near the boundary of each
cheap test: a cheap test may leave a case to the exact one, but never decide it otherwise.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.linalg.lapack import dpotrf

from lmmnotes import DataError, FormulaError
from lmmnotes import design as D
from lmmnotes.checks import PredictorScaleWarning, complete_cases, require_finite
from lmmnotes.datasets import factor_levels
from lmmnotes.formula import parse_formula
from lmmnotes.model_frame import formula_variables, model_frame, model_frame_columns
from lmmnotes.plain_formula import parse_plain, parse_plain_response, plain_columns, plain_response


# ---- the computations the fast paths replace ---------------------------------------------------
def residual_by_lstsq(target, regressors):
    if not regressors.size:
        return float(np.linalg.norm(target))
    coef, *_ = np.linalg.lstsq(regressors, target, rcond=None)
    return float(np.linalg.norm(target - regressors @ coef))


def projected_by_add_at(values, t):
    blocks = np.zeros((t.n_levels, t.p, t.p))
    np.add.at(blocks, t.codes, t.X[:, :, None] * t.X[:, None, :])
    right = np.zeros((t.n_levels, t.p, values.shape[1]))
    np.add.at(right, t.codes, t.X[:, :, None] * values[:, None, :])
    coef = np.linalg.pinv(blocks) @ right
    return values - np.einsum("ij,ijk->ik", t.X, coef[t.codes])


def drop_aliased_by_scaled_columns(X, names):
    if not X.size:
        return X, names, []
    lengths = np.sqrt(np.einsum("ij,ij->j", X, X))
    nonzero = lengths > 0
    if nonzero.all() and X.shape[0] >= X.shape[1]:
        scaled = X / lengths
        R, info = dpotrf(scaled.T @ scaled, lower=0)
        if info == 0 and np.all(np.abs(np.diag(R)) > 1e3 * D.RANK_TOLERANCE):
            return X, names, []
        if np.all(np.abs(np.diagonal(np.linalg.qr(scaled, mode="r"))) > D.RANK_TOLERANCE):
            return X, names, []
    keep = []
    for j in np.flatnonzero(nonzero):
        column = X[:, j] / lengths[j]
        if keep:
            kept = X[:, keep] / lengths[keep]
            coef, *_ = np.linalg.lstsq(kept, column, rcond=None)
            column = column - kept @ coef
        if np.linalg.norm(column) > D.RANK_TOLERANCE:
            keep.append(int(j))
    return X[:, keep], [names[j] for j in keep], [names[j] for j in range(X.shape[1]) if j not in keep]


def interaction_by_mixed_radix(data, factors):
    per_factor = [factor_levels(data[name]) for name in factors]
    sizes = [len(labels) for labels, _ in per_factor]
    key = np.zeros(len(data), dtype=np.int64)
    for (_, codes), size in zip(per_factor, sizes):
        key = key * size + codes
    present = np.bincount(key, minlength=int(np.prod(sizes, dtype=np.int64))) > 0
    observed = np.flatnonzero(present)
    codes = (np.cumsum(present) - 1)[key]
    digits = np.unravel_index(observed, sizes)
    parts = [np.asarray(labels, dtype=object)[d] for (labels, _), d in zip(per_factor, digits)]
    return (codes.astype(np.intp), tuple(map(":".join, zip(*parts))),
            tuple(tuple(labels) for labels, _ in per_factor), observed)


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def term(codes, X, formula="y ~ (x | g)"):
    codes = np.asarray(codes, dtype=np.intp)
    return D.TermDesign(term=parse_formula(formula).random[0], levels=tuple(map(str, range(codes.max() + 1))),
                        codes=codes, X=np.asarray(X, dtype=float), columns=tuple(f"c{j}" for j in range(X.shape[1])))


# ---- parsing is kept per string ------------------------------------------------------------------
def test_a_formula_string_is_parsed_once_and_a_bad_one_fails_every_time():
    formula = "y ~ x + (x | g) + (1 | h/k)"
    assert parse_formula(formula) is parse_formula(formula)

    class Text(str):
        pass

    fresh = parse_formula(Text(formula))
    assert fresh == parse_formula(formula) and fresh is not parse_formula(formula)
    for _ in range(2):
        with pytest.raises(FormulaError, match="unbalanced"):
            parse_formula("y ~ (1 | g")
    with pytest.raises(FormulaError, match="must be a string"):
        parse_formula(["y ~ x"])
    assert parse_plain("a * b") is parse_plain("a * b")
    assert parse_plain_response("log(y)") == ("y", np.log)
    assert formula_variables("log(y)", "x + log(z)", "x") == ["y", "x", "z"]
    assert formula_variables("log(y)", "x + log(z)", "x") is not formula_variables("log(y)", "x + log(z)", "x")


# ---- the model frame -------------------------------------------------------------------------------
def mixed_frame():
    return pd.DataFrame({
        "f": [1.0, np.nan, 3.0, 4.0, 5.0],
        "f32": np.array([1.0, 2.0, np.nan, 4.0, 5.0], dtype=np.float32),
        "i": [1, 2, 3, 4, 5],
        "b": [True, False, True, True, False],
        "c": pd.Categorical(["a", "b", None, "a", "b"]),
        "o": ["a", None, "b", "c", "a"],
        "s": pd.array(["a", "b", "c", pd.NA, "a"], dtype="string"),
        "I": pd.array([1, 2, 3, 4, pd.NA], dtype="Int64"),
        "t": pd.to_datetime(["2020-01-01", None, "2020-01-03", "2020-01-04", "2020-01-05"]),
        "g": ["u", "v", "u", "v", "w"],
    })


@pytest.mark.parametrize("column", list(mixed_frame().columns))
def test_complete_cases_reads_each_dtype_as_pandas_does(column):
    frame = mixed_frame()[[column, "i"]]
    expected = frame.notna().to_numpy().all(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.array_equal(complete_cases(frame, 1), expected)
        assert np.array_equal(complete_cases(frame, 1, columns=dict(frame.items())), expected)


def test_infinite_values_are_counted_in_the_rows_used_only():
    frame = pd.DataFrame({"x": [np.inf, 1.0, -np.inf, np.inf],
                          "y": np.array([1.0, np.inf, 2.0, 3.0], dtype=np.float32),
                          "z": pd.array([1.0, np.inf, None, 2.0], dtype="Float64"), "n": [1, 2, 3, 4]})
    rows = np.array([True, True, False, True])
    for data in (frame, dict(frame.items())):
        with pytest.raises(DataError) as fast:
            require_finite(data, frame.columns, rows=rows)
        with pytest.raises(DataError) as plain:
            require_finite(frame.loc[rows], frame.columns)
        assert str(fast.value) == str(plain.value)
        assert "'x' has 2 infinite value(s); 'y' has 1 infinite value(s); 'z' has 1 infinite" in str(fast.value)
    require_finite(frame, ["n"], rows=rows)
    require_finite(frame, ["x"], rows=np.array([False, True, False, False]))


def test_unused_categories_are_those_of_no_complete_row():
    data = pd.DataFrame({"y": [1.0, 2.0, np.nan, 4.0, 5.0, 6.0],
                         "c": pd.Categorical(["a", "b", "c", "a", "b", "a"], categories=["z", "c", "b", "a", "d"]),
                         "k": pd.Categorical([2, 1, 2, 1, 2, 1], categories=[3, 2, 1]), "g": list("uvuvuv")})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame, complete = model_frame(data, ["y", "c", "k"], groups=["g"], stacklevel=1)
    assert list(frame["c"].cat.categories) == ["b", "a"] and list(frame["k"].cat.categories) == [2, 1]
    assert frame["k"].cat.categories.dtype == data["k"].cat.categories.dtype
    assert list(complete) == [True, True, False, True, True, True]
    full, _ = model_frame(data.dropna(), ["c"], stacklevel=1)
    assert full["c"].cat.categories is not data["c"].cat.categories and list(full["c"].cat.categories) == ["b", "a"]


# ---- factors -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("column", [
    pd.Categorical(["b", "a", "c", "a"]),
    pd.Categorical(["b", "a", "a"], categories=["c", "b", "a"]),  # an unobserved level
    pd.Categorical([3, 1, 2, 3]),
    pd.Categorical([3.0, 1.5, 3.0]),
    pd.Categorical(np.array(["x", "y"], dtype=object)).astype(pd.CategoricalDtype(pd.Index(["x", "y"], dtype=object))),
    pd.Series(["s2", "s10", "s1", "s2"]),
    pd.Series([2, 10, 1, 2]),
])
def test_one_factor_interaction_is_the_mixed_radix_one(column):
    data = pd.DataFrame({"g": column, "h": ["p", "q"] * (len(column) // 2) + ["p"] * (len(column) % 2)})
    for factors in [("g",), ("g", "h"), ("h", "g")]:
        fast, plain = D.interaction(data, factors, {}), interaction_by_mixed_radix(data, factors)
        assert same_bits(fast[0], plain[0]) and fast[1:3] == plain[1:3] and same_bits(fast[3], plain[3])
        assert all(type(label) is str for label in fast[1])
    read = {}
    D.interaction(data, ("g", "h"), read)
    assert set(read) == {"g", "h"}
    assert D.interaction(data, ("g",), read)[1] == interaction_by_mixed_radix(data, ("g",))[1]


# ---- checks on the model matrix ----------------------------------------------------------------------
@pytest.mark.parametrize("n", [3, 50, 5000])
def test_binary_columns_are_found_as_np_isin_finds_them(n):
    rng = np.random.default_rng(n)
    X = np.column_stack([np.ones(n), rng.integers(0, 2, n).astype(float), -0.0 * np.ones(n),
                         np.where(np.arange(n) == n - 1, 2.0, 1.0), 1e4 * rng.standard_normal(n),
                         rng.standard_normal(n)])
    continuous = [j for j in range(X.shape[1]) if not np.isin(X[:, j], (0.0, 1.0)).all()]
    assert continuous == [3, 4, 5]
    with pytest.warns(PredictorScaleWarning, match=r"x3 \(sd .*\), big \(sd .*\), small"):
        D.check_predictor_scales(X, ["a", "b", "c", "x3", "big", "small"], stacklevel=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        D.check_predictor_scales(X[:, :3], ["a", "b", "c"], stacklevel=1)


def test_lower_triangle_indices_are_numpys():
    for p in range(7):
        t = term([0, 1, 1], np.ones((3, p)))
        expected = np.triu_indices(p)[::-1]
        assert all(same_bits(a, b) for a, b in zip(t.lower, expected))


@pytest.mark.parametrize("seed", range(6))
def test_drop_aliased_decides_as_the_scaled_columns_do(seed):
    rng = np.random.default_rng(seed)
    n = [5, 40, 3000][seed % 3]
    x, w = rng.standard_normal(n), rng.standard_normal(n)
    columns = [np.ones(n), x, 1e8 * x + 1e-8 * w, x + 10.0 ** -(seed + 3) * w, 1e-130 * w, 1e130 * w, np.zeros(n),
               3 * x]
    names = [f"c{j}" for j in range(len(columns))]
    for subset in ([0], [1], [6], [4], [5], [0, 1], [0, 1, 2], [0, 1, 3], [0, 4], [0, 5], [1, 6], [0, 1, 7],
                   [0, 3, 5]):
        X = np.column_stack([columns[j] for j in subset])
        kept, fast_names, fast_dropped = D.drop_aliased(X, [names[j] for j in subset])
        plain, plain_names, plain_dropped = drop_aliased_by_scaled_columns(X, [names[j] for j in subset])
        assert (fast_names, fast_dropped) == (plain_names, plain_dropped) and same_bits(kept, plain)


# ---- the exact-fit checks ----------------------------------------------------------------------------
@pytest.mark.parametrize("p", [1, 2, 3])
def test_level_sums_and_projections_are_those_of_add_at_and_pinv(p):
    rng = np.random.default_rng(p)
    for n, levels in [(7, 3), (200, 17), (4000, 150), (9000, 300)]:  # np.bincount, then sparse products
        codes = np.concatenate([np.arange(levels), rng.integers(0, levels, n - levels)])
        X = np.column_stack([np.ones(n)] + [rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4)
                                            for _ in range(p - 1)])
        values = np.column_stack([rng.standard_normal(n), np.ones(n), X[:, -1] * rng.standard_normal(levels)[codes]])
        t = term(codes, X)
        blocks, right = D._level_cross_products(t, values)
        plain_blocks = np.zeros((levels, p, p))
        np.add.at(plain_blocks, codes, X[:, :, None] * X[:, None, :])
        assert same_bits(blocks, plain_blocks)
        assert same_bits(D._project_off(values, t), projected_by_add_at(values, t))
    # a level with x = 0 (a zero block), and blocks outside the range of the 1 x 1 shortcut
    for X in (np.where(codes == 2, 0.0, 1.0)[:, None], np.full((n, 1), 1e-60), np.full((n, 1), 1e60)):
        t = term(codes, X)
        assert same_bits(D._project_off(values, t), projected_by_add_at(values, t))


@pytest.mark.parametrize("n", [4, 40_000])
def test_an_overflowing_level_sum_warns_as_add_at_does(n):
    t = term(np.arange(n) // (n // 2), np.ones((n, 1)))
    values = np.where(np.arange(n) < n // 2, 1e308, 1.0)[:, None]
    with pytest.warns(RuntimeWarning, match="overflow"):
        _, right = D._level_cross_products(t, values)
    assert np.isinf(right[0, 0, 0]) and right[1, 0, 0] == n // 2


def near_exact_cases():
    """(target, regressors, threshold) around the boundary of an exact fit, in several scales."""
    rng = np.random.default_rng(11)
    for n in (20, 120, 2500, 6000):
        g = rng.integers(0, max(2, n // 40), n)
        x, w = rng.standard_normal(n), rng.standard_normal(n)
        ones = np.ones(n)
        noise = 1e-16 * rng.standard_normal((n, 3))  # what an exact projection leaves of a column
        for delta in (0.0, 1e-13, 1e-11, 1e-10, 3e-10, 1e-9, 3e-9, 1e-8, 1e-6, 1e-3, 1.0):
            for X, y in [
                (np.column_stack([ones, x]), 2 + 3 * x + delta * w),
                (np.column_stack([ones, 1e8 * x, 1e-8 * w]), 1e6 + x + delta * w),
                (np.column_stack([ones, x, x + 1e-7 * w]), 5 * x + delta * w),
                (x[:, None], 3 * x + delta * w),
                (ones[:, None], 1e6 + delta * w),  # one column, and a mean far above the spread
                (ones[:, None], 1e6 + 1e-3 * delta * w),
                (noise, delta * w + 1e-16 * noise[:, 0]),
                (np.column_stack([noise, np.zeros(n)]), delta * w),
                (np.zeros((n, 2)), delta * w),
                (np.column_stack([ones, g.astype(float)]), g + delta * w),
                (1e120 * np.column_stack([ones, x]), 1e-120 * (x + delta * w)),
            ]:
                spread = np.linalg.norm(y - y.mean())
                yield y, X, D.RESIDUAL_TOLERANCE * spread


def test_the_cheap_residual_test_never_accepts_a_fit_that_lstsq_finds_exact():
    accepted = refused = 0
    for y, X, threshold in near_exact_cases():
        exact = residual_by_lstsq(y, X)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # and it warns of nothing
            clear = D._clearly_above(y, X, threshold)
        if clear:
            assert exact > threshold
            accepted += 1
        refused += exact <= threshold
        assert D._residual(y, X) == exact
    assert accepted > 50 and refused > 20  # both sides of the boundary were tried, and the test decided many


def test_the_cheap_residual_test_leaves_small_and_doubtful_cases_to_lstsq():
    rng = np.random.default_rng(5)
    x = rng.standard_normal(50)
    assert not D._clearly_above(x, np.column_stack([np.ones(50), x**2]), 1e-9)  # small: lstsq is as cheap
    assert D._clearly_above(x, np.ones((50, 1)), 1e-9)  # but one column is done in scalars
    assert D._clearly_above(x, np.zeros((50, 1)), 1e-9) and not D._clearly_above(x, np.zeros((50, 1)), 10.0)
    assert not D._clearly_above(x, np.full((50, 1), 1e-170), 1e-9)  # its square underflows
    x = rng.standard_normal(5000)
    X = np.column_stack([np.ones(5000), x])
    assert D._clearly_above(x**2, X, 1e-9)
    assert not D._clearly_above(x**2, np.column_stack([X, x + 1e-12]), 1e-9)  # ill-conditioned X
    assert not D._clearly_above(1e-9 * x + 1e6, X[:, :1], 1e-9 * 1e6)  # the residual near the threshold
    assert not D._clearly_above(x, np.column_stack([X, 1e-170 * x]), 1e-9)  # a column that underflows
    assert not D._clearly_above(1e200 * x, X, 1e-9)  # overflow


@pytest.mark.parametrize("n, per_level", [(60, 6), (3000, 50)])
@pytest.mark.parametrize("delta", [0.0, 1e-10, 1e-9, 3e-9, 1e-8, 1e-6])
def test_exact_fits_are_refused_as_before(n, per_level, delta):
    rng = np.random.default_rng(n)
    g = np.repeat(np.arange(n // per_level), per_level)
    x, w = rng.standard_normal(n), rng.standard_normal(n)
    u = rng.standard_normal(n // per_level)[g]
    data = pd.DataFrame({"x": x, "g": [f"g{k}" for k in g], "s": (g % 2).astype(float)})
    for formula, y in [("y ~ x + (1 | g)", 2 + 3 * x + delta * w), ("y ~ x + (1 | g)", u + x + delta * w),
                       ("y ~ x * s + (x | g)", u * x + g % 2 + delta * w), ("y ~ 1 + (1 | g)", u + delta * w)]:
        design = D.build_design(parse_formula(formula), data.assign(y=y), check_response=False)
        spread = np.linalg.norm(design.y - design.y.mean())
        threshold = D.RESIDUAL_TOLERANCE * spread
        both = np.column_stack([design.y, design.X])
        expected = residual_by_lstsq(design.y, design.X) <= threshold or any(
            residual_by_lstsq(p[:, 0], p[:, 1:]) <= threshold
            for p in (projected_by_add_at(both, t) for t in design.terms))
        try:
            D.build_design(parse_formula(formula), data.assign(y=y))
            refused = False
        except DataError as error:
            assert "exactly" in str(error)
            refused = True
        assert refused == expected


def test_the_columns_read_with_the_model_frame_are_its_columns():
    data = pd.DataFrame({"y": [1.0, 2.0, 3.0, 4.0], "x": [0.5, 1.5, 2.5, 3.5], "s": ["b", "a", "b", "a"],
                         "c": pd.Categorical(["u", "v", "u", "v"], categories=["w", "v", "u"]),
                         "I": pd.array([1, 2, 3, 4], dtype="Int64"), "g": ["p", "q", "p", "q"], "other": 0})
    frame, complete, read = model_frame_columns(data, ["y", "x", "s", "c", "I"], groups=["g"], stacklevel=1)
    assert list(read) == list(frame.columns) == ["y", "x", "s", "c", "I", "g"] and complete.all()
    for name in frame.columns:
        pd.testing.assert_series_equal(read[name], frame[name])
    assert list(read["c"].cat.categories) == ["v", "u"] and read["I"].dtype == float
    rhs = parse_plain("x + s * c + I")
    fast, plain = plain_columns(rhs, frame, read=read), plain_columns(rhs, frame)
    assert same_bits(fast[0], plain[0]) and fast[1] == plain[1]
    assert same_bits(plain_response("y", np.log, read), plain_response("y", np.log, frame))
    fast, plain = D.interaction(read, ("g", "s")), D.interaction(frame, ("g", "s"))
    assert same_bits(fast[0], plain[0]) and fast[1:3] == plain[1:3] and same_bits(fast[3], plain[3])


def canonical_theta_by_templates(theta, design):
    out = np.array(theta, dtype=float, ndmin=1)
    for t, s in zip(design.terms, design.theta_slices):
        T = t.template(out[s])
        out[s] = (T * np.where(np.diag(T) < 0, -1.0, 1.0))[t.lower]
    return out + 0.0


def lambda_index_by_blocks(design):
    rows, cols, which = [], [], []
    offset = 0
    for t, s in zip(design.terms, design.theta_slices):
        r, c = t.lower
        base = offset + np.arange(t.n_levels)[:, None] * t.p
        rows.append((base + r).ravel())
        cols.append((base + c).ravel())
        which.append(np.tile(np.arange(s.start, s.stop), t.n_levels))
        offset += t.n_levels * t.p
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(which)


def test_scalar_terms_in_canonical_theta_and_lambda_index():
    rng = np.random.default_rng(4)
    g = np.repeat(np.arange(12), 10)
    data = pd.DataFrame({"y": rng.standard_normal(120), "x": rng.standard_normal(120), "g": g, "h": g % 5,
                         "k": rng.integers(0, 7, 120)})
    design = D.build_design(parse_formula("y ~ x + (1 | g) + (x | h) + (0 + x | k)"), data)
    assert [t.p for t in design.terms] == [1, 1, 2]  # in decreasing order of levels
    assert all(same_bits(a, b) for a, b in zip(design.lambda_index, lambda_index_by_blocks(design)))
    assert design.q == sum(t.n_levels * t.p for t in design.terms)
    for theta in ([-0.0, 1.0, -2.0, 0.5, -0.0], [1.5, -1.0, 0.0, -0.25, 3.0], rng.standard_normal(5)):
        assert same_bits(D.canonical_theta(theta, design), canonical_theta_by_templates(theta, design))


def test_an_intercept_term_has_scale_one_as_the_mean_of_its_squares_says():
    for n in (2, 7, 1000, 100_003):
        ones = np.ones((n, 1))
        rms = np.sqrt(np.mean(ones**2, axis=0))
        assert same_bits(2.0 ** np.round(-np.log2(np.where(rms > 0, rms, 1.0))), np.ones(1))
    rng = np.random.default_rng(8)
    data = pd.DataFrame({"y": rng.standard_normal(90), "x": 30 * rng.standard_normal(90), "g": np.arange(90) % 9,
                         "h": np.arange(90) % 4})
    design = D.build_design(parse_formula("y ~ x + (1 | g) + (x | h)"), data)
    rms = [np.sqrt(np.mean(t.X**2, axis=0))[t.lower[0]] for t in design.terms]
    expected = np.concatenate([2.0 ** np.round(-np.log2(np.where(r > 0, r, 1.0))) for r in rms])
    assert same_bits(design.theta_scale, expected) and design.theta_scale[0] == 1.0
