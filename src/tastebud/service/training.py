"""The training set of a retrain, built from whatever the database holds.

The API checks every row it writes (:mod:`tastebud.rules`), but a database may hold
rows written before those rules, by an import of older code, or by hand: a blank id, a value
of ``1e308``, a timestamp in the year 30000. One such row must not stop every retrain, so the
builder applies the same rules to the stored rows, leaves out the ones a model cannot use and
counts them by reason (stored in the version's ``metrics["skipped"]``, shown by
``GET /admin/models``). Repeated (user, item) pairs are summed in float64 and capped at
:data:`rules.MAX_ABS_VALUE`, so no weight overflows the models' float32 arithmetic.

The dataset is built from internal indices (:meth:`Dataset.from_indices`), never through the
validator of :meth:`Dataset.from_frame`, whose job is to refuse bad input files: here every
row was checked already. Ids are text; they are ints inside the model only when every id of
the kind (events and catalogue together) spells one (``normalize_ids``), so an item ``"7"``
of the events and ``"7"`` of the catalogue are one item, whatever else the catalogue holds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from tastebud import rules
from tastebud.data.dataset import Dataset
from tastebud.data.idmap import IdMap
from tastebud.data.validate import normalize_ids
from tastebud.service.similar import item_feature_table

#: Reasons a stored row is left out of the training set (the keys of ``metrics["skipped"]``).
BAD_USER = "blank or invalid user id"
BAD_ITEM = "blank or invalid item id"
BAD_VALUE = "value out of range"
BAD_TS = "timestamp out of range"
BAD_CATALOGUE_ITEM = "catalogue item with an invalid id (left out of the item features)"


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """What a retrain learns from: the dataset (``None`` when too few usable positive events
    are stored), every stored event as read (``frame``, for the popularity and ``last_seq``),
    the rows left out by reason, and how many (user, item) pairs had their summed weight
    capped at :data:`rules.MAX_ABS_VALUE`."""

    dataset: Dataset | None
    frame: pd.DataFrame
    skipped: dict[str, int]
    capped: int = 0

    def summary(self) -> str:
        """The rows left out, in words ("2 blank or invalid user id, 1 value out of range")."""
        return ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))


def usable_events(frame: pd.DataFrame) -> tuple[np.ndarray, dict[str, int]]:
    """Which rows of an events frame (``storage.events_frame()``) a model can use, and the
    others counted by the first reason found: an id failing :func:`rules.id_problem` (or not
    text at all), a value failing :func:`rules.value_problem` (a missing value is fine), a
    timestamp failing :func:`rules.ts_problem`."""
    ok = np.ones(len(frame), dtype=bool)
    skipped: dict[str, int] = {}

    def flag(bad: np.ndarray, reason: str) -> None:
        new = bad & ok
        count = int(new.sum())
        if count:
            skipped[reason] = count
            ok[new] = False

    if not len(frame):
        return ok, skipped
    flag(_failing(frame["user"].to_numpy(dtype=object), _id_problem), BAD_USER)
    flag(_failing(frame["item"].to_numpy(dtype=object), _id_problem), BAD_ITEM)
    values = frame["value"].to_numpy(dtype=np.float64)
    present = ~np.isnan(values)
    bad_values = np.zeros(len(frame), dtype=bool)
    bad_values[present] = _failing(values[present], rules.value_problem)
    flag(bad_values, BAD_VALUE)
    flag(_failing(frame["timestamp"].to_numpy(dtype=np.float64), rules.ts_problem), BAD_TS)
    return ok, skipped


def _id_problem(value: Any) -> str | None:
    return rules.id_problem(value) if isinstance(value, str) else "is not text"


def _failing(values: np.ndarray, problem: Callable[[Any], str | None]) -> np.ndarray:
    """``problem(v) is not None`` for each value, asked once per distinct value (a column
    of ids or times repeats; missing ids fail)."""
    if not len(values):
        return np.zeros(0, dtype=bool)
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    verdict = np.fromiter(
        (problem(v) is not None for v in np.asarray(uniques, dtype=object).tolist()),
        dtype=bool,
        count=len(uniques),
    )
    return np.where(codes < 0, True, verdict[np.maximum(codes, 0)]) if len(uniques) else codes < 0


def build_dataset(
    positive: pd.DataFrame, catalogue: Iterable[Mapping[str, Any]]
) -> tuple[Dataset, dict[str, int], int]:
    """The dataset of usable positive events (``user``, ``item``, ``timestamp``, ``weight``
    columns, one row per event) and every catalogue item with a valid id (its title and
    attributes as item features, so items without events are known to the model).

    Returns the dataset, the catalogue rows left out by reason, and how many pairs had their
    summed weight capped."""
    rows = [dict(r) for r in catalogue]
    good = [r for r in rows if _id_problem(r.get("id")) is None]
    skipped = {BAD_CATALOGUE_ITEM: len(rows) - len(good)} if len(good) < len(rows) else {}
    table = item_feature_table(good)

    users, user_index = _id_map(positive["user"].to_numpy(dtype=object))
    catalogue_ids = table["item"].to_numpy(dtype=object) if len(table) else np.empty(0, object)
    n_events = len(positive)
    items, all_index = _id_map(
        np.concatenate([positive["item"].to_numpy(dtype=object), catalogue_ids])
    )
    item_index = all_index[:n_events]

    # one row per (user, item): weights summed in float64, then capped; the latest time
    key = user_index * np.int64(len(items)) + item_index
    pairs, inverse = np.unique(key, return_inverse=True)
    weight = np.bincount(inverse, weights=positive["weight"].to_numpy(dtype=np.float64))
    over = ~(weight <= rules.MAX_ABS_VALUE)  # NaN and inf too
    capped = int(over.sum())
    weight[over] = rules.MAX_ABS_VALUE
    latest = np.full(len(pairs), -np.inf)
    np.maximum.at(latest, inverse, positive["timestamp"].to_numpy(dtype=np.float64))

    features = None
    if table.shape[1] > 1:  # more than the ids: titles or attributes
        features = table.drop(columns="item").set_axis(
            pd.Index(items.to_ids(all_index[n_events:]), name="item"), axis=0
        )
        features = features.reindex(pd.Index(items.ids, name="item"))
    dataset = Dataset.from_indices(
        users,
        items,
        (pairs // len(items)).astype(np.int64),
        (pairs % len(items)).astype(np.int64),
        weight=weight.astype(np.float32),
        timestamp=latest,
        item_features=features,
        duplicates="sum",
        name="events",
    )
    return dataset, skipped, capped


def _id_map(values: np.ndarray) -> tuple[IdMap, np.ndarray]:
    """An id map of text ids (ints inside when every distinct id spells one, as
    :meth:`Dataset.from_frame` makes them) and the index of each value."""
    codes, uniques = pd.factorize(values)
    normalized = normalize_ids(pd.Series(np.asarray(uniques, dtype=object), dtype=object))
    ids = IdMap.from_values(normalized)
    return ids, ids.to_index(normalized)[codes].astype(np.int64)
