"""The live model behind the service: training from stored events, hot swaps, real-time lists.

Real time: a list is built from the user's latest events (``history_limit``, read by one
indexed query) folded into the active model (``recommend_from_history``). The state read
from them (:class:`History`) is kept per user until their events change: this process's
own writes drop it before they are answered, so an event committed before its 2xx changes
the very next list; the other processes' writes are seen by :meth:`Engine.follow`, which
tails the events table by ``seq`` (and the deletions log) every 0.1 s. Retraining builds a
new model from all events in a background thread and swaps one reference
(:class:`Snapshot`): requests in flight keep the snapshot they started with, so a swap never
fails a request.

Live popularity (the answer for users without a usable history) counts positive events per
item from the same tail, so several processes serving one database agree. ``seq`` grows in
commit order on SQLite; on PostgreSQL a transaction that took its seqs earlier may commit
after a later one, so a hole in the seqs read is asked for again for ``_GAP_S`` seconds.
Popularity is recounted from scratch at every retrain; a cached state lives at most
``state_cache_s``, which bounds what a miss (a transaction held open longer than that) costs.

Over 1,600 lines holding several ideas (training, live state and its follower, deletions,
caches, the pipeline's generators): issue 18 splits it; until then each part keeps to its
own section and methods.
"""

from __future__ import annotations

import dataclasses
import fcntl
import itertools
import logging
import math
import operator
import shutil
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Container, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tastebud.data.dataset import Dataset
from tastebud.errors import ModelFileError, TastebudError, UnknownIdError
from tastebud.models import Recommender, create, load
from tastebud.pipeline import (
    Candidate,
    Demographics,
    EventRules,
    Filters,
    History,
    ModelView,
    Pipeline,
    PipelineConfig,
    PipelineSettings,
    Query,
    Recommendations,
    categories,
)
from tastebud.pipeline.config import SECONDS_PER_DAY
from tastebud.service.catalog import Catalog
from tastebud.service.settings import Settings
from tastebud.service.similar import (
    POPULAR_BASIS,
    CatalogueContent,
    SimilarAnswer,
    popular_pairs,
)
from tastebud.service.storage import FORGET_MARK, Storage
from tastebud.service.training import TrainingData, build_dataset, usable_events

log = logging.getLogger("tastebud.service")

#: How long a hole in the event seqs read is asked for again (PostgreSQL hands out seqs before
#: commit, so a slow transaction fills it late; a rolled-back one never does).
_GAP_S = 30.0
#: Most holes remembered at once (the newest are kept).
_MAX_GAPS = 1000
#: Most events read from the tail in one go; the rest follow on the next look.
_TAIL_BATCH = 10_000
#: Popularity is sorted again at most this often (seconds) while events come in.
_RERANK_S = 1.0
#: How long a user this process deleted is skipped by its own follower (it dropped them).
_FORGOTTEN_HERE_S = 10.0
#: Serial numbers of snapshots.
_SNAPSHOTS = itertools.count(1)
#: How often (seconds) the follower tries again to load an active version that failed to load.
_RELOAD_S = 60.0


@dataclasses.dataclass(frozen=True)
class Snapshot(ModelView):
    """An immutable serving state: a :class:`~tastebud.pipeline.ModelView` of the model
    (None before the first training) and its version row."""

    version: dict[str, Any] | None = None
    #: a number no other snapshot of this process has (what cached lists are keyed by)
    serial: int = dataclasses.field(default_factory=lambda: next(_SNAPSHOTS), compare=False)

    @classmethod
    def of(  # type: ignore[override]  # a version beside the model
        cls, model: Recommender | None, version: dict[str, Any] | None
    ) -> Snapshot:
        ids, index = ModelView.ids_of(model)
        return cls(model, ids, index, version=version)


class Engine:
    """Owns the active snapshot, live popularity, and retraining."""

    def __init__(self, settings: Settings, storage: Storage) -> None:
        self.settings = settings
        self.storage = storage
        self.catalog = Catalog(storage, settings.pipeline)
        #: item similarities from the catalogue's metadata, for items no model can compare
        self.content = CatalogueContent(storage)
        self.snapshot = Snapshot.of(None, None)  # replaced whole, never mutated
        self._train_lock = threading.Lock()
        #: why the last retrain of this process made no version (None: it did, or none ran)
        self.retrain_problem: str | None = None
        #: why this process does not serve the database's active version (its files cannot
        #: be loaded) and what it serves instead; None while it serves the active version
        self.start_note: str | None = None
        self._unloadable: dict[int, float] = {}  # version id -> monotonic time it failed
        self._counts_lock = threading.Lock()
        self._positive_counts: Counter[str] = Counter()
        self._counted_seq = 0  # events with seq <= this are in _positive_counts
        self._gaps: dict[int, float] = {}  # seqs below _counted_seq not seen yet -> first missed
        self._deletions_seen = 0  # the deletions log is read after this seq
        self._tail_lock = threading.Lock()  # one reader of the tail at a time
        self._synced_at = -float("inf")  # monotonic time of the last _sync_counts read
        self._counts_dirty = False  # this process stored events since that read
        # user -> (History.key, monotonic expiry), least recently used first; _states_epoch
        # grows at every drop, so a state read while one happened is not kept
        self._states: OrderedDict[str, tuple[Any, ...]] = OrderedDict()
        self._states_lock = threading.Lock()
        self._states_epoch = 0
        self.state_cache_hits = 0
        self.state_cache_misses = 0
        self._ranked: list[tuple[str, float]] | None = None  # popularity order, None: redo
        self._counts_version = 0  # grows with every counted event
        self._ranked_version = 0  # the counts _ranked was sorted from
        self._ranked_at = -float("inf")  # monotonic time of that sort
        self._own_unranked = False  # this process stored events the ranking may not have
        self.demographics = Demographics.empty()
        self.rules = EventRules(
            event_weights=settings.event_weights,
            dislike_below_rating=settings.dislike_below_rating,
        )
        self.pipeline = Pipeline(settings.pipeline)
        self._experiment_cache: tuple[float, dict[str, Any] | None] = (-float("inf"), None)
        self._unrunnable: set[str] = set()  # experiments not run (their variants unusable)
        self._versions: dict[int, Snapshot] = {}  # earlier versions served by experiments
        self._versions_lock = threading.Lock()
        self._new_cache: dict[tuple[int, float], tuple[float, list[tuple[str, float]]]] = {}
        self._lists: OrderedDict[tuple[Any, ...], tuple[Any, ...]] = OrderedDict()
        self._lists_lock = threading.Lock()
        self.list_cache_hits = 0
        self.list_cache_misses = 0
        #: called after every swap of the serving snapshot (``create_app(freeze_heap=True)``
        #: freezes the garbage collector's view of the heap there)
        self.after_swap: Callable[[], None] | None = None
        # complete deletion of users (forget_user): hashes of the users this process forgot
        # itself (its follower skips them), the retrain a deletion queues, and the relearning
        # of popularity and demographics that a deletion by another process calls for
        self._forget_lock = threading.Lock()
        self._forgotten_here: dict[str, float] = {}  # user hash -> monotonic time
        self._forget_retrain = _Coalesced(self._retrain_forgetting, "tastebud-forget-retrain")
        self._relearn = _Coalesced(self._relearn_live_state, "tastebud-forget-relearn")

    def _swap(self, snapshot: Snapshot, note: str | None = None) -> None:
        self.snapshot = snapshot
        self.start_note = note
        if self.after_swap is not None:
            self.after_swap()

    @property
    def training(self) -> bool:
        """Whether a retrain is running now."""
        return self._train_lock.locked()

    # -- start-up --------------------------------------------------------------------------
    def start(self) -> None:
        """Load the active model version (if any), count the popularity, learn who likes
        what by user attributes.

        An active version whose files cannot be loaded (a deleted or moved folder, a
        truncated ``arrays.npz``) does not stop the start: the newest loadable version
        trained before it is served instead (else the newest loadable one at all, else
        popular items), and :attr:`start_note` says so. The database is left as it is --
        the version an operator activated stays the active one -- and :meth:`follow`
        tries the active version again every :data:`_RELOAD_S` seconds, so a folder put
        back is served without a restart."""
        self._deletions_seen = self.storage.last_deletion()
        frame = self.storage.events_frame()
        self._recount(frame)
        self._learn_demographics(frame)
        self.catalog.reload()
        active = self.storage.active_model_version()
        if active is None:
            return
        try:
            model = self._load(active)
        except TastebudError as err:
            self._unloadable[active["id"]] = time.monotonic()
            self._fall_back(active, err)
        else:
            self._swap(Snapshot.of(model, active))

    def _fall_back(self, active: Mapping[str, Any], problem: TastebudError) -> None:
        """Serve the newest loadable version instead of ``active`` (see :meth:`start`)."""
        versions = [  # never one that learned from a deleted user
            v
            for v in self.storage.list_model_versions()
            if v["id"] != active["id"] and v.get("forgotten_at") is None
        ]
        older = [v for v in versions if v["id"] < active["id"]]
        newer = [v for v in versions if v["id"] > active["id"]]
        for row in [*reversed(older), *reversed(newer)]:
            try:
                model = self._load(row)
            except TastebudError as err:
                log.warning("model version %s cannot be loaded either: %s", row["id"], err)
                continue
            note = (
                f"the active model version {active['id']} cannot be loaded ({problem}); "
                f"serving version {row['id']} instead"
            )
            log.error("%s", note)
            self._swap(Snapshot.of(model, row), note)
            return
        note = (
            f"the active model version {active['id']} cannot be loaded ({problem}) and no "
            "other version can; serving popular items"
        )
        log.error("%s", note)
        self._swap(Snapshot.of(None, None), note)

    @staticmethod
    def _load(version: Mapping[str, Any]) -> Recommender:
        """The model of a version row; :class:`ModelFileError` if it cannot serve, whatever
        is wrong with its files (a damaged folder can fail anywhere in loading)."""
        try:
            model = load(version["path"])
        except ModelFileError:
            raise
        except Exception as err:  # one error for every kind of damage
            raise ModelFileError(
                f"model version {version['id']}: cannot load {version['path']}: "
                f"{type(err).__name__}: {err}"
            ) from err
        if not model.supports_fold_in:
            raise ModelFileError(
                f"model version {version['id']} ({version['model']}) cannot recommend from a "
                "live history, so the service cannot serve it"
            )
        return model

    # -- events ----------------------------------------------------------------------------
    def event_values(self, frame: pd.DataFrame) -> np.ndarray:
        """What each row of an events frame says "the user wants this"
        (:meth:`EventRules.value <tastebud.pipeline.EventRules.value>`)."""
        values = frame["value"].to_numpy(dtype=np.float64).tolist()
        value = self.rules.value
        return np.fromiter(
            (
                value(kind, None if math.isnan(v) else v)
                for kind, v in zip(frame["type"].astype(str).tolist(), values, strict=True)
            ),
            dtype=np.float64,
            count=len(values),
        )

    def _positive_items(self, frame: pd.DataFrame) -> list[str]:
        if not len(frame):
            return []
        return frame.loc[self.event_values(frame) > 0, "item"].astype(str).tolist()

    def _recount(self, frame: pd.DataFrame) -> None:
        """Popularity from all events (``frame`` from ``storage.events_frame()``)."""
        self._set_counts(*self._popularity(frame))

    def _popularity(self, frame: pd.DataFrame) -> tuple[Counter[str], int]:
        """The positive events per item of ``frame``, and its last seq."""
        counts = Counter(self._positive_items(frame))
        return counts, int(frame["seq"].max()) if len(frame) else 0

    def _set_counts(self, counts: Counter[str], last: int) -> None:
        with self._counts_lock:
            self._positive_counts = counts
            self._counted_seq = last
            self._gaps = {}
            self._ranked = None

    def _sync_counts(self, *, now_if_dirty: bool = False) -> None:
        """Follow the events table from a request (:meth:`follow` does it every 0.1 s in the
        background): at most every 0.2 s, or at once when asked and this process stored
        events since."""
        now = time.monotonic()
        if now - self._synced_at < 0.2 and not (now_if_dirty and self._counts_dirty):
            return
        self._follow_events()

    def _follow_events(self) -> None:
        """Read the events stored since the last look (by any process) and the holes left
        then: count their positive ones into the popularity and drop their users' cached
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
                self._positive_counts.update(positive)
                self._counts_version += 1
        self.forget_states({row[1] for row in fresh})

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
            self._ranked = None
        self.forget_states({str(e["user_id"]) for e in rows})

    def events_stored(self, users: Iterable[str]) -> None:
        """This process stored events of ``users``: their next lists read their events
        again, and the next cold list counts them at once (warm lists leave that to the
        background refresh; popularity only adds candidates to them)."""
        self.forget_states(users)
        self._counts_dirty = True
        self._own_unranked = True

    def forget_item(self, item_id: str) -> None:
        """An item was deleted with its events."""
        with self._counts_lock:
            self._positive_counts.pop(item_id, None)
            self._ranked = None
        self.forget_states()

    def forget_states(self, users: Iterable[str] | None = None) -> None:
        """Drop the cached states of ``users`` (of everyone when ``None``): their events
        changed."""
        with self._states_lock:
            self._states_epoch += 1
            if users is None:
                self._states.clear()
            else:
                for user in users:
                    self._states.pop(user, None)

    # -- forgetting users (complete deletion) ---------------------------------------------
    def forget_user(
        self,
        user_id: str,
        events: Iterable[Mapping[str, Any]],
        attributes: Mapping[str, Any] | None,
    ) -> None:
        """Drop what this process holds of a user just deleted from the database (their
        deleted ``events`` as ``storage.user_events`` gave them, their ``attributes``):
        their events out of the popularity, their cached state, every kept list (a list is
        kept under a history, not a user id, so the user's cannot be told apart; deletions
        are rare and a list costs milliseconds to rebuild), the earlier versions loaded for
        experiments, and -- learned again at once, when they had attributes -- the
        demographics. When they had events, a retrain is queued (:meth:`_retrain_forgetting`);
        once a version trained after the deletion is active, the folders of the versions
        that learned from them are deleted (:meth:`_forget_in_versions`).

        The other processes serving the database follow the deletions log within 0.1 s
        (:meth:`_forget_hashed`)."""
        rows = list(events)
        with self._forget_lock:
            now = time.monotonic()  # kept 10 s: the follower reads the log every 0.1 s
            self._forgotten_here = {
                h: t for h, t in self._forgotten_here.items() if now - t < _FORGOTTEN_HERE_S
            }
            self._forgotten_here[self.storage.user_hash(user_id)] = now
        self.forget_events(rows)
        self.forget_states([user_id])
        self._forget_held()
        if attributes:
            self._learn_demographics(self.storage.events_frame())
        if rows:
            self._forget_retrain.request()

    def _forget_hashed(self, hashes: set[str]) -> None:
        """Users deleted by another process, named by ``storage.user_hash``: drop the cached
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
        with self._states_lock:
            cached = list(self._states)
        self.forget_states([u for u in cached if self.storage.user_hash(u) in others])
        self._forget_held()
        self._relearn.request()

    def _forget_held(self) -> None:
        """Drop every kept list and every earlier version loaded for experiments."""
        with self._lists_lock:
            self._lists.clear()
        with self._versions_lock:
            self._versions.clear()

    def _relearn_live_state(self) -> None:
        """Popularity and demographics from the events and users stored now."""
        frame = self.storage.events_frame()
        self._recount(frame)
        self._learn_demographics(frame)

    @property
    def forgetting(self) -> bool:
        """Whether the retrain queued by a deletion is waiting or running."""
        return self._forget_retrain.busy

    def close(self, timeout_s: float = 60.0) -> bool:
        """At shutdown, before the storage is closed: start no more background work of
        deletions and wait up to ``timeout_s`` for what runs (a retrain, a relearning), so
        none of it writes to a database or model folder after the service has stopped.
        Returns whether everything finished in time."""
        deadline = time.monotonic() + timeout_s
        done = True
        for job in (self._forget_retrain, self._relearn):
            done = job.close(max(0.0, deadline - time.monotonic())) and done
        if self._train_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            self._train_lock.release()
        else:
            done = False
        return done

    def _retrain_forgetting(self) -> None:
        """The retrain a deletion queues: after any retrain already running (its events may
        have been read before the deletion). When too few events are left to train, no
        version may keep the deleted user's data: the folders of every version that learned
        from them are deleted, the active one's too, and the service serves without a model
        (popularity, demographics) until enough events come in. When the retrain fails for
        another reason, those versions stay on disk, never activated again, until a retrain
        succeeds."""
        try:
            self.retrain(wait=True)
        except TastebudError as err:
            if self.training_data().dataset is None:  # too few events left
                log.info(
                    "no retrain after a deletion (%s): deleting the versions that learned "
                    "from the deleted user, serving without a model",
                    err,
                )
                self._purge_forgotten(include_active=True)
            else:
                log.warning(
                    "the retrain after a deletion failed (%s): the versions that learned from "
                    "the deleted user stay on disk, never activated again, until one succeeds",
                    err,
                )

    def _forget_in_versions(self, version: Mapping[str, Any], frame: pd.DataFrame) -> None:
        """Run by :meth:`_retrain` once ``version`` (trained on ``frame``) is active: when a
        user with events was deleted after ``frame`` was read, the version may hold them and
        is marked so (never activated again; the retrain the deletion queued follows);
        otherwise the folders of the versions marked are deleted (the rows stay, with
        ``forgotten_at``)."""
        mark = frame.attrs.get(FORGET_MARK)
        try:
            if mark is None:
                log.warning("the training events carry no forget mark: versions kept")
            elif self.storage.forget_mark() > mark:
                self.storage.mark_forgotten([int(version["id"])])
            else:
                self._purge_forgotten()
        except Exception:  # the new version serves; the next retrain tries again
            log.exception("deleting the model versions that learned from deleted users failed")

    def _purge_forgotten(self, *, include_active: bool = False) -> None:
        """Delete the folders of the versions marked ``forgotten_at`` (not the active one's
        unless ``include_active``: then no version stays active and the model goes)."""
        folder = Path(self.settings.model_dir).resolve()
        dropped_active = False
        for row in self.storage.forgotten_versions():
            if row["active"] and not include_active:
                continue
            _delete_model_folder(row, folder)
            dropped_active = dropped_active or bool(row["active"])
        if dropped_active:
            self.storage.deactivate_model_versions()
            self._swap(Snapshot.of(None, None))
            log.info("no model version active: its folder held a deleted user")

    def _follow_retired(self) -> None:
        """Stop serving a version whose folder another process deleted with no version to
        follow it (:meth:`_retrain_forgetting` with too few events)."""
        version = self.snapshot.version
        if version is None or self.training:
            return
        row = self.storage.get_model_version(int(version["id"]))
        if (
            row is not None
            and row.get("forgotten_at") is not None
            and not row["active"]
            and self.storage.active_model_version() is None
        ):
            self._swap(Snapshot.of(None, None))
            log.info("model version %s retired: it held a deleted user", version["id"])

    def popular(
        self, n: int, skip: Container[str] = (), *, current: bool = True
    ) -> list[tuple[str, float]]:
        """The ``n`` items with the most positive events (ties: lower id first), passing
        over the items in ``skip``. The order is sorted again at most every second as
        events come in (a sort of the whole catalogue), except that ``current`` counts and
        ranks this process's latest events first."""
        own = current and self._own_unranked
        if own:
            self._own_unranked = False  # before the read: a later store sets it again
        self._sync_counts(now_if_dirty=current)
        now = time.monotonic()
        with self._counts_lock:
            ranked = self._ranked
            if ranked is None or (
                self._ranked_version != self._counts_version
                and (own or now - self._ranked_at >= _RERANK_S)
            ):
                # by id, then by count (a stable sort): ties stay in id order
                by_id = sorted(self._positive_counts.items())
                by_id.sort(key=operator.itemgetter(1), reverse=True)
                ranked = self._ranked = [(item, float(count)) for item, count in by_id]
                self._ranked_version = self._counts_version
                self._ranked_at = now
        if not skip:
            return ranked[:n]
        return list(itertools.islice((p for p in ranked if p[0] not in skip), n))

    def similar(self, item_id: str, n: int) -> SimilarAnswer:
        """Up to ``n`` items similar to ``item_id`` (module :mod:`tastebud.service.similar`):
        by the serving model when it can compare the item, else by the catalogue's metadata,
        else popular items labelled as such. Unavailable items are not yet left out."""
        snapshot = self.snapshot
        model = snapshot.model
        if model is not None and model.supports_similar_items and item_id in snapshot.index:
            table = model.similar_items([item_id], k=max(1, min(n, len(model.items_) - 1)))
            version = snapshot.version or {}
            pairs = [
                (str(i), float(s)) for i, s in zip(table["similar"], table["score"], strict=True)
            ]
            basis = f"item similarity of model version {version.get('id')} ({version.get('model')})"
            return SimilarAnswer("model", basis, pairs)
        content = self.content.similar(item_id, n)
        if content is not None and content[1]:
            return SimilarAnswer("content", content[0], content[1])
        return SimilarAnswer("popular", POPULAR_BASIS, popular_pairs(self.popular, item_id, n))

    def _learn_demographics(self, frame: pd.DataFrame) -> None:
        self.demographics = self._demographics(frame)

    def _demographics(self, frame: pd.DataFrame) -> Demographics:
        """What users sharing attributes liked, from ``frame`` and the stored users."""
        users = self._all_rows(self.storage.list_users)
        attributes = {str(u["id"]): u["attributes"] or {} for u in users}
        positive = frame.loc[self.event_values(frame) > 0] if len(frame) else frame
        return Demographics.learn(positive, attributes)

    # -- training --------------------------------------------------------------------------
    def training_data(self) -> TrainingData:
        """Positive interactions of the usable stored events (summed per pair; no dataset
        when fewer than ``min_events_to_train``), the events frame they came from, and the
        rows a model cannot use, left out and counted by reason (module
        :mod:`tastebud.service.training`)."""
        frame = self.storage.events_frame()
        usable, skipped = usable_events(frame)
        values = self.event_values(frame) if len(frame) else np.zeros(0)
        keep = usable & (values > 0)
        if int(keep.sum()) < self.settings.min_events_to_train:
            return TrainingData(None, frame, skipped)
        positive = frame.loc[keep, ["user", "item", "timestamp"]].assign(weight=values[keep])
        # Every catalogue item, so that items without events are known (cold) to the model,
        # with its title and attributes for content models.
        dataset, more, capped = build_dataset(positive, self.storage.all_items())
        return TrainingData(dataset, frame, {**skipped, **more}, capped)

    @staticmethod
    def _all_rows(page: Callable[..., list[dict[str, Any]]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            rows = page(limit=10_000, offset=len(out))
            out += rows
            if len(rows) < 10_000:
                return out

    def has_new_events(self) -> bool:
        """Whether events were stored or deleted since the active version was trained."""
        version = self.snapshot.version
        if version is None:
            return True
        trained_seq = (version.get("metrics") or {}).get("last_seq")
        return (
            trained_seq is None
            or self.storage.last_seq() != trained_seq
            or self.storage.count_events() != version["n_events"]
        )

    def retrain(self, *, wait: bool = True) -> dict[str, Any] | None:
        """Fit the configured model on every stored event, save it as a new version,
        activate it and swap it in; returns the version row.

        With ``wait=False`` returns ``None`` at once when a retrain is already running, in
        this process or in another worker sharing ``model_dir`` (a file lock there).
        Raises :class:`TastebudError` when there are too few events.
        """
        if not self._train_lock.acquire(blocking=wait):
            return None
        try:
            with _FileLock(Path(self.settings.model_dir) / ".retrain.lock", wait) as locked:
                if not locked:
                    return None
                try:
                    version = self._retrain()
                except TastebudError as err:
                    self.retrain_problem = str(err)
                    raise
                except Exception:
                    self.retrain_problem = "the last retrain failed (see the server log)"
                    raise
                self.retrain_problem = None
                return version
        finally:
            self._train_lock.release()

    def _retrain(self) -> dict[str, Any]:
        """Train, save and record a new version, then activate and serve it.

        Every step that can fail runs before the activation (fitting, saving, the version
        row, the popularity and demographics of the new state), so a failed retrain leaves
        the active version -- in the database and in this process -- as it was. A folder
        saved on the way is removed again; the version row is written only once its files
        are saved, and stays inactive when the activation itself fails."""
        start = time.perf_counter()
        data = self.training_data()
        frame, dataset = data.frame, data.dataset
        if data.skipped:
            log.warning(
                "retrain: left out %d stored rows a model cannot use (%s)",
                sum(data.skipped.values()),
                data.summary(),
            )
        if dataset is None:
            left_out = f", {data.summary()} left out as unusable" if data.skipped else ""
            raise TastebudError(
                f"too few positive events to train ({len(frame)} events stored{left_out}; "
                f"min_events_to_train={self.settings.min_events_to_train})"
            )
        offline = self.offline_metrics(dataset) if self.settings.evaluate_on_retrain else {}
        fit_start = time.perf_counter()
        model = create(self.settings.model, **self.settings.model_params).fit(dataset)
        fit_seconds = round(time.perf_counter() - fit_start, 3)
        seconds = time.perf_counter() - start
        counts = self._popularity(frame)
        demographics = self._demographics(frame)
        metrics: dict[str, Any] = {
            **offline,
            "fit_seconds": fit_seconds,
            "users": dataset.n_users,
            "items": dataset.n_items,
            "interactions": len(dataset),
            "last_seq": int(frame["seq"].max()),
            "skipped": dict(sorted(data.skipped.items())),
        }
        if data.capped:
            metrics["capped_pairs"] = data.capped
        path = self._new_model_path()
        try:
            model.save(path)
            version = self.storage.add_model_version(
                model=self.settings.model,
                params=model.get_params(),
                path=str(path),
                metrics=metrics,
                n_events=len(frame),
            )
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        snapshot = Snapshot.of(model, version)
        version = self.storage.activate_model_version(version["id"])
        self._set_counts(*counts)
        self.demographics = demographics
        self._unloadable.clear()
        self._swap(dataclasses.replace(snapshot, version=version))
        log.info("model version %s active (%.2fs)", version["id"], seconds)
        self._forget_in_versions(version, frame)
        return version

    def offline_metrics(self, dataset: Dataset, k: int = 10) -> dict[str, Any]:
        """The configured model's NDCG, precision and recall @k and catalogue coverage on a
        random 20% of each user's events held out (fit on the rest), measured on the lists
        the service serves (the training history replayed through this service's pipeline,
        :func:`tastebud.pipeline.replay.replay`), beside the model's own top-k NDCG and
        popularity's for scale; empty when the data are too few to hold anything out."""
        from tastebud.evaluation import evaluate
        from tastebud.split import random_split

        config = PipelineConfig(
            pipeline=self.settings.pipeline,
            event_weights=self.settings.event_weights,
            dislike_below_rating=self.settings.dislike_below_rating,
        )
        try:
            split = random_split(dataset, 0.2, seed=0)
            if len(split.test) == 0:
                return {}
            model = create(self.settings.model, **self.settings.model_params)
            metrics = ("ndcg", "precision", "recall")
            alone = evaluate(
                {"alone": model, "popularity": create("popularity")},
                split,
                metrics=metrics,
                k=k,
                progress=False,
            )
            served = evaluate(
                {"model": model},
                split,
                metrics=metrics,
                k=k,
                progress=False,
                fit=False,
                pipeline=config,
            )
        except TastebudError as err:
            log.info("no offline metrics for this version: %s", err)
            return {}
        table = pd.concat([alone, served])
        values = {
            (str(m), str(name).lower()): float(v)
            for m, name, v in zip(table["model"], table["metric"], table["value"], strict=True)
        }
        out: dict[str, Any] = {
            "holdout": "random 20% of each user's events, seed 0; the lists the pipeline serves"
        }
        for metric in (f"ndcg@{k}", f"precision@{k}", f"recall@{k}", f"coverage@{k}"):
            if ("model", metric) in values:
                out[metric] = round(values[("model", metric)], 4)
        for name in ("alone", "popularity"):
            if (name, f"ndcg@{k}") in values:
                label = "model_alone" if name == "alone" else name
                out[f"{label}_ndcg@{k}"] = round(values[(name, f"ndcg@{k}")], 4)
        return out

    def _new_model_path(self) -> Path:
        folder = Path(self.settings.model_dir).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{self.settings.model}-{time.strftime('%Y%m%d-%H%M%S')}"
        path, suffix = folder / stem, 0
        while path.exists():
            suffix += 1
            path = folder / f"{stem}~{suffix}"
        return path

    def activate(self, version_id: int) -> dict[str, Any]:
        """Make an earlier version active again (loads its files first)."""
        row = self.storage.get_model_version(version_id)
        if row is None:
            raise UnknownIdError(f"unknown model version {version_id}")
        if row.get("forgotten_at") is not None:
            raise ForgottenVersionError(row)
        model = self._load(row)  # ModelFileError (409) for a version that cannot serve
        snapshot = Snapshot.of(model, row)
        row = self.storage.activate_model_version(version_id)
        self._unloadable.pop(version_id, None)
        self._swap(dataclasses.replace(snapshot, version=row))
        return row

    def follow(self, stop: threading.Event, every_s: float = 0.1) -> None:
        """Keep the live state fresh from the database (popularity and cached user states
        from the events other processes stored or deleted, the catalogue, the running
        experiment, the active version) until ``stop`` is set: run in a background thread,
        so requests find it fresh instead of paying for the reads themselves."""
        checked_version = time.monotonic()
        while not stop.wait(every_s):
            try:
                self._follow_events()
                self.catalog.get(())
                self.running_experiment()
                if time.monotonic() - checked_version >= 1.0:
                    checked_version = time.monotonic()
                    self._follow_active_version()
                    self._follow_retired()
            except Exception:  # the database went away: try again next time
                log.exception("refreshing the live state failed")

    def _follow_active_version(self) -> None:
        """Serve the version another process activated (a retrain by another worker, a
        rollback through another process)."""
        if self.training:
            return
        active = self.storage.active_model_version()
        current = self.snapshot.version
        if active is None or (current is not None and current["id"] == active["id"]):
            return
        failed = self._unloadable.get(active["id"])
        if failed is not None and time.monotonic() - failed < _RELOAD_S:
            return  # it failed a moment ago: the snapshot served says so (start_note)
        try:
            model = self._load(active)
        except TastebudError as err:
            if failed is None:  # said once; then tried again quietly every _RELOAD_S
                log.error("cannot load the active model version %s: %s", active["id"], err)
                self._fall_back(active, err)
            self._unloadable[active["id"]] = time.monotonic()
            return
        frame = self.storage.events_frame()
        counts, demographics = self._popularity(frame), self._demographics(frame)
        self._set_counts(*counts)
        self.demographics = demographics
        self._unloadable.pop(active["id"], None)
        self._swap(Snapshot.of(model, active))
        log.info("model version %s active (activated elsewhere)", active["id"])

    # -- experiments -----------------------------------------------------------------------
    def running_experiment(self) -> dict[str, Any] | None:
        """The running experiment, re-read from the database at most every 2 s (so every
        process serving the database follows a start or a stop within that)."""
        now = time.monotonic()
        cached_at, experiment = self._experiment_cache
        if now - cached_at >= 2.0:
            experiment = self.storage.running_experiment()
            if experiment is not None and not _runnable(experiment):
                if experiment["name"] not in self._unrunnable:  # said once
                    self._unrunnable.add(experiment["name"])
                    log.error(
                        "experiment %r is not run: its stored variants are unusable (%r)",
                        experiment["name"],
                        experiment["variants"],
                    )
                experiment = None
            self._experiment_cache = (now, experiment)
        return experiment

    def forget_experiment_cache(self) -> None:
        self._experiment_cache = (-float("inf"), None)

    def snapshot_for(self, version_id: int | None) -> Snapshot:
        """The active snapshot, or the one of an earlier version (loaded once, kept while
        experiments use it)."""
        active = self.snapshot
        if version_id is None or (
            active.version is not None and active.version["id"] == version_id
        ):
            return active
        with self._versions_lock:
            cached = self._versions.get(version_id)
        if cached is not None:
            return cached
        row = self.storage.get_model_version(version_id)
        if row is None:
            raise UnknownIdError(f"unknown model version {version_id}")
        if row.get("forgotten_at") is not None:
            raise ForgottenVersionError(row)
        snapshot = Snapshot.of(self._load(row), row)
        with self._versions_lock:
            self._versions[version_id] = snapshot
            while len(self._versions) > 4:  # least recently loaded first
                self._versions.pop(next(iter(self._versions)))
        return snapshot

    # -- generators' inputs ----------------------------------------------------------------
    def user_state(self, user_id: str) -> History:
        """The user's positive history (value summed per item, in first-seen order), their
        recent positive items (newest first) and the items whose latest event is a dislike
        or a low rating (left out of the history and of their lists).

        Read from their latest ``history_limit`` events and kept (``state_cache_users``
        users, for at most ``state_cache_s``) until their events change: this process's
        writes drop it at once, the other processes' when :meth:`follow` sees them."""
        capacity = self.settings.state_cache_users
        if capacity > 0:
            now = time.monotonic()
            with self._states_lock:
                entry = self._states.get(user_id)
                if entry is not None and entry[1] > now:
                    self._states.move_to_end(user_id)
                    self.state_cache_hits += 1
                    return History.unpack(entry[0])
                epoch = self._states_epoch  # before the read: a drop during it wins
            self.state_cache_misses += 1
        state = self._read_state(user_id)
        if capacity > 0:
            expires = time.monotonic() + self.settings.state_cache_s
            with self._states_lock:
                if self._states_epoch == epoch:
                    self._states[user_id] = (state.key, expires)
                    self._states.move_to_end(user_id)
                    while len(self._states) > capacity:
                        self._states.popitem(last=False)
        return state

    def _read_state(self, user_id: str) -> History:
        """:meth:`user_state` from the database: plain Python on one lean query."""
        events = self.storage.recent_events(user_id, self.settings.history_limit)
        return History.from_events(events, self.rules)

    @staticmethod
    def session_state(items: Iterable[str]) -> History:
        """The state of an anonymous session given its items (oldest first)."""
        return History.of_session(items)

    def new_items(self, n: int, days: float) -> list[tuple[str, float]]:
        """The ``n`` newest available items of the last ``days`` (id, created_at), re-read
        from the database at most every second."""
        now = time.monotonic()
        key = (n, days)
        cached = self._new_cache.get(key)
        if cached is None or now - cached[0] >= 1.0:
            rows = self.storage.newest_items(n, since=time.time() - days * SECONDS_PER_DAY)
            cached = (now, [(str(r["id"]), float(r["created_at"])) for r in rows])
            self._new_cache = {key: cached}
        return cached[1]

    # -- the pipeline ----------------------------------------------------------------------
    def recommend(
        self,
        state: History,
        k: int,
        *,
        snapshot: Snapshot | None = None,
        options: PipelineSettings | None = None,
        filters: Filters | None = None,
        exclude: Iterable[str] = (),
        attributes: Callable[[], Mapping[str, Any] | None] | None = None,
        keep_rest: bool = True,
    ) -> Recommendations[Snapshot]:
        """The top ``k`` of the pipeline (module :mod:`tastebud.service.pipeline`) for a
        state; never its history's items, its dislikes, ``exclude``, unavailable or deleted
        items. ``attributes`` (called only when needed) gives a cold user's attributes.

        A list built from the model's scores is kept for ``list_cache_s`` seconds and served
        again for the same history (every event of the user changes it, so their own events
        show at once), model version, options, filters and ``k``, after checking its items
        are still available; other users' events and new items reach it when it expires.
        Lists of users without a usable history follow live popularity and are not kept.
        ``keep_rest=False`` (no exploration slot to fill) leaves ``rest`` empty: cheaper."""
        snapshot = self.snapshot if snapshot is None else snapshot
        options = self.settings.pipeline if options is None else options
        filters = Filters() if filters is None else filters
        key = None
        if self.settings.list_cache_s > 0 and snapshot.model is not None and state.values:
            # only atomic values (text, numbers, tuples of them) in keys and entries: the
            # garbage collector stops tracking those, so a full cache adds nothing to the
            # walk of its full collections (Candidate objects did: 80 per list)
            key = (
                snapshot.serial,
                None if options is self.settings.pipeline else options.model_dump_json(),
                filters or None,
                k,
                tuple(sorted(exclude)),
                state.key,
                keep_rest,
            )
            hit = self._cached_list(key, snapshot)
            if hit is not None:
                return hit
        query = Query(state, k, filters, frozenset(exclude), attributes, options)
        result = self.pipeline.run(snapshot, self, query, keep_rest=keep_rest)
        if key is not None and result.scored:
            now = time.monotonic()
            entry = (
                now + self.settings.list_cache_s,
                tuple(c.packed() for c in result.chosen),
                tuple(c.packed() for c in result.rest),
            )
            with self._lists_lock:
                # kept in insertion order, which is expiry order (one lifetime for all):
                # expired lists go from the front, so the heap holds only live ones
                self._lists.pop(key, None)
                self._lists[key] = entry
                while self._lists and (
                    len(self._lists) > 50_000 or next(iter(self._lists.values()))[0] < now
                ):
                    self._lists.popitem(last=False)
        return result

    def _cached_list(
        self, key: tuple[Any, ...], snapshot: Snapshot
    ) -> Recommendations[Snapshot] | None:
        """The kept list of ``key`` (made with ``snapshot``: its serial is in the key)."""
        with self._lists_lock:
            entry = self._lists.get(key)
        if entry is None or entry[0] < time.monotonic():
            self.list_cache_misses += 1
            return None
        _, chosen, rest = entry
        rows = self.catalog.get(c[0] for c in chosen)
        if len(rows) < len(chosen) or not all(row["available"] for row in rows.values()):
            self.list_cache_misses += 1  # an item was deleted or made unavailable: rebuild
            return None
        self.list_cache_hits += 1

        def still_available() -> list[Candidate]:
            more = self.catalog.get(c[0] for c in rest)
            rows.update(more)
            return [Candidate.unpack(c) for c in rest if more.get(c[0], {}).get("available")]

        return Recommendations(
            [Candidate.unpack(c) for c in chosen], still_available, rows, snapshot
        )

    # -- the live state the pipeline reads (tastebud.pipeline.LiveState) -------------------
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

    def explain(
        self, snapshot: Snapshot, history: Mapping[str, float], items: list[str]
    ) -> dict[str, str]:
        """For each recommended item, the history item most similar to it."""
        return snapshot.because(history, items)


def _delete_model_folder(row: Mapping[str, Any], model_dir: Path) -> None:
    """Delete a version's folder when it lies inside ``model_dir`` (a path from the database
    is never trusted further than that)."""
    path = Path(str(row["path"])).resolve()
    if not path.exists():
        return
    if model_dir not in path.parents:
        log.warning(
            "model version %s learned from a deleted user but its folder %s is outside "
            "model_dir %s: delete it by hand",
            row["id"],
            path,
            model_dir,
        )
        return
    try:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    except OSError as err:
        log.error("cannot delete the folder of model version %s: %s", row["id"], err)
        return
    log.info("deleted the folder of model version %s: it learned from a deleted user", row["id"])


class ForgottenVersionError(TastebudError):
    """A model version that learned from a user deleted since: never served again."""

    def __init__(self, row: Mapping[str, Any]) -> None:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(row["forgotten_at"])))
        super().__init__(
            f"model version {row['id']} was trained on the events of a user deleted since "
            f"({when}): it cannot be activated or served again; retrain for a version "
            "without them"
        )


class _Coalesced:
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


class _FileLock:
    """An exclusive ``flock`` on a file, as a context manager yielding whether it was taken
    (``wait=False`` does not wait for another holder)."""

    def __init__(self, path: Path, wait: bool) -> None:
        self.path = path
        self.wait = wait
        self._file: Any = None

    def __enter__(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+")  # closed in __exit__
        flags = fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB)
        try:
            fcntl.flock(self._file, flags)
        except BlockingIOError:
            self._file.close()
            self._file = None
            return False
        return True

    def __exit__(self, *exc_info: object) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


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


#: Temporary name of :class:`~tastebud.pipeline.History` while the routes move (issue 18).
UserState = History
