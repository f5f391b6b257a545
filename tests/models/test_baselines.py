from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tastebud import Dataset
from tastebud.errors import InvalidInputError
from tastebud.models import create

DAY = 86_400.0


@pytest.fixture
def small() -> Dataset:
    # item counts: a=3, b=2, c=1, d=1 ; user x has seen a
    events = pd.DataFrame(
        {
            "user": ["x", "y", "z", "y", "z", "w", "w"],
            "item": ["a", "a", "a", "b", "c", "b", "d"],
            "rating": [5, 4, 3, 2, 5, 1, 4],
            "timestamp": [0, 0, 0, 10 * DAY, 10 * DAY, 20 * DAY, 20 * DAY],
        }
    )
    return Dataset.from_frame(events, rating="rating", timestamp="timestamp")


def test_popularity_ranks_by_count_with_ties_to_the_smaller_id(small):
    model = create("popularity").fit(small)
    recs = model.recommend(["x", "new"], k=4)
    # x saw a; then b (2); c and d tie at 1 -> c first (smaller id)
    assert recs[recs.user == "x"].item.tolist() == ["b", "c", "d"]
    assert recs[recs.user == "x"].score.tolist() == [2.0, 1.0, 1.0]
    assert recs[recs.user == "new"].item.tolist() == ["a", "b", "c", "d"]
    assert model.explain("x", ["b"]).reason.iloc[0] == "popular: 2 users interacted with it"


def test_trending_decays_old_events_by_half_life(small):
    model = create("trending", half_life_days=10).fit(small)
    # latest event at day 20: a = 3 * 2^-2 = 0.75, b = 2^-1 + 1 = 1.5, c = 0.5, d = 1
    scores = model.score(["new"])[0]
    np.testing.assert_allclose(scores, [0.75, 1.5, 0.5, 1.0])
    assert model.recommend("new", k=4).item.tolist() == ["b", "d", "a", "c"]
    with pytest.raises(InvalidInputError, match="half_life_days"):
        create("trending", half_life_days=0).fit(small)
    no_time = Dataset.from_frame(small.interactions[["user", "item"]])
    with pytest.raises(InvalidInputError, match="timestamps"):
        create("trending").fit(no_time)


def test_random_is_uniform_and_reproducible():
    n_items = 50
    events = pd.DataFrame({"user": np.arange(2000) % 400, "item": np.arange(2000) % n_items})
    ds = Dataset.from_frame(events)
    model = create("random", random_state=3).fit(ds)
    first = model.recommend(list(range(400)), k=1, exclude_seen=False).item.to_numpy()
    counts = np.bincount(first, minlength=n_items)
    # 400 draws over 50 items: a chi-square test would accept uniformity; check loose bounds
    assert counts.max() < 25 and (counts > 0).sum() > 40
    again = create("random", random_state=3).fit(ds).recommend([7], k=5)
    assert again.item.tolist() == model.recommend([7], k=5).item.tolist()
    other = create("random", random_state=4).fit(ds).recommend([7], k=5)
    assert other.item.tolist() != again.item.tolist()


def test_baseline_biases_match_hand_computation():
    events = pd.DataFrame({"user": [0, 0, 1], "item": [0, 1, 0], "rating": [5.0, 3.0, 4.0]})
    ds = Dataset.from_frame(events, rating="rating")
    model = create("baseline", reg_user=1, reg_item=1, n_epochs=2).fit(ds)
    # mu = 4; epoch 1: b_u = 0, 0; b_i = 1/3, -1/2
    # epoch 2: b_u0 = ((5-4-1/3) + (3-4+1/2)) / 3 = 1/18 ; b_u1 = (4-4-1/3) / 2 = -1/6
    #          b_i0 = ((5-4-1/18) + (4-4+1/6)) / 3 = 10/27 ; b_i1 = (3-4-1/18) / 2 = -19/36
    np.testing.assert_allclose(model.user_bias_, [1 / 18, -1 / 6])
    np.testing.assert_allclose(model.item_bias_, [10 / 27, -19 / 36])
    pred = model.predict(pd.DataFrame({"user": [1, 9, 0], "item": [1, 0, 7]}))
    # (1,1): 4 - 1/6 - 19/36 ; unknown user 9: 4 + b_i0 ; unknown item 7: 4 + b_u0
    np.testing.assert_allclose(pred, [4 - 1 / 6 - 19 / 36, 4 + 10 / 27, 4 + 1 / 18])


def test_baseline_needs_ratings():
    ds = Dataset.from_frame(pd.DataFrame({"user": [1, 2], "item": [1, 1]}))
    with pytest.raises(InvalidInputError, match="needs a dataset with ratings"):
        create("baseline").fit(ds)


@pytest.mark.reference_data
def test_baseline_rmse_on_movielens_official_folds():
    from conftest import require_reference
    from tastebud.data.reference import load_movielens_100k_fold

    folder = require_reference("ml-100k")
    rmse = []
    for fold in range(1, 6):
        train, test = load_movielens_100k_fold(fold, folder)
        pred = create("baseline").fit(train).predict(test)
        rmse.append(np.sqrt(np.mean((pred - test["rating"].to_numpy()) ** 2)))
    # Surprise reports 0.944 for BaselineOnly (ALS, same regularization) on random 5-fold CV
    assert np.mean(rmse) == pytest.approx(0.9458, abs=0.002)


@pytest.mark.parametrize("name", ["popularity", "trending", "baseline", "random"])
def test_popularity_lists_read_one_ranking_and_equal_the_scored_ones(name):
    """The ranking read past each user's seen items gives exactly the lists (and ties) of
    scoring every item per user -- known users, unknown ones, with and without exclusion."""
    from tastebud.data.sample import load_sample
    from tastebud.models.base import Recommender

    data = load_sample()
    model = create(name).fit(data)
    users = np.array([*range(0, data.n_users, 7), -1])
    for exclude in (model.seen_, None):
        for k in (1, 10, data.n_items):
            fast = model.recommend_indices(users, k, exclude=exclude)
            scored = Recommender.recommend_indices(model, users, k, exclude=exclude)
            np.testing.assert_array_equal(fast[0], scored[0])
            np.testing.assert_array_equal(fast[1], scored[1])
    candidates = np.array([3, 1, 7])
    np.testing.assert_array_equal(
        model.recommend_indices(users, 2, items=candidates)[0],
        Recommender.recommend_indices(model, users, 2, items=candidates)[0],
    )


def test_random_lists_of_users_without_history_are_the_fallbacks():
    """Users the data set knows without interactions get the fallback's hash, as the scored
    path gives them; the compiled lists equal it."""
    from tastebud.data.synthetic import synthetic
    from tastebud.models.base import Recommender

    data = synthetic(n_users=300, n_items=500, n_interactions=600, seed=0, progress=False)
    model = create("random").fit(data)
    idle = np.flatnonzero(np.diff(model.seen_.indptr) == 0)
    assert len(idle) >= 2
    users = np.array([*range(40), *idle[:5], -1])
    fast = model.recommend_indices(users, 10, exclude=model.seen_)
    scored = Recommender.recommend_indices(model, users, 10, exclude=model.seen_)
    np.testing.assert_array_equal(fast[0], scored[0])
    np.testing.assert_array_equal(fast[1], scored[1])
    np.testing.assert_array_equal(fast[0][40], fast[0][-1])  # an idle user: the fallback
