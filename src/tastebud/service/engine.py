"""The live model behind the service: training from stored events, hot swaps, real-time lists.

Real time without per-user caches: every request reads the user's latest events from the
database (one indexed query) and scores them with the active model's fold-in
(``recommend_from_history``), so an event committed before its 2xx changes the very next
list. Retraining builds a new model from all events in a background thread and swaps one
reference (:class:`Snapshot`): requests in flight keep the snapshot they started with, so a
swap never fails a request.

Live popularity (the answer for users without a usable history) counts positive events per
item. It follows the database rather than this process's requests: each call reads the events
stored since the last one (by ``seq``), so several processes serving one database agree. It is
recounted from scratch at every retrain, which also settles the rare miss (an event committed
out of ``seq`` order on PostgreSQL, a deletion made by another process).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tastebud.data.dataset import Dataset
from tastebud.errors import ModelFileError, TastebudError, UnknownIdError
from tastebud.models import Recommender, create, load
from tastebud.service.settings import Settings
from tastebud.service.storage import Storage

log = logging.getLogger("tastebud.service")


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """An immutable serving state: the model (None before the first training) and its
    version row."""

    model: Recommender | None
    version: dict[str, Any] | None


class Engine:
    """Owns the active snapshot, live popularity, and retraining."""

    def __init__(self, settings: Settings, storage: Storage) -> None:
        self.settings = settings
        self.storage = storage
        self.snapshot = Snapshot(None, None)  # replaced whole, never mutated
        self._train_lock = threading.Lock()
        self._counts_lock = threading.Lock()
        self._positive_counts: Counter[str] = Counter()
        self._counted_seq = 0  # events with seq <= this are in _positive_counts

    @property
    def training(self) -> bool:
        """Whether a retrain is running now."""
        return self._train_lock.locked()

    # -- start-up --------------------------------------------------------------------------
    def start(self) -> None:
        """Load the active model version (if any) and count the popularity."""
        self._recount(self.storage.events_frame())
        active = self.storage.active_model_version()
        if active is not None:
            try:
                model = self._load(active)
            except TastebudError as err:  # a moved or deleted model folder
                log.warning("cannot load the active model version %s: %s", active["id"], err)
            else:
                self.snapshot = Snapshot(model, active)

    @staticmethod
    def _load(version: Mapping[str, Any]) -> Recommender:
        """The model of a version row; :class:`ModelFileError` if it cannot serve."""
        try:
            model = load(version["path"])
        except OSError as err:
            raise ModelFileError(
                f"model version {version['id']}: cannot read {version['path']}: {err}"
            ) from err
        if not model.supports_fold_in:
            raise ModelFileError(
                f"model version {version['id']} ({version['model']}) cannot recommend from a "
                "live history, so the service cannot serve it"
            )
        return model

    # -- events ----------------------------------------------------------------------------
    def event_values(self, frame: pd.DataFrame) -> np.ndarray:
        """Training value of each event row (settings.event_weights; ratings scale by value)."""
        weights = self.settings.event_weights
        types = frame["type"].astype(str)
        base = types.map(lambda t: weights.get(t, 1.0)).to_numpy(dtype=np.float64)
        value = frame["value"].to_numpy(dtype=np.float64)
        is_rating = (types == "rating").to_numpy() & np.isfinite(value)
        return np.where(is_rating, base * np.where(is_rating, value, 1.0), base)

    def _positive_items(self, frame: pd.DataFrame) -> list[str]:
        if not len(frame):
            return []
        return frame.loc[self.event_values(frame) > 0, "item"].astype(str).tolist()

    def _recount(self, frame: pd.DataFrame) -> None:
        """Popularity from all events (``frame`` from ``storage.events_frame()``)."""
        counts = Counter(self._positive_items(frame))
        last = int(frame["seq"].max()) if len(frame) else 0
        with self._counts_lock:
            self._positive_counts = counts
            self._counted_seq = last

    def _sync_counts(self) -> None:
        """Count the events stored since the last call (by any process)."""
        frame = self.storage.events_frame(since_seq=self._counted_seq)  # outside the lock
        if not len(frame):
            return
        with self._counts_lock:  # another thread may have counted some of them meanwhile
            fresh = frame[frame["seq"] > self._counted_seq]
            if len(fresh):
                self._positive_counts.update(self._positive_items(fresh))
                self._counted_seq = int(fresh["seq"].max())

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

    def forget_item(self, item_id: str) -> None:
        with self._counts_lock:
            self._positive_counts.pop(item_id, None)

    def popular(self, n: int) -> list[tuple[str, float]]:
        """The ``n`` items with the most positive events (ties: lower id first)."""
        self._sync_counts()
        with self._counts_lock:
            ranked = sorted(self._positive_counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return [(item, float(count)) for item, count in ranked[:n]]

    # -- training --------------------------------------------------------------------------
    def training_data(self) -> tuple[Dataset | None, pd.DataFrame]:
        """Positive interactions of all stored events (summed per pair; ``None`` when fewer
        than ``min_events_to_train``) and the events frame they came from."""
        frame = self.storage.events_frame()
        values = self.event_values(frame) if len(frame) else np.zeros(0)
        keep = values > 0
        positive = frame.loc[keep, ["user", "item", "timestamp"]].assign(weight=values[keep])
        if len(positive) < self.settings.min_events_to_train:
            return None, frame
        # Every catalogue item, so that items without events are known (cold) to the model.
        items = pd.DataFrame({"item": [i["id"] for i in self._all_items()]})
        dataset = Dataset.from_frame(
            positive,
            weight="weight",
            timestamp="timestamp",
            items=items if len(items) else None,
            duplicates="sum",
            name="events",
        )
        return dataset, frame

    def _all_items(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            page = self.storage.list_items(limit=10_000, offset=len(out))
            out += page
            if len(page) < 10_000:
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

        With ``wait=False`` returns ``None`` at once when a retrain is already running.
        Raises :class:`TastebudError` when there are too few events.
        """
        if not self._train_lock.acquire(blocking=wait):
            return None
        try:
            start = time.perf_counter()
            dataset, frame = self.training_data()
            if dataset is None:
                raise TastebudError(
                    f"too few positive events to train ({len(frame)} events stored; "
                    f"min_events_to_train={self.settings.min_events_to_train})"
                )
            model = create(self.settings.model, **self.settings.model_params).fit(dataset)
            seconds = time.perf_counter() - start
            path = self._new_model_path()
            model.save(path)
            version = self.storage.add_model_version(
                model=self.settings.model,
                params=model.get_params(),
                path=str(path),
                metrics={
                    "fit_seconds": round(seconds, 3),
                    "users": dataset.n_users,
                    "items": dataset.n_items,
                    "interactions": len(dataset),
                    "last_seq": int(frame["seq"].max()),
                },
                n_events=len(frame),
            )
            version = self.storage.activate_model_version(version["id"])
            self.snapshot = Snapshot(model, version)
            self._recount(frame)
            log.info("model version %s active (%.2fs)", version["id"], seconds)
            return version
        finally:
            self._train_lock.release()

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
        model = self._load(row)
        row = self.storage.activate_model_version(version_id)
        self.snapshot = Snapshot(model, row)
        return row

    # -- recommending ----------------------------------------------------------------------
    def user_history(self, user_id: str) -> tuple[pd.DataFrame, set[str]]:
        """The user's positive history (item, value; summed per item) and the items whose
        latest event is a dislike (left out of the history and of their lists)."""
        events = self.storage.user_events(user_id, limit=self.settings.history_limit)
        if not events:
            return _empty_history(), set()
        frame = pd.DataFrame(
            {
                "item": [str(e["item_id"]) for e in events],
                "type": [str(e["type"]) for e in events],
                "value": np.array(
                    [np.nan if e["value"] is None else e["value"] for e in events],
                    dtype=np.float64,
                ),
            }
        )
        values = self.event_values(frame)
        # events come oldest first: the last word on an item wins, so a like after a
        # dislike brings it back into the history
        last_type = frame.groupby("item", sort=False)["type"].last()
        disliked = set(last_type.index[last_type == "dislike"])
        positive = frame.assign(value=values)[(values > 0) & ~frame["item"].isin(disliked)]
        history = positive.groupby("item", sort=False)["value"].sum().reset_index()
        return history, disliked

    def recommend(
        self,
        history: pd.DataFrame,
        k: int,
        *,
        exclude: set[str],
    ) -> tuple[list[tuple[str, float, str]], Snapshot]:
        """Top-``k`` (item, score, source) for a history; ``exclude`` never appears, nor
        do the history's items.

        With no model, or no history item the model knows, the list is live popularity
        (source ``"popular"``); otherwise the model's fold-in (source ``"model"``), topped up
        with popular items when the model knows too few.
        """
        snapshot = self.snapshot
        model = snapshot.model
        seen = set(history["item"].astype(str)) | exclude
        out: list[tuple[str, float, str]] = []
        if model is not None and len(history):
            known = knows_items(model, history["item"])
            if known.any():
                want = min(k + len(exclude) + 16, len(model.items_))
                recs = model.recommend_from_history(
                    history["item"][known].tolist(),
                    k=want,
                    values=history["value"][known].to_numpy(dtype=np.float64),
                )
                for item, score in zip(recs["item"].astype(str), recs["score"], strict=True):
                    if item not in seen and np.isfinite(score):
                        out.append((item, float(score), "model"))
                        if len(out) == k:
                            return out, snapshot
        taken = {item for item, _, _ in out}
        for item, count in self.popular(k + len(seen) + len(taken)):
            if item not in seen and item not in taken:
                out.append((item, count, "popular"))
                if len(out) == k:
                    break
        return out, snapshot

    def explain(
        self, snapshot: Snapshot, history: pd.DataFrame, items: list[str]
    ) -> dict[str, str]:
        """For each recommended item, the history item most similar to it (models with item
        similarities; only where that similarity is positive)."""
        model = snapshot.model
        if model is None or not model.supports_similar_items or not len(history):
            return {}
        rec_idx = model.items_.to_index(items, on_unknown="ignore")
        known = [i for i, idx in zip(items, rec_idx, strict=True) if idx >= 0]
        hist_ids = history["item"].astype(str).tolist()
        hist_all = model.items_.to_index(hist_ids, on_unknown="ignore")
        hist = [i for i, idx in zip(hist_ids, hist_all, strict=True) if idx >= 0]
        if not known or not hist:
            return {}
        rec_idx = rec_idx[rec_idx >= 0]
        hist_idx = hist_all[hist_all >= 0]
        sims = np.asarray(model._similar(rec_idx), dtype=np.float64)[:, hist_idx]
        best = sims.argmax(axis=1)
        return {
            item: hist[int(b)]
            for row, (item, b) in enumerate(zip(known, best, strict=True))
            if sims[row, b] > 0
        }


def knows_items(model: Recommender, items: Iterable[str]) -> np.ndarray:
    """Which of ``items`` (ids as stored: text) the model was trained with.

    Not ``item in model.items_``: a dataset of ids that all spell integers ("7") holds them
    as ints, and only ``to_index`` matches the other spelling.
    """
    ids = [str(item) for item in items]
    if not ids:
        return np.zeros(0, dtype=bool)
    return np.asarray(model.items_.to_index(ids, on_unknown="ignore") >= 0)


def _empty_history() -> pd.DataFrame:
    return pd.DataFrame({"item": pd.Series([], dtype=object), "value": np.zeros(0)})
