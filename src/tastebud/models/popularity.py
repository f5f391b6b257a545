"""Non-personalized baselines: most popular, trending (time-decayed popularity) and random."""

from __future__ import annotations

import dataclasses

import numba
import numpy as np
import scipy.sparse as sp

from tastebud.data.dataset import Dataset
from tastebud.models._retrieval import OneRanking
from tastebud.models.base import Recommender, check_k, padding_lists
from tastebud.models.registry import register

_DAY = 86_400.0
_FALLBACK_USER = 2**31 - 1  # the user whose hash ranks items for users without history


@register("popularity")
@dataclasses.dataclass(kw_only=True, eq=False)
class Popularity(OneRanking, Recommender):
    """Most popular items: score(i) = number of training users who interacted with i.

    The same list for everyone (minus what each user has seen); ties go to the lower
    internal index, i.e. the smaller id. The reference every personalized model must beat.
    """

    def _fit(self, dataset: Dataset) -> None:
        self.item_scores_ = self._item_scores(dataset)

    def _item_scores(self, dataset: Dataset) -> np.ndarray:
        return dataset.item_popularity().astype(np.float64)

    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        row = self.item_scores_ if items is None else self.item_scores_[items]
        return np.broadcast_to(row, (len(users), len(row)))  # a view: the caller copies

    def _fallback_scores(self, n_rows: int, items: np.ndarray | None) -> np.ndarray:
        return self._score(np.zeros(n_rows, dtype=np.int64), items)

    def _ranking_scores(self) -> np.ndarray:
        return self.item_scores_

    def _score_history(
        self, histories: sp.csr_matrix, sequences: list[np.ndarray] | None = None
    ) -> np.ndarray:
        return self._fallback_scores(histories.shape[0], None)

    def _explain(self, user: int, items: np.ndarray) -> list[str]:
        counts = self.popularity_[items]
        return [f"popular: {int(c)} users interacted with it" for c in counts]


@register("trending")
@dataclasses.dataclass(kw_only=True, eq=False)
class Trending(Popularity):
    """Time-decayed popularity: score(i) = sum over i's events of 2^(-age / half_life).

    ``age`` is measured back from the latest event in the training data, so an item that was
    popular last week outranks one that was popular last year.

    Parameters
    ----------
    half_life_days:
        Days after which an event counts half.
    """

    half_life_days: float = 14.0

    def _validate(self) -> None:
        super()._validate()
        self._check(self.half_life_days > 0, "half_life_days must be > 0")

    def _item_scores(self, dataset: Dataset) -> np.ndarray:
        self._check(dataset.timestamp is not None, f"needs timestamps and {dataset.name} has none")
        assert dataset.timestamp is not None
        age_days = (dataset.timestamp.max() - dataset.timestamp) / _DAY
        decay = np.exp2(-age_days / self.half_life_days)
        return np.bincount(dataset.item_index, weights=decay, minlength=dataset.n_items)

    def _explain(self, user: int, items: np.ndarray) -> list[str]:
        return [
            f"trending: {s:.1f} recent interactions (half-life {self.half_life_days:g} days)"
            for s in self.item_scores_[items]
        ]


@register("random")
@dataclasses.dataclass(kw_only=True, eq=False)
class Random(Recommender):
    """Uniformly random ranking -- the floor every model must clear.

    Scores are a hash of (random_state, user, item), so a user's list is reproducible and does
    not depend on which other users are in the same call.
    """

    random_state: int | None = 0

    def _fit(self, dataset: Dataset) -> None:
        self.n_items_ = dataset.n_items
        # None: a fresh seed per fit (recorded, so a saved model keeps its lists)
        if self.random_state is None:
            self.seed_ = int(np.random.default_rng().integers(2**62))
        else:
            self.seed_ = int(self.random_state)

    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        cols = (
            np.arange(self.n_items_, dtype=np.uint64) if items is None else items.astype(np.uint64)
        )
        x = (users.astype(np.uint64)[:, None] << np.uint64(32)) ^ cols[None, :]
        x = x ^ np.uint64(self.seed_ * 0x9E3779B97F4A7C15 % 2**64)
        # splitmix64 finalizer: a well-mixed 64-bit hash
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
        return (x >> np.uint64(11)).astype(np.float64) / float(2**53)

    def _fallback_scores(self, n_rows: int, items: np.ndarray | None) -> np.ndarray:
        return self._score(np.full(n_rows, _FALLBACK_USER, dtype=np.int64), items)

    def recommend_indices(
        self,
        users: np.ndarray,
        k: int,
        *,
        exclude: sp.csr_matrix | None = None,
        items: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The base answer from one compiled pass per user that hashes each item and keeps
        the best ``k`` (no catalogue-long score row: 1M items x 1,000 users is a billion
        float64s otherwise)."""
        if items is not None:
            return super().recommend_indices(users, k, exclude=exclude, items=items)
        self._require_fitted()
        k = min(check_k(k), int(self.n_items_))
        out_items, out_scores = padding_lists(len(users), k)
        if k == 0:
            return out_items, out_scores
        empty = sp.csr_matrix((1, int(self.n_items_)))
        matrix = exclude if exclude is not None else empty
        users = np.asarray(users, dtype=np.int64)
        keys = np.full(len(users), _FALLBACK_USER, dtype=np.int64)  # the fallback's hash
        known = users >= 0
        scorable = known.copy()
        scorable[known] = self._scorable(users[known])
        keys[scorable] = users[scorable]
        _random_top(
            users,
            keys,
            np.uint64(self.seed_ * 0x9E3779B97F4A7C15 % 2**64),
            int(self.n_items_),
            matrix.indptr.astype(np.int64),
            matrix.indices.astype(np.int64),
            exclude is not None,
            out_items,
            out_scores,
        )
        return out_items, out_scores


@numba.njit(cache=True)
def _random_top(
    users: np.ndarray,
    keys: np.ndarray,
    seed_mix: np.uint64,
    n_items: int,
    indptr: np.ndarray,
    indices: np.ndarray,
    has_exclude: bool,
    out_items: np.ndarray,
    out_scores: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """:meth:`Random._score`'s hash of each item for each user's ``keys`` entry, the best
    ``k`` kept per user (ties to the lower index), the user's excluded items skipped."""
    k = out_items.shape[1]
    skip = np.zeros(n_items, dtype=np.bool_)
    best_s = np.empty(k, dtype=np.float64)
    best_i = np.empty(k, dtype=np.int64)
    for r in range(len(users)):
        user = users[r]
        masked = has_exclude and user >= 0
        if masked:
            for j in range(indptr[user], indptr[user + 1]):
                skip[indices[j]] = True
        key = np.uint64(keys[r])
        count = 0
        for i in range(n_items):
            if skip[i]:
                continue
            x = (key << np.uint64(32)) ^ np.uint64(i)
            x = x ^ seed_mix
            x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            x = x ^ (x >> np.uint64(31))
            score = np.float64(x >> np.uint64(11)) / 9007199254740992.0
            if count < k:
                pos = count
                count += 1
            elif score > best_s[k - 1]:
                pos = k - 1
            else:
                continue
            while pos > 0 and best_s[pos - 1] < score:
                best_s[pos] = best_s[pos - 1]
                best_i[pos] = best_i[pos - 1]
                pos -= 1
            best_s[pos] = score
            best_i[pos] = i
        for j in range(count):
            out_items[r, j] = best_i[j]
            out_scores[r, j] = best_s[j]
        if masked:
            for j in range(indptr[user], indptr[user + 1]):
                skip[indices[j]] = False
