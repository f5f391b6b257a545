"""Retrieval through a vector index for the factor models (ALS, BPR, SVD, SVD++): the
search gives the exact answers where it scans every cell, scores on the model's own scale
(item biases in the searched vectors, user offsets added back), and the fold-in the service
uses answers with the search instead of a dense row."""

from __future__ import annotations

import numpy as np
import pytest

from tastebud.ann import faiss_or_none
from tastebud.data.synthetic import synthetic
from tastebud.errors import InvalidInputError
from tastebud.models import create, load

pytestmark = pytest.mark.skipif(faiss_or_none() is None, reason="faiss is not installed")

# 1,200 items: 30 cells of the inverted file, all of them within the 32 probes -- an exact scan
DATA = synthetic(n_users=400, n_items=1_200, n_interactions=12_000, seed=3)
MODELS = {
    "als": {"reg": 10.0, "n_iterations": 5},
    "bpr": {"n_epochs": 20},
    "svd": {"n_epochs": 8},
    "svdpp": {"n_epochs": 3},
    "feature-mf": {"epochs": 5},
}


@pytest.fixture(scope="module", params=list(MODELS))
def pair(request: pytest.FixtureRequest):
    exact = create(request.param, index="exact", **MODELS[request.param]).fit(DATA)
    searched = create(request.param, index="ann", **MODELS[request.param]).fit(DATA)
    return exact, searched


def test_the_search_gives_the_exact_lists_and_scores(pair) -> None:
    exact, searched = pair
    assert searched.vector_index().backend in ("faiss", "pruned")
    assert exact.vector_index().backend == "exact"
    users = np.arange(0, 400, 7)
    want_items, want_scores = exact.recommend_indices(users, 10, exclude=exact.seen_)
    got_items, got_scores = searched.recommend_indices(users, 10, exclude=searched.seen_)
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-4, atol=1e-4)
    same = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got_items, want_items, strict=True)])
    assert same >= 0.99  # float32 ties may swap an item at the cut
    for row, user in enumerate(users):
        assert not set(got_items[row]) & set(exact.seen_[user].indices)  # seen items left out


def test_the_fold_in_answers_with_the_search(pair) -> None:
    exact, searched = pair
    user = int(np.flatnonzero(np.diff(exact.seen_.indptr) >= 5)[0])
    history = exact.seen_[user]
    values = DATA.matrix("rating")[user] if exact.needs_ratings else history
    want = exact.fold_in(values, exclude=history.indices)
    got = searched.fold_in(values, exclude=history.indices)
    assert got._retriever is not None and want._retriever is None
    (want_top, want_val), (got_top, got_val) = want.top(10), got.top(10)
    np.testing.assert_allclose(got_val, want_val, rtol=1e-4, atol=1e-4)
    assert len(set(got_top) & set(want_top)) >= 9
    items = np.array([0, 17, 300])
    np.testing.assert_allclose(got.at(items), want.at(items), rtol=1e-4, atol=1e-4)


def test_auto_searches_from_the_threshold_and_the_index_follows_the_model(tmp_path) -> None:
    small = create("als", reg=10.0, n_iterations=3).fit(DATA)
    assert small.vector_index().backend == "exact"  # 1,200 < 50,000
    big = create("als", reg=10.0, n_iterations=3, ann_min_items=1_000).fit(DATA)
    first = big.vector_index()
    assert first.backend in ("faiss", "pruned") and big.vector_index() is first  # kept
    big.fit(DATA)  # new factors: a new index
    assert big.vector_index() is not first
    again = load(big.save(tmp_path / "als"))
    assert again.vector_index().backend == first.backend
    np.testing.assert_array_equal(
        again.recommend_indices(np.arange(20), 5, exclude=again.seen_)[0],
        big.recommend_indices(np.arange(20), 5, exclude=big.seen_)[0],
    )
    with pytest.raises(InvalidInputError, match="ann_min_items"):
        create("als", ann_min_items=0).fit(DATA)
    with pytest.raises(InvalidInputError, match="index='hnsw' is not one of"):
        create("bpr", index="hnsw").fit(DATA)


@pytest.mark.neural
def test_sasrec_searches_its_item_embeddings() -> None:
    pytest.importorskip("torch")
    settings = {"epochs": 2, "factors": 16, "max_len": 20}
    exact = create("sasrec", index="exact", **settings).fit(DATA)
    searched = create("sasrec", index="ann", **settings).fit(DATA)
    assert searched.vector_index().backend in ("faiss", "pruned")
    users = np.arange(0, 400, 9)
    want, want_scores = exact.recommend_indices(users, 10, exclude=exact.seen_)
    got, got_scores = searched.recommend_indices(users, 10, exclude=searched.seen_)
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-3, atol=1e-3)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, want, strict=True)]) >= 0.99
    user = int(np.flatnonzero(np.diff(exact.seen_.indptr) >= 5)[0])
    history = exact.seen_[user]
    folded = searched.fold_in(history, exclude=history.indices)
    assert folded._retriever is not None
    top, _ = folded.top(10)
    assert len(set(top) & set(exact.fold_in(history, exclude=history.indices).top(10)[0])) >= 9


def test_similar_items_search_an_index_with_the_exact_answers(pair) -> None:
    exact, searched = pair
    assert exact.similar_index() is None  # index="exact": every item compared
    searched.__dict__.pop("_similar_index", None)
    searched.warm_up()  # what the service calls when it loads a version
    index = searched.__dict__["_similar_index"][1]
    assert searched.similar_index() is index  # kept
    for item in (0, 5, 600):
        want_top, want_sim = exact.nearest(item, 20)
        got_top, got_sim = searched.nearest(item, 20)
        assert item not in got_top and len(got_top) == 20
        np.testing.assert_allclose(got_sim, want_sim, rtol=1e-4, atol=1e-4)
        assert len(set(got_top) & set(want_top)) >= 19  # float32 ties may swap one at the cut
        blocked = want_top[:5]
        got_top, _ = searched.nearest(item, 20, blocked)
        assert not set(got_top) & set(blocked) and len(got_top) == 20
        assert set(want_top[5:]) - set(got_top) <= {want_top[-1]}
