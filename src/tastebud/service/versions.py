"""The model versions a service serves: training, loading, activation, and the one
:class:`Snapshot` that requests read.

Retraining (:meth:`Versions.retrain`) fits the configured model on every stored event in a
background thread and goes build -> save -> record -> activate -> swap: every step that can
fail runs before the activation, so a failed retrain leaves the active version -- in the
database and in this process -- as it was. The swap replaces one reference
(:attr:`Versions.snapshot`, copied to ``Engine.snapshot``): requests in flight keep the
snapshot they started with, so a swap never fails a request. One retrain runs at a time in
a process (a lock) and across the processes sharing ``model_dir`` (a file lock there); the
others load the version it activates (:meth:`Versions.follow_active`, which is also how a
rollback made through one process reaches the others).

An active version whose files cannot be loaded (a deleted or moved folder, a truncated
``arrays.npz``) does not stop a start: the newest loadable version trained before it is
served instead (else the newest loadable one at all, else popular items), and
:attr:`Versions.start_note` says so; the database keeps the operator's choice, and the active
version is tried again every :data:`_RELOAD_S` seconds.

A version that learned from a user deleted since is never served again
(:class:`ForgottenVersionError`): a deletion queues a retrain, and once a version trained
after it is active the folders of the versions that learned from the user are deleted.

Each version is scored first on a holdout (:meth:`Versions.offline_metrics`): the lists the
service's pipeline serves, beside the model alone and popularity.

A version can also come from a folder trained elsewhere (Spark, a notebook), registered by
:mod:`tastebud.service.registration` under the same lock as a retrain; it is loaded,
followed, replaced and retired like the versions trained here.
"""

from __future__ import annotations

import dataclasses
import fcntl
import itertools
import logging
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tastebud.data.dataset import Dataset
from tastebud.errors import ModelFileError, TastebudError, UnknownIdError
from tastebud.models import Recommender, create, load
from tastebud.pipeline import ModelView, PipelineConfig
from tastebud.service.caches import EarlierVersions
from tastebud.service.live import Coalesced, Live
from tastebud.service.settings import Settings
from tastebud.service.storage import FORGET_MARK, ModelVersionRow, Storage
from tastebud.service.training import TrainingData, build_dataset, usable_events

log = logging.getLogger("tastebud.service")

#: Serial numbers of snapshots.
_SNAPSHOTS = itertools.count(1)
#: How often (seconds) the follower tries again to load an active version that failed to load.
_RELOAD_S = 60.0


@dataclasses.dataclass(frozen=True)
class Snapshot(ModelView):
    """An immutable serving state: a :class:`~tastebud.pipeline.ModelView` of the model
    (None before the first training) and its version row."""

    version: ModelVersionRow | None = None
    #: a number no other snapshot of this process has (what kept lists are keyed by)
    serial: int = dataclasses.field(default_factory=lambda: next(_SNAPSHOTS), compare=False)

    @classmethod
    def of(  # type: ignore[override]  # a version beside the model
        cls, model: Recommender | None, version: ModelVersionRow | None
    ) -> Snapshot:
        if model is not None:
            model.warm_up()  # its search indexes, before a request needs them
        ids, index = ModelView.ids_of(model)
        return cls(model, ids, index, version=version)


class Versions:
    """Trains, loads and activates model versions, and holds the serving snapshot."""

    def __init__(
        self, settings: Settings, storage: Storage, live: Live, earlier: EarlierVersions
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.live = live
        self.earlier = earlier
        self.snapshot = Snapshot.of(None, None)  # replaced whole, never mutated
        #: called after every swap of :attr:`snapshot`
        self.on_swap: Callable[[], None] | None = None
        self._train_lock = threading.Lock()
        #: why the last retrain of this process made no version (None: it did, or none ran)
        self.retrain_problem: str | None = None
        #: why this process does not serve the database's active version (its files cannot
        #: be loaded) and what it serves instead; None while it serves the active version
        self.start_note: str | None = None
        self._unloadable: dict[int, float] = {}  # version id -> monotonic time it failed
        self._forget_retrain = Coalesced(self._retrain_forgetting, "tastebud-forget-retrain")

    def _swap(self, snapshot: Snapshot, note: str | None = None) -> None:
        self.snapshot = snapshot
        self.start_note = note
        if self.on_swap is not None:
            self.on_swap()

    @property
    def training(self) -> bool:
        """Whether a retrain is running now."""
        return self._train_lock.locked()

    # -- loading ---------------------------------------------------------------------------
    def start(self) -> None:
        """Serve the active version, if any (see the module's docstring when its files
        cannot be loaded)."""
        active = self.storage.active_model_version()
        if active is None:
            return
        try:
            model = self.load(active)
        except TastebudError as err:
            self._unloadable[active["id"]] = time.monotonic()
            self._fall_back(active, err)
        else:
            self._swap(Snapshot.of(model, active))

    def _fall_back(self, active: ModelVersionRow, problem: TastebudError) -> None:
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
                model = self.load(row)
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
    def load(version: Mapping[str, Any]) -> Recommender:
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

    def snapshot_for(self, version_id: int | None) -> Snapshot:
        """The active snapshot, or the one of an earlier version (loaded once, kept while
        experiments use it)."""
        active = self.snapshot
        if version_id is None or (
            active.version is not None and active.version["id"] == version_id
        ):
            return active
        cached = self.earlier.get(version_id)
        if cached is not None:
            return cached
        row = self.storage.get_model_version(version_id)
        if row is None:
            raise UnknownIdError(f"unknown model version {version_id}")
        if row.get("forgotten_at") is not None:
            raise ForgottenVersionError(row)
        snapshot = Snapshot.of(self.load(row), row)
        self.earlier.put(version_id, snapshot)
        return snapshot

    def activate(self, version_id: int) -> ModelVersionRow:
        """Make an earlier version active again (loads its files first)."""
        row = self.storage.get_model_version(version_id)
        if row is None:
            raise UnknownIdError(f"unknown model version {version_id}")
        if row.get("forgotten_at") is not None:
            raise ForgottenVersionError(row)
        model = self.load(row)  # ModelFileError (409) for a version that cannot serve
        snapshot = Snapshot.of(model, row)
        row = self.storage.activate_model_version(version_id)
        self._unloadable.pop(version_id, None)
        self._swap(dataclasses.replace(snapshot, version=row))
        return row

    def follow_active(self) -> None:
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
            model = self.load(active)
        except TastebudError as err:
            if failed is None:  # said once; then tried again quietly every _RELOAD_S
                log.error("cannot load the active model version %s: %s", active["id"], err)
                self._fall_back(active, err)
            self._unloadable[active["id"]] = time.monotonic()
            return
        live = self.live
        mark = live.forget_mark()  # before the read: see Live.set_counts
        frame = self.storage.events_frame()
        counts, demographics = live.popularity(frame), live.demographics_of(frame)
        live.set_counts(*counts, read_at=mark)
        live.demographics = demographics
        self._unloadable.pop(active["id"], None)
        self._swap(Snapshot.of(model, active))
        log.info("model version %s active (activated elsewhere)", active["id"])

    # -- training --------------------------------------------------------------------------
    def training_data(self) -> TrainingData:
        """Positive interactions of the usable stored events (summed per pair; no dataset
        when fewer than ``min_events_to_train``), the events frame they came from, and the
        rows a model cannot use, left out and counted by reason (module
        :mod:`tastebud.service.training`)."""
        frame = self.storage.events_frame()
        usable, skipped = usable_events(frame)
        values = self.live.event_values(frame) if len(frame) else np.zeros(0)
        keep = usable & (values > 0)
        if int(keep.sum()) < self.settings.min_events_to_train:
            return TrainingData(None, frame, skipped)
        positive = frame.loc[keep, ["user", "item", "timestamp"]].assign(weight=values[keep])
        # Every catalogue item, so that items without events are known (cold) to the model,
        # with its title and attributes for content models.
        dataset, more, capped = build_dataset(positive, self.storage.all_items())
        return TrainingData(dataset, frame, {**skipped, **more}, capped)

    def has_new_events(self) -> bool:
        """Whether events were stored or deleted since the active version was trained."""
        version = self.snapshot.version
        if version is None:
            return True
        metrics = version.get("metrics") or {}
        # a version registered from outside (tastebud.service.registration) has no last_seq,
        # so that deleting any user marks it; it is up to date with the events stored then
        trained_seq = metrics.get("last_seq", metrics.get("registered_seq"))
        return (
            trained_seq is None
            or self.storage.last_seq() != trained_seq
            or self.storage.count_events() != version["n_events"]
        )

    def retrain(self, *, wait: bool = True) -> ModelVersionRow | None:
        """Fit the configured model on every stored event, save it as a new version,
        activate it and swap it in; returns the version row.

        With ``wait=False`` returns ``None`` at once when a retrain is already running, in
        this process or in another worker sharing ``model_dir`` (a file lock there).
        Raises :class:`TastebudError` when there are too few events.
        """
        if not self._train_lock.acquire(blocking=wait):
            return None
        try:
            with retrain_lock(Path(self.settings.model_dir), wait) as locked:
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

    def _retrain(self) -> ModelVersionRow:
        """Train, save and record a new version, then activate and serve it.

        Every step that can fail runs before the activation (fitting, saving, the version
        row, the popularity and demographics of the new state), so a failed retrain leaves
        the active version -- in the database and in this process -- as it was. A folder
        saved on the way is removed again; the version row is written only once its files
        are saved, and stays inactive when the activation itself fails."""
        start = time.perf_counter()
        mark = self.live.forget_mark()  # before the read: see Live.set_counts
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
        counts = self.live.popularity(frame)
        demographics = self.live.demographics_of(frame)
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
        self.live.set_counts(*counts, read_at=mark)
        self.live.demographics = demographics
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
        return new_model_path(Path(self.settings.model_dir), self.settings.model)

    def wait_for_training(self, timeout_s: float) -> bool:
        """Whether a retrain under way (if any) ended within ``timeout_s``."""
        if self._train_lock.acquire(timeout=timeout_s):
            self._train_lock.release()
            return True
        return False

    # -- versions that learned from deleted users ------------------------------------------
    @property
    def forgetting(self) -> bool:
        """Whether the retrain queued by a deletion is waiting or running."""
        return self._forget_retrain.busy

    def retrain_after_deletion(self) -> None:
        """Queue a retrain without a user just deleted (:meth:`_retrain_forgetting`); asks
        that come while one waits or runs make one more."""
        self._forget_retrain.request()

    def stop_forgetting(self, timeout_s: float) -> bool:
        """Queue no more retrains after deletions; whether one under way ended within
        ``timeout_s``."""
        return self._forget_retrain.close(timeout_s)

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

    def _forget_in_versions(self, version: ModelVersionRow, frame: pd.DataFrame) -> None:
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

    def follow_retired(self) -> None:
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


def new_model_path(model_dir: Path, label: str) -> Path:
    """A folder name for a new version in ``model_dir`` (created), not taken yet:
    ``label-YYYYmmdd-HHMMSS``, with ``~1``, ``~2``... when two come within a second."""
    folder = model_dir.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{label}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, suffix = folder / stem, 0
    while path.exists():
        suffix += 1
        path = folder / f"{stem}~{suffix}"
    return path


def retrain_lock(model_dir: Path, wait: bool) -> _FileLock:
    """The lock on ``model_dir`` that one retrain -- or one registration of a folder trained
    elsewhere -- holds at a time across the processes sharing it; as a context manager it
    yields whether it was taken (``wait=False`` does not wait for another holder)."""
    return _FileLock(model_dir / ".retrain.lock", wait)


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
