"""What the hybrid BPR network and the two-tower model share: a user side built from the
user's id, metadata and latest items, trained on the steps of time-ordered histories."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

from tastebud.data.dataset import Dataset
from tastebud.models.neural._torch import (
    LastItemHoldout,
    StepHistories,
    TorchRecommender,
    dense_features,
    history_sequences,
    import_torch,
    recent,
    time_ordered,
)


class RecentItemsRecommender(TorchRecommender):
    """Base of the models whose user side reads metadata and the ``history_len`` latest
    items: users given by a history are scored from it alone, and known users without
    training interactions from their attributes."""

    @abc.abstractmethod
    def _net_scores(self, net: Any, users: Any, histories: Any) -> Any:
        """Scores of every item (a tensor) for user indices (-1: none) and their latest
        items (+1, 0 = padding)."""

    def _metadata(self, dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
        """The user and item metadata vectors (their widths are kept for rebuilding)."""
        p: Any = self
        user_meta = dense_features(
            dataset.user_features if p.use_user_features else None, dataset.n_users
        )
        item_meta = dense_features(
            dataset.item_features if p.use_item_features else None, dataset.n_items
        )
        self.user_meta_width_ = user_meta.shape[1]
        self.item_meta_width_ = item_meta.shape[1]
        return user_meta, item_meta

    def _steps(
        self, dataset: Dataset, net: Any, device: Any
    ) -> tuple[StepHistories, LastItemHoldout | None, Callable[[], float] | None]:
        """The training steps (each user's latest item held out for early stopping when
        ``patience > 0``), the holdout and its validation score."""
        p: Any = self
        torch = import_torch()
        length = int(p.history_len)
        indptr, items = time_ordered(dataset)
        self.sequence_indptr_, self.sequence_items_ = indptr, items
        if p.patience <= 0:
            sequences = [items[indptr[u] : indptr[u + 1]] for u in range(dataset.n_users)]
            return StepHistories.of(sequences, length), None, None
        holdout = LastItemHoldout.carve(dataset)
        held = [holdout.sequences[u] for u in holdout.users]
        users = torch.from_numpy(holdout.users).to(device)
        latest = torch.from_numpy(recent(held, length)).to(device)

        def validate() -> float:
            with torch.no_grad():
                return holdout.ndcg(
                    lambda a, b: self._net_scores(net, users[a:b], latest[a:b]).cpu().numpy()
                )

        return StepHistories.of(holdout.sequences, length), holdout, validate

    def _user_scores(self, users: np.ndarray, sequences: list[np.ndarray]) -> np.ndarray:
        torch = import_torch()
        net: Any = self._network()
        device = next(net.parameters()).device
        p: Any = self
        with torch.no_grad():
            scores = self._net_scores(
                net,
                torch.from_numpy(users.astype(np.int64)).to(device),
                torch.from_numpy(recent(sequences, int(p.history_len))).to(device),
            )
        return np.asarray(scores.cpu().numpy(), dtype=np.float64)

    def _users_sequences(self, users: np.ndarray) -> list[np.ndarray]:
        indptr, seq = self.sequence_indptr_, self.sequence_items_
        return [seq[indptr[u] : indptr[u + 1]] for u in users]

    def _scorable(self, users: np.ndarray) -> np.ndarray:
        if int(self.user_meta_width_) > 0:  # cold users are scored from their attributes
            return np.ones(len(users), dtype=bool)
        return super()._scorable(users)

    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        scores = self._user_scores(users, self._users_sequences(users))
        return scores if items is None else scores[:, items]

    def _score_history(
        self, histories: sp.csr_matrix, sequences: list[np.ndarray] | None = None
    ) -> np.ndarray:
        sequences = history_sequences(histories) if sequences is None else sequences
        return self._user_scores(np.full(len(sequences), -1, dtype=np.int64), sequences)
