"""The live state a pipeline reads besides the model: popularity, the newest items, the
catalogue's rows, what users like a cold user liked, and the time. The service hands in its
own (counted from events as they arrive, read from the database); the lab builds
:class:`OfflineState` from a split's training data, as of the split."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Container, Iterable, Mapping
from typing import Any, Protocol

import numpy as np
import pandas as pd

from tastebud.data.dataset import Dataset
from tastebud.errors import InvalidInputError
from tastebud.models.content import UserMetadata
from tastebud.pipeline.config import SECONDS_PER_DAY, EventRules, PipelineSettings
from tastebud.pipeline.filters import categories
from tastebud.rules import json_problem

#: Demographic answers kept per :class:`Demographics` (distinct attributes and ``n``).
DEMOGRAPHIC_ANSWERS = 4096


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


class Demographics:
    """What users like a cold user liked: a :class:`~tastebud.models.content.UserMetadata`
    model (``user-metadata``, without shrinkage to popularity: the pipeline blends in its
    own) fitted on users' positive events and their attributes, which scores a user known
    only by attributes: the share of their most similar users who liked each item.
    Attributes are any stored JSON: text (case-folded) and finite numbers count, lists of
    text as ``|`` bags; null, booleans, objects and attributes that are not an object are
    ignored."""

    def __init__(self, model: UserMetadata | None) -> None:
        self.model = model
        # answers by (attributes as the model reads them, n), least recently used first:
        # one answer scores every user who has attributes (a million users: tens of ms),
        # and cold users share a few thousand attribute combinations; the model never
        # changes (a relearning makes a new Demographics), so a kept answer stays right
        self._answers: OrderedDict[tuple[Any, ...], tuple[tuple[str, float], ...]] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def empty(cls) -> Demographics:
        return cls(None)

    @classmethod
    def learn(cls, positive: pd.DataFrame, attributes: Mapping[str, Any]) -> Demographics:
        """From positive events (``user``, ``item``) and users' attributes by user id; empty
        when no user with a positive event has an attribute the model can compare."""
        table = attribute_table(attributes)
        if not len(positive) or table.shape[1] == 0:
            return cls.empty()
        pairs = positive[["user", "item"]].astype(str).drop_duplicates()
        try:
            data = Dataset.from_frame(pairs, users=table, name="demographics")
            # every attribute counts, however many distinct values it has; no shrinkage to
            # popularity: the pipeline has its own popularity generator
            model = UserMetadata(columns=tuple(table.columns), shrinkage=0.0).fit(data)
        except InvalidInputError:  # no usable attribute (free text only, say)
            return cls.empty()
        model.warm_up()  # here, where it is learned, not in a request
        return cls(model)

    def top(self, attributes: Any, n: int) -> list[tuple[str, float]]:
        """The ``n`` items liked most by users like these attributes (none when nothing in
        them matches what the model learned)."""
        model = self.model
        if model is None or n <= 0:
            return []
        table = attribute_table({"": attributes})
        if table.shape[1] == 0:
            return []
        key = (n, *sorted(table.iloc[0].dropna().items()))
        with self._lock:
            kept = self._answers.get(key)
            if kept is not None:
                self._answers.move_to_end(key)
                return list(kept)
        # without shrinkage, attributes that match nobody score every item 0: none is kept
        idx, val = model.liked_by_similar(table, n)
        ids = model.items_.to_ids(idx)
        found = tuple((str(i), float(v)) for i, v in zip(ids, val.tolist(), strict=True))
        with self._lock:
            self._answers[key] = found
            while len(self._answers) > DEMOGRAPHIC_ANSWERS:
                self._answers.popitem(last=False)
        return list(found)


def attribute_table(attributes: Mapping[str, Any]) -> pd.DataFrame:
    """Users' stored attributes (user id → JSON object) as a user feature table: text
    case-folded, finite numbers, lists of text joined with ``|``; every other value and
    every attribute that is not an object left out."""
    rows: dict[str, dict[str, Any]] = {}
    for user, attrs in attributes.items():
        if not isinstance(attrs, Mapping):
            continue
        row: dict[str, Any] = {}
        for name, value in attrs.items():
            cell = _cell(value)
            if cell is not None and isinstance(name, str):
                row[name] = cell
        rows[str(user)] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    return table.dropna(axis=1, how="all")


def _cell(value: Any) -> str | float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value) if json_problem(value) is None else None
    if isinstance(value, str):
        return value.strip().casefold() or None
    if isinstance(value, list | tuple):
        words = [v.strip().casefold() for v in value if isinstance(v, str) and v.strip()]
        return "|".join(w.replace("|", " ") for w in words) or None
    return None


def _plain(value: Any) -> Any:
    """A feature-table cell as a JSON-like value (numpy scalars made plain; missing: None)."""
    if value is pd.NA or value is pd.NaT:
        return None
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
    rows = table.to_dict("records")
    return {str(key): _attributes(row) for key, row in zip(table.index, rows, strict=True)}


def _attributes(row: Mapping[Any, Any]) -> dict[str, Any]:
    attrs = {str(k): _plain(v) for k, v in row.items()}
    return {k: v for k, v in attrs.items() if v is not None}


class OfflineState:
    """The live state of a split's training data, as of the split (``now``: the latest
    training timestamp, else the time it is made): popularity counts each item's positive
    interactions (by :class:`EventRules`); every item is available; attributes, a
    ``title`` and a ``created_at`` (Unix seconds; the ``new`` generator and the freshness
    boost read it) come from the item feature table; demographics from the user feature
    table. Item rows are made when first asked for, demographics at the first cold user."""

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
        self._train = train
        positive = train.values() > 0
        low = rules.dislike_below_rating
        if train.rating is not None and low is not None:  # as the service would count it
            positive &= train.rating >= low
        self._positive = positive
        raw_ids = train.items.to_ids(np.arange(train.n_items))
        self._items = [str(i) for i in raw_ids]
        counts = np.bincount(train.item_index[positive], minlength=train.n_items)
        # by count, ties to the lower id
        order = sorted(np.flatnonzero(counts).tolist(), key=lambda i: (-counts[i], self._items[i]))
        self._ranked = [(self._items[i], float(counts[i])) for i in order]
        self._position = {item: n for n, item in enumerate(self._items)}
        table = train.item_features
        table = None if table is None else table.reindex(raw_ids)  # the ids as the table has them
        self._columns = (  # plain object arrays: a row is a dict of one cell per column
            {} if table is None else {str(c): table[c].to_numpy(object) for c in table.columns}
        )
        self._rows: dict[str, dict[str, Any]] = {}
        self._cats: dict[str, frozenset[str]] = {}
        self._newest: list[tuple[str, float]] = []
        if table is not None and "created_at" in table.columns:
            created = pd.to_numeric(table["created_at"], errors="coerce").to_numpy(float)
            known = np.flatnonzero(np.isfinite(created))
            self._newest = sorted(
                ((self._items[i], float(created[i])) for i in known.tolist()),
                key=lambda pair: (-pair[1], pair[0]),
            )
        if now is None:
            stamps = train.timestamp
            now = float(stamps.max()) if stamps is not None and len(stamps) else None
        self._now = now
        self._demographics: Demographics | None = None
        self._users: dict[str, dict[str, Any]] | None = None  # user attributes, at first ask

    @property
    def demographics(self) -> Demographics:
        """What users sharing attributes liked (learned at the first ask)."""
        if self._demographics is None:
            train, positive = self._train, self._positive
            users = np.asarray([str(u) for u in train.users.to_ids(np.arange(train.n_users))])
            liked = pd.DataFrame(
                {
                    "user": users[train.user_index[positive]],
                    "item": np.asarray(self._items, dtype=object)[train.item_index[positive]],
                }
            )
            self._demographics = Demographics.learn(liked, self._user_attributes())
        return self._demographics

    def _user_attributes(self) -> dict[str, dict[str, Any]]:
        if self._users is None:
            self._users = _attribute_rows(self._train.user_features)
        return self._users

    def user_attributes(self, user: str | None) -> dict[str, Any] | None:
        """A user's attributes in the user feature table (``None``: not in it)."""
        return None if user is None else self._user_attributes().get(user)

    def _row(self, item: str) -> dict[str, Any]:
        row = self._rows.get(item)
        if row is None:
            at = self._position[item]
            attrs = _attributes({name: column[at] for name, column in self._columns.items()})
            title = attrs.pop("title", None)
            row = self._rows[item] = {
                "id": item,
                "available": True,
                "attributes": attrs,
                "title": None if title is None else str(title),
                "created_at": _number(attrs.get("created_at")),
            }
        return row

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
        position = self._position
        return {item: self._row(item) for item in ids if item in position}

    def categories(self, item: str, settings: PipelineSettings) -> frozenset[str]:
        if item not in self._position:
            return frozenset()
        if settings.category_field != self.settings.category_field:
            return categories(settings, self._row(item)["attributes"])
        found = self._cats.get(item)
        if found is None:
            found = self._cats[item] = categories(settings, self._row(item)["attributes"])
        return found

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
