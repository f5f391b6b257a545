"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018).

A user is the time-ordered sequence of the items they interacted with. Item embeddings plus
learned position embeddings go through ``layers`` blocks of causal self-attention (pre-norm
transformer layers: each position sees itself and the positions before it), and the output at
position t scores every item as the next one by a dot product with the (shared) item
embeddings. Training predicts, at every position of every user's sequence, the item that
came next:

``loss="auto"`` (the default)
    the full softmax up to :data:`FULL_SOFTMAX_MAX_ITEMS` items, sampled above (a full
    softmax over a million items is a batch x positions x items array per step);
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
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp

from tastebud.data.dataset import Dataset
from tastebud.models._retrieval import Searchable
from tastebud.models.neural._torch import (
    OneItemHoldout,
    TorchRecommender,
    cosine_rows,
    history_sequences,
    import_torch,
    length_batches,
)
from tastebud.models.registry import register

SasLoss = Literal["auto", "softmax", "sampled"]
#: ``loss="auto"`` trains with the full softmax up to this many items, sampled above.
FULL_SOFTMAX_MAX_ITEMS = 50_000
_SCORE_BATCH = 256


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

    class SequenceNet(nn.Module):  # type: ignore[name-defined]
        def __init__(
            self,
            n_items: int,
            factors: int,
            layers: int,
            heads: int,
            max_len: int,
            dropout: float,
            causal: bool = True,
        ) -> None:
            super().__init__()
            # rows: 0 padding, 1..n_items the items; a bidirectional net has a mask token last
            self.n_items = n_items
            self.causal = causal
            extra = 0 if causal else 1
            self.item = nn.Embedding(n_items + 1 + extra, factors, padding_idx=0)
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
            # unit-length item vectors: the tied output starts with logits near 1, not near
            # ``factors`` (nn.Embedding's N(0, 1) saturates the softmax at the first step)
            nn.init.normal_(self.item.weight, std=factors**-0.5)
            nn.init.normal_(self.position.weight, std=factors**-0.5)
            with torch.no_grad():
                self.item.weight[0].zero_()

        def forward(self, seq: Any) -> Any:
            """Hidden states (batch x length x factors) of left-padded sequences; the latest
            item always has the last position, however wide the batch."""
            length = seq.shape[1]
            positions = torch.arange(self.max_len - length, self.max_len, device=seq.device)
            x = self.item(seq) * self.scale + self.position(positions)[None]
            x = self.dropout(x * (seq > 0).unsqueeze(-1))
            # causal (SASRec) or not (BERT4Rec), and no attention to padding -- but every
            # position may see itself, so a padded query never has all its keys masked (NaN)
            blocked = (seq == 0)[:, None, :].expand(-1, length, -1)
            if self.causal:
                later = torch.ones(length, length, dtype=torch.bool, device=seq.device).triu(1)
                blocked = blocked | later[None]
            blocked = blocked & ~torch.eye(length, dtype=torch.bool, device=seq.device)[None]
            mask = torch.zeros(blocked.shape, device=seq.device).masked_fill(blocked, float("-inf"))
            mask = mask.repeat_interleave(self.heads, dim=0)
            return self.norm(self.encoder(x, mask=mask))

        def scores(self, hidden: Any) -> Any:
            """Scores of every item (without the padding row) for hidden states."""
            return hidden @ self.item.weight[1 : self.n_items + 1].T

    return SequenceNet


@register("sasrec")
@dataclasses.dataclass(kw_only=True, eq=False)
class SASRec(TorchRecommender, Searchable):
    """Causal self-attention over the time-ordered history.

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
        ``"softmax"`` (full cross-entropy), ``"sampled"`` (``negatives`` uniform negatives)
        or ``"auto"``: the full softmax up to 50,000 items, sampled above.
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
    index, ann_min_items:
        Retrieval: ``"auto"`` searches a faiss index over the item embeddings (the scores
        are the last hidden state's inner products with them) from ``ann_min_items``
        (50,000) items on; ``"exact"`` or ``"ann"`` force one (:mod:`tastebud.models._retrieval`).
    """

    factors: int = 64
    layers: int = 2
    heads: int = 2
    max_len: int = 50
    dropout: float = 0.2
    loss: SasLoss = "auto"
    negatives: int = 256
    epochs: int = 100
    patience: int = 5
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 0.0
    device: str = "auto"
    progress: bool = False
    random_state: int = 0

    #: Whether attention only looks back (SASRec) or both ways (BERT4Rec).
    causal: ClassVar[bool] = True
    reads_order: ClassVar[bool] = True

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
        self._check_training()

    def _build(self) -> Any:
        return _net_class()(
            len(self.items_),
            int(self.factors),
            int(self.layers),
            int(self.heads),
            int(self.max_len),
            float(self.dropout),
            causal=self.causal,
        )

    # -- fitting --------------------------------------------------------------------------------
    def _fit(self, dataset: Dataset) -> None:
        torch, device, rng = self._start(dataset)
        indptr, items = self._ordered(dataset)
        self.sequence_indptr_ = indptr
        self.sequence_items_ = items
        net = self._build().to(device)
        validate, holdout = None, None
        if self.patience > 0:  # hold out each user's last item
            holdout = OneItemHoldout.carve(indptr, items, dataset.n_items)
            train_seqs = holdout.sequences
            val_inputs = torch.from_numpy(
                padded([train_seqs[u] for u in holdout.users], int(self.max_len))
            ).to(device)

            def validate() -> float:
                with torch.no_grad():
                    return holdout.ndcg(
                        lambda a, b: (
                            net.scores(self._last_hidden(net, val_inputs[a:b])).cpu().numpy()
                        )
                    )

        else:
            train_seqs = [items[indptr[u] : indptr[u + 1]] for u in range(dataset.n_users)]
        inputs, targets, lengths = self._training_rows(train_seqs)
        optimizer = self._optimizer(net)
        n_items = len(self.items_)
        full = self.loss == "softmax" or (self.loss == "auto" and n_items <= FULL_SOFTMAX_MAX_ITEMS)

        def epoch(_: int) -> float:
            total, count = 0.0, 0
            for rows_ in length_batches(lengths, int(self.batch_size), rng):
                batch = torch.from_numpy(rows_)
                x, y = inputs[batch], targets[batch]
                first = int((x > 0).any(dim=0).nonzero()[0])  # drop all-padding columns
                x, y = x[:, first:].to(device), y[:, first:].to(device)
                x, y = self._masked(x, y, net)
                hidden = net(x)[y > 0]
                y = y[y > 0] - 1
                if full:
                    loss = torch.nn.functional.cross_entropy(net.scores(hidden), y)
                else:
                    negatives = torch.from_numpy(rng.integers(0, n_items, int(self.negatives))).to(
                        device
                    )
                    weights = net.item.weight[1 : n_items + 1]
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

        self._train(net, epoch, validate, holdout)
        self._keep(net)

    def _training_rows(self, sequences: list[np.ndarray]) -> tuple[Any, Any, np.ndarray]:
        """Padded inputs and targets (0 = nothing to predict) and the row lengths: SASRec's
        inputs ``s[:-1]`` predict the targets ``s[1:]``."""
        torch = import_torch()
        rows = [s for s in sequences if len(s) >= 2]
        inputs = torch.from_numpy(padded([s[:-1] for s in rows], int(self.max_len)))
        targets = torch.from_numpy(padded([s[1:] for s in rows], int(self.max_len)))
        return inputs, targets, np.array([min(len(s) - 1, int(self.max_len)) for s in rows])

    def _masked(self, x: Any, y: Any, net: Any) -> tuple[Any, Any]:
        """The inputs and targets of one training batch (BERT4Rec masks items here)."""
        return x, y

    def _last_hidden(self, net: Any, block: Any) -> Any:
        """The hidden state that scores the next item of each left-padded sequence."""
        return net(block)[:, -1]

    # -- scoring --------------------------------------------------------------------------------
    def _hidden_blocks(self, sequences: list[np.ndarray]) -> Iterator[tuple[int, Any, Any]]:
        """(start, network, hidden states) per block of ``_SCORE_BATCH`` sequences, under
        ``torch.no_grad``."""
        torch = import_torch()
        net: Any = self._network()
        device = next(net.parameters()).device
        with torch.no_grad():
            for start in range(0, len(sequences), _SCORE_BATCH):
                block = padded(sequences[start : start + _SCORE_BATCH], int(self.max_len))
                yield start, net, self._last_hidden(net, torch.from_numpy(block).to(device))

    def _sequence_scores(self, sequences: list[np.ndarray]) -> np.ndarray:
        out = np.empty((len(sequences), len(self.items_)), dtype=np.float64)
        for start, net, hidden in self._hidden_blocks(sequences):
            out[start : start + len(hidden)] = net.scores(hidden).cpu().numpy()
        return out

    # -- retrieval (tastebud.models._retrieval): hidden state . item embedding ---------------
    def _search_items(self) -> np.ndarray:
        weights = self.__dict__["weights/item.weight"]
        cached = self.__dict__.get("_search_side")
        if cached is None or cached[0] is not weights:
            side = np.ascontiguousarray(weights[1 : len(self.items_) + 1], dtype=np.float32)
            cached = self.__dict__["_search_side"] = (weights, side)
        return cached[1]

    def _search_queries(
        self,
        users: np.ndarray | None,
        histories: sp.csr_matrix | None = None,
        sequences: list[np.ndarray] | None = None,
    ) -> tuple[np.ndarray, None]:
        if histories is not None:
            ordered = history_sequences(histories) if sequences is None else sequences
        else:
            assert users is not None
            indptr, seq = self.sequence_indptr_, self.sequence_items_
            ordered = [seq[indptr[u] : indptr[u + 1]] for u in users]
        hidden = [h.float().cpu().numpy() for _, _, h in self._hidden_blocks(ordered)]
        return np.ascontiguousarray(np.vstack(hidden), dtype=np.float32), None

    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        indptr, seq = self.sequence_indptr_, self.sequence_items_
        scores = self._sequence_scores([seq[indptr[u] : indptr[u + 1]] for u in users])
        return scores if items is None else scores[:, items]

    def _score_history(
        self, histories: sp.csr_matrix, sequences: list[np.ndarray] | None = None
    ) -> np.ndarray:
        sequences = history_sequences(histories) if sequences is None else sequences
        out = self._fallback_scores(len(sequences), None).copy()
        rows = [i for i, s in enumerate(sequences) if len(s)]
        if rows:
            out[rows] = self._sequence_scores([sequences[i] for i in rows])
        return out

    def _similar(self, items: np.ndarray) -> np.ndarray:
        return cosine_rows(self.__dict__["weights/item.weight"][1 : len(self.items_) + 1], items)
