"""Similar items (``GET /items/{id}/similar``): from the best source that can answer.

1. **The serving model**, when it computes item similarities and knows the item.
2. **The catalogue's own metadata** (``source: "content"``): before the first model is
   trained, for items added since (the model never saw them), and under a model without
   item similarities. A content model of the library -- :class:`~tastebud.models.content.
   TfidfContent` over the titles and text attributes, else
   :class:`~tastebud.models.content.FeatureProfile` where the attributes are numbers only --
   is fitted on the catalogue alone (:class:`CatalogueContent`) and kept until items are
   written; a score is the cosine of two items' metadata vectors, and items with nothing in
   common (cosine 0) are not called similar.
3. **Popular items** (``source: "popular"``), only where neither can tell (no metadata, or
   metadata the item shares with no other): labelled as such
   and scored by their positive events as a share of the most popular item's (1 for the most
   popular), never as raw counts that would read like similarities.

Each answer says what its scores are (``basis``), so a client -- and the person reading the
UI -- can tell a learned similarity from a stand-in.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from tastebud import rules
from tastebud.data.dataset import Dataset
from tastebud.data.idmap import IdMap
from tastebud.errors import InvalidInputError
from tastebud.models import Recommender, create
from tastebud.service.storage import Storage

log = logging.getLogger("tastebud.service")

#: Items written up to this long before a look may commit after it (PostgreSQL hands out
#: times before commit); they are compared again.
_OVERLAP_S = 5.0

#: The content models tried, in order, with what their scores are.
CONTENT_MODELS: tuple[tuple[str, str], ...] = (
    ("tfidf", "cosine similarity of the items' titles and text attributes (TF-IDF)"),
    ("feature-profile", "cosine similarity of the items' attributes (attribute profiles)"),
)
POPULAR_BASIS = (
    "no similarity known for this item (no model has learned it, and the catalogue's "
    "metadata relates it to no other item): popular items instead, scored by their positive "
    "events as a share of the most popular item's"
)

#: Largest absolute number an attribute feature holds: the range of a 64-bit integer
#: (:data:`rules.MAX_INT`), so that models standardizing a column (sums of squares) stay
#: finite; a float beyond it (1e308 is valid JSON) is left out like a huge integer.
MAX_FEATURE = float(rules.MAX_INT)


def item_feature_table(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Catalogue rows as a feature table: ``item``, ``title`` and one column per attribute
    (lists joined with ``|``, the multi-valued form content models read).

    Attributes are any JSON a database may hold, so only what a feature can be is kept
    (:func:`feature_cell`): text, booleans, numbers within :data:`MAX_FEATURE`, and lists
    of those. Nested objects, deeper lists, non-finite numbers and huge integers are
    left out, as are attributes that are not an object at all and titles that are not text."""
    records = []
    for row in rows:
        attributes = row.get("attributes")
        record: dict[str, Any] = {}
        if isinstance(attributes, Mapping):
            for key, value in attributes.items():
                cell = feature_cell(value)
                if cell is not None and isinstance(key, str) and rules.text_problem(key) is None:
                    record[key] = cell
        title = row.get("title")
        record["item"] = row["id"]
        record["title"] = (
            title if isinstance(title, str) and not rules.text_problem(title) else None
        )
        records.append(record)
    table = pd.DataFrame.from_records(records) if records else pd.DataFrame({"item": []})
    return table.dropna(axis=1, how="all").infer_objects()


def feature_cell(value: Any) -> Any:
    """One attribute value as a feature cell: a scalar (``None`` for what no content model
    can read), a list as its scalars joined with ``|``."""
    if isinstance(value, list):
        parts = [_scalar(v) for v in value]
        text = "|".join(str(p) for p in parts if p is not None)
        return text or None
    return _scalar(value)


def _scalar(value: Any) -> str | bool | int | float | None:
    if isinstance(value, bool | str):
        return value if not isinstance(value, str) or rules.text_problem(value) is None else None
    if isinstance(value, int | float):  # finite, within 64 bits and MAX_FEATURE
        return value if rules.json_problem(value) is None and abs(value) <= MAX_FEATURE else None
    return None  # null, objects, nested lists


@dataclasses.dataclass(frozen=True)
class SimilarAnswer:
    """Where similar items came from (``model``, ``content`` or ``popular``), what their
    scores are in words, and the (item, score) pairs, best first (not yet checked for
    availability)."""

    source: str
    basis: str
    pairs: list[tuple[str, float]]


#: Answers kept per fitted model ((item, n) -> pairs), least recently used out first: one
#: item's similarities cost a pass over the whole catalogue's vectors.
_KEPT = 10_000


@dataclasses.dataclass(frozen=True)
class _Fitted:
    #: None: the catalogue had nothing a content model could read
    model: Recommender | None
    basis: str
    #: items written at or after ``since`` that the model has seen, with their write times
    since: float
    seen: frozenset[tuple[str, float]]
    kept: OrderedDict[tuple[str, int], list[tuple[str, float]]] = dataclasses.field(
        default_factory=OrderedDict, repr=False
    )
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)


def fit_catalogue(rows: Sequence[Mapping[str, Any]]) -> tuple[Recommender, str] | None:
    """A content model of :data:`CONTENT_MODELS` fitted on catalogue ``rows`` (the first
    that finds something to read in them), with its basis; ``None`` when none does.

    Content models fit on interactions, but an item's similarities read only the item
    vectors; the catalogue is given as one placeholder user who has every item once (that
    user's likes are never read)."""
    table = item_feature_table(rows)
    if len(table) < 2 or table.shape[1] < 2:  # nothing to compare, or only the ids
        return None
    table = table.set_index("item")
    ids = [str(i) for i in table.index]
    table.index = pd.Index(ids, name="item", dtype=object)
    n = len(ids)
    dataset = Dataset.from_indices(
        IdMap(["(catalogue)"]),
        IdMap(ids),
        np.zeros(n, dtype=np.int32),
        np.arange(n, dtype=np.int32),
        item_features=table,
        name="catalogue",
    )
    for name, basis in CONTENT_MODELS:
        try:
            return create(name).fit(dataset), basis
        except InvalidInputError as err:  # no text (TF-IDF), no usable attribute (profiles)
            log.debug("no %s content model of the catalogue: %s", name, err)
        except Exception:  # odd metadata must not fail a similar-items answer
            log.warning("no %s content model of the catalogue", name, exc_info=True)
    return None


class CatalogueContent:
    """Item similarities from the catalogue's metadata (module docstring, source 2).

    The model is fitted on first use and again after items are created or changed (looked
    for at most every ``refresh_s`` seconds, and at once for an item it does not know: one
    indexed read of the rows written since the last fit); each item's answer is kept until
    then. Deleted or unavailable items may stay in it: answers are checked against the
    catalogue anyway. While a new fit runs, other requests keep using the last one."""

    def __init__(self, storage: Storage, refresh_s: float = 1.0) -> None:
        self.storage = storage
        self.refresh_s = refresh_s
        self._fitted: _Fitted | None = None
        self._checked_at = -float("inf")  # monotonic time of the last look for changes
        self._lock = threading.Lock()  # one fit at a time

    def similar(self, item: str, n: int) -> tuple[str, list[tuple[str, float]]] | None:
        """The basis and the ``n`` items most like ``item`` with a positive similarity,
        best first; ``None`` when the catalogue has no metadata for it to be compared by."""
        fitted = self._current()
        if fitted.model is not None and item not in fitted.model.items_:  # created since
            fitted = self._current(look_now=True)
        model = fitted.model
        if model is None or item not in model.items_:
            return None
        n = min(n, len(model.items_) - 1)
        if n < 1:
            return None
        key = (item, n)
        with fitted.lock:
            pairs = fitted.kept.get(key)
            if pairs is not None:
                fitted.kept.move_to_end(key)
                return fitted.basis, pairs
        table = model.similar_items([item], k=n)
        pairs = [
            (str(i), float(s))
            for i, s in zip(table["similar"], table["score"], strict=True)
            if s > 0
        ]
        with fitted.lock:
            fitted.kept[key] = pairs
            while len(fitted.kept) > _KEPT:
                fitted.kept.popitem(last=False)
        return fitted.basis, pairs

    def _current(self, *, look_now: bool = False) -> _Fitted:
        """The fitted model, fitted again first when items were written since (looked for
        at most every ``refresh_s`` seconds, unless ``look_now``)."""
        fitted = self._fitted
        now = time.monotonic()
        if fitted is not None and not look_now and now - self._checked_at < self.refresh_s:
            return fitted
        # the first fit is waited for; a later one runs while others use the last
        if fitted is not None and not self._lock.acquire(blocking=False):
            return fitted
        if fitted is None:
            self._lock.acquire()
        try:
            latest = self._fitted
            if latest is not None and latest is not fitted:  # fitted by another thread
                return latest
            self._checked_at = time.monotonic()
            if latest is not None and not self._changed(latest):
                return latest
            self._fitted = self._fit()
            return self._fitted
        finally:
            self._lock.release()

    def _changed(self, fitted: _Fitted) -> bool:
        rows = self.storage.items_changed_since(fitted.since)
        return any((str(r["id"]), float(r["updated_at"] or 0.0)) not in fitted.seen for r in rows)

    def _fit(self) -> _Fitted:
        since = time.time() - _OVERLAP_S
        rows = self.storage.all_items()
        found = fit_catalogue(rows)
        seen = frozenset(
            (str(r["id"]), float(r["updated_at"] or 0.0))
            for r in rows
            if (r["updated_at"] or 0.0) >= since
        )
        if found is None:  # nothing to read now; looked at again when items change
            return _Fitted(None, "", since, seen)
        model, basis = found
        log.info("content similarities of %d catalogue items (%s)", len(rows), basis)
        return _Fitted(model, basis, since, seen)


def popular_pairs(
    popular: Callable[[int], list[tuple[str, float]]], item: str, n: int
) -> list[tuple[str, float]]:
    """The ``n`` most popular items other than ``item`` from ``popular(n)`` (item, count
    pairs, most popular first), each scored by its count as a share of the top count."""
    ranked = popular(n + 1)
    if not ranked or ranked[0][1] <= 0:
        return []
    top = ranked[0][1]
    return [(i, count / top) for i, count in ranked if i != item][:n]
