"""The sparse kernels of the neighborhood models (:mod:`tastebud.models.neighbors`).

Entities are the rows of a :class:`Profile` (items for item-based, users for user-based) and
owners its columns; the formulas -- cosine, jaccard, pearson, adjusted cosine, shrinkage, the
neighbor sums of rating prediction -- are written out in the docstring of
:mod:`tastebud.models.neighbors`. Everything here works on whatever profile it is handed:
which values go in (weights, TF-IDF/BM25, centered ratings) is the models' business.

* :func:`pairwise` -- the similarities of query entities to base entities, computed for blocks
  of rows so memory is bounded by the block, never by n², keeping the best ``keep`` positive
  ones per row (ties to the lower index);
* :func:`neighbor_sums` -- Σ s_ij (r_uj - c_uj) and Σ |s_ij| over the k neighbors of i among
  the entities u rated, for rating prediction (numba).
"""

from __future__ import annotations

import dataclasses
import itertools

import numba
import numpy as np
import scipy.sparse as sp

#: The similarities computed on centered values (they need sums of squares over co-support).
CENTERED = ("adjusted_cosine", "pearson")


@dataclasses.dataclass
class Profile:
    """What the similarity of entity vectors needs (rows = entities, columns = owners)."""

    values: sp.csr_matrix  # z: weighted or centered values
    support: sp.csr_matrix  # 1 where an interaction is stored
    norm: np.ndarray  # ‖z_i‖ (cosine)
    size: np.ndarray  # n_i (jaccard)

    @classmethod
    def of(cls, values: sp.csr_matrix) -> Profile:
        values = sp.csr_matrix(values, dtype=np.float64)
        support = values.copy()
        support.data = np.ones_like(support.data)
        return cls(
            values=values,
            support=support,
            norm=np.sqrt(np.asarray(values.multiply(values).sum(axis=1)).ravel()),
            size=np.diff(support.indptr).astype(np.float64),
        )

    def __getitem__(self, rows: slice) -> Profile:
        return Profile(self.values[rows], self.support[rows], self.norm[rows], self.size[rows])


def _on_pattern(product: sp.csr_matrix, pattern: sp.csr_matrix) -> np.ndarray:
    """Values of ``product`` at the stored positions of ``pattern``, in ``pattern``'s order
    (0 where absent).

    ``product``'s positions must be a subset of ``pattern``'s: sparse products drop sums that
    cancel to exactly 0, so a product of signed values can have fewer entries than the
    co-occurrence pattern. Products of equal patterns come out in the same order, so the
    usual case is a plain copy.
    """
    product = sp.csr_matrix(product)
    if (
        product.nnz == pattern.nnz
        and np.array_equal(product.indptr, pattern.indptr)
        and np.array_equal(product.indices, pattern.indices)
    ):
        return np.asarray(product.data, dtype=np.float64)
    n_cols = np.int64(pattern.shape[1])
    rows_p = np.repeat(np.arange(pattern.shape[0], dtype=np.int64), np.diff(pattern.indptr))
    rows_q = np.repeat(np.arange(product.shape[0], dtype=np.int64), np.diff(product.indptr))
    keys_p = rows_p * n_cols + pattern.indices
    keys_q = rows_q * n_cols + product.indices
    sorter = np.argsort(keys_p, kind="stable")
    out = np.zeros(pattern.nnz, dtype=np.float64)
    out[sorter[np.searchsorted(keys_p, keys_q, sorter=sorter)]] = product.data
    return out


@numba.njit(cache=True)
def _worst(buf_val: np.ndarray, buf_col: np.ndarray, m: int) -> int:  # pragma: no cover
    """Position of the weakest of ``m`` buffered neighbors (lowest value, then highest col)."""
    worst = 0
    for a in range(1, m):
        if buf_val[a] < buf_val[worst] or (
            buf_val[a] == buf_val[worst] and buf_col[a] > buf_col[worst]
        ):
            worst = a
    return worst


@numba.njit(cache=True)
def _top_in_rows(
    indptr: np.ndarray, cols: np.ndarray, values: np.ndarray, n: int
) -> np.ndarray:  # pragma: no cover - compiled
    """Mask of the ``n`` largest ``values`` of each CSR row, ties to the lower column (the
    columns need not be sorted): a bounded buffer whose weakest entry is replaced."""
    keep = np.ones(len(values), dtype=np.bool_)
    buf_val = np.empty(n)
    buf_col = np.empty(n, dtype=np.int64)
    buf_pos = np.empty(n, dtype=np.int64)
    for row in range(len(indptr) - 1):
        start, stop = indptr[row], indptr[row + 1]
        if stop - start <= n:
            continue
        for q in range(start, start + n):
            buf_val[q - start] = values[q]
            buf_col[q - start] = cols[q]
            buf_pos[q - start] = q
            keep[q] = False
        worst = _worst(buf_val, buf_col, n)
        for q in range(start + n, stop):
            keep[q] = False
            v = values[q]
            if v > buf_val[worst] or (v == buf_val[worst] and cols[q] < buf_col[worst]):
                buf_val[worst] = v
                buf_col[worst] = cols[q]
                buf_pos[worst] = q
                worst = _worst(buf_val, buf_col, n)
        for a in range(n):
            keep[buf_pos[a]] = True
    return keep


def _top_per_row(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_rows: int, n: int
) -> np.ndarray:
    """Mask of the ``n`` largest ``values`` of each row (``rows`` sorted; ties to the lower
    column)."""
    counts = np.bincount(rows, minlength=n_rows)
    if len(rows) == 0 or counts.max() <= n:
        return np.ones(len(rows), dtype=bool)
    indptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    return np.asarray(
        _top_in_rows(indptr, cols.astype(np.int64), values.astype(np.float64), int(n))
    )


def _cuts(
    query: Profile, base_support_t: sp.csr_matrix, n_base: int, block_entries: int
) -> list[int]:
    """Row boundaries of blocks of ``query`` whose co-occurrences with the base entities (an
    upper bound of each row's count) stay under ``block_entries``; a row over it is a block."""
    owner_degree = np.diff(base_support_t.indptr).astype(np.float64)
    bound = np.minimum(query.support @ owner_degree, n_base) + 1
    cuts = [0]
    total = 0.0
    for row, b in enumerate(bound):
        if total + b > block_entries and row > cuts[-1]:
            cuts.append(row)
            total = 0.0
        total += b
    cuts.append(query.values.shape[0])
    return cuts


def pairwise(
    query: Profile,
    base: Profile,
    *,
    kind: str,
    shrinkage: float,
    min_support: int,
    keep: int,
    offset: int | None,
    block_entries: int,
) -> sp.csr_matrix:
    """Similarities of the ``query`` entities to the ``base`` entities (CSR, best ``keep``
    positive ones per row). Profiles are entities x owners; ``offset`` is the index of the
    first query row among the base rows, so that an entity is not its own neighbor;
    ``block_entries`` bounds the co-occurrences computed at once."""
    base_values_t = base.values.T.tocsr()
    base_support_t = base.support.T.tocsr()
    base_squares_t = base_values_t.multiply(base_values_t).tocsr() if kind in CENTERED else None
    cuts = _cuts(query, base_support_t, base.values.shape[0], block_entries)
    data: list[np.ndarray] = []
    indices: list[np.ndarray] = []
    counts = np.zeros(query.values.shape[0], dtype=np.int64)
    for start, stop in itertools.pairwise(cuts):
        if stop <= start:
            continue
        block = query[start:stop]
        common = sp.csr_matrix(block.support @ base_support_t)  # n_ij (columns unsorted)
        n_common = np.asarray(common.data, dtype=np.float64)
        rows = np.repeat(np.arange(stop - start), np.diff(common.indptr))
        cols = common.indices
        sim = np.zeros(common.nnz, dtype=np.float64)
        if kind == "jaccard":
            union = block.size[rows] + base.size[cols] - n_common
            np.divide(n_common, union, out=sim, where=union > 0)
        elif kind == "cosine":
            dot = _on_pattern(block.values @ base_values_t, common)
            norms = block.norm[rows] * base.norm[cols]
            np.divide(dot, norms, out=sim, where=norms > 0)
        else:
            assert base_squares_t is not None
            block_squares = block.values.multiply(block.values).tocsr()
            dot = _on_pattern(block.values @ base_values_t, common)
            left = _on_pattern(block_squares @ base_support_t, common)
            right = _on_pattern(block.support @ base_squares_t, common)
            norms = np.sqrt(left * right)
            np.divide(dot, norms, out=sim, where=norms > 0)
        if shrinkage > 0:
            sim *= n_common / (n_common + shrinkage)
        drop = n_common < min_support
        if offset is not None:
            drop |= cols == rows + start + offset
        sim[drop] = 0.0
        positive = sim > 0
        rows, cols, sim = rows[positive], cols[positive], sim[positive]
        best = _top_per_row(rows, cols, sim, stop - start, keep)
        rows, cols, sim = rows[best], cols[best], sim[best]
        counts[start:stop] = np.bincount(rows, minlength=stop - start)
        data.append(sim)
        indices.append(cols.astype(np.int32))
    indptr = np.concatenate(([0], np.cumsum(counts)))
    out = sp.csr_matrix(
        (
            np.concatenate(data) if data else np.zeros(0),
            np.concatenate(indices) if indices else np.zeros(0, dtype=np.int32),
            indptr,
        ),
        shape=(query.values.shape[0], base.values.shape[0]),
    )
    out.sort_indices()
    return out


@numba.njit(cache=True)
def neighbor_sums(
    order: np.ndarray,
    owner: np.ndarray,
    entity: np.ndarray,
    res_indptr: np.ndarray,
    res_indices: np.ndarray,
    res_data: np.ndarray,
    sim_indptr: np.ndarray,
    sim_indices: np.ndarray,
    sim_data: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Σ s_ij (r_uj - c_uj) and Σ |s_ij| over the k neighbors j of i among the entities u
    rated (ties to the lower j), for every (owner u, entity i) pair. Pairs are visited in
    ``order`` (grouped by owner) so each owner's residual row is scattered into a dense
    lookup once."""
    n = len(owner)
    num = np.zeros(n)
    den = np.zeros(n)
    lookup = np.full(len(sim_indptr) - 1, np.nan)
    buf_sim = np.empty(k)
    buf_res = np.empty(k)
    buf_col = np.empty(k, dtype=np.int64)
    current = -1
    for p in order:
        o = owner[p]
        e = entity[p]
        if o < 0 or e < 0:
            continue
        if o != current:
            if current >= 0:
                for q in range(res_indptr[current], res_indptr[current + 1]):
                    lookup[res_indices[q]] = np.nan
            for q in range(res_indptr[o], res_indptr[o + 1]):
                lookup[res_indices[q]] = res_data[q]
            current = o
        m = 0
        worst = 0
        for q in range(sim_indptr[e], sim_indptr[e + 1]):
            j = sim_indices[q]
            r = lookup[j]
            if r != r:  # NaN: u did not rate j
                continue
            s = sim_data[q]
            if m < k:
                buf_sim[m] = s
                buf_res[m] = r
                buf_col[m] = j
                m += 1
                if m == k:
                    worst = _worst(buf_sim, buf_col, k)
            elif s > buf_sim[worst] or (s == buf_sim[worst] and j < buf_col[worst]):
                buf_sim[worst] = s
                buf_res[worst] = r
                buf_col[worst] = j
                worst = _worst(buf_sim, buf_col, k)
        total = 0.0
        weight = 0.0
        for a in range(m):
            total += buf_sim[a] * buf_res[a]
            weight += abs(buf_sim[a])
        num[p] = total
        den[p] = weight
    return num, den
