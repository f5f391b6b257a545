"""Blend: a stacking ensemble whose member weights are learned on held-out training data.

Fitting carves a per-user validation holdout from the training data, fits every member on the
rest, and learns

* ranking weights w (on the simplex) that maximize NDCG@k of the blended score
  s(u, i) = Σ_m w_m · z_m(u, i), where z_m is member m's score standardized per user
  (zero mean, unit variance over the catalog) so members on different scales mix; the search
  is a grid over the simplex refined around the best point;
* rating weights by ridge regression on the members' predicted ratings and their products
  with user and item support, when every member predicts ratings (the Netflix-prize blend:
  Töscher, Jahrer & Bell 2009).

Then every member is refitted on all the training data. Members are saved in sub-folders.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from tastebud.data.dataset import Dataset
from tastebud.models._composite import Composite, row_scale, standardize
from tastebud.models._holdout import Holdout
from tastebud.models.base import top_k
from tastebud.models.registry import register


def _support(counts: np.ndarray, index: np.ndarray) -> np.ndarray:
    """How much data backs each user/item: log(1 + n) / log(1 + max n), 0 when unknown."""
    scale = np.log1p(max(int(counts.max()), 1))
    return np.where(index >= 0, np.log1p(counts[np.maximum(index, 0)]) / scale, 0.0)


def _rating_features(
    predictions: np.ndarray, user_support: np.ndarray, item_support: np.ndarray
) -> np.ndarray:
    """Blend inputs: each member's prediction, alone and times the user's and the item's
    support, plus an intercept and the supports -- so the blend can trust neighborhood
    models for well-rated items and factor models for active users (Töscher et al. 2009)."""
    su, si = user_support[:, None], item_support[:, None]
    ones = np.ones((len(predictions), 1))
    return np.hstack([predictions, predictions * su, predictions * si, ones, su, si])


#: Each member's best items per validation user that the weightings are blended over.
_POOL = 100


@dataclasses.dataclass(frozen=True)
class _Member:
    """One member's scores of a block of validation users, training items masked, and the
    per-row map to its standardized scores z = (s - mean) / std (:func:`row_scale`, taken
    before masking, as :func:`standardize` would) -- applied only to the entries the
    weight search reads, not to every item of the catalogue."""

    raw: np.ndarray
    mean: np.ndarray  # column: one per row
    std: np.ndarray

    def z(self, values: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Standardized ``values`` of ``rows`` (one row of values per row)."""
        return np.asarray((values - self.mean[rows]) / self.std[rows])


def _blended_tops(members: list[_Member], grid: np.ndarray, k: int) -> list[np.ndarray]:
    """``top_k(Σ_m w_m · z_m, k)`` indices for every weighting ``w`` of ``grid`` (members
    with weight 0 left out), computed over the union of each member's :data:`_POOL` best
    items per row instead of the whole catalogue.

    Exact: an item outside member m's pool scores at most m's pool-th best there, so no
    item outside the union beats ``Σ_m w_m · (m's pool-th best)``; a row whose blended
    k-th best in the union does not stay above that bound (or with fewer than k items in
    the union) is blended over every item. A member's pool is its top of the raw scores,
    the same items as of z (an increasing map of each row)."""
    n_rows, n_items = members[0].raw.shape
    pool = min(_POOL, n_items)
    everyone = np.arange(n_rows)
    if pool * len(members) >= n_items:  # small catalogues: the union is most of it
        return [_blend_all(members, w, k, everyone) for w in grid]
    picks, floors = [], []
    for member in members:
        idx, val = top_k(member.raw, pool)
        picks.append(idx)
        floor = member.z(val[:, -1:], everyone)[:, 0]  # NaN: fewer valid items than pool
        floors.append(np.where(np.isnan(floor), -np.inf, floor))
    union = np.sort(np.hstack(picks), axis=1)  # ascending: ties go to the lower item as before
    repeated = np.zeros(union.shape, dtype=bool)
    repeated[:, 1:] = union[:, 1:] == union[:, :-1]
    repeated |= union < 0
    columns = np.where(repeated, 0, union)
    rows = everyone[:, None]
    gathered = [
        np.where(repeated, -np.inf, member.z(member.raw[rows, columns], everyone))
        for member in members
    ]
    tops = []
    for w in grid:
        used = [m for m, weight in enumerate(w) if weight > 0]
        blended = np.zeros(union.shape)
        bound = np.zeros(n_rows)
        for m in used:
            blended += w[m] * gathered[m]
            bound += w[m] * floors[m]
        pos, val = top_k(blended, k)
        found = np.where(pos >= 0, union[rows, np.maximum(pos, 0)], -1)
        kth = np.where(np.isnan(val[:, -1]), -np.inf, val[:, -1])
        exact = (bound == -np.inf) | (kth > bound)
        redo = np.flatnonzero(~exact)
        if len(redo):
            found[redo] = _blend_all(members, w, k, redo)
        tops.append(found)
    return tops


def _blend_all(members: list[_Member], w: np.ndarray, k: int, rows: np.ndarray) -> np.ndarray:
    blended = np.zeros((len(rows), members[0].raw.shape[1]))
    for weight, member in zip(w, members, strict=True):
        if weight > 0:
            blended += weight * member.z(member.raw[rows], rows)
    return top_k(blended, k)[0]


def _simplex_grid(n: int, steps: int) -> np.ndarray:
    points = [c for c in itertools.product(range(steps + 1), repeat=n) if sum(c) == steps]
    return np.asarray(points, dtype=np.float64) / steps


@register("blend")
@dataclasses.dataclass(kw_only=True, eq=False)
class Blend(Composite):
    """Stacking ensemble of registered models.

    Parameters
    ----------
    members:
        Registered model names, optionally with parameters: ``"ease"`` or
        ``"item-knn:k=100"`` (the CLI's ``name:key=value,...`` form).
    validation_size:
        Share of each user's training interactions held out to learn the weights.
    k:
        List length whose NDCG the ranking weights maximize.
    relevance_threshold:
        Held-out ratings at least this count as relevant when learning ranking weights
        (default: every held-out interaction).
    random_state:
        Seed of the validation holdout.
    """

    members: tuple[str, ...] = ("ease", "item-knn", "als")
    validation_size: float = 0.2
    k: int = 10
    relevance_threshold: float | None = None
    random_state: int = 0

    def __post_init__(self) -> None:
        self.members = tuple(self.members)  # JSON round trips give lists

    def _validate(self) -> None:
        super()._validate()
        self._check(len(self.members) >= 1, "needs at least one member")
        self._check(0 < self.validation_size < 1, "validation_size must be in (0, 1)")
        self._check(self.k >= 1, "k must be >= 1")

    def _member_specs(self) -> list[str]:
        return list(self.members)

    def _fit(self, dataset: Dataset) -> None:
        models = self._make_members()
        holdout = Holdout.carve(
            dataset, self.validation_size, self.random_state, self.relevance_threshold, who="Blend"
        )
        inner, held = holdout.train, holdout.held
        for model in models:
            model.fit(inner)
        grid = _simplex_grid(len(models), 10 if len(models) <= 3 else 5)
        tops: list[list[np.ndarray]] = [[] for _ in grid]  # per weighting, per user block
        for users in holdout.blocks():  # bounded blocks: never users x items at once
            members = []
            for m in models:
                raw = m._score_block(users, None)
                mean, std = row_scale(raw)
                members.append(_Member(holdout.masked(raw, users), mean, std))
            for at, top in enumerate(_blended_tops(members, grid, self.k)):
                tops[at].append(top)
        best_w, best = grid[0], -1.0
        for w, found in zip(grid, tops, strict=True):
            score = holdout.ndcg(np.vstack(found), self.k)
            if score > best + 1e-12:
                best_w, best = w, score
        self.weights_ = best_w
        self.validation_ndcg_ = best
        if all(m.predicts_ratings for m in models) and dataset.has_ratings:
            u = inner.users.to_index(held["user"].to_numpy(), on_unknown="ignore")
            i = inner.items.to_index(held["item"].to_numpy(), on_unknown="ignore")
            features = _rating_features(
                np.column_stack([m._predict(u, i) for m in models]),
                _support(inner.user_activity(), u),
                _support(inner.item_popularity(), i),
            )
            target = held["rating"].to_numpy(dtype=float)
            ridge = 1e-3 * len(target) * np.eye(features.shape[1])
            self.rating_weights_ = np.linalg.solve(
                features.T @ features + ridge, features.T @ target
            )
            self.rating_range_ = [float(dataset.rating.min()), float(dataset.rating.max())]  # type: ignore[union-attr]
        for model in models:
            model.fit(dataset)
        self._members = models
        self.user_counts_ = dataset.user_activity()
        self.item_counts_ = dataset.item_popularity()

    @property
    def predicts_ratings(self) -> bool:  # type: ignore[override]
        return hasattr(self, "rating_weights_")

    def _blend(self, blocks: list[np.ndarray]) -> np.ndarray:
        total = np.zeros_like(blocks[0])
        for weight, block in zip(self.weights_, blocks, strict=True):
            if weight > 0:
                total += weight * standardize(block)
        return total

    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        full = self._blend([m._score_block(users, None) for m in self._members])
        return full if items is None else full[:, items]

    def _fallback_scores(self, n_rows: int, items: np.ndarray | None) -> np.ndarray:
        unknown = np.full(n_rows, -1, dtype=np.int64)
        full = self._blend([m._score_block(unknown, None) for m in self._members])
        return full if items is None else full[:, items]

    def _predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        features = _rating_features(
            np.column_stack([m._predict(users, items) for m in self._members]),
            _support(self.user_counts_, users),
            _support(self.item_counts_, items),
        )
        low, high = self.rating_range_
        return np.clip(features @ self.rating_weights_, low, high)
