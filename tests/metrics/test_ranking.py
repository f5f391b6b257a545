"""Ranking metrics against values worked out by hand and a plain-Python reference."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from tastebud.errors import InvalidInputError
from tastebud.metrics import (
    RANKING_METRICS,
    auc_at_k,
    average_precision_at_k,
    f1_at_k,
    hit_rate_at_k,
    hits_matrix,
    metric_label,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    reciprocal_rank_at_k,
)

N_ITEMS = 10


def relevance(rows: list[dict[int, float]], n_items: int = N_ITEMS) -> sp.csr_matrix:
    """CSR relevance matrix from one ``{item: gain}`` dict per user."""
    r = [u for u, row in enumerate(rows) for _ in row]
    c = [i for row in rows for i in row]
    v = [g for row in rows for g in row.values()]
    return sp.csr_matrix((v, (r, c)), shape=(len(rows), n_items), dtype=np.float64)


def binary(rows: list[set[int]], n_items: int = N_ITEMS) -> sp.csr_matrix:
    return relevance([dict.fromkeys(row, 1.0) for row in rows], n_items)


# user 0: hits at positions 1 and 3, R = 4 (items 7, 8 never recommended)
# user 1: short list (-1 padded), hit at position 2, R = 1
# user 2: no hit, R = 2
# user 3: no relevant item -> NaN everywhere
REC = np.array(
    [
        [1, 2, 3, 4, 5],
        [6, 0, -1, -1, -1],
        [9, 8, 7, 6, 5],
        [1, 2, 3, 4, 5],
    ]
)
REL = binary([{1, 3, 7, 8}, {0}, {0, 1}, set()])
K = 5
L2 = math.log2


def test_hits_matrix() -> None:
    expected = np.array(
        [
            [True, False, True, False, False],
            [False, True, False, False, False],
            [False] * 5,
            [False] * 5,
        ]
    )
    hits = hits_matrix(REC, REL, K)
    assert hits.dtype == np.bool_
    np.testing.assert_array_equal(hits, expected)
    # k past the list length: extra columns are misses
    np.testing.assert_array_equal(hits_matrix(REC, REL, 7)[:, 5:], np.zeros((4, 2), bool))
    np.testing.assert_array_equal(hits_matrix(REC, REL, 2), expected[:, :2])


def test_precision() -> None:
    # 2 hits / 5; 1 hit / 5 (short list still divides by k); 0 / 5; R = 0 -> NaN
    np.testing.assert_allclose(precision_at_k(REC, REL, K), [2 / 5, 1 / 5, 0.0, np.nan])


def test_recall() -> None:
    # 2 of R=4; 1 of R=1; 0 of R=2; R=0 -> NaN
    np.testing.assert_allclose(recall_at_k(REC, REL, K), [2 / 4, 1.0, 0.0, np.nan])


def test_f1() -> None:
    # user 0: P=0.4, R=0.5 -> 2*0.4*0.5/0.9 = 4/9; user 1: P=0.2, R=1 -> 0.4/1.2 = 1/3
    np.testing.assert_allclose(f1_at_k(REC, REL, K), [4 / 9, 1 / 3, 0.0, np.nan])


def test_average_precision() -> None:
    # user 0: hits at 1 and 3, R=4: AP = (1/1 + 2/3) / min(4, 5) = 5/12
    # user 1: hit at 2, R=1: AP = (1/2) / min(1, 5) = 1/2
    np.testing.assert_allclose(average_precision_at_k(REC, REL, K), [5 / 12, 1 / 2, 0.0, np.nan])


def test_ndcg_binary() -> None:
    # user 0: DCG = 1/log2(2) + 1/log2(4) = 1.5; IDCG over min(4, 5) = 4 positions
    idcg0 = 1 + 1 / L2(3) + 1 / L2(4) + 1 / L2(5)
    # user 1: DCG = 1/log2(3), IDCG = 1/log2(2) = 1
    np.testing.assert_allclose(ndcg_at_k(REC, REL, K), [1.5 / idcg0, 1 / L2(3), 0.0, np.nan])


def test_reciprocal_rank_and_hit_rate() -> None:
    # first hits at 1 and 2, none for user 2
    np.testing.assert_allclose(reciprocal_rank_at_k(REC, REL, K), [1.0, 0.5, 0.0, np.nan])
    np.testing.assert_allclose(hit_rate_at_k(REC, REL, K), [1.0, 1.0, 0.0, np.nan])
    # at k = 1 only user 0 has a hit
    np.testing.assert_allclose(reciprocal_rank_at_k(REC, REL, 1), [1.0, 0.0, 0.0, np.nan])
    np.testing.assert_allclose(hit_rate_at_k(REC, REL, 1), [1.0, 0.0, 0.0, np.nan])


def test_list_narrower_than_k() -> None:
    # a 3-column matrix scored at k=5: positions 4, 5 are misses
    rec = np.array([[1, 0, 3]])
    rel = binary([{0, 3, 9}])
    # hits at 2 and 3, R = 3
    np.testing.assert_allclose(precision_at_k(rec, rel, 5), [2 / 5])
    np.testing.assert_allclose(recall_at_k(rec, rel, 5), [2 / 3])
    # AP = (1/2 + 2/3) / min(3, 5)
    np.testing.assert_allclose(average_precision_at_k(rec, rel, 5), [(1 / 2 + 2 / 3) / 3])
    # DCG = 1/log2(3) + 1/log2(4); IDCG = 1 + 1/log2(3) + 1/log2(4)
    expected = (1 / L2(3) + 1 / 2) / (1 + 1 / L2(3) + 1 / 2)
    np.testing.assert_allclose(ndcg_at_k(rec, rel, 5), [expected])
    np.testing.assert_allclose(reciprocal_rank_at_k(rec, rel, 5), [1 / 2])


def test_more_relevant_than_k() -> None:
    # R = 6 > k = 3 and all three listed items relevant: MAP and NDCG normalize by min(R, k)
    rec = np.array([[1, 2, 3, 4], [1, 9, 2, 3]])
    rel = binary([{1, 2, 3, 4, 5, 6}, {1, 2, 3, 4, 5, 6}])
    # user 0: AP = (1/1 + 2/2 + 3/3) / 3 = 1; user 1: hits at 1 and 3: (1 + 2/3) / 3
    np.testing.assert_allclose(average_precision_at_k(rec, rel, 3), [1.0, (1 + 2 / 3) / 3])
    # user 1: DCG = 1 + 1/log2(4), IDCG = 1 + 1/log2(3) + 1/log2(4)
    idcg = 1 + 1 / L2(3) + 1 / 2
    np.testing.assert_allclose(ndcg_at_k(rec, rel, 3), [1.0, 1.5 / idcg])
    # recall still counts all 6
    np.testing.assert_allclose(recall_at_k(rec, rel, 3), [3 / 6, 2 / 6])


def test_ndcg_graded() -> None:
    rec = np.array([[1, 5, 0], [2, 1, 0], [4, 5, 6]])
    rel = relevance([{0: 3.0, 1: 1.0, 2: 2.0}, {0: 3.0, 1: 1.0, 2: 2.0}, {}])
    # user 0: DCG = 1/log2(2) + 0 + 3/log2(4) = 2.5; IDCG = 3 + 2/log2(3) + 1/log2(4)
    idcg3 = 3 + 2 / L2(3) + 1 / 2
    # user 1: gains 2, 1, 3: DCG = 2 + 1/log2(3) + 3/2
    dcg1 = 2 + 1 / L2(3) + 3 / 2
    np.testing.assert_allclose(
        ndcg_at_k(rec, rel, 3, graded=True), [2.5 / idcg3, dcg1 / idcg3, np.nan]
    )
    # k = 2: IDCG takes the top min(3, 2) gains 3, 2: 3 + 2/log2(3)
    idcg2 = 3 + 2 / L2(3)
    np.testing.assert_allclose(
        ndcg_at_k(rec, rel, 2, graded=True), [1 / idcg2, (2 + 1 / L2(3)) / idcg2, np.nan]
    )
    # binary NDCG of the same lists ignores the grades: user 0 DCG = 1 + 1/2
    idcg_bin = 1 + 1 / L2(3) + 1 / 2
    np.testing.assert_allclose(ndcg_at_k(rec, rel, 3), [1.5 / idcg_bin, 1.0, np.nan])


def test_non_positive_entries_are_not_relevant() -> None:
    # a stored 0 or negative value is not relevant and does not count in R
    rel = relevance([{0: 1.0, 1: 0.0, 2: -1.0}])
    rec = np.array([[1, 2, 0]])
    np.testing.assert_allclose(recall_at_k(rec, rel, 3), [1.0])  # R = 1, hit at 3
    np.testing.assert_allclose(precision_at_k(rec, rel, 3), [1 / 3])
    np.testing.assert_allclose(reciprocal_rank_at_k(rec, rel, 3), [1 / 3])


def test_repeated_item_counts_once() -> None:
    # item 1 at positions 1 and 2: the repeat is a miss; hits at 1 and 3
    rec = np.array([[1, 1, 2]])
    rel = binary([{1, 2}])
    np.testing.assert_allclose(precision_at_k(rec, rel, 3), [2 / 3])
    np.testing.assert_allclose(recall_at_k(rec, rel, 3), [1.0])
    # AP = (1/1 + 2/3) / min(2, 3)
    np.testing.assert_allclose(average_precision_at_k(rec, rel, 3), [(1 + 2 / 3) / 2])


def test_relevant_wider_than_catalog_and_dense_input() -> None:
    # an extra column (a relevant item the model cannot recommend) still counts in R
    rel = np.array([[1, 0, 0, 1]])
    rec = np.array([[0, 1, 2]])
    np.testing.assert_allclose(recall_at_k(rec, rel, 3), [1 / 2])
    np.testing.assert_allclose(recall_at_k(rec, sp.csr_matrix(rel), 3), [1 / 2])


def test_duplicate_sparse_entries_are_summed() -> None:
    # non-canonical CSR with item 2 stored twice (gains 1 + 2 = 3): R = 1, graded gain 3
    rel = sp.csr_matrix((np.array([1.0, 2.0]), np.array([2, 2]), np.array([0, 2])), shape=(1, 4))
    rec = np.array([[2, 0]])
    np.testing.assert_allclose(recall_at_k(rec, rel, 2), [1.0])
    np.testing.assert_allclose(ndcg_at_k(rec, rel, 2, graded=True), [1.0])


# -- AUC --------------------------------------------------------------------------------------


def test_auc_by_hand() -> None:
    rec = np.array(
        [
            [5, 0, 1, 2],
            [5, 0, 1, 2],
            [0, 1, 2, 3],
            [0, -1, -1, -1],
        ]
    )
    rel = binary([{0, 1}, set(), {0, 1}, {0, 3}])
    n_candidates = np.array([6, 6, 2, 5])
    # user 0, k=2: P=2, N=6-2=4. Top 2 = [5 (miss), 0 (hit)]: the hit at 2 has m=1 non-relevant
    #   above it -> beats N - 1 = 3. h=1, m_k=1: the missing relevant item ties with the
    #   N - m_k = 3 non-relevant items outside -> 0.5 * 1 * 3. AUC = (3 + 1.5) / (2 * 4)
    # user 1: P=0 -> NaN; user 2: N = 2 - 2 = 0 -> NaN
    # user 3: P=2, N=3; hit at 1 beats 3; padding is no item so m_k = 0; the other
    #   relevant item ties with 3: AUC = (3 + 0.5 * 1 * 3) / (2 * 3)
    np.testing.assert_allclose(
        auc_at_k(rec, rel, 2, n_candidates), [4.5 / 8, np.nan, np.nan, 4.5 / 6]
    )
    # k=3 for user 0: hits at 2 (m=1) and 3 (m=1): (3 + 3) / 8
    np.testing.assert_allclose(auc_at_k(rec[:1], rel[:1], 3, n_candidates[:1]), [6 / 8])


def test_auc_matches_sklearn_on_full_rankings() -> None:
    metrics_mod = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(7)
    n_users, n_items, n_excluded = 40, 60, 10
    rec = np.full((n_users, n_items), -1)
    rows: list[set[int]] = []
    expected = np.empty(n_users)
    for u in range(n_users):
        candidates = rng.permutation(n_items)[: n_items - n_excluded]  # ranking of candidates
        rec[u, : len(candidates)] = candidates
        n_rel = int(rng.integers(1, 20))
        chosen = set(rng.choice(candidates, size=n_rel, replace=False).tolist())
        rows.append(chosen)
        labels = np.array([int(i) in chosen for i in candidates])
        scores = -np.arange(len(candidates), dtype=float)  # earlier = higher score
        expected[u] = metrics_mod.roc_auc_score(labels, scores)
    rel = binary(rows, n_items)
    n_candidates = np.full(n_users, n_items - n_excluded)
    np.testing.assert_allclose(auc_at_k(rec, rel, n_items - n_excluded, n_candidates), expected)
    # k past the (padded) list changes nothing
    np.testing.assert_allclose(auc_at_k(rec, rel, n_items + 5, n_candidates), expected)


def test_auc_truncated_matches_sklearn_with_ties() -> None:
    # top-k then everything else tied at the bottom = sklearn with equal bottom scores
    metrics_mod = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(11)
    n_items, k = 30, 8
    ranking = rng.permutation(n_items)
    chosen = set(rng.choice(n_items, size=6, replace=False).tolist())
    labels = np.array([int(i) in chosen for i in ranking])
    scores = np.where(np.arange(n_items) < k, -np.arange(n_items, dtype=float), -float(k))
    expected = metrics_mod.roc_auc_score(labels, scores)
    got = auc_at_k(ranking[None, :k], binary([chosen], n_items), k, np.array([n_items]))
    np.testing.assert_allclose(got, [expected])


def test_auc_errors() -> None:
    rel = binary([{0}])
    with pytest.raises(InvalidInputError, match="n_candidates"):
        auc_at_k(np.array([[0, 1]]), rel, 2, np.array([5, 5]))
    with pytest.raises(InvalidInputError, match="n_candidates"):
        auc_at_k(np.array([[0, 1]]), rel, 2, np.array([np.nan]))
    with pytest.raises(InvalidInputError, match="n_candidates"):
        auc_at_k(np.array([[0, 1]]), rel, 2, np.array([2.5]))
    # 3 non-relevant items listed but only N = 3 - 1 = 2 non-relevant candidates
    with pytest.raises(InvalidInputError, match="non-relevant"):
        auc_at_k(np.array([[1, 2, 3, 0]]), rel, 4, np.array([3]))


# -- registry ---------------------------------------------------------------------------------


def test_registry_and_labels() -> None:
    assert set(RANKING_METRICS) == {
        "precision",
        "recall",
        "f1",
        "map",
        "ndcg",
        "mrr",
        "hit_rate",
        "auc",
    }
    assert RANKING_METRICS["map"] is average_precision_at_k
    labels = [metric_label(name, 10) for name in RANKING_METRICS]
    assert labels == [
        "Precision@10",
        "Recall@10",
        "F1@10",
        "MAP@10",
        "NDCG@10",
        "MRR@10",
        "HitRate@10",
        "AUC@10",
    ]
    assert metric_label("NDCG", 5) == "NDCG@5"
    with pytest.raises(InvalidInputError, match="unknown"):
        metric_label("ctr", 10)
    with pytest.raises(InvalidInputError):
        metric_label("ndcg", 0)


# -- errors -----------------------------------------------------------------------------------

PER_USER = [
    precision_at_k,
    recall_at_k,
    f1_at_k,
    average_precision_at_k,
    ndcg_at_k,
    reciprocal_rank_at_k,
    hit_rate_at_k,
    hits_matrix,
]


@pytest.mark.parametrize("fn", PER_USER)
@pytest.mark.parametrize("k", [0, -1, 2.5, True, "3", None])
def test_bad_k(fn: Callable[..., Any], k: object) -> None:
    with pytest.raises(InvalidInputError, match="k must be"):
        fn(REC, REL, k)


@pytest.mark.parametrize("fn", PER_USER)
def test_bad_inputs(fn: Callable[..., Any]) -> None:
    call = fn
    with pytest.raises(InvalidInputError, match="2-D"):
        call(np.array([1, 2, 3]), REL[:1], 3)
    with pytest.raises(InvalidInputError, match="integer"):
        call(REC.astype(float), REL, 3)
    with pytest.raises(InvalidInputError, match="rows"):
        call(REC[:2], REL, 3)
    with pytest.raises(InvalidInputError, match="no rows"):
        call(np.zeros((0, 3), dtype=int), REL[:0], 3)
    with pytest.raises(InvalidInputError, match="negative"):
        call(np.array([[0, -2]]), REL[:1], 2)
    with pytest.raises(InvalidInputError, match="item index"):
        call(np.array([[0, N_ITEMS]]), REL[:1], 2)
    bad = REL[:1].copy()
    bad.data[0] = np.nan
    with pytest.raises(InvalidInputError, match="non-finite"):
        call(np.array([[0, 1]]), bad, 2)
    with pytest.raises(InvalidInputError, match="2-D"):
        call(np.array([[0, 1]]), np.array([1, 0]), 2)


def test_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="k must be"):
        precision_at_k(REC, REL, 0)


# -- randomized cross-check against textbook loops --------------------------------------------


def reference(rec: list[int], rel: set[int], k: int) -> dict[str, float]:
    """Textbook definitions, one user at a time."""
    top = list(rec[:k])
    top += [-1] * (k - len(top))
    hits = [1 if i >= 0 and i in rel else 0 for i in top]
    r = len(rel)
    if r == 0:
        return dict.fromkeys(["precision", "recall", "ndcg", "map", "mrr", "hit_rate"], math.nan)
    n_hits = sum(hits)
    ap = 0.0
    seen = 0
    for pos, hit in enumerate(hits, start=1):
        if hit:
            seen += 1
            ap += seen / pos
    dcg = sum(hit / math.log2(pos + 1) for pos, hit in enumerate(hits, start=1))
    idcg = sum(1 / math.log2(pos + 1) for pos in range(1, min(r, k) + 1))
    first = next((pos for pos, hit in enumerate(hits, start=1) if hit), None)
    return {
        "precision": n_hits / k,
        "recall": n_hits / r,
        "ndcg": dcg / idcg,
        "map": ap / min(r, k),
        "mrr": 0.0 if first is None else 1 / first,
        "hit_rate": 1.0 if n_hits else 0.0,
    }


@pytest.mark.parametrize("k", [1, 5, 10, 15])
def test_random_cross_check(k: int) -> None:
    rng = np.random.default_rng(2024 + k)
    n_users, n_items, length = 200, 30, 12
    rec = np.full((n_users, length), -1)
    rows: list[set[int]] = []
    lists: list[list[int]] = []
    for u in range(n_users):
        n_listed = int(rng.integers(0, length + 1))
        items = rng.permutation(n_items)[:n_listed].tolist()
        rec[u, :n_listed] = items
        lists.append(items)
        rows.append(set(rng.choice(n_items, size=int(rng.integers(0, 9)), replace=False).tolist()))
    rel = binary(rows, n_items)
    assert any(len(r) == 0 for r in rows)  # some NaN rows are exercised
    for name in ["precision", "recall", "ndcg", "map", "mrr", "hit_rate"]:
        got = RANKING_METRICS[name](rec, rel, k)
        want = np.array([reference(lists[u], rows[u], k)[name] for u in range(n_users)])
        assert got.shape == (n_users,)
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=name)
