"""Linear item-item models: EASE (closed form).

EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019) learns an item
x item weight matrix B with a zero diagonal that reconstructs the interaction matrix X:

    min_B ||X - X B||² + λ ||B||²   subject to diag(B) = 0

whose closed form is, with P = (XᵀX + λI)⁻¹,

    B = I - P · diagMat(1 / diag(P))          (so B_ij = -P_ij / P_jj, B_jj = 0)

and a user's scores are x_u B. One symmetric positive-definite inversion of an items x items
matrix (Cholesky, LAPACK potrf/potri) is the whole fit.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from tastebud.data.dataset import Dataset
from tastebud.errors import InvalidInputError
from tastebud.models.base import Recommender
from tastebud.models.registry import register


def spd_inverse(gram: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric positive-definite matrix via Cholesky (in place where possible)."""
    factor, info = lapack.dpotrf(gram, lower=False, overwrite_a=True)
    if info != 0:
        raise InvalidInputError("the Gram matrix is not positive definite; increase reg")
    inverse, info = lapack.dpotri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise InvalidInputError("cannot invert the Gram matrix; increase reg")
    upper = np.triu(inverse)
    return upper + np.triu(upper, 1).T


@register("ease")
@dataclasses.dataclass(kw_only=True, eq=False)
class EASE(Recommender):
    """EASE: closed-form item-item linear autoencoder for implicit feedback.

    Parameters
    ----------
    reg:
        L2 penalty λ on the weights; larger values shrink toward popularity-like scores.
    values:
        What fills X: ``"binary"`` (every interaction is 1, the usual choice -- on rating
        data it also learns from low ratings, which still say "watched"), ``"weight"``
        (play counts) or ``"rating"``.
    max_items:
        The model covers at most this many items, the most popular ones (the inversion costs
        O(n³) time and 8n² bytes); the others rank after every covered item, by popularity.
        On Last.fm 2K, 5,000 of 17,632 artists give the same NDCG@10 as 10,000 (0.223) in a
        fifth of the time.
    """

    reg: float = 300.0
    values: Literal["binary", "weight", "rating"] = "binary"
    max_items: int = 5_000

    def _validate(self) -> None:
        super()._validate()
        self._check(self.reg > 0, "reg must be > 0")
        self._check(
            self.values in ("binary", "weight", "rating"), "values must be binary, weight or rating"
        )
        self._check(
            int(self.max_items) == self.max_items and self.max_items >= 1, "max_items must be >= 1"
        )

    def _fit(self, dataset: Dataset) -> None:
        matrix = dataset.matrix(self.values).astype(np.float64)
        popularity = dataset.item_popularity()
        if dataset.n_items > self.max_items:
            kept = np.sort(np.argsort(-popularity, kind="stable")[: int(self.max_items)])
        else:
            kept = np.arange(dataset.n_items)
        sub = matrix[:, kept]
        gram = (sub.T @ sub).toarray()
        gram[np.diag_indices_from(gram)] += self.reg
        inverse = spd_inverse(gram)
        weights = inverse / -np.diag(inverse)[None, :]
        weights[np.diag_indices_from(weights)] = 0.0
        self.weights_ = weights.astype(np.float32)
        self.kept_items_ = kept
        self.matrix_ = sp.csr_matrix(matrix[:, kept], dtype=np.float32)

    def _place(self, block: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        """Scores over all (or candidate) items; items outside the model rank last."""
        n = len(self.items_)
        if len(self.kept_items_) == n:
            full = block.astype(np.float64)
        else:
            lowest = block.min(axis=1, keepdims=True) if block.size else np.zeros((len(block), 1))
            floor = lowest - 1.0
            tail = self.popularity_ / (self.popularity_.max() + 1.0)
            full = np.broadcast_to(floor + tail[None, :], (len(block), n)).copy()
            full[:, self.kept_items_] = block
        return full if items is None else full[:, items]

    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        return self._place(np.asarray(self.matrix_[users] @ self.weights_), items)

    def _score_history(
        self, histories: sp.csr_matrix, sequences: list[np.ndarray] | None = None
    ) -> np.ndarray:
        h = sp.csr_matrix(histories, dtype=np.float64)
        if self.values == "binary":
            h.data[:] = 1.0
        return self._place(np.asarray(h[:, self.kept_items_] @ self.weights_), None)

    def _similar(self, items: np.ndarray) -> np.ndarray:
        position = np.full(len(self.items_), -1)
        position[self.kept_items_] = np.arange(len(self.kept_items_))
        rows = np.zeros((len(items), len(self.kept_items_)), dtype=np.float64)
        inside = position[items] >= 0
        rows[inside] = self.weights_[position[items[inside]]]
        return self._place(rows, None)
