"""What users were shown (exposures) and what they did about it (feedback), and the counts an
experiment's report and the explorer read from them.

Exposures are telemetry: the service writes them in batches off the request path, as checked
tuples (:func:`exposure_row`) in one ``executemany`` on SQLite, committed without waiting for
the disk. Feedback is an outcome of one list (request, user, item, type), stored once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tastebud.errors import InvalidInputError
from tastebud.service.storage.checks import (
    check_id,
    check_int,
    check_optional_id,
    check_ts,
    no_extra_keys,
)
from tastebud.service.storage.db import Database
from tastebud.service.storage.deletions import PG_FORGET_KEY, DeletionLog
from tastebud.service.storage.rows import FeedbackRow
from tastebud.service.storage.schema import EXPOSURES, FEEDBACK, keyed_hash

#: Exposures stamped up to this long after their user's deletion are taken for a list computed
#: before it, and not logged (:meth:`Exposures.log_rows`).
_DELETION_SLACK_S = 2.0

#: The order of an exposure tuple (:meth:`Exposures.log_rows`).
EXPOSURE_COLUMNS = (
    "request_id", "user_id", "item_id", "position", "source", "model_version", "experiment",
    "variant", "ts",
)  # fmt: skip
_EXPOSURE_FIELDS = frozenset(EXPOSURE_COLUMNS)
_INSERT_EXPOSURES_SQLITE = (
    f"INSERT INTO exposures ({', '.join(EXPOSURE_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(EXPOSURE_COLUMNS))})"
)


class Exposures:
    """The ``exposures`` and ``feedback`` tables."""

    def __init__(self, db: Database, deletions: DeletionLog) -> None:
        self._db = db
        self._deletions = deletions

    def log(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Store the items shown to users (bulk); returns how many rows were written.

        Each row has ``request_id``, ``user_id``, ``item_id``, ``position`` (0-based rank) and
        optionally ``source``, ``model_version``, ``experiment``, ``variant``, ``ts``.
        """
        now = time.time()
        return self.log_rows([exposure_row(row, pos, now) for pos, row in enumerate(rows)])

    def log_rows(self, rows: Sequence[tuple[Any, ...]]) -> int:
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
            if self._db.backend == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock_shared(PG_FORGET_KEY)))
            kept = self._not_deleted(conn, rows)
            if not kept:
                return 0
            if self._db.backend == "sqlite":
                conn.exec_driver_sql(_INSERT_EXPOSURES_SQLITE, kept)
                return len(kept)
            as_dicts = [dict(zip(EXPOSURE_COLUMNS, row, strict=True)) for row in kept]
            return self._db.bulk_insert(conn, EXPOSURES, as_dicts)

        return self._db.write(run, durable=False)

    def _not_deleted(self, conn: Connection, rows: Sequence[tuple[Any, ...]]) -> list[Any]:
        """``rows`` (exposure tuples) less those of users in the deletions log shown before
        their deletion, or up to :data:`_DELETION_SLACK_S` after it (a list stamped just
        after the deletion was computed before it; another server's clock may differ). A
        list shown later asked for the id again: it is logged."""
        deleted = self._deletions.users_deleted(conn)
        if not deleted:
            return list(rows)
        key = self._deletions.key(conn)
        until = {}
        for user in {row[1] for row in rows}:
            at = deleted.get(keyed_hash(key, str(user)))
            if at is not None:
                until[user] = at + _DELETION_SLACK_S
        ts = EXPOSURE_COLUMNS.index("ts")
        return [row for row in rows if row[1] not in until or row[ts] > until[row[1]]]

    def log_feedback(self, row: Mapping[str, Any]) -> FeedbackRow:
        """Store one outcome (``user_id``, ``item_id``, ``type`` like click or like; optionally
        ``request_id`` of the exposures it answers, ``ts``); returns the stored row. The same
        outcome of a list (request, user, item, type) is stored once: a repeat returns it."""
        if not isinstance(row, Mapping):
            raise InvalidInputError("feedback must be an object")
        no_extra_keys(row, {"request_id", "user_id", "item_id", "type", "ts"}, "feedback")
        ts = check_ts(row.get("ts"), "feedback ts")
        values = {
            "request_id": check_optional_id(row.get("request_id"), "feedback request_id"),
            "user_id": check_id(row.get("user_id"), "feedback user_id"),
            "item_id": check_id(row.get("item_id"), "feedback item_id"),
            "type": check_id(row.get("type"), "feedback type"),
            "ts": time.time() if ts is None else ts,
        }
        fb = FEEDBACK

        def run(conn: Connection) -> dict[str, Any]:
            if values["request_id"] is None:
                stmt = sa.insert(fb).values(**values).returning(*fb.c)
                return dict(conn.execute(stmt).one()._mapping)
            insert_feedback(self._db, conn, [values])
            same = sa.and_(
                *(fb.c[k] == values[k] for k in ("request_id", "user_id", "item_id", "type"))
            )
            return dict(conn.execute(sa.select(fb).where(same)).one()._mapping)

        return cast(FeedbackRow, self._db.write(run))

    def counts(self, experiment: str) -> pd.DataFrame:
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
        name = check_id(experiment, "experiment")
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

        exposed, outcomes = self._db.read(run)
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

    def exploration_stats(
        self, source: str, positive_types: Sequence[str]
    ) -> dict[str, tuple[int, int]]:
        """Per item, (exposures logged with ``source``, those answered by feedback of one of
        ``positive_types`` on the same request)."""
        src = check_id(source, "source")
        types = [check_id(t, "feedback type") for t in positive_types]
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
        return self._db.read(
            lambda conn: {row[0]: (int(row[1]), int(row[2] or 0)) for row in conn.execute(stmt)}
        )


def insert_feedback(db: Database, conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert feedback rows with a request_id, skipping outcomes already stored (an event
    posted with its list's ``request_id`` stores its feedback this way, in its own
    transaction)."""
    stmt = db.insert(FEEDBACK).on_conflict_do_nothing(
        index_elements=[
            FEEDBACK.c.request_id,
            FEEDBACK.c.user_id,
            FEEDBACK.c.item_id,
            FEEDBACK.c.type,
        ]
    )
    conn.execute(stmt, rows)


def exposure_row(row: Any, pos: int, now: float) -> tuple[Any, ...]:
    """One exposure object as a checked tuple in :data:`EXPOSURE_COLUMNS` order (``ts``
    defaults to ``now``), or an :class:`InvalidInputError` naming its position."""
    where = f"exposure {pos}"
    if not isinstance(row, Mapping):
        raise InvalidInputError(f"{where}: expected an object, got {type(row).__name__}")
    no_extra_keys(row, _EXPOSURE_FIELDS, where)
    position = check_int(row.get("position"), f"{where}: position")
    if position is None or position < 0:
        raise InvalidInputError(f"{where}: position must be >= 0")
    ts = check_ts(row.get("ts"), f"{where}: ts")
    return (
        check_id(row.get("request_id"), f"{where}: request_id"),
        check_id(row.get("user_id"), f"{where}: user_id"),
        check_id(row.get("item_id"), f"{where}: item_id"),
        position,
        check_optional_id(row.get("source"), f"{where}: source"),
        check_int(row.get("model_version"), f"{where}: model_version", optional=True),
        check_optional_id(row.get("experiment"), f"{where}: experiment"),
        check_optional_id(row.get("variant"), f"{where}: variant"),
        now if ts is None else ts,
    )
