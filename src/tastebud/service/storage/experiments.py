"""Experiments: A/B tests between model versions, at most one running at a time (stored, so
every serving process follows the running one)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tastebud._io import _plain
from tastebud.errors import TastebudError, UnknownIdError
from tastebud.service.storage.checks import check_id, json_object
from tastebud.service.storage.db import Database
from tastebud.service.storage.rows import ExperimentRow
from tastebud.service.storage.schema import EXPERIMENTS


class Experiments:
    """The ``experiments`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def create(self, name: str, variants: Sequence[Mapping[str, Any]]) -> ExperimentRow:
        """Start an experiment (``variants`` already validated by the caller); any other
        running experiment is stopped in the same transaction, so at most one runs.

        Raises :class:`TastebudError` when an experiment of that name exists.
        """
        key = check_id(name, "experiment name")
        variant_rows = [json_object(_plain(dict(v)), "variant") for v in variants]
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
                .values(name=key, variants=variant_rows, status="running", created_at=now)
                .returning(*ex.c)
            )
            return dict(conn.execute(stmt).one()._mapping)

        return cast(ExperimentRow, self._db.write(run))

    def all(self) -> list[ExperimentRow]:
        """Every experiment, oldest first."""
        stmt = sa.select(EXPERIMENTS).order_by(EXPERIMENTS.c.created_at, EXPERIMENTS.c.name)
        return cast("list[ExperimentRow]", self._db.rows(stmt))

    def get(self, name: str) -> ExperimentRow | None:
        """One experiment, or ``None``."""
        key = check_id(name, "experiment name")
        stmt = sa.select(EXPERIMENTS).where(EXPERIMENTS.c.name == key)
        return cast("ExperimentRow | None", self._db.first(stmt))

    def running(self) -> ExperimentRow | None:
        """The running experiment, or ``None``."""
        stmt = sa.select(EXPERIMENTS).where(EXPERIMENTS.c.status == "running").limit(1)
        return cast("ExperimentRow | None", self._db.first(stmt))

    def stop(self, name: str) -> ExperimentRow:
        """Stop an experiment (its logs stay for the report); returns it."""
        key = check_id(name, "experiment name")
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

        return cast(ExperimentRow, self._db.write(run))
