"""Bulk import of a :class:`Dataset`: users, items with titles and attributes, interactions as
events, idempotent (importing the same data again adds nothing).

An import writes in transactions of :data:`IMPORT_BATCH` rows (users, then items, then events),
each built only when it is written -- tuples, never a list of every row -- and loaded with
:meth:`Database.load_rows` (``COPY`` on PostgreSQL, a prepared ``executemany`` on SQLite).

Transactions and failures: an import of up to :data:`IMPORT_BATCH` rows is one transaction
(all or nothing). A larger one commits batch by batch, so that a live service's own writes
wait at most one batch for the lock (SQLite) and the write-ahead log is checkpointed as it goes
instead of growing to the size of the import. When a batch fails, the batches before it stay
and :class:`ImportStoppedError` says how many rows they hold; importing the same data again
adds exactly the rest (every row has a stable key). On SQLite the batches before the last
commit without waiting for the disk (``synchronous=NORMAL``: safe from a crash of the process,
not from a power cut) and the last one waits (``FULL``), which syncs the whole log: when the
import returns, everything it wrote is on disk -- what is acknowledged is kept.

A feature table's cells become JSON attributes the API can answer with: numpy values made
plain, and what no attribute may hold (a missing value, an integer beyond 64 bits, text with a
NUL or a lone surrogate, nesting too deep) left out instead of failing the import.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection
from tqdm.auto import tqdm

from tastebud import rules
from tastebud.data.dataset import Dataset
from tastebud.errors import InvalidInputError, TastebudError
from tastebud.service.storage.checks import check_id
from tastebud.service.storage.db import Database
from tastebud.service.storage.rows import ImportCounts
from tastebud.service.storage.schema import EVENTS, ITEMS, USERS

#: What :func:`feature_value` answers for a cell that an import leaves out.
MISSING = object()

#: Rows per transaction of an import. Larger batches are a little faster on SQLite (fewer
#: checkpoints of the log) but hold its write lock longer: a live service's writes wait for
#: at most one batch (a few seconds on 2 busy cores).
IMPORT_BATCH = 250_000
#: Imports of at least this many rows show a progress bar by default (in a terminal).
BAR_FROM = 200_000

_EVENT_COLUMNS = ("user_id", "item_id", "type", "value", "ts", "client_event_id", "received_at")
_USER_COLUMNS = ("id", "attributes", "created_at")
_ITEM_COLUMNS = ("id", "title", "attributes", "available", "created_at", "updated_at")
#: What a failed batch may raise from the database (through SQLAlchemy or from the driver).
_DB_ERRORS = (sa_exc.SQLAlchemyError, sqlite3.Error, psycopg.Error)


class ImportStoppedError(TastebudError):
    """A batch of an import failed: the batches committed before it stay (``counts``)."""

    def __init__(self, message: str, counts: ImportCounts) -> None:
        super().__init__(message)
        self.counts = counts


@dataclasses.dataclass(frozen=True)
class _Part:
    """One table's share of an import: ``rows(start, stop)`` builds rows ``start:stop``."""

    table: sa.Table
    columns: tuple[str, ...]
    key: str
    count: str  # the key of ImportCounts it adds to
    n: int
    rows: Callable[[int, int], Iterable[Sequence[Any]]]


def import_dataset(
    db: Database,
    dataset: Dataset,
    *,
    event_type: str = "rating",
    value: str = "auto",
    progress: bool | None = None,
) -> ImportCounts:
    """Load a :class:`Dataset` (users, items with titles/attributes, interactions).

    Ids are stored as ``str(id)``; feature-table rows become attributes (numpy values
    made plain, missing values left out) and an item ``title`` column becomes the title.
    Users and items already stored are left as they are. Each interaction becomes an
    event of ``event_type`` whose value is the rating (``value="rating"``), the weight
    (``"weight"``), none (``"none"``) or, for ``"auto"``, the rating, else the weight,
    else none; its ``ts`` is the timestamp, else now. Its ``client_event_id`` is
    ``import:["<dataset name>","<user>","<item>"]`` (a dataset holds one interaction per
    pair), so importing the same data again adds nothing.

    Rows are written in transactions of :data:`IMPORT_BATCH` (module docstring: what a
    failure leaves, and when the rows are on disk); a batch that fails raises
    :class:`ImportStoppedError`. ``progress``: show a progress bar with rows/s on stderr
    (default: in a terminal, for imports of :data:`BAR_FROM` rows or more).

    Returns counts of rows written: ``users``, ``items``, ``events``, and ``duplicates``
    (events already stored, skipped).
    """
    if not isinstance(dataset, Dataset):
        raise InvalidInputError(f"import_dataset needs a Dataset, got {type(dataset).__name__}")
    kind = check_id(event_type, "event_type")
    values = _dataset_values(dataset, value)
    now = time.time()
    for what, column, problem in (
        ("value", values, rules.value_problem),
        ("timestamp", dataset.timestamp, rules.ts_problem),
    ):
        _check_column(dataset.name, what, column, problem)

    user_ids = [str(u) for u in dataset.users.ids.tolist()]
    item_ids = [str(i) for i in dataset.items.ids.tolist()]
    for what, ids, table in (
        ("user", user_ids, dataset.user_features),
        ("item", item_ids, dataset.item_features),
    ):
        for key in ids:
            check_id(key, f"{what} id")
        if table is not None and len(table) != len(ids):
            raise InvalidInputError(f"the {what} feature table is not aligned with the {what} ids")
    parts = [
        _Part(
            USERS, _USER_COLUMNS, "id", "users", len(user_ids), _user_rows(dataset, user_ids, now)
        ),
        _Part(
            ITEMS, _ITEM_COLUMNS, "id", "items", len(item_ids), _item_rows(dataset, item_ids, now)
        ),
        _Part(
            EVENTS,
            _EVENT_COLUMNS,
            "client_event_id",
            "events",
            dataset.n_interactions,
            _event_rows(dataset, user_ids, item_ids, kind, values, now),
        ),
    ]
    return _load(db, dataset.name, parts, progress)


def _load(db: Database, name: str, parts: list[_Part], progress: bool | None) -> ImportCounts:
    """Write ``parts`` in batches of :data:`IMPORT_BATCH` rows, one transaction each."""
    written = dict.fromkeys(("users", "items", "events"), 0)
    seen = dict.fromkeys(written, 0)  # rows of committed batches, written or skipped
    total = sum(part.n for part in parts)
    batches = _batches([part.n for part in parts], IMPORT_BATCH)
    bar = tqdm(
        total=total,
        desc=f"import {name}",
        unit=" rows",
        unit_scale=True,
        disable=(None if total >= BAR_FROM else True) if progress is None else not progress,
    )

    def write_batch(batch: list[tuple[int, int, int]], conn: Connection) -> list[int]:
        return [
            db.load_rows(
                conn,
                parts[k].table,
                parts[k].columns,
                parts[k].rows(start, stop),
                skip_conflicts_on=parts[k].key,
            )
            for k, start, stop in batch
        ]

    def counts() -> ImportCounts:
        return {
            "users": written["users"],
            "items": written["items"],
            "events": written["events"],
            "duplicates": seen["events"] - written["events"],
        }

    try:
        with bar, db.bulk_connection() as conn:
            for number, batch in enumerate(batches, start=1):
                stored = db.write(
                    functools.partial(write_batch, batch), durable=number == len(batches), on=conn
                )
                for (k, start, stop), n in zip(batch, stored, strict=True):
                    written[parts[k].count] += n
                    seen[parts[k].count] += stop - start
                    bar.update(stop - start)
    except _DB_ERRORS as err:
        now = counts()
        message = _stopped(name, err, sum(seen.values()), total, now)
        raise ImportStoppedError(message, now) from err
    return counts()


def _stopped(name: str, err: Exception, done: int, total: int, counts: ImportCounts) -> str:
    """The one line that says where a failed import stopped and what to do."""
    cause = getattr(err, "orig", None) or err
    why = " ".join(str(cause).split())[:300] or type(cause).__name__
    if not done:
        return f"{name}: the import failed ({why}); nothing was imported"
    return (
        f"{name}: the import stopped ({why}) after {done:,} of {total:,} rows were stored "
        f"({counts['users']:,} new users, {counts['items']:,} new items, "
        f"{counts['events']:,} new events); import the same data again to add the rest "
        "(rows already stored are skipped)"
    )


def _batches(sizes: Sequence[int], size: int) -> list[list[tuple[int, int, int]]]:
    """``(part, start, stop)`` ranges of parts of ``sizes`` rows, in order, cut into batches
    of ``size`` rows (a batch may span parts)."""
    batches: list[list[tuple[int, int, int]]] = []
    current: list[tuple[int, int, int]] = []
    room = size
    for k, n in enumerate(sizes):
        start = 0
        while start < n:
            stop = min(n, start + room)
            current.append((k, start, stop))
            room -= stop - start
            start = stop
            if room == 0:
                batches.append(current)
                current, room = [], size
    if current:
        batches.append(current)
    return batches


def _json(value: Any) -> str:
    """An attributes object as the text the database's JSON column holds (as
    :class:`Database` writes it through SQLAlchemy)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def _user_rows(
    dataset: Dataset, user_ids: list[str], now: float
) -> Callable[[int, int], Iterator[tuple[Any, ...]]]:
    """The ``users`` rows ``start:stop``: id, attributes, created_at."""
    table = dataset.user_features

    def rows(start: int, stop: int) -> Iterator[tuple[Any, ...]]:
        part = None if table is None else table.iloc[start:stop]
        attributes, _ = _feature_records(part, stop - start, take_title=False)
        return zip(
            user_ids[start:stop], map(_json, attributes), itertools.repeat(now), strict=False
        )

    return rows


def _item_rows(
    dataset: Dataset, item_ids: list[str], now: float
) -> Callable[[int, int], Iterator[tuple[Any, ...]]]:
    """The ``items`` rows ``start:stop``: id, title, attributes, available, created_at,
    updated_at."""
    table = dataset.item_features

    def rows(start: int, stop: int) -> Iterator[tuple[Any, ...]]:
        part = None if table is None else table.iloc[start:stop]
        attributes, titles = _feature_records(part, stop - start, take_title=True)
        return zip(
            item_ids[start:stop],
            titles,
            map(_json, attributes),
            itertools.repeat(True),
            itertools.repeat(now),
            itertools.repeat(now),
            strict=False,
        )

    return rows


def _event_rows(
    dataset: Dataset,
    user_ids: list[str],
    item_ids: list[str],
    kind: str,
    values: np.ndarray | None,
    now: float,
) -> Callable[[int, int], Iterator[tuple[Any, ...]]]:
    """The ``events`` rows of the interactions ``start:stop`` (in :data:`_EVENT_COLUMNS`
    order), built a batch at a time from per-id pieces: the ``client_event_id`` of a pair
    is the user's prefix and the item's suffix joined (:func:`_import_event_id`), so no
    JSON is encoded per row."""

    def encode(text: str) -> str:
        return json.dumps(text, ensure_ascii=False)

    name_json = encode(dataset.name)
    prefix = np.array([f"import:[{name_json},{encode(u)}," for u in user_ids], dtype=object)
    suffix = np.array([f"{encode(i)}]" for i in item_ids], dtype=object)
    prefix_len = np.fromiter(map(len, prefix), dtype=np.int64, count=len(prefix))
    suffix_len = np.fromiter(map(len, suffix), dtype=np.int64, count=len(suffix))
    user_text = np.array(user_ids, dtype=object)
    item_text = np.array(item_ids, dtype=object)
    timestamps = dataset.timestamp

    def rows(start: int, stop: int) -> Iterator[tuple[Any, ...]]:
        ui = dataset.user_index[start:stop]
        ii = dataset.item_index[start:stop]
        keys = prefix[ui] + suffix[ii]
        for k in np.flatnonzero(prefix_len[ui] + suffix_len[ii] > rules.MAX_ID_LENGTH).tolist():
            keys[k] = _hashed_event_id(keys[k])
        ts: Iterable[float] = (
            itertools.repeat(now)
            if timestamps is None
            else timestamps[start:stop].astype(np.float64).tolist()
        )
        vals: Iterable[float | None] = (
            itertools.repeat(None) if values is None else values[start:stop].tolist()
        )
        return zip(
            user_text[ui].tolist(),
            item_text[ii].tolist(),
            itertools.repeat(kind),
            vals,
            ts,
            keys.tolist(),
            itertools.repeat(now),
            strict=False,  # the repeats are endless; the lists have stop - start rows
        )

    return rows


def feature_value(value: Any) -> Any:
    """A feature cell as a JSON value that :func:`rules.json_problem` accepts, or
    :data:`MISSING` for NaN/NA/NaT/None and for what no attribute may hold (an integer beyond
    64 bits, text with a NUL or a lone surrogate, nesting deeper than
    :data:`rules.MAX_JSON_DEPTH`): an import leaves such a cell out instead of failing. In a
    list or an object, such entries are left out."""
    try:
        cell = _json_cell(value)
    except RecursionError:
        return MISSING
    if cell is MISSING or rules.json_problem({"attribute": cell}) is not None:  # too deep
        return MISSING
    return cell


def _json_cell(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT:
        return MISSING
    if isinstance(value, np.datetime64):
        return MISSING if np.isnat(value) else pd.Timestamp(value).isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bool | int | float | str):
        return value if rules.json_problem(value) is None else MISSING
    if isinstance(value, list | tuple | np.ndarray):
        return [v for v in (_json_cell(x) for x in value) if v is not MISSING]
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            cell = _json_cell(item)
            if cell is not MISSING and isinstance(key, str) and rules.text_problem(key) is None:
                out[key] = cell
        return out
    text = str(value)
    return text if rules.text_problem(text) is None else MISSING


def _feature_records(
    table: pd.DataFrame | None, n: int, *, take_title: bool
) -> tuple[list[dict[str, Any]], list[str | None]]:
    """Attributes (and titles) per row of a feature table aligned with an id map."""
    if table is None:
        return [{} for _ in range(n)], [None] * n
    records = table.to_dict("records")
    attributes: list[dict[str, Any]] = []
    titles: list[str | None] = []
    for record in records:
        attrs: dict[str, Any] = {}
        title: str | None = None
        for key, cell in record.items():
            value = feature_value(cell)
            if value is MISSING or rules.text_problem(str(key)) is not None:
                continue
            if take_title and key == "title":
                title = value if isinstance(value, str) else str(value)
            else:
                attrs[str(key)] = value
        attributes.append(attrs)
        titles.append(title)
    return attributes, titles


def _import_event_id(name_json: str, user_json: str, item_json: str) -> str:
    """Deterministic ``client_event_id`` of an imported interaction (one per user/item pair):
    ``import:[<name>,<user>,<item>]`` of their JSON texts, its SHA-256 when longer than an id
    may be. (:func:`_event_rows` builds the same keys a batch at a time.)"""
    key = f"import:[{name_json},{user_json},{item_json}]"
    return key if len(key) <= rules.MAX_ID_LENGTH else _hashed_event_id(key)


def _hashed_event_id(key: str) -> str:
    return "import:sha256:" + hashlib.sha256(key.encode()).hexdigest()


def _check_column(
    name: str, what: str, column: np.ndarray | None, problem: Callable[[float], str | None]
) -> None:
    """Refuse an import whose interactions hold a value the rules refuse, naming the
    smallest such value, else the largest, else NaN. The rules accept an interval of numbers
    (:func:`rules.value_problem`, :func:`rules.ts_problem`), so those three decide: three
    questions instead of one per distinct value (a sort of 20M timestamps, then 20M calls)."""
    if column is None or not len(column):
        return
    numbers = np.asarray(column, dtype=np.float64)
    nan = np.isnan(numbers)
    has_nan = bool(nan.any())
    finite = numbers[~nan] if has_nan else numbers
    extremes = [float(finite.min()), float(finite.max())] if len(finite) else []
    for number in [*extremes, *([math.nan] if has_nan else [])]:
        found = problem(number)
        if found is not None:
            raise InvalidInputError(
                f"{name}: an interaction's {what} {number:g} {found}; nothing was imported"
            )


def _dataset_values(dataset: Dataset, value: str) -> np.ndarray | None:
    """Event values of an import as float64 (shortest decimal of the float32), or None."""
    if value not in ("auto", "rating", "weight", "none"):
        raise InvalidInputError(
            f"value must be 'auto', 'rating', 'weight' or 'none', got {value!r}"
        )
    if value == "rating" and dataset.rating is None:
        raise InvalidInputError(f"{dataset.name} has no ratings")
    if value == "weight" and dataset.weight is None:
        raise InvalidInputError(f"{dataset.name} has no weights")
    chosen: np.ndarray | None = None
    if value in ("auto", "rating"):
        chosen = dataset.rating
    if chosen is None and value in ("auto", "weight"):
        chosen = dataset.weight
    if chosen is None:
        return None
    # float32 -> its shortest decimal text -> float64, so 0.1 is stored as 0.1: once per
    # distinct value (a text array of 20M values would take 2.5 GB)
    distinct, inverse = np.unique(np.asarray(chosen, dtype=np.float32), return_inverse=True)
    return distinct.astype(str).astype(np.float64)[inverse.reshape(-1)]
