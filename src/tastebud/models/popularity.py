"""Non-personalized baselines: most popular, trending (time-decayed popularity) and random."""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp

from tastebud.data.dataset import Dataset
from tastebud.models.base import Recommender, check_k
from tastebud.models.registry import register

_DAY = 86_400.0


@register("popularity")
@dataclasses.dataclass(kw_only=True, eq=False)
class Popularity(Recommender):
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

    def recommend_indices(
        self,
        users: np.ndarray,
        k: int,
        *,
        exclude: sp.csr_matrix | None = None,
        items: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The base answer without scoring the catalogue per user: one ranking, read past
        each user's excluded items (the same lists and ties)."""
        if items is not None:
            return super().recommend_indices(users, k, exclude=exclude, items=items)
        self._require_fitted()
        k = min(check_k(k), len(self.items_))
        out_items = np.full((len(users), k), -1, dtype=np.int64)
        out_scores = np.full((len(users), k), np.nan)
        if k == 0:
            return out_items, out_scores
        cached = self.__dict__.get("_ranking")
        if cached is None or cached[0] is not self.item_scores_:
            scores = self.item_scores_
            cached = (scores, np.lexsort((np.arange(len(scores)), -scores)))
            self.__dict__["_ranking"] = cached
        ranking = cached[1]
        empty = np.zeros(0, dtype=np.int64)
        for row, user in enumerate(np.asarray(users, dtype=np.int64).tolist()):
            seen = (
                exclude.indices[exclude.indptr[user] : exclude.indptr[user + 1]]
                if exclude is not None and user >= 0
                else empty
            )
            head = ranking[: k + len(seen)]
            chosen = head[~np.isin(head, seen)][:k] if len(seen) else head[:k]
            out_items[row, : len(chosen)] = chosen
            out_scores[row, : len(chosen)] = self.item_scores_[chosen]
        return out_items, out_scores

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
        return self._score(np.full(n_rows, 2**31 - 1, dtype=np.int64), items)
