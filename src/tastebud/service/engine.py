"""The live model behind the service: the facade the routes call.

Real time: a list is built from the user's latest events (``history_limit``, read by one
indexed query) folded into the active model (``recommend_from_history``) by the pipeline
(:mod:`tastebud.pipeline`). The state read from those events (:class:`History`) is kept per
user until their events change: this process's own writes drop it before they are answered,
so an event committed before its 2xx changes the very next list; the other processes'
writes are seen by :meth:`Engine.follow`, which tails the events table by ``seq`` (and the
deletions log) every 0.1 s. Retraining builds a new model from all events in a background
thread and swaps one reference (:class:`Snapshot`): requests in flight keep the snapshot they
started with, so a swap never fails a request.

The :class:`Engine` composes four parts, each with one job and its own locks:

- :mod:`tastebud.service.versions` (``engine.versions``): training, loading, activation, the
  fallback to a loadable version, offline metrics, and the serving snapshot;
- :mod:`tastebud.service.live` (``engine.live``): popularity counted from the event tail, the
  deletions log (users and items deleted by other processes), the demographics, the newest
  items -- the live state the pipeline reads (:class:`tastebud.pipeline.LiveState`);
- :mod:`tastebud.service.caches` (``engine.states``, ``engine.lists``, ``engine.experiment``):
  users' states, finished lists, the earlier versions experiments serve, the running
  experiment;
- the catalogue (:mod:`tastebud.service.catalog`) and the catalogue's content similarities
  (:mod:`tastebud.service.similar`).

What spans the parts is the facade's own: :meth:`Engine.recommend` (the list cache around
the pipeline), :meth:`Engine.forget_user` (a user this process deleted leaves every part),
the follower thread's loop (:meth:`Engine.follow`) and :meth:`Engine.close`.

The request path (``user_state``, ``recommend``, ``popular``, ``running_experiment``,
``events_stored``, ``snapshot``) costs what it did when this was one class: the methods the
routes call per request are the parts' own methods, bound once as the Engine's attributes
(no delegating frame), and ``snapshot`` is a plain attribute the versions part sets at every
swap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar, cast, overload

from tastebud.pipeline import (
    Demographics,
    EventRules,
    Filters,
    History,
    Pipeline,
    PipelineSettings,
    Query,
    Recommendations,
)
from tastebud.service.caches import EarlierVersions, KeptLists, RunningExperiment, UserStates
from tastebud.service.catalog import Catalog
from tastebud.service.live import Live
from tastebud.service.settings import Settings
from tastebud.service.similar import (
    POPULAR_BASIS,
    CatalogueContent,
    SimilarAnswer,
    popular_pairs,
)
from tastebud.service.storage import ModelVersionRow, Storage
from tastebud.service.versions import ForgottenVersionError, Snapshot, Versions

__all__ = ["Engine", "ForgottenVersionError", "Snapshot"]

log = logging.getLogger("tastebud.service")

T = TypeVar("T")


class _Of(Generic[T]):
    """A read-only attribute of the Engine that is its part's attribute ``name``
    (``Engine.training`` reads ``engine.versions.training``)."""

    def __init__(self, part: str, name: str) -> None:
        self._part = part
        self._name = name

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> _Of[T]: ...
    @overload
    def __get__(self, obj: object, owner: type[Any]) -> T: ...
    def __get__(self, obj: object | None, owner: type[Any]) -> _Of[T] | T:
        if obj is None:
            return self
        return cast(T, getattr(getattr(obj, self._part), self._name))

    def __set__(self, obj: object, value: object) -> None:
        raise AttributeError(f"read-only: it is the Engine's {self._part}.{self._name}")


class Engine:
    """Owns the serving snapshot, the live state and the caches; answers the routes."""

    def __init__(self, settings: Settings, storage: Storage) -> None:
        self._settings = settings
        self.storage = storage
        self.catalog = Catalog(storage, settings.pipeline)
        #: item similarities from the catalogue's metadata, for items no model can compare
        self.content = CatalogueContent(storage)
        self.rules = EventRules(
            event_weights=settings.event_weights,
            dislike_below_rating=settings.dislike_below_rating,
        )
        self.pipeline = Pipeline(settings.pipeline)
        self.states = UserStates(settings, storage, self.rules)
        self.lists = KeptLists(self.catalog)
        self.experiment = RunningExperiment(storage)
        self._earlier = EarlierVersions()
        self.live = Live(settings, storage, self.catalog, self.rules, self.states, self._drop_kept)
        self.versions = Versions(settings, storage, self.live, self._earlier)
        self.snapshot: Snapshot = self.versions.snapshot  # set at every swap (_swapped)
        self.versions.on_swap = self._swapped
        #: called after every swap of the serving snapshot (``create_app(freeze_heap=True)``
        #: freezes the garbage collector's view of the heap there)
        self.after_swap: Callable[[], None] | None = None
        # The request path's calls, bound once to the part that answers them: a call costs
        # what it did when they were the Engine's own methods (see the module docstring).
        self.user_state = self.states.get
        self.popular = self.live.popular
        self.events_stored = self.live.events_stored
        self.running_experiment = self.experiment.get
        self.snapshot_for = self.versions.snapshot_for

    def _swapped(self) -> None:
        # the versions part's latest snapshot (not an argument: of two swaps racing, the
        # one it holds last is the one served)
        self.snapshot = self.versions.snapshot
        if self.after_swap is not None:
            self.after_swap()

    @property
    def settings(self) -> Settings:
        return self._settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        """New settings, read by every part from their next call (tests and benchmarks
        turn a cache off this way)."""
        self._settings = settings
        for part in (self.states, self.live, self.versions):
            part.settings = settings

    # -- what the admin and health routes read: attributes of the parts -------------------
    #: whether a retrain is running now
    training = _Of[bool]("versions", "training")
    #: why the last retrain of this process made no version (None: it did, or none ran)
    retrain_problem = _Of[str | None]("versions", "retrain_problem")
    #: why this process does not serve the database's active version (its files cannot be
    #: loaded) and what it serves instead; None while it serves the active version
    start_note = _Of[str | None]("versions", "start_note")
    #: whether the retrain queued by a deletion is waiting or running
    forgetting = _Of[bool]("versions", "forgetting")
    #: what users sharing attributes liked (learned at start-up, every retrain, deletions)
    demographics = _Of[Demographics]("live", "demographics")
    state_cache_hits = _Of[int]("states", "hits")
    state_cache_misses = _Of[int]("states", "misses")
    list_cache_hits = _Of[int]("lists", "hits")
    list_cache_misses = _Of[int]("lists", "misses")

    # -- start, follow, close --------------------------------------------------------------
    def start(self) -> None:
        """Count the popularity, learn who likes what by user attributes, read the
        catalogue, and serve the active model version (if any).

        An active version whose files cannot be loaded (a deleted or moved folder, a
        truncated ``arrays.npz``) does not stop the start: the newest loadable version
        trained before it is served instead (else the newest loadable one at all, else
        popular items), and :attr:`start_note` says so. The database is left as it is --
        the version an operator activated stays the active one -- and :meth:`follow`
        tries the active version again every minute, so a folder put back is served
        without a restart."""
        self.live.start()
        self.catalog.reload()
        self.versions.start()

    def follow(self, stop: threading.Event, every_s: float = 0.1) -> None:
        """Keep the live state fresh from the database (popularity and kept user states
        from the events other processes stored or deleted, the newest items, the catalogue,
        the running experiment, the active version) until ``stop`` is set: run in a
        background thread, so requests find it fresh instead of paying for the reads
        themselves."""
        checked_version = time.monotonic()
        while not stop.wait(every_s):
            try:
                self.live.follow_events()
                self.live.refresh_new_items()
                self.catalog.get(())
                self.running_experiment()
                if time.monotonic() - checked_version >= 1.0:
                    checked_version = time.monotonic()
                    self.versions.follow_active()
                    self.versions.follow_retired()
            except Exception:  # the database went away: try again next time
                log.exception("refreshing the live state failed")

    def close(self, timeout_s: float = 60.0) -> bool:
        """At shutdown, before the storage is closed: start no more background work of
        deletions and wait up to ``timeout_s`` for what runs (a retrain, a relearning), so
        none of it writes to a database or model folder after the service has stopped.
        Returns whether everything finished in time."""
        deadline = time.monotonic() + timeout_s

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        done = self.versions.stop_forgetting(left())
        done = self.live.stop_relearning(left()) and done
        return self.versions.wait_for_training(left()) and done

    # -- model versions --------------------------------------------------------------------
    def retrain(self, *, wait: bool = True) -> ModelVersionRow | None:
        """Fit the configured model on every stored event, save it as a new version,
        activate it and swap it in (:meth:`Versions.retrain
        <tastebud.service.versions.Versions.retrain>`); ``None`` without ``wait`` when one
        runs already."""
        return self.versions.retrain(wait=wait)

    def activate(self, version_id: int) -> ModelVersionRow:
        """Make an earlier version active again (loads its files first)."""
        return self.versions.activate(version_id)

    def has_new_events(self) -> bool:
        """Whether events were stored or deleted since the active version was trained."""
        return self.versions.has_new_events()

    # -- writes elsewhere ------------------------------------------------------------------
    def forget_item(self, item_id: str) -> None:
        """An item was deleted with its events."""
        self.live.forget_item(item_id)

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
        demographics. When they had events, a retrain is queued; once a version trained
        after the deletion is active, the folders of the versions that learned from them
        are deleted (:mod:`tastebud.service.versions`).

        The other processes serving the database follow the deletions log within 0.1 s
        (:mod:`tastebud.service.live`); this one's follower skips the user's entry."""
        rows = list(events)
        self.live.skip_in_log(user_id)
        self.live.forget_events(rows)
        self.states.forget([user_id])
        self._drop_kept()
        if attributes:
            self.live.learn_demographics(self.storage.events_frame())
        if rows:
            self.versions.retrain_after_deletion()

    def _drop_kept(self) -> None:
        """Drop every kept list and every earlier version loaded for experiments."""
        self.lists.clear()
        self._earlier.clear()

    def forget_experiment_cache(self) -> None:
        """This process started or stopped an experiment: read it again at once."""
        self.experiment.forget()

    # -- answers ---------------------------------------------------------------------------
    @staticmethod
    def session_state(items: Iterable[str]) -> History:
        """The state of an anonymous session given its items (oldest first)."""
        return History.of_session(items)

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
        """The top ``k`` of the pipeline (:mod:`tastebud.pipeline`) for a state; never its
        history's items, its dislikes, ``exclude``, unavailable or deleted items.
        ``attributes`` (called only when needed) gives a cold user's attributes.

        A list built from the model's scores is kept for ``list_cache_s`` seconds and served
        again for the same history (every event of the user changes it, so their own events
        show at once), model version, options, filters and ``k``, after checking its items
        are still available; other users' events and new items reach it when it expires.
        Lists of users without a usable history follow live popularity and are not kept.
        ``keep_rest=False`` (no exploration slot to fill) leaves ``rest`` empty: cheaper."""
        settings = self._settings
        snapshot = self.snapshot if snapshot is None else snapshot
        options = settings.pipeline if options is None else options
        filters = Filters() if filters is None else filters
        key = None
        if settings.list_cache_s > 0 and snapshot.model is not None and state.values:
            # only atomic values (text, numbers, tuples of them): see tastebud.service.caches
            key = (
                snapshot.serial,
                None if options is settings.pipeline else options.model_dump_json(),
                filters or None,
                k,
                tuple(sorted(exclude)),
                state.key,
                keep_rest,
            )
            hit = self.lists.get(key, snapshot)
            if hit is not None:
                return hit
        query = Query(state, k, filters, frozenset(exclude), attributes, options)
        result = self.pipeline.run(snapshot, self.live, query, keep_rest=keep_rest)
        if key is not None and result.scored:
            self.lists.put(key, result, settings.list_cache_s)
        return result

    def similar(self, item_id: str, n: int) -> SimilarAnswer:
        """Up to ``n`` items similar to ``item_id`` (module :mod:`tastebud.service.similar`):
        by the serving model when it can compare the item, else by the catalogue's metadata,
        else popular items labelled as such. Unavailable items are not yet left out."""
        snapshot = self.snapshot
        model = snapshot.model
        if model is not None and model.supports_similar_items and item_id in snapshot.index:
            table = model.similar_items([item_id], k=max(1, min(n, len(model.items_) - 1)))
            version: Mapping[str, Any] = snapshot.version or {}
            pairs = [
                (str(i), float(s)) for i, s in zip(table["similar"], table["score"], strict=True)
            ]
            basis = f"item similarity of model version {version.get('id')} ({version.get('model')})"
            return SimilarAnswer("model", basis, pairs)
        content = self.content.similar(item_id, n)
        if content is not None and content[1]:
            return SimilarAnswer("content", content[0], content[1])
        return SimilarAnswer("popular", POPULAR_BASIS, popular_pairs(self.popular, item_id, n))
