"""Candidate retrieval through a vector index, for every model that scores by an inner
product of a user vector and item vectors (ALS, BPR, SVD, SVD++, two-tower).

A model whose score is ``q_u . v_i (+ b_i) (+ c_u)`` -- ``b_i`` an item bias, ``c_u`` a user
offset that does not change a user's order -- is searched over ``[v_i, b_i]`` with the
query ``[q_u, 1]`` (:class:`~tastebud.ann.VectorIndex`). The search is the norm-pruned
exact one where it scores at most 5% of the items for a sample of training users (matrix
factorization: the popular items carry the large norms), else faiss IVF (approximate;
exact without faiss).
With ``index="auto"`` a catalogue of at least ``ann_min_items`` items is searched, a smaller
one scored whole (exact, as before); ``"ann"`` and ``"exact"`` force one. The index is built
on first use, kept per set of item vectors, and never saved.

Through the index, ``recommend`` over 1M items costs a probe of a few thousand items per
user instead of a 1M-long score row (``benchmarks/retrieval.py``); the service's fold-in
returns the search (:class:`~tastebud.models.base.UserScores`) instead of a dense row.
Lists restricted to candidates (``items=``) and users the model cannot score (the
fallback) take the exact path.
"""

from __future__ import annotations

import abc
import dataclasses
import threading
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from tastebud.ann import VectorIndex, faiss_or_none
from tastebud.models.base import Recommender, check_k, padding_lists

Index = Literal["auto", "exact", "ann"]

#: The pruned exact search is chosen when it scores at most this share of the catalogue.
PRUNED_MAX_SHARE = 0.05
_SAMPLE_USERS = 256  # training users whose queries decide between pruned and IVF
_SAMPLE_K = 50  # the list length they are searched for (a list plus the seen items)
#: One index build at a time: concurrent first requests wait for the build under way
#: instead of each building its own (a faiss k-means over 100,000 items takes seconds).
_BUILD_LOCK = threading.RLock()


@dataclasses.dataclass(kw_only=True, eq=False)
class Searchable(Recommender):
    """Retrieval through a vector index (module docstring).

    Parameters
    ----------
    index:
        ``"exact"`` (every item scored), ``"ann"`` (faiss IVF; exact without faiss) or
        ``"auto"``: ANN from ``ann_min_items`` items on.
    ann_min_items:
        The catalogue size from which ``"auto"`` searches an index.
    """

    index: Index = "auto"
    ann_min_items: int = 50_000

    def _validate(self) -> None:
        super()._validate()
        self._check(self.ann_min_items >= 1, "ann_min_items must be >= 1")

    # -- what a model provides ---------------------------------------------------------------
    @abc.abstractmethod
    def _search_items(self) -> np.ndarray:
        """The item side ``(n_items, d)``: a user's score of item i is ``query . row_i``
        (plus a per-user constant and a scale, :meth:`_searched_scores`). The same array
        object while the model is unchanged (the index is kept per object)."""

    @abc.abstractmethod
    def _search_queries(
        self,
        users: np.ndarray | None,
        histories: sp.csr_matrix | None = None,
        sequences: list[np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Query vectors and per-user offsets, of known users (``users``) or of histories
        to fold in (``histories``, every row non-empty, and their items in time order)."""

    def _with_bias(self, vectors: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
        """An item side ``[v_i, b_i]`` (``[v_i]`` without a bias) as contiguous float32,
        made once per ``vectors`` object (:meth:`_search_items` helper)."""
        cached = self.__dict__.get("_search_cache")
        if cached is None or cached[0] is not vectors:
            side = vectors if bias is None else np.hstack([vectors, np.asarray(bias)[:, None]])
            cached = (vectors, np.ascontiguousarray(side, dtype=np.float32))
            self.__dict__["_search_cache"] = cached
        return cached[1]

    @staticmethod
    def _with_one(vectors: np.ndarray, biased: bool) -> np.ndarray:
        """Queries ``[q_u, 1]`` (``[q_u]`` when the items have no bias), float32."""
        if biased:
            vectors = np.hstack([vectors, np.ones((len(vectors), 1))])
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _search_scale(self) -> float:
        """Scores are the inner products times this (two-tower's 1 / temperature)."""
        return 1.0

    # -- the index -----------------------------------------------------------------------------
    def vector_index(self) -> VectorIndex:
        """The search structure over the item side (built on first use, not saved; built
        again when the item vectors, ``index`` or ``ann_min_items`` change)."""
        self._require_fitted()
        items = self._search_items()
        key = (self.index, int(self.ann_min_items))
        cached = self.__dict__.get("_vector_index")
        if cached is None or cached[0] != key or cached[1] is not items:
            with _BUILD_LOCK:
                cached = self.__dict__.get("_vector_index")
                if cached is None or cached[0] != key or cached[1] is not items:
                    ann = self.index == "ann" or (self.index == "auto" and len(items) >= key[1])
                    index = (
                        self._searching_index(items) if ann else VectorIndex(items, backend="exact")
                    )
                    cached = self.__dict__["_vector_index"] = (key, items, index)
        return cached[2]

    def _searching_index(self, items: np.ndarray) -> VectorIndex:
        """The norm-pruned exact search when it scores at most :data:`PRUNED_MAX_SHARE` of
        the items for a sample of the training users' queries (factor models, whose
        popular items have the large norms); else the faiss inverted file (else exact)."""
        pruned = VectorIndex(items, backend="pruned")
        users = np.flatnonzero(np.diff(self.seen_.indptr) > 0)
        users = users[self._scorable(users)]
        if len(users):
            rng = np.random.default_rng(0)
            sample = np.sort(rng.choice(users, min(len(users), _SAMPLE_USERS), replace=False))
            queries, _ = self._search_queries(sample)
            if pruned.scan_share(queries, _SAMPLE_K) <= PRUNED_MAX_SHARE:
                return pruned
        use_faiss = faiss_or_none() is not None
        return VectorIndex(items, backend="faiss" if use_faiss else "exact")

    # -- similar items through an index -------------------------------------------------------
    def _similar_vectors(self) -> np.ndarray | None:
        """Item vectors whose inner products are the model's item similarities (cosine
        models: the unit rows), the same array object while the model is unchanged; ``None``
        (the default): similar items are always worked out over the whole catalogue."""
        return None

    def similar_index(self) -> VectorIndex | None:
        """The index :meth:`nearest` searches, or ``None`` where it scores every item: under
        ``ann_min_items`` items (``index="auto"``), with ``index="exact"``, without faiss,
        or for a model without :meth:`_similar_vectors`. Built on first use (or by
        :meth:`warm_up`), kept per set of vectors, never saved. Unit vectors have one norm,
        so the norm-pruned search would scan everything: this is faiss IVF."""
        self._require_fitted()
        vectors = self._similar_vectors()
        if vectors is None or faiss_or_none() is None:
            return None
        if self.index == "exact" or (self.index == "auto" and len(vectors) < self.ann_min_items):
            return None
        if vectors is self._search_items():  # the recommend index already searches them
            index = self.vector_index()
            return None if index.backend == "exact" else index
        cached = self.__dict__.get("_similar_index")
        if cached is None or cached[0] is not vectors:
            with _BUILD_LOCK:
                cached = self.__dict__.get("_similar_index")
                if cached is None or cached[0] is not vectors:
                    cached = (vectors, VectorIndex(vectors, backend="faiss"))
                    self.__dict__["_similar_index"] = cached
        return cached[1]

    def nearest(
        self, item: int, k: int, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Through :meth:`similar_index` when there is one: a probe of a few cells instead of
        a similarity to every item (at 100,000 items that was most of a served list's
        time); else the exact path. An item without a vector (similar to none) takes the
        exact path too."""
        index = self.similar_index()
        query = None if index is None else index.vectors[item]
        if index is None or query is None or not query.any():
            return super().nearest(item, k, exclude)
        skip = np.zeros(0, dtype=np.int64) if exclude is None else exclude
        found, sims = index.search(query[None, :], k + 1 + len(skip))
        keep = (found[0] >= 0) & (found[0] != item) & ~np.isin(found[0], skip)
        keep &= np.isfinite(sims[0])
        return found[0][keep][:k], sims[0][keep][:k].astype(np.float64)

    def warm_up(self) -> None:
        """Build the search indexes now (the service calls this when it loads a version,
        so its first requests do not pay for them)."""
        super().warm_up()
        self.vector_index()
        if self.supports_similar_items:
            self.similar_index()

    def _restore_state(self, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.__dict__.pop("_vector_index", None)
        self.__dict__.pop("_similar_index", None)
        super()._restore_state(config, arrays)

    def _searched_scores(self, raw: np.ndarray, offsets: np.ndarray | None) -> np.ndarray:
        scores = np.asarray(raw, dtype=np.float64) * self._search_scale()
        if offsets is not None:
            scores += offsets[:, None]
        return scores

    # -- recommend and fold-in through it ---------------------------------------------------
    def recommend_indices(
        self,
        users: np.ndarray,
        k: int,
        *,
        exclude: sp.csr_matrix | None = None,
        items: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Through the vector index when it is approximate (whole catalogue, no candidate
        list); otherwise the exact path of every model."""
        self._require_fitted()
        index = self.vector_index()
        if items is not None or index.backend == "exact":
            return super().recommend_indices(users, k, exclude=exclude, items=items)
        k = min(check_k(k), len(self.items_))
        out_items, out_scores = padding_lists(len(users), k)
        scorable = users >= 0
        scorable[scorable] = self._scorable(users[scorable])
        if (~scorable).any():  # unknown and cold users: the fallback, exact
            rest = np.flatnonzero(~scorable)
            out_items[rest], out_scores[rest] = super().recommend_indices(
                users[rest], k, exclude=exclude
            )
        rows = np.flatnonzero(scorable)
        if not len(rows) or k == 0:
            return out_items, out_scores
        queries, offsets = self._search_queries(users[rows], None)
        seen = [
            exclude.indices[exclude.indptr[u] : exclude.indptr[u + 1]]
            if exclude is not None
            else np.zeros(0, np.int64)
            for u in users[rows]
        ]
        # searched in groups of similar width (k + seen items, by powers of two), so one
        # heavy user does not widen every other user's search
        widths = np.array([k + len(s) for s in seen])
        groups = np.ceil(np.log2(widths)).astype(np.int64)
        for group in np.unique(groups).tolist():
            members = np.flatnonzero(groups == group)
            found, raw = index.search(queries[members], int(widths[members].max()))
            scores = self._searched_scores(raw, None if offsets is None else offsets[members])
            for r, m in enumerate(members.tolist()):
                keep = (found[r] >= 0) & ~np.isin(found[r], seen[m])
                chosen = found[r][keep][:k]
                out_items[rows[m], : len(chosen)] = chosen
                out_scores[rows[m], : len(chosen)] = scores[r][keep][:k]
        return out_items, out_scores

    def _retriever(
        self, sequences: list[np.ndarray], histories: sp.csr_matrix
    ) -> _IndexRetriever | None:
        """Through the vector index when it is approximate (the service then never scores
        the whole catalogue for a list); ``None`` (every item scored) otherwise."""
        index = self.vector_index()
        if index.backend == "exact" or histories.shape[0] != 1 or not (histories.data > 0).any():
            return None  # nothing to fold in: the model's own answer (its fallback)
        queries, offsets = self._search_queries(None, sp.csr_matrix(histories), sequences)
        return _IndexRetriever(self, index, queries[0], None if offsets is None else offsets[0])


class _IndexRetriever:
    """One user's search over the item side's index (a ``Retriever``)."""

    def __init__(
        self, model: Searchable, index: VectorIndex, query: np.ndarray, offset: float | None
    ) -> None:
        self.model, self.index, self.query = model, index, query
        self.offset = None if offset is None else np.array([offset])

    def top(self, n: int, exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        found, raw = self.index.search(self.query[None, :], n + len(exclude))
        keep = (found[0] >= 0) & ~np.isin(found[0], exclude)
        scores = self.model._searched_scores(raw, self.offset)[0]
        return found[0][keep][:n], scores[keep][:n]

    def score(self, items: np.ndarray) -> np.ndarray:
        raw = self.index.vectors[items] @ self.query.astype(np.float32)
        return self.model._searched_scores(raw[None, :], self.offset)[0]


@dataclasses.dataclass(kw_only=True, eq=False)
class OneRanking(Recommender):
    """Models whose order is the same for every user (score ``c_u + s_i``: popularity,
    trending, the bias baseline): a list is one ranking of the items read past the user's
    excluded ones, instead of a catalogue-long score row per user -- the same lists, scores
    and ties (lower index first) as scoring every item."""

    @abc.abstractmethod
    def _ranking_scores(self) -> np.ndarray:
        """``s_i`` per item, the same array object while the model is unchanged."""

    def _user_offsets(self, users: np.ndarray) -> np.ndarray | None:
        """``c_u`` per user (``-1``: an unknown user), or ``None`` for none."""
        return None

    def recommend_indices(
        self,
        users: np.ndarray,
        k: int,
        *,
        exclude: sp.csr_matrix | None = None,
        items: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        if items is not None:
            return super().recommend_indices(users, k, exclude=exclude, items=items)
        self._require_fitted()
        users = np.asarray(users, dtype=np.int64)
        k = min(check_k(k), len(self.items_))
        out_items, out_scores = padding_lists(len(users), k)
        if k == 0:
            return out_items, out_scores
        scores = self._ranking_scores()
        cached = self.__dict__.get("_ranking")
        if cached is None or cached[0] is not scores:
            cached = (scores, np.lexsort((np.arange(len(scores)), -scores)))
            self.__dict__["_ranking"] = cached
        ranking = cached[1]
        offsets = self._user_offsets(users)
        empty = np.zeros(0, dtype=np.int64)
        for row, user in enumerate(users.tolist()):
            seen = (
                exclude.indices[exclude.indptr[user] : exclude.indptr[user + 1]]
                if exclude is not None and user >= 0
                else empty
            )
            head = ranking[: k + len(seen)]
            chosen = head[~np.isin(head, seen)][:k] if len(seen) else head[:k]
            out_items[row, : len(chosen)] = chosen
            row_scores = scores[chosen] if offsets is None else offsets[row] + scores[chosen]
            out_scores[row, : len(chosen)] = row_scores
        return out_items, out_scores
