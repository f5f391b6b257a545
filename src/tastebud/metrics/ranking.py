"""Top-k ranking metrics, one value per user.

Every metric takes the same inputs:

``recommended``
    2-D integer array ``(n_users, L)`` of internal item indices in rank order, padded with
    ``-1`` where a list is shorter. A metric at ``k`` uses only the first ``k`` columns; when
    ``L < k`` the missing positions are misses, and so are positions holding ``-1``. An item
    repeated in a list counts only at its first position (later copies are misses).
``relevant``
    scipy sparse matrix ``(n_users, n_items)`` (CSR preferred; a dense 2-D array is accepted);
    a stored value ``> 0`` marks a relevant item and is its graded gain where a metric supports
    grades. Row ``u`` goes with row ``u`` of ``recommended``. It may have more columns than the
    catalog (relevant items that cannot be recommended still count in ``R``).
``k``
    The cut-off, a positive integer.

Notation in the formulas: ``hit_i = 1`` if the item at position ``i`` (1-based) is relevant,
``R`` = number of relevant items of the user (all of them, including those missing from the
list).

Every function returns a float64 array of shape ``(n_users,)`` so an evaluator can average it
and run paired significance tests over users. **Users with no relevant item (R = 0) get NaN
for every ranking metric**: their score is undefined, and the caller drops them.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from tastebud.errors import InvalidInputError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

__all__ = [
    "RANKING_METRICS",
    "auc_at_k",
    "average_precision_at_k",
    "f1_at_k",
    "hit_rate_at_k",
    "hits_matrix",
    "metric_label",
    "ndcg_at_k",
    "precision_at_k",
    "recall_at_k",
    "reciprocal_rank_at_k",
]


# -- input handling (shared with tastebud.metrics.beyond) ---------------------------------------


def check_k(k: Any, name: str = "k") -> int:
    """``k`` as a Python int >= 1."""
    if isinstance(k, bool | np.bool_):
        raise InvalidInputError(f"{name} must be a positive integer, got {k!r}")
    try:
        value = operator.index(k)
    except TypeError:
        raise InvalidInputError(f"{name} must be a positive integer, got {k!r}") from None
    if value < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {k!r}")
    return value


def _as_recommended(recommended: Any, name: str = "recommended") -> IntArray:
    """Validate a recommendation matrix: 2-D, integer, at least one row, entries >= -1."""
    arr = np.asarray(recommended)
    if arr.ndim != 2:
        raise InvalidInputError(
            f"{name} must be a 2-D array (n_users, list length), got {arr.ndim} dimension(s)"
        )
    if arr.shape[0] == 0:
        raise InvalidInputError(f"{name} has no rows (no users to evaluate)")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise InvalidInputError(f"{name} must hold integer item indices, got dtype {arr.dtype}")
    if arr.size and int(arr.min()) < -1:
        raise InvalidInputError(f"{name} holds negative item indices other than the -1 padding")
    return arr.astype(np.int64, copy=False)


def _top_k(
    recommended: Any, k: Any, n_items: int | None = None, name: str = "recommended"
) -> IntArray:
    """The first ``k`` columns of ``recommended`` as an ``(n_users, k)`` int64 array.

    Missing columns (``L < k``) are filled with -1 and every repeat of an item after its first
    position in a row is replaced by -1, so each row lists distinct items. Indices must be
    below ``n_items`` when it is given.
    """
    k = check_k(k)
    arr = _as_recommended(recommended, name)
    n_users, length = arr.shape
    top = np.full((n_users, k), -1, dtype=np.int64)
    width = min(k, length)
    top[:, :width] = arr[:, :width]
    if n_items is not None and top.size and int(top.max()) >= n_items:
        raise InvalidInputError(
            f"{name} holds item index {int(top.max())}, outside the {n_items} items"
        )
    if k > 1:
        order = np.argsort(top, axis=1, kind="stable")
        ordered = np.take_along_axis(top, order, axis=1)
        repeat = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)
        if repeat.any():
            rows = np.broadcast_to(np.arange(n_users)[:, None], repeat.shape)
            top[rows[repeat], order[:, 1:][repeat]] = -1
    return top


def _as_csr(relevant: Any, n_users: int, name: str = "relevant") -> sp.csr_matrix:
    """``relevant`` as a canonical float64 CSR matrix with ``n_users`` rows and finite values."""
    if sp.issparse(relevant):
        mat = sp.csr_matrix(relevant, dtype=np.float64)
    else:
        dense = np.asarray(relevant)
        if dense.ndim != 2:
            raise InvalidInputError(
                f"{name} must be a 2-D (n_users, n_items) matrix, got {dense.ndim} dimension(s)"
            )
        if dense.dtype == object or not (
            np.issubdtype(dense.dtype, np.number) or dense.dtype == np.bool_
        ):
            raise InvalidInputError(f"{name} must be numeric, got dtype {dense.dtype}")
        mat = sp.csr_matrix(dense.astype(np.float64))
    if mat.shape[0] != n_users:
        raise InvalidInputError(
            f"{name} has {mat.shape[0]} rows but there are {n_users} recommendation lists"
        )
    if not np.isfinite(mat.data).all():
        raise InvalidInputError(f"{name} holds non-finite values (NaN or inf)")
    if not mat.has_canonical_format:
        mat = mat.copy()
        mat.sum_duplicates()
    return mat


class _Relevance:
    """Positive entries of a relevance matrix, as sorted keys ``row * n_cols + col``."""

    def __init__(self, relevant: Any, n_users: int) -> None:
        mat = _as_csr(relevant, n_users)
        rows = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(mat.indptr))
        positive = mat.data > 0
        self.n_users = n_users
        self.n_cols = int(mat.shape[1])
        self.rows: IntArray = rows[positive]
        self.cols: IntArray = mat.indices[positive].astype(np.int64)
        self.values: FloatArray = mat.data[positive]
        # canonical CSR: rows ascending, columns ascending within a row -> keys already sorted
        self.keys: IntArray = self.rows * self.n_cols + self.cols
        self.n_relevant: IntArray = np.bincount(self.rows, minlength=n_users).astype(np.int64)

    def gains(self, top: IntArray) -> FloatArray:
        """Value of ``relevant[u, top[u, i]]`` (0 for misses and padding), shape of ``top``."""
        if top.size and int(top.max()) >= self.n_cols:
            raise InvalidInputError(
                f"recommended holds item index {int(top.max())} but relevant has only "
                f"{self.n_cols} item columns"
            )
        out = np.zeros(top.shape, dtype=np.float64)
        if len(self.keys) == 0:
            return out
        valid = top >= 0
        users = np.broadcast_to(np.arange(top.shape[0], dtype=np.int64)[:, None], top.shape)
        query = users[valid] * self.n_cols + top[valid]
        pos = np.searchsorted(self.keys, query)
        pos = np.minimum(pos, len(self.keys) - 1)
        found = self.keys[pos] == query
        hit_values = np.where(found, self.values[pos], 0.0)
        out[valid] = hit_values
        return out


def _prepare(recommended: Any, relevant: Any, k: Any) -> tuple[IntArray, _Relevance, FloatArray]:
    top = _top_k(recommended, k)
    rel = _Relevance(relevant, top.shape[0])
    return top, rel, rel.gains(top)


def _nan_where_no_relevant(values: npt.ArrayLike, n_relevant: IntArray) -> FloatArray:
    out = np.asarray(values, dtype=np.float64).copy()
    out[n_relevant == 0] = np.nan
    return out


def _safe_divide(num: npt.ArrayLike, den: npt.ArrayLike) -> FloatArray:
    """``num / den`` with NaN where ``den == 0`` (and no warning)."""
    num_arr = np.asarray(num, dtype=np.float64)
    den_arr = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num_arr, den_arr).shape, np.nan)
    np.divide(num_arr, den_arr, out=out, where=den_arr != 0)
    return out


def _discounts(k: int) -> FloatArray:
    """``1 / log2(i + 1)`` for positions ``i = 1..k``."""
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


# -- public ------------------------------------------------------------------------------------


def hits_matrix(recommended: npt.ArrayLike, relevant: Any, k: int) -> BoolArray:
    """Which of the first ``k`` recommended items are relevant.

    Parameters
    ----------
    recommended:
        ``(n_users, L)`` integer item indices in rank order, ``-1`` padded.
    relevant:
        ``(n_users, n_items)`` sparse relevance matrix; entries ``> 0`` are relevant.
    k:
        Cut-off.

    Returns
    -------
    numpy.ndarray
        Boolean ``(n_users, k)``: ``hits[u, i]`` is True when the item at position ``i + 1``
        of user ``u``'s list is relevant. Padding, positions past ``L`` and repeated items
        are False.

    Notes
    -----
    Vectorized: relevant entries become sorted keys ``row * n_items + item`` (a canonical
    CSR matrix already stores them in that order) and every recommended ``(row, item)`` is
    looked up with one binary search, O(n_users * k * log nnz).
    """
    _, _, gains = _prepare(recommended, relevant, k)
    return gains > 0


def precision_at_k(recommended: npt.ArrayLike, relevant: Any, k: int) -> FloatArray:
    """Precision at k per user.

    ``P@k = (sum_{i=1..k} hit_i) / k`` -- the denominator is ``k`` even when the list is
    shorter. NaN for users with no relevant item.

    References
    ----------
    Manning, Raghavan & Schütze, *Introduction to Information Retrieval*, CUP 2008, §8.4.
    """
    _, rel, gains = _prepare(recommended, relevant, k)
    k = gains.shape[1]
    precision = (gains > 0).sum(axis=1) / k
    return _nan_where_no_relevant(precision, rel.n_relevant)


def recall_at_k(recommended: npt.ArrayLike, relevant: Any, k: int) -> FloatArray:
    """Recall at k per user.

    ``R@k = (sum_{i=1..k} hit_i) / R``. NaN for users with no relevant item (R = 0).

    References
    ----------
    Manning, Raghavan & Schütze, *Introduction to Information Retrieval*, CUP 2008, §8.4.
    """
    _, rel, gains = _prepare(recommended, relevant, k)
    return _safe_divide((gains > 0).sum(axis=1), rel.n_relevant)


def f1_at_k(recommended: npt.ArrayLike, relevant: Any, k: int) -> FloatArray:
    """F1 at k per user: the harmonic mean of precision and recall at k.

    ``F1@k = 2 * P@k * R@k / (P@k + R@k)``, 0 when both are 0, which with ``h`` hits in the
    top k equals ``2 h / (k + R)``. NaN for users with no relevant item.

    References
    ----------
    van Rijsbergen, *Information Retrieval*, 2nd ed., Butterworths 1979, ch. 7;
    Manning, Raghavan & Schütze, *Introduction to Information Retrieval*, CUP 2008, §8.3.
    """
    _, rel, gains = _prepare(recommended, relevant, k)
    k = gains.shape[1]
    hits = (gains > 0).sum(axis=1)
    precision = hits / k
    recall = _safe_divide(hits, rel.n_relevant)
    total = precision + recall
    f1 = np.zeros_like(precision)
    np.divide(2.0 * precision * recall, total, out=f1, where=total > 0)
    return _nan_where_no_relevant(f1, rel.n_relevant)


def average_precision_at_k(recommended: npt.ArrayLike, relevant: Any, k: int) -> FloatArray:
    """Average precision at k per user (the per-user term of MAP@k).

    ``AP@k = (sum_{i=1..k} P@i * hit_i) / min(R, k)`` where ``P@i`` is the precision of the
    first ``i`` positions. Normalizing by ``min(R, k)`` makes a perfect list score 1 even when
    the user has more than ``k`` relevant items. NaN for users with no relevant item; MAP@k is
    the mean over the remaining users.

    References
    ----------
    Manning, Raghavan & Schütze, *Introduction to Information Retrieval*, CUP 2008, §8.4;
    the ``min(R, k)`` normalization follows the common top-k convention (e.g. Kaggle's
    ``apk`` / the ml_metrics package).
    """
    _, rel, gains = _prepare(recommended, relevant, k)
    k = gains.shape[1]
    hits = (gains > 0).astype(np.float64)
    precision_at_i = np.cumsum(hits, axis=1) / np.arange(1, k + 1, dtype=np.float64)
    return _safe_divide((precision_at_i * hits).sum(axis=1), np.minimum(rel.n_relevant, k))


def ndcg_at_k(
    recommended: npt.ArrayLike, relevant: Any, k: int, *, graded: bool = False
) -> FloatArray:
    """Normalized discounted cumulative gain at k per user.

    ``DCG@k = sum_{i=1..k} gain_i / log2(i + 1)`` and ``NDCG@k = DCG@k / IDCG@k``.

    * Binary (default): ``gain_i = hit_i`` and
      ``IDCG@k = sum_{i=1..min(R, k)} 1 / log2(i + 1)``.
    * ``graded=True``: ``gain_i`` is the value stored in ``relevant`` for the item at
      position ``i`` (linear gain, 0 for non-relevant items) and ``IDCG@k`` is the DCG of the
      user's ``min(R, k)`` largest gains sorted in descending order.

    NaN for users with no relevant item.

    References
    ----------
    Järvelin & Kekäläinen, "Cumulated gain-based evaluation of IR techniques", ACM TOIS 20(4),
    2002.
    """
    _, rel, gains = _prepare(recommended, relevant, k)
    k = gains.shape[1]
    discount = _discounts(k)
    if graded:
        dcg = gains @ discount
        # ideal ordering: each user's positive values, largest first, the first k of them
        order = np.lexsort((-rel.values, rel.rows))
        rows = rel.rows[order]
        values = rel.values[order]
        starts = np.concatenate(([0], np.cumsum(rel.n_relevant)[:-1]))
        rank = np.arange(len(rows), dtype=np.int64) - starts[rows]
        keep = rank < k
        idcg = np.bincount(
            rows[keep], weights=values[keep] * discount[rank[keep]], minlength=rel.n_users
        )
    else:
        dcg = (gains > 0).astype(np.float64) @ discount
        ideal = np.concatenate(([0.0], np.cumsum(discount)))
        idcg = ideal[np.minimum(rel.n_relevant, k)]
    return _safe_divide(dcg, idcg)


def reciprocal_rank_at_k(recommended: npt.ArrayLike, relevant: Any, k: int) -> FloatArray:
    """Reciprocal rank at k per user (the per-user term of MRR@k).

    ``RR@k = 1 / (position of the first hit)``, 0 when no hit is within the first k positions.
    NaN for users with no relevant item.

    References
    ----------
    Voorhees, "The TREC-8 question answering track report", TREC 1999.
    """
    _, rel, gains = _prepare(recommended, relevant, k)
    hits = gains > 0
    first = np.argmax(hits, axis=1) + 1.0
    rr = np.where(hits.any(axis=1), 1.0 / first, 0.0)
    return _nan_where_no_relevant(rr, rel.n_relevant)


def hit_rate_at_k(recommended: npt.ArrayLike, relevant: Any, k: int) -> FloatArray:
    """Hit rate at k per user.

    ``HR@k = 1 if sum_{i=1..k} hit_i > 0 else 0``. NaN for users with no relevant item.

    References
    ----------
    Deshpande & Karypis, "Item-based top-N recommendation algorithms", ACM TOIS 22(1), 2004.
    """
    _, rel, gains = _prepare(recommended, relevant, k)
    hit = (gains > 0).any(axis=1).astype(np.float64)
    return _nan_where_no_relevant(hit, rel.n_relevant)


def auc_at_k(
    recommended: npt.ArrayLike, relevant: Any, k: int, n_candidates: npt.ArrayLike
) -> FloatArray:
    """Area under the ROC curve of a top-k list per user.

    Each user ranks ``n_candidates[u]`` items (the catalog minus excluded items); ``P = R``
    of them are relevant and ``N = n_candidates - R`` are not. Items outside the top k are
    tied at the bottom. With ``m_i`` the number of non-relevant items listed above position
    ``i``, ``h`` the hits in the top k and ``m_k`` the non-relevant items in the top k::

        AUC@k = [ sum_{hits i} (N - m_i) + 0.5 * (P - h) * (N - m_k) ] / (P * N)

    i.e. the fraction of (relevant, non-relevant) pairs ordered correctly, ties counting
    one half. With ``k`` covering every candidate this is the ordinary ROC AUC. Padding
    (``-1``) positions are not items and are not counted in ``m_i``. NaN when ``P == 0`` or
    ``N <= 0``.

    Parameters
    ----------
    n_candidates:
        Integer array ``(n_users,)``: how many items could be ranked for each user.

    Raises
    ------
    InvalidInputError
        Also when a list holds more non-relevant items than the user has non-relevant
        candidates (``m_k > N``), which means ``n_candidates`` does not match the lists.

    References
    ----------
    Hanley & McNeil, "The meaning and use of the area under a ROC curve", Radiology 143, 1982;
    Rendle et al., "BPR: Bayesian personalized ranking from implicit feedback", UAI 2009.
    """
    top, rel, gains = _prepare(recommended, relevant, k)
    n_users = top.shape[0]
    cand = np.asarray(n_candidates)
    if cand.shape != (n_users,):
        raise InvalidInputError(
            f"n_candidates must have shape ({n_users},), one count per user, got {cand.shape}"
        )
    if cand.dtype == np.bool_ or not np.issubdtype(cand.dtype, np.number):
        raise InvalidInputError(f"n_candidates must be integer counts, got dtype {cand.dtype}")
    cand_f = cand.astype(np.float64)
    if not np.isfinite(cand_f).all() or (cand_f != np.round(cand_f)).any():
        raise InvalidInputError("n_candidates must hold finite integer counts")
    positives = rel.n_relevant.astype(np.float64)
    negatives = cand_f - positives
    hits = gains > 0
    valid = top >= 0
    hits_f = hits.astype(np.float64)
    valid_f = valid.astype(np.float64)
    neg_above = (np.cumsum(valid_f, axis=1) - valid_f) - (np.cumsum(hits_f, axis=1) - hits_f)
    h = hits_f.sum(axis=1)
    neg_listed = valid_f.sum(axis=1) - h
    defined = (positives > 0) & (negatives > 0)
    if (defined & (neg_listed > negatives)).any():
        bad = int(np.flatnonzero(defined & (neg_listed > negatives))[0])
        raise InvalidInputError(
            f"user row {bad} lists {int(neg_listed[bad])} non-relevant items but has only "
            f"{int(negatives[bad])} non-relevant candidates; check n_candidates"
        )
    correct = (hits_f * (negatives[:, None] - neg_above)).sum(axis=1)
    ties = 0.5 * (positives - h) * (negatives - neg_listed)
    out = np.full(n_users, np.nan)
    np.divide(correct + ties, positives * negatives, out=out, where=defined)
    return out


RANKING_METRICS: dict[str, Callable[..., FloatArray]] = {
    "precision": precision_at_k,
    "recall": recall_at_k,
    "f1": f1_at_k,
    "map": average_precision_at_k,
    "ndcg": ndcg_at_k,
    "mrr": reciprocal_rank_at_k,
    "hit_rate": hit_rate_at_k,
    "auc": auc_at_k,
}
"""Lower-case metric names to functions; ``"auc"`` also needs ``n_candidates``."""

_LABELS = {
    "precision": "Precision",
    "recall": "Recall",
    "f1": "F1",
    "map": "MAP",
    "ndcg": "NDCG",
    "mrr": "MRR",
    "hit_rate": "HitRate",
    "auc": "AUC",
}


def metric_label(name: str, k: int) -> str:
    """Display label of a ranking metric, e.g. ``metric_label("ndcg", 10) == "NDCG@10"``.

    ``name`` is one of the keys of :data:`RANKING_METRICS` (case-insensitive).
    """
    key = str(name).lower()
    if key not in _LABELS:
        raise InvalidInputError(
            f"unknown ranking metric {name!r}; known: {', '.join(RANKING_METRICS)}"
        )
    return f"{_LABELS[key]}@{check_k(k)}"
