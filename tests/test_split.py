from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tastebud import Dataset
from tastebud.data.synthetic import synthetic
from tastebud.errors import InvalidInputError
from tastebud.split import (
    cold_item_split,
    cold_user_split,
    kfold,
    leave_last_out,
    random_split,
    temporal_split,
)


@pytest.fixture(scope="module")
def ds() -> Dataset:
    return synthetic(300, 120, 6_000, seed=5)


def _pairs(frame: pd.DataFrame) -> set:
    return set(zip(frame["user"], frame["item"], strict=True))


def _check_partition(ds, split):
    train, test = _pairs(split.train.interactions), _pairs(split.test)
    assert not train & test
    assert train | test == _pairs(ds.interactions)
    assert split.train.n_users == ds.n_users and split.train.n_items == ds.n_items


def test_random_split_is_per_user_seeded_and_keeps_one_in_train(ds):
    split = random_split(ds, 0.25, seed=1)
    _check_partition(ds, split)
    per_user = split.test.groupby("user").size()
    activity = pd.Series(ds.user_activity(), index=ds.users.ids)
    expected = np.minimum(np.rint(0.25 * activity), np.maximum(activity - 1, 0))
    assert per_user.reindex(activity.index, fill_value=0).eq(expected).all()
    assert _pairs(random_split(ds, 0.25, seed=1).test) == _pairs(split.test)
    assert _pairs(random_split(ds, 0.25, seed=2).test) != _pairs(split.test)


def test_temporal_split_puts_later_events_in_test(ds):
    split = temporal_split(ds, 0.2)
    _check_partition(ds, split)
    assert split.train.timestamp is not None
    assert split.train.timestamp.max() < split.test["timestamp"].min()
    assert abs(len(split.test) / len(ds) - 0.2) < 0.01
    at = float(np.median(ds.timestamp))
    assert (temporal_split(ds, at=at).test["timestamp"] > at).all()


def test_leave_last_out_takes_each_users_latest(ds):
    split = leave_last_out(ds, n=2)
    _check_partition(ds, split)
    table = ds.interactions
    for user in ds.users.ids[:20]:
        mine = table[table.user == user].sort_values(["timestamp", "item"])
        n_test = min(2, len(mine) - 1)
        expected = set(mine.item.iloc[len(mine) - n_test :]) if n_test > 0 else set()
        assert set(split.test[split.test.user == user].item) == expected


def test_kfold_covers_every_interaction_once_and_stratifies_users(ds):
    folds = kfold(ds, 4, seed=0)
    assert len(folds) == 4
    tests = [_pairs(f.test) for f in folds]
    assert sum(len(t) for t in tests) == len(ds)
    assert set().union(*tests) == _pairs(ds.interactions)
    heavy = ds.users.ids[np.argmax(ds.user_activity())]
    sizes = [int((f.test.user == heavy).sum()) for f in folds]
    assert max(sizes) - min(sizes) <= 1


def test_cold_splits_hold_out_whole_users_or_items(ds):
    users = cold_user_split(ds, 0.2, seed=0)
    _check_partition(ds, users)
    held = set(users.test.user)
    assert not held & set(users.train.interactions.user)
    assert abs(len(held) - 0.2 * (ds.user_activity() > 0).sum()) <= 1
    assert all(u in users.train.users for u in held)  # still known by id
    items = cold_item_split(ds, 0.2, seed=0)
    _check_partition(ds, items)
    assert not set(items.test.item) & set(items.train.interactions.item)


def test_impossible_requests_are_refused(ds):
    with pytest.raises(InvalidInputError, match="strictly between 0 and 1"):
        random_split(ds, 1.0)
    with pytest.raises(InvalidInputError, match="k must be an integer >= 2"):
        kfold(ds, 1)
    no_time = Dataset.from_frame(ds.interactions[["user", "item"]])
    with pytest.raises(InvalidInputError, match="needs timestamps"):
        temporal_split(no_time)
    with pytest.raises(InvalidInputError, match="needs timestamps"):
        leave_last_out(no_time)
    singles = Dataset.from_frame(pd.DataFrame({"user": [1, 2, 3], "item": [1, 2, 3]}))
    with pytest.raises(InvalidInputError, match="test set would be empty"):
        random_split(singles, 0.2)
    with pytest.raises(InvalidInputError, match="leaves no user"):
        cold_user_split(singles, 0.1)


def test_argument_types_are_checked(ds):
    with pytest.raises(InvalidInputError, match="n must be an integer"):
        leave_last_out(ds, 2.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="test_size must be a number"):
        random_split(ds, "0.2")  # type: ignore[arg-type]
