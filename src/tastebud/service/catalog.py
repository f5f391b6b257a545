"""The item catalogue held in memory for the request path.

A list is built from a few hundred candidates; reading their rows from the database on every
request cost more than everything else in it. The catalogue keeps every item row (and its
categories) in a dict and follows the database: at most every ``refresh_s`` seconds a
request re-reads the items written since the last look (``items.updated_at``, indexed), and
compares the item count, reloading everything when rows were deleted elsewhere. Writes made
through this process are applied at once (:meth:`Catalog.put`, :meth:`Catalog.drop`), so
this process's own changes -- an item made unavailable, say -- show in its next answer, and
another process's within ``refresh_s``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from tastebud.pipeline import PipelineSettings, categories
from tastebud.service.storage import Storage

#: Rows written up to this long before a look may commit after it; they are read again.
_OVERLAP_S = 5.0


class Catalog:
    """Item rows by id, with their categories under the service's pipeline settings."""

    def __init__(self, storage: Storage, pipeline: PipelineSettings, refresh_s: float = 1.0):
        self.storage = storage
        self.pipeline = pipeline
        self.refresh_s = refresh_s
        self._rows: dict[str, dict[str, Any]] = {}
        self._cats: dict[str, frozenset[str]] = {}
        self._lock = threading.Lock()
        self._seen_until = 0.0  # updated_at up to which rows were read
        self._checked_at = -float("inf")  # monotonic time of the last look
        #: grows whenever a row is (re)read, written or dropped: what was derived from the
        #: rows (the newest items) needs no new read while it stays the same
        self.version = 0

    def _set(self, row: Mapping[str, Any]) -> None:
        self.version += 1
        item = str(row["id"])
        self._rows[item] = dict(row)
        self._cats[item] = categories(self.pipeline, row.get("attributes") or {})

    def reload(self) -> None:
        """Read every item again."""
        started = time.time()
        rows = self.storage.all_items()
        with self._lock:
            self._rows, self._cats = {}, {}
            for row in rows:
                self._set(row)
            self._seen_until = started - _OVERLAP_S
            self._checked_at = time.monotonic()

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < self.refresh_s:
            return
        self._checked_at = now  # other threads keep serving from what is here
        started = time.time()
        changed = self.storage.items_changed_since(self._seen_until)
        with self._lock:
            for row in changed:
                self._set(row)
            self._seen_until = max(self._seen_until, started - _OVERLAP_S)
            size = len(self._rows)
        if self.storage.count_items() != size:  # deleted (or created) out of our sight
            self.reload()

    def get(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The rows of the stored items among ``ids`` (unknown ids are left out)."""
        self._refresh()
        rows = self._rows
        return {item: rows[item] for item in ids if item in rows}

    def categories(self, item: str) -> frozenset[str]:
        return self._cats.get(item, frozenset())

    def put(self, row: Mapping[str, Any]) -> None:
        """An item this process just wrote."""
        with self._lock:
            self._set(row)

    def drop(self, item: str) -> None:
        """An item this process just deleted."""
        with self._lock:
            self.version += 1
            self._rows.pop(item, None)
            self._cats.pop(item, None)
