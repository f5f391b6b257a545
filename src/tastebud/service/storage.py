"""Persistent state of the service: users, items, events, model versions and experiment logs.

One :class:`Storage` works over SQLite (a file; the default) and PostgreSQL, through
SQLAlchemy Core with bound parameters only. Call :meth:`Storage.migrate` at every start: it
creates the schema, or brings an older one up to date, and does nothing when it is current.

Concurrency and durability
--------------------------
One engine (a connection pool) is shared by all threads. SQLite connections run in WAL mode
with ``synchronous=FULL`` (a write is on disk when the call returns), ``foreign_keys=ON`` and
a 10 s busy timeout; every write transaction starts with ``BEGIN IMMEDIATE``, so writers queue
for the lock up front instead of failing half way. PostgreSQL writes run at READ COMMITTED; a
write that loses a race on a unique key (two requests posting the same ``client_event_id``), a
deadlock or a serialization failure is rolled back and run again.

Every write method commits before it returns. Timestamps are float unix seconds. Event
sequence numbers (``seq``) only grow and are never reused after a delete, but may have gaps.

Over 2,000 lines, one class per database with a method per query: issue 18 splits it into
repositories per area with typed rows.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import random
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from tastebud._io import _plain
from tastebud.data.dataset import Dataset
from tastebud.errors import InvalidInputError, TastebudError, UnknownIdError
from tastebud.service import rules

T = TypeVar("T")
Backend = Literal["sqlite", "postgresql"]

_CHUNK = 5_000  # ids per IN (...) query
_BULK_CHUNK = 10_000  # rows per bulk INSERT
_ROWCOUNT = {"preserve_rowcount": True}  # rowcount of INSERTs, too
_WRITE_ATTEMPTS = 8  # a write that loses a race is run again up to this many times in all
_PG_LOCK_KEY = 7_204_113_502  # pg_advisory_xact_lock key serializing migrate() across processes
#: pg_advisory_xact_lock key: a user deletion takes it exclusively, exposure writes shared, so
#: an exposure batch commits wholly before a deletion or reads the deletion it follows
_PG_FORGET_KEY = 7_204_113_503
#: Seconds a deletion stays in the deletions log (serving processes read it every 0.1 s).
DELETION_LOG_S = 600.0
#: Exposures stamped up to this long after their user's deletion are taken for a list computed
#: before it, and not logged (:meth:`Storage.log_exposure_rows`).
_DELETION_SLACK_S = 2.0
#: Key of ``events_frame().attrs``: :meth:`Storage.forget_mark` read before the events.
FORGET_MARK = "tastebud_forget_mark"

# -- schema ----------------------------------------------------------------------------------------
METADATA = sa.MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets BIGSERIAL.
_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class _ReadText(sa.TypeDecorator[str]):
    """A text column read as text whatever a row holds (written around the API, by hand or
    by older code): a BLOB is decoded (undecodable bytes replaced), a number written as
    text. Writes are unchanged. Only SQLite needs it -- its columns take any type;
    PostgreSQL's refuse the wrong one at the write -- so reads there pay nothing."""

    impl = sa.Text
    cache_ok = True

    def result_processor(self, dialect: sa.Dialect, coltype: Any) -> Any:
        if dialect.name != "sqlite":
            return self.impl_instance.result_processor(dialect, coltype)
        return super().result_processor(dialect, coltype)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> str | None:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value).decode("utf-8", "replace")
        return str(value)


class _ReadNumber(sa.TypeDecorator[float]):
    """A number column read as a float whatever a row holds: text that is no number, or a
    BLOB, reads as ``unreadable`` (``None`` for an event's value and time -- the training
    set counts such rows and skips them --, 0.0, the epoch, for the other times). NaN and
    infinities read as they are, for the training set to count; an answer drops them."""

    impl = sa.Double
    cache_ok = True

    def __init__(self, unreadable: float | None = 0.0) -> None:
        super().__init__()
        self.unreadable = unreadable

    def result_processor(self, dialect: sa.Dialect, coltype: Any) -> Any:
        if dialect.name != "sqlite":  # PostgreSQL's double precision holds only floats
            return self.impl_instance.result_processor(dialect, coltype)
        return super().result_processor(dialect, coltype)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> float | None:
        if value is None:
            return None
        try:
            return float(value)
        except (TypeError, ValueError, OverflowError):
            return self.unreadable


_TEXT = _ReadText()
_TIME = _ReadNumber()
_EMPTY_JSON = sa.text("'{}'")


class _JSONObject(sa.TypeDecorator[dict[str, Any]]):
    """A JSON column holding an object (attributes, a version's params and metrics), read
    so that whatever a row holds -- written before today's checks, by an import of older
    code or by hand -- reads as an object the API can answer with and every consumer can
    use: text that is not JSON, and JSON that is not an object, read as ``{}``; an entry
    that :func:`rules.json_problem` refuses (NaN, an integer beyond 64 bits, nesting deeper
    than :data:`rules.MAX_JSON_DEPTH`, a lone surrogate) is left out of what is read. The
    row itself is not changed."""

    impl = sa.JSON
    cache_ok = True

    def result_processor(self, dialect: sa.Dialect, coltype: Any) -> Callable[[Any], Any]:
        # the JSON type's own processor first (it parses the text on SQLite), but a failure
        # to parse is a value to read as {}, not an error for the whole query
        inner = self.impl_instance.result_processor(dialect, coltype)

        def process(value: Any) -> dict[str, Any]:
            if inner is not None and value is not None:
                try:
                    value = inner(value)
                except (ValueError, RecursionError):  # not JSON; a number beyond 4300 digits
                    return {}
            return _readable_object(value)

        return process


def _readable_object(value: Any) -> dict[str, Any]:
    """``value`` as a JSON object of the entries :func:`rules.json_problem` accepts."""
    if not isinstance(value, dict):
        return {}
    if rules.json_problem(value) is None:  # the usual case: one walk
        return value
    return {k: v for k, v in value.items() if rules.json_problem({k: v}) is None}


_JSON_OBJECT = _JSONObject()


class _JSONObjects(sa.TypeDecorator[list[dict[str, Any]]]):
    """A JSON column holding a list of objects (an experiment's variants), read as such
    whatever a row holds: text that is not JSON, or JSON that is not a list, reads as
    ``[]``, and entries that are not objects are left out (the engine then refuses to run
    an experiment whose variants are unusable, and says so, instead of failing lists)."""

    impl = sa.JSON
    cache_ok = True

    def result_processor(self, dialect: sa.Dialect, coltype: Any) -> Callable[[Any], Any]:
        inner = self.impl_instance.result_processor(dialect, coltype)

        def process(value: Any) -> list[dict[str, Any]]:
            if inner is not None and value is not None:
                try:
                    value = inner(value)
                except (ValueError, RecursionError):
                    return []
            if not isinstance(value, list):
                return []
            return [_readable_object(v) for v in value if isinstance(v, dict)]

        return process


SCHEMA_VERSION_TABLE = sa.Table(
    "schema_version",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),  # always 1
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", _TIME, nullable=False),
)

USERS = sa.Table(
    "users",
    METADATA,
    sa.Column("id", _TEXT, primary_key=True),
    sa.Column("attributes", _JSON_OBJECT, nullable=False, server_default=_EMPTY_JSON),
    sa.Column("created_at", _TIME, nullable=False),
)

ITEMS = sa.Table(
    "items",
    METADATA,
    sa.Column("id", _TEXT, primary_key=True),
    sa.Column("title", _TEXT, nullable=True),
    sa.Column("attributes", _JSON_OBJECT, nullable=False, server_default=_EMPTY_JSON),
    sa.Column("available", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_at", _TIME, nullable=False),
    # every write sets it: serving processes read the changes since their last look
    sa.Column("updated_at", _TIME, nullable=True),
    sa.Index("ix_items_created_at", "created_at"),
    sa.Index("ix_items_updated_at", "updated_at"),
)

EVENTS = sa.Table(
    "events",
    METADATA,
    sa.Column("seq", _BIGID, primary_key=True, autoincrement=True),
    sa.Column("user_id", _TEXT, nullable=False),
    sa.Column("item_id", _TEXT, nullable=False),
    sa.Column("type", _TEXT, nullable=False),
    sa.Column("value", _ReadNumber(unreadable=None), nullable=True),
    sa.Column("ts", _ReadNumber(unreadable=None), nullable=False),
    sa.Column("client_event_id", _TEXT, nullable=True, unique=True),
    sa.Column("received_at", _TIME, nullable=False),
    # (user_id, ts, seq) serves lookups by user and a user's history in order.
    sa.Index("ix_events_user_ts", "user_id", "ts", "seq"),
    sa.Index("ix_events_item", "item_id"),
    sqlite_autoincrement=True,  # never reuse the seq of a deleted event
)

MODEL_VERSIONS = sa.Table(
    "model_versions",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", _TEXT, nullable=False),
    sa.Column("params", _JSON_OBJECT, nullable=False),
    sa.Column("path", _TEXT, nullable=False),
    sa.Column("metrics", _JSON_OBJECT, nullable=False),
    sa.Column("created_at", _TIME, nullable=False),
    sa.Column("n_events", sa.BigInteger, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.false()),
    # when a user whose events this version may have learned from was deleted (None: none
    # was): such a version is never activated again and its folder is deleted (migration 6)
    sa.Column("forgotten_at", _TIME, nullable=True),
    sqlite_autoincrement=True,
)

EXPOSURES = sa.Table(
    "exposures",
    METADATA,
    sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
    sa.Column("request_id", _TEXT, nullable=False),
    sa.Column("user_id", _TEXT, nullable=False),
    sa.Column("item_id", _TEXT, nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("source", _TEXT, nullable=True),
    sa.Column("model_version", sa.Integer, nullable=True),
    sa.Column("experiment", _TEXT, nullable=True),
    sa.Column("variant", _TEXT, nullable=True),
    sa.Column("ts", _TIME, nullable=False),
    sa.Index("ix_exposures_experiment_variant", "experiment", "variant"),
    sa.Index("ix_exposures_user", "user_id"),
    sa.Index("ix_exposures_request", "request_id"),
)

FEEDBACK = sa.Table(
    "feedback",
    METADATA,
    sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
    sa.Column("request_id", _TEXT, nullable=True),
    sa.Column("user_id", _TEXT, nullable=False),
    sa.Column("item_id", _TEXT, nullable=False),
    sa.Column("type", _TEXT, nullable=False),
    sa.Column("ts", _TIME, nullable=False),
    sa.Index("ix_feedback_request", "request_id"),
    sa.Index("ix_feedback_user", "user_id"),
)

EXPERIMENTS = sa.Table(
    "experiments",
    METADATA,
    sa.Column("name", _TEXT, primary_key=True),
    # [{"name", "share", "model_version", "pipeline"}]; shares sum to 1
    sa.Column("variants", _JSONObjects(), nullable=False),
    sa.Column("status", _TEXT, nullable=False),  # "running" or "stopped"
    sa.Column("created_at", _TIME, nullable=False),
    sa.Column("stopped_at", _TIME, nullable=True),
)

#: Deleted users and items, one row per deletion, written in the deleting transaction: how
#: the other serving processes learn that a user's history changed (new events they see by
#: ``seq``; deleted ones leave no row behind) or that a user is gone. A user is named by
#: :meth:`Storage.user_hash` (a keyed hash), never by id; rows older than
#: :data:`DELETION_LOG_S` are pruned by the next deletion.
DELETIONS = sa.Table(
    "deletions",
    METADATA,
    sa.Column("seq", _BIGID, primary_key=True, autoincrement=True),
    sa.Column("user_hash", _TEXT, nullable=True),  # a user was deleted
    sa.Column("item_id", _TEXT, nullable=True),  # an item's events were deleted
    sa.Column("ts", _TIME, nullable=False),
    sqlite_autoincrement=True,
)

#: Values the service keeps about the database itself: ``deletion_key`` (the secret of
#: :meth:`Storage.user_hash`, made by migration 6) and ``forget_mark`` (how many deleted
#: users had events: :meth:`Storage.forget_mark`).
META = sa.Table(
    "meta",
    METADATA,
    sa.Column("key", _TEXT, primary_key=True),
    sa.Column("value", _TEXT, nullable=False),
)

_DATA_TABLES = (USERS, ITEMS, EVENTS, MODEL_VERSIONS, EXPOSURES, FEEDBACK)

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


# -- migrations ------------------------------------------------------------------------------------
def _migration_1(conn: Connection) -> None:
    """Version 1: the six data tables and their indexes."""
    # The tables above are version 1. When a later migration changes a table, keep a frozen
    # copy of its version-1 definition for this function and edit the module-level one.
    METADATA.create_all(conn, tables=list(_DATA_TABLES), checkfirst=True)


#: One outcome of a type per shown item and list: feedback is idempotent (a retried event
#: with its request_id logs it once). Feedback without a request_id is not constrained.
_FEEDBACK_UNIQUE = sa.Index(
    "ux_feedback_outcome",
    FEEDBACK.c.request_id,
    FEEDBACK.c.user_id,
    FEEDBACK.c.item_id,
    FEEDBACK.c.type,
    unique=True,
)


def _migration_2(conn: Connection) -> None:
    """Version 2: the experiments table (A/B tests between model versions) and idempotent
    feedback (duplicates of earlier versions are removed first)."""
    EXPERIMENTS.create(conn, checkfirst=True)
    fb = FEEDBACK
    keep = (
        sa.select(sa.func.min(fb.c.id))
        .group_by(fb.c.request_id, fb.c.user_id, fb.c.item_id, fb.c.type)
        .scalar_subquery()
    )
    conn.execute(sa.delete(fb).where(fb.c.request_id.is_not(None), fb.c.id.not_in(keep)))
    _FEEDBACK_UNIQUE.create(conn, checkfirst=True)


def _migration_3(conn: Connection) -> None:
    """Version 3: ``items.updated_at``, so serving processes can follow item writes."""
    columns = {c["name"] for c in sa.inspect(conn).get_columns(ITEMS.name)}
    if "updated_at" not in columns:  # new databases have it from step 1
        conn.execute(sa.text("ALTER TABLE items ADD COLUMN updated_at DOUBLE PRECISION"))
        conn.execute(sa.update(ITEMS).values(updated_at=ITEMS.c.created_at))
        # the table's own Index object: a new sa.Index(...) would join ITEMS' indexes and be
        # created twice by every later create_all
        index = next(i for i in ITEMS.indexes if i.name == "ix_items_updated_at")
        index.create(conn, checkfirst=True)


def _migration_4(conn: Connection) -> None:
    """Version 4: the deletions log, so serving processes can follow deleted histories."""
    DELETIONS.create(conn, checkfirst=True)


def _migration_5(conn: Connection) -> None:
    """Version 5: on PostgreSQL, an index of user ids in code point order (``COLLATE "C"``),
    which prefix searches of users read (:meth:`Storage.list_users`); SQLite's primary key
    index is in that order already."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text('CREATE INDEX IF NOT EXISTS ix_users_id_c ON users (id COLLATE "C")'))


def _migration_6(conn: Connection) -> None:
    """Version 6: complete deletion of users. The ``meta`` table with the secret of
    :meth:`Storage.user_hash`; the deletions log names users by that keyed hash (an older
    log's ids are hashed, the ``user_id`` column dropped); ``model_versions.forgotten_at``,
    set on the versions trained before a logged user deletion."""
    META.create(conn, checkfirst=True)
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    conn.execute(
        insert(META)
        .values(key="deletion_key", value=secrets.token_hex(32))
        .on_conflict_do_nothing(index_elements=[META.c.key])
    )
    inspector = sa.inspect(conn)
    if "forgotten_at" not in {c["name"] for c in inspector.get_columns(MODEL_VERSIONS.name)}:
        conn.execute(sa.text("ALTER TABLE model_versions ADD COLUMN forgotten_at DOUBLE PRECISION"))
    if "user_id" not in {c["name"] for c in inspector.get_columns(DELETIONS.name)}:
        return  # new databases have the hashed log from step 4
    conn.execute(sa.text("ALTER TABLE deletions ADD COLUMN user_hash TEXT"))
    key = bytes.fromhex(
        conn.execute(sa.select(META.c.value).where(META.c.key == "deletion_key")).scalar_one()
    )
    logged = conn.execute(
        sa.text("SELECT seq, user_id, ts FROM deletions WHERE user_id IS NOT NULL")
    ).all()
    for seq, user, ts in logged:
        conn.execute(
            sa.update(DELETIONS)
            .where(DELETIONS.c.seq == seq)
            .values(user_hash=_keyed_hash(key, user))
        )
        # the versions trained before it may hold that user: never activated again
        mv = MODEL_VERSIONS
        conn.execute(
            sa.update(mv)
            .where(mv.c.created_at < ts, mv.c.forgotten_at.is_(None))
            .values(forgotten_at=ts)
        )
    if conn.dialect.name == "postgresql" or sqlite3.sqlite_version_info >= (3, 35):
        conn.execute(sa.text("ALTER TABLE deletions DROP COLUMN user_id"))
    else:  # pragma: no cover - SQLite before 3.35 cannot drop a column: empty it
        conn.execute(sa.text("UPDATE deletions SET user_id = NULL"))


def _keyed_hash(key: bytes, user_id: str) -> str:
    """HMAC-SHA256 of a user id under ``key``, as hex."""
    return hmac.new(key, user_id.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


#: Ordered migrations: ``MIGRATIONS[v]`` turns a version ``v - 1`` database into version ``v``.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    1: _migration_1,
    2: _migration_2,
    3: _migration_3,
    4: _migration_4,
    5: _migration_5,
    6: _migration_6,
}
#: The schema version this code writes and reads.
SCHEMA_VERSION = max(MIGRATIONS)
assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION + 1)), "migrations must be 1..N"


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


# -- input checks ----------------------------------------------------------------------------------
def _check_id(value: Any, what: str) -> str:
    """An id as stored (:func:`rules.id_problem`; ints are accepted and written as text)."""
    if isinstance(value, bool) or not isinstance(value, str | int | np.integer):
        raise InvalidInputError(f"{what} must be a string, got {type(value).__name__}")
    text = str(value)
    problem = rules.id_problem(text)
    if problem is not None:
        raise InvalidInputError(f"{what} {problem}")
    return text


def _check_optional_id(value: Any, what: str) -> str | None:
    return None if value is None else _check_id(value, what)


def _check_text(value: Any, what: str) -> str | None:
    """Optional free text (a title): valid Unicode without NUL characters, or ``None``."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a string or null, got {type(value).__name__}")
    problem = rules.text_problem(value)
    if problem is not None:
        raise InvalidInputError(f"{what} {problem}")
    return value


def _check_number(value: Any, what: str) -> float | None:
    """An optional finite number as a float."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
        raise InvalidInputError(f"{what} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidInputError(f"{what} must be finite, got {number}")
    return number


def _check_ts(value: Any, what: str) -> float | None:
    """An optional timestamp (:func:`rules.ts_problem`)."""
    return _check_ruled(value, what, rules.ts_problem)


def _check_value(value: Any, what: str) -> float | None:
    """An optional event value (:func:`rules.value_problem`)."""
    return _check_ruled(value, what, rules.value_problem)


def _check_ruled(value: Any, what: str, rule: Callable[[float], str | None]) -> float | None:
    number = _check_number(value, what)
    problem = None if number is None else rule(number)
    if problem is not None:
        raise InvalidInputError(f"{what} {problem}")
    return number


def _check_int(value: Any, what: str, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise InvalidInputError(f"{what} must be an integer, got {type(value).__name__}")
    return int(value)


def _check_bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise InvalidInputError(f"{what} must be true or false, got {type(value).__name__}")
    return bool(value)


def _json_object(value: Any, what: str) -> dict[str, Any]:
    """A JSON object exactly as it will read back (:func:`rules.json_problem`: string keys,
    finite numbers, integers within 64 bits, valid text), as plain types."""
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{what} must be a JSON object, got {type(value).__name__}")
    try:
        text = json.dumps(dict(value), allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as err:
        raise InvalidInputError(f"{what} must be JSON-serializable: {err}") from None
    loaded: dict[str, Any] = json.loads(text)
    problem = rules.json_problem(loaded)
    if problem is not None:
        raise InvalidInputError(
            f"{what}.{problem}" if not problem.startswith("key ") else f"{what}: {problem}"
        )
    return loaded


def _check_limit(limit: int | None, offset: int = 0) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise InvalidInputError(f"limit must be a non-negative integer, got {limit!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidInputError(f"offset must be a non-negative integer, got {offset!r}")


def _prefix_end(prefix: str) -> str | None:
    """The least string above every string that starts with ``prefix``, in code point order
    (its last character that can grow, grown by one; ``None`` when none can)."""
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if code == 0xD800:  # surrogates are not characters: UTF-8 cannot hold them
            code = 0xE000
        if code <= 0x10FFFF:
            return "".join(chars) + chr(code)
    return None


def _like_pattern(text: str) -> str:
    """``%text%`` with LIKE wildcards in ``text`` escaped by ``!``."""
    escaped = text.replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return f"%{escaped}%"


def _casefold(value: Any) -> str | None:
    """SQL function ``tastebud_casefold`` on SQLite (whose lower() only folds ASCII); a
    value that is not text (a BLOB written around the API) matches nothing."""
    return value.casefold() if isinstance(value, str) else None


def _chunks(values: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


_MISSING = object()


def _floats(values: Sequence[Any]) -> np.ndarray:
    """A numeric column as float64 (NULL as NaN). SQLite keeps text given to a numeric
    column as text: such a cell reads as NaN rather than failing the read (a missing value
    for ``value``; a timestamp the training set then leaves out)."""
    try:
        return np.array(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan
        )


def _feature_value(value: Any) -> Any:
    """A feature cell as a JSON value that :func:`rules.json_problem` accepts, or
    ``_MISSING`` for NaN/NA/NaT/None and for what no attribute may hold (an integer beyond
    64 bits, text with a NUL or a lone surrogate, nesting deeper than
    :data:`rules.MAX_JSON_DEPTH`): an import leaves such a cell out instead of failing. In a
    list or an object, such entries are left out."""
    try:
        cell = _json_cell(value)
    except RecursionError:
        return _MISSING
    if cell is _MISSING or rules.json_problem({"attribute": cell}) is not None:  # too deep
        return _MISSING
    return cell


def _json_cell(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT:
        return _MISSING
    if isinstance(value, np.datetime64):
        return _MISSING if np.isnat(value) else pd.Timestamp(value).isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bool | int | float | str):
        return value if rules.json_problem(value) is None else _MISSING
    if isinstance(value, list | tuple | np.ndarray):
        return [v for v in (_json_cell(x) for x in value) if v is not _MISSING]
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            cell = _json_cell(item)
            if cell is not _MISSING and isinstance(key, str) and rules.text_problem(key) is None:
                out[key] = cell
        return out
    text = str(value)
    return text if rules.text_problem(text) is None else _MISSING


def _feature_records(
    table: pd.DataFrame | None, n: int, *, take_title: bool
) -> tuple[list[dict[str, Any]], list[str | None]]:
    """Attributes (and titles) per row of a feature table aligned with an id map."""
    if table is None:
        return [{} for _ in range(n)], [None] * n
    if len(table) != n:
        raise InvalidInputError("feature table is not aligned with the dataset's ids")
    records = table.to_dict("records")
    attributes: list[dict[str, Any]] = []
    titles: list[str | None] = []
    for record in records:
        attrs: dict[str, Any] = {}
        title: str | None = None
        for key, cell in record.items():
            value = _feature_value(cell)
            if value is _MISSING or rules.text_problem(str(key)) is not None:
                continue
            if take_title and key == "title":
                title = value if isinstance(value, str) else str(value)
            else:
                attrs[str(key)] = value
        attributes.append(attrs)
        titles.append(title)
    return attributes, titles


def _import_event_id(name_json: str, user_json: str, item_json: str) -> str:
    """Deterministic ``client_event_id`` of an imported interaction (one per user/item pair)."""
    key = f"import:[{name_json},{user_json},{item_json}]"
    if len(key) > rules.MAX_ID_LENGTH:
        key = "import:sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return key


def _is_retryable(err: sa_exc.DBAPIError) -> bool:
    """A unique-key race, deadlock or serialization failure: rolling back and rerunning works."""
    orig = err.orig
    sqlstate = getattr(orig, "sqlstate", None)  # psycopg
    if sqlstate in ("23505", "40P01", "40001"):
        return True
    return getattr(orig, "sqlite_errorname", None) == "SQLITE_CONSTRAINT_UNIQUE"


def _rows(result: Iterable[sa.Row[Any]]) -> list[dict[str, Any]]:
    return [dict(row._mapping) for row in result]


# -- storage ---------------------------------------------------------------------------------------
class Storage:
    """Users, items, events, model versions and experiment logs in one SQL database.

    Parameters
    ----------
    url:
        ``sqlite:///path/to/file.db`` (the parent folder is created) or
        ``postgresql+psycopg://user:password@host:5432/dbname`` (``postgresql://`` means the
        same). In-memory SQLite is refused: each pooled connection would see its own database.

    One instance is meant to be shared by all threads of a process; :meth:`close` it (or use it
    as a context manager) when done.
    """

    def __init__(self, url: str) -> None:
        if not isinstance(url, str) or not url.strip():
            raise InvalidInputError("the database URL must be a non-empty string")
        try:
            parsed = sa.make_url(url.strip())
        except sa_exc.ArgumentError:
            raise InvalidInputError(
                f"cannot parse database URL {url!r}; use sqlite:///path/to/file.db or "
                "postgresql+psycopg://user@host:5432/dbname"
            ) from None
        backend = parsed.get_backend_name()
        driver = parsed.get_driver_name()
        if backend == "sqlite" and driver in ("pysqlite", ""):
            self.backend: Backend = "sqlite"
            self._engine = self._sqlite_engine(parsed)
        elif backend in ("postgresql", "postgres") and driver in ("psycopg", ""):
            self.backend = "postgresql"
            parsed = parsed.set(drivername="postgresql+psycopg")
            connect_args: dict[str, Any] = {}
            if "connect_timeout" not in parsed.query:
                connect_args["connect_timeout"] = 10
            self._engine = sa.create_engine(
                parsed,
                pool_size=8,
                max_overflow=32,
                pool_pre_ping=True,
                connect_args=connect_args,
                json_serializer=_json_dumps,
            )
        else:
            raise InvalidInputError(
                f"unsupported database URL scheme {parsed.drivername!r}; use sqlite:///path.db "
                "or postgresql+psycopg://user@host:5432/dbname"
            )
        self.url = parsed.render_as_string(hide_password=True)
        self._deletion_key: bytes | None = None  # user_hash's secret, read once

    @staticmethod
    def _sqlite_engine(url: sa.URL) -> Engine:
        database = url.database
        if not database or database == ":memory:" or url.query.get("mode") == "memory":
            raise InvalidInputError(
                "in-memory SQLite is not supported; give a file: sqlite:///path/to/file.db"
            )
        path = Path(database)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InvalidInputError(
                f"cannot create the folder of database {path}: {err.strerror}"
            ) from None
        engine = sa.create_engine(url, pool_size=8, max_overflow=32, json_serializer=_json_dumps)

        @sa_event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Take over transaction control from the sqlite3 module (see the "begin" hook).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("PRAGMA busy_timeout = 10000")
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = FULL")
                cursor.execute("PRAGMA foreign_keys = ON")
                # deleted rows are overwritten with zeros, not left in free space of the
                # file (a deleted user's id must not stay readable in its bytes)
                cursor.execute("PRAGMA secure_delete = ON")
            finally:
                cursor.close()
            dbapi_connection.create_function("tastebud_casefold", 1, _casefold, deterministic=True)

        @sa_event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            immediate = conn.get_execution_options().get("tastebud_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    # -- plumbing ----------------------------------------------------------------------------------
    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Storage({self.url!r})"

    def close(self) -> None:
        """Close every pooled connection; the object must not be used afterwards."""
        self._engine.dispose()

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for diagnostics; use the methods to read and write)."""
        return self._engine

    def _read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in a read transaction (one snapshot on SQLite)."""
        with self._engine.connect() as conn:
            return fn(conn)

    def _write(self, fn: Callable[[Connection], T], *, durable: bool = True) -> T:
        """Run ``fn`` in one write transaction, committed on return, rerun when it lost a race.

        ``durable=False`` (telemetry such as exposures) commits without waiting for the disk
        on SQLite (``synchronous=NORMAL`` for that transaction: atomic and safe from a
        process crash, but the last commits may be lost to a power cut), so the write lock
        it holds is not held through an fsync that the events behind it wait for."""
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            try:
                with self._engine.connect() as conn:
                    if self.backend == "sqlite":
                        conn.execution_options(tastebud_write=True)
                    raw = conn.connection.driver_connection  # outside any transaction
                    if raw is not None and self.backend == "sqlite" and not durable:
                        raw.execute("PRAGMA synchronous = NORMAL")
                    try:
                        with conn.begin():
                            return fn(conn)
                    finally:
                        if raw is not None and self.backend == "sqlite" and not durable:
                            raw.execute("PRAGMA synchronous = FULL")
            except sa_exc.DBAPIError as err:
                if attempt == _WRITE_ATTEMPTS or not _is_retryable(err):
                    raise
                time.sleep(random.uniform(0.001, 0.01 * attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def _insert(self, table: sa.Table) -> sqlite.Insert | postgresql.Insert:
        """An INSERT that supports ``on_conflict_do_*`` on this backend."""
        return postgresql.insert(table) if self.backend == "postgresql" else sqlite.insert(table)

    def _bulk_insert(
        self,
        conn: Connection,
        table: sa.Table,
        rows: Sequence[Mapping[str, Any]],
        *,
        skip_conflicts_on: str | None = None,
    ) -> int:
        """Insert rows (all with the same keys) in chunks; returns how many were written.

        With ``skip_conflicts_on`` (a unique column), rows clashing with a stored one are
        skipped. SQLite gets an executemany; PostgreSQL one ``INSERT ... SELECT unnest(...)``
        per chunk, with one array parameter per column (much faster than row-wise VALUES).
        """
        if not rows:
            return 0
        columns = list(rows[0])
        written = 0
        if self.backend == "postgresql":
            arrays = [
                sa.func.unnest(sa.bindparam(f"array_{c}", type_=postgresql.ARRAY(table.c[c].type)))
                for c in columns
            ]
            pg_stmt = postgresql.insert(table).from_select(columns, sa.select(*arrays))
            if skip_conflicts_on is not None:
                pg_stmt = pg_stmt.on_conflict_do_nothing(
                    index_elements=[table.c[skip_conflicts_on]]
                )
            for chunk in _chunks(rows, _BULK_CHUNK):
                params = {f"array_{c}": [row[c] for row in chunk] for c in columns}
                written += conn.execute(pg_stmt, params, execution_options=_ROWCOUNT).rowcount
        else:
            lite_stmt = sqlite.insert(table)
            if skip_conflicts_on is not None:
                lite_stmt = lite_stmt.on_conflict_do_nothing(
                    index_elements=[table.c[skip_conflicts_on]]
                )
            for chunk in _chunks(rows, _BULK_CHUNK):
                written += conn.execute(
                    lite_stmt, list(chunk), execution_options=_ROWCOUNT
                ).rowcount
        return written

    @staticmethod
    def _existing(conn: Connection, table: sa.Table, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are stored in ``table`` (users or items; queried in chunks)."""
        found: set[str] = set()
        for chunk in _chunks(ids):
            found.update(conn.execute(_IDS_IN[table.name], {"ids": list(chunk)}).scalars())
        return found

    # -- schema ------------------------------------------------------------------------------------
    def migrate(self) -> int:
        """Create the schema or apply the missing migrations; returns the schema version.

        Idempotent and safe to call at every start, also from several processes at once.
        Raises :class:`TastebudError` if the database was written by a newer tastebud.
        """

        def run(conn: Connection) -> int:
            if self.backend == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
            SCHEMA_VERSION_TABLE.create(conn, checkfirst=True)
            current = conn.execute(sa.select(SCHEMA_VERSION_TABLE.c.version)).scalar()
            version = int(current or 0)
            if version > SCHEMA_VERSION:
                raise TastebudError(
                    f"the database {self.url} has schema version {version}, newer than "
                    f"version {SCHEMA_VERSION} that this tastebud knows; upgrade tastebud"
                )
            for step in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[step](conn)
            if version < SCHEMA_VERSION:
                values = {"version": SCHEMA_VERSION, "updated_at": time.time()}
                if current is None:
                    conn.execute(sa.insert(SCHEMA_VERSION_TABLE).values(id=1, **values))
                else:
                    conn.execute(sa.update(SCHEMA_VERSION_TABLE).values(**values))
            return SCHEMA_VERSION

        return self._write(run)

    def schema_version(self) -> int:
        """The database's schema version; 0 when :meth:`migrate` has never run on it."""

        def run(conn: Connection) -> int:
            if not sa.inspect(conn).has_table(SCHEMA_VERSION_TABLE.name):
                return 0
            current = conn.execute(sa.select(SCHEMA_VERSION_TABLE.c.version)).scalar()
            return int(current or 0)

        return self._read(run)

    def drop_all(self) -> None:
        """Destructive, for tests: drop every tastebud table with all its data."""

        def run(conn: Connection) -> None:
            METADATA.drop_all(conn, checkfirst=True)

        self._write(run)
        self._deletion_key = None

    # -- users -------------------------------------------------------------------------------------
    def upsert_user(
        self, user_id: str, attributes: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Create a user or replace its attributes; ``None`` leaves an existing user's as they are.

        Returns the stored user: ``{"id", "attributes", "created_at"}`` (``created_at`` is kept
        on update).
        """
        uid = _check_id(user_id, "user_id")
        attrs = None if attributes is None else _json_object(attributes, "attributes")

        def run(conn: Connection) -> dict[str, Any]:
            stmt = self._insert(USERS).values(
                id=uid, attributes=attrs or {}, created_at=time.time()
            )
            if attrs is None:
                stmt = stmt.on_conflict_do_nothing(index_elements=[USERS.c.id])
            else:
                stmt = stmt.on_conflict_do_update(
                    index_elements=[USERS.c.id], set_={"attributes": stmt.excluded.attributes}
                )
            conn.execute(stmt)
            user = self._get_one(conn, USERS, uid)
            assert user is not None
            return user

        return self._write(run)

    @staticmethod
    def _get_one(conn: Connection, table: sa.Table, key: str) -> dict[str, Any] | None:
        row = conn.execute(sa.select(table).where(table.c.id == key)).first()
        return None if row is None else dict(row._mapping)

    def get_user(self, user_id: str) -> dict[str, Any] | None:
        """The user ``{"id", "attributes", "created_at"}``, or ``None``."""
        uid = _check_id(user_id, "user_id")
        return self._read(lambda conn: self._get_one(conn, USERS, uid))

    def delete_user(self, user_id: str, *, log: bool = False) -> bool:
        """Delete a user with all their events, exposures and feedback (one transaction), so
        that no table holds their id afterwards.

        The deletions log gets the user's :meth:`user_hash` (serving processes drop what
        they hold of the user; exposure writes still buffered leave the user's rows out);
        when the user had events, the model versions that may have learned from them get
        ``forgotten_at`` (never activated again) and :meth:`forget_mark` grows. Returns
        whether anything of the user was stored (a user row, events, exposures -- lists
        are logged for ids never stored as users -- or feedback). ``log=True`` logs the
        deletion even when nothing was (the caller dropped rows of theirs still buffered).
        """
        uid = _check_id(user_id, "user_id")
        hashed = self.user_hash(uid)

        def run(conn: Connection) -> bool:
            if self.backend == "postgresql":  # exposure batches in flight commit first
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_FORGET_KEY)))
            first = conn.execute(
                sa.select(sa.func.min(EVENTS.c.seq)).where(EVENTS.c.user_id == uid)
            ).scalar()
            events = conn.execute(sa.delete(EVENTS).where(EVENTS.c.user_id == uid)).rowcount
            logs = conn.execute(sa.delete(EXPOSURES).where(EXPOSURES.c.user_id == uid)).rowcount
            logs += conn.execute(sa.delete(FEEDBACK).where(FEEDBACK.c.user_id == uid)).rowcount
            user = conn.execute(sa.delete(USERS).where(USERS.c.id == uid)).rowcount
            found = bool(user or events or logs)
            if not (found or log):
                return False
            now = time.time()
            self._log_deletion(conn, now, user_hash=hashed)
            if events and first is not None:
                self._forget_in_versions(conn, int(first), now)
            return found

        deleted = self._write(run)
        if (deleted or log) and self.backend == "sqlite":
            self._truncate_wal()
        return deleted

    def _truncate_wal(self) -> None:
        """Copy the write-ahead log into the database file and empty it, so that the frames
        holding a deleted user's rows go (best effort: readers in the way for more than
        0.5 s leave it to SQLite's next checkpoints, which overwrite the log from its start).
        """
        with self._engine.connect() as conn:
            raw = conn.connection.driver_connection
            if raw is None:  # pragma: no cover
                return
            raw.execute("PRAGMA busy_timeout = 500")
            try:
                # a busy database answers (1, ...) or raises; either way nothing is lost
                raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.OperationalError:  # pragma: no cover
                pass
            finally:
                raw.execute("PRAGMA busy_timeout = 10000")

    def _log_deletion(self, conn: Connection, now: float, **row: str) -> None:
        """Add a row to the deletions log and prune the rows older than DELETION_LOG_S."""
        conn.execute(sa.delete(DELETIONS).where(DELETIONS.c.ts < now - DELETION_LOG_S))
        conn.execute(sa.insert(DELETIONS).values(ts=now, **row))

    def _forget_in_versions(self, conn: Connection, first_seq: int, now: float) -> None:
        """A user whose first stored event was ``first_seq`` was deleted: mark the versions
        trained on events up to it or later (``metrics.last_seq``; unknown counts as later)
        and grow the forget mark."""
        mv = MODEL_VERSIONS
        rows = conn.execute(sa.select(mv.c.id, mv.c.metrics).where(mv.c.forgotten_at.is_(None)))
        marked = []
        for vid, metrics in rows:
            last = (metrics or {}).get("last_seq")
            if not isinstance(last, int) or last >= first_seq:
                marked.append(vid)
        for chunk in _chunks(marked):
            conn.execute(sa.update(mv).where(mv.c.id.in_(chunk)).values(forgotten_at=now))
        mark = self._meta(conn, "forget_mark")
        value = str(int(mark or 0) + 1)
        if mark is None:
            conn.execute(sa.insert(META).values(key="forget_mark", value=value))
        else:
            conn.execute(sa.update(META).where(META.c.key == "forget_mark").values(value=value))

    @staticmethod
    def _meta(conn: Connection, key: str) -> str | None:
        return conn.execute(sa.select(META.c.value).where(META.c.key == key)).scalar()

    def user_hash(self, user_id: str) -> str:
        """The keyed hash that stands for a deleted user in the deletions log: HMAC-SHA256
        of the id under this database's secret (``meta.deletion_key``), as hex. Without the
        secret it cannot be told from a random value; serving processes compare it with the
        hashes of the users they hold."""
        return _keyed_hash(self._key(), str(user_id))

    def _key(self, conn: Connection | None = None) -> bytes:
        """The secret of :meth:`user_hash` (read once, on ``conn`` when given)."""
        if self._deletion_key is None:
            stored = (
                self._meta(conn, "deletion_key")
                if conn is not None
                else self._read(lambda c: self._meta(c, "deletion_key"))
            )
            if stored is None:
                raise TastebudError(f"the database {self.url} has no deletion key; migrate it")
            self._deletion_key = bytes.fromhex(stored)
        return self._deletion_key

    def forget_mark(self) -> int:
        """How many deleted users had events (grows with each): a model trained on events
        read when it was lower may hold a deleted user. :meth:`events_frame` notes it in
        ``frame.attrs[FORGET_MARK]``, read before the events."""
        return self._read(self._read_forget_mark)

    def _read_forget_mark(self, conn: Connection) -> int:
        return int(self._meta(conn, "forget_mark") or 0)

    def mark_forgotten(self, version_ids: Iterable[int]) -> None:
        """Mark versions as possibly holding a deleted user (never activated again)."""
        ids = [_check_int(v, "version id") for v in version_ids]
        mv = MODEL_VERSIONS

        def run(conn: Connection) -> None:
            for chunk in _chunks(ids):
                conn.execute(
                    sa.update(mv)
                    .where(mv.c.id.in_(chunk), mv.c.forgotten_at.is_(None))
                    .values(forgotten_at=time.time())
                )

        self._write(run)

    def forgotten_versions(self) -> list[dict[str, Any]]:
        """The versions marked ``forgotten_at``, oldest first."""
        mv = MODEL_VERSIONS
        stmt = sa.select(mv).where(mv.c.forgotten_at.is_not(None)).order_by(mv.c.id)
        return self._read(lambda conn: _rows(conn.execute(stmt)))

    def deactivate_model_versions(self) -> None:
        """Leave no version active (the service serves popularity until the next one)."""
        self._write(lambda conn: conn.execute(sa.update(MODEL_VERSIONS).values(active=False)))

    def list_users(
        self, limit: int = 100, offset: int = 0, prefix: str | None = None
    ) -> list[dict[str, Any]]:
        """Users ordered by id, one page; ``prefix`` keeps those whose id starts with it
        (case-sensitive, ordered by code point).

        A prefix is a range of the id index -- ``prefix <= id < the next string after every
        id starting with it`` -- so a type-ahead search costs an index seek and ``limit``
        rows however many users there are: SQLite compares text by code point already, and
        PostgreSQL compares ``id COLLATE "C"`` under its own index (migration 5), since its
        database collation may not keep the ids of a prefix together."""
        _check_limit(limit, offset)
        if not prefix:
            stmt = sa.select(USERS).order_by(USERS.c.id).limit(limit).offset(offset)
            return self._read(lambda conn: _rows(conn.execute(stmt)))
        if not isinstance(prefix, str):
            raise InvalidInputError(f"prefix must be a string, got {type(prefix).__name__}")
        if rules.text_problem(prefix) is not None or len(prefix) > rules.MAX_ID_LENGTH:
            return []  # no id starts with it (nor could be stored)
        start = prefix
        key: sa.ColumnElement[str] = USERS.c.id
        if self.backend == "postgresql":
            key = sa.collate(USERS.c.id, "C")
        stmt = sa.select(USERS).where(key >= start)
        stop = _prefix_end(start)
        if stop is not None:
            stmt = stmt.where(key < stop)
        stmt = stmt.order_by(key).limit(limit).offset(offset)
        return self._read(lambda conn: _rows(conn.execute(stmt)))

    def count_users(self) -> int:
        """Number of users."""
        return self._count(USERS)

    def _count(self, table: sa.Table) -> int:
        stmt = sa.select(sa.func.count()).select_from(table)
        return self._read(lambda conn: int(conn.execute(stmt).scalar_one()))

    # -- items -------------------------------------------------------------------------------------
    def upsert_item(
        self,
        item_id: str,
        title: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        available: bool | None = None,
    ) -> dict[str, Any]:
        """Create an item or update the fields given (``None``: keep; on insert the default).

        Defaults of a new item: no title, ``{}`` attributes, available. Use
        :meth:`update_item` to clear a title. Returns the stored item
        ``{"id", "title", "attributes", "available", "created_at"}``.
        """
        iid = _check_id(item_id, "item_id")
        fields: dict[str, Any] = {}
        if title is not None:
            fields["title"] = _check_text(title, "title")
        if attributes is not None:
            fields["attributes"] = _json_object(attributes, "attributes")
        if available is not None:
            fields["available"] = _check_bool(available, "available")

        def run(conn: Connection) -> dict[str, Any]:
            row = {"title": None, "attributes": {}, "available": True, **fields}
            now = time.time()
            stmt = self._insert(ITEMS).values(id=iid, created_at=now, updated_at=now, **row)
            if fields:
                stmt = stmt.on_conflict_do_update(
                    index_elements=[ITEMS.c.id],
                    set_={name: stmt.excluded[name] for name in [*fields, "updated_at"]},
                )
            else:
                stmt = stmt.on_conflict_do_nothing(index_elements=[ITEMS.c.id])
            conn.execute(stmt)
            item = self._get_one(conn, ITEMS, iid)
            assert item is not None
            return item

        return self._write(run)

    def update_item(self, item_id: str, **fields: Any) -> dict[str, Any]:
        """Change some of ``title`` (``None`` clears it), ``attributes``, ``available``.

        Raises :class:`UnknownIdError` for an unknown item. Returns the stored item.
        """
        iid = _check_id(item_id, "item_id")
        unknown = sorted(set(fields) - {"title", "attributes", "available"})
        if unknown:
            raise InvalidInputError(
                f"cannot update item field(s) {', '.join(unknown)}; "
                "updatable: title, attributes, available"
            )
        values: dict[str, Any] = {}
        if "title" in fields:
            values["title"] = _check_text(fields["title"], "title")
        if "attributes" in fields:
            values["attributes"] = _json_object(fields["attributes"], "attributes")
        if "available" in fields:
            values["available"] = _check_bool(fields["available"], "available")

        def run(conn: Connection) -> dict[str, Any]:
            if values:
                conn.execute(
                    sa.update(ITEMS)
                    .where(ITEMS.c.id == iid)
                    .values(**values, updated_at=time.time())
                )
            item = self._get_one(conn, ITEMS, iid)
            if item is None:
                raise UnknownIdError(f"unknown item id {iid!r}")
            return item

        return self._write(run)

    def get_item(self, item_id: str) -> dict[str, Any] | None:
        """The item ``{"id", "title", "attributes", "available", "created_at"}``, or ``None``."""
        iid = _check_id(item_id, "item_id")
        return self._read(lambda conn: self._get_one(conn, ITEMS, iid))

    def delete_item(self, item_id: str) -> bool:
        """Delete an item and its events; returns whether the item or any event existed."""
        iid = _check_id(item_id, "item_id")

        def run(conn: Connection) -> bool:
            events = conn.execute(sa.delete(EVENTS).where(EVENTS.c.item_id == iid)).rowcount
            item = conn.execute(sa.delete(ITEMS).where(ITEMS.c.id == iid)).rowcount
            if events:
                self._log_deletion(conn, time.time(), item_id=iid)
            return bool(item or events)

        return self._write(run)

    def list_items(
        self, limit: int = 100, offset: int = 0, query: str | None = None
    ) -> list[dict[str, Any]]:
        """Items ordered by id, one page; ``query`` keeps those whose title or id contains it
        (case-insensitive; ``%`` and ``_`` match themselves)."""
        _check_limit(limit, offset)
        stmt = sa.select(ITEMS).order_by(ITEMS.c.id).limit(limit).offset(offset)
        if query:
            if not isinstance(query, str):
                raise InvalidInputError(f"query must be a string, got {type(query).__name__}")
            stmt = stmt.where(
                sa.or_(self._contains(ITEMS.c.title, query), self._contains(ITEMS.c.id, query))
            )
        return self._read(lambda conn: _rows(conn.execute(stmt)))

    def _contains(self, column: sa.Column[Any], text: str) -> sa.ColumnElement[bool]:
        """Case-insensitive substring test with a bound pattern."""
        if self.backend == "postgresql":
            return column.ilike(_like_pattern(text), escape="!")
        folded = sa.func.tastebud_casefold(column, type_=sa.Text)
        return folded.like(_like_pattern(text.casefold()), escape="!")

    def count_items(self) -> int:
        """Number of items."""
        return self._count(ITEMS)

    def all_items(self) -> list[dict[str, Any]]:
        """Every item, ordered by id."""
        stmt = sa.select(ITEMS).order_by(ITEMS.c.id)
        return self._read(lambda conn: _rows(conn.execute(stmt)))

    def items_changed_since(self, ts: float) -> list[dict[str, Any]]:
        """Items written (created or updated) at or after ``ts`` (unix seconds)."""
        since = _check_number(ts, "ts")
        stmt = sa.select(ITEMS).where(ITEMS.c.updated_at >= since)
        return self._read(lambda conn: _rows(conn.execute(stmt)))

    def newest_items(self, limit: int, since: float = 0.0) -> list[dict[str, Any]]:
        """Up to ``limit`` available items created at or after ``since``, newest first."""
        _check_limit(limit)
        after = _check_number(since, "since")
        stmt = (
            sa.select(ITEMS)
            .where(ITEMS.c.created_at >= after, ITEMS.c.available.is_(True))
            .order_by(ITEMS.c.created_at.desc(), ITEMS.c.id)
            .limit(limit)
        )
        return self._read(lambda conn: _rows(conn.execute(stmt)))

    # -- events ------------------------------------------------------------------------------------
    def add_events(
        self,
        events: Sequence[Mapping[str, Any]],
        *,
        create_missing_users: bool = True,
        create_missing_items: bool = False,
    ) -> list[dict[str, Any]]:
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
        rows = [_clean_event(e, pos, now) for pos, e in enumerate(events)]
        if not rows:
            return []
        return self._write(
            lambda conn: self._add_events(
                conn, rows, now, create_missing_users, create_missing_items
            )
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
        known = self._existing(conn, table, wanted)
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
        self._bulk_insert(conn, table, new, skip_conflicts_on="id")

    def _add_events(
        self,
        conn: Connection,
        rows: list[dict[str, Any]],
        now: float,
        create_missing_users: bool,
        create_missing_items: bool,
    ) -> list[dict[str, Any]]:
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
            self._insert_feedback(conn, feedback)

        client_ids = [r["client_event_id"] for r in rows if r["client_event_id"] is not None]
        stored: dict[str, int] = {}
        for chunk in _chunks(sorted(set(client_ids))):
            found = conn.execute(_STORED_CLIENT_IDS, {"ids": list(chunk)})
            stored.update({cid: int(seq) for cid, seq in found})

        answers: list[dict[str, Any] | None] = [None] * len(rows)
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
        # fail on the UNIQUE constraint; _write then reruns the batch, which finds it stored.
        for pos, seq in zip(to_insert, self._insert_events(conn, rows, to_insert), strict=True):
            answers[pos] = {"seq": seq, "duplicate": False}
        for pos, cid in repeats:
            stored_answer = answers[first[cid]]
            assert stored_answer is not None
            answers[pos] = {"seq": stored_answer["seq"], "duplicate": True}
        out = [a for a in answers if a is not None]
        assert len(out) == len(rows)
        return out

    def _insert_events(
        self, conn: Connection, rows: list[dict[str, Any]], positions: list[int]
    ) -> list[int]:
        """Insert ``rows[p]`` for ``p`` in ``positions`` in that order; returns their seqs."""
        if not positions:
            return []
        if self.backend == "postgresql":
            # Take the seqs from the column's sequence first (increasing, in input order), then
            # insert them explicitly: no per-row statements and no reliance on RETURNING order.
            sequence = sa.func.pg_get_serial_sequence(EVENTS.name, EVENTS.c.seq.name)
            allocate = sa.select(sa.func.nextval(sequence)).select_from(
                sa.func.generate_series(1, len(positions))
            )
            seqs = sorted(int(s) for s in conn.execute(allocate).scalars())
            batch = [{**rows[p], "seq": s} for p, s in zip(positions, seqs, strict=True)]
            self._bulk_insert(conn, EVENTS, batch)
            return seqs
        if len(positions) == 1 and _SQLITE_RETURNING:  # the usual case: one statement
            return [int(conn.execute(_INSERT_EVENT_RETURNING, rows[positions[0]]).scalar_one())]
        # SQLite: this transaction holds the write lock and AUTOINCREMENT hands out increasing
        # seqs above every stored one, so the new rows are exactly those above the old maximum,
        # in insertion order.
        before = conn.execute(sa.select(sa.func.coalesce(sa.func.max(EVENTS.c.seq), 0)))
        floor = int(before.scalar_one())
        self._bulk_insert(conn, EVENTS, [rows[p] for p in positions])
        new = sa.select(EVENTS.c.seq).where(EVENTS.c.seq > floor).order_by(EVENTS.c.seq)
        seqs = [int(s) for s in conn.execute(new).scalars()]
        if len(seqs) != len(positions):  # pragma: no cover - would mean a second writer
            raise TastebudError("events were written concurrently outside the write lock")
        return seqs

    def user_events(self, user_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        """A user's events, oldest first (by ``ts``, then ``seq``); ``limit`` keeps the most
        recent ones. Each is ``{"seq", "user_id", "item_id", "type", "value", "ts",
        "client_event_id", "received_at"}``."""
        uid = _check_id(user_id, "user_id")
        _check_limit(limit)
        stmt = (
            sa.select(EVENTS)
            .where(EVENTS.c.user_id == uid)
            .order_by(EVENTS.c.ts.desc(), EVENTS.c.seq.desc())
            .limit(limit)
        )
        return self._read(lambda conn: _rows(conn.execute(stmt)))[::-1]

    def recent_events(self, user_id: str, limit: int) -> list[tuple[str, str, float | None]]:
        """A user's latest ``limit`` events as ``(item_id, type, value)``, oldest first: the
        request path's lean read (no dicts, no timestamps)."""
        uid = _check_id(user_id, "user_id")
        _check_limit(limit)
        params = {"user_id": uid, "limit": limit}
        return self._read(
            lambda conn: [tuple(row) for row in conn.execute(_RECENT_EVENTS, params).all()]
        )[::-1]

    def events_frame(self, since_seq: int = 0) -> pd.DataFrame:
        """Events with ``seq > since_seq`` for training, ordered by ``seq``.

        Columns: ``user``, ``item``, ``type`` (str), ``value`` (float, NaN when absent),
        ``timestamp`` (float unix seconds), ``seq`` (int64). ``frame.attrs[FORGET_MARK]`` is
        :meth:`forget_mark` read first: a model trained on these events holds no user
        deleted while that mark stays the same.
        """
        since = _check_int(since_seq, "since_seq")
        stmt = (
            sa.select(
                EVENTS.c.user_id,
                EVENTS.c.item_id,
                EVENTS.c.type,
                EVENTS.c.value,
                EVENTS.c.ts,
                EVENTS.c.seq,
            )
            .where(EVENTS.c.seq > since)
            .order_by(EVENTS.c.seq)
        )

        def read(conn: Connection) -> tuple[int, list[Any]]:
            return self._read_forget_mark(conn), list(conn.execute(stmt).all())

        mark, rows = self._read(read)
        columns = list(zip(*rows, strict=True)) if rows else [()] * 6
        frame = pd.DataFrame(
            {
                "user": pd.Series(columns[0], dtype=object),
                "item": pd.Series(columns[1], dtype=object),
                "type": pd.Series(columns[2], dtype=object),
                "value": _floats(columns[3]),
                "timestamp": _floats(columns[4]),
                "seq": np.array(columns[5], dtype=np.int64),
            }
        )
        frame.attrs[FORGET_MARK] = mark
        return frame

    def events_after(
        self, seq: int, also: Iterable[int] = (), limit: int = 10_000
    ) -> list[tuple[int, str, str, str, float | None]]:
        """The first ``limit`` events with ``seq`` above ``seq``, and those among the seqs
        ``also`` (at most 1,000; gaps seen earlier that a slow transaction may fill yet), as
        ``(seq, user_id, item_id, type, value)`` ordered by ``seq``: how serving processes
        follow the events table."""
        after = _check_int(seq, "seq")
        _check_limit(limit)
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
        return self._read(lambda conn: [tuple(row) for row in conn.execute(stmt)])

    def deletions_after(self, seq: int) -> list[tuple[int, str | None, str | None]]:
        """The deletions log after ``seq``: ``(seq, user_hash, item_id)`` ordered by ``seq``
        (a user was deleted -- :meth:`user_hash` -- or an item's events were)."""
        after = _check_int(seq, "seq")
        stmt = (
            sa.select(DELETIONS.c.seq, DELETIONS.c.user_hash, DELETIONS.c.item_id)
            .where(DELETIONS.c.seq > after)
            .order_by(DELETIONS.c.seq)
        )
        return self._read(lambda conn: [tuple(row) for row in conn.execute(stmt)])

    def last_deletion(self) -> int:
        """The largest ``seq`` of the deletions log, 0 when it is empty."""
        stmt = sa.select(sa.func.max(DELETIONS.c.seq))
        return self._read(lambda conn: int(conn.execute(stmt).scalar() or 0))

    def count_events(self) -> int:
        """Number of stored events."""
        return self._count(EVENTS)

    def last_seq(self) -> int:
        """The largest stored ``seq``, 0 when there are no events."""
        stmt = sa.select(sa.func.max(EVENTS.c.seq))
        return self._read(lambda conn: int(conn.execute(stmt).scalar() or 0))

    # -- model versions ----------------------------------------------------------------------------
    def add_model_version(
        self,
        model: str,
        params: Mapping[str, Any],
        path: str,
        metrics: Mapping[str, Any],
        n_events: int,
    ) -> dict[str, Any]:
        """Record a trained model (inactive); numpy values become plain JSON, NaN null.

        Returns ``{"id", "model", "params", "path", "metrics", "created_at", "n_events",
        "active"}``.
        """
        row = {
            "model": _check_id(model, "model"),
            "params": _json_object(_plain(_mapping(params, "params")), "params"),
            "path": _check_text(path, "path"),
            "metrics": _json_object(_plain(_mapping(metrics, "metrics")), "metrics"),
            "n_events": _check_int(n_events, "n_events"),
            "created_at": time.time(),
            "active": False,
        }
        if row["path"] is None:
            raise InvalidInputError("path must be a string")

        def run(conn: Connection) -> dict[str, Any]:
            stmt = sa.insert(MODEL_VERSIONS).values(**row).returning(*MODEL_VERSIONS.c)
            return dict(conn.execute(stmt).one()._mapping)

        return self._write(run)

    def list_model_versions(self) -> list[dict[str, Any]]:
        """All model versions, oldest first."""
        stmt = sa.select(MODEL_VERSIONS).order_by(MODEL_VERSIONS.c.id)
        return self._read(lambda conn: _rows(conn.execute(stmt)))

    def get_model_version(self, version_id: int) -> dict[str, Any] | None:
        """One model version, or ``None``."""
        vid = _check_int(version_id, "version id")
        stmt = sa.select(MODEL_VERSIONS).where(MODEL_VERSIONS.c.id == vid)
        return self._read(lambda conn: next(iter(_rows(conn.execute(stmt))), None))

    def activate_model_version(self, version_id: int) -> dict[str, Any]:
        """Make one version the only active one (one transaction); returns it.

        Raises :class:`UnknownIdError` for an unknown id.
        """
        vid = _check_int(version_id, "version id")
        mv = MODEL_VERSIONS

        def run(conn: Connection) -> dict[str, Any]:
            if conn.execute(sa.select(mv.c.id).where(mv.c.id == vid)).first() is None:
                raise UnknownIdError(f"unknown model version {vid}")
            # One statement over every row: a concurrent activation waits on the row locks and
            # then re-evaluates, so exactly one version is active whoever commits last.
            conn.execute(sa.update(mv).values(active=sa.case((mv.c.id == vid, True), else_=False)))
            return dict(conn.execute(sa.select(mv).where(mv.c.id == vid)).one()._mapping)

        return self._write(run)

    def active_model_version(self) -> dict[str, Any] | None:
        """The active model version, or ``None``."""
        stmt = (
            sa.select(MODEL_VERSIONS)
            .where(MODEL_VERSIONS.c.active.is_(True))
            .order_by(MODEL_VERSIONS.c.id.desc())
            .limit(1)
        )
        return self._read(lambda conn: next(iter(_rows(conn.execute(stmt))), None))

    # -- experiments -------------------------------------------------------------------------------
    def log_exposures(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Store the items shown to users (bulk); returns how many rows were written.

        Each row has ``request_id``, ``user_id``, ``item_id``, ``position`` (0-based rank) and
        optionally ``source``, ``model_version``, ``experiment``, ``variant``, ``ts``.
        """
        now = time.time()
        return self.log_exposure_rows([exposure_row(row, pos, now) for pos, row in enumerate(rows)])

    def log_exposure_rows(self, rows: Sequence[tuple[Any, ...]]) -> int:
        """Store exposures given as tuples in :data:`EXPOSURE_COLUMNS` order, already
        checked (:func:`exposure_row`, or the service's own lists): the cheap path, one
        ``executemany`` on SQLite. Returns how many rows were written.

        Rows of users in the deletions log are left out, in the writing transaction: a list
        served just before its user was deleted, whose exposures were still buffered, adds
        nothing after the deletion (SQLite runs one write at a time; on PostgreSQL the
        deletion and this write take one advisory lock, exclusive and shared)."""
        if not rows:
            return 0

        def run(conn: Connection) -> int:
            if self.backend == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock_shared(_PG_FORGET_KEY)))
            kept = self._not_deleted(conn, rows)
            if not kept:
                return 0
            if self.backend == "sqlite":
                conn.exec_driver_sql(_INSERT_EXPOSURES_SQLITE, kept)
                return len(kept)
            as_dicts = [dict(zip(EXPOSURE_COLUMNS, row, strict=True)) for row in kept]
            return self._bulk_insert(conn, EXPOSURES, as_dicts)

        return self._write(run, durable=False)

    def _not_deleted(self, conn: Connection, rows: Sequence[tuple[Any, ...]]) -> list[Any]:
        """``rows`` (exposure tuples) less those of users in the deletions log shown before
        their deletion, or up to :data:`_DELETION_SLACK_S` after it (a list stamped just
        after the deletion was computed before it; another server's clock may differ). A
        list shown later asked for the id again: it is logged."""
        ds = DELETIONS
        stmt = (
            sa.select(ds.c.user_hash, sa.func.max(ds.c.ts))
            .where(ds.c.user_hash.is_not(None))
            .group_by(ds.c.user_hash)
        )
        deleted: dict[str, float] = {h: float(ts) for h, ts in conn.execute(stmt)}
        if not deleted:
            return list(rows)
        key = self._key(conn)
        until = {}
        for user in {row[1] for row in rows}:
            at = deleted.get(_keyed_hash(key, str(user)))
            if at is not None:
                until[user] = at + _DELETION_SLACK_S
        ts = EXPOSURE_COLUMNS.index("ts")
        return [row for row in rows if row[1] not in until or row[ts] > until[row[1]]]

    def log_feedback(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """Store one outcome (``user_id``, ``item_id``, ``type`` like click or like; optionally
        ``request_id`` of the exposures it answers, ``ts``); returns the stored row. The same
        outcome of a list (request, user, item, type) is stored once: a repeat returns it."""
        if not isinstance(row, Mapping):
            raise InvalidInputError("feedback must be an object")
        _no_extra_keys(row, {"request_id", "user_id", "item_id", "type", "ts"}, "feedback")
        ts = _check_ts(row.get("ts"), "feedback ts")
        values = {
            "request_id": _check_optional_id(row.get("request_id"), "feedback request_id"),
            "user_id": _check_id(row.get("user_id"), "feedback user_id"),
            "item_id": _check_id(row.get("item_id"), "feedback item_id"),
            "type": _check_id(row.get("type"), "feedback type"),
            "ts": time.time() if ts is None else ts,
        }
        fb = FEEDBACK

        def run(conn: Connection) -> dict[str, Any]:
            if values["request_id"] is None:
                stmt = sa.insert(fb).values(**values).returning(*fb.c)
                return dict(conn.execute(stmt).one()._mapping)
            self._insert_feedback(conn, [values])
            same = sa.and_(
                *(fb.c[k] == values[k] for k in ("request_id", "user_id", "item_id", "type"))
            )
            return dict(conn.execute(sa.select(fb).where(same)).one()._mapping)

        return self._write(run)

    def _insert_feedback(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """Insert feedback rows with a request_id, skipping outcomes already stored."""
        stmt = self._insert(FEEDBACK).on_conflict_do_nothing(
            index_elements=[
                FEEDBACK.c.request_id,
                FEEDBACK.c.user_id,
                FEEDBACK.c.item_id,
                FEEDBACK.c.type,
            ]
        )
        conn.execute(stmt, rows)

    def exposure_counts(self, experiment: str) -> pd.DataFrame:
        """Per-variant exposure and outcome counts of one experiment, one row per variant.

        Columns:

        ``variant``
            the variant name (``None`` for exposures logged without one);
        ``users``
            distinct users exposed;
        ``requests``
            distinct request ids;
        ``exposures``
            exposure rows (items shown);
        ``<type>_events``, ``<type>_users``
            for each feedback type (``click``, ``like``...; sorted): feedback rows whose
            ``request_id`` is one of the variant's requests, and the distinct users among
            them. Feedback without a matching request is not counted.
        """
        name = _check_id(experiment, "experiment")
        ex, fb = EXPOSURES, FEEDBACK
        exposure_stmt = (
            sa.select(
                ex.c.variant,
                sa.func.count(sa.distinct(ex.c.user_id)),
                sa.func.count(sa.distinct(ex.c.request_id)),
                sa.func.count(),
            )
            .where(ex.c.experiment == name)
            .group_by(ex.c.variant)
        )
        requests = (
            sa.select(ex.c.request_id, ex.c.variant)
            .where(ex.c.experiment == name)
            .distinct()
            .subquery()
        )
        outcome_stmt = (
            sa.select(
                requests.c.variant,
                fb.c.type,
                sa.func.count(),
                sa.func.count(sa.distinct(fb.c.user_id)),
            )
            .select_from(fb.join(requests, fb.c.request_id == requests.c.request_id))
            .group_by(requests.c.variant, fb.c.type)
        )

        def run(conn: Connection) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
            exposed = [tuple(row) for row in conn.execute(exposure_stmt)]
            return exposed, [tuple(row) for row in conn.execute(outcome_stmt)]

        exposed, outcomes = self._read(run)
        types = sorted({str(row[1]) for row in outcomes})
        columns = ["variant", "users", "requests", "exposures"]
        columns += [f"{t}_{what}" for t in types for what in ("events", "users")]
        records: dict[str | None, dict[str, Any]] = {}
        for variant, n_users, n_requests, n_exposures in exposed:
            record: dict[str, Any] = dict.fromkeys(columns, 0)
            record.update(
                variant=variant, users=n_users, requests=n_requests, exposures=n_exposures
            )
            records[variant] = record
        for variant, kind, n_events, n_users in outcomes:
            records[variant][f"{kind}_events"] = n_events
            records[variant][f"{kind}_users"] = n_users
        order = sorted(records, key=lambda v: (v is None, v or ""))
        frame = pd.DataFrame([records[v] for v in order], columns=columns)
        return frame.astype(dict.fromkeys(columns[1:], np.int64))

    def create_experiment(self, name: str, variants: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Start an experiment (``variants`` already validated by the caller); any other
        running experiment is stopped in the same transaction, so at most one runs.

        Raises :class:`TastebudError` when an experiment of that name exists.
        """
        key = _check_id(name, "experiment name")
        rows = [_json_object(_plain(dict(v)), "variant") for v in variants]
        now = time.time()
        ex = EXPERIMENTS

        def run(conn: Connection) -> dict[str, Any]:
            if conn.execute(sa.select(ex.c.name).where(ex.c.name == key)).first() is not None:
                raise TastebudError(f"an experiment named {key!r} exists; pick another name")
            conn.execute(
                sa.update(ex)
                .where(ex.c.status == "running")
                .values(status="stopped", stopped_at=now)
            )
            stmt = (
                sa.insert(ex)
                .values(name=key, variants=rows, status="running", created_at=now)
                .returning(*ex.c)
            )
            return dict(conn.execute(stmt).one()._mapping)

        return self._write(run)

    def list_experiments(self) -> list[dict[str, Any]]:
        """Every experiment, oldest first."""
        stmt = sa.select(EXPERIMENTS).order_by(EXPERIMENTS.c.created_at, EXPERIMENTS.c.name)
        return self._read(lambda conn: _rows(conn.execute(stmt)))

    def get_experiment(self, name: str) -> dict[str, Any] | None:
        """One experiment, or ``None``."""
        key = _check_id(name, "experiment name")
        stmt = sa.select(EXPERIMENTS).where(EXPERIMENTS.c.name == key)
        return self._read(lambda conn: next(iter(_rows(conn.execute(stmt))), None))

    def running_experiment(self) -> dict[str, Any] | None:
        """The running experiment, or ``None``."""
        stmt = sa.select(EXPERIMENTS).where(EXPERIMENTS.c.status == "running").limit(1)
        return self._read(lambda conn: next(iter(_rows(conn.execute(stmt))), None))

    def stop_experiment(self, name: str) -> dict[str, Any]:
        """Stop an experiment (its logs stay for the report); returns it."""
        key = _check_id(name, "experiment name")
        ex = EXPERIMENTS

        def run(conn: Connection) -> dict[str, Any]:
            conn.execute(
                sa.update(ex)
                .where(ex.c.name == key, ex.c.status == "running")
                .values(status="stopped", stopped_at=time.time())
            )
            row = conn.execute(sa.select(ex).where(ex.c.name == key)).first()
            if row is None:
                raise UnknownIdError(f"unknown experiment {key!r}")
            return dict(row._mapping)

        return self._write(run)

    def exploration_stats(
        self, source: str, positive_types: Sequence[str]
    ) -> dict[str, tuple[int, int]]:
        """Per item, (exposures logged with ``source``, those answered by feedback of one of
        ``positive_types`` on the same request)."""
        src = _check_id(source, "source")
        types = [_check_id(t, "feedback type") for t in positive_types]
        ex, fb = EXPOSURES, FEEDBACK
        answered = (
            sa.select(sa.literal(1))
            .where(
                fb.c.request_id == ex.c.request_id,
                fb.c.item_id == ex.c.item_id,
                fb.c.type.in_(types),
            )
            .exists()
        )
        stmt = (
            sa.select(ex.c.item_id, sa.func.count(), sa.func.sum(sa.case((answered, 1), else_=0)))
            .where(ex.c.source == src)
            .group_by(ex.c.item_id)
        )
        return self._read(
            lambda conn: {row[0]: (int(row[1]), int(row[2] or 0)) for row in conn.execute(stmt)}
        )

    # -- bulk import -------------------------------------------------------------------------------
    def import_dataset(
        self, dataset: Dataset, *, event_type: str = "rating", value: str = "auto"
    ) -> dict[str, int]:
        """Load a :class:`Dataset` (users, items with titles/attributes, interactions).

        Ids are stored as ``str(id)``; feature-table rows become attributes (numpy values
        made plain, missing values left out) and an item ``title`` column becomes the title.
        Users and items already stored are left as they are. Each interaction becomes an
        event of ``event_type`` whose value is the rating (``value="rating"``), the weight
        (``"weight"``), none (``"none"``) or, for ``"auto"``, the rating, else the weight,
        else none; its ``ts`` is the timestamp, else now. Its ``client_event_id`` is
        ``import:["<dataset name>","<user>","<item>"]`` (a dataset holds one interaction per
        pair), so importing the same data again adds nothing.

        Everything is written in one transaction. Returns counts of rows written: ``users``,
        ``items``, ``events``, and ``duplicates`` (events already stored, skipped).
        """
        if not isinstance(dataset, Dataset):
            raise InvalidInputError(f"import_dataset needs a Dataset, got {type(dataset).__name__}")
        kind = _check_id(event_type, "event_type")
        values = _dataset_values(dataset, value)
        now = time.time()
        for what, column, problem in (
            ("value", values, rules.value_problem),
            ("timestamp", dataset.timestamp, rules.ts_problem),
        ):
            _check_column(dataset.name, what, column, problem)

        user_ids = [str(u) for u in dataset.users.ids.tolist()]
        item_ids = [str(i) for i in dataset.items.ids.tolist()]
        for what, ids in (("user", user_ids), ("item", item_ids)):
            for key in ids:
                _check_id(key, f"{what} id")
        user_attrs, _ = _feature_records(dataset.user_features, len(user_ids), take_title=False)
        item_attrs, titles = _feature_records(dataset.item_features, len(item_ids), take_title=True)
        user_rows = [
            {"id": uid, "attributes": attrs, "created_at": now}
            for uid, attrs in zip(user_ids, user_attrs, strict=True)
        ]
        item_rows = [
            {
                "id": iid,
                "title": title,
                "attributes": attrs,
                "available": True,
                "created_at": now,
                "updated_at": now,
            }
            for iid, title, attrs in zip(item_ids, titles, item_attrs, strict=True)
        ]

        def encode(text: str) -> str:
            return json.dumps(text, ensure_ascii=False)

        name_json = encode(dataset.name)
        user_json = np.array([encode(u) for u in user_ids], dtype=object)
        item_json = np.array([encode(i) for i in item_ids], dtype=object)
        user_text = np.array(user_ids, dtype=object)
        item_text = np.array(item_ids, dtype=object)
        n = dataset.n_interactions
        timestamps = dataset.timestamp

        def event_rows(start: int, stop: int) -> list[dict[str, Any]]:
            ui = dataset.user_index[start:stop]
            ii = dataset.item_index[start:stop]
            ts = (
                [now] * (stop - start)
                if timestamps is None
                else timestamps[start:stop].astype(np.float64).tolist()
            )
            vals = [None] * (stop - start) if values is None else values[start:stop].tolist()
            return [
                {
                    "user_id": u,
                    "item_id": i,
                    "type": kind,
                    "value": v,
                    "ts": t,
                    "client_event_id": _import_event_id(name_json, uj, ij),
                    "received_at": now,
                }
                for u, i, uj, ij, v, t in zip(
                    user_text[ui].tolist(),
                    item_text[ii].tolist(),
                    user_json[ui].tolist(),
                    item_json[ii].tolist(),
                    vals,
                    ts,
                    strict=True,
                )
            ]

        def run(conn: Connection) -> dict[str, int]:
            counts = {"users": 0, "items": 0, "events": 0}
            tables: list[tuple[str, sa.Table, list[dict[str, Any]]]] = [
                ("users", USERS, user_rows),
                ("items", ITEMS, item_rows),
            ]
            for key, table, rows in tables:
                counts[key] = self._bulk_insert(conn, table, rows, skip_conflicts_on="id")
            for start in range(0, n, _BULK_CHUNK):
                counts["events"] += self._bulk_insert(
                    conn,
                    EVENTS,
                    event_rows(start, min(start + _BULK_CHUNK, n)),
                    skip_conflicts_on="client_event_id",
                )
            counts["duplicates"] = n - counts["events"]
            return counts

        return self._write(run)


# -- row checks ------------------------------------------------------------------------------------
def _json_dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{what} must be a mapping, got {type(value).__name__}")
    return value


def _no_extra_keys(row: Mapping[str, Any], allowed: Set[str], what: str) -> None:
    extra = sorted(str(k) for k in row if k not in allowed)
    if extra:
        raise InvalidInputError(
            f"{what}: unknown field(s) {', '.join(extra)}; allowed: {', '.join(sorted(allowed))}"
        )


_EVENT_FIELDS = {"user_id", "item_id", "type", "value", "ts", "client_event_id", "request_id"}


def _clean_event(event: Any, pos: int, now: float) -> dict[str, Any]:
    """One event as an ``events`` row, or an :class:`InvalidInputError` naming its position."""
    where = f"event {pos}"
    if not isinstance(event, Mapping):
        raise InvalidInputError(f"{where}: expected an object, got {type(event).__name__}")
    _no_extra_keys(event, _EVENT_FIELDS, where)
    ts = _check_ts(event.get("ts"), f"{where}: ts")
    return {
        "user_id": _check_id(event.get("user_id"), f"{where}: user_id"),
        "item_id": _check_id(event.get("item_id"), f"{where}: item_id"),
        "type": _check_id(event.get("type"), f"{where}: type"),
        "value": _check_value(event.get("value"), f"{where}: value"),
        "ts": now if ts is None else ts,
        "client_event_id": _check_optional_id(
            event.get("client_event_id"), f"{where}: client_event_id"
        ),
        "received_at": now,
        "request_id": _check_optional_id(event.get("request_id"), f"{where}: request_id"),
    }


#: The order of an exposure tuple (:meth:`Storage.log_exposure_rows`).
EXPOSURE_COLUMNS = (
    "request_id", "user_id", "item_id", "position", "source", "model_version", "experiment",
    "variant", "ts",
)  # fmt: skip
_EXPOSURE_FIELDS = frozenset(EXPOSURE_COLUMNS)
_INSERT_EXPOSURES_SQLITE = (
    f"INSERT INTO exposures ({', '.join(EXPOSURE_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(EXPOSURE_COLUMNS))})"
)


def exposure_row(row: Any, pos: int, now: float) -> tuple[Any, ...]:
    """One exposure object as a checked tuple in :data:`EXPOSURE_COLUMNS` order (``ts``
    defaults to ``now``), or an :class:`InvalidInputError` naming its position."""
    where = f"exposure {pos}"
    if not isinstance(row, Mapping):
        raise InvalidInputError(f"{where}: expected an object, got {type(row).__name__}")
    _no_extra_keys(row, _EXPOSURE_FIELDS, where)
    position = _check_int(row.get("position"), f"{where}: position")
    if position is None or position < 0:
        raise InvalidInputError(f"{where}: position must be >= 0")
    ts = _check_ts(row.get("ts"), f"{where}: ts")
    return (
        _check_id(row.get("request_id"), f"{where}: request_id"),
        _check_id(row.get("user_id"), f"{where}: user_id"),
        _check_id(row.get("item_id"), f"{where}: item_id"),
        position,
        _check_optional_id(row.get("source"), f"{where}: source"),
        _check_int(row.get("model_version"), f"{where}: model_version", optional=True),
        _check_optional_id(row.get("experiment"), f"{where}: experiment"),
        _check_optional_id(row.get("variant"), f"{where}: variant"),
        now if ts is None else ts,
    )


def _check_column(
    name: str, what: str, column: np.ndarray | None, problem: Callable[[float], str | None]
) -> None:
    """Refuse an import whose interactions hold a value the rules refuse (asked once per
    distinct value), naming the first."""
    if column is None or not len(column):
        return
    distinct = np.unique(np.asarray(column, dtype=np.float64))  # NaN sorts last
    for number in distinct.tolist():
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
    # float32 -> its shortest decimal text -> float64, so 0.1 is stored as 0.1.
    return np.asarray(chosen, dtype=np.float32).astype(str).astype(np.float64)
