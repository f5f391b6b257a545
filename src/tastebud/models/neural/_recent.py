"""What the hybrid BPR network and the two-tower model share: a user side built from the
user's id, metadata and latest items, trained on the steps of time-ordered histories."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp

from tastebud.data.dataset import Dataset
from tastebud.models.neural._torch import (
    OneItemHoldout,
    OtherItems,
    StepHistories,
    TorchRecommender,
    dense_features,
    history_sequences,
    import_torch,
    recent,
)

#: How a training sample's history is drawn: the items before it in time, or any others.
HistoryOrder = Literal["time", "any"]


class RecentItemsRecommender(TorchRecommender):
    """Base of the models whose user side reads metadata and the ``history_len`` latest
    items: users given by a history are scored from it alone, and known users without
    training interactions from their attributes."""

    reads_order: ClassVar[bool] = True

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
    ) -> tuple[list[np.ndarray], OneItemHoldout | None, Callable[[], float] | None]:
        """The training sequences (one item of each user held out for early stopping when
        ``patience > 0``: :class:`~._torch.OneItemHoldout`), the holdout and its validation
        score."""
        p: Any = self
        torch = import_torch()
        length = int(p.history_len)
        indptr, items = self._ordered(dataset)
        self.sequence_indptr_, self.sequence_items_ = indptr, items
        if p.patience <= 0:
            return [items[indptr[u] : indptr[u + 1]] for u in range(dataset.n_users)], None, None
        holdout = OneItemHoldout.carve(
            indptr,
            items,
            dataset.n_items,
            pick="random" if p.history_order == "any" else "last",
            seed=int(p.random_state),
        )
        held = [holdout.sequences[u] for u in holdout.users]
        users = torch.from_numpy(holdout.users).to(device)
        latest = torch.from_numpy(recent(held, length)).to(device)

        def validate() -> float:
            with torch.no_grad():
                return holdout.ndcg(
                    lambda a, b: self._net_scores(net, users[a:b], latest[a:b]).cpu().numpy()
                )

        return holdout.sequences, holdout, validate

    def _samples(
        self, sequences: list[np.ndarray], rng: np.random.Generator
    ) -> StepHistories | OtherItems:
        """One epoch's training samples: with ``history_order="time"`` every step with the
        items before it (the same each epoch), with ``"any"`` every item with other items
        of its user drawn afresh (:class:`~._torch.OtherItems`). Either costs milliseconds
        per epoch on a hundred thousand interactions."""
        p: Any = self
        if p.history_order == "any":
            return OtherItems.of(sequences, int(p.history_len), rng)
        return StepHistories.of(sequences, int(p.history_len))

    def _forget_untrained(self, net: Any, sequences: list[np.ndarray]) -> None:
        """Zero the id embeddings of the users and items without a training sample: they
        never moved from their random start, so they are noise -- a new item is scored from
        its metadata, a user known only by attributes from those."""
        torch = import_torch()
        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        items = np.concatenate(sequences) if len(sequences) else np.zeros(0, np.int64)
        counts = np.bincount(items, minlength=net.item_id.num_embeddings)
        with torch.no_grad():
            for table, cold in ((net.user_id, lengths == 0), (net.item_id, counts == 0)):
                rows = torch.from_numpy(np.flatnonzero(cold)).to(table.weight.device)
                table.weight[rows] = 0.0

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
