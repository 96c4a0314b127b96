"""lmmnotes.simulate.true_theta: a known truth in theta's layout.

Expected values: lme4's own (theta, VarCorr, sigma) of each reference fit in
tests/reference/lme4_fits.json, where lme4 computed theta, and closed-form Cholesky factors.
"""

import numpy as np
import pandas as pd
import pytest

from lmmnotes import DataError, lmer
from lmmnotes.simulate import true_theta

from .conftest import REFERENCE, book_data


def lme4_covariances(ref) -> list[tuple[str, np.ndarray]]:
    """(grouping factor, covariance) per random-effects term, in lme4's VarCorr order."""
    vc = pd.DataFrame(ref["varcorr"])
    vc = vc[vc["grp"] != "Residual"]
    out = []
    for grp, rows in vc.groupby("grp", sort=False):
        names = list(dict.fromkeys(rows.loc[rows["var2"] == "", "var1"]))
        S = np.zeros((len(names), len(names)))
        for _, r in rows.iterrows():
            i = names.index(r["var1"])
            j = i if r["var2"] == "" else names.index(r["var2"])
            S[i, j] = S[j, i] = r["vcov"]
        out.append((grp, S))
    return out


@pytest.fixture(scope="module")
def fits():
    return {k: lmer(m["formula"], book_data(m["data"]), reml=m["reml"])
            for k, m in REFERENCE["models"].items() if k in ("psid_reml", "eggs_reml", "hsb_ml",
                                                             "psid_uncorrelated_reml")}


@pytest.mark.parametrize("name", ["psid_reml", "eggs_reml", "hsb_ml"])
def test_lme4_varcorr_gives_lme4_theta(fits, name):
    """A vector term, three scalar terms in another order than lme4 prints them, and a fit
    whose correlation is exactly 1 (lme4's theta has a 0 on the diagonal)."""
    ref = REFERENCE["models"][name]
    covariances = dict(lme4_covariances(ref))
    theta = true_theta(fits[name], covariances, ref["sigma"])
    np.testing.assert_allclose(theta, np.atleast_1d(ref["theta"]), rtol=1e-6, atol=1e-9)


def test_terms_sharing_a_factor_take_a_list(fits):
    ref = REFERENCE["models"]["psid_uncorrelated_reml"]
    fit = fits["psid_uncorrelated_reml"]
    variances = [S for _, S in lme4_covariances(ref)]  # (Intercept), then cyear: the terms' order
    np.testing.assert_allclose(true_theta(fit, variances, ref["sigma"]), ref["theta"], rtol=1e-6)
    with pytest.raises(DataError, match=r"missing \['person.1'\]"):
        true_theta(fit, {"person": 1.0}, 1.0)


def test_terms_sharing_a_factor_take_the_labels_of_covariances(fits):
    """lme4 labels the two terms of (cyear || person) person and person.1, as fit.covariances()
    keys them: a dict (or Series) with those keys is unambiguous."""
    ref = REFERENCE["models"]["psid_uncorrelated_reml"]
    fit = fits["psid_uncorrelated_reml"]
    covariances = dict(lme4_covariances(ref))
    assert list(covariances) == list(fit.covariances()) == ["person", "person.1"]
    np.testing.assert_allclose(true_theta(fit, covariances, ref["sigma"]), ref["theta"], rtol=1e-6)
    np.testing.assert_allclose(true_theta(fit, pd.Series(covariances), ref["sigma"]), ref["theta"], rtol=1e-6)


def test_a_data_frame_is_read_by_its_labels(fits):
    """lme4's covariance of psid_reml with its rows and columns reversed gives lme4's theta."""
    ref = REFERENCE["models"]["psid_reml"]
    fit = fits["psid_reml"]
    (group, S), = lme4_covariances(ref)
    names = ["(Intercept)", "cyear"]
    frame = pd.DataFrame(S, index=names, columns=names).iloc[::-1, ::-1]
    np.testing.assert_allclose(true_theta(fit, {group: frame}, ref["sigma"]), ref["theta"], rtol=1e-6)
    np.testing.assert_allclose(true_theta(fit, pd.Series({group: frame}), ref["sigma"]), ref["theta"],
                               rtol=1e-6)
    with pytest.raises(DataError, match=r"labelled by the term's columns \['\(Intercept\)', 'cyear'\]"):
        true_theta(fit, {group: frame.rename(columns={"cyear": "year"})}, ref["sigma"])


def test_closed_form_and_singular_covariance(fits):
    fit = fits["psid_reml"]  # columns (Intercept), cyear
    # [[4, 2], [2, 5]] / 4 = L L' with L = [[1, 0], [1/2, 1]]
    np.testing.assert_allclose(true_theta(fit.design, {"person": [[4.0, 2.0], [2.0, 5.0]]}, 2.0),
                               [1.0, 0.5, 1.0])
    # correlation -1: [[4, -2], [-2, 1]] = L L' with L = [[2, 0], [-1, 0]]
    theta = true_theta(fit, {"person": np.array([[4.0, -2.0], [-2.0, 1.0]])}, 1.0)
    np.testing.assert_allclose(theta, [2.0, -1.0, 0.0], atol=1e-7)
    assert not np.signbit(theta[2])  # +0.0, as canonical_theta writes it
    # a zero slope variance
    np.testing.assert_allclose(true_theta(fit, {"person": np.diag([9.0, 0.0])}, 3.0), [1.0, 0.0, 0.0],
                               atol=1e-12)


def test_nothing_modified_and_bad_input(fits):
    fit = fits["psid_reml"]
    given = pd.DataFrame([[4.0, 2.0], [2.0, 5.0]])
    kept = given.copy()
    true_theta(fit, {"person": given}, 2.0)
    pd.testing.assert_frame_equal(given, kept)
    with pytest.raises(DataError, match="2 x 2"):
        true_theta(fit, {"person": 1.0}, 1.0)
    with pytest.raises(DataError, match="positive semi-definite"):
        true_theta(fit, {"person": [[1.0, 2.0], [2.0, 1.0]]}, 1.0)
    with pytest.raises(DataError, match="missing"):
        true_theta(fit, {"school": np.eye(2)}, 1.0)
    with pytest.raises(DataError, match="sigma"):
        true_theta(fit, {"person": np.eye(2)}, 0.0)
    with pytest.raises(DataError, match="1 random-effects terms"):
        true_theta(fit, [np.eye(2), np.eye(2)], 1.0)
    with pytest.raises(DataError, match="fitted model or its design"):
        true_theta("psid", {"person": np.eye(2)}, 1.0)
    with pytest.raises(DataError, match="covariances must be a dict"):
        true_theta(fit, 1.0, 1.0)
    for bad in ("1", None):
        with pytest.raises(DataError, match="sigma must be a number"):
            true_theta(fit, {"person": np.eye(2)}, bad)
    with pytest.raises(DataError, match="matrix of numbers"):
        true_theta(fit, {"person": "identity"}, 1.0)
