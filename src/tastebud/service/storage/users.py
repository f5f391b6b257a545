"""Users: their attributes, pages of them (by id prefix too), and their complete deletion."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tastebud import rules
from tastebud.errors import InvalidInputError
from tastebud.service.storage.checks import check_id, check_limit, json_object
from tastebud.service.storage.db import Database, get_one
from tastebud.service.storage.deletions import PG_FORGET_KEY, DeletionLog
from tastebud.service.storage.rows import UserRow
from tastebud.service.storage.schema import EVENTS, EXPOSURES, FEEDBACK, USERS

_ATTRIBUTE_ROWS = f"SELECT id, attributes FROM {USERS.name}"
#: Rows per fetch of :meth:`Users.attributes`.
ATTRIBUTE_CHUNK = 50_000


class Users:
    """The ``users`` table."""

    def __init__(self, db: Database, deletions: DeletionLog) -> None:
        self._db = db
        self._deletions = deletions

    def upsert(self, user_id: str, attributes: Mapping[str, Any] | None = None) -> UserRow:
        """Create a user or replace its attributes; ``None`` leaves an existing user's as they are.

        Returns the stored user (``created_at`` is kept on update).
        """
        uid = check_id(user_id, "user_id")
        attrs = None if attributes is None else json_object(attributes, "attributes")

        def run(conn: Connection) -> UserRow:
            stmt = self._db.insert(USERS).values(
                id=uid, attributes=attrs or {}, created_at=time.time()
            )
            if attrs is None:
                stmt = stmt.on_conflict_do_nothing(index_elements=[USERS.c.id])
            else:
                stmt = stmt.on_conflict_do_update(
                    index_elements=[USERS.c.id], set_={"attributes": stmt.excluded.attributes}
                )
            conn.execute(stmt)
            user = get_one(conn, USERS, uid)
            assert user is not None
            return cast(UserRow, user)

        return self._db.write(run)

    def get(self, user_id: str) -> UserRow | None:
        """The user, or ``None``."""
        uid = check_id(user_id, "user_id")
        return cast("UserRow | None", self._db.read(lambda conn: get_one(conn, USERS, uid)))

    def delete(self, user_id: str, *, log: bool = False) -> bool:
        """Delete a user with all their events, exposures and feedback (one transaction), so
        that no table holds their id afterwards.

        The deletions log gets the user's :meth:`DeletionLog.user_hash` (serving processes
        drop what they hold of the user; exposure writes still buffered leave the user's rows
        out); when the user had events, the model versions that may have learned from them
        get ``forgotten_at`` (never activated again) and the forget mark grows. Returns
        whether anything of the user was stored (a user row, events, exposures -- lists
        are logged for ids never stored as users -- or feedback). ``log=True`` logs the
        deletion even when nothing was (the caller dropped rows of theirs still buffered).
        """
        uid = check_id(user_id, "user_id")
        hashed = self._deletions.user_hash(uid)

        def run(conn: Connection) -> bool:
            if self._db.backend == "postgresql":  # exposure batches in flight commit first
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(PG_FORGET_KEY)))
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
            self._deletions.log(conn, now, user_hash=hashed)
            if events and first is not None:
                self._deletions.forget_in_versions(conn, int(first), now)
            return found

        deleted = self._db.write(run)
        if (deleted or log) and self._db.backend == "sqlite":
            self._db.truncate_wal()
        return deleted

    def attributes(self) -> dict[str, dict[str, Any]]:
        """Every user's stored attributes by id, users without any left out: what the
        service's demographics learn from. One streamed read of two columns
        (:meth:`Database.stream`), not pages of whole rows by offset, each of which read
        every earlier row again: minutes at a million users."""

        # the column's own reading: whatever a row holds reads as an object (text that is
        # not JSON, JSON that is not an object: {}), as through any other query
        readable = USERS.c.attributes.type.result_processor(self._db.engine.dialect, None)

        def read(conn: Connection) -> dict[str, dict[str, Any]]:
            out: dict[str, dict[str, Any]] = {}
            for rows in self._db.stream(conn, _ATTRIBUTE_ROWS, (), ATTRIBUTE_CHUNK):
                for user, raw in rows:
                    found = readable(raw) if readable is not None else raw
                    if found:
                        out[str(user)] = found
            return out

        return self._db.read(read)

    def page(self, limit: int = 100, offset: int = 0, prefix: str | None = None) -> list[UserRow]:
        """Users ordered by id, one page; ``prefix`` keeps those whose id starts with it
        (case-sensitive, ordered by code point).

        A prefix is a range of the id index -- ``prefix <= id < the next string after every
        id starting with it`` -- so a type-ahead search costs an index seek and ``limit``
        rows however many users there are: SQLite compares text by code point already, and
        PostgreSQL compares ``id COLLATE "C"`` under its own index (migration 5), since its
        database collation may not keep the ids of a prefix together."""
        check_limit(limit, offset)
        if not prefix:
            stmt = sa.select(USERS).order_by(USERS.c.id).limit(limit).offset(offset)
            return cast("list[UserRow]", self._db.rows(stmt))
        if not isinstance(prefix, str):
            raise InvalidInputError(f"prefix must be a string, got {type(prefix).__name__}")
        if rules.text_problem(prefix) is not None or len(prefix) > rules.MAX_ID_LENGTH:
            return []  # no id starts with it (nor could be stored)
        start = prefix
        key: sa.ColumnElement[str] = USERS.c.id
        if self._db.backend == "postgresql":
            key = sa.collate(USERS.c.id, "C")
        stmt = sa.select(USERS).where(key >= start)
        stop = prefix_end(start)
        if stop is not None:
            stmt = stmt.where(key < stop)
        stmt = stmt.order_by(key).limit(limit).offset(offset)
        return cast("list[UserRow]", self._db.rows(stmt))

    def count(self) -> int:
        """Number of users."""
        return self._db.count(USERS)


def prefix_end(prefix: str) -> str | None:
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
