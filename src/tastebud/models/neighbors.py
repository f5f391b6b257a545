"""Neighborhood collaborative filtering: item-based and user-based k-nearest neighbors.

One engine serves both views. It works on an *oriented* matrix ``M`` whose columns are the
**entities** that get similarities and whose rows are their **owners**: for
:class:`ItemKNN` ``M = R`` (users x items: item-item similarities), for :class:`UserKNN`
``M = Rᵀ`` (items x users: user-user similarities). Everything below is written for the item
view; the user view is the same on the transposed matrix.

Two neighbor matrices
---------------------
``similarity_`` (top-N: recommend, score, similar items, explanations, fold-in) holds each
item's ``k`` best neighbors on the interaction matrix -- weights for implicit feedback, the
binary who-rated-what matrix for explicit feedback -- re-weighted by TF-IDF/BM25 and compared
by cosine (or jaccard). ``rating_similarity_`` (explicit feedback only) holds each item's best
``max(k, max_neighbors)`` neighbors by the rating similarity (default pearson-baseline) used to
predict ratings; it is worked out on the first rating prediction, not by ``fit``. Ranking by
predicted ratings favors obscure items, and even the neighbor sum over rating correlations
ranks worse than the top-N view (class docstring of :class:`ItemKNN`).

Similarity (between entities i and j; ``U_ij`` = owners who interacted with both, ``n_ij`` =
``|U_ij|``)::

    cosine           x_i·x_j / (‖x_i‖ ‖x_j‖)                 (whole vectors; Sarwar et al. 2001)
    jaccard          n_ij / (n_i + n_j - n_ij)
    pearson          Σ_{u∈U_ij} z_ui z_uj / √(Σ_{U_ij} z_ui² · Σ_{U_ij} z_uj²)
                     z_ui = r_ui - r̄_i (the entity's mean), or the baseline residual
                     r_ui - b_ui when ``centering="baseline"`` (Surprise's pearson_baseline)
    adjusted_cosine  the same sums with z_ui = r_ui - r̄_u (the owner's mean; Sarwar et al. 2001)

(pearson and adjusted_cosine need ratings), then shrunk toward 0 when few owners support it
(Koren 2008, eq. 2)::

    s_ij ← s_ij · n_ij / (n_ij + λ)          λ = ``shrinkage``

and set to 0 when ``n_ij < min_support`` and for i = j. Only positive similarities are kept (a
negative correlation says little about which way a rating goes, and Surprise's KNN models
ignore them too). The products ``Mᵀ M`` are sparse and computed for blocks of rows, so memory
is bounded by the block size, never by n²; ties between equal similarities go to the lower
index. These sparse kernels, and the neighbor sums of rating prediction below, live in
:mod:`tastebud.models._knn`; this module holds the models: which values go into the
similarities, the two views, scoring, fold-in and explanations.

Weighting of the top-N view (documents = entities, terms = owners, as implicit's
``bm25_weight`` / ``tfidf_weight`` on the items x users matrix)::

    tfidf  w_ui = √x_ui · idf_u
    bm25   w_ui = x_ui (k1 + 1) / (x_ui + k1 (1 - b + b |x_i| / avg|x|)) · idf_u
           idf_u = log(1 + (N - df_u + 0.5) / (df_u + 0.5))
           N = number of entities, df_u = entities of owner u, |x_i| = Σ_u x_ui

The idf is Lucene's always-positive BM25 idf: implicit's ``log(N) - log(1 + df)`` is 0 (or
negative) for an owner who covers most entities and zeroes whole small datasets; on
MovieLens 100K and Last.fm the two give the same NDCG@10 to ±0.001.

(Robertson & Zaragoza, "The probabilistic relevance framework: BM25 and beyond", 2009).

Top-N scoring with ``N_k(i)`` the ``k`` entities most similar to i and x_uj = 1 for the items
of u's history (the strengths already shaped the similarities through the weighting)::

    score(u, i) = Σ_{j ∈ N_k(i) ∩ I_u} s_ij · x_uj        ItemKNN: X_u S_kᵀ
    score(u, i) = Σ_{v ∈ N_k(u)} s_uv · x_vi               UserKNN: S_k[u] X

Users with nothing to go on (no history, no neighbors) get the popularity fallback.

Rating prediction (Koren 2010 eq. 3; Surprise's KNNBasic / KNNWithMeans / KNNBaseline), with
``N^k_u(i)`` the k entities most similar to i *among those u rated* (taken from the
``max(k, max_neighbors)`` stored per entity)::

    r̂_ui = c_ui + Σ_{j ∈ N^k_u(i)} s_ij (r_uj - c_uj) / Σ_{j ∈ N^k_u(i)} |s_ij|

where the centre ``c`` is 0 (``centering="none"``), the entity mean r̄_i (``"mean"``) or the
baseline b_ui = μ + b_u + b_i of :class:`~tastebud.models.baseline.BaselineOnly`
(``"baseline"``). Without neighbors, or for an unknown user or item, the prediction is the
baseline (with the known side's bias); it is clipped to the training rating range.

References: Sarwar, Karypis, Konstan & Riedl, "Item-based collaborative filtering
recommendation algorithms", WWW 2001; Koren, "Factorization meets the neighborhood", KDD 2008;
Koren, "Factor in the neighbors", TKDD 2010; Herlocker et al., "An algorithmic framework for
performing collaborative filtering", SIGIR 1999; Hug, "Surprise", JOSS 2020.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp

from tastebud import _threads
from tastebud.data.dataset import Dataset
from tastebud.models._knn import CENTERED, Profile, neighbor_sums, pairwise
from tastebud.models.base import Recommender, check_k, padding_lists
from tastebud.models.baseline import BaselineOnly
from tastebud.models.registry import register

Similarity = Literal["cosine", "adjusted_cosine", "pearson", "jaccard"]
Weighting = Literal["none", "tfidf", "bm25"]
Centering = Literal["none", "mean", "baseline"]
Feedback = Literal["auto", "explicit", "implicit"]

_SIMILARITIES = ("cosine", "adjusted_cosine", "pearson", "jaccard")
#: Entries of the similarity matrix computed at once (bounds the memory of ``fit``).
_BLOCK_ENTRIES = 1 << 20
#: Defaults of the None parameters (see the class docstrings).
_EXPLICIT_NEIGHBORS = 1000
_EXPLICIT_SHRINKAGE = 100.0
_IMPLICIT_SHRINKAGE = 5.0


# -- the models ------------------------------------------------------------------------------
@dataclasses.dataclass(kw_only=True, eq=False)
class _NeighborModel(Recommender):
    """Shared engine of :class:`ItemKNN` and :class:`UserKNN` (see the module docstring)."""

    #: True for the user-based view (similarities between users, on the transposed matrix).
    user_based: ClassVar[bool] = False

    k: int = 50
    similarity: Similarity | None = None
    weighting: Weighting | None = None
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    shrinkage: float | None = None
    min_support: int = 1
    centering: Centering = "baseline"
    feedback: Feedback = "auto"
    max_neighbors: int | None = None

    # -- parameters ---------------------------------------------------------------------------
    def _validate(self) -> None:
        super()._validate()
        self._check(_is_int(self.k) and self.k >= 1, "k must be an integer >= 1")
        self._check(
            self.similarity is None or self.similarity in _SIMILARITIES,
            f"similarity must be one of {', '.join(_SIMILARITIES)} (or None for the default)",
        )
        self._check(
            self.weighting is None or self.weighting in ("none", "tfidf", "bm25"),
            "weighting must be none, tfidf or bm25 (or None for the default)",
        )
        self._check(self.bm25_k1 >= 0, "bm25_k1 must be >= 0")
        self._check(0 <= self.bm25_b <= 1, "bm25_b must be between 0 and 1")
        self._check(
            self.shrinkage is None or self.shrinkage >= 0, "shrinkage must be >= 0 (or None)"
        )
        self._check(
            _is_int(self.min_support) and self.min_support >= 1,
            "min_support must be an integer >= 1",
        )
        self._check(
            self.centering in ("none", "mean", "baseline"),
            "centering must be none, mean or baseline",
        )
        self._check(
            self.feedback in ("auto", "explicit", "implicit"),
            "feedback must be auto, explicit or implicit",
        )
        self._check(
            self.max_neighbors is None or (_is_int(self.max_neighbors) and self.max_neighbors >= 1),
            "max_neighbors must be an integer >= 1 (or None)",
        )

    @property
    def predicts_ratings(self) -> bool:  # type: ignore[override]
        """Whether ``predict`` gives ratings: after fitting on explicit feedback."""
        if hasattr(self, "explicit_"):
            return bool(self.explicit_)
        return self.feedback != "implicit"

    # Resolved settings of the two views (None parameters take the documented defaults).
    def _topn_kind(self) -> str:
        return self.similarity if self.similarity in ("cosine", "jaccard") else "cosine"

    def _rating_kind(self) -> str:
        return self.similarity or "pearson"

    def _topn_shrinkage(self) -> float:
        return _IMPLICIT_SHRINKAGE if self.shrinkage is None else float(self.shrinkage)

    def _rating_shrinkage(self) -> float:
        return _EXPLICIT_SHRINKAGE if self.shrinkage is None else float(self.shrinkage)

    def _weighting(self) -> str:
        return self.weighting or "bm25"

    # -- orientation ----------------------------------------------------------------------------
    def _orient(self, matrix: sp.csr_matrix) -> sp.csr_matrix:
        """users x items -> owners x entities."""
        return matrix.T.tocsr() if self.user_based else matrix

    def _owner_entity_bias(self) -> tuple[np.ndarray, np.ndarray]:
        if self.user_based:
            return self.item_bias_, self.user_bias_
        return self.user_bias_, self.item_bias_

    # -- fitting --------------------------------------------------------------------------------
    def _fit(self, dataset: Dataset) -> None:
        explicit = self.feedback == "explicit" or (self.feedback == "auto" and dataset.has_ratings)
        self._check(
            not explicit or dataset.has_ratings,
            f"feedback='explicit' needs ratings and {dataset.name} has none; use "
            "feedback='implicit' (or 'auto')",
        )
        self._check(
            explicit or self.similarity not in CENTERED,
            f"similarity={self.similarity!r} centers ratings; with implicit feedback use "
            "cosine or jaccard",
        )
        self.explicit_ = bool(explicit)
        if explicit:
            values = sp.csr_matrix(dataset.matrix("rating"), dtype=np.float64)
        else:
            values = sp.csr_matrix(dataset.matrix("weight"), dtype=np.float64)
            values.eliminate_zeros()  # a zero weight is no interaction
        self.values_ = values
        oriented = self._orient(values)
        entities = oriented.T.tocsr()
        topn = Profile.of(self._topn_values(self._interactions(entities), oriented))
        self.similarity_ = self._similarities(topn, topn, rating=False, offset=0)
        if explicit:
            baseline = BaselineOnly().fit(dataset)
            self.global_mean_ = float(baseline.global_mean_)
            self.user_bias_ = baseline.user_bias_
            self.item_bias_ = baseline.item_bias_
            self.rating_range_ = list(baseline.rating_range_)
            self.entity_mean_ = _row_means(entities, self.global_mean_)
        # the rating view's similarities wait for the first rating prediction
        # (:meth:`_rating_similarity`): top-N lists never read them
        self.__dict__.pop("rating_similarity_", None)

    def _similarities(
        self, query: Profile, base: Profile, *, rating: bool, offset: int | None
    ) -> sp.csr_matrix:
        if rating:
            kept = _EXPLICIT_NEIGHBORS if self.max_neighbors is None else self.max_neighbors
            return pairwise(
                query,
                base,
                kind=self._rating_kind(),
                shrinkage=self._rating_shrinkage(),
                min_support=int(self.min_support),
                keep=max(int(self.k), int(kept)),
                offset=offset,
                block_entries=_BLOCK_ENTRIES,
            )
        return pairwise(
            query,
            base,
            kind=self._topn_kind(),
            shrinkage=self._topn_shrinkage(),
            min_support=int(self.min_support),
            keep=int(self.k),
            offset=offset,
            block_entries=_BLOCK_ENTRIES,
        )

    def _interactions(self, matrix: sp.csr_matrix) -> sp.csr_matrix:
        """The interaction strengths of the top-N view: 1 for explicit feedback (who rated
        what), the positive weights otherwise."""
        out = sp.csr_matrix(matrix, dtype=np.float64, copy=True)
        if self.explicit_:
            out.data = np.ones_like(out.data)
        else:
            out.data = np.maximum(out.data, 0.0)
            out.eliminate_zeros()
        return out

    def _topn_values(self, entities: sp.csr_matrix, training: sp.csr_matrix) -> sp.csr_matrix:
        """TF-IDF/BM25 weights of entity rows (entities x owners: training entities or new
        ones) with the owners' document frequencies from ``training`` (owners x entities)."""
        z = sp.csr_matrix(entities, dtype=np.float64, copy=True)
        weighting = self._weighting()
        if weighting == "none":
            return z
        rows = np.repeat(np.arange(z.shape[0]), np.diff(z.indptr))
        n_docs = training.shape[1]
        df = np.diff(training.indptr).astype(np.float64)
        idf = np.log1p((n_docs - df + 0.5) / (df + 0.5))
        if weighting == "tfidf":
            z.data = np.sqrt(z.data) * idf[z.indices]
        else:
            train_length = np.asarray(self._interactions(training).sum(axis=0)).ravel()
            average = float(train_length.mean()) if len(train_length) else 1.0
            length = np.asarray(z.sum(axis=1)).ravel()
            norm = (1.0 - self.bm25_b) + self.bm25_b * length / (average or 1.0)
            k1 = self.bm25_k1
            z.data = z.data * (k1 + 1.0) / (k1 * norm[rows] + z.data) * idf[z.indices]
        z.eliminate_zeros()
        return z

    def _rating_values(
        self, entities: sp.csr_matrix, training: sp.csr_matrix, *, new: bool
    ) -> sp.csr_matrix:
        """The rating vectors whose similarity predicts ratings: entity rows (entities x
        owners) of ratings, centered as the similarity asks (module docstring)."""
        z = sp.csr_matrix(entities, dtype=np.float64, copy=True)
        rows = np.repeat(np.arange(z.shape[0]), np.diff(z.indptr))
        kind = self._rating_kind()
        if kind == "pearson" and self.centering == "baseline":
            z.data -= self._entity_baseline(z, rows, new=new)
        elif kind == "pearson":
            z.data -= _row_means(z, self.global_mean_)[rows]
        elif kind == "adjusted_cosine":
            z.data -= _row_means(training, self.global_mean_)[z.indices]
        return z

    def _entity_baseline(self, z: sp.csr_matrix, rows: np.ndarray, *, new: bool) -> np.ndarray:
        """b_ui at the stored entries of entity rows ``z`` (training or ``new`` entities)."""
        owner_bias, entity_bias = self._owner_entity_bias()
        bias = entity_bias
        if new:  # the bias one ALS step gives a new entity, the owners' biases fixed
            residual = z.data - self.global_mean_ - owner_bias[z.indices]
            defaults = BaselineOnly()
            reg = defaults.reg_user if self.user_based else defaults.reg_item
            bias = np.bincount(rows, residual, z.shape[0]) / (reg + np.diff(z.indptr))
        return self.global_mean_ + owner_bias[z.indices] + bias[rows]

    # -- rating prediction ----------------------------------------------------------------------
    def _baseline(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        est = self.global_mean_ + np.where(users >= 0, self.user_bias_[users], 0.0)
        return est + np.where(items >= 0, self.item_bias_[items], 0.0)

    def _centre(self, owners: np.ndarray, entities: np.ndarray) -> np.ndarray:
        if self.centering == "mean":
            return np.asarray(self.entity_mean_[entities], dtype=np.float64)
        if self.centering == "baseline":
            owner_bias, entity_bias = self._owner_entity_bias()
            return self.global_mean_ + owner_bias[owners] + entity_bias[entities]
        return np.zeros(len(owners))

    def _predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        owners, entities = (items, users) if self.user_based else (users, items)
        residual = self._orient(self.values_).copy()
        rows = np.repeat(np.arange(residual.shape[0]), np.diff(residual.indptr))
        residual.data = residual.data - self._centre(rows, residual.indices)
        sim = self._rating_similarity()
        num, den = neighbor_sums(
            np.argsort(owners, kind="stable"),
            owners,
            entities,
            residual.indptr.astype(np.int64),
            residual.indices.astype(np.int64),
            residual.data.astype(np.float64),
            sim.indptr.astype(np.int64),
            sim.indices.astype(np.int64),
            sim.data.astype(np.float64),
            int(self.k),
        )
        estimate = self._baseline(users, items)
        known = (owners >= 0) & (entities >= 0) & (den > 0)
        centre = self._centre(owners[known], entities[known])
        estimate[known] = centre + num[known] / den[known]
        low, high = self.rating_range_
        return np.clip(estimate, low, high)

    def _rating_similarity(self) -> sp.csr_matrix:
        """``rating_similarity_``, worked out from the stored ratings on the first rating
        prediction and kept (and saved from then on): on 5M ratings it cost three times the
        top-N view's fit, which a model that only recommends never needs."""
        sim = self.__dict__.get("rating_similarity_")
        if sim is None:
            oriented = self._orient(self.values_)
            rating = Profile.of(self._rating_values(oriented.T.tocsr(), oriented, new=False))
            with _threads.limited(_threads.threads(large=True)):
                sim = self._similarities(rating, rating, rating=True, offset=0)
            self.rating_similarity_ = sim
        return sim

    # -- top-N ----------------------------------------------------------------------------------
    def _with_fallback(
        self, scores: np.ndarray, empty: np.ndarray, items: np.ndarray | None
    ) -> np.ndarray:
        """Rows with nothing to go on (no history, no neighbors) get the popularity fallback."""
        if empty.any():
            scores[empty] = self._fallback_scores(int(empty.sum()), items)
        return scores


def _sparse_top(
    cols: np.ndarray, vals: np.ndarray, seen: np.ndarray, k: int, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` of a score row stored sparsely (``vals`` at ``cols``, 0 elsewhere),
    ``seen`` left out, ties to the lower index: what :func:`top_k` gives on the dense row."""
    stored = vals != 0
    cols, vals = cols[stored], vals[stored]
    if len(seen):
        keep = ~np.isin(cols, seen)
        cols, vals = cols[keep], vals[keep]
    order = np.lexsort((cols, -vals))
    positive = order[vals[order] > 0]
    chosen, values = cols[positive[:k]], vals[positive[:k]]
    if len(chosen) < k:  # then the zero-score items by index, then the negative ones
        need = k - len(chosen)
        span = np.arange(min(n_items, need + len(seen) + len(cols)))
        zeros = span[~np.isin(span, seen) & ~np.isin(span, cols)][:need]
        negative = order[vals[order] < 0][: need - len(zeros)]
        chosen = np.concatenate([chosen, zeros, cols[negative]])
        values = np.concatenate([values, np.zeros(len(zeros)), vals[negative]])
    return chosen.astype(np.int64), values.astype(np.float64)


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _row_means(matrix: sp.csr_matrix, default: float) -> np.ndarray:
    counts = np.diff(matrix.indptr)
    sums = np.asarray(matrix.sum(axis=1)).ravel()
    out = np.full(matrix.shape[0], default, dtype=np.float64)
    np.divide(sums, counts, out=out, where=counts > 0)
    return out


@register("item-knn")
@dataclasses.dataclass(kw_only=True, eq=False)
class ItemKNN(_NeighborModel):
    """Item-based k-nearest neighbors for ratings and implicit feedback.

    Parameters
    ----------
    k:
        Neighbors per item: ``N_k(i)`` in top-N scores and similar items, ``N^k_u(i)`` (the
        k most similar items among those the user rated) in rating predictions.
    similarity:
        ``"cosine"``, ``"adjusted_cosine"``, ``"pearson"`` or ``"jaccard"`` (formulas in the
        module docstring). ``None``: ``"pearson"`` for rating prediction (with
        ``centering="baseline"`` this is Surprise's pearson_baseline) and ``"cosine"`` for
        top-N; the top-N view always uses cosine unless ``"jaccard"`` is asked for.
    weighting:
        ``"none"``, ``"tfidf"`` or ``"bm25"`` re-weighting of the top-N view's interaction
        matrix before the similarity (documents = items, terms = users, as implicit's
        ``bm25_weight``). ``None``: ``"bm25"``.
    bm25_k1, bm25_b:
        BM25 term-frequency saturation k1 and length normalization b.
    shrinkage:
        λ in s_ij · n_ij / (n_ij + λ). ``None``: 100 for rating prediction (KNNBaseline's
        choice) and 5 for top-N.
    min_support:
        Pairs co-rated by fewer users than this get similarity 0.
    centering:
        The centre c of rating predictions: ``"none"`` (plain weighted average),
        ``"mean"`` (the item's mean rating, KNNWithMeans) or ``"baseline"``
        (μ + b_u + b_i, KNNBaseline).
    feedback:
        ``"explicit"`` (ratings: predict ratings too), ``"implicit"`` (weights or 1; top-N
        only) or ``"auto"`` (explicit when the dataset has ratings).
    max_neighbors:
        Neighbors kept per item for rating prediction (``rating_similarity_``; at least
        ``k``), where the k neighbors are picked among the items each user rated and so
        must come from a longer list. ``None``: 1000.

    Two views
    ---------
    *Top-N* (``recommend``, ``score``, ``similar_items``, ``explain``, fold-in):
    ``similarity_`` holds each item's k best neighbors by (BM25-weighted) cosine on the
    interaction matrix -- for explicit feedback the binary who-rated-what matrix -- and
    ``score(u, i) = Σ_{j ∈ N_k(i) ∩ I_u} s_ij · x_uj = (X_u S_kᵀ)_i`` with ``x_uj = 1`` for
    the user's items (strengths already shaped the similarities; using raw play counts as x
    lowered NDCG@10 on Last.fm). *Rating prediction* (explicit feedback only):
    ``rating_similarity_`` from ``similarity``/``shrinkage``/``centering``. Ranking by
    predicted rating favors obscure items: on a random 80/20 split of MovieLens 100K
    (relevant = rating >= 4) NDCG@10 was 0.075 by predicted rating, 0.240 by the neighbor
    sum over the pearson-baseline similarities and 0.316 with the top-N view used here.
    """

    user_based: ClassVar[bool] = False

    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        return self._score_rows(self.values_[users], items)

    def _score_rows(self, rows: sp.csr_matrix, items: np.ndarray | None) -> np.ndarray:
        history = self._interactions(rows)
        history.data = np.ones_like(history.data)
        if items is None:  # a row times the transpose kept as CSR: no conversion per call
            scores = np.asarray((history @ self._similarity_t()).toarray(), dtype=np.float64)
        else:
            neighbors = self.similarity_[items]
            scores = np.asarray((history @ neighbors.T).toarray(), dtype=np.float64)
        return self._with_fallback(scores, np.diff(history.indptr) == 0, items)

    def _score_history(
        self, histories: sp.csr_matrix, sequences: list[np.ndarray] | None = None
    ) -> np.ndarray:
        return self._score_rows(sp.csr_matrix(histories), None)

    def recommend_indices(
        self,
        users: np.ndarray,
        k: int,
        *,
        exclude: sp.csr_matrix | None = None,
        items: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The lists of scoring every item, from the sparse product alone: a user's scores
        are non-zero only on the neighbours of their items, so the list is those, best
        first, then the zero-score items by index (the dense path's ties) -- without a
        catalogue-long row per user (``benchmarks/scale.py``). Candidate lists and users
        without a usable history (the fallback) take the dense path."""
        if items is not None:
            return super().recommend_indices(users, k, exclude=exclude, items=items)
        self._require_fitted()
        users = np.asarray(users, dtype=np.int64)
        n_items = len(self.items_)
        k = min(check_k(k), n_items)
        out_items, out_scores = padding_lists(len(users), k)
        if k == 0:
            return out_items, out_scores
        known = np.flatnonzero(users >= 0)
        history = self._interactions(self.values_[users[known]])
        usable = np.diff(history.indptr) > 0
        rows = known[usable]
        rest = np.setdiff1d(np.arange(len(users)), rows)
        if len(rest):
            out_items[rest], out_scores[rest] = super().recommend_indices(
                users[rest], k, exclude=exclude
            )
        history = history[usable]
        history.data = np.ones_like(history.data)
        none = np.zeros(0, dtype=np.int64)
        for start in range(0, len(rows), 1024):
            scores = sp.csr_matrix(history[start : start + 1024] @ self._similarity_t())
            for r, row in enumerate(rows[start : start + 1024].tolist()):
                user = int(users[row])
                cols = scores.indices[scores.indptr[r] : scores.indptr[r + 1]]
                vals = scores.data[scores.indptr[r] : scores.indptr[r + 1]]
                seen = (
                    exclude.indices[exclude.indptr[user] : exclude.indptr[user + 1]]
                    if exclude is not None
                    else none
                )
                chosen, values = _sparse_top(cols, vals, seen, k, n_items)
                out_items[row, : len(chosen)] = chosen
                out_scores[row, : len(chosen)] = values
        return out_items, out_scores

    def _similarity_t(self) -> sp.csr_matrix:
        """``similarity_`` transposed, as CSR, worked out once per fitted matrix: scoring one
        history against the CSC view converted all of it on every call (40 ms a list at
        17,632 items)."""
        kept = self.__dict__.get("_kept_transpose")
        if kept is None or kept[0] is not self.similarity_:
            kept = (self.similarity_, sp.csr_matrix(self.similarity_.T))
            self.__dict__["_kept_transpose"] = kept
        return kept[1]

    def _similar(self, items: np.ndarray) -> np.ndarray:
        rows = self.similarity_[items].toarray()
        return np.where(rows > 0, rows, -np.inf)


@register("user-knn")
@dataclasses.dataclass(kw_only=True, eq=False)
class UserKNN(_NeighborModel):
    """User-based k-nearest neighbors: :class:`ItemKNN` on the transposed matrix.

    The parameters are :class:`ItemKNN`'s with users and items swapped: ``k`` neighbor users,
    ``"pearson"`` centers by the user's mean (or baseline residual), ``"adjusted_cosine"`` by
    the item's mean, ``centering="mean"`` predicts around the user's mean rating (Surprise's
    user-based KNNWithMeans), BM25/TF-IDF treat users as documents and items as terms.

    Top-N scores: ``score(u, i) = Σ_{v ∈ N_k(u)} s_uv · x_vi = (S_k[u] X)_i`` with x = 1
    for each neighbor's items, the similarity-weighted votes of the user's k nearest
    neighbors. Fold-in: the history's similarity to every training user, its best k, and
    the weighted sum of their rows. No ``similar_items`` (the model has no item similarity).

    ``max_users`` (default 100,000): the similarities compare every pair of users who
    share an item, which grows with the square of the users (50,000 power-law users take
    about 2.5 minutes on 2 cores, ``benchmarks/results/scale.md``); above it the fit
    refuses at once, before any work, and names item-knn and ALS instead.
    """

    user_based: ClassVar[bool] = True
    max_users: int = 100_000

    def _validate(self) -> None:
        super()._validate()
        self._check(self.max_users >= 1, "max_users must be >= 1")

    def _fit(self, dataset: Dataset) -> None:
        self._check(
            dataset.n_users <= self.max_users,
            f"user-knn compares every pair of users who share an item: {dataset.n_users:,} "
            f"users is over max_users={self.max_users:,} (the cost grows with the square of "
            "the users); use item-knn or als, or raise max_users",
        )
        super()._fit(dataset)

    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        return self._vote(self.similarity_[users], items)

    def _vote(self, neighbors: sp.csr_matrix, items: np.ndarray | None) -> np.ndarray:
        liked = self._interactions(self.values_ if items is None else self.values_[:, items])
        liked.data = np.ones_like(liked.data)
        scores = np.asarray((neighbors @ liked).toarray(), dtype=np.float64)
        return self._with_fallback(scores, np.diff(neighbors.indptr) == 0, items)

    def _score_history(
        self, histories: sp.csr_matrix, sequences: list[np.ndarray] | None = None
    ) -> np.ndarray:
        oriented = self._orient(self.values_)  # items x users
        training = Profile.of(self._topn_values(self._interactions(self.values_), oriented))
        query = Profile.of(self._topn_values(self._interactions(histories), oriented))
        return self._vote(self._similarities(query, training, rating=False, offset=None), None)

    def _explain(self, user: int, items: np.ndarray) -> list[str]:
        if user < 0:
            return ["popular with everyone (no history to compare with)"] * len(items)
        neighbors = self.similarity_[user]
        if neighbors.nnz == 0:
            return ["no similar users; popular with everyone"] * len(items)
        liked = self.values_[neighbors.indices][:, items]
        counts = np.diff(liked.tocsc().indptr)
        return [
            f"users with similar taste liked it ({int(c)} of your {neighbors.nnz} nearest "
            "neighbors)"
            for c in counts
        ]
