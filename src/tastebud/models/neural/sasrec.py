"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018).

A user is the time-ordered sequence of the items they interacted with. Item embeddings plus
learned position embeddings go through ``layers`` blocks of causal self-attention (pre-norm
transformer layers: each position sees itself and the positions before it), and the output at
position t scores every item as the next one by a dot product with the (shared) item
embeddings. Training predicts, at every position of every user's sequence, the item that
came next:

``loss="softmax"``
    cross-entropy over the whole catalog (what RecTools and gSASRec found to beat the
    original paper's one-negative binary loss by a wide margin);
``loss="sampled"``
    cross-entropy over the true next item and ``negatives`` items drawn uniformly (shared by
    the batch) -- for catalogs too large for a full softmax.

Early stopping: each user's last training item is held out as a validation target (the model
trains on the rest of the sequence) and training stops after ``patience`` epochs without a
better validation NDCG@10; the weights of the best epoch are kept. The held-out items remain
part of the user's sequence when recommending.

A user's recommendations are the scores at the end of their sequence (the latest
``max_len`` items); ``recommend_from_history`` reads the given items oldest first, so an
anonymous session is served from its recent items in order. A history given only as a matrix
(no order) is read in item order.

Fitting is seeded (``random_state``: initial weights, shuffling, dropout) and reproducible on
the CPU; ``device="auto"`` trains on CUDA when present.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from tastebud.data.dataset import Dataset
from tastebud.metrics.ranking import ndcg_at_k
from tastebud.models.base import top_k
from tastebud.models.neural._torch import TorchRecommender, import_torch, pick_device, train
from tastebud.models.registry import register

SasLoss = Literal["softmax", "sampled"]
_SCORE_BATCH = 256


def time_ordered(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Every user's items, oldest first (ties and untimed data in their stored order), as
    ``(indptr, items)`` over internal indices."""
    users = dataset.user_index
    key = dataset.timestamp if dataset.timestamp is not None else np.zeros(len(users))
    order = np.lexsort((np.arange(len(users)), key, users))
    indptr = np.zeros(dataset.n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=dataset.n_users), out=indptr[1:])
    return indptr, dataset.item_index[order].astype(np.int64)


def padded(sequences: list[np.ndarray], max_len: int) -> np.ndarray:
    """Left-padded array of item indices + 1 (0 = padding), latest last, as wide as the
    longest sequence or ``max_len`` (only the latest ``max_len`` items are kept)."""
    width = max([min(len(s), max_len) for s in sequences], default=0)
    out = np.zeros((len(sequences), max(width, 1)), dtype=np.int64)
    for row, seq in enumerate(sequences):
        tail = seq[-max_len:]
        if len(tail):
            out[row, -len(tail) :] = tail + 1
    return out


def _net_class() -> Any:
    torch = import_torch()
    nn = torch.nn

    class SASRecNet(nn.Module):  # type: ignore[name-defined]
        def __init__(
            self, n_items: int, factors: int, layers: int, heads: int, max_len: int, dropout: float
        ) -> None:
            super().__init__()
            self.item = nn.Embedding(n_items + 1, factors, padding_idx=0)
            self.position = nn.Embedding(max_len, factors)
            self.dropout = nn.Dropout(dropout)
            layer = nn.TransformerEncoderLayer(
                factors,
                heads,
                dim_feedforward=factors,
                dropout=dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(factors)
            self.heads = heads
            self.max_len = max_len
            self.scale = float(np.sqrt(factors))

        def forward(self, seq: Any) -> Any:
            """Hidden states (batch x length x factors) of left-padded sequences; the latest
            item always has the last position, however wide the batch."""
            length = seq.shape[1]
            positions = torch.arange(self.max_len - length, self.max_len, device=seq.device)
            x = self.item(seq) * self.scale + self.position(positions)[None]
            x = self.dropout(x * (seq > 0).unsqueeze(-1))
            # causal, and no attention to padding -- but every position may see itself, so a
            # padded query never has all its keys masked (NaN)
            causal = torch.ones(length, length, dtype=torch.bool, device=seq.device).triu(1)
            blocked = causal[None] | (seq == 0)[:, None, :]
            blocked = blocked & ~torch.eye(length, dtype=torch.bool, device=seq.device)[None]
            mask = torch.zeros(blocked.shape, device=seq.device).masked_fill(blocked, float("-inf"))
            mask = mask.repeat_interleave(self.heads, dim=0)
            return self.norm(self.encoder(x, mask=mask))

        def scores(self, hidden: Any) -> Any:
            """Scores of every item (without the padding row) for hidden states."""
            return hidden @ self.item.weight[1:].T

    return SASRecNet


@register("sasrec")
@dataclasses.dataclass(kw_only=True, eq=False)
class SASRec(TorchRecommender):
    """Causal self-attention over the time-ordered history (module docstring).

    Parameters
    ----------
    factors:
        Embedding and hidden size.
    layers, heads:
        Transformer blocks and attention heads (``factors`` must divide by ``heads``).
    max_len:
        Latest items of a history the model reads.
    dropout:
        Dropout of the embeddings, attention and feed-forward layers.
    loss:
        ``"softmax"`` (full cross-entropy) or ``"sampled"`` (``negatives`` uniform negatives).
    negatives:
        Negatives per batch with ``loss="sampled"``.
    epochs, patience:
        At most ``epochs`` passes; stop after ``patience`` without a better validation NDCG@10
        (``patience=0``: no validation, train all epochs on the full sequences).
    batch_size, learning_rate, weight_decay:
        Adam(W) settings.
    device:
        ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    progress:
        Show a progress bar over the epochs.
    random_state:
        Seed of the weights, the shuffling and dropout.
    """

    factors: int = 64
    layers: int = 2
    heads: int = 2
    max_len: int = 200
    dropout: float = 0.2
    loss: SasLoss = "softmax"
    negatives: int = 256
    epochs: int = 200
    patience: int = 10
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    device: str = "auto"
    progress: bool = False
    random_state: int = 0

    def _validate(self) -> None:
        super()._validate()
        self._check(self.factors >= 1, "factors must be >= 1")
        self._check(self.layers >= 1, "layers must be >= 1")
        self._check(
            self.heads >= 1 and self.factors % self.heads == 0,
            "heads must be >= 1 and divide factors",
        )
        self._check(self.max_len >= 2, "max_len must be >= 2")
        self._check(0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)")
        self._check(self.negatives >= 1, "negatives must be >= 1")
        self._check(self.epochs >= 1, "epochs must be >= 1")
        self._check(self.patience >= 0, "patience must be >= 0")
        self._check(self.batch_size >= 1, "batch_size must be >= 1")
        self._check(self.learning_rate > 0, "learning_rate must be > 0")
        self._check(self.weight_decay >= 0, "weight_decay must be >= 0")
        self._check(self.random_state >= 0, "random_state must be >= 0")

    def _build(self) -> Any:
        return _net_class()(
            len(self.items_),
            int(self.factors),
            int(self.layers),
            int(self.heads),
            int(self.max_len),
            float(self.dropout),
        )

    # -- fitting --------------------------------------------------------------------------------
    def _fit(self, dataset: Dataset) -> None:
        torch = import_torch()
        device = pick_device(self.device)
        indptr, items = time_ordered(dataset)
        self.sequence_indptr_ = indptr
        self.sequence_items_ = items
        torch.manual_seed(int(self.random_state))
        rng = np.random.default_rng(self.random_state)
        net = self._build().to(device)
        sequences = [items[indptr[u] : indptr[u + 1]] for u in range(dataset.n_users)]
        validate = None
        if self.patience > 0:  # hold out each user's last item
            val_users = np.flatnonzero(np.diff(indptr) >= 2)
            val_target = np.array([sequences[u][-1] for u in val_users], dtype=np.int64)
            train_seqs = [s[:-1] if len(s) >= 2 else s for s in sequences]
            val_inputs = torch.from_numpy(
                padded([train_seqs[u] for u in val_users], int(self.max_len))
            ).to(device)
            val_seen = [train_seqs[u] for u in val_users]

            def validate() -> float:
                return self._validation_ndcg(net, val_inputs, val_target, val_seen)

        else:
            train_seqs = sequences
        # inputs s[:-1] predict targets s[1:]
        rows = [s for s in train_seqs if len(s) >= 2]
        inputs = torch.from_numpy(padded([s[:-1] for s in rows], int(self.max_len)))
        targets = torch.from_numpy(padded([s[1:] for s in rows], int(self.max_len)))
        optimizer = torch.optim.AdamW(
            net.parameters(), lr=float(self.learning_rate), weight_decay=float(self.weight_decay)
        )
        n_items = len(self.items_)

        def epoch(_: int) -> float:
            order = rng.permutation(len(rows))
            total, count = 0.0, 0
            for start in range(0, len(order), int(self.batch_size)):
                batch = torch.from_numpy(order[start : start + int(self.batch_size)])
                x, y = inputs[batch], targets[batch]
                first = int((x > 0).any(dim=0).nonzero()[0])  # drop all-padding columns
                x, y = x[:, first:].to(device), y[:, first:].to(device)
                hidden = net(x)[y > 0]
                y = y[y > 0] - 1
                if self.loss == "softmax":
                    loss = torch.nn.functional.cross_entropy(net.scores(hidden), y)
                else:
                    negatives = torch.from_numpy(rng.integers(0, n_items, int(self.negatives))).to(
                        device
                    )
                    weights = net.item.weight[1:]
                    positive = (hidden * weights[y]).sum(-1, keepdim=True)
                    negative = hidden @ weights[negatives].T
                    negative = negative.masked_fill(negatives[None] == y[:, None], float("-inf"))
                    logits = torch.cat([positive, negative], dim=1)
                    zero = torch.zeros(len(y), dtype=torch.long, device=device)
                    loss = torch.nn.functional.cross_entropy(logits, zero)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(y)
                count += len(y)
            return total / max(count, 1)

        history = train(
            net,
            epoch,
            validate,
            epochs=int(self.epochs),
            patience=int(self.patience),
            progress=bool(self.progress),
            desc="sasrec",
        )
        self.loss_ = np.asarray(history.loss)
        self.validation_ndcg_ = np.asarray(history.validation)
        self.best_epoch_ = int(history.best_epoch)
        self._keep(net)

    @staticmethod
    def _validation_ndcg(
        net: Any, inputs: Any, target: np.ndarray, seen: list[np.ndarray]
    ) -> float:
        """Mean NDCG@10 of each held-out item among all items but the user's earlier ones."""
        torch = import_torch()
        tops = []
        with torch.no_grad():
            for start in range(0, len(target), _SCORE_BATCH):
                stop = start + _SCORE_BATCH
                scores = net.scores(net(inputs[start:stop])[:, -1]).cpu().numpy()
                for row, user_seen in enumerate(seen[start:stop]):
                    scores[row, user_seen] = -np.inf
                tops.append(top_k(scores, 10)[0])
        if not tops:
            return 0.0
        top = np.vstack(tops)
        rows = np.arange(len(target))
        shape = (len(target), net.item.num_embeddings - 1)  # the padding row is no item
        relevant = sp.csr_matrix((np.ones(len(target)), (rows, target)), shape=shape)
        return float(ndcg_at_k(top, relevant, 10).mean())

    # -- scoring --------------------------------------------------------------------------------
    def _sequence_scores(self, sequences: list[np.ndarray]) -> np.ndarray:
        torch = import_torch()
        net: Any = self._network()
        device = next(net.parameters()).device
        out = np.empty((len(sequences), len(self.items_)), dtype=np.float64)
        with torch.no_grad():
            for start in range(0, len(sequences), _SCORE_BATCH):
                block = padded(sequences[start : start + _SCORE_BATCH], int(self.max_len))
                hidden = net(torch.from_numpy(block).to(device))[:, -1]
                out[start : start + len(block)] = net.scores(hidden).cpu().numpy()
        return out

    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        indptr, seq = self.sequence_indptr_, self.sequence_items_
        scores = self._sequence_scores([seq[indptr[u] : indptr[u + 1]] for u in users])
        return scores if items is None else scores[:, items]

    def _score_sequences(self, sequences: list[np.ndarray], histories: sp.csr_matrix) -> np.ndarray:
        out = self._fallback_scores(len(sequences), None).copy()
        rows = [i for i, s in enumerate(sequences) if len(s)]
        if rows:
            out[rows] = self._sequence_scores([sequences[i] for i in rows])
        return out

    def _score_histories(self, histories: sp.csr_matrix) -> np.ndarray:
        h = sp.csr_matrix(histories)
        h.sort_indices()
        sequences = [
            h.indices[h.indptr[r] : h.indptr[r + 1]][h.data[h.indptr[r] : h.indptr[r + 1]] > 0]
            for r in range(h.shape[0])
        ]
        return self._score_sequences([np.asarray(s, dtype=np.int64) for s in sequences], h)

    def _similar(self, items: np.ndarray) -> np.ndarray:
        weights = self.__dict__["weights/item.weight"][1:]
        norms = np.linalg.norm(weights, axis=1, keepdims=True)
        unit = np.divide(weights, norms, out=np.zeros_like(weights), where=norms > 0)
        return np.asarray(unit[items] @ unit.T, dtype=np.float64)
