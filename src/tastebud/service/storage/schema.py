"""The tables and their versioned migrations.

:func:`migrate` runs at every start: it creates the schema, or brings an older one up to
date, and does nothing when it is current. Event sequence numbers (``seq``) only grow and are
never reused after a delete, but may have gaps.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from tastebud.errors import TastebudError
from tastebud.service.storage.db import Database, JSONObject, JSONObjects, ReadNumber, ReadText

_PG_LOCK_KEY = 7_204_113_502  # pg_advisory_xact_lock key serializing migrate() across processes

METADATA = sa.MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets BIGSERIAL.
_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TEXT = ReadText()
_TIME = ReadNumber()
_EMPTY_JSON = sa.text("'{}'")
_JSON_OBJECT = JSONObject()

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
    sa.Column("value", ReadNumber(unreadable=None), nullable=True),
    sa.Column("ts", ReadNumber(unreadable=None), nullable=False),
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
    sa.Column("variants", JSONObjects(), nullable=False),
    sa.Column("status", _TEXT, nullable=False),  # "running" or "stopped"
    sa.Column("created_at", _TIME, nullable=False),
    sa.Column("stopped_at", _TIME, nullable=True),
)

#: Deleted users and items, one row per deletion, written in the deleting transaction: how
#: the other serving processes learn that a user's history changed (new events they see by
#: ``seq``; deleted ones leave no row behind) or that a user is gone. A user is named by
#: :func:`keyed_hash` under the database's secret (``Storage.user_hash``), never by id; rows
#: older than ``deletions.DELETION_LOG_S`` are pruned by the next deletion.
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
#: ``Storage.user_hash``, made by migration 6) and ``forget_mark`` (how many deleted users
#: had events: ``Storage.forget_mark``).
META = sa.Table(
    "meta",
    METADATA,
    sa.Column("key", _TEXT, primary_key=True),
    sa.Column("value", _TEXT, nullable=False),
)

_DATA_TABLES = (USERS, ITEMS, EVENTS, MODEL_VERSIONS, EXPOSURES, FEEDBACK)

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


def keyed_hash(key: bytes, user_id: str) -> str:
    """HMAC-SHA256 of a user id under ``key``, as hex."""
    return hmac.new(key, user_id.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def read_meta(conn: Connection, key: str) -> str | None:
    """The ``meta`` value of ``key``, or ``None``."""
    return conn.execute(sa.select(META.c.value).where(META.c.key == key)).scalar()


# -- migrations ------------------------------------------------------------------------------------
def _migration_1(conn: Connection) -> None:
    """Version 1: the six data tables and their indexes."""
    # The tables above are version 1. When a later migration changes a table, keep a frozen
    # copy of its version-1 definition for this function and edit the module-level one.
    METADATA.create_all(conn, tables=list(_DATA_TABLES), checkfirst=True)


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
    which prefix searches of users read (``Storage.list_users``); SQLite's primary key
    index is in that order already."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text('CREATE INDEX IF NOT EXISTS ix_users_id_c ON users (id COLLATE "C")'))


def _migration_6(conn: Connection) -> None:
    """Version 6: complete deletion of users. The ``meta`` table with the secret of
    ``Storage.user_hash``; the deletions log names users by that keyed hash (an older
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
            .values(user_hash=keyed_hash(key, user))
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


def migrate(db: Database) -> int:
    """Create the schema or apply the missing migrations; returns the schema version.

    Idempotent and safe to call at every start, also from several processes at once.
    Raises :class:`TastebudError` if the database was written by a newer tastebud.
    """

    def run(conn: Connection) -> int:
        if db.backend == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
        SCHEMA_VERSION_TABLE.create(conn, checkfirst=True)
        current = conn.execute(sa.select(SCHEMA_VERSION_TABLE.c.version)).scalar()
        version = int(current or 0)
        if version > SCHEMA_VERSION:
            raise TastebudError(
                f"the database {db.url} has schema version {version}, newer than "
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

    return db.write(run)


def schema_version(db: Database) -> int:
    """The database's schema version; 0 when :func:`migrate` has never run on it."""

    def run(conn: Connection) -> int:
        if not sa.inspect(conn).has_table(SCHEMA_VERSION_TABLE.name):
            return 0
        current = conn.execute(sa.select(SCHEMA_VERSION_TABLE.c.version)).scalar()
        return int(current or 0)

    return db.read(run)


def drop_all(db: Database) -> None:
    """Destructive, for tests: drop every tastebud table with all its data."""

    def run(conn: Connection) -> None:
        METADATA.drop_all(conn, checkfirst=True)

    db.write(run)
