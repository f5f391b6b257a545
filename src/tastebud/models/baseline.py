"""BaselineOnly: global mean plus regularized user and item biases (rating prediction).

    r̂(u, i) = μ + b_u + b_i

fitted by alternating least squares on the regularized squared error
Σ (r_ui - μ - b_u - b_i)² + λ_u Σ b_u² + λ_i Σ b_i², each step in closed form:

    b_u = Σ_{i ∈ I_u} (r_ui - μ - b_i) / (λ_u + |I_u|)
    b_i = Σ_{u ∈ U_i} (r_ui - μ - b_u) / (λ_i + |U_i|)

Koren, "Factor in the neighbors: scalable and accurate collaborative filtering", TKDD 2010,
section 2.1. Unknown users or items get a zero bias, so the fallback is the global mean plus the
known side's bias.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp

from tastebud.data.dataset import Dataset
from tastebud.models._retrieval import OneRanking
from tastebud.models.base import Recommender
from tastebud.models.registry import register


@register("baseline")
@dataclasses.dataclass(kw_only=True, eq=False)
class BaselineOnly(OneRanking, Recommender):
    """Global mean + user bias + item bias, for explicit ratings.

    Parameters
    ----------
    reg_user, reg_item:
        Shrinkage λ of user and item biases toward 0 (the defaults are the usual ones for
        1-5 star data).
    n_epochs:
        Alternating passes.
    """

    predicts_ratings = True
    needs_ratings = True

    reg_user: float = 15.0
    reg_item: float = 10.0
    n_epochs: int = 10

    def _validate(self) -> None:
        super()._validate()
        self._check(self.reg_user >= 0 and self.reg_item >= 0, "regularization must be >= 0")
        self._check(
            int(self.n_epochs) == self.n_epochs and self.n_epochs >= 1, "n_epochs must be >= 1"
        )

    def _fit(self, dataset: Dataset) -> None:
        r = dataset.values("rating").astype(np.float64)
        u, i = dataset.user_index, dataset.item_index
        mu = float(r.mean())
        n_u = np.bincount(u, minlength=dataset.n_users)
        n_i = np.bincount(i, minlength=dataset.n_items)
        b_u = np.zeros(dataset.n_users)
        b_i = np.zeros(dataset.n_items)
        for _ in range(int(self.n_epochs)):
            b_u = np.bincount(u, r - mu - b_i[i], dataset.n_users) / (self.reg_user + n_u)
            b_i = np.bincount(i, r - mu - b_u[u], dataset.n_items) / (self.reg_item + n_i)
        self.global_mean_ = mu
        self.user_bias_ = b_u
        self.item_bias_ = b_i
        self.rating_range_ = [float(r.min()), float(r.max())]

    def _predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        est = self.global_mean_ + np.where(users >= 0, self.user_bias_[users], 0.0)
        est = est + np.where(items >= 0, self.item_bias_[items], 0.0)
        low, high = self.rating_range_
        return np.clip(est, low, high)

    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        b_i = self.item_bias_ if items is None else self.item_bias_[items]
        return self.global_mean_ + self.user_bias_[users][:, None] + b_i[None, :]

    def _ranking_scores(self) -> np.ndarray:
        return self.item_bias_

    def _user_offsets(self, users: np.ndarray) -> np.ndarray | None:
        known = users >= 0
        return self.global_mean_ + np.where(known, self.user_bias_[np.where(known, users, 0)], 0.0)

    def _fallback_scores(self, n_rows: int, items: np.ndarray | None) -> np.ndarray:
        b_i = self.item_bias_ if items is None else self.item_bias_[items]
        return np.tile(self.global_mean_ + b_i, (n_rows, 1))

    def _score_history(
        self, histories: sp.csr_matrix, sequences: list[np.ndarray] | None = None
    ) -> np.ndarray:
        # Fold-in: the user bias that the ALS step would give this history, items fixed.
        h = sp.csr_matrix(histories)
        rows = np.repeat(np.arange(h.shape[0]), np.diff(h.indptr))
        residual = h.data - self.global_mean_ - self.item_bias_[h.indices]
        n = np.diff(h.indptr)
        b_u = np.bincount(rows, residual, h.shape[0]) / (self.reg_user + n)
        return self.global_mean_ + b_u[:, None] + self.item_bias_[None, :]

    def _explain(self, user: int, items: np.ndarray) -> list[str]:
        return [
            f"rated {b:+.2f} stars above the average item by other users"
            for b in self.item_bias_[items]
        ]
