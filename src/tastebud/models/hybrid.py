"""Hybrid recommenders that combine a collaborative model with content and demographic ones.

* **Weighted** is :class:`~tastebud.models.blend.Blend` (``"blend"``): standardized member
  scores mixed with weights learned on a validation split of the training data.
* :class:`Switching` (``"switching"``) chooses by how much is known: an item with fewer than
  ``min_item_interactions`` training interactions (or, with timestamps, first seen less than
  ``new_item_days`` before the end of training) is scored by the content model, the others by
  the collaborative one; a user with n likes gets ``n / (n + user_pivot)`` of that and the
  rest from the cold-user model (demographic when users have attributes), so a new user moves
  from "people like you" to "people who liked what you liked" as their history grows::

      s(u, i) = w_u · z_cf(u, i) + (1 - w_u) · z_cold(u, i),   w_u = n_u / (n_u + pivot)
      z_cf(u, i) = z_content(u, i) for cold items

  (z: each member's scores standardized per user over the catalog).
* :class:`Cascade` (``"cascade"``): the first model proposes its ``candidates`` best items,
  the second re-orders them; the rest of the catalog follows in the first model's order.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp

from tastebud.data.dataset import Dataset
from tastebud.errors import InvalidInputError
from tastebud.features import attribute_matrix
from tastebud.models._composite import Composite, standardize
from tastebud.models.base import Recommender, top_k
from tastebud.models.registry import register


def _usable_user_attributes(dataset: Dataset) -> bool:
    """Whether the users have attributes user-metadata can compare (not only free text)."""
    if dataset.user_features is None or dataset.user_features.shape[1] == 0:
        return False
    try:
        attribute_matrix(dataset.user_features, None, what="user")
    except InvalidInputError:
        return False
    return True


def _member_scores(model: Recommender, users: np.ndarray) -> np.ndarray:
    return model._score_block(users, None)


def _member_history_scores(
    model: Recommender, histories: sp.csr_matrix, sequences: list[np.ndarray] | None
) -> np.ndarray:
    if model.supports_fold_in:
        return np.asarray(model._score_history(histories, sequences), dtype=np.float64)
    return model._fallback_scores(histories.shape[0], None)


@register("switching")
@dataclasses.dataclass(kw_only=True, eq=False)
class Switching(Composite):
    """Switch between collaborative, content and cold-user models.

    Parameters
    ----------
    collaborative:
        Model spec for warm users and items (``"ease"``, ``"als:factors=128"``...).
    content:
        Model spec that scores cold items from their metadata.
    cold_user:
        Model spec for users with little or no history; ``"auto"`` is ``user-metadata`` when
        the training data has user attributes it can compare (categories, numbers), else
        ``popularity``.
    user_pivot:
        History length at which collaborative and cold-user scores weigh the same.
    min_item_interactions:
        Items with fewer training interactions are cold.
    new_item_days:
        With timestamps, items first seen less than this many days before the latest training
        event are cold too (``None``: counts only).
    like_threshold:
        Ratings at least this count as likes for a user's history length (default 4 on rated
        data; implicit data: every interaction).
    """

    collaborative: str = "ease"
    content: str = "feature-profile"
    cold_user: str = "auto"
    user_pivot: float = 3.0
    min_item_interactions: int = 5
    new_item_days: float | None = None
    like_threshold: float | None = None

    def _validate(self) -> None:
        super()._validate()
        self._check(self.user_pivot >= 0, "user_pivot must be >= 0")
        self._check(self.min_item_interactions >= 0, "min_item_interactions must be >= 0")
        self._check(
            self.new_item_days is None or self.new_item_days > 0, "new_item_days must be > 0"
        )

    def _member_specs(self) -> list[str]:
        return [self.collaborative, self.content, self.cold_user_spec_]

    def _fit(self, dataset: Dataset) -> None:
        cold_user = self.cold_user
        if cold_user == "auto":
            cold_user = "user-metadata" if _usable_user_attributes(dataset) else "popularity"
        self.cold_user_spec_ = cold_user
        self._members = self._make_members()
        for model in self._members:
            model.fit(dataset)
        counts = dataset.item_popularity()
        cold = counts < int(self.min_item_interactions)
        if self.new_item_days is not None and dataset.timestamp is not None and len(dataset):
            first = np.full(dataset.n_items, np.inf)
            np.minimum.at(first, dataset.item_index, dataset.timestamp)
            cold |= first > dataset.timestamp.max() - float(self.new_item_days) * 86400.0
        self.cold_items_ = cold
        values = dataset.values("auto")
        if dataset.has_ratings:
            liked = values >= (4.0 if self.like_threshold is None else self.like_threshold)
        else:
            liked = values > (0.0 if self.like_threshold is None else self.like_threshold)
        self.history_length_ = np.bincount(
            dataset.user_index[liked], minlength=dataset.n_users
        ).astype(np.float64)

    def _mix(self, blocks: list[np.ndarray], lengths: np.ndarray) -> np.ndarray:
        cf, content, cold_user = (standardize(b) for b in blocks)
        cf[:, self.cold_items_] = content[:, self.cold_items_]
        pivot = float(self.user_pivot)
        w = (lengths / (lengths + pivot) if pivot > 0 else (lengths > 0).astype(float))[:, None]
        return w * cf + (1.0 - w) * cold_user

    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        blocks = [_member_scores(m, users) for m in self._members]
        lengths = np.where(users >= 0, self.history_length_[np.maximum(users, 0)], 0.0)
        full = self._mix(blocks, lengths)
        return full if items is None else full[:, items]

    def _fallback_scores(self, n_rows: int, items: np.ndarray | None) -> np.ndarray:
        unknown = np.full(n_rows, -1, dtype=np.int64)
        return self._score(unknown, items)

    def _score_history(
        self, histories: sp.csr_matrix, sequences: list[np.ndarray] | None = None
    ) -> np.ndarray:
        rows = sp.csr_matrix(histories)
        blocks = [_member_history_scores(m, rows, sequences) for m in self._members]
        return self._mix(blocks, np.diff(rows.indptr).astype(np.float64))


@register("cascade")
@dataclasses.dataclass(kw_only=True, eq=False)
class Cascade(Composite):
    """The first model proposes, the second re-ranks its proposals.

    Parameters
    ----------
    first:
        Model spec that proposes candidates.
    second:
        Model spec that orders them.
    candidates:
        How many of the first model's best unseen items the second re-orders.
    """

    first: str = "ease"
    second: str = "feature-profile"
    candidates: int = 50

    def _validate(self) -> None:
        super()._validate()
        self._check(self.candidates >= 1, "candidates must be >= 1")

    def _member_specs(self) -> list[str]:
        return [self.first, self.second]

    def _fit(self, dataset: Dataset) -> None:
        self._members = self._make_members()
        for model in self._members:
            model.fit(dataset)

    def _cascade(self, first: np.ndarray, second: np.ndarray, seen: sp.csr_matrix) -> np.ndarray:
        """Candidates score in [1, 2] by the second model's order; the rest in [-1, 0] by the
        first's. Seen items are not proposed (they are masked later anyway)."""
        proposals = first.copy()
        r = np.repeat(np.arange(seen.shape[0]), np.diff(seen.indptr))
        proposals[r, seen.indices] = -np.inf
        chosen, _ = top_k(proposals, min(int(self.candidates), first.shape[1]))
        out = _unit(first) - 1.0
        rows = np.repeat(np.arange(len(first)), chosen.shape[1])
        cols = chosen.ravel()
        keep = cols >= 0
        rows, cols = rows[keep], cols[keep]
        picked = np.full(first.shape, -np.inf)
        picked[rows, cols] = second[rows, cols]
        out[rows, cols] = 1.0 + _unit(picked)[rows, cols]
        return out

    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        first, second = (_member_scores(m, users) for m in self._members)
        full = self._cascade(first, second, self.seen_[users])
        return full if items is None else full[:, items]

    def _score_history(
        self, histories: sp.csr_matrix, sequences: list[np.ndarray] | None = None
    ) -> np.ndarray:
        rows = sp.csr_matrix(histories)
        first, second = (_member_history_scores(m, rows, sequences) for m in self._members)
        return self._cascade(first, second, rows)


def _unit(scores: np.ndarray) -> np.ndarray:
    """Each row's finite scores min-max scaled to [0, 1] (order kept; -inf stays low)."""
    finite = np.isfinite(scores)
    low = np.where(finite, scores, np.inf).min(axis=1, keepdims=True)
    high = np.where(finite, scores, -np.inf).max(axis=1, keepdims=True)
    span = np.where(high > low, high - low, 1.0)
    out = np.where(finite, (scores - np.where(np.isfinite(low), low, 0.0)) / span, 0.0)
    return np.clip(out, 0.0, 1.0)
