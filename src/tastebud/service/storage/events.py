"""Events: what users did with items, idempotent by ``client_event_id``.

The request path reads a user's latest events (:meth:`Events.recent`: tuples from one prebuilt
statement, no dicts); serving processes follow the table by ``seq`` (:meth:`Events.after`);
training reads all of it as a frame (:meth:`Events.frame`). Sequence numbers only grow and are
never reused after a delete, but may have gaps (PostgreSQL hands them out before commit).
"""

from __future__ import annotations

import math
import operator
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tastebud.errors import InvalidInputError, TastebudError, UnknownIdError
from tastebud.service.storage.checks import (
    check_id,
    check_int,
    check_limit,
    check_optional_id,
    check_ts,
    check_value,
    no_extra_keys,
)
from tastebud.service.storage.db import Database, chunks
from tastebud.service.storage.deletions import FORGET_MARK, read_forget_mark
from tastebud.service.storage.exposures import insert_feedback
from tastebud.service.storage.rows import AddedEvent, EventRow, FollowedEvent, RecentEvent
from tastebud.service.storage.schema import EVENTS, ITEMS, USERS

#: Built once (the event path runs them on every call): which of a list of user or item ids
#: are stored, and the stored events of a list of client event ids.
_IDS_IN = {
    table.name: sa.select(table.c.id).where(table.c.id.in_(sa.bindparam("ids", expanding=True)))
    for table in (USERS, ITEMS)
}
_STORED_CLIENT_IDS = sa.select(EVENTS.c.client_event_id, EVENTS.c.seq).where(
    EVENTS.c.client_event_id.in_(sa.bindparam("ids", expanding=True))
)
#: One event in, its seq out (RETURNING: SQLite 3.35 and newer).
_INSERT_EVENT_RETURNING = sa.insert(EVENTS).returning(EVENTS.c.seq)
_SQLITE_RETURNING = sqlite3.sqlite_version_info >= (3, 35)

#: Built once: the request path runs it on every call.
_RECENT_EVENTS = (
    sa.select(EVENTS.c.item_id, EVENTS.c.type, EVENTS.c.value)
    .where(EVENTS.c.user_id == sa.bindparam("user_id"))
    .order_by(EVENTS.c.ts.desc(), EVENTS.c.seq.desc())
    .limit(sa.bindparam("limit"))
)

#: What :meth:`Events.frame` reads (:meth:`Database.stream`: raw values, converted a chunk at
#: a time by :class:`_FrameColumns` instead of one value at a time by the column types).
_FRAME_ROWS = "SELECT user_id, item_id, type, value, ts, seq FROM events WHERE seq > ? ORDER BY seq"
#: Rows per fetch of :meth:`Events.frame`.
FRAME_CHUNK = 50_000

_EVENT_FIELDS = {"user_id", "item_id", "type", "value", "ts", "client_event_id", "request_id"}


class MissingIdsError(UnknownIdError):
    """Events naming users or items that do not exist; nothing of the batch was written.

    ``kind`` is ``"user"`` or ``"item"``; ``missing`` maps each missing id to the positions
    (0-based) of the events in the batch that name it.
    """

    def __init__(self, kind: str, missing: dict[str, list[int]]) -> None:
        self.kind = kind
        self.missing = missing
        shown = list(missing.items())[:10]
        parts = [
            f"{key!r} (event{'s' if len(pos) > 1 else ''} {_positions(pos)})" for key, pos in shown
        ]
        more = f" and {len(missing) - len(shown)} more" if len(missing) > len(shown) else ""
        hint = (
            "add the items first or pass create_missing_items=True"
            if kind == "item"
            else "add the users first or pass create_missing_users=True"
        )
        super().__init__(
            f"{len(missing)} unknown {kind} id{'s' if len(missing) > 1 else ''}: "
            f"{', '.join(parts)}{more}; nothing was written ({hint})"
        )


def _positions(positions: list[int]) -> str:
    shown = ", ".join(str(p) for p in positions[:5])
    return shown + (", ..." if len(positions) > 5 else "")


class Events:
    """The ``events`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add(
        self,
        events: Sequence[Mapping[str, Any]],
        *,
        create_missing_users: bool = True,
        create_missing_items: bool = False,
    ) -> list[AddedEvent]:
        """Store a batch of events in one transaction; returns ``{"seq", "duplicate"}`` per event.

        Each event has ``user_id``, ``item_id``, ``type`` and optionally ``value``, ``ts``
        (unix seconds; default now), ``client_event_id`` and ``request_id`` (the
        recommendation list it answers: logged as feedback of the event's type in the same
        transaction, once, duplicates included). An event whose
        ``client_event_id`` is already stored, or appears earlier in the batch, is not stored
        again: it is answered ``duplicate=True`` with the stored event's ``seq``. Unknown
        items (or users, unless ``create_missing_users``) raise :class:`MissingIdsError`
        and nothing of the batch is written.
        """
        if isinstance(events, Mapping | str | bytes):
            raise InvalidInputError("events must be a list of event objects")
        now = time.time()
        batch = [_clean_event(e, pos, now) for pos, e in enumerate(events)]
        if not batch:
            return []
        return self._db.write(
            lambda conn: self._add(conn, batch, now, create_missing_users, create_missing_items)
        )

    def _ensure(
        self,
        conn: Connection,
        kind: str,
        rows: list[dict[str, Any]],
        key: str,
        create: bool,
        now: float,
    ) -> None:
        """Check that the users/items the events name exist, creating them if allowed."""
        table = USERS if kind == "user" else ITEMS
        wanted = sorted({row[key] for row in rows})  # sorted: one lock order for all writers
        known = _existing(conn, table, wanted)
        missing = [k for k in wanted if k not in known]
        if not missing:
            return
        if not create:
            lacking = set(missing)
            where: dict[str, list[int]] = {}
            for pos, row in enumerate(rows):
                if row[key] in lacking:
                    where.setdefault(row[key], []).append(pos)
            raise MissingIdsError(kind, where)
        new = [{"id": k, "attributes": {}, "created_at": now} for k in missing]
        if kind == "item":
            new = [{**row, "title": None, "available": True, "updated_at": now} for row in new]
        self._db.bulk_insert(conn, table, new, skip_conflicts_on="id")

    def _add(
        self,
        conn: Connection,
        rows: list[dict[str, Any]],
        now: float,
        create_missing_users: bool,
        create_missing_items: bool,
    ) -> list[AddedEvent]:
        self._ensure(conn, "item", rows, "item_id", create_missing_items, now)
        self._ensure(conn, "user", rows, "user_id", create_missing_users, now)
        feedback = [
            {
                "request_id": row["request_id"],
                "user_id": row["user_id"],
                "item_id": row["item_id"],
                "type": row["type"],
                "ts": row["ts"],
            }
            for row in rows
            if row["request_id"] is not None
        ]
        rows = [{k: v for k, v in row.items() if k != "request_id"} for row in rows]
        if feedback:  # with the events, also for duplicates: a retry completes what failed
            insert_feedback(self._db, conn, feedback)

        client_ids = [r["client_event_id"] for r in rows if r["client_event_id"] is not None]
        stored: dict[str, int] = {}
        for chunk in chunks(sorted(set(client_ids))):
            found = conn.execute(_STORED_CLIENT_IDS, {"ids": list(chunk)})
            stored.update({cid: int(seq) for cid, seq in found})

        answers: list[AddedEvent | None] = [None] * len(rows)
        first: dict[str, int] = {}  # client_event_id -> batch position that stores it
        repeats: list[tuple[int, str]] = []
        to_insert: list[int] = []
        for pos, row in enumerate(rows):
            cid = row["client_event_id"]
            if cid is not None:
                if cid in stored:
                    answers[pos] = {"seq": stored[cid], "duplicate": True}
                    continue
                if cid in first:
                    repeats.append((pos, cid))
                    continue
                first[cid] = pos
            to_insert.append(pos)

        # A concurrent writer storing one of these client_event_ids first makes this INSERT
        # fail on the UNIQUE constraint; Database.write then reruns the batch, which finds it
        # stored.
        for pos, seq in zip(to_insert, self._insert_rows(conn, rows, to_insert), strict=True):
            answers[pos] = {"seq": seq, "duplicate": False}
        for pos, cid in repeats:
            stored_answer = answers[first[cid]]
            assert stored_answer is not None
            answers[pos] = {"seq": stored_answer["seq"], "duplicate": True}
        out = [a for a in answers if a is not None]
        assert len(out) == len(rows)
        return out

    def _insert_rows(
        self, conn: Connection, rows: list[dict[str, Any]], positions: list[int]
    ) -> list[int]:
        """Insert ``rows[p]`` for ``p`` in ``positions`` in that order; returns their seqs."""
        if not positions:
            return []
        if self._db.backend == "postgresql":
            # Take the seqs from the column's sequence first (increasing, in input order), then
            # insert them explicitly: no per-row statements and no reliance on RETURNING order.
            sequence = sa.func.pg_get_serial_sequence(EVENTS.name, EVENTS.c.seq.name)
            allocate = sa.select(sa.func.nextval(sequence)).select_from(
                sa.func.generate_series(1, len(positions))
            )
            seqs = sorted(int(s) for s in conn.execute(allocate).scalars())
            batch = [{**rows[p], "seq": s} for p, s in zip(positions, seqs, strict=True)]
            self._db.bulk_insert(conn, EVENTS, batch)
            return seqs
        if len(positions) == 1 and _SQLITE_RETURNING:  # the usual case: one statement
            return [int(conn.execute(_INSERT_EVENT_RETURNING, rows[positions[0]]).scalar_one())]
        # SQLite: this transaction holds the write lock and AUTOINCREMENT hands out increasing
        # seqs above every stored one, so the new rows are exactly those above the old maximum,
        # in insertion order.
        before = conn.execute(sa.select(sa.func.coalesce(sa.func.max(EVENTS.c.seq), 0)))
        floor = int(before.scalar_one())
        self._db.bulk_insert(conn, EVENTS, [rows[p] for p in positions])
        new = sa.select(EVENTS.c.seq).where(EVENTS.c.seq > floor).order_by(EVENTS.c.seq)
        seqs = [int(s) for s in conn.execute(new).scalars()]
        if len(seqs) != len(positions):  # pragma: no cover - would mean a second writer
            raise TastebudError("events were written concurrently outside the write lock")
        return seqs

    def of_user(self, user_id: str, limit: int | None = None) -> list[EventRow]:
        """A user's events, oldest first (by ``ts``, then ``seq``); ``limit`` keeps the most
        recent ones."""
        uid = check_id(user_id, "user_id")
        check_limit(limit)
        stmt = (
            sa.select(EVENTS)
            .where(EVENTS.c.user_id == uid)
            .order_by(EVENTS.c.ts.desc(), EVENTS.c.seq.desc())
            .limit(limit)
        )
        return cast("list[EventRow]", self._db.rows(stmt)[::-1])

    def recent(self, user_id: str, limit: int) -> list[RecentEvent]:
        """A user's latest ``limit`` events as ``(item_id, type, value)``, oldest first: the
        request path's lean read (no dicts, no timestamps)."""
        uid = check_id(user_id, "user_id")
        check_limit(limit)
        params = {"user_id": uid, "limit": limit}
        return self._db.read(
            lambda conn: [tuple(row) for row in conn.execute(_RECENT_EVENTS, params).all()]
        )[::-1]

    def frame(self, since_seq: int = 0) -> pd.DataFrame:
        """Events with ``seq > since_seq`` for training, ordered by ``seq``.

        Columns: ``user``, ``item``, ``type`` (str), ``value`` (float, NaN when absent),
        ``timestamp`` (float unix seconds), ``seq`` (int64). ``frame.attrs[FORGET_MARK]`` is
        the forget mark read first, in the same transaction: a model trained on these
        events holds no user deleted while that mark stays the same.

        Read as a stream (:data:`FRAME_CHUNK` rows at a time; a server-side cursor on
        PostgreSQL), each chunk turned into columns at once: numbers into numpy arrays, ids
        and types into codes of a growing dictionary, so each distinct string is held once
        and the text columns are arrays of references to them. Python holds one chunk of
        rows at a time, not a tuple and three strings per event (the read added 3.0-3.3 GiB
        to the process for 5M events that way, 0.5 GiB this way:
        ``benchmarks/results/import_scale.md``).
        """
        since = check_int(since_seq, "since_seq")

        def read(conn: Connection) -> tuple[int, pd.DataFrame]:
            mark = read_forget_mark(conn)
            columns = _FrameColumns()
            for rows in self._db.stream(conn, _FRAME_ROWS, (since,), FRAME_CHUNK):
                columns.add(rows)
            return mark, columns.frame()

        mark, frame = self._db.read(read)
        frame.attrs[FORGET_MARK] = mark
        return frame

    def after(self, seq: int, also: Iterable[int] = (), limit: int = 10_000) -> list[FollowedEvent]:
        """The first ``limit`` events with ``seq`` above ``seq``, and those among the seqs
        ``also`` (at most 1,000; gaps seen earlier that a slow transaction may fill yet), as
        ``(seq, user_id, item_id, type, value)`` ordered by ``seq``: how serving processes
        follow the events table."""
        after = check_int(seq, "seq")
        check_limit(limit)
        extra = sorted({int(s) for s in also})[:1000]
        cond = EVENTS.c.seq > after
        if extra:
            cond = sa.or_(cond, EVENTS.c.seq.in_(extra))
        stmt = (
            sa.select(
                EVENTS.c.seq, EVENTS.c.user_id, EVENTS.c.item_id, EVENTS.c.type, EVENTS.c.value
            )
            .where(cond)
            .order_by(EVENTS.c.seq)
            .limit(limit)
        )
        return self._db.read(lambda conn: [tuple(row) for row in conn.execute(stmt)])

    def count(self) -> int:
        """Number of stored events."""
        return self._db.count(EVENTS)

    def last_seq(self) -> int:
        """The largest stored ``seq``, 0 when there are no events."""
        stmt = sa.select(sa.func.max(EVENTS.c.seq))
        return self._db.read(lambda conn: int(conn.execute(stmt).scalar() or 0))


class _TextCodes:
    """A text column read chunk by chunk as int32 codes into a growing list of its distinct
    values, each held once. A value SQLite holds as something else than text (a BLOB, written
    around the API) reads as :class:`ReadText` reads it; NULL stays ``None``."""

    def __init__(self) -> None:
        self._code: dict[Any, int] = {}  # value as read -> code
        self._by_text: dict[str | None, int] = {}  # value as text -> code
        self._values: list[str | None] = []
        self._parts: list[np.ndarray] = []

    def add(self, column: Sequence[Any]) -> None:
        code = self._code
        for raw in set(column).difference(code):  # values not seen before: few per chunk
            text = raw if raw is None or isinstance(raw, str) else _text(raw)
            known = self._by_text.get(text)
            if known is None:
                known = self._by_text[text] = len(self._values)
                self._values.append(text)
            code[raw] = known
        self._parts.append(np.fromiter(map(code.__getitem__, column), np.int32, len(column)))

    def column(self) -> np.ndarray:
        """The whole column: an object array of references to the distinct values."""
        codes = np.concatenate(self._parts) if self._parts else np.zeros(0, dtype=np.int32)
        values = np.empty(len(self._values), dtype=object)
        values[:] = self._values
        self._parts, self._code, self._by_text, self._values = [], {}, {}, []  # free them
        return values[codes]


class _FrameColumns:
    """The columns of :meth:`Events.frame`, built a chunk of rows at a time."""

    def __init__(self) -> None:
        self._text = [_TextCodes() for _ in range(3)]  # user, item, type
        self._numbers: list[list[np.ndarray]] = [[], [], []]  # value, timestamp, seq

    def add(self, rows: Sequence[Sequence[Any]]) -> None:
        """Rows of (user, item, type, value, ts, seq)."""
        for k, codes in enumerate(self._text):
            codes.add(list(map(operator.itemgetter(k), rows)))  # faster than zip(*rows)
        self._numbers[0].append(_floats(list(map(operator.itemgetter(3), rows))))
        self._numbers[1].append(_floats(list(map(operator.itemgetter(4), rows))))
        seqs = map(operator.itemgetter(5), rows)
        self._numbers[2].append(np.fromiter(seqs, dtype=np.int64, count=len(rows)))

    def frame(self) -> pd.DataFrame:
        def numbers(k: int, dtype: type) -> np.ndarray:
            parts, self._numbers[k] = self._numbers[k], []
            return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)

        # one column at a time, each chunk list freed once joined: the peak is the frame
        # and one column's chunks (the wider text columns last, when least else is held)
        value, timestamp = numbers(0, np.float64), numbers(1, np.float64)
        seq = numbers(2, np.int64)
        user, item, kind = (codes.column() for codes in self._text)
        columns = {
            "user": user,
            "item": item,
            "type": kind,
            "value": value,
            "timestamp": timestamp,
            "seq": seq,
        }
        # dtype given: pandas would turn an object array of text into its own string dtype
        # (a copy); copy=False: the arrays become the frame's columns as they are
        return pd.DataFrame(
            {name: pd.Series(a, dtype=a.dtype, copy=False) for name, a in columns.items()},
            copy=False,
        )


def _text(value: Any) -> str:
    """A value SQLite holds in a text column as something else, read as text (as
    :class:`ReadText` reads it)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _number(value: Any) -> float:
    """A value of a number column as :class:`ReadNumber` reads it: NaN when unreadable."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return math.nan


def _existing(conn: Connection, table: sa.Table, ids: Sequence[str]) -> set[str]:
    """Which of ``ids`` are stored in ``table`` (users or items; queried in chunks)."""
    found: set[str] = set()
    for chunk in chunks(ids):
        found.update(conn.execute(_IDS_IN[table.name], {"ids": list(chunk)}).scalars())
    return found


def _clean_event(event: Any, pos: int, now: float) -> dict[str, Any]:
    """One event as an ``events`` row, or an :class:`InvalidInputError` naming its position."""
    where = f"event {pos}"
    if not isinstance(event, Mapping):
        raise InvalidInputError(f"{where}: expected an object, got {type(event).__name__}")
    no_extra_keys(event, _EVENT_FIELDS, where)
    ts = check_ts(event.get("ts"), f"{where}: ts")
    return {
        "user_id": check_id(event.get("user_id"), f"{where}: user_id"),
        "item_id": check_id(event.get("item_id"), f"{where}: item_id"),
        "type": check_id(event.get("type"), f"{where}: type"),
        "value": check_value(event.get("value"), f"{where}: value"),
        "ts": now if ts is None else ts,
        "client_event_id": check_optional_id(
            event.get("client_event_id"), f"{where}: client_event_id"
        ),
        "received_at": now,
        "request_id": check_optional_id(event.get("request_id"), f"{where}: request_id"),
    }


def _floats(values: Sequence[Any]) -> np.ndarray:
    """A numeric column as float64 (NULL as NaN). SQLite keeps text given to a numeric
    column as text: such a cell reads as the number it spells, else NaN, rather than failing
    the read (a missing value for ``value``; a timestamp the training set then leaves out)."""
    try:
        return np.array(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return np.fromiter(map(_number, values), dtype=np.float64, count=len(values))
