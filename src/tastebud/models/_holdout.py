"""A validation split carved from a model's own training data, scored by NDCG.

Models that choose something during ``fit`` -- a blend's weights, ALS's ``reg="auto"`` --
hold out part of each user's training interactions, fit on the rest and compare choices by
NDCG@k on what was held out, never touching the caller's test data. At most
:data:`MAX_USERS` validation users (a seeded sample) are scored, in blocks of bounded size:
the check costs the same on a million users as on ten thousand, and never holds a users x
items array.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tastebud.data.dataset import Dataset
from tastebud.errors import InvalidInputError
from tastebud.metrics.ranking import ndcg_at_k
from tastebud.models.base import _BATCH_CELLS, mask_rows

#: Validation users scored at most (a seeded sample of those with held-out items).
MAX_USERS = 10_000


@dataclass(frozen=True)
class Holdout:
    """``train`` (the rest), the ``held`` rows, and their relevance for ``users``."""

    train: Dataset
    held: pd.DataFrame
    users: np.ndarray  # indices in ``train`` of the users with relevant held-out items
    relevant: sp.csr_matrix  # len(users) x train.n_items

    @classmethod
    def carve(
        cls,
        dataset: Dataset,
        size: float,
        seed: int,
        relevance_threshold: float | None = None,
        *,
        who: str,
        max_users: int = MAX_USERS,
    ) -> Holdout:
        """Hold out ``size`` of each user's interactions (``random_split``'s protocol); the
        users with relevant held-out items, ``max_users`` of them at most, are scored."""
        from tastebud.split import random_split

        split = random_split(dataset, size, seed=seed)
        inner, held = split.train, split.test
        positive = held
        if relevance_threshold is not None and "rating" in held.columns:
            positive = held[held["rating"].to_numpy() >= relevance_threshold]
        if len(positive) == 0:
            raise InvalidInputError(f"{who}: no relevant held-out interactions to learn from")
        users = inner.users.to_index(positive["user"].drop_duplicates().to_numpy())
        if len(users) > max_users:
            users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
            positive = positive[np.isin(inner.users.to_index(positive["user"].to_numpy()), users)]
        rows = pd.Index(users).get_indexer(inner.users.to_index(positive["user"].to_numpy()))
        cols = inner.items.to_index(positive["item"].to_numpy())
        relevant = sp.csr_matrix(
            (np.ones(len(positive)), (rows, cols)), shape=(len(users), inner.n_items)
        )
        return cls(train=inner, held=held, users=users, relevant=relevant)

    def blocks(self) -> Iterator[np.ndarray]:
        """The validation users in blocks whose dense score rows stay bounded in size."""
        rows = max(1, min(1024, _BATCH_CELLS // max(self.train.n_items, 1)))
        for start in range(0, len(self.users), rows):
            yield self.users[start : start + rows]

    def masked(self, scores: np.ndarray, block: np.ndarray) -> np.ndarray:
        """``scores`` (rows: ``block``'s users; all items) with their training items at
        ``-inf`` (in place)."""
        mask_rows(scores, self._seen, block, None)
        return scores

    @functools.cached_property
    def _seen(self) -> sp.csr_matrix:
        """The training matrix, built once for every block ``masked`` sees."""
        return self.train.matrix("binary")

    def ndcg(self, top: np.ndarray, k: int) -> float:
        """Mean NDCG@k of lists (rows: ``users``; internal item indices, -1 padding)."""
        return float(np.nanmean(ndcg_at_k(top, self.relevant, k)))
