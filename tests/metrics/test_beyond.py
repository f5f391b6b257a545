"""Beyond-accuracy metrics on tiny examples worked out by hand."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from tastebud.errors import InvalidInputError
from tastebud.metrics import (
    average_popularity,
    catalog_coverage,
    gini_index,
    group_gap,
    intra_list_diversity,
    novelty,
    serendipity,
    user_coverage,
)

# -- coverage ---------------------------------------------------------------------------------


def test_catalog_coverage() -> None:
    rec = np.array([[0, 1, -1], [1, 2, 3]])
    # k=2: {0, 1} | {1, 2} = 3 distinct of 10
    assert catalog_coverage(rec, 10, 2) == pytest.approx(3 / 10)
    # k=3: {0, 1} | {1, 2, 3} = 4 of 10; k past the list width changes nothing
    assert catalog_coverage(rec, 10, 3) == pytest.approx(4 / 10)
    assert catalog_coverage(rec, 10, 50) == pytest.approx(4 / 10)
    assert catalog_coverage(np.full((2, 3), -1), 10, 3) == 0.0


def test_user_coverage() -> None:
    rec = np.array([[0, 1], [-1, -1], [2, -1]])
    # lists with >= 1 valid item: rows 0 and 2 of 3; with >= 2: row 0
    assert user_coverage(rec, 2) == pytest.approx(2 / 3)
    assert user_coverage(rec, 2, min_items=2) == pytest.approx(1 / 3)
    # k=1: row 0 has [0], row 2 has [2]
    assert user_coverage(rec, 1) == pytest.approx(2 / 3)
    with pytest.raises(InvalidInputError, match="min_items"):
        user_coverage(rec, 2, min_items=3)
    with pytest.raises(InvalidInputError, match="min_items"):
        user_coverage(rec, 2, min_items=0)


# -- intra-list diversity ---------------------------------------------------------------------

# item 0 = x axis, item 1 = y axis (orthogonal), item 2 = 2 * x (same direction as 0),
# item 3 = zero vector, item 4 = -x (opposite of 0)
FEATURES = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 0.0], [-1.0, 0.0]])


@pytest.mark.parametrize("features", [FEATURES, sp.csr_matrix(FEATURES)])
def test_intra_list_diversity(features: object) -> None:
    rec = np.array(
        [
            [0, 1, -1],  # orthogonal: 1 - 0 = 1
            [0, 2, -1],  # same direction: 1 - 1 = 0
            [0, 1, 2],  # pairs (0,1): 1, (0,2): 0, (1,2): 1 -> 2/3
            [0, 3, -1],  # zero vector has cosine 0 with everything: 1
            [0, 4, -1],  # opposite: 1 - (-1) = 2
            [0, -1, -1],  # one valid item: NaN
            [1, 1, -1],  # the repeat counts once: one item -> NaN
        ]
    )
    np.testing.assert_allclose(
        intra_list_diversity(rec, features, 3),
        [1.0, 0.0, 2 / 3, 1.0, 2.0, np.nan, np.nan],
        atol=1e-12,
    )
    # k = 2 on row 2 keeps only (0, 1): 1
    np.testing.assert_allclose(intra_list_diversity(rec[2:3], features, 2), [1.0])


def test_intra_list_diversity_matches_pairwise_loop() -> None:
    rng = np.random.default_rng(3)
    feats = rng.normal(size=(25, 4))
    feats[5] = 0.0
    rec = np.array([rng.permutation(25)[:6] for _ in range(30)])
    rec[::4, 4:] = -1
    got = intra_list_diversity(rec, feats, 6)
    for u in range(30):
        items = [i for i in rec[u] if i >= 0]
        dists = []
        for a in range(len(items)):
            for b in range(a + 1, len(items)):
                fa, fb = feats[items[a]], feats[items[b]]
                na, nb = np.linalg.norm(fa), np.linalg.norm(fb)
                cos = 0.0 if na == 0 or nb == 0 else float(fa @ fb) / (na * nb)
                dists.append(1 - cos)
        assert got[u] == pytest.approx(sum(dists) / len(dists), abs=1e-12)


def test_intra_list_diversity_errors() -> None:
    with pytest.raises(InvalidInputError, match="item_features"):
        intra_list_diversity(np.array([[0, 5]]), FEATURES, 2)  # item 5 has no row
    bad = FEATURES.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InvalidInputError, match="non-finite"):
        intra_list_diversity(np.array([[0, 1]]), bad, 2)
    with pytest.raises(InvalidInputError, match="2-D"):
        intra_list_diversity(np.array([[0, 1]]), FEATURES[0], 2)


# -- novelty and popularity -------------------------------------------------------------------

# counts of 20 training users: p = 10/20, 5/20, max(0, 1)/20, 20/20
POPULARITY = np.array([10, 5, 0, 20])


def test_novelty() -> None:
    rec = np.array([[0, 1], [2, 3], [-1, -1], [3, -1]])
    # -log2(1/2) = 1 and -log2(1/4) = 2 -> 1.5; -log2(1/20) = log2(20) and -log2(1) = 0;
    # empty -> NaN; only item 3 -> 0
    np.testing.assert_allclose(
        novelty(rec, POPULARITY, 20, 2), [1.5, math.log2(20) / 2, np.nan, 0.0]
    )
    # k = 1 reads only the first column
    np.testing.assert_allclose(novelty(rec, POPULARITY, 20, 1), [1.0, math.log2(20), np.nan, 0.0])


def test_average_popularity() -> None:
    rec = np.array([[0, 1], [2, 3], [-1, -1], [3, -1]])
    # (10 + 5) / 2; (0 + 20) / 2; NaN; 20
    np.testing.assert_allclose(average_popularity(rec, POPULARITY, 2), [7.5, 10.0, np.nan, 20.0])


@pytest.mark.parametrize("fn", ["novelty", "average_popularity"])
def test_popularity_errors(fn: str) -> None:
    def call(rec: np.ndarray, pop: Any) -> object:
        if fn == "novelty":
            return novelty(rec, pop, 20, 2)
        return average_popularity(rec, pop, 2)

    with pytest.raises(InvalidInputError, match="covers only"):
        call(np.array([[0, 4]]), POPULARITY)
    with pytest.raises(InvalidInputError, match="non-negative"):
        call(np.array([[0, 1]]), np.array([1.0, -1.0]))
    with pytest.raises(InvalidInputError, match="non-negative"):
        call(np.array([[0, 1]]), np.array([1.0, np.nan]))
    with pytest.raises(InvalidInputError, match="1-D"):
        call(np.array([[0, 1]]), POPULARITY[None, :])


def test_novelty_needs_positive_user_count() -> None:
    with pytest.raises(InvalidInputError, match="n_users"):
        novelty(np.array([[0]]), POPULARITY, 0, 1)


# -- serendipity ------------------------------------------------------------------------------


def test_serendipity() -> None:
    rec = np.array([[0, 1, 3], [0, 1, 2], [4, 5, -1]])
    baseline = np.array([[1, 5, 6], [0, 1, 2], [4, -1, -1]])
    rel = sp.csr_matrix((np.ones(4), ([0, 0, 0, 2], [0, 1, 2, 4])), shape=(3, 8))
    # user 0: relevant {0, 1, 2}; listed and relevant: 0, 1; item 1 is in the baseline -> 1/3
    # user 1: no relevant item -> NaN; user 2: item 4 relevant but expected (baseline) -> 0
    np.testing.assert_allclose(serendipity(rec, rel, baseline, 3), [1 / 3, np.nan, 0.0])
    # k = 1: user 0 top [0], baseline top [1] -> 1/1
    np.testing.assert_allclose(serendipity(rec, rel, baseline, 1), [1.0, np.nan, 0.0])
    # baseline narrower than k: its missing positions expect nothing
    np.testing.assert_allclose(serendipity(rec, rel, baseline[:, :1], 3), [1 / 3, np.nan, 0.0])
    with pytest.raises(InvalidInputError, match="rows"):
        serendipity(rec, rel, baseline[:2], 3)


# -- Gini -------------------------------------------------------------------------------------


def test_gini_index() -> None:
    # one item for everybody: x = [0, 0, 0, 3] -> (2*4 - 4 - 1) * 3 / (4 * 3) = 3/4 = (n-1)/n
    assert gini_index(np.array([[0], [0], [0]]), 4, 1) == pytest.approx(3 / 4)
    # each item once: perfectly even -> 0
    assert gini_index(np.array([[0], [1], [2], [3]]), 4, 1) == pytest.approx(0.0)
    # counts item0: 1, item1: 2, item2: 1, item3: 0 -> sorted [0, 1, 1, 2], weights 2i-5 =
    # -3, -1, 1, 3: (0 - 1 + 1 + 6) / (4 * 4) = 6/16
    assert gini_index(np.array([[0, 1], [1, 2]]), 4, 2) == pytest.approx(6 / 16)
    assert math.isnan(gini_index(np.full((2, 2), -1), 4, 2))
    with pytest.raises(InvalidInputError, match="item index"):
        gini_index(np.array([[0, 4]]), 4, 2)
    with pytest.raises(InvalidInputError, match="n_items"):
        gini_index(np.array([[0]]), 0, 1)


# -- fairness ---------------------------------------------------------------------------------


def test_group_gap() -> None:
    values = np.array([1.0, 0.5, np.nan, 0.2, 0.4])
    groups = ["a", "a", "a", "b", "b"]
    # a: mean(1, 0.5) = 0.75 (NaN ignored); b: mean(0.2, 0.4) = 0.3
    out = group_gap(values, groups)
    assert out["by_group"] == pytest.approx({"a": 0.75, "b": 0.3})
    assert out["gap"] == pytest.approx(0.45)
    assert out["ratio"] == pytest.approx(0.3 / 0.75)
    # numeric labels, a group whose values are all NaN is dropped
    out = group_gap([0.0, 0.0, np.nan], np.array([1, 2, 3]))
    assert set(out["by_group"]) == {1, 2}
    assert out["gap"] == 0.0
    assert math.isnan(out["ratio"])  # max mean is 0


def test_group_gap_errors() -> None:
    with pytest.raises(InvalidInputError, match="same length"):
        group_gap([1.0, 2.0], ["a"])
    with pytest.raises(InvalidInputError, match="at least 2 groups"):
        group_gap([1.0, 2.0], ["a", "a"])
    with pytest.raises(InvalidInputError, match="at least 2 groups"):
        group_gap([1.0, np.nan], ["a", "b"])
    with pytest.raises(InvalidInputError, match="infinite"):
        group_gap([1.0, np.inf], ["a", "b"])


# -- shared input checks ----------------------------------------------------------------------


def test_bad_recommendations_and_k() -> None:
    with pytest.raises(InvalidInputError, match="k must be"):
        catalog_coverage(np.array([[0]]), 4, 0)
    with pytest.raises(InvalidInputError, match="2-D"):
        catalog_coverage(np.array([0, 1]), 4, 1)
    with pytest.raises(InvalidInputError, match="no rows"):
        user_coverage(np.zeros((0, 2), dtype=int), 2)
    with pytest.raises(InvalidInputError, match="integer"):
        novelty(np.array([[0.0, 1.0]]), POPULARITY, 20, 2)
