"""The live state a pipeline reads besides the model: popularity, the newest items, the
catalogue's rows, what users like a cold user liked, and the time. The service hands in its
own (counted from events as they arrive, read from the database); the lab builds
:class:`OfflineState` from a split's training data, as of the split."""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from collections.abc import Container, Iterable, Mapping
from typing import Any, Protocol

import numpy as np
import pandas as pd

from tastebud.data.dataset import Dataset
from tastebud.pipeline.config import SECONDS_PER_DAY, EventRules, PipelineSettings
from tastebud.pipeline.filters import categories
from tastebud.service.rules import json_problem


class LiveState(Protocol):
    """What the pipeline reads besides the model."""

    def popular(
        self, n: int, skip: Container[str] = (), *, current: bool = True
    ) -> list[tuple[str, float]]:
        """The ``n`` most popular items (id, positive events), ties to the lower id, none
        in ``skip``; ``current``: count the latest events first where that costs more."""
        ...

    def new_items(self, n: int, days: float) -> list[tuple[str, float]]:
        """The ``n`` newest available items created in the last ``days`` (id, created_at)."""
        ...

    def rows(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The catalogue rows of the known items among ``ids``: ``available``,
        ``attributes``, ``created_at``, ``title``."""
        ...

    def categories(self, item: str, settings: PipelineSettings) -> frozenset[str]:
        """An item's categories under ``settings``."""
        ...

    def demographic(self, attributes: Mapping[str, Any], n: int) -> list[tuple[str, float]]:
        """The ``n`` items users with these attributes liked most."""
        ...

    def now(self) -> float:
        """The time lists are made at (Unix seconds)."""
        ...


@dataclasses.dataclass(frozen=True)
class Demographics:
    """What users sharing an attribute value liked: for each (attribute, value) -- text
    values as they are, numbers by decade (age 34 → "30s") -- the share of those users with
    a positive event on each item. A cold user's score of an item is the sum of those shares
    over their attributes."""

    shares: dict[tuple[str, str], dict[str, float]]

    @classmethod
    def empty(cls) -> Demographics:
        return cls({})

    @staticmethod
    def keys(attributes: Any) -> list[tuple[str, str]]:
        """The (attribute, value) groups of a user's attributes: any stored JSON, of which
        text and numbers count (integers within 64 bits, finite floats) and the rest --
        null, booleans, lists, objects, attributes that are not an object -- is ignored."""
        if not isinstance(attributes, Mapping):
            return []
        out = []
        for name, value in attributes.items():
            if isinstance(value, bool) or value is None or not isinstance(name, str):
                continue
            if isinstance(value, int | float):
                if json_problem(value) is None:
                    out.append((name, f"{int(value // 10 * 10)}s"))
            elif isinstance(value, str) and value.strip():
                out.append((name, value.strip().casefold()))
        return out

    @classmethod
    def learn(cls, positive: pd.DataFrame, attributes: Mapping[str, Any]) -> Demographics:
        """From positive events (``user``, ``item``) and users' attributes."""
        if not len(positive) or not attributes:
            return cls.empty()
        pairs = positive[["user", "item"]].astype(str).drop_duplicates()
        liked = pairs.groupby("user")["item"].agg(list).to_dict()
        groups: dict[tuple[str, str], list[str]] = {}
        for user, attrs in attributes.items():
            for key in cls.keys(attrs):
                groups.setdefault(key, []).append(user)
        shares: dict[tuple[str, str], dict[str, float]] = {}
        for key, users in groups.items():
            counts = Counter(item for u in users for item in liked.get(u, ()))
            if counts:
                n = len(users)
                shares[key] = {item: c / n for item, c in counts.most_common(500)}
        return cls(shares)

    def top(self, attributes: Any, n: int) -> list[tuple[str, float]]:
        """The ``n`` items liked most by users like these attributes."""
        total: dict[str, float] = {}
        for key in self.keys(attributes):
            for item, share in self.shares.get(key, {}).items():
                total[item] = total.get(item, 0.0) + share
        ranked = sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))
        return [(item, float(score)) for item, score in ranked[:n]]


def _plain(value: Any) -> Any:
    """A feature-table cell as a JSON-like value (numpy scalars made plain; missing: None)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list | tuple | np.ndarray):
        return [_plain(v) for v in value]
    return value


def _attribute_rows(table: pd.DataFrame | None) -> dict[str, dict[str, Any]]:
    """Feature-table rows as attribute dicts by text id (missing values left out)."""
    if table is None:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for key, row in zip(table.index, table.to_dict("records"), strict=True):
        attrs = {str(k): _plain(v) for k, v in row.items()}
        out[str(key)] = {k: v for k, v in attrs.items() if v is not None}
    return out


class OfflineState:
    """The live state of a split's training data, as of the split (``now``: the latest
    training timestamp, else the time it is made): popularity counts each item's positive
    interactions (by :class:`EventRules`); every item is available; attributes, a
    ``title`` and a ``created_at`` (Unix seconds; the ``new`` generator and the freshness
    boost read it) come from the item feature table; demographics from the user feature
    table."""

    def __init__(
        self,
        train: Dataset,
        settings: PipelineSettings | None = None,
        *,
        rules: EventRules | None = None,
        now: float | None = None,
    ) -> None:
        rules = EventRules() if rules is None else rules
        self.settings = PipelineSettings() if settings is None else settings
        values = train.values().astype(np.float64)
        positive = values > 0
        low = rules.dislike_below_rating
        if train.rating is not None and low is not None:  # as the service would count it
            positive &= train.rating >= low
        items = np.asarray([str(i) for i in train.items.to_ids(np.arange(train.n_items))])
        counts = np.bincount(train.item_index[positive], minlength=train.n_items)
        by_id = sorted((items[i], float(c)) for i, c in enumerate(counts.tolist()) if c > 0)
        by_id.sort(key=lambda pair: pair[1], reverse=True)  # stable: ties stay in id order
        self._ranked = by_id
        attributes = _attribute_rows(train.item_features)
        self._rows: dict[str, dict[str, Any]] = {}
        for item in items.tolist():
            attrs = dict(attributes.get(item, {}))
            title = attrs.pop("title", None)
            created = _number(attrs.get("created_at"))
            self._rows[item] = {
                "id": item,
                "available": True,
                "attributes": attrs,
                "title": None if title is None else str(title),
                "created_at": created,
            }
        self._cats = {i: categories(self.settings, r["attributes"]) for i, r in self._rows.items()}
        self._newest = sorted(
            ((i, r["created_at"]) for i, r in self._rows.items() if r["created_at"] is not None),
            key=lambda pair: (-pair[1], pair[0]),
        )
        if now is None:
            stamps = train.timestamp
            now = float(stamps.max()) if stamps is not None and len(stamps) else None
        self._now = now
        users = [str(u) for u in train.users.to_ids(np.arange(train.n_users))]
        liked = pd.DataFrame(
            {
                "user": np.asarray(users, dtype=object)[train.user_index[positive]],
                "item": items[train.item_index[positive]],
            }
        )
        self.demographics = Demographics.learn(liked, _attribute_rows(train.user_features))

    def popular(
        self, n: int, skip: Container[str] = (), *, current: bool = True
    ) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        for pair in self._ranked:
            if pair[0] not in skip:
                out.append(pair)
                if len(out) == n:
                    break
        return out

    def new_items(self, n: int, days: float) -> list[tuple[str, float]]:
        since = self.now() - days * SECONDS_PER_DAY
        return [p for p in self._newest if since <= p[1] <= self.now()][:n]

    def rows(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        rows = self._rows
        return {item: rows[item] for item in ids if item in rows}

    def categories(self, item: str, settings: PipelineSettings) -> frozenset[str]:
        if settings.category_field == self.settings.category_field:
            return self._cats.get(item, frozenset())
        row = self._rows.get(item)
        return categories(settings, row["attributes"] if row else {})

    def demographic(self, attributes: Mapping[str, Any], n: int) -> list[tuple[str, float]]:
        return self.demographics.top(attributes, n)

    def now(self) -> float:
        if self._now is None:
            self._now = time.time()
        return self._now


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None
