"""A validation split carved from a model's own training data, scored by NDCG.

Models that choose something during ``fit`` -- a blend's weights, ALS's ``reg="auto"`` --
hold out part of each user's training interactions, fit on the rest and compare choices by
NDCG@k on what was held out, never touching the caller's test data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tastebud.data.dataset import Dataset
from tastebud.errors import InvalidInputError
from tastebud.metrics.ranking import ndcg_at_k
from tastebud.models.base import mask_rows, top_k


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
    ) -> Holdout:
        """Hold out ``size`` of each user's interactions (``random_split``'s protocol)."""
        from tastebud.split import random_split

        split = random_split(dataset, size, seed=seed)
        inner, held = split.train, split.test
        positive = held
        if relevance_threshold is not None and "rating" in held.columns:
            positive = held[held["rating"].to_numpy() >= relevance_threshold]
        if len(positive) == 0:
            raise InvalidInputError(f"{who}: no relevant held-out interactions to learn from")
        users = inner.users.to_index(positive["user"].drop_duplicates().to_numpy())
        rows = pd.Index(users).get_indexer(inner.users.to_index(positive["user"].to_numpy()))
        cols = inner.items.to_index(positive["item"].to_numpy())
        relevant = sp.csr_matrix(
            (np.ones(len(positive)), (rows, cols)), shape=(len(users), inner.n_items)
        )
        return cls(train=inner, held=held, users=users, relevant=relevant)

    def ndcg(self, scores: np.ndarray, k: int, *, masked: bool = False) -> float:
        """Mean NDCG@k of ``scores`` (rows: ``users``; all items), training items excluded.

        Unless ``masked`` says the caller already did it, the training items of ``scores``
        are masked in place.
        """
        if not masked:
            mask_rows(scores, self.train.matrix("binary"), self.users, None)
        top, _ = top_k(scores, k)
        return float(np.nanmean(ndcg_at_k(top, self.relevant, k)))
