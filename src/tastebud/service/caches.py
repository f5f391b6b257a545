"""What the service keeps in memory between requests so that a warm list costs a dict lookup:
users' states, finished lists, the earlier model versions experiments serve, and the running
experiment. Each cache has its own lock, held only around its dict (never around a database
read or the pipeline).

- :class:`UserStates`: a user's :class:`~tastebud.pipeline.History`, read from their latest
  ``history_limit`` events by one indexed query, kept (``state_cache_users`` users, least
  recently used first out, for at most ``state_cache_s``) until their events change: this
  process's writes drop it before they are answered, so an event committed before its 2xx
  changes the very next list; the other processes' writes are dropped when the follower
  (:mod:`tastebud.service.live`) sees them. ``state_cache_s`` bounds what a write the follower
  misses can cost (a PostgreSQL transaction held open past the follower's 30 s of asking
  again for a hole in the seqs).
- :class:`KeptLists`: a list built from the model's scores, kept for ``list_cache_s`` under
  the user's history, the model snapshot, the options, filters and ``k``, and served again
  after its items are checked for availability.
- :class:`EarlierVersions`: snapshots of earlier model versions that experiments serve.
- :class:`RunningExperiment`: the running experiment, re-read every 2 s.

The garbage collector: ``serving_app`` freezes the heap after start-up and every 10 s, and a
full collection walks every object the collector tracks. Keys and entries of the state and
list caches are therefore only tuples of text and numbers (``History.key``,
``Candidate.packed``), which the collector stops tracking, so a full cache adds nothing to
that walk (``Candidate`` objects did: 80 per list).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

from tastebud.pipeline import Candidate, EventRules, History, Recommendations
from tastebud.service.catalog import Catalog
from tastebud.service.settings import Settings
from tastebud.service.storage import Storage

if TYPE_CHECKING:
    from tastebud.service.versions import Snapshot

log = logging.getLogger("tastebud.service")

#: Most lists kept at once.
_MAX_LISTS = 50_000
#: Most earlier versions kept loaded for experiments.
_MAX_EARLIER = 4
#: How often (seconds) the running experiment is read again.
_EXPERIMENT_S = 2.0


class UserStates:
    """Users' states (:meth:`get`), read from their latest events and kept until those
    change (:meth:`forget`)."""

    def __init__(self, settings: Settings, storage: Storage, rules: EventRules) -> None:
        self.settings = settings
        self.storage = storage
        self.rules = rules
        # user -> (History.key, monotonic expiry), least recently used first; _epoch grows
        # at every drop, so a state read while one happened is not kept
        self._states: OrderedDict[str, tuple[Any, ...]] = OrderedDict()
        self._lock = threading.Lock()
        self._epoch = 0
        self.hits = 0
        self.misses = 0

    def get(self, user_id: str) -> History:
        """The user's positive history (value summed per item, in first-seen order), their
        recent positive items (newest first) and the items whose latest event is a dislike
        or a low rating (left out of the history and of their lists).

        Read from their latest ``history_limit`` events and kept (``state_cache_users``
        users, for at most ``state_cache_s``) until their events change: this process's
        writes drop it at once, the other processes' when the follower sees them."""
        capacity = self.settings.state_cache_users
        if capacity > 0:
            now = time.monotonic()
            with self._lock:
                entry = self._states.get(user_id)
                if entry is not None and entry[1] > now:
                    self._states.move_to_end(user_id)
                    self.hits += 1
                    return History.unpack(entry[0])
                epoch = self._epoch  # before the read: a drop during it wins
            self.misses += 1
        state = self.read(user_id)
        if capacity > 0:
            expires = time.monotonic() + self.settings.state_cache_s
            with self._lock:
                if self._epoch == epoch:
                    self._states[user_id] = (state.key, expires)
                    self._states.move_to_end(user_id)
                    while len(self._states) > capacity:
                        self._states.popitem(last=False)
        return state

    def read(self, user_id: str) -> History:
        """:meth:`get` from the database: plain Python on one lean query."""
        events = self.storage.recent_events(user_id, self.settings.history_limit)
        return History.from_events(events, self.rules)

    def forget(self, users: Iterable[str] | None = None) -> None:
        """Drop the kept states of ``users`` (of everyone when ``None``): their events
        changed."""
        with self._lock:
            self._epoch += 1
            if users is None:
                self._states.clear()
            else:
                for user in users:
                    self._states.pop(user, None)

    def users(self) -> list[str]:
        """The users whose states are kept, least recently used first."""
        with self._lock:
            return list(self._states)


class KeptLists:
    """Finished lists (:meth:`get`, :meth:`put`), each under a key that names everything it
    was made from (:meth:`tastebud.service.engine.Engine.recommend` builds it)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        # key -> (monotonic expiry, chosen, rest), candidates packed; kept in insertion
        # order, which is expiry order (one lifetime for all)
        self._lists: OrderedDict[tuple[Any, ...], tuple[Any, ...]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[Any, ...], snapshot: Snapshot) -> Recommendations[Snapshot] | None:
        """The kept list of ``key`` (made with ``snapshot``: its serial is in the key), if
        it has not expired and its items are all still in the catalogue and available."""
        with self._lock:
            entry = self._lists.get(key)
        if entry is None or entry[0] < time.monotonic():
            self.misses += 1
            return None
        _, chosen, rest = entry
        rows = self.catalog.get(c[0] for c in chosen)
        if len(rows) < len(chosen) or not all(row["available"] for row in rows.values()):
            self.misses += 1  # an item was deleted or made unavailable: rebuild
            return None
        self.hits += 1

        def still_available() -> list[Candidate]:
            more = self.catalog.get(c[0] for c in rest)
            rows.update(more)
            return [Candidate.unpack(c) for c in rest if more.get(c[0], {}).get("available")]

        return Recommendations(
            [Candidate.unpack(c) for c in chosen], still_available, rows, snapshot
        )

    def put(self, key: tuple[Any, ...], result: Recommendations[Snapshot], ttl_s: float) -> None:
        """Keep ``result`` under ``key`` for ``ttl_s`` seconds."""
        now = time.monotonic()
        entry = (
            now + ttl_s,
            tuple(c.packed() for c in result.chosen),
            tuple(c.packed() for c in result.rest),
        )
        with self._lock:
            # expired lists go from the front, so the heap holds only live ones
            self._lists.pop(key, None)
            self._lists[key] = entry
            while self._lists and (
                len(self._lists) > _MAX_LISTS or next(iter(self._lists.values()))[0] < now
            ):
                self._lists.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._lists.clear()


class EarlierVersions:
    """Snapshots of earlier model versions loaded for experiments: the
    :data:`_MAX_EARLIER` loaded last."""

    def __init__(self) -> None:
        self._versions: dict[int, Snapshot] = {}
        self._lock = threading.Lock()

    def get(self, version_id: int) -> Snapshot | None:
        with self._lock:
            return self._versions.get(version_id)

    def put(self, version_id: int, snapshot: Snapshot) -> None:
        with self._lock:
            self._versions[version_id] = snapshot
            while len(self._versions) > _MAX_EARLIER:  # least recently loaded first
                self._versions.pop(next(iter(self._versions)))

    def clear(self) -> None:
        with self._lock:
            self._versions.clear()


class RunningExperiment:
    """The running experiment (:meth:`get`), re-read from the database at most every
    :data:`_EXPERIMENT_S` seconds, so every process serving the database follows a start or
    a stop within that. An experiment whose stored variants cannot split users is not run
    (said once in the log)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._cache: tuple[float, dict[str, Any] | None] = (-float("inf"), None)
        self._unrunnable: set[str] = set()  # experiments not run (their variants unusable)

    def get(self) -> dict[str, Any] | None:
        now = time.monotonic()
        cached_at, experiment = self._cache
        if now - cached_at >= _EXPERIMENT_S:
            # a stored row (ExperimentRow), handed on as the dict the routes read
            experiment = cast("dict[str, Any] | None", self.storage.running_experiment())
            if experiment is not None and not _runnable(experiment):
                if experiment["name"] not in self._unrunnable:  # said once
                    self._unrunnable.add(experiment["name"])
                    log.error(
                        "experiment %r is not run: its stored variants are unusable (%r)",
                        experiment["name"],
                        experiment["variants"],
                    )
                experiment = None
            self._cache = (now, experiment)
        return experiment

    def forget(self) -> None:
        """Read it again at the next :meth:`get` (this process started or stopped one)."""
        self._cache = (-float("inf"), None)


def _runnable(experiment: Mapping[str, Any]) -> bool:
    """Whether a stored experiment's variants can split users: two or more, each a valid
    ``Variant`` (a row written by hand or by older code may hold anything)."""
    from pydantic import ValidationError

    from tastebud.service.schemas import Variant

    variants = experiment.get("variants")
    if not isinstance(variants, list) or len(variants) < 2:
        return False
    try:
        for variant in variants:
            Variant.model_validate(variant)
    except ValidationError:
        return False
    return True
