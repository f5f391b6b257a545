"""Train/test splitters: random per user, global temporal, leave-last-N-out, k-fold, cold users
and cold items.

Every splitter returns :class:`Split` objects whose ``train`` keeps the *whole* universe of
users and items (with their features), so a model knows cold users/items by id and an
evaluation ranks the full catalog. ``test`` is a table with external ids. All randomness comes
from ``seed``; impossible requests raise :class:`~tastebud.errors.InvalidInputError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tastebud.data.dataset import Dataset
from tastebud.errors import InvalidInputError


@dataclass(frozen=True)
class Split:
    """A training dataset and the held-out interactions (external ids)."""

    train: Dataset
    test: pd.DataFrame
    name: str = "split"

    def __repr__(self) -> str:
        return f"Split({self.name!r}: train {len(self.train)} / test {len(self.test)})"


def _count(value: object, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise InvalidInputError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _fraction(test_size: float) -> None:
    if isinstance(test_size, bool) or not isinstance(test_size, int | float | np.floating):
        raise InvalidInputError(f"test_size must be a number between 0 and 1, got {test_size!r}")
    if not 0.0 < test_size < 1.0:
        raise InvalidInputError(f"test_size must be strictly between 0 and 1, got {test_size}")


def _make(ds: Dataset, test_mask: np.ndarray, name: str) -> Split:
    n_test = int(test_mask.sum())
    if n_test == 0:
        raise InvalidInputError(
            f"{name}: the test set would be empty ({ds.name} has {len(ds)} interactions)"
        )
    if n_test == len(ds):
        raise InvalidInputError(f"{name}: the training set would be empty")
    train = ds.subset(~test_mask, name=f"{ds.name}/train")
    test = ds.subset(test_mask).interactions
    return Split(train=train, test=test, name=name)


def _rank_within_user(ds: Dataset, key: np.ndarray) -> np.ndarray:
    """0-based rank of each interaction within its user, ordered by ``key`` ascending."""
    order = np.lexsort((key, ds.user_index))
    starts = np.repeat(np.cumsum(ds.user_activity()) - ds.user_activity(), ds.user_activity())
    rank = np.empty(len(ds), dtype=np.int64)
    rank[order] = np.arange(len(ds)) - starts
    return rank


def random_split(
    ds: Dataset, test_size: float = 0.2, *, seed: int = 0, min_train: int = 1
) -> Split:
    """Per-user random holdout: each user keeps ``round(test_size * n_u)`` interactions for
    test, but never fewer than ``min_train`` in train (so users with one interaction stay
    entirely in train)."""
    _fraction(test_size)
    min_train = _count(min_train, "min_train", 0)
    rng = np.random.default_rng(seed)
    activity = ds.user_activity()
    n_test = np.minimum(np.rint(test_size * activity), np.maximum(activity - min_train, 0))
    rank = _rank_within_user(ds, rng.random(len(ds)))
    return _make(ds, rank < n_test[ds.user_index], f"random({test_size:g}, seed={seed})")


def _timestamps(ds: Dataset, splitter: str) -> np.ndarray:
    if ds.timestamp is None:
        raise InvalidInputError(f"{splitter} needs timestamps and {ds.name} has none")
    return ds.timestamp


def temporal_split(ds: Dataset, test_size: float = 0.2, *, at: float | None = None) -> Split:
    """Global temporal split: interactions after a cut-off time are the test set.

    The cut-off is ``at`` (unix seconds) or the ``1 - test_size`` quantile of the times;
    interactions exactly at the cut-off stay in train.
    """
    ts = _timestamps(ds, "temporal_split")
    if at is None:
        _fraction(test_size)
        at = float(np.quantile(ts, 1.0 - test_size, method="lower"))
    return _make(ds, ts > at, f"temporal(at={at:.0f})")


def leave_last_out(ds: Dataset, n: int = 1, *, min_train: int = 1) -> Split:
    """Per user, the ``n`` latest interactions are the test set (users with at most
    ``min_train`` interactions stay in train). Ties in time are broken by item order."""
    n = _count(n, "n", 1)
    min_train = _count(min_train, "min_train", 0)
    ts = _timestamps(ds, "leave_last_out")
    activity = ds.user_activity()
    n_test = np.minimum(n, np.maximum(activity - min_train, 0))
    rank_from_end = activity[ds.user_index] - 1 - _rank_within_user(ds, ts)
    return _make(ds, rank_from_end < n_test[ds.user_index], f"leave-last-{n}-out")


def kfold(ds: Dataset, k: int = 5, *, seed: int = 0) -> list[Split]:
    """User-stratified k-fold: each interaction is in exactly one test fold, and every user's
    interactions are spread evenly over the folds (a user with fewer than k interactions
    starts at a random fold)."""
    k = _count(k, "k", 2)
    if k > len(ds):
        raise InvalidInputError(f"k={k} folds need at least {k} interactions, got {len(ds)}")
    rng = np.random.default_rng(seed)
    rank = _rank_within_user(ds, rng.random(len(ds)))
    offset = rng.integers(0, k, ds.n_users)
    fold = (rank + offset[ds.user_index]) % k
    return [_make(ds, fold == f, f"fold {f + 1}/{k} (seed={seed})") for f in range(k)]


def _cold(ds: Dataset, which: str, test_size: float, seed: int, onboarding: int = 0) -> Split:
    _fraction(test_size)
    onboarding = _count(onboarding, "onboarding", 0)
    rng = np.random.default_rng(seed)
    index = ds.user_index if which == "user" else ds.item_index
    present = np.flatnonzero(
        np.bincount(index, minlength=ds.n_users if which == "user" else ds.n_items)
    )
    n_cold = round(test_size * len(present))
    if n_cold == 0 or n_cold == len(present):
        raise InvalidInputError(
            f"cold-{which} split: test_size={test_size} of {len(present)} {which}s with "
            f"interactions leaves no {which} on one side"
        )
    cold = np.zeros(ds.n_users if which == "user" else ds.n_items, dtype=bool)
    cold[rng.choice(present, n_cold, replace=False)] = True
    test = cold[index]
    name = f"cold-{which}({test_size:g}, seed={seed})"
    if onboarding:
        # Each cold user's first `onboarding` interactions in a random order are the items
        # they named when signing up: they go to train (all of them when that is everything).
        rank = _rank_within_user(ds, rng.random(len(ds)))
        test &= rank >= onboarding
        name = f"cold-{which}({test_size:g}, onboarding={onboarding}, seed={seed})"
    return _make(ds, test, name)


def cold_user_split(
    ds: Dataset, test_size: float = 0.2, *, seed: int = 0, onboarding: int = 0
) -> Split:
    """A fraction of users (with interactions) is held out entirely: their interactions form
    the test set; train still knows them by id and features but has no history for them.

    ``onboarding=n`` keeps n random interactions of each cold user in train -- the few items
    a new user names when signing up -- and tests on the rest (users with at most n
    interactions have nothing left to test)."""
    return _cold(ds, "user", test_size, seed, onboarding)


def cold_item_split(ds: Dataset, test_size: float = 0.2, *, seed: int = 0) -> Split:
    """A fraction of items is held out entirely (new items): all their interactions form the
    test set; train still lists them in the catalog with their features."""
    return _cold(ds, "item", test_size, seed)


SPLITTERS: dict[str, Callable[..., Split]] = {
    "random": random_split,
    "temporal": temporal_split,
    "leave-last-out": leave_last_out,
    "cold-user": cold_user_split,
    "cold-item": cold_item_split,
}
