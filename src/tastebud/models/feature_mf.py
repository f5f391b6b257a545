"""A factorization whose users and items are sums of feature embeddings, in the spirit of
LightFM (Kula, "Metadata embeddings for user and item cold-start recommendations", 2015).

Every user and item is described by a sparse row of features -- its own identity, the columns
of its feature table (:func:`tastebud.features.feature_matrix`), and, for users, optionally the
bag of items they interacted with. Each feature f has an embedding e_f (``factors`` long) and,
on the item side, a bias b_f. With x_u and x_i the feature rows::

    p_u = Σ_f x_uf e_f        q_i = Σ_f x_if e_f        b_i = Σ_f x_if b_f
    score(u, i) = p_uᵀ q_i + b_i

(a user-side bias would add the same number to every item of a user, so it cannot change a
ranking and is left out). Because an item is the sum of its features, an item that nobody has
interacted with yet still has a vector -- its genres, year, brand... -- and so does a user known
only by attributes: that is the model's answer to cold start.

Feature rows
------------
A row is made of *blocks*, each scaled to an absolute sum of 1: identity (one feature of weight
1), history (users, with ``user_history``: every item of their training history, 1/|history|
each) and attributes (the one-hot columns of the feature table, numbers cut into
``numeric_bins`` quantile bins first). So p_u = e_u + mean of the user's attribute embeddings
(+ mean of the history embeddings). LightFM instead scales the whole row to sum 1, which gives
an item with five genres a sixth of its identity, and then the best learning rate depends on
the features (ML-100K, WARP: 0.1 with every user and item feature, NDCG@10 0.31, but 0.025
without features, where 0.1 gives 0.21); with per-block weights 0.05 suits both (0.315 and
0.293). A user or item without training interactions has no identity feature (nothing was
learned for it): its row is its attributes alone.

Numbers are binned because a z-scored number is a single direction in the embedding space: on
the ML-100K cold-item split, the release year as ten quantile bins lifts Recall@10 of the
held-out items from 0.10 to 0.14 (LightFM's features are indicators too).

Training
--------
Positives are the training interactions with rating >= ``positive_threshold`` (4 by default
on rated data; every interaction otherwise). Each epoch visits the positives (u, i) in a fresh
random order and samples negatives j uniformly from the whole catalog -- items without training
interactions included, as in LightFM -- never one of u's positives:

``warp`` -- Weighted Approximate-Rank Pairwise loss (Weston, Bengio & Usunier, "WSABIE", IJCAI
2011): draw up to ``max_sampled`` negatives until one violates the margin,
s_uj > s_ui - 1; the rank of i is then estimated as ⌊(N - 1)/n⌋ after n draws (N = number of
items) and the hinge 1 - s_ui + s_uj is minimised with weight ln ⌊(N - 1)/n⌋ -- a positive
ranked low (violated at once) gets a large step, one already near the top a small step or
none.

``bpr`` -- Bayesian Personalized Ranking (Rendle et al., UAI 2009): one negative, minimise
-ln σ(s_ui - s_uj).

Both losses give the same gradient shape: with weight w (WARP's rank weight, or BPR's
σ(s_uj - s_ui)), ∂/∂p_u = w (q_j - q_i), ∂/∂q_i = -w p_u, ∂/∂q_j = w p_u, ∂/∂b_i = -w,
∂/∂b_j = w, spread over the features of each row in proportion to x. Steps follow Adagrad
(Duchi, Hazan & Singer 2011), as in LightFM: each parameter keeps the sum G of its squared
gradients (starting at 1) and moves by ``learning_rate`` · g / √G, so frequent features slow
down and rare ones keep learning.

The L2 penalties ``user_alpha`` / ``item_alpha`` (alpha |θ|²/2 in the objective, once, not
per positive) shrink *every* parameter of their side after each epoch by
exp(-learning_rate · alpha): one epoch's plain gradient step on the penalty, applied at once.
The shrinkage does not depend on the size of the data. It used to be exp(-learning_rate ·
alpha · n), n the number of positives (LightFM's per-step penalty, applied lazily): the
penalty then grew with the data, and at 20M interactions the default wiped out 99.8% of
every parameter each epoch, so the training loss rose from epoch to epoch. The default 0.7
was chosen on validation splits of ML-100K and Last.fm (``benchmarks/feature_mf_penalty.py``;
0.7 and 1 tie there, 2 is 2-6% worse, and 0.7 stays further from that fall). Adding the
penalty only to the parameters a step touches was worse for cold start: shared features (a
genre) are touched thousands of times more often than an identity, so they shrink toward
nothing and cold items, which have only those, lose their scores (ML-100K cold items, genres
and decades: Recall@10 0.114 with a touched-only penalty of 0.02 at learning rate 0.1, its
best warm setting, against 0.127 with no penalty at 0.05).

Sampling negatives among every item matters for cold start: a new item appears as a negative
with its attribute-only row, the very representation it is scored with, so the attribute
embeddings learn to rank items *by themselves*, not only to correct the identities (ML-100K
cold items, genres and decades: Recall@10 0.131 with negatives only among items with
interactions, 0.146 from the whole catalog).

The kernels are numba-compiled and single-threaded; the shuffling and the negatives come from
a numpy generator seeded with ``random_state``, so a fit is reproducible bit for bit.

Fold-in
-------
A user given only by a history (``recommend_from_history``; every item with a value > 0 is a
positive) gets the history block of those items (with ``user_history``) and, with
``user_identity``, a stand-in identity embedding learnt by replaying the training of that one
embedding for ``epochs`` passes over the history with every item fixed (same loss, sampling,
Adagrad and shrinkage; seeded per row, so an answer never depends on the batch). On ML-100K
(positives, random 80/20) the training users folded in from their histories score NDCG@10
0.311 against 0.315 fitted, their top-10 lists sharing 0.79 of the items, in about 1 ms a
user. With ``user_history=True, user_identity=False`` and no user attributes the fold-in of a
training history is exact, but the history block is slow -- each step updates the embeddings
of the user's whole history: 33 s to fit ML-100K against 2.4 s for identities alone -- for
NDCG@10 0.303 against 0.293, less than user attributes give (0.315), so it is off by default.

One module (~700 lines) for one model: the numba kernels are the training and the fold-in
described above, step for step (the fold-in replays the user side of an epoch), the feature
rows are what they read, and nothing but :class:`FeatureMF` uses either.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numba
import numpy as np
import pandas as pd
import scipy.sparse as sp

from tastebud.data.dataset import Dataset
from tastebud.features import feature_matrix
from tastebud.models._retrieval import Searchable
from tastebud.models.registry import register

Loss = Literal["warp", "bpr"]
_INIT_SCALE = 0.1  # initial embeddings: uniform in ±_INIT_SCALE/2, divided by √factors
_CHUNK = 1 << 20  # positives whose negatives are drawn at once


# -- numba kernels --------------------------------------------------------------------------------
@numba.njit(cache=True)
def _row_vector(
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    row: int,
    emb: np.ndarray,
    bias: np.ndarray,
    out: np.ndarray,
) -> float:  # pragma: no cover - compiled
    """out = Σ_f x_f e_f over the features of ``row``; returns Σ_f x_f b_f."""
    n_factors = emb.shape[1]
    out[:] = 0.0
    total = 0.0
    for p in range(indptr[row], indptr[row + 1]):
        f = indices[p]
        x = data[p]
        total += x * bias[f]
        for c in range(n_factors):
            out[c] += x * emb[f, c]
    return total


@numba.njit(cache=True)
def _adagrad_row(
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    row: int,
    emb: np.ndarray,
    acc: np.ndarray,
    direction: np.ndarray,
    weight: float,
    lr: float,
) -> None:  # pragma: no cover - compiled
    """Adagrad step of the embeddings of ``row``'s features: the representation's gradient is
    ``weight * direction``, a feature's is that times x_f."""
    n_factors = emb.shape[1]
    for p in range(indptr[row], indptr[row + 1]):
        f = indices[p]
        scale = weight * data[p]
        for c in range(n_factors):
            g = scale * direction[c]
            acc[f, c] += g * g
            emb[f, c] -= lr * g / np.sqrt(acc[f, c])


@numba.njit(cache=True)
def _adagrad_bias(
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    row: int,
    bias: np.ndarray,
    acc: np.ndarray,
    weight: float,
    lr: float,
) -> None:  # pragma: no cover - compiled
    for p in range(indptr[row], indptr[row + 1]):
        f = indices[p]
        g = weight * data[p]
        acc[f] += g * g
        bias[f] -= lr * g / np.sqrt(acc[f])


@numba.njit(cache=True)
def _contains(
    sorted_values: np.ndarray, start: int, end: int, value: int
) -> bool:  # pragma: no cover - compiled
    """Binary search of ``value`` in ``sorted_values[start:end]``."""
    lo = start
    hi = end
    while lo < hi:
        mid = (lo + hi) // 2
        v = sorted_values[mid]
        if v == value:
            return True
        if v < value:
            lo = mid + 1
        else:
            hi = mid
    return False


@numba.njit(cache=True)
def _pair_weight(
    warp: bool, positive: float, negative: float, trial: int, n_candidates: int
) -> tuple[bool, float, float]:  # pragma: no cover - compiled
    """(take this negative, gradient weight, loss) of one (positive, negative) pair. WARP takes
    only a margin violator, weighted by the log of the estimated rank; BPR takes any."""
    if warp:
        if negative <= positive - 1.0:
            return False, 0.0, 0.0
        rank = np.floor((n_candidates - 1) / (trial + 1))
        weight = np.log(max(rank, 1.0))
        return True, weight, weight * (1.0 - positive + negative)
    z = positive - negative
    if z >= 0:
        e = np.exp(-z)
        return True, e / (1.0 + e), np.log1p(e)
    e = np.exp(z)
    return True, 1.0 / (1.0 + e), -z + np.log1p(e)


@numba.njit(cache=True)
def _epoch(
    order: np.ndarray,
    draws: np.ndarray,
    pos_users: np.ndarray,
    pos_items: np.ndarray,
    pos_indptr: np.ndarray,
    pos_indices: np.ndarray,
    pool: np.ndarray,
    u_indptr: np.ndarray,
    u_indices: np.ndarray,
    u_data: np.ndarray,
    i_indptr: np.ndarray,
    i_indices: np.ndarray,
    i_data: np.ndarray,
    P: np.ndarray,
    Q: np.ndarray,
    item_bias: np.ndarray,
    gP: np.ndarray,
    gQ: np.ndarray,
    g_bias: np.ndarray,
    user_zero_bias: np.ndarray,
    lr: float,
    warp: bool,
) -> float:  # pragma: no cover - compiled
    """One pass over the positives in ``order`` (parameters updated in place); returns the
    summed loss. ``draws[t]`` are the candidate negatives (indices into ``pool``) of the t-th
    positive visited, tried in turn: WARP until one violates the margin, BPR the first that is not a
    positive of the user."""
    n_factors = P.shape[1]
    n_pool = pool.shape[0]
    max_sampled = draws.shape[1]
    p_u = np.empty(n_factors)
    q_i = np.empty(n_factors)
    q_j = np.empty(n_factors)
    diff = np.empty(n_factors)
    total = 0.0
    for t in range(order.shape[0]):
        s = order[t]
        u = pos_users[s]
        i = pos_items[s]
        _row_vector(u_indptr, u_indices, u_data, u, P, user_zero_bias, p_u)
        b_i = _row_vector(i_indptr, i_indices, i_data, i, Q, item_bias, q_i)
        positive = b_i
        for c in range(n_factors):
            positive += p_u[c] * q_i[c]
        weight = 0.0
        j = -1
        for trial in range(max_sampled):
            candidate = pool[draws[t, trial]]
            if _contains(pos_indices, pos_indptr[u], pos_indptr[u + 1], candidate):
                continue
            negative = _row_vector(i_indptr, i_indices, i_data, candidate, Q, item_bias, q_j)
            for c in range(n_factors):
                negative += p_u[c] * q_j[c]
            take, w, loss = _pair_weight(warp, positive, negative, trial, n_pool)
            if not take:
                continue  # WARP: not a violation, draw again
            total += loss
            weight = w
            j = candidate
            break
        if j < 0 or weight == 0.0:
            continue
        for c in range(n_factors):
            diff[c] = q_j[c] - q_i[c]
        _adagrad_row(u_indptr, u_indices, u_data, u, P, gP, diff, weight, lr)
        _adagrad_row(i_indptr, i_indices, i_data, i, Q, gQ, p_u, -weight, lr)
        _adagrad_row(i_indptr, i_indices, i_data, j, Q, gQ, p_u, weight, lr)
        _adagrad_bias(i_indptr, i_indices, i_data, i, item_bias, g_bias, -weight, lr)
        _adagrad_bias(i_indptr, i_indices, i_data, j, item_bias, g_bias, weight, lr)
    return total


@numba.njit(cache=True)
def _fold_in_row(
    history: np.ndarray,
    fixed: np.ndarray,
    orders: np.ndarray,
    draws: np.ndarray,
    pool: np.ndarray,
    V: np.ndarray,
    item_bias: np.ndarray,
    lr: float,
    decay: float,
    warp: bool,
) -> np.ndarray:  # pragma: no cover - compiled
    """The user vector ``fixed + e`` of one history, training the stand-in identity embedding
    e (from zero) with the items fixed: the user side of :func:`_epoch` replayed for
    ``orders.shape[0]`` passes over the history (``history`` sorted), e shrunk by ``decay``
    after each pass as the fitted embeddings were."""
    n_factors = V.shape[1]
    n_pool = pool.shape[0]
    n_history = history.shape[0]
    max_sampled = draws.shape[2]
    e = np.zeros(n_factors)
    acc = np.ones(n_factors)
    p_u = np.empty(n_factors)
    for epoch in range(orders.shape[0]):
        for t in range(n_history):
            s = orders[epoch, t]
            i = history[s]
            for c in range(n_factors):
                p_u[c] = fixed[c] + e[c]
            positive = item_bias[i]
            for c in range(n_factors):
                positive += p_u[c] * V[i, c]
            weight = 0.0
            j = -1
            for trial in range(max_sampled):
                candidate = pool[draws[epoch, s, trial]]
                if _contains(history, 0, n_history, candidate):
                    continue
                negative = item_bias[candidate]
                for c in range(n_factors):
                    negative += p_u[c] * V[candidate, c]
                take, w, _loss = _pair_weight(warp, positive, negative, trial, n_pool)
                if not take:
                    continue
                weight = w
                j = candidate
                break
            if j < 0 or weight == 0.0:
                continue
            for c in range(n_factors):
                g = weight * (V[j, c] - V[i, c])
                acc[c] += g * g
                e[c] -= lr * g / np.sqrt(acc[c])
        for c in range(n_factors):
            e[c] *= decay
    out = np.empty(n_factors)
    for c in range(n_factors):
        out[c] = fixed[c] + e[c]
    return out


# -- feature rows ----------------------------------------------------------------------------------
def _l1_rows(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Rows scaled to an absolute sum of 1 (empty rows stay empty)."""
    out = sp.csr_matrix(matrix, dtype=np.float64, copy=True)
    out.eliminate_zeros()
    sums = np.asarray(abs(out).sum(axis=1)).ravel()
    scale = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
    return sp.csr_matrix(sp.diags(scale) @ out)


def _rows_of_blocks(blocks: list[sp.csr_matrix]) -> sp.csr_matrix:
    """The blocks side by side, each row of each block scaled to an absolute sum of 1."""
    out = sp.hstack([_l1_rows(b) for b in blocks], format="csr")
    out.sort_indices()
    return sp.csr_matrix(out)


def _binned(table: pd.DataFrame, bins: int) -> pd.DataFrame:
    """Numeric columns replaced by their quantile bin as text (``"age<=24"``), so that
    ``feature_matrix`` one-hot encodes them; booleans, text, and numbers of tables too small
    for that many bins are kept."""
    out = table.copy()
    for name in table.columns:
        col = table[name]
        if pd.api.types.is_bool_dtype(col.dtype) or not pd.api.types.is_numeric_dtype(col.dtype):
            continue
        values = col.to_numpy(dtype=np.float64, na_value=np.nan)
        finite = values[np.isfinite(values)]
        if len(finite) == 0:
            continue
        edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:]))
        if len(edges) > 0.5 * len(table):
            continue  # too few rows for bins (feature_matrix would call them free text)
        position = np.searchsorted(edges, values, side="left").clip(0, len(edges) - 1)
        labels = np.array([f"{name}<={edge:g}" for edge in edges], dtype=object)
        out[name] = pd.Series(
            np.where(np.isfinite(values), labels[position], None), index=table.index, dtype=object
        )
    return out


@register("feature-mf")
@dataclasses.dataclass(kw_only=True, eq=False)
class FeatureMF(Searchable):
    """Users and items as sums of feature embeddings, trained by WARP or BPR: a hybrid that
    ranks cold items from their features and cold users from their attributes.

    Parameters
    ----------
    factors:
        Length of the embeddings.
    loss:
        ``"warp"`` or ``"bpr"``. WARP ranks better on ML-100K (warm NDCG@10 0.315 against
        0.265) for about the same fit time.
    epochs:
        Passes over the positives.
    learning_rate:
        Adagrad's base step.
    user_alpha, item_alpha:
        L2 penalties of the user-side and item-side parameters, applied as a shrinkage of all
        of them by exp(-learning_rate · alpha) after each epoch, whatever the data's size
        (module docstring; ``benchmarks/feature_mf_penalty.py`` chose the default).
    max_sampled:
        WARP: negatives drawn at most per positive before giving up (the positive is then
        ranked high enough); BPR: draws allowed to find an item that is not a positive.
    user_identity, item_identity:
        Give every user / item its own feature (the plain matrix-factorization part).
    user_columns, item_columns:
        Columns of the dataset's user / item feature tables to use (``None``: every usable
        one; ``()``: none). Free-text columns (mostly distinct values) give no features.
    user_history:
        Add the bag of items a user interacted with in training (every interaction, whatever
        its rating) as user features (Paterek's asymmetric model, SVD++'s implicit term), so
        that a user given only by a history is represented like a training user. Costly: each
        step updates the embeddings of the user's whole history.
    numeric_bins:
        Numeric feature columns are cut into this many quantile bins and one-hot encoded
        (0: keep them as one z-scored feature each).
    positive_threshold:
        Interactions with a value (rating, else weight) at least this are the positives; the
        default ``None`` means 4 on rated data and every interaction otherwise.
    random_state:
        Seed of the initialisation, the shuffling and the negative sampling.
    index, ann_min_items:
        Retrieval: ``"auto"`` (the default) searches a faiss inverted-file index over the
        item vectors once the catalogue has ``ann_min_items`` (50,000) items, and scores
        every item below that; ``"exact"`` or ``"ann"`` force one
        (:mod:`tastebud.models._retrieval`, ``benchmarks/retrieval.py``).

    Notes
    -----
    Users and items without training interactions are scored from their attribute features;
    users without any feature (no interactions, no attributes) and unknown users get the
    popularity fallback.
    """

    factors: int = 64
    loss: Loss = "warp"
    epochs: int = 30
    learning_rate: float = 0.05
    user_alpha: float = 0.7
    item_alpha: float = 0.7
    max_sampled: int = 10
    user_identity: bool = True
    item_identity: bool = True
    user_columns: tuple[str, ...] | None = None
    item_columns: tuple[str, ...] | None = None
    user_history: bool = False
    numeric_bins: int = 10
    positive_threshold: float | None = None
    random_state: int = 0

    def __post_init__(self) -> None:
        for name in ("user_columns", "item_columns"):
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))  # JSON round trips give lists

    def _validate(self) -> None:
        super()._validate()
        self._check(self.factors >= 1, "factors must be >= 1")
        self._check(self.epochs >= 1, "epochs must be >= 1")
        self._check(self.learning_rate > 0, "learning_rate must be > 0")
        self._check(self.user_alpha >= 0, "user_alpha must be >= 0")
        self._check(self.item_alpha >= 0, "item_alpha must be >= 0")
        self._check(self.max_sampled >= 1, "max_sampled must be >= 1")
        self._check(self.numeric_bins >= 0, "numeric_bins must be >= 0")
        self._check(self.random_state >= 0, "random_state must be >= 0")

    # -- features -------------------------------------------------------------------------------
    def _attributes(
        self, table: pd.DataFrame | None, columns: tuple[str, ...] | None, what: str, n: int
    ) -> sp.csr_matrix:
        """The attribute block of one side: ``feature_matrix`` of the chosen columns."""
        if columns is not None and len(columns) == 0:
            return sp.csr_matrix((n, 0))
        if table is None:
            self._check(
                columns is None,
                f"{what}_columns={columns!r} but the dataset has no {what} feature table",
            )
            return sp.csr_matrix((n, 0))
        if self.numeric_bins > 0:
            table = _binned(table, int(self.numeric_bins))
        if columns is None:
            return sp.csr_matrix(feature_matrix(table), dtype=np.float64)
        missing = [c for c in columns if c not in table.columns]
        self._check(
            not missing,
            f"{what} feature table has no column {', '.join(map(repr, missing))}; "
            f"columns: {', '.join(map(str, table.columns))}",
        )
        blocks = []
        for column in columns:
            block = feature_matrix(table[[column]])
            self._check(
                block.shape[1] > 0,
                f"{what} feature column {column!r} gives no usable feature (free text, or "
                "nothing but missing values)",
            )
            blocks.append(block)
        return sp.csr_matrix(sp.hstack(blocks, format="csr"), dtype=np.float64)

    def _positives(self, dataset: Dataset) -> sp.csr_matrix:
        values = dataset.values("auto")
        threshold = self.positive_threshold
        if threshold is None and dataset.has_ratings:
            threshold = 4.0
        keep = values >= threshold if threshold is not None else values > 0
        self._check(
            bool(keep.any()),
            f"no positive interaction in {dataset.name} (values >= {threshold})",
        )
        self.positive_threshold_ = None if threshold is None else float(threshold)
        return sp.csr_matrix(
            (
                np.ones(int(keep.sum())),
                (dataset.user_index[keep], dataset.item_index[keep]),
            ),
            shape=(dataset.n_users, dataset.n_items),
        )

    # -- fitting --------------------------------------------------------------------------------
    def _fit(self, dataset: Dataset) -> None:
        positives = self._positives(dataset)
        positives.sort_indices()
        n_users, n_items = dataset.n_users, dataset.n_items
        trained_users = np.diff(positives.indptr) > 0
        item_counts = dataset.item_popularity()
        trained_items = item_counts > 0

        user_attrs = self._attributes(dataset.user_features, self.user_columns, "user", n_users)
        item_attrs = self._attributes(dataset.item_features, self.item_columns, "item", n_items)
        self._check(
            self.user_identity or self.user_history or user_attrs.shape[1] > 0,
            "users have no feature: set user_identity or user_history, or give user features",
        )
        self._check(
            self.item_identity or item_attrs.shape[1] > 0,
            "items have no feature: set item_identity or give item features",
        )
        user_blocks: list[sp.csr_matrix] = []
        if self.user_identity:
            user_blocks.append(sp.csr_matrix(sp.diags(trained_users.astype(np.float64))))
        if self.user_history:
            user_blocks.append(dataset.matrix("binary").astype(np.float64))
        user_blocks.append(user_attrs)
        item_blocks: list[sp.csr_matrix] = []
        if self.item_identity:
            item_blocks.append(sp.csr_matrix(sp.diags(trained_items.astype(np.float64))))
        item_blocks.append(item_attrs)
        X_u = _rows_of_blocks(user_blocks)
        X_i = _rows_of_blocks(item_blocks)

        rng = np.random.default_rng(self.random_state)
        k = int(self.factors)
        scale = _INIT_SCALE / np.sqrt(k)
        P = (rng.random((X_u.shape[1], k)) - 0.5) * scale
        Q = (rng.random((X_i.shape[1], k)) - 0.5) * scale
        item_bias = np.zeros(X_i.shape[1])
        gP, gQ, g_bias = np.ones_like(P), np.ones_like(Q), np.ones_like(item_bias)
        pool = np.arange(n_items, dtype=np.int64)  # negatives: the whole catalog
        pos_users = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(positives.indptr))
        pos_items = positives.indices.astype(np.int64)
        n_pos = len(pos_items)
        fixed = (
            pos_users,
            pos_items,
            positives.indptr.astype(np.int64),
            pos_items,
            pool,
            *(X_u.indptr.astype(np.int64), X_u.indices.astype(np.int64), X_u.data),
            *(X_i.indptr.astype(np.int64), X_i.indices.astype(np.int64), X_i.data),
            *(P, Q, item_bias, gP, gQ, g_bias, np.zeros(X_u.shape[1])),
            float(self.learning_rate),
            self.loss == "warp",
        )
        user_decay, item_decay = self._decay()
        losses = []
        for _ in range(int(self.epochs)):
            order = rng.permutation(n_pos)
            total = 0.0
            for start in range(0, n_pos, _CHUNK):  # bounded memory for the sampled negatives
                visit = order[start : start + _CHUNK]
                draws = rng.integers(0, len(pool), (len(visit), int(self.max_sampled)))
                total += _epoch(visit, draws.astype(np.int32), *fixed)
            P *= user_decay
            Q *= item_decay
            item_bias *= item_decay
            losses.append(total / n_pos)
        self.loss_ = np.asarray(losses)
        self.user_vectors_ = np.ascontiguousarray(X_u @ P)
        self.item_vectors_ = np.ascontiguousarray(X_i @ Q)
        self.item_bias_ = np.asarray(X_i @ item_bias, dtype=np.float64)
        self.scorable_users_ = np.diff(X_u.indptr) > 0
        start = n_users if self.user_identity else 0
        history = P[start : start + n_items] if self.user_history else np.zeros((0, k))
        self.history_embeddings_ = np.ascontiguousarray(history)
        self.user_features_ = X_u
        self.item_features_ = X_i

    def _decay(self) -> tuple[float, float]:
        """The factors all user-side and all item-side parameters are multiplied by after each
        epoch: exp(-learning_rate * alpha), one epoch's plain gradient step on the penalty
        alpha |θ|²/2 of the objective, applied at once (module docstring)."""
        lr = float(self.learning_rate)
        return (
            float(np.exp(-lr * float(self.user_alpha))),
            float(np.exp(-lr * float(self.item_alpha))),
        )

    def _restore_state(self, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """A folder saved before the penalty stopped growing with the data (it keeps
        ``n_positives_``) gets the alphas that shrink as it did: alpha · n."""
        super()._restore_state(config, arrays)
        legacy = self.__dict__.pop("n_positives_", None)
        if legacy is not None:
            self.user_alpha = float(self.user_alpha) * int(legacy)
            self.item_alpha = float(self.item_alpha) * int(legacy)

    # -- scoring --------------------------------------------------------------------------------
    def _scorable(self, users: np.ndarray) -> np.ndarray:
        return np.asarray(self.scorable_users_[users], dtype=bool)

    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        V = self.item_vectors_ if items is None else self.item_vectors_[items]
        bias = self.item_bias_ if items is None else self.item_bias_[items]
        return np.asarray(self.user_vectors_[users] @ V.T + bias[None, :], dtype=np.float64)

    # -- retrieval (tastebud.models._retrieval): [v_i, b_i] . [q_u, 1] ----------------------
    def _search_items(self) -> np.ndarray:
        return self._with_bias(self.item_vectors_, self.item_bias_)

    def _search_queries(
        self,
        users: np.ndarray | None,
        histories: sp.csr_matrix | None = None,
        sequences: list[np.ndarray] | None = None,
    ) -> tuple[np.ndarray, None]:
        if histories is not None:
            vectors = self._fold_in(sp.csr_matrix(histories))
        else:
            assert users is not None
            vectors = self.user_vectors_[users]
        return self._with_one(vectors, True), None

    def _unit_items(self) -> np.ndarray:
        cached = self.__dict__.get("_unit_cache")
        if cached is None or cached[0] is not self.item_vectors_:
            norms = np.linalg.norm(self.item_vectors_, axis=1, keepdims=True)
            unit = np.divide(
                self.item_vectors_, norms, out=np.zeros_like(self.item_vectors_), where=norms > 0
            )
            cached = (self.item_vectors_, unit)
            self.__dict__["_unit_cache"] = cached
        return cached[1]

    def _similar(self, items: np.ndarray) -> np.ndarray:
        unit = self._unit_items()
        return np.asarray(unit[items] @ unit.T, dtype=np.float64)

    def _similar_vectors(self) -> np.ndarray:
        return self._unit_items()

    # -- fold-in --------------------------------------------------------------------------------
    def _fold_in(self, histories: sp.csr_matrix) -> np.ndarray:
        """User vectors for history rows (items with a value > 0; module docstring)."""
        h = sp.csr_matrix(histories, dtype=np.float64, copy=True)
        h.data = (h.data > 0).astype(np.float64)
        h.eliminate_zeros()
        h.sort_indices()
        n_items, k = self.item_vectors_.shape
        pool = np.arange(n_items, dtype=np.int64)
        user_decay, _ = self._decay()
        vectors = np.zeros((h.shape[0], k))
        for row in range(h.shape[0]):
            items = h.indices[h.indptr[row] : h.indptr[row + 1]].astype(np.int64)
            if len(items) == 0:
                continue
            fixed = np.zeros(k)
            if self.user_history:
                fixed = self.history_embeddings_[items].mean(axis=0)
            if not self.user_identity:
                vectors[row] = fixed
                continue
            rng = np.random.default_rng(self.random_state)  # per row: batch-independent
            epochs, n = int(self.epochs), len(items)
            orders = np.argsort(rng.random((epochs, n)), axis=1)
            draws = rng.integers(0, n_items, (epochs, n, int(self.max_sampled)))
            vectors[row] = _fold_in_row(
                items,
                fixed,
                orders,
                draws,
                pool,
                self.item_vectors_,
                self.item_bias_,
                float(self.learning_rate),
                user_decay,
                self.loss == "warp",
            )
        return vectors

    def _score_history(
        self, histories: sp.csr_matrix, sequences: list[np.ndarray] | None = None
    ) -> np.ndarray:
        h = sp.csr_matrix(histories)
        empty = np.asarray((h > 0).sum(axis=1)).ravel() == 0
        out = np.empty((h.shape[0], len(self.items_)), dtype=np.float64)
        if empty.any():  # nothing to fold in: answer like for an unknown user
            out[empty] = self._fallback_scores(int(empty.sum()), None)
        rows = np.flatnonzero(~empty)
        if len(rows):
            vectors = self._fold_in(h[rows])
            out[rows] = vectors @ self.item_vectors_.T + self.item_bias_[None, :]
        return out
