"""Cold-start splits: ``cold_user_split(onboarding=n)`` keeps a few of each cold user's
interactions in train (what they named when signing up), and ``cold_item_split`` holds out
whole items."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tastebud import Dataset
from tastebud.errors import InvalidInputError
from tastebud.split import cold_item_split, cold_user_split


@pytest.fixture(scope="module")
def ds() -> Dataset:
    """30 users with 1..10 interactions each (user k has k % 10 + 1), with ratings and user
    and item features."""
    rng = np.random.default_rng(4)
    rows = []
    for u in range(30):
        for i in rng.choice(25, size=u % 10 + 1, replace=False):
            rows.append((f"u{u:02d}", f"i{i:02d}", float(rng.integers(1, 6))))
    frame = pd.DataFrame(rows, columns=["user", "item", "rating"])
    users = pd.DataFrame({"user": [f"u{u:02d}" for u in range(30)], "age": np.arange(30) + 20})
    items = pd.DataFrame(
        {"item": [f"i{i:02d}" for i in range(25)], "genre": ["a", "b"] * 12 + ["c"]}
    )
    return Dataset.from_frame(frame, rating="rating", users=users, items=items)


def per_user(frame: pd.DataFrame) -> pd.Series:
    return frame.groupby("user").size()


def pairs(frame: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(frame["user"], frame["item"], strict=True))


@pytest.mark.parametrize("onboarding", [1, 2, 3, 5])
def test_each_cold_user_keeps_n_interactions_in_train(ds, onboarding):
    plain = cold_user_split(ds, 0.3, seed=7)
    cold_users = set(plain.test["user"])
    assert len(cold_users) == 9  # 30% of 30: the same users with or without onboarding
    split = cold_user_split(ds, 0.3, seed=7, onboarding=onboarding)
    total = per_user(ds.interactions)
    train = per_user(split.train.interactions).reindex(total.index, fill_value=0)
    test = per_user(split.test).reindex(total.index, fill_value=0)
    for user, count in total.items():
        if user in cold_users:
            assert train[user] == min(onboarding, count), user
            assert test[user] == count - min(onboarding, count), user
        else:  # everyone else is untouched
            assert (train[user], test[user]) == (count, 0), user
    # nothing lost, nothing repeated; the ratings travel with their rows
    everything = pairs(ds.interactions)
    assert pairs(split.train.interactions) | pairs(split.test) == everything
    assert not pairs(split.train.interactions) & pairs(split.test)
    assert len(split.train) + len(split.test) == len(ds)
    original = ds.interactions.set_index(["user", "item"])["rating"]
    held = split.test.set_index(["user", "item"])["rating"]
    pd.testing.assert_series_equal(held, original.loc[held.index])
    # train still knows every user and item, with features
    assert split.train.n_users == ds.n_users and split.train.n_items == ds.n_items
    assert split.train.user_features is not None and split.train.item_features is not None
    assert f"onboarding={onboarding}" in split.name


def test_onboarding_is_deterministic_per_seed(ds):
    a = cold_user_split(ds, 0.3, seed=3, onboarding=2)
    b = cold_user_split(ds, 0.3, seed=3, onboarding=2)
    pd.testing.assert_frame_equal(a.test, b.test)
    pd.testing.assert_frame_equal(a.train.interactions, b.train.interactions)
    others = [cold_user_split(ds, 0.3, seed=s, onboarding=2).test for s in (4, 5, 6)]
    assert any(pairs(o) != pairs(a.test) for o in others)


def test_onboarding_picks_different_items_for_different_seeds_of_the_same_users(ds):
    # which of a cold user's interactions are kept varies with the seed
    kept = set()
    for seed in range(6):
        split = cold_user_split(ds, 0.3, seed=seed, onboarding=1)
        heavy = [u for u in set(split.test["user"]) if ds.history(u).shape[0] == 10]
        for user in heavy:
            kept.add((user, tuple(sorted(split.train.history(user)["item"]))))
    assert len(kept) > 1


def test_onboarding_zero_is_the_plain_cold_user_split(ds):
    a = cold_user_split(ds, 0.3, seed=1)
    b = cold_user_split(ds, 0.3, seed=1, onboarding=0)
    pd.testing.assert_frame_equal(a.test, b.test)
    assert a.name == b.name == "cold-user(0.3, seed=1)"


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2", None])
def test_invalid_onboarding_is_refused(ds, bad):
    with pytest.raises(InvalidInputError, match="onboarding"):
        cold_user_split(ds, 0.3, onboarding=bad)


def test_onboarding_that_keeps_everything_leaves_no_test_set(ds):
    with pytest.raises(InvalidInputError, match="test set would be empty"):
        cold_user_split(ds, 0.3, seed=0, onboarding=10)  # nobody has more than 10


def test_cold_item_split_holds_out_whole_items(ds):
    split = cold_item_split(ds, 0.2, seed=2)
    cold = set(split.test["item"])
    assert len(cold) == round(0.2 * len(set(ds.interactions["item"])))
    assert not cold & set(split.train.interactions["item"])
    held = ds.interactions[ds.interactions["item"].isin(cold)]
    assert pairs(held) == pairs(split.test)
    assert split.train.n_items == ds.n_items  # new items stay in the catalogue
    assert set(split.train.item_features.loc[sorted(cold), "genre"]) <= {"a", "b", "c"}
    again = cold_item_split(ds, 0.2, seed=2)
    pd.testing.assert_frame_equal(again.test, split.test)
    with pytest.raises(TypeError):
        cold_item_split(ds, 0.2, seed=2, onboarding=1)  # type: ignore[call-arg]
