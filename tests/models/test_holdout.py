"""The validation holdout models carve from their own training data (ALS reg="auto", Blend):
a seeded sample of validation users at most, scored in bounded blocks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tastebud.data.dataset import Dataset
from tastebud.data.sample import load_sample
from tastebud.metrics.ranking import ndcg_at_k
from tastebud.models import _holdout, create
from tastebud.models._holdout import Holdout
from tastebud.models.base import mask_rows, top_k


def test_the_blocked_scores_equal_the_dense_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    data = load_sample()
    holdout = Holdout.carve(data, 0.2, seed=0, who="test")
    model = create("ease").fit(holdout.train)
    dense = model._score_block(holdout.users, None)
    mask_rows(dense, holdout.train.matrix("binary"), holdout.users, None)
    expected = float(np.nanmean(ndcg_at_k(top_k(dense, 10)[0], holdout.relevant, 10)))
    monkeypatch.setattr(_holdout, "_BATCH_CELLS", 7 * holdout.train.n_items)  # 7-user blocks
    blocks = list(holdout.blocks())
    assert [len(b) for b in blocks][:2] == [7, 7]
    tops = [top_k(holdout.masked(model._score_block(b, None), b), 10)[0] for b in blocks]
    assert holdout.ndcg(np.vstack(tops), 10) == expected
    listed, _ = model.recommend_indices(holdout.users, 10, exclude=model.seen_)  # ALS's way
    assert holdout.ndcg(listed, 10) == expected


def test_validation_users_are_a_seeded_sample_when_there_are_many() -> None:
    data = load_sample()
    full = Holdout.carve(data, 0.2, seed=0, who="test")
    few = Holdout.carve(data, 0.2, seed=0, who="test", max_users=50)
    again = Holdout.carve(data, 0.2, seed=0, who="test", max_users=50)
    assert len(full.users) > 50 and len(few.users) == 50
    np.testing.assert_array_equal(few.users, again.users)
    assert set(few.users) <= set(full.users)
    # each sampled user keeps exactly their held-out relevant items
    at = {u: n for n, u in enumerate(full.users)}
    for n, user in enumerate(few.users):
        np.testing.assert_array_equal(few.relevant[n].indices, full.relevant[at[user]].indices)
    other = Holdout.carve(data, 0.2, seed=1, who="test", max_users=50)
    assert not np.array_equal(other.users, few.users)


def test_the_neural_models_last_item_holdout_samples_its_users_on_larger_data():
    """Early stopping's holdout takes the latest item of at most max_users users (a seeded
    sample); the others keep every item for training."""
    from tastebud.models.neural._torch import OneItemHoldout, time_ordered

    rows = [(u, (u + j) % 40, float(j)) for u in range(50) for j in range(3)]
    data = Dataset.from_frame(
        pd.DataFrame(rows, columns=["user", "item", "timestamp"]), timestamp="timestamp"
    )
    ordered = (*time_ordered(data), data.n_items)
    every = OneItemHoldout.carve(*ordered)
    assert len(every.users) == 50 and all(len(s) == 2 for s in every.sequences)
    some = OneItemHoldout.carve(*ordered, max_users=10)
    again = OneItemHoldout.carve(*ordered, max_users=10)
    np.testing.assert_array_equal(some.users, again.users)
    assert len(some.users) == 10
    lengths = np.array([len(s) for s in some.sequences])
    assert (lengths[some.users] == 2).all() and (np.delete(lengths, some.users) == 3).all()
    for user, target in zip(some.users.tolist(), some.targets.tolist(), strict=True):
        assert target == data.item_index[data.user_index == user][-1]
