"""Top-k search by inner product over item vectors: approximate (faiss IVF) or exact.

``VectorIndex(vectors)`` answers ``search(queries, k)`` with the ``k`` items of largest
``query . item`` per query. The approximate backend is a faiss inverted-file index
(``IndexIVFFlat``; optional dependency ``faiss-cpu``, part of the ``tastebud[neural]``
extra): k-means splits the items into ``lists`` cells and a query scans the ``probes`` cells
nearest to it, exactly. Without faiss, or with ``backend="exact"``, it is a blocked numpy
matrix product.

``backend="pruned"`` is exact and fast where a few items have much larger norms than the
rest, as matrix factorization gives popular items: it scores the items from the largest
norm down and stops for a query once ``|q| |v|`` of the next item -- an upper bound of every
score left -- is below its k-th best score (on the 1M-item benchmark, ALS, BPR and SVD lists
come 24-190x faster than by scoring every item, with the same answers;
``benchmarks/retrieval.py``). On vectors of similar norms it scans everything.

Cells are found by distance, not inner product, so the items are given one more coordinate,
``sqrt(M^2 - |x|^2)`` with ``M`` the largest item norm, and the queries a 0 there (Bachrach
et al., RecSys 2014): the L2 order of the augmented vectors is then the inner-product order,
for any vectors, normalized or not. Returned scores are the exact inner products of the
returned items.

On the 1M-item benchmark (``benchmarks/ann.py``, ``docs/benchmarks.md``) the inverted file
finds recall@100 0.9998 with a p99 under 1 ms and builds in 41 s; an HNSW graph (faiss,
M=32), tried first, reached 0.83 at ef_search 300 after a 213 s build. No index does well on
vectors without any cluster structure (i.i.d. Gaussian: 0.58 at 256 probes), which trained
embeddings are not.

faiss runs on tastebud's thread count (:mod:`tastebud._threads`): one thread, or every core
to build an index of at least ``_PARALLEL_BUILD`` items (k-means over a large sample) and to
search a batch of at least ``_PARALLEL_QUERIES`` queries -- work long enough between
synchronisations for more threads to pay on a busy machine.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from tastebud import _threads
from tastebud.errors import InvalidInputError, TastebudError

Backend = Literal["auto", "faiss", "exact", "pruned"]
_BLOCK = 1 << 24  # query x item products computed at once by the exact backend
_TRAIN_PER_LIST = 50  # k-means trains on at most this many items per cell
_MIN_PER_LIST = 39  # faiss's minimum of training points per cell
_PARALLEL_BUILD = 100_000  # items from which the build uses every core
_PARALLEL_QUERIES = 1_000  # queries from which a search uses every core
_PRUNED_CHUNK = 4_096  # items scored per step of the pruned search
_PRUNED_QUERIES = 256  # queries searched together by the pruned search


def faiss_or_none() -> Any:
    try:
        import faiss
    except ImportError:
        return None
    return faiss


class VectorIndex:
    """Inner-product top-k over the rows of ``vectors`` (module docstring).

    Parameters
    ----------
    vectors:
        ``(n_items, d)`` item vectors.
    backend:
        ``"faiss"`` (an error if faiss is missing), ``"exact"``, or ``"auto"``: faiss when
        installed, else exact.
    lists:
        Cells of the inverted file (``None``: ``4 * sqrt(n_items)``, at most one per 39
        items -- a small catalog gets one cell, an exact scan).
    probes:
        Cells scanned per query (more: better recall, slower queries).
    random_state:
        Seed of the sample k-means trains on.
    """

    def __init__(
        self,
        vectors: np.ndarray,
        *,
        backend: Backend = "auto",
        lists: int | None = None,
        probes: int = 32,
        random_state: int = 0,
    ) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or not np.isfinite(vectors).all():
            raise InvalidInputError("vectors must be a 2-d array of finite numbers")
        if backend not in ("auto", "faiss", "exact", "pruned"):
            raise InvalidInputError(
                f"backend must be 'auto', 'faiss', 'exact' or 'pruned', got {backend!r}"
            )
        if (lists is not None and lists < 1) or probes < 1:
            raise InvalidInputError("lists and probes must be >= 1")
        faiss = faiss_or_none()
        if backend == "faiss" and faiss is None:
            raise TastebudError(
                "the approximate index needs faiss: pip install 'tastebud[neural]' "
                "(or faiss-cpu), or use backend='exact'"
            )
        self.vectors = vectors
        self.probes = int(probes)
        self._index: Any = None
        n = len(vectors)
        if backend == "pruned":
            self.backend = "pruned"
            norms = np.linalg.norm(vectors, axis=1)
            self._order = np.argsort(-norms, kind="stable")  # largest norm first
            self._norms = norms[self._order]
            self._sorted = np.ascontiguousarray(vectors[self._order])
            return
        self.backend = "faiss" if backend != "exact" and faiss is not None else "exact"
        if self.backend == "faiss" and n:
            if lists is None:
                lists = int(4 * np.sqrt(n))
            self.lists = max(1, min(int(lists), n // _MIN_PER_LIST))
            norms = np.einsum("ij,ij->i", vectors, vectors)
            extra = np.sqrt(np.maximum(norms.max() - norms, 0.0))[:, None]
            augmented = np.ascontiguousarray(np.hstack([vectors, extra]), dtype=np.float32)
            quantizer = faiss.IndexFlatL2(augmented.shape[1])
            index = faiss.IndexIVFFlat(quantizer, augmented.shape[1], self.lists)
            index.cp.seed = int(random_state)
            rng = np.random.default_rng(random_state)
            size = min(n, _TRAIN_PER_LIST * self.lists)
            sample = augmented if size == n else augmented[rng.choice(n, size, replace=False)]
            large = n >= _PARALLEL_BUILD  # faiss's OpenMP and BLAS pools (module docstring)
            with _threads.limited(_threads.threads(large=large)):
                index.train(sample)
                index.add(augmented)
            self._index = index
            self._quantizer = quantizer  # the index does not own it: keep it alive

    def __len__(self) -> int:
        return len(self.vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices and inner products of the ``k`` best items per query row, best first;
        padded with -1 / NaN when the index holds fewer than ``k`` items."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.vectors.shape[1]:
            raise InvalidInputError(
                f"queries have {queries.shape[1]} dimensions, the index {self.vectors.shape[1]}"
            )
        k = int(k)
        out_idx = np.full((len(queries), k), -1, dtype=np.int64)
        out_score = np.full((len(queries), k), np.nan)
        if k <= 0 or len(self.vectors) == 0 or len(queries) == 0:
            return out_idx, out_score
        if self.backend == "pruned":
            for start in range(0, len(queries), _PRUNED_QUERIES):
                block = queries[start : start + _PRUNED_QUERIES]
                idx, val, _ = self._pruned(block, min(k, len(self.vectors)))
                out_idx[start : start + len(block), : idx.shape[1]] = idx
                out_score[start : start + len(block), : idx.shape[1]] = val
            return out_idx, out_score
        if self._index is None:
            from tastebud.models.base import top_k

            rows = max(1, _BLOCK // len(self.vectors))
            for start in range(0, len(queries), rows):
                scores = queries[start : start + rows] @ self.vectors.T
                idx, val = top_k(scores.astype(np.float64), k)
                out_idx[start : start + rows], out_score[start : start + rows] = idx, val
            return out_idx, out_score
        self._index.nprobe = min(self.probes, self.lists)
        augmented = np.hstack([queries, np.zeros((len(queries), 1), dtype=np.float32)])
        large = len(queries) >= _PARALLEL_QUERIES
        with _threads.limited(_threads.threads(large=large), pools=False):
            _, idx = self._index.search(augmented, min(k, len(self.vectors)))
        found = idx >= 0
        scores = np.einsum("qd,qkd->qk", queries, self.vectors[np.maximum(idx, 0)])
        width = idx.shape[1]
        out_idx[:, :width] = np.where(found, idx, -1)
        out_score[:, :width] = np.where(found, scores, np.nan)
        return out_idx, out_score

    def scan_share(self, queries: np.ndarray, k: int) -> float:
        """The share of the items the pruned search scores to find ``k`` for ``queries``
        (1.0 for the other backends): how well the norms prune for such queries."""
        if self.backend != "pruned" or not len(queries) or not len(self.vectors):
            return 1.0
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        _, _, scanned = self._pruned(queries, min(int(k), len(self.vectors)))
        return scanned / (len(queries) * len(self.vectors))

    def _pruned(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Exact top-``k`` by scanning the items from the largest norm down, chunk by chunk,
        and stopping for a query once ``|q| |v|`` of the next item (an upper bound of every
        score left, Cauchy-Schwarz) is below its ``k``-th best score so far; also the
        number of scores computed. Ties at the cut may fall otherwise than in the exact
        backend's order."""
        from tastebud.models.base import top_k

        n = len(queries)
        best_idx = np.full((n, k), -1, dtype=np.int64)  # positions in the sorted order
        best_val = np.full((n, k), -np.inf)
        qnorm = np.linalg.norm(queries, axis=1).astype(np.float64)
        active = np.arange(n)
        scanned = 0
        for start in range(0, len(self._sorted), _PRUNED_CHUNK):
            if start and len(active):
                bound = qnorm[active] * self._norms[start]
                active = active[bound >= best_val[active, k - 1]]
            if not len(active):
                break
            chunk = self._sorted[start : start + _PRUNED_CHUNK]
            scores = (queries[active] @ chunk.T).astype(np.float64)
            scanned += scores.size
            merged = np.hstack([best_val[active], scores])
            positions = np.hstack(
                [
                    best_idx[active],
                    np.broadcast_to(np.arange(start, start + len(chunk)), scores.shape),
                ]
            )
            merged[positions < 0] = -np.inf
            top, val = top_k(merged, k)
            picked = np.take_along_axis(positions, np.maximum(top, 0), axis=1)
            best_idx[active] = np.where(top >= 0, picked, -1)
            best_val[active] = np.where(top >= 0, val, -np.inf)
        found = best_idx >= 0
        items = np.where(found, self._order[np.maximum(best_idx, 0)], -1)
        return items, np.where(found, best_val, np.nan), scanned
