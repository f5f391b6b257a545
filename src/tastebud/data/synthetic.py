"""Synthetic interaction data with a known structure, from a thousand to 100M interactions.

Users and items belong to latent *taste clusters*; a user picks an item of their own cluster
with probability ``affinity`` and a globally popular item otherwise. Item popularity follows a
power law (Zipf, exponent ``popularity_exponent``) and user activity a log-normal law, as in
real logs. Models that learn the clusters beat popularity, which makes the data a test whose
right answer is known.

Generation runs in chunks of whole users and writes straight into the final arrays, already
sorted by (user, item), so memory stays close to the arrays' own size (20 bytes per interaction
with ratings and timestamps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from tastebud.data.dataset import Dataset
from tastebud.data.idmap import IdMap
from tastebud.errors import InvalidInputError

_START = 1_735_689_600.0  # 2025-01-01T00:00:00Z
_YEAR = 365.0 * 86_400


def _check(name: str, value: float, low: float, high: float | None = None) -> None:
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise InvalidInputError(f"{name} must be {bound}, got {value}")


def synthetic(
    n_users: int = 1_000,
    n_items: int = 500,
    n_interactions: int | None = None,
    *,
    density: float | None = None,
    n_clusters: int = 8,
    affinity: float = 0.8,
    popularity_exponent: float = 0.9,
    ratings: bool = True,
    timestamps: bool = True,
    features: bool = True,
    seed: int = 0,
    chunk_size: int = 1_000_000,
    progress: bool | None = None,
) -> Dataset:
    """Generate a power-law interaction dataset with latent taste clusters.

    Parameters
    ----------
    n_users, n_items:
        Catalog sizes; ids are the ints ``0..n-1``.
    n_interactions:
        Number of distinct (user, item) interactions to make (default 20,000). A user gets
        at most a quarter of the catalog, so with a tiny catalog the dataset can hold fewer.
    density:
        Alternatively, the share of the user x item matrix to fill (``n_interactions`` must
        then be ``None``).
    n_clusters:
        Number of latent taste clusters; ``user_features["cluster"]`` and
        ``item_features["cluster"]`` hold the truth.
    affinity:
        Probability that an event goes to an item of the user's cluster.
    popularity_exponent:
        Zipf exponent of item popularity (0 = uniform).
    ratings:
        Add 1-5 ratings (higher inside the user's cluster).
    timestamps:
        Add event times over one year from 2025-01-01.
    features:
        Add user (age, gender, country, cluster) and item (category, price, year, cluster)
        tables.
    seed:
        Seed of the random generator: the same arguments give the same dataset.
    chunk_size:
        Interactions generated at once (bounds the temporary memory).
    progress:
        Show a progress bar (default: only in a terminal, for large sizes).
    """
    n_interactions = _checked_count(
        n_users, n_items, n_interactions, density, n_clusters, affinity, popularity_exponent
    )
    rng = np.random.default_rng(seed)
    tastes = _Tastes.draw(rng, n_users, n_items, n_clusters, popularity_exponent)
    target = _targets(rng, n_users, n_items, n_interactions)
    rows = _interactions(rng, tastes, target, affinity, ratings, timestamps, chunk_size, progress)
    user_features, item_features = _features(rng, tastes) if features else (None, None)
    # Rows are sorted by (user, item) without repeats already: build the dataset directly.
    return Dataset(
        users=IdMap(np.arange(n_users, dtype=np.int64)),
        items=IdMap(np.arange(n_items, dtype=np.int64)),
        user_index=rows.user_index,
        item_index=rows.item_index,
        rating=rows.rating,
        timestamp=rows.timestamp,
        user_features=user_features,
        item_features=item_features,
        name=f"synthetic-{n_users}x{n_items}",
    )


def _checked_count(
    n_users: int,
    n_items: int,
    n_interactions: int | None,
    density: float | None,
    n_clusters: int,
    affinity: float,
    popularity_exponent: float,
) -> int:
    """The number of interactions to make, every argument checked."""
    if density is not None:
        if n_interactions is not None:
            raise InvalidInputError("give n_interactions or density, not both")
        _check("density", density, 0.0, 0.25)
        n_interactions = max(round(density * n_users * n_items), 1)
    elif n_interactions is None:
        n_interactions = 20_000
    _check("n_users", n_users, 1)
    _check("n_items", n_items, 1)
    _check("n_interactions", n_interactions, 1)
    _check("n_clusters", n_clusters, 1, min(n_items, n_users))
    _check("affinity", affinity, 0.0, 1.0)
    _check("popularity_exponent", popularity_exponent, 0.0)
    return n_interactions


@dataclass
class _Tastes:
    """The hidden truth: each user's and item's taste cluster, item quality, and the items laid
    out cluster by cluster so that drawing one takes a single ``searchsorted``."""

    user_cluster: np.ndarray
    item_cluster: np.ndarray
    quality: np.ndarray
    by_cluster: np.ndarray  # item indices, cluster by cluster
    cum: np.ndarray  # cumulative popularity in that order
    lo: np.ndarray  # each cluster's slice of ``cum``
    hi: np.ndarray

    @classmethod
    def draw(
        cls,
        rng: np.random.Generator,
        n_users: int,
        n_items: int,
        n_clusters: int,
        popularity_exponent: float,
    ) -> _Tastes:
        """Draw the clusters, popularity and quality (in this order: a seed's datasets must
        not change)."""
        item_cluster = rng.integers(0, n_clusters, n_items).astype(np.int32)
        item_cluster[:n_clusters] = np.arange(n_clusters)  # no empty cluster
        user_cluster = rng.integers(0, n_clusters, n_users).astype(np.int32)
        popularity = (1.0 + rng.permutation(n_items)) ** -popularity_exponent
        quality = rng.normal(0.0, 0.5, n_items)
        # A draw from cluster c is a uniform number in that cluster's slice of the cumulative
        # popularity, mapped back with one searchsorted.
        by_cluster = np.argsort(item_cluster, kind="stable")
        cum = np.cumsum(popularity[by_cluster])
        bounds = np.searchsorted(item_cluster[by_cluster], np.arange(n_clusters + 1))
        lo = np.where(bounds[:-1] > 0, cum[np.maximum(bounds[:-1] - 1, 0)], 0.0)
        hi = cum[bounds[1:] - 1]
        return cls(user_cluster, item_cluster, quality, by_cluster, cum, lo, hi)

    def items_for(self, rng: np.random.Generator, users: np.ndarray, affinity: float) -> np.ndarray:
        """One item per user: of the user's cluster with probability ``affinity``, else any,
        by popularity."""
        clusters = self.user_cluster[users]
        affine = rng.random(len(users)) < affinity
        draw_lo = np.where(affine, self.lo[clusters], 0.0)
        draw_hi = np.where(affine, self.hi[clusters], self.cum[-1])
        u = draw_lo + rng.random(len(users)) * (draw_hi - draw_lo)
        n_items = len(self.item_cluster)
        return self.by_cluster[np.minimum(np.searchsorted(self.cum, u, side="right"), n_items - 1)]


def _targets(
    rng: np.random.Generator, n_users: int, n_items: int, n_interactions: int
) -> np.ndarray:
    """Distinct items per user: a log-normal share of ``n_interactions``, at most a quarter of
    the catalog (so the per-user draws can find that many distinct items)."""
    activity = rng.lognormal(0.0, 1.0, n_users)
    cap = max(n_items // 4, 1)
    target = np.minimum(rng.multinomial(n_interactions, activity / activity.sum()), cap)
    for _ in range(20):  # hand what capped users could not take to the others
        room = cap - target
        surplus = n_interactions - int(target.sum())
        if surplus <= 0 or not room.any():
            break
        share = activity * (room > 0)
        target += np.minimum(rng.multinomial(surplus, share / share.sum()), room)
    return target


@dataclass
class _Rows:
    """The interaction columns, sorted by (user, item)."""

    user_index: np.ndarray
    item_index: np.ndarray
    rating: np.ndarray | None
    timestamp: np.ndarray | None


def _interactions(
    rng: np.random.Generator,
    tastes: _Tastes,
    target: np.ndarray,
    affinity: float,
    ratings: bool,
    timestamps: bool,
    chunk_size: int,
    progress: bool | None,
) -> _Rows:
    """The interaction rows, sorted by (user, item), made in chunks of whole users -- so each
    chunk comes out sorted and free of repeats on its own -- written straight into the final
    arrays."""
    n_users, n_items = len(tastes.user_cluster), len(tastes.item_cluster)
    ends = np.cumsum(target)
    total_target = int(ends[-1])
    user_index = np.empty(total_target, dtype=np.int32)
    item_index = np.empty(total_target, dtype=np.int32)
    rating = np.empty(total_target, dtype=np.float32) if ratings else None
    stamp = np.empty(total_target, dtype=np.float64) if timestamps else None
    filled = 0
    first = 0
    bar = tqdm(
        total=total_target,
        unit="rows",
        unit_scale=True,
        desc="synthetic",
        disable=(None if total_target > 2_000_000 else True) if progress is None else not progress,
    )
    while first < n_users:
        last = int(np.searchsorted(ends, ends[first] - target[first] + chunk_size, "right"))
        last = max(last, first + 1)
        want = target[first:last]
        keys = _chunk_keys(rng, tastes, affinity, first, want)
        chunk_users = (keys // n_items).astype(np.int32)
        items = (keys % n_items).astype(np.int32)
        m = len(keys)
        user_index[filled : filled + m] = chunk_users
        item_index[filled : filled + m] = items
        if rating is not None:
            same = tastes.item_cluster[items] == tastes.user_cluster[chunk_users]
            raw = 2.6 + 1.4 * same + tastes.quality[items] + rng.normal(0.0, 0.7, m)
            rating[filled : filled + m] = np.clip(np.rint(raw), 1, 5)
        if stamp is not None:
            stamp[filled : filled + m] = _START + np.floor(rng.random(m) * _YEAR)
        filled += m
        first = last
        bar.update(int(want.sum()))
    bar.close()

    def trim(arr: np.ndarray | None) -> np.ndarray | None:
        return None if arr is None else arr[:filled]  # a view: no second copy

    return _Rows(user_index[:filled], item_index[:filled], trim(rating), trim(stamp))


def _chunk_keys(
    rng: np.random.Generator, tastes: _Tastes, affinity: float, first: int, want: np.ndarray
) -> np.ndarray:
    """``user * n_items + item`` keys, sorted and distinct, of ``want[u]`` items for each user
    ``first + u`` (up to 8 rounds of draws; a user whose draws keep repeating gets fewer)."""
    n_items = len(tastes.item_cluster)
    last = first + len(want)
    keys = np.zeros(0, dtype=np.int64)
    need = want
    for _ in range(8):  # top up users whose draws repeated an item
        users = np.repeat(np.arange(first, last, dtype=np.int64), need)
        keys = np.concatenate([keys, users * n_items + tastes.items_for(rng, users, affinity)])
        keys.sort()
        keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
        have = np.bincount(keys // n_items - first, minlength=last - first)
        need = want - have
        if not need.any():
            break
        if (need < 0).any():  # drop surplus items of users who got more than asked
            rank = np.arange(len(keys)) - np.repeat(np.cumsum(have) - have, have)
            keys = keys[rank < np.repeat(want, have)]
            need = np.maximum(need, 0)
    return keys


def _features(rng: np.random.Generator, tastes: _Tastes) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The user (age, gender, country, cluster) and item (category, price, year, cluster)
    tables."""
    user_cluster, item_cluster = tastes.user_cluster, tastes.item_cluster
    n_users, n_items = len(user_cluster), len(item_cluster)
    countries = np.array(["US", "GB", "DE", "FR", "BR", "IN", "JP", "SE"], dtype=object)
    user_features = pd.DataFrame(
        {
            "age": rng.integers(16, 70, n_users),
            "gender": rng.choice(np.array(["F", "M", "X"], dtype=object), n_users),
            "country": countries[(user_cluster + rng.integers(0, 2, n_users)) % 8],
            "cluster": user_cluster,
        },
        index=pd.Index(np.arange(n_users, dtype=np.int64), name="user"),
    )
    item_features = pd.DataFrame(
        {
            "category": np.char.add("category_", item_cluster.astype(str)).astype(object),
            "price": np.round(rng.lognormal(2.5, 0.6, n_items), 2),
            "year": rng.integers(1960, 2026, n_items),
            "cluster": item_cluster,
        },
        index=pd.Index(np.arange(n_items, dtype=np.int64), name="item"),
    )
    return user_features, item_features
