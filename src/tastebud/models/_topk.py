"""``top_k``: the ``k`` best columns of each row of a score block, ties to the lower column,
masked (-inf) and NaN entries never -- the one selection every list, evaluation and
weight search goes through (:mod:`tastebud.models.base` re-exports it).

Two paths give the same answer: a partition plus a lexsort (narrow rows, and single rows
below 32,768 columns without a tie at the cut), and one compiled pass per row keeping a
k-entry heap behind a floor read off a fixed sample of the columns (blocks of rows from
1,024 columns, wide single rows, ties at the cut; ``benchmarks/top_k.py``).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np


def top_k(scores: np.ndarray, k: int, *, wide: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the ``k`` best columns of each row, best first.

    Ties are broken by the lower column index, so results never depend on the partition
    algorithm. Entries at ``-inf`` (masked) or NaN are never returned: rows with fewer than
    ``k`` valid entries are padded with index -1 and score NaN. Wide rows take one
    compiled pass instead of a partition (``wide=False``: never; :func:`_top_k_wide`).
    """
    n_rows, n_cols = scores.shape
    k_eff = min(k, n_cols)
    # The k largest of each row by a partial sort, then ordered: exact unless the k-th
    # value is NaN or masked, or equals an entry left outside (a tie across the cut) --
    # then more than k entries are >= it. Those rows take the full path.
    partial = 0 < k_eff == k and 4 * k_eff <= n_cols
    heap = wide and partial and k_eff * _WIDE_SHARE <= n_cols and n_cols >= _WIDE_BLOCK
    if heap and (n_rows > 1 or n_cols >= _WIDE):
        return _top_k_wide(scores, k_eff)
    if partial and n_rows == 1:  # one row (the service's request path): fewest calls
        row = scores[0]
        part = np.argpartition(row, n_cols - k_eff)[n_cols - k_eff :]
        vals = row[part]
        kth = vals.min()
        if kth > -np.inf and np.count_nonzero(row >= kth) == k_eff:
            order = np.lexsort((part, -vals))
            return part[order][None, :].astype(np.int64, copy=False), vals[order][None, :].astype(
                np.float64, copy=False
            )
        if heap:  # a tie or a mask at the cut: one pass, not the whole-row sort
            return _top_k_wide(scores, k_eff)
    out_idx = np.full((n_rows, k), -1, dtype=np.int64)
    out_score = np.full((n_rows, k), np.nan, dtype=np.float64)
    if k_eff == 0 or n_rows == 0:
        return out_idx, out_score
    if not partial:
        _top_k_rows(scores, k_eff, np.arange(n_rows), out_idx, out_score)
        return out_idx, out_score
    part = np.argpartition(scores, n_cols - k_eff, axis=1)[:, n_cols - k_eff :]
    at = np.arange(n_rows)[:, None]
    vals = scores[at, part]
    kth = vals.min(axis=1)
    redo = ~(kth > -np.inf) | (np.count_nonzero(scores >= kth[:, None], axis=1) != k_eff)
    order = np.lexsort((part, -vals), axis=1)
    out_idx[:, :k_eff] = part[at, order]
    out_score[:, :k_eff] = vals[at, order]
    if redo.any():
        rows = np.flatnonzero(redo)
        out_idx[rows] = -1
        out_score[rows] = np.nan
        _top_k_rows(scores[rows], k_eff, rows, out_idx, out_score)
    return out_idx, out_score


#: Rows at least this wide (and k at most 1/_WIDE_SHARE of them) take one compiled pass
#: (:func:`_top_k_wide`): one row from _WIDE columns, blocks of rows from _WIDE_BLOCK (below,
#: the partition's fewer Python-level steps win; measured in benchmarks/top_k.py).
_WIDE = 1 << 15
_WIDE_BLOCK = 1 << 10
_WIDE_SHARE = 64
#: Columns of a wide row sampled for its floor.
_WIDE_SAMPLE = 2048


def _top_k_wide(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`top_k` of wide rows in one compiled pass over each (:func:`_heap_top_k`), not a
    partition: the row's ``k`` best in a heap, admitting only entries at or above a floor
    read off a fixed sample of its columns (its ``rank``-th best, with about ``rank`` times
    n_cols / sample entries of the row above it, a few times ``k``), so that the heap is
    rarely touched whatever the order of the row. Exact whenever ``k`` entries reach the
    floor; the rows where fewer do take one more pass without it."""
    n_rows, n_cols = scores.shape
    sample = scores[:, _sample_columns(n_cols)]
    width = sample.shape[1]
    rank = min(width, 4 * k // (n_cols // width) + 8)
    sample[np.isnan(sample)] = -np.inf
    floor = np.partition(sample, width - rank, axis=1)[:, width - rank].astype(np.float64)
    scores = np.ascontiguousarray(scores)
    out_idx = np.full((n_rows, k), -1, dtype=np.int64)
    out_score = np.full((n_rows, k), np.nan, dtype=np.float64)
    counts = np.zeros(n_rows, dtype=np.int64)
    _heap_kernel()(scores, floor, out_idx, out_score, counts)
    short = np.flatnonzero((counts < k) & (floor > -np.inf))
    if len(short):
        idx, val = out_idx[short], out_score[short]
        found = np.zeros(len(short), dtype=np.int64)
        _heap_kernel()(scores[short], np.full(len(short), -np.inf), idx, val, found)
        out_idx[short], out_score[short], counts[short] = idx, val, found
    # best first, ties to the lower column; unfilled slots (fewer valid entries) last
    filled = np.arange(k)[None, :] < counts[:, None]
    order = np.lexsort((out_idx, -np.where(filled, out_score, -np.inf)), axis=1)
    out_idx = np.take_along_axis(out_idx, order, axis=1)
    out_score = np.take_along_axis(out_score, order, axis=1)
    filled = np.take_along_axis(filled, order, axis=1)
    out_idx[~filled] = -1
    out_score[~filled] = np.nan
    return out_idx, out_score


@functools.cache
def _sample_columns(n_cols: int) -> np.ndarray:
    """The columns :func:`_top_k_wide` samples in rows ``n_cols`` wide: :data:`_WIDE_SAMPLE`
    of them (at most a 16th), drawn once (seeded) and sorted -- at random, so that no
    periodic pattern of the rows (every third column masked, say) lines up with them."""
    rng = np.random.default_rng(n_cols)
    return np.sort(rng.choice(n_cols, min(_WIDE_SAMPLE, n_cols // 16), replace=False))


def _heap_top_k(
    scores: np.ndarray,
    floor: np.ndarray,
    idx: np.ndarray,
    val: np.ndarray,
    counts: np.ndarray,
) -> None:
    """Per row r: the best ``idx.shape[1]`` entries at or above ``floor[r]`` (never -inf or
    NaN) into ``idx[r]`` / ``val[r]`` in heap order (the worst at 0), their number into
    ``counts[r]``. Columns come in ascending order, so an entry equal to the heap's worst
    loses the tie and is not taken; in the heap, (s, c) ranks below (s', c') when s < s',
    or s == s' and c > c'. Compiled on first use (:func:`_heap_kernel`)."""
    k = idx.shape[1]
    for r in range(scores.shape[0]):
        size = 0
        bar = floor[r]
        for j in range(scores.shape[1]):
            v = scores[r, j]
            if not v >= bar or v == -np.inf:  # NaN fails every comparison
                continue
            if size < k:
                i = size
                size += 1
                val[r, i] = v
                idx[r, i] = j
                while i > 0:  # sift up: the worst rises to the root
                    p = (i - 1) // 2
                    if val[r, i] > val[r, p] or (val[r, i] == val[r, p] and idx[r, i] < idx[r, p]):
                        break
                    val[r, i], val[r, p] = val[r, p], val[r, i]
                    idx[r, i], idx[r, p] = idx[r, p], idx[r, i]
                    i = p
                if size == k:
                    bar = max(bar, val[r, 0])
            elif v > val[r, 0]:
                val[r, 0] = v
                idx[r, 0] = j
                i = 0
                while True:  # sift down
                    m = 2 * i + 1
                    if m >= k:
                        break
                    n = m + 1
                    if n < k and (
                        val[r, n] < val[r, m] or (val[r, n] == val[r, m] and idx[r, n] > idx[r, m])
                    ):
                        m = n
                    if val[r, m] > val[r, i] or (val[r, m] == val[r, i] and idx[r, m] < idx[r, i]):
                        break
                    val[r, i], val[r, m] = val[r, m], val[r, i]
                    idx[r, i], idx[r, m] = idx[r, m], idx[r, i]
                    i = m
                bar = val[r, 0]
        counts[r] = size


@functools.cache
def _heap_kernel() -> Any:
    """:func:`_heap_top_k` compiled by numba (cached on disk), imported only when a wide row
    first needs it: ``import tastebud`` does not pay for numba."""
    import numba

    return numba.njit(cache=True)(_heap_top_k)


def _top_k_rows(
    scores: np.ndarray, k_eff: int, at: np.ndarray, out_idx: np.ndarray, out_score: np.ndarray
) -> None:
    """:func:`top_k` over whole rows (ties across the cut, NaN, -inf): writes the answer of
    ``scores[r]`` into row ``at[r]`` of the (padded) outputs. NaN counts as masked."""
    n_cols = scores.shape[1]
    nan = np.isnan(scores)
    if nan.any():
        scores = np.where(nan, -np.inf, scores)
    if k_eff == n_cols:
        selected = np.ones_like(scores, dtype=bool)
    else:
        kth = np.partition(scores, n_cols - k_eff, axis=1)[:, n_cols - k_eff][:, None]
        above = scores > kth
        equal = scores == kth
        room = k_eff - above.sum(axis=1, keepdims=True)
        selected = above | (equal & (np.cumsum(equal, axis=1) <= room))
    rows, cols = np.nonzero(selected)
    vals = scores[rows, cols]
    # Order within each row: score descending, then column ascending.
    order = np.lexsort((cols, -vals, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    pos = np.arange(len(rows)) - np.searchsorted(rows, rows)
    keep = vals > -np.inf  # masked (and NaN) entries are never recommended
    out_idx[at[rows[keep]], pos[keep]] = cols[keep]
    out_score[at[rows[keep]], pos[keep]] = vals[keep]
