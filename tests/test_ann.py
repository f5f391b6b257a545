"""The vector index: approximate search agrees with exact search on data with a known answer."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tastebud.ann import VectorIndex, faiss_or_none
from tastebud.errors import InvalidInputError, TastebudError

needs_faiss = pytest.mark.skipif(faiss_or_none() is None, reason="faiss is not installed")


def clustered(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(20, d))
    return (centers[rng.integers(0, 20, n)] + 0.3 * rng.normal(size=(n, d))).astype(np.float32)


def test_exact_search_is_the_brute_force_answer():
    items = clustered(500)
    queries = clustered(30, seed=1)
    idx, scores = VectorIndex(items, backend="exact").search(queries, 7)
    brute = queries @ items.T
    expected = np.argsort(-brute, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(brute, expected, 1), rtol=1e-5)


def test_the_pruned_search_is_exact_and_scores_few_items_when_norms_are_skewed():
    """Power-law norms (a factor model's popular items): the answer equals brute force,
    found by scoring a small share of the items; with equal norms it still is exact."""
    rng = np.random.default_rng(0)
    n = 20_000
    directions = clustered(n, d=8)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    skewed = (directions * (1.0 / np.arange(1, n + 1) ** 0.8)[rng.permutation(n), None]).astype(
        np.float32
    )
    queries = clustered(40, d=8, seed=2)
    for items in (skewed, directions.astype(np.float32)):
        index = VectorIndex(items, backend="pruned")
        idx, scores = index.search(queries, 10)
        brute = queries @ items.T
        expected = np.argsort(-brute, axis=1, kind="stable")[:, :10]
        np.testing.assert_array_equal(idx, expected)
        np.testing.assert_allclose(scores, np.take_along_axis(brute, expected, 1), rtol=1e-5)
    assert VectorIndex(skewed, backend="pruned").scan_share(queries, 10) < 0.25
    assert VectorIndex(directions, backend="pruned").scan_share(queries, 10) > 0.9
    assert VectorIndex(skewed, backend="exact").scan_share(queries, 10) == 1.0
    short, _ = VectorIndex(skewed[:5], backend="pruned").search(queries[:2], 8)
    assert (short[:, 5:] == -1).all() and set(short[0, :5]) == set(range(5))


@needs_faiss
def test_the_inverted_file_finds_the_inner_product_neighbours_of_unnormalized_vectors():
    # norms differ a lot: nearest by L2 is not largest by inner product, so plain L2 cells
    # would answer wrongly -- the extra coordinate makes the two orders the same
    rng = np.random.default_rng(2)
    items = clustered(3_000) * rng.uniform(0.2, 3.0, size=(3_000, 1)).astype(np.float32)
    queries = clustered(50, seed=3)
    index = VectorIndex(items, backend="faiss", probes=16)
    assert index.backend == "faiss" and index.lists == 3_000 // 39  # capped by the size
    found, scores = index.search(queries, 20)
    exact, _ = VectorIndex(items, backend="exact").search(queries, 20)
    recall = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(found, exact, strict=True)])
    assert recall >= 0.95
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", queries, items[found]), rtol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-5).all()  # best first


@needs_faiss
def test_k_beyond_the_catalog_is_padded():
    index = VectorIndex(clustered(5), backend="faiss")
    idx, scores = index.search(clustered(2, seed=4), 8)
    assert (idx[:, :5] >= 0).all() and (idx[:, 5:] == -1).all()
    assert np.isnan(scores[:, 5:]).all()
    assert sorted(idx[0, :5].tolist()) == [0, 1, 2, 3, 4]


def test_auto_without_faiss_is_exact_and_faiss_without_it_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    assert VectorIndex(clustered(10), backend="auto").backend == "exact"
    with pytest.raises(TastebudError, match="faiss"):
        VectorIndex(clustered(10), backend="faiss")


@pytest.mark.parametrize(
    ("vectors", "kwargs", "message"),
    [
        (np.ones(5), {}, "2-d"),
        (np.array([[np.nan, 1.0]]), {}, "finite"),
        (np.ones((3, 2)), {"backend": "annoy"}, "backend"),
        (np.ones((3, 2)), {"probes": 0}, "probes"),
    ],
)
def test_bad_input_is_a_clear_error(vectors, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        VectorIndex(vectors, **kwargs)


def test_queries_must_match_the_dimensions():
    with pytest.raises(InvalidInputError, match="dimensions"):
        VectorIndex(clustered(10), backend="exact").search(np.ones((1, 3)), 2)
