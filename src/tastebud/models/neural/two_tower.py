"""Two-tower retrieval: a user tower and an item tower trained with a (sampled) softmax,
item vectors served from an ANN index.

The user tower reads the user's id embedding, a projection of their metadata vector and the
mean embedding of their ``history_len`` most recent items; the item tower reads the item's id
embedding, a projection of its metadata vector and, with ``text="minilm"``, a projection of
the all-MiniLM-L6-v2 embedding of its text fields. Each tower is a ReLU MLP ending in
``factors`` dimensions, L2-normalized; a user-item score is their cosine over
``temperature``.

Training samples are every (user, item) of the training data, with a history beside each:
with ``history_order="any"`` up to ``history_len`` of the user's *other* items, drawn afresh
every epoch (the history is read as a set); with ``"time"`` the items that came before it
in time (what a next-item model reads). ``loss`` says what the user vector is scored against:

``"softmax"``
    every item of the catalogue (the user's other training items masked: they are not
    negatives);
``"sampled"``
    the sample's item against ``negatives`` items drawn uniformly and shared by the batch
    (the user's training items among them masked) -- for catalogues too large to score
    every item at every step;
``"in-batch"``
    the other samples' items of the batch, with the logQ correction of Yi et al. (RecSys
    2019): ``log`` of each item's share of the training samples is subtracted from its
    logits, since popular items are sampled as negatives more often; a row's own item
    elsewhere in the batch is masked;
``"auto"`` (the default)
    the full softmax when the catalogue has at most ``negatives`` items, in-batch above (on
    Last.fm's 17,632 artists, validation NDCG@10 0.146 in-batch against 0.139 sampled).

With probability ``id_dropout`` a user's id embedding is hidden, so the user tower also works
from history and metadata alone (sessions, users known by attributes); items and users
without training interactions keep a zero id embedding: items are placed by their metadata
and text, users by their attributes.

After training the item vectors are computed once (``item_vectors_``). Recommendations and
``similar_items`` are a nearest-neighbour search over them: an exact matrix product, or with
``index="ann"`` (``"auto"``: catalogs of at least ``ann_min_items``) a faiss inverted-file
(IVF) index (:class:`tastebud.ann.VectorIndex`), built on first use. The index returns
extra candidates for users with seen items, which are then removed.

Early stopping holds out one item of each user (:class:`~._torch.OneItemHoldout`): a random
one with ``history_order="any"``, the latest with ``"time"``.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from tastebud.data.dataset import Dataset
from tastebud.models._retrieval import Searchable
from tastebud.models.neural._recent import HistoryOrder, RecentItemsRecommender
from tastebud.models.neural._torch import (
    history_sequences,
    import_torch,
    recent,
    sequence_matrix,
)
from tastebud.models.registry import register

Text = Literal["none", "minilm"]
TowerLoss = Literal["auto", "softmax", "sampled", "in-batch"]


def _net_class() -> Any:
    torch = import_torch()
    nn = torch.nn
    functional = torch.nn.functional

    def mlp(width: int, layers: tuple[int, ...], out: int) -> Any:
        modules: list[Any] = []
        for a, b in itertools.pairwise((width, *layers)):
            modules += [nn.Linear(a, b), nn.ReLU()]
        return nn.Sequential(*modules, nn.Linear(layers[-1] if layers else width, out))

    class TwoTowerNet(nn.Module):  # type: ignore[name-defined]
        def __init__(
            self,
            user_meta: np.ndarray,
            item_meta: np.ndarray,
            item_text: np.ndarray,
            factors: int,
            meta_factors: int,
            layers: tuple[int, ...],
            id_dropout: float,
        ) -> None:
            super().__init__()
            n_users, n_items = len(user_meta), len(item_meta)
            self.register_buffer("user_meta", torch.from_numpy(user_meta))
            self.register_buffer("item_meta", torch.from_numpy(item_meta))
            self.register_buffer("item_text", torch.from_numpy(item_text))
            self.user_id = nn.Embedding(n_users, factors)
            self.item_id = nn.Embedding(n_items, factors)
            self.history = nn.Embedding(n_items + 1, factors, padding_idx=0)
            for embedding in (self.user_id, self.item_id, self.history):
                nn.init.normal_(embedding.weight, std=0.05)
            with torch.no_grad():
                self.history.weight[0].zero_()

            def proj(width: int) -> Any:
                return nn.Linear(width, meta_factors) if width else None

            self.user_meta_proj = proj(user_meta.shape[1])
            self.item_meta_proj = proj(item_meta.shape[1])
            self.item_text_proj = proj(item_text.shape[1])
            user_width = 2 * factors + (meta_factors if self.user_meta_proj is not None else 0)
            item_width = factors + meta_factors * sum(
                p is not None for p in (self.item_meta_proj, self.item_text_proj)
            )
            self.user_tower = mlp(user_width, layers, factors)
            self.item_tower = mlp(item_width, layers, factors)
            self.id_dropout = id_dropout

        def users(self, users: Any, histories: Any) -> Any:
            """Unit user vectors from ids (-1: none), recent items (+1, 0 = padding) and, for
            known users, metadata."""
            known = (users >= 0).float()
            if self.training and self.id_dropout > 0:
                known = known * (torch.rand(len(users), device=users.device) >= self.id_dropout)
            safe = users.clamp(min=0)
            counts = (histories > 0).sum(-1, keepdim=True).clamp(min=1)
            parts = [
                self.user_id(safe) * known.unsqueeze(-1),
                self.history(histories).sum(1) / counts,
            ]
            if self.user_meta_proj is not None:
                parts.append(self.user_meta_proj(self.user_meta[safe] * known.unsqueeze(-1)))
            return functional.normalize(self.user_tower(torch.cat(parts, dim=-1)), dim=-1)

        def items(self, items: Any | None = None) -> Any:
            """Unit item vectors (every item when ``items`` is None)."""
            pick = (lambda t: t) if items is None else (lambda t: t[items])
            parts = [pick(self.item_id.weight)]
            if self.item_meta_proj is not None:
                parts.append(self.item_meta_proj(pick(self.item_meta)))
            if self.item_text_proj is not None:
                parts.append(self.item_text_proj(pick(self.item_text)))
            return functional.normalize(self.item_tower(torch.cat(parts, dim=-1)), dim=-1)

    return TwoTowerNet


@register("two-tower")
@dataclasses.dataclass(kw_only=True, eq=False)
class TwoTower(RecentItemsRecommender, Searchable):
    """User and item towers, in-batch softmax with logQ correction, ANN retrieval.

    Parameters
    ----------
    factors:
        Size of the id and history embeddings and of the output vectors.
    meta_factors:
        Size of the projections of metadata and text vectors.
    layers:
        Hidden widths of each tower's ReLU MLP (``()``: one linear map).
    history_len:
        Recent items averaged into the user tower's input.
    text, text_fields:
        ``"minilm"``: the item tower also reads the sentence embedding of the item's text
        fields (``text_fields``, default every text column; needs ``tastebud[embeddings]``).
    temperature:
        Cosine similarities are divided by it in the softmax.
    logq:
        Subtract the log of each item's sampling share from its in-batch logits
        (``loss="in-batch"``).
    loss, negatives:
        What each user vector is scored against in training (module docstring), and the
        sample size of ``"sampled"`` (and the largest catalogue ``"auto"`` scores whole).
    history_order:
        ``"any"``: a training sample's history is other items of its user (a set);
        ``"time"``: the items before it in time.
    id_dropout:
        Probability of hiding a training user's id embedding (module docstring).
    use_user_features, use_item_features:
        Use the dataset's user / item feature tables when it has them.
    index, ann_min_items:
        Retrieval: ``"exact"``, ``"ann"`` (faiss IVF; exact without faiss), or ``"auto"``
        (ANN from ``ann_min_items`` items on).
    epochs, patience, batch_size, learning_rate, weight_decay, device, progress, random_state:
        As for every torch model (early stopping on each user's held-out latest item).
    """

    factors: int = 64
    meta_factors: int = 16
    layers: tuple[int, ...] = (128,)
    history_len: int = 20
    text: Text = "none"
    text_fields: tuple[str, ...] | None = None
    temperature: float = 0.05
    logq: bool = True
    loss: TowerLoss = "auto"
    negatives: int = 2048
    # a set, not a sequence: on per-user random 80/20 splits of ML-100K (validation carved
    # from the training part) the "time" histories of next-item samples scored 0.13 NDCG@10,
    # below popularity, and "any" 0.21 (benchmarks/neural.py, docs/benchmarks.md)
    history_order: HistoryOrder = "any"
    id_dropout: float = 0.2
    use_user_features: bool = True
    use_item_features: bool = True
    epochs: int = 40
    patience: int = 3
    batch_size: int = 512
    learning_rate: float = 1e-2  # validation NDCG@10 0.218 against 0.211 at 3e-3, 0.208 at 3e-2
    weight_decay: float = 0.0
    device: str = "auto"
    progress: bool = False
    random_state: int = 0

    def __post_init__(self) -> None:
        for name in ("layers", "text_fields"):
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))  # JSON round trips give lists

    def _validate(self) -> None:
        super()._validate()
        self._check(self.factors >= 1, "factors must be >= 1")
        self._check(self.meta_factors >= 1, "meta_factors must be >= 1")
        self._check(all(w >= 1 for w in self.layers), "layers must be widths >= 1")
        self._check(self.history_len >= 1, "history_len must be >= 1")
        self._check(self.temperature > 0, "temperature must be > 0")
        self._check(0.0 <= self.id_dropout < 1.0, "id_dropout must be in [0, 1)")
        self._check(self.negatives >= 1, "negatives must be >= 1")
        self._check_training()

    def _build(self) -> Any:
        return _net_class()(
            np.zeros((len(self.users_), int(self.user_meta_width_)), dtype=np.float32),
            np.zeros((len(self.items_), int(self.item_meta_width_)), dtype=np.float32),
            np.zeros((len(self.items_), int(self.item_text_width_)), dtype=np.float32),
            int(self.factors),
            int(self.meta_factors),
            tuple(int(w) for w in self.layers),
            float(self.id_dropout),
        )

    def _text_vectors(self, dataset: Dataset) -> np.ndarray:
        if self.text == "none":
            return np.zeros((dataset.n_items, 0), dtype=np.float32)
        from tastebud.models.content import item_documents, sentence_encoder

        documents = item_documents(dataset, self.text_fields)
        encoded = sentence_encoder().encode(documents, batch_size=64, show_progress_bar=False)
        return np.asarray(encoded, dtype=np.float32)

    # -- fitting --------------------------------------------------------------------------------
    def _fit(self, dataset: Dataset) -> None:
        torch, device, rng = self._start(dataset)
        user_meta, item_meta = self._metadata(dataset)
        item_text = self._text_vectors(dataset)
        self.item_text_width_ = item_text.shape[1]
        net = self._build()
        for name, value in (("user_meta", user_meta), ("item_meta", item_meta)):
            getattr(net, name).copy_(torch.from_numpy(value))
        net.item_text.copy_(torch.from_numpy(item_text))
        net.to(device)
        sequences, holdout, validate = self._steps(dataset, net, device)
        items_all = np.concatenate(sequences) if len(sequences) else np.zeros(0, np.int64)
        counts = np.bincount(items_all, minlength=dataset.n_items)
        log_q = torch.from_numpy(
            np.log(np.maximum(counts, 1) / max(len(items_all), 1)).astype(np.float32)
        ).to(device)
        optimizer = self._optimizer(net)
        inverse_temperature = 1.0 / float(self.temperature)
        kind = self.loss
        if kind == "auto":
            kind = "softmax" if dataset.n_items <= int(self.negatives) else "in-batch"
        self.training_loss_ = kind  # what "auto" chose
        seen = sequence_matrix(sequences, dataset.n_items)  # never negatives of their user

        def epoch(_: int) -> float:
            steps = self._samples(sequences, rng)
            order = rng.permutation(len(steps.users))
            total = 0.0
            for start in range(0, len(order), int(self.batch_size)):
                rows = order[start : start + int(self.batch_size)]
                u = torch.from_numpy(steps.users[rows]).to(device)
                i = torch.from_numpy(steps.items[rows]).to(device)
                h = torch.from_numpy(steps.windows(rows)).to(device)
                vectors = net.users(u, h)
                if kind == "in-batch":
                    logits = vectors @ net.items(i).T * inverse_temperature
                    if self.logq:
                        logits = logits - log_q[i][None, :]
                    same = (i[:, None] == i[None, :]) & ~torch.eye(
                        len(i), dtype=torch.bool, device=device
                    )
                    logits = logits.masked_fill(same, float("-inf"))
                    target = torch.arange(len(i), device=device)
                else:
                    mine = seen[steps.users[rows]]
                    if kind == "softmax":
                        logits = vectors @ net.items().T * inverse_temperature
                        others = torch.from_numpy(mine.toarray() > 0).to(device)
                        others[torch.arange(len(i), device=device), i] = False
                        target = i
                    else:  # the positive first, then negatives shared by the batch
                        drawn = rng.integers(0, dataset.n_items, int(self.negatives))
                        negative = vectors @ net.items(torch.from_numpy(drawn).to(device)).T
                        positive = (vectors * net.items(i)).sum(-1, keepdim=True)
                        logits = torch.cat([positive, negative], dim=1) * inverse_temperature
                        others = torch.from_numpy(
                            np.hstack([np.zeros((len(rows), 1)), mine[:, drawn].toarray()]) > 0
                        ).to(device)
                        target = torch.zeros(len(i), dtype=torch.long, device=device)
                    logits = logits.masked_fill(others, float("-inf"))
                loss = torch.nn.functional.cross_entropy(logits, target)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(rows)
            return total / max(len(order), 1)

        self._train(net, epoch, validate, holdout)
        self._forget_untrained(net, sequences)
        with torch.no_grad():
            self.item_vectors_ = net.items().cpu().numpy()
        self._keep(net)

    # -- retrieval (tastebud.models._retrieval) -----------------------------------------------
    def _search_items(self) -> np.ndarray:
        return self.item_vectors_

    def _search_queries(
        self,
        users: np.ndarray | None,
        histories: sp.csr_matrix | None = None,
        sequences: list[np.ndarray] | None = None,
    ) -> tuple[np.ndarray, None]:
        if histories is not None:
            ordered = history_sequences(histories) if sequences is None else sequences
            return self._user_vectors(np.full(len(ordered), -1, dtype=np.int64), ordered), None
        assert users is not None
        return self._user_vectors(users, self._users_sequences(users)), None

    def _search_scale(self) -> float:
        return 1.0 / float(self.temperature)

    def _user_vectors(self, users: np.ndarray, sequences: list[np.ndarray]) -> np.ndarray:
        torch = import_torch()
        net: Any = self._network()
        device = next(net.parameters()).device
        with torch.no_grad():
            u = net.users(
                torch.from_numpy(users.astype(np.int64)).to(device),
                torch.from_numpy(recent(sequences, int(self.history_len))).to(device),
            )
        return np.asarray(u.cpu().numpy(), dtype=np.float32)

    def _net_scores(self, net: Any, users: Any, histories: Any) -> Any:
        return net.users(users, histories) @ net.items().T / float(self.temperature)

    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        vectors = self._user_vectors(users, self._users_sequences(users))
        item_vectors = self.item_vectors_ if items is None else self.item_vectors_[items]
        return np.asarray(vectors @ item_vectors.T, dtype=np.float64) / float(self.temperature)

    def _score_history(
        self, histories: sp.csr_matrix, sequences: list[np.ndarray] | None = None
    ) -> np.ndarray:
        sequences = history_sequences(histories) if sequences is None else sequences
        vectors = self._user_vectors(np.full(len(sequences), -1, dtype=np.int64), sequences)
        return np.asarray(vectors @ self.item_vectors_.T, dtype=np.float64) / float(
            self.temperature
        )

    def _similar(self, items: np.ndarray) -> np.ndarray:
        v = self.item_vectors_
        return np.asarray(v[items] @ v.T, dtype=np.float64)

    def _similar_vectors(self) -> np.ndarray:
        return self.item_vectors_
