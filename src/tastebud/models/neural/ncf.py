"""NCF: neural collaborative filtering (He et al., WWW 2017) -- GMF, MLP and NeuMF.

Every interaction is a positive; each epoch draws ``negatives`` items per positive among the
items the user never interacted with, and the network learns ``P(interaction | user, item)``
with the binary cross-entropy of the paper.

``model="gmf"``
    generalized matrix factorization: a learned weighting ``h`` of the element-wise product
    of the user and item embeddings;
``model="mlp"``
    the concatenated user and item embeddings through a ReLU tower (``layers``: the input
    width first, halving in the paper);
``model="neumf"``
    both side by side (separate embeddings), their last layers concatenated into one output.
    The paper initializes NeuMF from pre-trained GMF and MLP models; here it trains from
    scratch with Adam (``pretrain`` is not offered).

Early stopping holds out a random item of each user (:class:`~._torch.OneItemHoldout`: NCF
reads no order, so the latest item is no better a target) and keeps the epoch with the best
NDCG@10 on it. NCF is an id model: users without training
interactions get the popularity fallback and it cannot fold in a new history.

Scoring every item for a user goes through the tower once per (user, item) pair, but the
first layer is split into its user and item halves, computed once per user and once per
item.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Literal

import numpy as np

from tastebud.data.dataset import Dataset
from tastebud.models.neural._torch import (
    OneItemHoldout,
    TorchRecommender,
    cosine_rows,
    import_torch,
    sample_negatives,
)
from tastebud.models.registry import register

Architecture = Literal["gmf", "mlp", "neumf"]
_PAIRS = 1 << 20  # (user, item) pairs through the tower at once when scoring
# embeddings start at N(0, 0.1^2): the paper's 0.01 leaves the MLP predicting a constant for
# tens of epochs on small data (a saddle the larger start avoids)
INIT_STD = 0.1


def _net_class() -> Any:
    torch = import_torch()
    nn = torch.nn

    class NCFNet(nn.Module):  # type: ignore[name-defined]
        def __init__(
            self,
            n_users: int,
            n_items: int,
            model: str,
            factors: int,
            layers: tuple[int, ...],
            dropout: float,
        ) -> None:
            super().__init__()
            self.model = model
            width = self.gmf_width = factors if model in ("gmf", "neumf") else 0
            if model in ("gmf", "neumf"):
                self.gmf_user = nn.Embedding(n_users, factors)
                self.gmf_item = nn.Embedding(n_items, factors)
            if model in ("mlp", "neumf"):
                half = layers[0] // 2
                self.mlp_user = nn.Embedding(n_users, half)
                self.mlp_item = nn.Embedding(n_items, half)
                self.first = nn.Linear(2 * half, layers[1])
                rest: list[Any] = []
                for a, b in itertools.pairwise(layers[1:]):
                    rest += [nn.ReLU(), nn.Dropout(dropout), nn.Linear(a, b)]
                self.tower = nn.Sequential(*rest, nn.ReLU(), nn.Dropout(dropout))
                self.half = half
                width += layers[-1]
            self.out = nn.Linear(width, 1)
            for module in self.modules():
                if isinstance(module, nn.Embedding):
                    nn.init.normal_(module.weight, std=INIT_STD)

        def forward(self, users: Any, items: Any) -> Any:
            """Logits of (user, item) pairs."""
            parts = []
            if self.model in ("gmf", "neumf"):
                parts.append(self.gmf_user(users) * self.gmf_item(items))
            if self.model in ("mlp", "neumf"):
                joint = torch.cat([self.mlp_user(users), self.mlp_item(items)], dim=-1)
                parts.append(self.tower(self.first(joint)))
            return self.out(torch.cat(parts, dim=-1)).squeeze(-1)

        def score_all(self, users: Any) -> Any:
            """Logits of every item for each user (``len(users) x n_items``)."""
            w = self.out.weight[0]
            total = self.out.bias.expand(len(users), -1)
            if self.model in ("gmf", "neumf"):
                gmf_w = w[: self.gmf_width]
                total = total + self.gmf_user(users) @ (self.gmf_item.weight * gmf_w).T
            if self.model in ("mlp", "neumf"):
                w_mlp = w[self.gmf_width :]
                weight = self.first.weight
                user_part = self.mlp_user(users) @ weight[:, : self.half].T + self.first.bias
                item_part = self.mlp_item.weight @ weight[:, self.half :].T
                step = max(1, _PAIRS // max(len(users), 1))
                chunks = []
                for start in range(0, len(item_part), step):
                    joint = user_part[:, None] + item_part[None, start : start + step]
                    chunks.append(self.tower(joint) @ w_mlp)
                total = total + torch.cat(chunks, dim=1)
            return total

    return NCFNet


@register("ncf")
@dataclasses.dataclass(kw_only=True, eq=False)
class NCF(TorchRecommender):
    """GMF, MLP or NeuMF trained with sampled negatives.

    Parameters
    ----------
    model:
        ``"gmf"``, ``"mlp"`` or ``"neumf"``.
    factors:
        GMF embedding size (``gmf``, ``neumf``).
    layers:
        MLP widths, the input (both embeddings together, so even) first; the last one is the
        MLP's predictive factors (``mlp``, ``neumf``).
    negatives:
        Sampled negatives per positive, redrawn every epoch (4 in the paper).
    dropout:
        Dropout after each hidden layer of the MLP.
    epochs, patience:
        At most ``epochs`` passes; stop after ``patience`` without a better validation NDCG@10
        on each user's held-out latest item (``patience=0``: train every epoch on all data).
    batch_size, learning_rate, weight_decay:
        Adam(W) settings.
    device, progress, random_state:
        As for every torch model: ``"auto"`` uses CUDA when present; a progress bar; the seed of
        the weights, the negatives and the shuffling.
    """

    model: Architecture = "neumf"
    factors: int = 32
    layers: tuple[int, ...] = (128, 64, 32)
    negatives: int = 4
    dropout: float = 0.0
    epochs: int = 30
    patience: int = 3
    batch_size: int = 4096
    learning_rate: float = 3e-3
    weight_decay: float = 0.0
    device: str = "auto"
    progress: bool = False
    random_state: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.layers, list):
            self.layers = tuple(self.layers)  # JSON round trips give lists

    def _validate(self) -> None:
        super()._validate()
        self._check(self.factors >= 1, "factors must be >= 1")
        self._check(
            len(self.layers) >= 2 and all(w >= 1 for w in self.layers) and self.layers[0] % 2 == 0,
            "layers must list at least two widths >= 1, the first one even",
        )
        self._check(self.negatives >= 1, "negatives must be >= 1")
        self._check(0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)")
        self._check_training()

    def _build(self) -> Any:
        return _net_class()(
            len(self.users_),
            len(self.items_),
            str(self.model),
            int(self.factors),
            tuple(int(w) for w in self.layers),
            float(self.dropout),
        )

    def _fit(self, dataset: Dataset) -> None:
        torch, device, rng = self._start(dataset)
        net = self._build().to(device)
        validate, holdout = None, None
        if self.patience > 0:
            holdout = OneItemHoldout.carve(
                *self._ordered(dataset), dataset.n_items, pick="random", seed=self.random_state
            )
            positives = holdout.matrix()
            val_users = torch.from_numpy(holdout.users).to(device)

            def validate() -> float:
                with torch.no_grad():
                    return holdout.ndcg(lambda a, b: net.score_all(val_users[a:b]).cpu().numpy())

        else:
            positives = dataset.matrix("binary")
            positives.sum_duplicates()
        coo = positives.tocoo()
        pos_users, pos_items = coo.row.astype(np.int64), coo.col.astype(np.int64)
        optimizer = self._optimizer(net)
        n_neg = int(self.negatives)

        def epoch(_: int) -> float:
            users = np.concatenate([pos_users] * (1 + n_neg))
            items = np.concatenate(
                [pos_items] + [sample_negatives(positives, pos_users, rng) for _ in range(n_neg)]
            )
            labels = np.zeros(len(users), dtype=np.float32)
            labels[: len(pos_users)] = 1.0
            order = rng.permutation(len(users))
            u_all, i_all = torch.from_numpy(users[order]), torch.from_numpy(items[order])
            y_all = torch.from_numpy(labels[order])
            total = 0.0
            for start in range(0, len(order), int(self.batch_size)):
                stop = start + int(self.batch_size)
                u, i, y = (t[start:stop].to(device) for t in (u_all, i_all, y_all))
                loss = torch.nn.functional.binary_cross_entropy_with_logits(net(u, i), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(y)
            return total / max(len(order), 1)

        self._train(net, epoch, validate, holdout)
        self._keep(net)

    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        torch = import_torch()
        net: Any = self._network()
        device = next(net.parameters()).device
        with torch.no_grad():
            scores = net.score_all(torch.from_numpy(users.astype(np.int64)).to(device))
        out = scores.cpu().numpy().astype(np.float64)
        return out if items is None else out[:, items]

    def _similar(self, items: np.ndarray) -> np.ndarray:
        """Cosine similarity of the item embeddings (GMF's, else the MLP's)."""
        key = "gmf_item" if self.model in ("gmf", "neumf") else "mlp_item"
        return cosine_rows(self.__dict__[f"weights/{key}.weight"], items)
