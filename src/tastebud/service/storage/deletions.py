"""The deletions log and what deleting a user leaves behind.

A deletion (of a user, or of an item's events) adds a row to the ``deletions`` table in the
deleting transaction: serving processes read it every 0.1 s to drop what they hold. A user is
named there by a keyed hash (:meth:`DeletionLog.user_hash`), never by id. Deleting a user with
events also marks the model versions that may have learned from them (never activated again)
and grows the forget mark, which a retrain compares before and after reading the events.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tastebud.errors import TastebudError
from tastebud.service.storage.checks import check_int
from tastebud.service.storage.db import Database, chunks
from tastebud.service.storage.rows import Deletion
from tastebud.service.storage.schema import DELETIONS, META, MODEL_VERSIONS, keyed_hash, read_meta

#: Seconds a deletion stays in the deletions log (serving processes read it every 0.1 s).
DELETION_LOG_S = 600.0
#: pg_advisory_xact_lock key: a user deletion takes it exclusively, exposure writes shared, so
#: an exposure batch commits wholly before a deletion or reads the deletion it follows
PG_FORGET_KEY = 7_204_113_503
#: Key of ``events_frame().attrs``: :meth:`DeletionLog.forget_mark` read before the events.
FORGET_MARK = "tastebud_forget_mark"


class DeletionLog:
    """The deletions log, the secret that names deleted users in it, and the forget mark."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._deletion_key: bytes | None = None  # user_hash's secret, read once

    def user_hash(self, user_id: str) -> str:
        """The keyed hash that stands for a deleted user in the deletions log: HMAC-SHA256
        of the id under this database's secret (``meta.deletion_key``), as hex. Without the
        secret it cannot be told from a random value; serving processes compare it with the
        hashes of the users they hold."""
        return keyed_hash(self.key(), str(user_id))

    def key(self, conn: Connection | None = None) -> bytes:
        """The secret of :meth:`user_hash` (read once, on ``conn`` when given)."""
        if self._deletion_key is None:
            stored = (
                read_meta(conn, "deletion_key")
                if conn is not None
                else self._db.read(lambda c: read_meta(c, "deletion_key"))
            )
            if stored is None:
                raise TastebudError(f"the database {self._db.url} has no deletion key; migrate it")
            self._deletion_key = bytes.fromhex(stored)
        return self._deletion_key

    def clear_key(self) -> None:
        """Read the secret again at its next use (the tables were dropped or replaced)."""
        self._deletion_key = None

    def log(self, conn: Connection, now: float, **row: str) -> None:
        """Add a row to the deletions log and prune the rows older than DELETION_LOG_S."""
        conn.execute(sa.delete(DELETIONS).where(DELETIONS.c.ts < now - DELETION_LOG_S))
        conn.execute(sa.insert(DELETIONS).values(ts=now, **row))

    def forget_in_versions(self, conn: Connection, first_seq: int, now: float) -> None:
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
        for chunk in chunks(marked):
            conn.execute(sa.update(mv).where(mv.c.id.in_(chunk)).values(forgotten_at=now))
        mark = read_meta(conn, "forget_mark")
        value = str(int(mark or 0) + 1)
        if mark is None:
            conn.execute(sa.insert(META).values(key="forget_mark", value=value))
        else:
            conn.execute(sa.update(META).where(META.c.key == "forget_mark").values(value=value))

    def forget_mark(self) -> int:
        """How many deleted users had events (grows with each): a model trained on events
        read when it was lower may hold a deleted user. ``Storage.events_frame`` notes it in
        ``frame.attrs[FORGET_MARK]``, read before the events."""
        return self._db.read(read_forget_mark)

    def after(self, seq: int) -> list[Deletion]:
        """The deletions log after ``seq``: ``(seq, user_hash, item_id)`` ordered by ``seq``
        (a user was deleted -- :meth:`user_hash` -- or an item's events were)."""
        after = check_int(seq, "seq")
        stmt = (
            sa.select(DELETIONS.c.seq, DELETIONS.c.user_hash, DELETIONS.c.item_id)
            .where(DELETIONS.c.seq > after)
            .order_by(DELETIONS.c.seq)
        )
        return self._db.read(lambda conn: [tuple(row) for row in conn.execute(stmt)])

    def last(self) -> int:
        """The largest ``seq`` of the deletions log, 0 when it is empty."""
        stmt = sa.select(sa.func.max(DELETIONS.c.seq))
        return self._db.read(lambda conn: int(conn.execute(stmt).scalar() or 0))

    def users_deleted(self, conn: Connection) -> dict[str, float]:
        """The hashes of the users in the log, each with the time of its latest deletion."""
        ds = DELETIONS
        stmt = (
            sa.select(ds.c.user_hash, sa.func.max(ds.c.ts))
            .where(ds.c.user_hash.is_not(None))
            .group_by(ds.c.user_hash)
        )
        return {h: float(ts) for h, ts in conn.execute(stmt)}


def read_forget_mark(conn: Connection) -> int:
    """:meth:`DeletionLog.forget_mark` read on ``conn`` (in the transaction that reads the
    events it stands for)."""
    return int(read_meta(conn, "forget_mark") or 0)
