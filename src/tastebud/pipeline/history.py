"""What a list is built from: a user's history as the pipeline reads it (:class:`History`),
made from events by the same rules in the service and in the lab."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from tastebud.data.dataset import Dataset
from tastebud.pipeline.config import EventRules


@dataclasses.dataclass(frozen=True)
class History:
    """The positive history (item → value, first-seen order), the disliked items, and the
    recent positive items, newest first. Not to be changed once made: the service caches
    it."""

    values: dict[str, float]
    disliked: set[str]
    recent: list[str]

    @functools.cached_property
    def key(self) -> tuple[Any, ...]:
        """The history as a tuple of text and numbers: hashable (the list cache's key), and
        left alone by the garbage collector's walks (how the service's cache keeps it)."""
        return (tuple(self.values.items()), tuple(sorted(self.disliked)), tuple(self.recent))

    @classmethod
    def unpack(cls, key: tuple[Any, ...]) -> History:
        """The history of a :attr:`key`."""
        values, disliked, recent = key
        state = cls(dict(values), set(disliked), list(recent))
        state.__dict__["key"] = key  # cached_property's slot: no second packing
        return state

    @classmethod
    def from_events(
        cls, events: Sequence[tuple[str, str, Any]], rules: EventRules | None = None
    ) -> History:
        """From events ``(item, type, value)``, oldest first: each item's positive values
        summed (:meth:`EventRules.value`), an item whose latest event is a dislike (or a low
        rating) disliked and left out of the history."""
        rules = EventRules() if rules is None else rules
        last: dict[str, bool] = {}
        for item, kind, value in events:  # oldest first: the last word on an item wins
            last[item] = rules.dislike(kind, value)
        disliked = {item for item, no in last.items() if no}
        values: dict[str, float] = {}
        for item, kind, value in events:
            weight = rules.value(kind, value)
            if weight > 0 and item not in disliked:
                values[item] = values.get(item, 0.0) + weight
        recent = list(dict.fromkeys(i for i, _, _ in reversed(events) if i in values))
        return cls(values, disliked, recent)

    @classmethod
    def of_session(cls, items: Iterable[Any]) -> History:
        """The history of an anonymous session given its items (oldest first)."""
        ids = [str(i) for i in items]
        values: dict[str, float] = {}
        for item in ids:
            values[item] = values.get(item, 0.0) + 1.0
        return cls(values, set(), list(dict.fromkeys(reversed(ids))))


def dataset_history(dataset: Dataset, user: int, rules: EventRules | None = None) -> History:
    """User index ``user``'s interactions in ``dataset`` as the service would read them,
    oldest first (by timestamp when there are timestamps): with ratings, each a ``rating``
    event (so low ratings are dislikes, by :class:`EventRules`); without, each worth its
    weight as it is -- the value the service's training set holds for a pair."""
    start, end = int(dataset._indptr[user]), int(dataset._indptr[user + 1])
    rows = np.arange(start, end)
    if dataset.timestamp is not None:
        rows = rows[np.argsort(dataset.timestamp[rows], kind="stable")]
    items = [str(i) for i in dataset.items.to_ids(dataset.item_index[rows])]
    if dataset.rating is not None:
        ratings = dataset.rating[rows].tolist()
        return History.from_events(
            [(i, "rating", r) for i, r in zip(items, ratings, strict=True)], rules
        )
    weights = dataset.values()[rows].tolist()
    values = {i: float(w) for i, w in zip(items, weights, strict=True) if w > 0}
    return History(values, set(), list(dict.fromkeys(i for i in reversed(items) if i in values)))
