"""The :class:`Dataset`: interactions between users and items, plus optional feature tables.

Interactions are stored once, as parallel numpy arrays of internal indices sorted by
``(user, item)``, so the CSR user x item matrix and every user's history are views of the same
memory. External ids are kept in two :class:`~tastebud.data.idmap.IdMap` objects.

Repeated (user, item) events
----------------------------
A dataset holds at most one interaction per (user, item) pair. Repeats are folded by the
``duplicates`` policy when the dataset is built:

``"last"``  (default when there is a rating) keep the latest event (by timestamp, then by input
            order) -- a re-rating replaces the old rating;
``"sum"``   (default otherwise) add the weights (play counts, clicks), keep the latest timestamp;
``"max"``   keep the largest value and the latest timestamp;
``"first"`` keep the earliest event;
``"error"`` refuse repeats with a :class:`~tastebud.errors.DataError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tastebud.data import columns as C
from tastebud.data.idmap import IdMap
from tastebud.data.validate import OnBadRows, clean_interactions, normalize_ids
from tastebud.errors import DataError, InvalidInputError

Duplicates = Literal["last", "sum", "max", "first", "error"]
MatrixValue = Literal["auto", "rating", "weight", "binary"]


def _group_starts(keys: np.ndarray) -> np.ndarray:
    """Start positions of runs of equal values in a sorted array."""
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))


def fold_duplicates(
    user: np.ndarray,
    item: np.ndarray,
    n_items: int,
    *,
    rating: np.ndarray | None,
    weight: np.ndarray | None,
    timestamp: np.ndarray | None,
    duplicates: Duplicates,
    line: np.ndarray | None = None,
    source: str = "data",
) -> tuple[np.ndarray, dict[str, np.ndarray | None]]:
    """Sort interactions by (user, item) and fold repeated pairs by the ``duplicates`` policy.

    Returns the selected/sorted positions (for ids) and the folded value columns.
    """
    key = user.astype(np.int64) * np.int64(n_items) + item.astype(np.int64)
    # Sort by key, then time (so the last of a run is the latest event), then input order.
    order = (
        np.lexsort((timestamp, key)) if timestamp is not None else np.argsort(key, kind="stable")
    )
    key_sorted = key[order]
    starts = _group_starts(key_sorted)
    values: dict[str, np.ndarray | None] = {
        "rating": None if rating is None else rating[order],
        "weight": None if weight is None else weight[order],
        "timestamp": None if timestamp is None else timestamp[order],
    }
    if len(starts) == len(key):
        return order, values
    if duplicates == "error":
        run = np.flatnonzero(np.diff(np.append(starts, len(key))) > 1)[0]
        a, b = order[starts[run]], order[starts[run] + 1]
        where = f"lines {line[a]} and {line[b]}" if line is not None else f"rows {a} and {b}"
        raise DataError(
            f"repeated (user, item) pair at {where}; choose duplicates='last', 'sum', 'max' "
            "or 'first'",
            source=source,
        )
    if duplicates not in ("last", "first", "sum", "max"):
        raise InvalidInputError(
            f"duplicates must be 'last', 'sum', 'max', 'first' or 'error', got {duplicates!r}"
        )
    run_length = np.diff(np.append(starts, len(key)))
    pick = starts if duplicates == "first" else starts + run_length - 1
    folded = {k: (None if v is None else v[pick]) for k, v in values.items()}
    if duplicates in ("sum", "max"):
        reduce = np.add if duplicates == "sum" else np.maximum
        # Ratings are not additive: under "sum" a re-rating keeps the latest rating.
        names = ("weight",) if duplicates == "sum" else ("rating", "weight")
        for name in names:
            col = values[name]
            if col is not None:
                folded[name] = reduce.reduceat(col, starts)
        if values["timestamp"] is not None:
            folded["timestamp"] = np.maximum.reduceat(values["timestamp"], starts)
        if duplicates == "sum" and values["weight"] is None and values["rating"] is None:
            folded["weight"] = run_length.astype(np.float32)  # repeated clicks count
    return order[pick], folded


def _feature_table(
    table: pd.DataFrame | None, key: str, ids: IdMap, what: str
) -> tuple[pd.DataFrame | None, IdMap]:
    """Index a feature table by external id and extend the IdMap with ids only it knows."""
    if table is None:
        return None, ids
    if not isinstance(table, pd.DataFrame):
        raise InvalidInputError(f"{what} features must be a pandas DataFrame")
    if key in table.columns:
        table = table.set_index(key)
    elif isinstance(table.index, pd.RangeIndex) and table.index.name != key:
        raise DataError(
            f"the {what} feature table has no '{key}' column to match ids on; name the id "
            f"column '{key}' or index the table by id",
            column=key,
        )
    index_ids = normalize_ids(table.index.to_series(), column=key)
    if pd.Index(index_ids).hasnans or len(index_ids) != len(set(index_ids.tolist())):
        raise DataError(f"{what} feature table has missing or repeated ids", column=key)
    table = table.set_axis(pd.Index(index_ids, name=key), axis=0)
    if (
        len(ids)
        and len(index_ids)
        and not (ids.to_index(index_ids, on_unknown="ignore") >= 0).any()
    ):
        raise DataError(
            f"no id of the {what} feature table appears in the interactions (ids like "
            f"{index_ids[0]!r} vs {ids.ids[0]!r}); check the key column",
            column=key,
        )
    ids = ids.extend(index_ids)
    return table.reindex(ids.index), ids


@dataclass(frozen=True, eq=False)
class Dataset:
    """Users, items and the interactions between them.

    Build one with :meth:`from_frame` (or a loader in :mod:`tastebud.data`); the constructor
    takes already validated internal arrays.

    Attributes
    ----------
    users, items:
        Id maps; they may hold users/items without interactions (e.g. from feature tables or
        a cold-start split), which models then know but have no history for.
    user_index, item_index:
        Internal indices (int32) of each interaction, sorted by (user, item).
    rating:
        Explicit rating per interaction (float32) or ``None``.
    weight:
        Implicit strength per interaction (play count, clicks...; float32) or ``None``.
    timestamp:
        Unix seconds per interaction (float64) or ``None``.
    user_features, item_features:
        Optional tables indexed by external id, rows aligned with ``users`` / ``items``.
    skipped:
        Counts of rows skipped by reason when loaded with ``on_bad_rows="skip"``.
    name:
        A label used in reports.
    """

    users: IdMap
    items: IdMap
    user_index: np.ndarray
    item_index: np.ndarray
    rating: np.ndarray | None = None
    weight: np.ndarray | None = None
    timestamp: np.ndarray | None = None
    user_features: pd.DataFrame | None = None
    item_features: pd.DataFrame | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    name: str = "dataset"

    def __post_init__(self) -> None:
        n = len(self.user_index)
        for label, arr in (
            ("item_index", self.item_index),
            ("rating", self.rating),
            ("weight", self.weight),
            ("timestamp", self.timestamp),
        ):
            if arr is not None and len(arr) != n:
                raise InvalidInputError(f"{label} has {len(arr)} entries, user_index has {n}")

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        *,
        user: str = C.USER,
        item: str = C.ITEM,
        rating: str | None = None,
        weight: str | None = None,
        timestamp: str | None = None,
        users: pd.DataFrame | None = None,
        items: pd.DataFrame | None = None,
        duplicates: Duplicates | None = None,
        on_bad_rows: OnBadRows = "raise",
        rating_range: tuple[float, float] | None = None,
        name: str = "dataset",
        source: str = "DataFrame",
        line_numbers: np.ndarray | None = None,
    ) -> Dataset:
        """Build a dataset from a table of interactions -- the one documented way in.

        Parameters
        ----------
        df:
            One row per event (user, item, optional rating/weight/timestamp).
        user, item:
            Names of the id columns (ids may be ints, strings or any hashable).
        rating:
            Column of explicit ratings (e.g. 1-5 stars), if any.
        weight:
            Column of implicit strengths (play counts, clicks, dwell time), if any.
        timestamp:
            Column of event times: unix seconds, datetimes or date/time text.
        users, items:
            Optional feature tables, keyed by a column named like ``user``/``item`` or by
            their index. Ids that appear only there are added (cold users/items).
        duplicates:
            Policy for repeated (user, item) events (module docstring); default ``"last"``
            with ratings, ``"sum"`` otherwise.
        on_bad_rows:
            ``"raise"`` or ``"skip"`` (skipped rows are counted in ``dataset.skipped``).
        rating_range:
            Inclusive bounds that ratings must lie in.
        """
        if not isinstance(df, pd.DataFrame):
            raise InvalidInputError(f"from_frame needs a pandas DataFrame, got {type(df).__name__}")
        clean = clean_interactions(
            df,
            user=user,
            item=item,
            rating=rating,
            weight=weight,
            timestamp=timestamp,
            source=source,
            line_numbers=line_numbers,
            on_bad_rows=on_bad_rows,
            rating_range=rating_range,
        )
        user_map = IdMap.from_values(clean.user)
        item_map = IdMap.from_values(clean.item)
        user_table, user_map = _feature_table(users, user, user_map, "user")
        item_table, item_map = _feature_table(items, item, item_map, "item")
        return cls.from_indices(
            user_map,
            item_map,
            user_map.to_index(clean.user),
            item_map.to_index(clean.item),
            rating=clean.rating,
            weight=clean.weight,
            timestamp=clean.timestamp,
            user_features=user_table,
            item_features=item_table,
            duplicates=duplicates,
            skipped=clean.skipped,
            name=name,
            line=clean.line,
            source=source,
        )

    @classmethod
    def from_indices(
        cls,
        users: IdMap,
        items: IdMap,
        user_index: np.ndarray,
        item_index: np.ndarray,
        *,
        rating: np.ndarray | None = None,
        weight: np.ndarray | None = None,
        timestamp: np.ndarray | None = None,
        user_features: pd.DataFrame | None = None,
        item_features: pd.DataFrame | None = None,
        duplicates: Duplicates | None = None,
        skipped: dict[str, int] | None = None,
        name: str = "dataset",
        line: np.ndarray | None = None,
        source: str = "data",
    ) -> Dataset:
        """Build from validated internal indices: sorts by (user, item) and folds repeats."""
        ui = np.asarray(user_index)
        ii = np.asarray(item_index)
        if len(ui) and (ui.min() < 0 or ui.max() >= len(users)):
            raise InvalidInputError("user_index out of range of the users IdMap")
        if len(ii) and (ii.min() < 0 or ii.max() >= len(items)):
            raise InvalidInputError("item_index out of range of the items IdMap")
        policy: Duplicates = duplicates or ("last" if rating is not None else "sum")
        if policy not in ("last", "sum", "max", "first", "error"):
            raise InvalidInputError(
                f"duplicates must be 'last', 'sum', 'max', 'first' or 'error', got {policy!r}"
            )
        order, values = fold_duplicates(
            ui,
            ii,
            len(items),
            rating=None if rating is None else np.asarray(rating, dtype=np.float32),
            weight=None if weight is None else np.asarray(weight, dtype=np.float32),
            timestamp=None if timestamp is None else np.asarray(timestamp, dtype=np.float64),
            duplicates=policy,
            line=line,
            source=source,
        )
        return cls(
            users=users,
            items=items,
            user_index=ui[order].astype(np.int32),
            item_index=ii[order].astype(np.int32),
            rating=values["rating"],
            weight=values["weight"],
            timestamp=values["timestamp"],
            user_features=user_features,
            item_features=item_features,
            skipped=skipped or {},
            name=name,
        )

    # -- basic facts -----------------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_interactions(self) -> int:
        return len(self.user_index)

    def __len__(self) -> int:
        return self.n_interactions

    @property
    def has_ratings(self) -> bool:
        return self.rating is not None

    @property
    def has_timestamps(self) -> bool:
        return self.timestamp is not None

    def __repr__(self) -> str:
        kind = "ratings" if self.has_ratings else ("weights" if self.weight is not None else "")
        extra = f", {kind}" if kind else ""
        ts = ", timestamps" if self.has_timestamps else ""
        return (
            f"Dataset({self.name!r}: {self.n_users} users, {self.n_items} items, "
            f"{self.n_interactions} interactions{extra}{ts})"
        )

    def describe(self) -> dict[str, Any]:
        """Summary counts for reports and the CLI."""
        per_user = np.bincount(self.user_index, minlength=self.n_users)
        per_item = np.bincount(self.item_index, minlength=self.n_items)
        out: dict[str, Any] = {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": self.n_interactions,
            "density": self.n_interactions / max(self.n_users * self.n_items, 1),
            "users_without_interactions": int((per_user == 0).sum()),
            "items_without_interactions": int((per_item == 0).sum()),
            "median_interactions_per_user": float(np.median(per_user)) if self.n_users else 0.0,
            "kind": "explicit" if self.has_ratings else "implicit",
            "has_timestamps": self.has_timestamps,
        }
        if self.rating is not None and len(self.rating):
            out["rating_min"] = float(self.rating.min())
            out["rating_max"] = float(self.rating.max())
            out["rating_mean"] = float(self.rating.mean())
        if self.skipped:
            out["skipped_rows"] = dict(self.skipped)
        return out

    # -- matrices and histories ------------------------------------------------------------------
    def values(self, value: MatrixValue = "auto") -> np.ndarray:
        """Per-interaction values: ``auto`` = rating, else weight, else 1."""
        if value == "auto":
            value = "rating" if self.rating is not None else "weight"
        if value == "rating":
            if self.rating is None:
                raise InvalidInputError(f"{self.name} has no ratings")
            return self.rating
        if value == "weight":
            if self.weight is not None:
                return self.weight
            return np.ones(self.n_interactions, dtype=np.float32)
        if value == "binary":
            return np.ones(self.n_interactions, dtype=np.float32)
        raise InvalidInputError(
            f"value must be 'auto', 'rating', 'weight' or 'binary', got {value!r}"
        )

    @cached_property
    def _indptr(self) -> np.ndarray:
        counts = np.bincount(self.user_index, minlength=self.n_users)
        indptr = np.zeros(self.n_users + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return indptr

    def matrix(self, value: MatrixValue = "auto") -> sp.csr_matrix:
        """The user x item CSR matrix (float32), built without copying the index arrays."""
        return sp.csr_matrix(
            (self.values(value), self.item_index, self._indptr),
            shape=(self.n_users, self.n_items),
        )

    def history(self, user: Any) -> pd.DataFrame:
        """One user's interactions with external ids, oldest first when there are timestamps."""
        u = int(self.users.to_index([user], what="user")[0])
        start, end = self._indptr[u], self._indptr[u + 1]
        frame = self._frame(slice(int(start), int(end)))
        if self.timestamp is not None:
            frame = frame.sort_values(C.TIMESTAMP, kind="stable", ignore_index=True)
        return frame

    def item_popularity(self) -> np.ndarray:
        """Number of users who interacted with each item (int64, length ``n_items``)."""
        return np.bincount(self.item_index, minlength=self.n_items)

    def user_activity(self) -> np.ndarray:
        """Number of interactions of each user (int64, length ``n_users``)."""
        return np.diff(self._indptr)

    # -- tables ----------------------------------------------------------------------------------
    def _frame(self, rows: slice | np.ndarray) -> pd.DataFrame:
        data: dict[str, Any] = {
            C.USER: self.users.to_ids(self.user_index[rows]),
            C.ITEM: self.items.to_ids(self.item_index[rows]),
        }
        for col in (C.RATING, C.WEIGHT, C.TIMESTAMP):
            arr = getattr(self, col)
            if arr is not None:
                data[col] = arr[rows]
        return pd.DataFrame(data)

    @property
    def interactions(self) -> pd.DataFrame:
        """All interactions as a table with external ids (columns from :mod:`columns`)."""
        return self._frame(slice(None))

    # -- derived datasets ------------------------------------------------------------------------
    def subset(self, mask: np.ndarray, name: str | None = None) -> Dataset:
        """The interactions where ``mask`` is true; users, items and features are kept."""
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != (self.n_interactions,):
            raise InvalidInputError("subset needs a boolean mask with one entry per interaction")

        def pick(arr: np.ndarray | None) -> np.ndarray | None:
            return None if arr is None else arr[mask]

        return replace(
            self,
            user_index=self.user_index[mask],
            item_index=self.item_index[mask],
            rating=pick(self.rating),
            weight=pick(self.weight),
            timestamp=pick(self.timestamp),
            name=name or self.name,
        )

    def to_implicit(self, threshold: float = 4.0, *, keep_weight: bool = False) -> Dataset:
        """The implicit view: interactions with ``rating >= threshold`` become positives.

        Ratings are dropped; weights are 1 unless ``keep_weight`` keeps the rating as weight.
        On a dataset without ratings this is the identity.
        """
        if self.rating is None:
            return self
        positive = self.rating >= threshold
        out = self.subset(positive, name=self.name)
        return replace(
            out,
            rating=None,
            weight=self.rating[positive].copy() if keep_weight else None,
        )
