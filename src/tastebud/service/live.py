"""The service's live state: what the pipeline reads besides the model
(:class:`tastebud.pipeline.LiveState`), kept fresh from the database by following it.

Live popularity (the answer for users without a usable history) counts positive events per
item from a tail of the events table by ``seq`` (:meth:`Live.follow_events`: the follower
thread reads it every 0.1 s, a request at most every 0.2 s), so several processes serving
one database agree. ``seq`` grows in commit order on SQLite; on PostgreSQL a transaction that
took its seqs earlier may commit after a later one, so a hole in the seqs read is asked for
again for :data:`_GAP_S` seconds (a rolled-back insert never fills one); a cached user state
lives at most ``state_cache_s``, which bounds what a miss (a transaction held open longer
than that) costs. Popularity is recounted from scratch at start-up and at every retrain, and
its order is kept current as events are counted: each counted event moves its item within a
sorted list (two binary searches), instead of sorting the catalogue again -- with 100,000
items one sort cost 40-250 ms of one request's time (it holds the interpreter lock), once a
second per process while events came in. A cold list after this process's own events counts
them at once.

The same tail tells which users' kept states to drop (:class:`~tastebud.service.caches.
UserStates`), and the deletions log which items and users were deleted elsewhere: a deleted
item's events leave the counts; a deleted user is named by a keyed hash
(``storage.user_hash``), compared with the hashes of the users whose states this process
keeps, and the popularity and the demographics are learned again without them in the
background (``Engine.forget_user`` drops a user this process deleted at once, and its own
follower skips them: :meth:`Live.skip_in_log`).

The demographics (a ``user-metadata`` model of what users like a cold user liked, by
their attributes; :class:`tastebud.pipeline.Demographics`) are learned at start-up, at
every retrain and after a deletion; the newest items are re-read at most every second.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Container, Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from tastebud.pipeline import Demographics, EventRules, PipelineSettings, categories
from tastebud.pipeline.config import SECONDS_PER_DAY
from tastebud.service.caches import UserStates
from tastebud.service.catalog import Catalog
from tastebud.service.settings import Settings
from tastebud.service.storage import Storage

log = logging.getLogger("tastebud.service")

#: How long a hole in the event seqs read is asked for again (PostgreSQL hands out seqs before
#: commit, so a slow transaction fills it late; a rolled-back one never does).
_GAP_S = 30.0
#: Most holes remembered at once (the newest are kept).
_MAX_GAPS = 1000
#: Most events read from the tail in one go; the rest follow on the next look.
_TAIL_BATCH = 10_000
#: Past this many positive events counted at once, the popularity order is sorted again
#: from the counts (at the next read) instead of moving each item in it.
_RESORT_FROM = 512
#: Newest-item lists kept fresh at once (one per ``n`` and ``days`` asked for).
_NEW_KEYS = 8
#: A newest-item list older than this is read again by the request that wants it (the
#: follower refreshes each every second; this holds where no follower runs).
_NEW_STALE_S = 5.0
#: How long a user this process deleted is skipped by its own follower (it dropped them).
_FORGOTTEN_HERE_S = 10.0
# a recount read while something was forgotten is read again this many times
_RECOUNT_TRIES = 3


class Live:
    """Popularity, the newest items, the catalogue's rows, the demographics and the clock
    the pipeline reads (:class:`tastebud.pipeline.LiveState`), and the follower of the events
    table and the deletions log that keeps them -- and the kept user states -- fresh."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        catalog: Catalog,
        rules: EventRules,
        states: UserStates,
        drop_kept: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.catalog = catalog
        self.rules = rules
        self.demographics = Demographics.empty()
        #: what the follower drops: users' kept states, and (``drop_kept``) every kept list
        #: and earlier version, when users were deleted elsewhere
        self.states = states
        self.drop_kept = drop_kept
        self._counts_lock = threading.Lock()
        self._positive_counts: Counter[str] = Counter()
        # bumped under _counts_lock by every forgetting (an item, a user's events): a recount
        # read before one would bring the forgotten events back, so it is read again
        self._forgotten = 0
        self._counted_seq = 0  # events with seq <= this are in _positive_counts
        self._gaps: dict[int, float] = {}  # seqs below _counted_seq not seen yet -> first missed
        self._deletions_seen = 0  # the deletions log is read after this seq
        self._tail_lock = threading.Lock()  # one reader of the tail at a time
        self._synced_at = -float("inf")  # monotonic time of the last sync read
        self._counts_dirty = False  # this process stored events since that read
        # the popularity order, (-count, item) ascending: most events first, ties by id;
        # kept in step with _positive_counts under _counts_lock (None: sort at next read)
        self._order: list[tuple[int, str]] | None = []
        # (n, days) -> (monotonic time checked, the items, catalogue version read at)
        self._new_cache: dict[tuple[int, float], tuple[float, list[tuple[str, float]], int]] = {}
        # complete deletion of users: hashes of the users this process forgot itself (its
        # follower skips them, skip_in_log), and the relearning of popularity and
        # demographics that a deletion by another process calls for
        self._forget_lock = threading.Lock()
        self._forgotten_here: dict[str, float] = {}  # user hash -> monotonic time
        self._relearn = Coalesced(self.relearn, "tastebud-forget-relearn")

    def start(self) -> None:
        """Count the popularity, learn who likes what by user attributes, and follow the
        deletions log from its end."""
        self._deletions_seen = self.storage.last_deletion()
        self.learn_demographics(self._read_and_recount())

    # -- popularity ------------------------------------------------------------------------
    def event_values(self, frame: pd.DataFrame) -> np.ndarray:
        """What each row of an events frame says "the user wants this"
        (:meth:`EventRules.value <tastebud.pipeline.EventRules.value>`), asked once per
        distinct (type, value) pair: a log of millions of events holds a few dozen, so
        start-up no longer makes a Python call per event."""
        if not len(frame):
            return np.zeros(0, dtype=np.float64)
        kinds, kind_names = pd.factorize(frame["type"].astype(str), use_na_sentinel=False)
        numbers, distinct = pd.factorize(frame["value"].to_numpy(dtype=np.float64))
        # numbers: -1 for NaN (no value); one code per (type, value) pair
        pair = kinds.astype(np.int64) * (len(distinct) + 1) + (numbers + 1)
        pairs, inverse = np.unique(pair, return_inverse=True)
        value = self.rules.value
        names = [str(k) for k in np.asarray(kind_names, dtype=object).tolist()]
        plain = np.asarray(distinct, dtype=np.float64).tolist()
        per_pair = np.fromiter(
            (
                value(names[p // (len(distinct) + 1)], _number(plain, p % (len(distinct) + 1)))
                for p in pairs.tolist()
            ),
            dtype=np.float64,
            count=len(pairs),
        )
        return per_pair[inverse.reshape(-1)]

    def _positive_items(self, frame: pd.DataFrame) -> list[str]:
        if not len(frame):
            return []
        return frame.loc[self.event_values(frame) > 0, "item"].astype(str).tolist()

    def popularity(self, frame: pd.DataFrame) -> tuple[Counter[str], int]:
        """The positive events per item of ``frame``, and its last seq (counted by pandas:
        a Counter fed one id at a time took seconds at 10M events)."""
        if not len(frame):
            return Counter(), 0
        per_item = frame.loc[self.event_values(frame) > 0, "item"].astype(str).value_counts()
        counts = Counter(
            dict(zip(per_item.index.tolist(), per_item.to_numpy().tolist(), strict=True))
        )
        return counts, int(frame["seq"].max())

    def forget_mark(self) -> int:
        """How many forgettings (an item, a user's events) this process has applied: read it
        before reading events for :meth:`set_counts`."""
        return self._forgotten

    def _read_and_recount(self) -> pd.DataFrame:
        """Read every event and count the popularity from them; read again when something
        was forgotten meanwhile. Returns the frame read."""
        for _ in range(_RECOUNT_TRIES):
            mark = self._forgotten
            frame = self.storage.events_frame()
            if self._install(*self.popularity(frame), read_at=mark):
                return frame
        with self._tail_lock:  # deletions keep coming: read with the follower held
            frame = self.storage.events_frame()
            self._install(*self.popularity(frame), read_at=None)
        return frame

    def set_counts(self, counts: Counter[str], last: int, *, read_at: int | None = None) -> None:
        """Serve ``counts`` (:meth:`popularity`'s), counted up to seq ``last``. ``read_at``:
        :meth:`forget_mark` read before the events were; when something was forgotten since,
        it would come back with these counts, so they are counted from a new read instead."""
        if not self._install(counts, last, read_at=read_at):
            self._read_and_recount()

    def _install(self, counts: Counter[str], last: int, *, read_at: int | None) -> bool:
        order = popularity_order(counts)  # before the lock: requests read the old meanwhile
        with self._counts_lock:
            if read_at is not None and self._forgotten != read_at:
                return False
            self._positive_counts = counts
            self._order = order
            self._counted_seq = last
            self._gaps = {}
        return True

    def popular(
        self, n: int, skip: Container[str] = (), *, current: bool = True
    ) -> list[tuple[str, float]]:
        """The ``n`` items with the most positive events (ties: lower id first), passing
        over the items in ``skip``, in the order of every event counted so far;
        ``current`` also counts this process's latest events first."""
        self._sync(now_if_dirty=current)
        with self._counts_lock:
            order = self._order
            if order is None:
                order = self._order = popularity_order(self._positive_counts)
            if skip:
                head = list(itertools.islice((p for p in order if p[1] not in skip), n))
            else:
                head = order[:n]
        return [(item, float(-negative)) for negative, item in head]

    def _count(self, items: list[str]) -> None:
        """Count one positive event for each of ``items`` and move each in the popularity
        order (a few events at a time: two binary searches and two moves of the list's
        pointers each); many at once are sorted again at the next read. Under
        ``_counts_lock``."""
        counts, order = self._positive_counts, self._order
        if order is not None and len(items) > _RESORT_FROM:
            order = self._order = None
        for item in items:
            old = counts[item]
            counts[item] = old + 1
            if order is None:
                continue
            if old:
                at = bisect.bisect_left(order, (-old, item))
                if at == len(order) or order[at] != (-old, item):  # out of step: sort anew
                    order = self._order = None
                    continue
                del order[at]
            bisect.insort(order, (-old - 1, item))

    # -- following the database ------------------------------------------------------------
    def _sync(self, *, now_if_dirty: bool = False) -> None:
        """Follow the events table from a request (the follower does it every 0.1 s in the
        background): at most every 0.2 s, or at once when asked and this process stored
        events since."""
        now = time.monotonic()
        if now - self._synced_at < 0.2 and not (now_if_dirty and self._counts_dirty):
            return
        self.follow_events()

    def follow_events(self) -> None:
        """Read the events stored since the last look (by any process) and the holes left
        then: count their positive ones into the popularity and drop their users' kept
        states; and read the deletions log (a deleted user's or item's events)."""
        with self._tail_lock:
            self._synced_at = time.monotonic()
            self._counts_dirty = False
            rows = self.storage.events_after(self._counted_seq, self._gaps, _TAIL_BATCH)
            deletions = self.storage.deletions_after(self._deletions_seen)
            if rows:
                self._take_events(rows)
            if deletions:
                self._deletions_seen = deletions[-1][0]
                users = set()
                for _, user_hash, item in deletions:
                    if item is not None:  # from many histories: forget_item drops all states
                        self.forget_item(item)
                    if user_hash is not None:
                        users.add(user_hash)
                if users:
                    self._forget_hashed(users)
            now = time.monotonic()
            if any(now - first > _GAP_S for first in self._gaps.values()):
                self._gaps = {q: t for q, t in self._gaps.items() if now - t <= _GAP_S}

    def _take_events(self, rows: list[tuple[int, str, str, str, float | None]]) -> None:
        """Count and note tail rows (``events_after``'s), ordered by seq."""
        now = time.monotonic()
        with self._counts_lock:  # a recount may have counted some of them meanwhile
            counted, gaps = self._counted_seq, self._gaps
            fresh = []
            for row in rows:
                seq = row[0]
                if seq in gaps:
                    del gaps[seq]
                elif seq <= counted:
                    continue
                else:
                    for missing in range(max(counted + 1, seq - _MAX_GAPS), seq):
                        gaps[missing] = now
                    counted = seq
                fresh.append(row)
            if len(gaps) > _MAX_GAPS:
                self._gaps = dict(sorted(gaps.items())[-_MAX_GAPS:])
            self._counted_seq = counted
            positive = [
                item
                for _, _, item, kind, value in fresh
                if self.rules.value(kind, value) > 0  # any stored value: EventRules.value
            ]
            if positive:
                self._count(positive)
        self.states.forget({row[1] for row in fresh})

    def events_stored(self, users: Iterable[str]) -> None:
        """This process stored events of ``users``: their next lists read their events
        again, and the next cold list counts them at once (warm lists leave that to the
        background refresh; popularity only adds candidates to them)."""
        self.states.forget(users)
        self._counts_dirty = True

    # -- deletions -------------------------------------------------------------------------
    def forget_events(self, events: Iterable[Mapping[str, Any]]) -> None:
        """Take deleted events (rows of ``storage.user_events``) out of the popularity."""
        rows = list(events)
        if not rows:
            return
        frame = pd.DataFrame(
            {
                "item": [str(e["item_id"]) for e in rows],
                "type": [str(e["type"]) for e in rows],
                "value": np.array(
                    [np.nan if e.get("value") is None else e["value"] for e in rows],
                    dtype=np.float64,
                ),
                "seq": np.array([int(e["seq"]) for e in rows], dtype=np.int64),
            }
        )
        with self._counts_lock:
            counted = frame[frame["seq"] <= self._counted_seq]
            self._positive_counts.subtract(self._positive_items(counted))
            self._positive_counts = +self._positive_counts  # drop zero counts
            self._order = None
            self._forgotten += 1
        self.states.forget({str(e["user_id"]) for e in rows})

    def forget_item(self, item_id: str) -> None:
        """An item was deleted with its events."""
        with self._counts_lock:
            self._positive_counts.pop(item_id, None)
            self._order = None
            self._forgotten += 1
        self.states.forget()

    def skip_in_log(self, user_id: str) -> None:
        """This process deleted ``user_id`` and dropped what it held of them
        (``Engine.forget_user``): its follower skips their entry in the deletions log."""
        with self._forget_lock:
            now = time.monotonic()  # kept 10 s: the follower reads the log every 0.1 s
            self._forgotten_here = {
                h: t for h, t in self._forgotten_here.items() if now - t < _FORGOTTEN_HERE_S
            }
            self._forgotten_here[self.storage.user_hash(user_id)] = now

    def _forget_hashed(self, hashes: set[str]) -> None:
        """Users deleted by another process, named by ``storage.user_hash``: drop the kept
        states whose user id hashes to one of them, every kept list and loaded earlier
        version, and learn the popularity and the demographics again in the background."""
        with self._forget_lock:
            now = time.monotonic()
            mine = {
                h
                for h in hashes
                if now - self._forgotten_here.pop(h, -math.inf) < _FORGOTTEN_HERE_S
            }
        others = hashes - mine
        if not others:
            return
        cached = self.states.users()
        self.states.forget([u for u in cached if self.storage.user_hash(u) in others])
        self.drop_kept()
        self._relearn.request()

    def relearn(self) -> None:
        """Popularity and demographics from the events and users stored now."""
        self.learn_demographics(self._read_and_recount())

    def stop_relearning(self, timeout_s: float) -> bool:
        """Start no more relearning; whether one under way ended within ``timeout_s``."""
        return self._relearn.close(timeout_s)

    # -- demographics ----------------------------------------------------------------------
    def learn_demographics(self, frame: pd.DataFrame) -> None:
        self.demographics = self.demographics_of(frame)

    def demographics_of(self, frame: pd.DataFrame) -> Demographics:
        """What users sharing attributes liked, from ``frame`` and the stored users."""
        attributes = self.storage.user_attributes()
        positive = frame.loc[self.event_values(frame) > 0] if len(frame) else frame
        return Demographics.learn(positive, attributes)

    # -- the rest of what the pipeline reads (tastebud.pipeline.LiveState) -----------------
    def new_items(self, n: int, days: float) -> list[tuple[str, float]]:
        """The ``n`` newest available items of the last ``days`` (id, created_at), at most
        about a second old: the follower thread checks them every second
        (:meth:`refresh_new_items`), so a request reads the database only the first time it
        asks for this ``n`` and ``days``, or when nothing checked them for
        :data:`_NEW_STALE_S` (no follower runs). The read sorts the items created in the
        window: a catalogue imported at once (100,000 items of one ``created_at``) took
        about 100 ms of a request's time, once a second per process."""
        key = (n, days)
        cached = self._new_cache.get(key)
        if cached is None or time.monotonic() - cached[0] >= _NEW_STALE_S:
            cached = self._read_new(key)
        return cached[1]

    def refresh_new_items(self) -> None:
        """Check the newest items asked for (:meth:`new_items`) every second, off the
        request path: read again when the catalogue changed (:attr:`Catalog.version`, which
        follows the other processes' writes too) or a listed item left the window, else
        only note the check -- the read costs 100-200 ms of a core at 100,000 items."""
        now = time.monotonic()
        for key, (checked_at, rows, version) in list(self._new_cache.items()):
            if now - checked_at < 1.0:
                continue
            window_start = time.time() - key[1] * SECONDS_PER_DAY
            if version != self.catalog.version or any(t < window_start for _, t in rows):
                self._read_new(key)
            else:
                self._keep_new(key, (now, rows, version))

    def _read_new(self, key: tuple[int, float]) -> tuple[float, list[tuple[str, float]], int]:
        n, days = key
        now, version = time.monotonic(), self.catalog.version  # before the read: a change
        rows = self.storage.newest_items(n, since=time.time() - days * SECONDS_PER_DAY)
        cached = (now, [(str(r["id"]), float(r["created_at"])) for r in rows], version)
        self._keep_new(key, cached)
        return cached

    def _keep_new(
        self, key: tuple[int, float], cached: tuple[float, list[tuple[str, float]], int]
    ) -> None:
        kept = dict(self._new_cache)  # replaced whole: readers see one dict or the other
        kept[key] = cached
        if len(kept) > _NEW_KEYS:  # per-request options asked for other sizes: oldest out
            kept = dict(sorted(kept.items(), key=lambda kv: kv[1][0])[-_NEW_KEYS:])
        self._new_cache = kept

    def rows(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        return self.catalog.get(ids)

    def categories(self, item: str, settings: PipelineSettings) -> frozenset[str]:
        if settings.category_field == self.settings.pipeline.category_field:
            return self.catalog.categories(item)
        row = self.catalog.get([item]).get(item)
        return categories(settings, row["attributes"] if row else {})

    def demographic(self, attributes: Mapping[str, Any], n: int) -> list[tuple[str, float]]:
        return self.demographics.top(attributes, n)

    @staticmethod
    def now() -> float:
        return time.time()


def _number(distinct: list[float], code: int) -> float | None:
    """The value of factorize code ``code`` shifted by one (0: no value)."""
    return None if code == 0 else distinct[code - 1]


def popularity_order(counts: Mapping[str, int]) -> list[tuple[int, str]]:
    """``(-count, item)`` of every counted item, ascending: most events first, ties by id --
    what ``sorted((-n, item) for item, n in counts.items())`` gives, sorted by numpy (a
    sort of 100,000 tuples in Python took up to 250 ms of a busy machine)."""
    if not counts:
        return []
    items = list(counts)
    negative = -np.fromiter(counts.values(), dtype=np.int64, count=len(items))
    order = np.lexsort((np.array(items, dtype=str), negative)).tolist()
    return list(zip(negative[order].tolist(), [items[i] for i in order], strict=True))


class Coalesced:
    """Runs ``fn`` in a background thread when asked; asks that come while it runs make one
    more run after it, however many they are (a burst of deletions: one retrain)."""

    def __init__(self, fn: Callable[[], None], name: str) -> None:
        self._fn = fn
        self._name = name
        self._lock = threading.Lock()
        self._wanted = False
        self._closed = False
        self._thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._thread is not None

    def close(self, timeout_s: float) -> bool:
        """Take no more asks; wait up to ``timeout_s`` for a run under way to end."""
        with self._lock:
            self._closed = True
            self._wanted = False
            thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
            return not thread.is_alive()
        return True

    def request(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._wanted = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._wanted:
                    self._thread = None
                    return
                self._wanted = False
            try:
                self._fn()
            except Exception:
                log.exception("%s failed", self._name)
