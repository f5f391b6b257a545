"""Beyond-accuracy metrics: coverage, diversity, novelty, serendipity, popularity bias, fairness.

``recommended`` is the same ``(n_users, L)`` integer matrix as in
:mod:`tastebud.metrics.ranking`: internal item indices in rank order, ``-1`` padded; a metric at
``k`` reads the first ``k`` columns. *Valid* items are the entries ``>= 0``; an item repeated
in a list counts once (at its first position).

Per-user metrics return a float64 array of shape ``(n_users,)``; the others return a float.
"""

from __future__ import annotations

from typing import Any, TypedDict

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp

from tastebud.errors import InvalidInputError
from tastebud.metrics.ranking import BoolArray, FloatArray, IntArray, _Relevance, _top_k, check_k

__all__ = [
    "GroupGap",
    "average_popularity",
    "catalog_coverage",
    "gini_index",
    "group_gap",
    "intra_list_diversity",
    "novelty",
    "serendipity",
    "user_coverage",
]

# how many float64 values one chunk of the diversity computation may hold (32 MiB)
_CHUNK_VALUES = 1 << 22


def _per_item(values: npt.ArrayLike, name: str, top: IntArray) -> FloatArray:
    """A finite, non-negative 1-D per-item array long enough for the items in ``top``."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be numeric") from None
    if arr.ndim != 1:
        raise InvalidInputError(f"{name} must be 1-D (one value per item), got {arr.ndim}-D")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise InvalidInputError(f"{name} must hold finite, non-negative counts")
    if top.size and int(top.max()) >= len(arr):
        raise InvalidInputError(
            f"recommended holds item index {int(top.max())} but {name} covers only {len(arr)} items"
        )
    return arr


def _mean_over_valid(per_item: FloatArray, top: IntArray) -> FloatArray:
    """Per-row mean of ``per_item[top]`` over valid entries, NaN for rows without any."""
    valid = top >= 0
    values = np.where(valid, per_item[np.maximum(top, 0)], 0.0)
    count = valid.sum(axis=1)
    out = np.full(top.shape[0], np.nan)
    np.divide(values.sum(axis=1), count, out=out, where=count > 0)
    return out


def _in_rows(query: IntArray, table: IntArray) -> BoolArray:
    """``out[u, i]`` = ``query[u, i] >= 0`` and it occurs in row ``u`` of ``table``."""
    out = np.zeros(query.shape, dtype=bool)
    table_valid = table >= 0
    query_valid = query >= 0
    if not table_valid.any() or not query_valid.any():
        return out
    width = int(max(query.max(), table.max())) + 1
    users = np.arange(query.shape[0], dtype=np.int64)[:, None]
    keys = np.sort(np.broadcast_to(users, table.shape)[table_valid] * width + table[table_valid])
    wanted = np.broadcast_to(users, query.shape)[query_valid] * width + query[query_valid]
    pos = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    out[query_valid] = keys[pos] == wanted
    return out


def catalog_coverage(recommended: npt.ArrayLike, n_items: int, k: int) -> float:
    """Share of the catalog that appears in at least one top-k list.

    ``coverage = |union_u top_k(u)| / n_items`` (valid items only).

    References
    ----------
    Ge, Delgado-Battenfeld & Jannach, "Beyond accuracy: evaluating recommender systems by
    coverage and serendipity", RecSys 2010.
    """
    n_items = check_k(n_items, "n_items")
    top = _top_k(recommended, k, n_items=n_items)
    return float(np.count_nonzero(np.bincount(top[top >= 0], minlength=n_items)) / n_items)


def user_coverage(recommended: npt.ArrayLike, k: int, min_items: int = 1) -> float:
    """Share of users whose top-k list has at least ``min_items`` valid items.

    ``coverage = |{u : |valid top_k(u)| >= min_items}| / n_users``

    References
    ----------
    Herlocker, Konstan, Terveen & Riedl, "Evaluating collaborative filtering recommender
    systems", ACM TOIS 22(1), 2004, §4.1 (coverage).
    """
    k = check_k(k)
    min_items = check_k(min_items, "min_items")
    if min_items > k:
        raise InvalidInputError(f"min_items ({min_items}) cannot exceed k ({k})")
    top = _top_k(recommended, k)
    return float(((top >= 0).sum(axis=1) >= min_items).mean())


def _unit_rows(item_features: Any) -> tuple[Any, FloatArray]:
    """Row-normalized features (zero rows stay zero) and each row's squared norm (0 or 1)."""
    if sp.issparse(item_features):
        feats = sp.csr_matrix(item_features, dtype=np.float64)
        if not np.isfinite(feats.data).all():
            raise InvalidInputError("item_features holds non-finite values (NaN or inf)")
        norms = np.sqrt(np.asarray(feats.multiply(feats).sum(axis=1)).ravel())
    else:
        try:
            feats = np.asarray(item_features, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidInputError("item_features must be numeric") from None
        if feats.ndim != 2:
            raise InvalidInputError(
                f"item_features must be a 2-D (n_items, d) matrix, got {feats.ndim}-D"
            )
        if not np.isfinite(feats).all():
            raise InvalidInputError("item_features holds non-finite values (NaN or inf)")
        norms = np.linalg.norm(feats, axis=1)
    nonzero = norms > 0
    scale = np.zeros_like(norms)
    np.divide(1.0, norms, out=scale, where=nonzero)
    unit = sp.csr_matrix(sp.diags(scale) @ feats) if sp.issparse(feats) else feats * scale[:, None]
    return unit, nonzero.astype(np.float64)


def intra_list_diversity(recommended: npt.ArrayLike, item_features: Any, k: int) -> FloatArray:
    """Intra-list diversity per user: mean pairwise cosine distance of the top-k items.

    ``ILD(u) = (2 / (n (n - 1))) * sum_{a < b} (1 - cos(f_a, f_b))`` over the ``n`` valid
    items of the user's top k, with ``cos(f_a, f_b) = f_a . f_b / (|f_a| |f_b|)``. An item
    whose feature vector is all zeros has cosine 0 (distance 1) with every item. NaN for
    lists with fewer than 2 valid items. With non-negative features the value lies in
    ``[0, 1]``, otherwise in ``[0, 2]``.

    Parameters
    ----------
    item_features:
        Dense array or scipy sparse matrix ``(n_items, d)``; row ``i`` describes item ``i``.

    Notes
    -----
    Computed without forming the ``k x k`` similarity blocks: with unit rows ``x_a``,
    ``sum_{a < b} cos(a, b) = (|sum_a x_a|^2 - sum_a |x_a|^2) / 2``, and ``sum_a x_a`` for
    all users is one sparse product (done in chunks of users to bound memory).

    References
    ----------
    Ziegler, McNee, Konstan & Lausen, "Improving recommendation lists through topic
    diversification", WWW 2005; Smyth & McClave, "Similarity vs. diversity", ICCBR 2001.
    """
    top = _top_k(recommended, k)
    unit, self_sim = _unit_rows(item_features)
    n_rows, dim = unit.shape
    if top.size and int(top.max()) >= n_rows:
        raise InvalidInputError(
            f"recommended holds item index {int(top.max())} but item_features has only "
            f"{n_rows} rows"
        )
    n_users = top.shape[0]
    valid = top >= 0
    n_valid = valid.sum(axis=1).astype(np.float64)
    rows = np.broadcast_to(np.arange(n_users)[:, None], top.shape)[valid]
    membership = sp.csr_matrix((np.ones(len(rows)), (rows, top[valid])), shape=(n_users, n_rows))
    squared = np.zeros(n_users)
    chunk = max(1, _CHUNK_VALUES // max(dim, 1))
    for start in range(0, n_users, chunk):
        summed = membership[start : start + chunk] @ unit
        if sp.issparse(summed):
            squared[start : start + chunk] = np.asarray(summed.multiply(summed).sum(axis=1)).ravel()
        else:
            squared[start : start + chunk] = np.einsum("ij,ij->i", summed, summed)
    self_total = np.where(valid, self_sim[np.maximum(top, 0)], 0.0).sum(axis=1)
    pair_similarity = (squared - self_total) / 2.0
    pairs = n_valid * (n_valid - 1.0) / 2.0
    out = np.full(n_users, np.nan)
    np.divide(pair_similarity, pairs, out=out, where=pairs > 0)
    out = 1.0 - out
    # floating-point round-off may step a hair outside the exact range [0, 2]
    return np.clip(out, 0.0, 2.0)


def novelty(
    recommended: npt.ArrayLike, item_popularity: npt.ArrayLike, n_users: int, k: int
) -> FloatArray:
    """Mean self-information of the top-k items per user.

    ``novelty(u) = (1 / n) * sum_{i in top_k(u)} -log2(p_i)`` over the ``n`` valid items,
    with ``p_i = max(count_i, 1) / n_users`` and ``count_i = item_popularity[i]`` the number
    of training users who interacted with item ``i`` (never-seen items count as seen once).
    NaN for empty lists.

    Parameters
    ----------
    item_popularity:
        ``(n_items,)`` interaction counts per item.
    n_users:
        Number of training users (the denominator of ``p_i``).

    References
    ----------
    Zhou, Kuscsik, Liu, Medo, Wakeling & Zhang, "Solving the apparent diversity-accuracy
    dilemma of recommender systems", PNAS 107(10), 2010.
    """
    n_users = check_k(n_users, "n_users")
    top = _top_k(recommended, k)
    counts = _per_item(item_popularity, "item_popularity", top)
    information = -np.log2(np.maximum(counts, 1.0) / n_users)
    return _mean_over_valid(information, top)


def serendipity(
    recommended: npt.ArrayLike,
    relevant: Any,
    baseline_recommended: npt.ArrayLike,
    k: int,
) -> FloatArray:
    """Share of the top k that is relevant *and* unexpected, per user.

    ``serendipity(u) = |{i in top_k(u) : i relevant and i not in baseline_top_k(u)}| / k``

    The "expected" recommendations are a primitive baseline's top k for the same user
    (typically most-popular). NaN for users with no relevant item.

    Parameters
    ----------
    relevant:
        Sparse ``(n_users, n_items)`` relevance matrix (entries ``> 0`` are relevant), as in
        :mod:`tastebud.metrics.ranking`.
    baseline_recommended:
        ``(n_users, L')`` integer matrix of the baseline's lists, ``-1`` padded; row ``u`` is
        the same user as row ``u`` of ``recommended``.

    References
    ----------
    Ge, Delgado-Battenfeld & Jannach, "Beyond accuracy: evaluating recommender systems by
    coverage and serendipity", RecSys 2010; Murakami, Mori & Orihara, "Metrics for
    evaluating the serendipity of recommendation lists", JSAI 2007.
    """
    top = _top_k(recommended, k)
    base = _top_k(baseline_recommended, k, name="baseline_recommended")
    if base.shape[0] != top.shape[0]:
        raise InvalidInputError(
            f"baseline_recommended has {base.shape[0]} rows, recommended has {top.shape[0]}"
        )
    rel = _Relevance(relevant, top.shape[0])
    unexpected_hits = (rel.gains(top) > 0) & ~_in_rows(top, base)
    out = unexpected_hits.sum(axis=1) / float(top.shape[1])
    out[rel.n_relevant == 0] = np.nan
    return out


def average_popularity(
    recommended: npt.ArrayLike, item_popularity: npt.ArrayLike, k: int
) -> FloatArray:
    """Average recommendation popularity (ARP) per user.

    ``ARP(u) = (1 / n) * sum_{i in top_k(u)} count_i`` over the ``n`` valid items, with
    ``count_i = item_popularity[i]`` the item's number of training interactions. NaN for
    empty lists.

    References
    ----------
    Abdollahpouri, Burke & Mobasher, "Managing popularity bias in recommender systems with
    personalized re-ranking", FLAIRS 2019.
    """
    top = _top_k(recommended, k)
    counts = _per_item(item_popularity, "item_popularity", top)
    return _mean_over_valid(counts, top)


def gini_index(recommended: npt.ArrayLike, n_items: int, k: int) -> float:
    """Gini coefficient of how often each catalog item is recommended.

    ``x_i`` = number of top-k lists containing item ``i`` (0 for items never recommended),
    sorted ascending; with ``n = n_items`` and 1-based ``i``::

        G = sum_{i=1..n} (2 i - n - 1) * x_(i) / (n * sum_i x_i)

    0 means every item is recommended equally often; ``(n - 1) / n`` (-> 1) means all
    recommendations go to one item. NaN when nothing was recommended.

    References
    ----------
    Fleder & Hosanagar, "Blockbuster culture's next rise or fall: the impact of recommender
    systems on sales diversity", Management Science 55(5), 2009; Adomavicius & Kwon,
    "Improving aggregate recommendation diversity using ranking-based techniques", IEEE TKDE
    24(5), 2012.
    """
    n_items = check_k(n_items, "n_items")
    top = _top_k(recommended, k, n_items=n_items)
    counts = np.sort(np.bincount(top[top >= 0], minlength=n_items)).astype(np.float64)
    total = counts.sum()
    if total == 0:
        return float("nan")
    index = np.arange(1, n_items + 1, dtype=np.float64)
    return float(((2.0 * index - n_items - 1.0) * counts).sum() / (n_items * total))


class GroupGap(TypedDict):
    """Result of :func:`group_gap`."""

    by_group: dict[Any, float]
    gap: float
    ratio: float


def group_gap(values: npt.ArrayLike, groups: npt.ArrayLike) -> GroupGap:
    """Mean of a per-user metric in each user group and the gap between groups.

    ``mean_g = mean of values[u] over users u in group g`` (NaN values and users with a
    missing label are left out); ``gap = max_g mean_g - min_g mean_g`` and
    ``ratio = min_g mean_g / max_g mean_g`` (NaN when the largest mean is 0). Groups are
    listed in sorted label order when labels can be sorted.

    Returns
    -------
    dict
        ``{"by_group": {label: mean}, "gap": float, "ratio": float}``

    Raises
    ------
    InvalidInputError
        When ``values`` and ``groups`` differ in length, or fewer than two groups have a
        value.

    References
    ----------
    Ekstrand, Tian, Azpiazu, Ekstrand, Anuyah, McNeill & Pera, "All the cool kids, how do
    they fit in?: Popularity and demographic biases in recommender evaluation and
    effectiveness", FAT* 2018.
    """
    try:
        vals = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError("values must be numeric") from None
    if vals.ndim != 1:
        raise InvalidInputError(f"values must be 1-D (one per user), got {vals.ndim}-D")
    labels = pd.Series(np.asarray(groups, dtype=object).ravel())
    if np.ndim(groups) != 1 or len(labels) != len(vals):
        raise InvalidInputError(
            f"values and groups must be 1-D of the same length, got {len(vals)} values and "
            f"groups of shape {np.shape(groups)}"
        )
    if np.isinf(vals).any():
        raise InvalidInputError("values must not be infinite (NaN values are ignored)")
    keep = ~np.isnan(vals) & labels.notna().to_numpy()
    series = pd.Series(vals[keep])
    keys = labels[keep].reset_index(drop=True)
    try:
        means = series.groupby(keys, sort=True).mean()
    except TypeError:  # labels of mixed, unorderable types
        means = series.groupby(keys, sort=False).mean()
    if len(means) < 2:
        raise InvalidInputError(f"group_gap needs at least 2 groups with values, got {len(means)}")
    by_group = {label: float(mean) for label, mean in means.items()}
    low, high = float(means.min()), float(means.max())
    return {
        "by_group": by_group,
        "gap": high - low,
        "ratio": low / high if high != 0 else float("nan"),
    }
