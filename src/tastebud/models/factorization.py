"""Matrix factorization: SVD and SVD++ for explicit ratings, ALS and BPR for implicit feedback.

Every model here learns a vector ``p_u`` per user and ``q_i`` per item (``n_factors`` long)
and scores by their dot product, plus biases where the model has them:

``svd`` -- biased matrix factorization (Funk 2006; Koren, Bell & Volinsky, "Matrix
factorization techniques for recommender systems", IEEE Computer 2009)::

    r̂_ui = μ + b_u + b_i + q_iᵀ p_u

minimising Σ_(u,i)∈R [(r_ui - r̂_ui)² + λ_b (b_u² + b_i²) + λ (|p_u|² + |q_i|²)] by stochastic
gradient descent over the ratings, shuffled each epoch. With e_ui = r_ui - r̂_ui one step is::

    b_u += γ_b (e_ui - λ_b b_u)          b_i += γ_b (e_ui - λ_b b_i)
    p_u += γ (e_ui q_i - λ p_u)          q_i += γ (e_ui p_u - λ q_i)

``svdpp`` -- SVD++ (Koren, "Factorization meets the neighborhood", KDD 2008), which adds what
a user rated, whatever the rating, to the user's vector (N(u) = items u rated in training)::

    r̂_ui = μ + b_u + b_i + q_iᵀ (p_u + |N(u)|^-½ Σ_{j∈N(u)} y_j)

``als`` -- implicit-feedback ALS (Hu, Koren & Volinsky, "Collaborative filtering for implicit
feedback datasets", ICDM 2008): preferences p_ui = 1 for every interaction, confidences
c_ui = 1 + α g(x_ui) (x = the interaction value, g = identity or log₂(1 + x)), minimising
Σ_{u,i} c_ui (p_ui - x_uᵀ y_i)² + λ (Σ |x_u|² + Σ |y_i|²) over *all* user-item pairs by
alternating least-squares steps, each solved by a few conjugate-gradient iterations warm-started
from the previous factors (Takács, Pilászy & Tikk, RecSys 2011), in the ``implicit`` package's
CPU engine.

``bpr`` -- Bayesian Personalized Ranking (Rendle, Freudenthaler, Gantner & Schmidt-Thieme, UAI
2009): maximises Σ_(u,i,j) ln σ(x̂_ui - x̂_uj) - λ |Θ|² over sampled (user, seen item, unseen
item) triples, by SGD in the ``implicit`` package's CPU engine; x̂_ui = x_uᵀ y_i + b_i.

The SGD kernels of SVD and SVD++ are numba-compiled, single-threaded and seeded, so a fit is
reproducible bit for bit. The ``implicit`` engines only train: their factors are copied into
numpy attributes, so saved models load without ``implicit``.

Users with no training interaction (known only by id) get the fallback scores, like unknown
users. Every model folds in a user given only by a history (``recommend_from_history``) with
the item side fixed; each class documents how.

One module (~950 lines) for one family: the four factor models share the factor layout,
the fold-in of a new history and the kernels' conventions documented above.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar, Literal

import numba
import numpy as np
import scipy.sparse as sp

from tastebud import _threads
from tastebud.data.dataset import Dataset
from tastebud.errors import InvalidInputError
from tastebud.models._holdout import Holdout
from tastebud.models._retrieval import Searchable
from tastebud.models.registry import register

ImplicitValues = Literal["auto", "binary", "weight", "rating"]
Confidence = Literal["log", "linear"]
_ALS_FALLBACK_REG = 10.0  # reg="auto" on data too small to hold any out (ALS docstring)
_WARM_SEARCH_FROM = 1_000_000  # reg="auto": training interactions from which trials warm-start
_WARM_ITERATIONS = 3  # sweeps of a warm-started trial
_BPR_FOLD_POSITIVES = 100  # fold-in sample sizes of the BPR user step (see BPR._fold_in)
_BPR_FOLD_NEGATIVES = 1_000


# -- numba SGD kernels --------------------------------------------------------------------------
@numba.njit(cache=True)
def _svd_epoch(
    users: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray,
    order: np.ndarray,
    mu: float,
    user_bias: np.ndarray,
    item_bias: np.ndarray,
    P: np.ndarray,
    Q: np.ndarray,
    lr_bias: float,
    reg_bias: float,
    lr: float,
    reg: float,
) -> float:  # pragma: no cover - compiled
    """One SGD pass over the ratings in ``order`` (in place); returns the squared error sum."""
    n_factors = P.shape[1]
    total = 0.0
    for t in range(order.shape[0]):
        k = order[t]
        u = users[k]
        i = items[k]
        dot = 0.0
        for f in range(n_factors):
            dot += P[u, f] * Q[i, f]
        err = ratings[k] - (mu + user_bias[u] + item_bias[i] + dot)
        total += err * err
        user_bias[u] += lr_bias * (err - reg_bias * user_bias[u])
        item_bias[i] += lr_bias * (err - reg_bias * item_bias[i])
        for f in range(n_factors):
            puf = P[u, f]
            qif = Q[i, f]
            P[u, f] += lr * (err * qif - reg * puf)
            Q[i, f] += lr * (err * puf - reg * qif)
    return total


@numba.njit(cache=True)
def _svdpp_epoch(
    indptr: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray,
    order: np.ndarray,
    user_order: np.ndarray,
    mu: float,
    user_bias: np.ndarray,
    item_bias: np.ndarray,
    P: np.ndarray,
    Q: np.ndarray,
    Y: np.ndarray,
    lr_bias: float,
    reg_bias: float,
    lr: float,
    reg: float,
    lr_implicit: float,
    reg_implicit: float,
) -> float:  # pragma: no cover - compiled
    """One SGD pass of SVD++, user by user (in place); returns the squared error sum.

    ``order[indptr[u]:indptr[u+1]]`` are the positions of user u's ratings (shuffled);
    ``user_order`` is the order users are visited in. The implicit term
    z_u = |N(u)|^-½ Σ_j y_j is computed once per user and the y_j gradient is accumulated over
    the user's ratings and applied once at the end of them.
    """
    n_factors = P.shape[1]
    z = np.empty(n_factors)
    grad = np.empty(n_factors)
    total = 0.0
    for t in range(user_order.shape[0]):
        u = user_order[t]
        start = indptr[u]
        end = indptr[u + 1]
        if end == start:
            continue
        norm = 1.0 / np.sqrt(end - start)
        z[:] = 0.0
        for s in range(start, end):
            j = items[order[s]]
            for f in range(n_factors):
                z[f] += Y[j, f]
        for f in range(n_factors):
            z[f] *= norm
        grad[:] = 0.0
        for s in range(start, end):
            k = order[s]
            i = items[k]
            dot = 0.0
            for f in range(n_factors):
                dot += Q[i, f] * (P[u, f] + z[f])
            err = ratings[k] - (mu + user_bias[u] + item_bias[i] + dot)
            total += err * err
            user_bias[u] += lr_bias * (err - reg_bias * user_bias[u])
            item_bias[i] += lr_bias * (err - reg_bias * item_bias[i])
            for f in range(n_factors):
                puf = P[u, f]
                qif = Q[i, f]
                P[u, f] += lr * (err * qif - reg * puf)
                Q[i, f] += lr * (err * (puf + z[f]) - reg * qif)
                grad[f] += err * qif
        for s in range(start, end):
            j = items[order[s]]
            for f in range(n_factors):
                Y[j, f] += lr_implicit * (grad[f] * norm - reg_implicit * Y[j, f])
    return total


# -- shared helpers -----------------------------------------------------------------------------
def _is_int(value: Any, low: int) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        return False
    return int(value) >= low


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix, dtype=np.float64), where=norms > 0)


def _row_slices(histories: sp.csr_matrix) -> list[tuple[np.ndarray, np.ndarray]]:
    """(item indices, values) of each row of a CSR matrix."""
    ptr = histories.indptr
    return [
        (histories.indices[ptr[r] : ptr[r + 1]], histories.data[ptr[r] : ptr[r + 1]])
        for r in range(histories.shape[0])
    ]


@dataclasses.dataclass(kw_only=True, eq=False)
class _FactorModel(Searchable):
    """Scoring, similar items, explanations, fold-in and retrieval (``index``,
    ``ann_min_items``: :mod:`tastebud.models._retrieval`) shared by the factor models.

    Subclasses store ``user_factors_`` and ``item_factors_`` with :meth:`_set_factors`,
    optionally add per-item and per-user score offsets, and implement :meth:`_fold_in`.
    """

    def _search_items(self) -> np.ndarray:
        return self._with_bias(self.item_factors_, self._item_offset())

    def _search_queries(
        self,
        users: np.ndarray | None,
        histories: sp.csr_matrix | None = None,
        sequences: list[np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if histories is not None:
            vectors, offsets = self._fold_in(sp.csr_matrix(histories, dtype=np.float64))
        else:
            assert users is not None
            vectors, offsets = self.user_factors_[users], self._user_offset(users)
        return self._with_one(vectors, self._item_offset() is not None), offsets

    def _set_factors(self, user_factors: np.ndarray, item_factors: np.ndarray) -> None:
        self.user_factors_ = np.ascontiguousarray(user_factors)
        self.item_factors_ = np.ascontiguousarray(item_factors)

    def _item_offset(self) -> np.ndarray | None:
        """A per-item term added to every score (biases), or ``None``."""
        return None

    def _user_offset(self, users: np.ndarray) -> np.ndarray | None:
        """A per-user term added to the scores (user biases), or ``None``."""
        return None

    def _scores_for(
        self, vectors: np.ndarray, user_offset: np.ndarray | None, items: np.ndarray | None
    ) -> np.ndarray:
        item_factors = self.item_factors_ if items is None else self.item_factors_[items]
        # in the factors' precision, like the fitted users' (float32 factors would otherwise
        # be copied to float64 whole on every call: the service's fold-in runs per request)
        vectors = vectors.astype(item_factors.dtype, copy=False)
        scores = np.asarray(vectors @ item_factors.T, dtype=np.float64)
        offset = self._item_offset()
        if offset is not None:
            scores += (offset if items is None else offset[items])[None, :]
        if user_offset is not None:
            scores += user_offset[:, None]
        return scores

    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        scores = self._scores_for(self.user_factors_[users], self._user_offset(users), items)
        cold = np.diff(self.seen_.indptr)[users] == 0  # known by id, nothing learned
        if cold.any():
            scores[cold] = self._fallback_scores(int(cold.sum()), items)
        return scores

    def _unit_items(self) -> np.ndarray:
        """The item factors scaled to unit length, computed once per set of factors (the
        service asks for similarities on every request)."""
        cached = self.__dict__.get("_unit_cache")
        if cached is None or cached[0] is not self.item_factors_:
            cached = (self.item_factors_, _unit_rows(self.item_factors_))
            self.__dict__["_unit_cache"] = cached
        return cached[1]

    def _similar(self, items: np.ndarray) -> np.ndarray:
        unit = self._unit_items()
        return unit[items] @ unit.T

    def _similar_vectors(self) -> np.ndarray:
        return self._unit_items()

    @abc.abstractmethod
    def _fold_in(self, histories: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray | None]:
        """User vectors (and user offsets) for non-empty history rows, item side fixed."""

    def _score_history(
        self, histories: sp.csr_matrix, sequences: list[np.ndarray] | None = None
    ) -> np.ndarray:
        h = histories
        if not isinstance(h, sp.csr_matrix) or h.dtype != np.float64:  # else no copy
            h = sp.csr_matrix(histories, dtype=np.float64)
        empty = np.diff(h.indptr) == 0
        if not empty.any():  # the usual case: no row copy
            vectors, offsets = self._fold_in(h)
            return self._scores_for(vectors, offsets, None)
        out = np.empty((h.shape[0], len(self.items_)), dtype=np.float64)
        # nothing to fold in: answer like for an unknown user
        out[empty] = self._fallback_scores(int(empty.sum()), None)
        rows = np.flatnonzero(~empty)
        if len(rows):
            vectors, offsets = self._fold_in(h[rows])
            out[rows] = self._scores_for(vectors, offsets, None)
        return out


# -- explicit ratings: SVD and SVD++ ---------------------------------------------------------------
@dataclasses.dataclass(kw_only=True, eq=False)
class _BiasedFactorModel(_FactorModel):
    """Shared hyper-parameters (documented on :class:`SVD`; the defaults are SVD's), SGD
    driver, prediction and fold-in of SVD and SVD++."""

    predicts_ratings: ClassVar[bool] = True
    needs_ratings: ClassVar[bool] = True

    n_factors: int = 100
    n_epochs: int = 60
    lr: float = 0.007
    reg: float = 0.08
    lr_bias: float | None = None
    reg_bias: float | None = 0.02
    init_std: float = 0.01
    random_state: int | None = 0

    def _validate(self) -> None:
        super()._validate()
        self._check(_is_int(self.n_factors, 1), "n_factors must be an integer >= 1")
        self._check(_is_int(self.n_epochs, 1), "n_epochs must be an integer >= 1")
        self._check(self.lr > 0, "lr must be > 0")
        self._check(self.reg >= 0, "reg must be >= 0")
        self._check(self.lr_bias is None or self.lr_bias > 0, "lr_bias must be > 0 (or None)")
        self._check(self.reg_bias is None or self.reg_bias >= 0, "reg_bias must be >= 0 (or None)")
        self._check(self.init_std >= 0, "init_std must be >= 0")
        self._check(
            self.random_state is None or _is_int(self.random_state, 0),
            "random_state must be a non-negative integer or None",
        )

    @property
    def _lr_bias(self) -> float:
        return float(self.lr if self.lr_bias is None else self.lr_bias)

    @property
    def _reg_bias(self) -> float:
        return float(self.reg if self.reg_bias is None else self.reg_bias)

    def _fit(self, dataset: Dataset) -> None:
        rng = np.random.default_rng(self.random_state)
        ratings = dataset.values("rating").astype(np.float64)
        mu = float(ratings.mean())
        user_bias = np.zeros(dataset.n_users)
        item_bias = np.zeros(dataset.n_items)
        shape = (dataset.n_users, int(self.n_factors)), (dataset.n_items, int(self.n_factors))
        P = rng.normal(0.0, self.init_std, shape[0])
        Q = rng.normal(0.0, self.init_std, shape[1])
        self._sgd(dataset, ratings, mu, user_bias, item_bias, P, Q, rng)
        # Users and items without training ratings keep their random start: zero them so they
        # score by the biases alone.
        P[dataset.user_activity() == 0] = 0.0
        Q[dataset.item_popularity() == 0] = 0.0
        self.global_mean_ = mu
        self.user_bias_ = user_bias
        self.item_bias_ = item_bias
        self.rating_range_ = [float(ratings.min()), float(ratings.max())]
        self._finish(dataset, P, Q)

    @abc.abstractmethod
    def _sgd(
        self,
        dataset: Dataset,
        ratings: np.ndarray,
        mu: float,
        user_bias: np.ndarray,
        item_bias: np.ndarray,
        P: np.ndarray,
        Q: np.ndarray,
        rng: np.random.Generator,
    ) -> None:
        """Run the SGD epochs, updating the arrays in place."""

    def _finish(self, dataset: Dataset, P: np.ndarray, Q: np.ndarray) -> None:
        self._set_factors(P, Q)

    def _implicit_term(self, items: np.ndarray) -> np.ndarray:
        """The part of a user's vector that their rated items give (zero for plain SVD)."""
        return np.zeros(self.item_factors_.shape[1])

    # -- scoring ------------------------------------------------------------------------------
    def _item_offset(self) -> np.ndarray:
        return self.global_mean_ + self.item_bias_

    def _user_offset(self, users: np.ndarray) -> np.ndarray:
        return self.user_bias_[users]

    def _fallback_scores(self, n_rows: int, items: np.ndarray | None) -> np.ndarray:
        row = self._item_offset() if items is None else self._item_offset()[items]
        return np.tile(row, (n_rows, 1))

    def _predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        known_u, known_i = users >= 0, items >= 0
        est = self.global_mean_ + np.where(known_u, self.user_bias_[users], 0.0)
        est = est + np.where(known_i, self.item_bias_[items], 0.0)
        both = known_u & known_i
        est[both] += np.einsum(
            "ij,ij->i", self.user_factors_[users[both]], self.item_factors_[items[both]]
        )
        low, high = self.rating_range_
        return np.clip(est, low, high)

    # -- fold-in ------------------------------------------------------------------------------
    def _fold_in(self, histories: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """Ridge regression of the history's ratings on the fixed item side.

        With the history's items I, ratings r and the implicit term z (SVD++; 0 for SVD),
        ``[b_u, p_u]`` minimise the SGD objective restricted to this user,
        Σ_{i∈I} (r_i - μ - b_i - b_u - q_iᵀ(p_u + z))² + |I| (λ_b b_u² + λ |p_u|²)
        (the SGD applies the penalty once per rating, hence the factor |I|):

            [b_u, p_u] = (AᵀA + |I| diag(λ_b, λ, ..., λ))⁻¹ Aᵀ (r - μ - b_I - Q_I z),
            A = [1, Q_I]
        """
        n_factors = self.item_factors_.shape[1]
        vectors = np.empty((histories.shape[0], n_factors))
        offsets = np.empty(histories.shape[0])
        penalty = np.full(n_factors + 1, float(self.reg))
        penalty[0] = self._reg_bias
        for row, (items, values) in enumerate(_row_slices(histories)):
            z = self._implicit_term(items)
            Q = self.item_factors_[items]
            design = np.hstack([np.ones((len(items), 1)), Q])
            target = values - self.global_mean_ - self.item_bias_[items] - Q @ z
            gram = design.T @ design + np.diag(len(items) * penalty)
            # least squares: still an answer when reg = 0 leaves the system singular
            solution = np.linalg.lstsq(gram, design.T @ target, rcond=None)[0]
            offsets[row] = solution[0]
            vectors[row] = solution[1:] + z
        return vectors, offsets


@register("svd")
@dataclasses.dataclass(kw_only=True, eq=False)
class SVD(_BiasedFactorModel):
    """Biased matrix factorization for explicit ratings, trained by SGD.

    r̂_ui = μ + b_u + b_i + q_iᵀ p_u (Koren, Bell & Volinsky 2009). Each epoch visits the
    ratings in a fresh random order. The defaults were chosen on a validation split carved from
    MovieLens 100K ``u1.base`` (more factors and epochs, a stronger factor penalty, a weaker
    bias penalty and a smaller initialisation than Surprise's 100 / 20 / 0.02 / 0.02 / 0.1):
    mean RMSE 0.907 on the official folds u1-u5, against Surprise's 0.938.

    Parameters
    ----------
    n_factors:
        Length of the user and item vectors.
    n_epochs:
        SGD passes over the training ratings.
    lr:
        Learning rate γ of the factors.
    reg:
        L2 penalty λ of the factors (applied at every SGD step, as in the papers).
    lr_bias, reg_bias:
        Learning rate γ_b and penalty λ_b of the biases (``None``: the same as ``lr`` /
        ``reg``).
    init_std:
        Standard deviation of the normal initialisation of the factors (biases start at 0,
        μ is the mean rating).
    random_state:
        Seed of the initialisation and of the shuffling (``None``: fresh entropy). The kernel
        is single-threaded, so a seed gives the same model bit for bit.
    index, ann_min_items:
        Retrieval: ``"auto"`` (the default) searches a faiss inverted-file index over the
        item vectors once the catalogue has ``ann_min_items`` (50,000) items, and scores
        every item below that; ``"exact"`` or ``"ann"`` force one
        (:mod:`tastebud.models._retrieval`, ``benchmarks/retrieval.py``).

    Notes
    -----
    Fold-in: the exact ridge solution for the user's bias and vector with the items fixed
    (:meth:`_BiasedFactorModel._fold_in`).
    """

    def _sgd(
        self,
        dataset: Dataset,
        ratings: np.ndarray,
        mu: float,
        user_bias: np.ndarray,
        item_bias: np.ndarray,
        P: np.ndarray,
        Q: np.ndarray,
        rng: np.random.Generator,
    ) -> None:
        for _ in range(int(self.n_epochs)):
            _svd_epoch(
                dataset.user_index,
                dataset.item_index,
                ratings,
                rng.permutation(len(ratings)),
                mu,
                user_bias,
                item_bias,
                P,
                Q,
                self._lr_bias,
                self._reg_bias,
                float(self.lr),
                float(self.reg),
            )


@register("svdpp")
@dataclasses.dataclass(kw_only=True, eq=False)
class SVDpp(_BiasedFactorModel):
    """SVD++ (Koren 2008): SVD whose user vector also sums the vectors y_j of the items the
    user rated, r̂_ui = μ + b_u + b_i + q_iᵀ(p_u + |N(u)|^-½ Σ_{j∈N(u)} y_j).

    Training is the standard fast variant of the SGD: users are visited in a random order and
    each user's ratings in a random order; the implicit term is computed once per user per
    epoch (not once per rating) and the y_j gradient, Σ_i e_ui q_i |N(u)|^-½, is accumulated
    over the user's ratings and applied once, y_j += γ_y (grad - λ_y y_j), at the end of them.
    That costs O(|R| f) per epoch instead of Surprise's O(Σ_u |N(u)|² f).

    Parameters
    ----------
    lr_implicit, reg_implicit:
        Learning rate γ_y and penalty λ_y of the implicit vectors y_j (``None``: the same as
        ``lr`` / ``reg``). A small γ_y works best on MovieLens.

    Notes
    -----
    The other parameters are :class:`SVD`'s, with their own defaults (50 factors, 40 epochs,
    λ = 0.05), chosen like SVD's: mean RMSE 0.901 on MovieLens 100K u1-u5 (Surprise: 0.922).

    Fold-in: z = |N|^-½ Σ y_j over the history's items, then the ridge solve of SVD for
    ``[b_u, p_u]``; the user's vector is p_u + z.
    """

    n_factors: int = 50
    n_epochs: int = 40
    reg: float = 0.05
    lr_implicit: float | None = 0.001
    reg_implicit: float | None = 0.1

    def _validate(self) -> None:
        super()._validate()
        self._check(
            self.lr_implicit is None or self.lr_implicit > 0, "lr_implicit must be > 0 (or None)"
        )
        self._check(
            self.reg_implicit is None or self.reg_implicit >= 0,
            "reg_implicit must be >= 0 (or None)",
        )

    def _sgd(
        self,
        dataset: Dataset,
        ratings: np.ndarray,
        mu: float,
        user_bias: np.ndarray,
        item_bias: np.ndarray,
        P: np.ndarray,
        Q: np.ndarray,
        rng: np.random.Generator,
    ) -> None:
        activity = dataset.user_activity()
        indptr = np.concatenate(([0], np.cumsum(activity))).astype(np.int64)
        Y = rng.normal(0.0, self.init_std, Q.shape)
        lr_y = float(self.lr if self.lr_implicit is None else self.lr_implicit)
        reg_y = float(self.reg if self.reg_implicit is None else self.reg_implicit)
        for _ in range(int(self.n_epochs)):
            # positions grouped by user (the dataset is sorted by user), shuffled within
            order = np.lexsort((rng.random(len(ratings)), dataset.user_index))
            _svdpp_epoch(
                indptr,
                dataset.item_index,
                ratings,
                order,
                rng.permutation(dataset.n_users),
                mu,
                user_bias,
                item_bias,
                P,
                Q,
                Y,
                self._lr_bias,
                self._reg_bias,
                float(self.lr),
                float(self.reg),
                lr_y,
                reg_y,
            )
        Y[dataset.item_popularity() == 0] = 0.0
        self.implicit_factors_ = Y

    def _finish(self, dataset: Dataset, P: np.ndarray, Q: np.ndarray) -> None:
        # Score with the whole user vector p_u + z_u, computed once here.
        seen = dataset.matrix("binary").astype(np.float64)
        norm = 1.0 / np.sqrt(np.maximum(dataset.user_activity(), 1))
        z = np.asarray(seen @ self.implicit_factors_) * norm[:, None]
        self._set_factors(P + z, Q)

    def _implicit_term(self, items: np.ndarray) -> np.ndarray:
        if len(items) == 0:
            return np.zeros(self.implicit_factors_.shape[1])
        return np.asarray(self.implicit_factors_[items].sum(axis=0) / np.sqrt(len(items)))


# -- implicit feedback: ALS and BPR through the implicit package --------------------------------
@dataclasses.dataclass(kw_only=True, eq=False)
class _ImplicitEngineModel(_FactorModel):
    """Shared plumbing of the models trained by the ``implicit`` package's CPU engines."""

    def _parallel_fit(self, dataset: Dataset) -> bool:
        """Whether the fit is large enough for every core (:mod:`tastebud._threads`)."""
        return len(dataset) >= _threads.PARALLEL_INTERACTIONS

    def _fit(self, dataset: Dataset) -> None:
        """Fit with the engine on tastebud's thread count (``fit`` has set every pool to it:
        one thread below ``PARALLEL_INTERACTIONS`` interactions, every core from there); a
        ``num_threads`` >= 1 given to the model sets the engine's threads."""
        count = _threads.threads(large=self._parallel_fit(dataset))
        params: Any = self
        # 0 left to implicit means OpenMP's default: the environment's count when it pins one
        self._fit_engine(dataset, int(params.num_threads) or (count or 0))

    @abc.abstractmethod
    def _fit_engine(self, dataset: Dataset, engine_threads: int) -> None:
        """Train with ``engine_threads`` engine threads (0: OpenMP's default)."""

    def _run(self, engine_factory: Any, matrix: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """Build and fit an implicit engine with BLAS single-threaded, without progress bars
        (implicit warns when BLAS threads compete with its own); returns its factors. A
        ``_warm_start`` (user, item factors) set on the model is where the engine starts."""
        from threadpoolctl import threadpool_limits

        warm = self.__dict__.pop("_warm_start", None)
        with threadpool_limits(1, "blas"):
            engine = engine_factory()
            if warm is not None:  # implicit continues from factors it is given
                engine.user_factors, engine.item_factors = warm[0].copy(), warm[1].copy()
            engine.fit(sp.csr_matrix(matrix, dtype=np.float32), show_progress=False)
        return np.asarray(engine.user_factors), np.asarray(engine.item_factors)


@register("als")
@dataclasses.dataclass(kw_only=True, eq=False)
class ALS(_ImplicitEngineModel):
    """Implicit-feedback ALS (Hu, Koren & Volinsky 2008) with a conjugate-gradient solver.

    Every user-item pair is a training example: interactions have preference 1 and confidence
    c_ui = 1 + α g(x_ui), everything else preference 0 and confidence 1. Scores are x_uᵀ y_i.
    g is ``confidence``: ``"linear"`` g(x) = x, or ``"log"`` g(x) = log₂(1 + x), Hu et al.'s
    damping of large counts. Both give g(1) = 1, so on 0/1 data they are the same model,
    c = 1 + α; on play counts the log form is much better untuned (Last.fm 2K, random 80/20:
    NDCG@10 0.22 against 0.10 with linear confidence at the default α).

    Parameters
    ----------
    n_factors:
        Length of the user and item vectors.
    reg:
        L2 penalty λ of the factors, or ``"auto"`` (the default): ALS is at its best with
        the strongest penalty that does not yet collapse the factors, and where that edge
        lies depends on the data (NDCG@10 peaks at λ 10 on the 300-user sample, 30 on
        ML-100K, 100 on Last.fm 2K, and falls by half one step past it). ``"auto"`` holds
        out 20% of each user's training interactions, fits λ = 1, 2, 4, ... until NDCG@10
        on the held-out part falls below 0.8 of the best (at most 1024), bisects around the
        best at 1/2, 1/4 and 1/8 of an octave, and refits on all the data with the smallest
        λ tried whose score is within 1% of the best (``reg_``; every λ tried and its score
        are in ``reg_search_``). It costs about fifteen fits on 80% of the data (ML-100K:
        3 s instead of 0.2 s). From a million training interactions on, each trial after
        the first starts from the factors of the nearest λ tried and runs 3 sweeps, so the
        search costs a few fits (forced on for ML-100K and Last.fm, seeds 0-2, it chooses
        the same λ or a neighbouring one, NDCG@10 +0.0003 ± 0.0004 and +0.0002 ± 0.0002
        against the cold search: ``benchmarks/als_warm_search.py``); at most 10,000 sampled
        users are scored. With too little data to hold any out it uses 10.
    alpha:
        Confidence slope α (the weight of an interaction over a missing pair).
    confidence:
        ``"log"`` or ``"linear"`` scaling of the values (above).
    user_exponent, item_exponent:
        The α g(x_ui) term is multiplied by n_uᵃ n_iᵇ (n_u: the user's interactions,
        n_i: the item's, in training; a = ``user_exponent``, b = ``item_exponent``), then
        divided by the mean of that multiplier over the training interactions, so that α
        keeps its meaning. Negative exponents spread the weight away from heavy users and
        blockbuster items; 0 and 0 give plain Hu et al. ALS. With the defaults a = -0.5,
        b = -0.3 (and α 2.5 instead of 3), NDCG@10 on a random 80/20 split (seed 0) goes
        from 0.326 to 0.330 on ML-100K positives, 0.368 to 0.372 on all ML-100K ratings and
        0.224 to 0.242 on Last.fm 2K (``benchmarks/peers.py``).
    n_iterations:
        Alternating sweeps (users then items).
    values:
        x_ui: ``"auto"`` uses the weights (play counts...) when the data have them and 1
        otherwise (ratings count as "interacted"); ``"binary"``, ``"weight"`` or ``"rating"``
        force one.
    num_threads:
        Threads of the engine. 0 (the default): tastebud's thread policy
        (:mod:`tastebud._threads`: one thread below a million interactions, every core from
        there, ``TASTEBUD_THREADS`` when set). Every user/item step is solved
        independently, so the result does not depend on it.
    random_state:
        Seed of the initial factors.
    index, ann_min_items:
        Retrieval: ``"auto"`` (the default) searches a faiss inverted-file index over the
        item vectors once the catalogue has ``ann_min_items`` (50,000) items, and scores
        every item below that; ``"exact"`` or ``"ann"`` force one
        (:mod:`tastebud.models._retrieval`, ``benchmarks/retrieval.py``).

    Notes
    -----
    Fold-in: the exact ALS user step with the item factors Y fixed and λ = ``reg_``,
    x_u = (YᵀY + Yᵀ(C_u - I)Y + λI)⁻¹ YᵀC_u p_u, over the history's items.
    """

    n_factors: int = 64
    reg: float | Literal["auto"] = "auto"
    alpha: float = 2.5
    n_iterations: int = 15
    values: ImplicitValues = "auto"
    confidence: Confidence = "log"
    user_exponent: float = -0.5
    item_exponent: float = -0.3
    num_threads: int = 0
    random_state: int | None = 0

    def _validate(self) -> None:
        super()._validate()
        self._check(_is_int(self.n_factors, 1), "n_factors must be an integer >= 1")
        self._check(self.reg == "auto" or self.reg > 0, "reg must be > 0 or 'auto'")
        self._check(self.alpha >= 0, "alpha must be >= 0")
        self._check(_is_int(self.n_iterations, 1), "n_iterations must be an integer >= 1")
        self._check(
            self.values in ("auto", "binary", "weight", "rating"),
            "values must be 'auto', 'binary', 'weight' or 'rating'",
        )
        self._check(self.confidence in ("log", "linear"), "confidence must be 'log' or 'linear'")
        for name in ("user_exponent", "item_exponent"):
            self._check(-2 <= getattr(self, name) <= 2, f"{name} must be between -2 and 2")
        self._check(_is_int(self.num_threads, 0), "num_threads must be an integer >= 0")
        self._check(
            self.random_state is None or _is_int(self.random_state, 0),
            "random_state must be a non-negative integer or None",
        )

    def _fit_engine(self, dataset: Dataset, engine_threads: int) -> None:
        from implicit.cpu.als import AlternatingLeastSquares

        kind = self.values
        if kind == "auto":
            kind = "weight" if dataset.weight is not None else "binary"
        self._check(
            kind != "rating" or dataset.has_ratings,
            f"values='rating' but {dataset.name} has no ratings",
        )
        self._check(
            kind != "weight" or dataset.weight is not None,
            f"values='weight' but {dataset.name} has no weights",
        )
        values = dataset.matrix(kind)
        self._check(bool((values.data >= 0).all()), f"values='{kind}' must be >= 0")
        if self.reg == "auto":
            self.reg_ = self._search_reg(dataset, engine_threads)
        else:
            self.reg_ = float(self.reg)
            self.reg_search_ = np.empty((0, 2))
        user_counts = np.diff(values.indptr).astype(np.float64)
        item_counts = np.bincount(values.indices, minlength=values.shape[1]).astype(np.float64)
        self.item_scale_ = np.maximum(item_counts, 1.0) ** float(self.item_exponent)
        rows = np.repeat(np.arange(values.shape[0]), np.diff(values.indptr))
        multiplier = user_counts[rows] ** float(self.user_exponent)
        multiplier *= self.item_scale_[values.indices]
        self.scale_norm_ = float(multiplier.mean()) if len(multiplier) else 1.0
        multiplier /= self.scale_norm_
        confidence = sp.csr_matrix(
            (
                self._confidence(values.data, multiplier).astype(np.float32),
                values.indices,
                values.indptr,
            ),
            shape=values.shape,
        )

        def engine() -> Any:
            return AlternatingLeastSquares(
                factors=int(self.n_factors),
                regularization=self.reg_,
                alpha=1.0,  # the matrix already holds the confidences 1 + α g(x)
                iterations=int(self.n_iterations),
                use_cg=True,
                calculate_training_loss=False,
                num_threads=engine_threads,
                random_state=self.random_state,
            )

        users, items = self._run(engine, confidence)
        self._set_factors(users, items)
        self.value_kind_ = kind
        self.item_gram_ = items.T.astype(np.float64) @ items.astype(np.float64)

    def _search_reg(self, dataset: Dataset, engine_threads: int) -> float:
        """The ``reg="auto"`` search (class docstring); returns the chosen λ. The trial fits
        use the engine threads chosen for the whole data."""
        try:
            holdout = Holdout.carve(dataset, 0.2, self.random_state or 0, who="ALS reg='auto'")
        except InvalidInputError:
            self.reg_search_ = np.empty((0, 2))
            return _ALS_FALLBACK_REG
        tried: dict[float, float] = {}
        # on large data every trial after the first starts from the factors of the nearest
        # λ tried and runs a few sweeps: the search then costs a few fits, not fifteen
        warm = len(holdout.train) >= _WARM_SEARCH_FROM
        factors: dict[float, tuple[np.ndarray, np.ndarray]] = {}

        def score(reg: float) -> float:
            model = dataclasses.replace(self, reg=reg, num_threads=engine_threads)
            if warm and factors:
                nearest = min(factors, key=lambda r: abs(np.log(r / reg)))
                model.n_iterations = min(int(self.n_iterations), _WARM_ITERATIONS)
                model.__dict__["_warm_start"] = factors[nearest]
            model.fit(holdout.train)
            # recommend_indices: bounded blocks, and the model's search on a large catalogue
            top, _ = model.recommend_indices(holdout.users, 10, exclude=model.seen_)
            tried[reg] = holdout.ndcg(top, 10)
            if warm:  # the factors of this λ and of the best so far, no more
                factors[reg] = (model.user_factors_, model.item_factors_)
                keep = {reg, max(tried, key=tried.__getitem__)}
                for old in [r for r in factors if r not in keep]:
                    del factors[old]
            return tried[reg]

        best_reg, best = 1.0, score(1.0)
        reg = 1.0
        while reg < 1024:
            reg *= 2
            value = score(reg)
            if value > best:
                best_reg, best = reg, value
            elif value < 0.8 * best:
                break
        for step in (2**0.5, 2**0.25, 2**0.125):  # bisect around the best, in octaves
            centre = best_reg
            for reg in (centre / step, centre * step):
                if score(float(reg)) > best:
                    best_reg, best = float(reg), tried[float(reg)]
        self.reg_search_ = np.array(sorted(tried.items()))
        # Past the best λ the factors collapse and NDCG drops steeply, so a near tie is
        # settled toward the smaller λ: the refit on all the data should not cross the edge.
        best = self.reg_search_[:, 1].max()
        best_reg = float(self.reg_search_[self.reg_search_[:, 1] >= 0.99 * best, 0].min())
        return best_reg

    def _confidence(self, values: np.ndarray, multiplier: np.ndarray) -> np.ndarray:
        """c = 1 + α g(x) m, m the user/item multiplier (class docstring)."""
        x = np.asarray(values, dtype=np.float64)
        g = np.log2(1.0 + x) if self.confidence == "log" else x
        return 1.0 + float(self.alpha) * g * multiplier

    def _fold_in(self, histories: sp.csr_matrix) -> tuple[np.ndarray, None]:
        Y = self.item_factors_  # float32: only the history's rows are widened
        n_factors = Y.shape[1]
        cached = self.__dict__.get("_fold_base")  # YᵀY + λI, once per set of factors
        if cached is None or cached[0] is not self.item_gram_ or cached[1] != self.reg_:
            base_ = self.item_gram_ + self.reg_ * np.eye(n_factors)
            cached = self.__dict__["_fold_base"] = (self.item_gram_, self.reg_, base_)
        base = cached[2]
        vectors = np.empty((histories.shape[0], n_factors))
        for row, (items, values) in enumerate(_row_slices(histories)):
            x = np.ones(len(items)) if self.value_kind_ == "binary" else np.maximum(values, 0)
            multiplier = self.item_scale_[items] * (
                max(len(items), 1) ** float(self.user_exponent) / self.scale_norm_
            )
            confidence = self._confidence(x, multiplier)
            Y_i = Y[items].astype(np.float64)
            gram = base + (Y_i * (confidence - 1.0)[:, None]).T @ Y_i
            vectors[row] = np.linalg.solve(gram, Y_i.T @ confidence)
        return vectors, None


@register("bpr")
@dataclasses.dataclass(kw_only=True, eq=False)
class BPR(_ImplicitEngineModel):
    """Bayesian Personalized Ranking (Rendle et al. 2009) by SGD over sampled triples.

    Every interaction is a positive (values are ignored); negatives are sampled uniformly
    among the items the user has not interacted with. ``implicit`` learns an item bias as an
    extra factor column (the users' column is fixed at 1); it is kept as ``item_bias_`` and
    the factors without it, so x̂_ui = x_uᵀ y_i + b_i and item similarity uses y alone.

    Parameters
    ----------
    n_factors:
        Length of the user and item vectors (not counting the bias).
    lr:
        SGD learning rate.
    reg:
        L2 penalty λ.
    n_epochs:
        Passes; each samples as many triples as there are interactions.
    num_threads:
        Engine threads. The default 1 makes fits reproducible; more threads train faster
        but lock-free (Hogwild), so results then vary between runs. 0: tastebud's thread
        policy (as ALS's).
    random_state:
        Seed of the initialisation and the sampling.
    index, ann_min_items:
        Retrieval: ``"auto"`` (the default) searches a faiss inverted-file index over the
        item vectors once the catalogue has ``ann_min_items`` (50,000) items, and scores
        every item below that; ``"exact"`` or ``"ann"`` force one
        (:mod:`tastebud.models._retrieval`, ``benchmarks/retrieval.py``).

    Notes
    -----
    Fold-in: ``n_epochs`` full-batch gradient steps on the user's BPR objective with the
    items fixed -- the training of the user vector replayed in expectation (:meth:`_fold_in`).
    """

    n_factors: int = 64
    lr: float = 0.003
    reg: float = 0.01
    n_epochs: int = 100
    num_threads: int = 1
    random_state: int | None = 0

    def _validate(self) -> None:
        super()._validate()
        self._check(_is_int(self.n_factors, 1), "n_factors must be an integer >= 1")
        self._check(self.lr > 0, "lr must be > 0")
        self._check(self.reg >= 0, "reg must be >= 0")
        self._check(_is_int(self.n_epochs, 1), "n_epochs must be an integer >= 1")
        self._check(_is_int(self.num_threads, 0), "num_threads must be an integer >= 0")
        self._check(
            self.random_state is None or _is_int(self.random_state, 0),
            "random_state must be a non-negative integer or None",
        )

    def _fit_engine(self, dataset: Dataset, engine_threads: int) -> None:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        def engine() -> Any:
            return BayesianPersonalizedRanking(
                factors=int(self.n_factors),
                learning_rate=float(self.lr),
                regularization=float(self.reg),
                iterations=int(self.n_epochs),
                verify_negative_samples=True,
                num_threads=engine_threads,
                random_state=self.random_state,
            )

        users, items = self._run(engine, dataset.matrix("binary"))
        self._set_factors(users[:, :-1], items[:, :-1])
        self.item_bias_ = np.ascontiguousarray(items[:, -1])

    def _item_offset(self) -> np.ndarray:
        return self.item_bias_

    def _fold_step(self, Y_pos: np.ndarray, Y_neg: np.ndarray, n_history: int) -> float:
        """γ|H|, capped at 1/L where L = λ_max(E[(y_i - y_j)(y_i - y_j)ᵀ])/4 + λ bounds the
        curvature of F, so one full-batch step never overshoots where |H| small SGD steps
        would not. (On MovieLens and Last.fm the cap never binds: γ|H|L <= 0.41.)"""
        mean_pos, mean_neg = Y_pos.mean(axis=0), Y_neg.mean(axis=0)
        second = Y_pos.T @ Y_pos / len(Y_pos) + Y_neg.T @ Y_neg / len(Y_neg)
        second -= np.outer(mean_pos, mean_neg) + np.outer(mean_neg, mean_pos)
        curvature = 0.25 * float(np.linalg.eigvalsh(second)[-1]) + float(self.reg)
        return min(float(self.lr) * n_history, 1.0 / curvature)

    def _fold_in(self, histories: sp.csr_matrix) -> tuple[np.ndarray, None]:
        """Replay the training of one user vector, in expectation, with the items fixed.

        An epoch of the SGD gives user u about |H| triples (i ∈ H, j ∉ H uniform), each
        moving x_u by γ(σ(-d_uij)(y_i - y_j) - λ x_u), d_uij = x_uᵀ(y_i - y_j) + b_i - b_j.
        In expectation that is one gradient step of size γ|H| on the user's BPR objective
        F(x) = mean_(i,j) -ln σ(d_ij) + (λ/2)|x|², so the fold-in takes ``n_epochs`` such
        full-batch steps from x = 0 (step capped for stability, :meth:`_fold_step`) -- the
        same early-stopped path the fitted users took, without sampling noise. (The exact
        minimiser of F is a worse match: training stops long before it.) For long histories
        or large catalogs the means run over a fixed, seeded sample of at most 100 positives
        and 1,000 negatives.
        """
        from scipy.special import expit

        Y = self.item_factors_  # only the sampled rows are widened to float64
        bias = self.item_bias_.astype(np.float64)
        n_items = len(bias)
        seed = 0 if self.random_state is None else int(self.random_state)
        vectors = np.zeros((histories.shape[0], Y.shape[1]))
        for row, (items, _values) in enumerate(_row_slices(histories)):
            rng = np.random.default_rng(seed)  # per row: a user's answer never depends on the batch
            negatives = np.setdiff1d(np.arange(n_items), items)
            if len(negatives) == 0:
                continue
            positives = items
            if len(positives) > _BPR_FOLD_POSITIVES:
                positives = rng.choice(positives, _BPR_FOLD_POSITIVES, replace=False)
            if len(negatives) > _BPR_FOLD_NEGATIVES:
                negatives = rng.choice(negatives, _BPR_FOLD_NEGATIVES, replace=False)
            Y_pos, Y_neg = Y[positives].astype(np.float64), Y[negatives].astype(np.float64)
            step = self._fold_step(Y_pos, Y_neg, len(items))
            x = np.zeros(Y.shape[1])
            for _ in range(int(self.n_epochs)):
                d = (Y_pos @ x + bias[positives])[:, None] - (Y_neg @ x + bias[negatives])[None, :]
                w = expit(-d)
                grad = (Y_pos.T @ w.sum(axis=1) - Y_neg.T @ w.sum(axis=0)) / w.size
                x += step * (grad - float(self.reg) * x)
            vectors[row] = x
        return vectors, None
