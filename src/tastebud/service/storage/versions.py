"""Model versions: each trained model's record (its folder, parameters and offline metrics),
which one is active, and which may hold a deleted user (``forgotten_at``: never activated
again); and how many of a model's ids the database stores (the check of a model folder
registered from outside, :mod:`tastebud.service.registration`)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tastebud._io import _plain
from tastebud.errors import InvalidInputError, UnknownIdError
from tastebud.service.storage.checks import (
    check_id,
    check_int,
    check_mapping,
    check_text,
    json_object,
)
from tastebud.service.storage.db import Database, chunks
from tastebud.service.storage.rows import ModelVersionRow
from tastebud.service.storage.schema import ITEMS, MODEL_VERSIONS, USERS


class ModelVersions:
    """The ``model_versions`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add(
        self,
        model: str,
        params: Mapping[str, Any],
        path: str,
        metrics: Mapping[str, Any],
        n_events: int,
    ) -> ModelVersionRow:
        """Record a trained model (inactive); numpy values become plain JSON, NaN null."""
        row = {
            "model": check_id(model, "model"),
            "params": json_object(_plain(check_mapping(params, "params")), "params"),
            "path": check_text(path, "path"),
            "metrics": json_object(_plain(check_mapping(metrics, "metrics")), "metrics"),
            "n_events": check_int(n_events, "n_events"),
            "created_at": time.time(),
            "active": False,
        }
        if row["path"] is None:
            raise InvalidInputError("path must be a string")

        def run(conn: Connection) -> dict[str, Any]:
            stmt = sa.insert(MODEL_VERSIONS).values(**row).returning(*MODEL_VERSIONS.c)
            return dict(conn.execute(stmt).one()._mapping)

        return cast(ModelVersionRow, self._db.write(run))

    def all(self) -> list[ModelVersionRow]:
        """All model versions, oldest first."""
        stmt = sa.select(MODEL_VERSIONS).order_by(MODEL_VERSIONS.c.id)
        return cast("list[ModelVersionRow]", self._db.rows(stmt))

    def get(self, version_id: int) -> ModelVersionRow | None:
        """One model version, or ``None``."""
        vid = check_int(version_id, "version id")
        stmt = sa.select(MODEL_VERSIONS).where(MODEL_VERSIONS.c.id == vid)
        return cast("ModelVersionRow | None", self._db.first(stmt))

    def activate(self, version_id: int) -> ModelVersionRow:
        """Make one version the only active one (one transaction); returns it.

        Raises :class:`UnknownIdError` for an unknown id.
        """
        vid = check_int(version_id, "version id")
        mv = MODEL_VERSIONS

        def run(conn: Connection) -> dict[str, Any]:
            if conn.execute(sa.select(mv.c.id).where(mv.c.id == vid)).first() is None:
                raise UnknownIdError(f"unknown model version {vid}")
            # One statement over every row: a concurrent activation waits on the row locks and
            # then re-evaluates, so exactly one version is active whoever commits last.
            conn.execute(sa.update(mv).values(active=sa.case((mv.c.id == vid, True), else_=False)))
            return dict(conn.execute(sa.select(mv).where(mv.c.id == vid)).one()._mapping)

        return cast(ModelVersionRow, self._db.write(run))

    def active(self) -> ModelVersionRow | None:
        """The active model version, or ``None``."""
        stmt = (
            sa.select(MODEL_VERSIONS)
            .where(MODEL_VERSIONS.c.active.is_(True))
            .order_by(MODEL_VERSIONS.c.id.desc())
            .limit(1)
        )
        return cast("ModelVersionRow | None", self._db.first(stmt))

    def deactivate_all(self) -> None:
        """Leave no version active (the service serves popularity until the next one)."""
        self._db.write(lambda conn: conn.execute(sa.update(MODEL_VERSIONS).values(active=False)))

    def mark_forgotten(self, version_ids: Iterable[int]) -> None:
        """Mark versions as possibly holding a deleted user (never activated again)."""
        ids = [check_int(v, "version id") for v in version_ids]
        mv = MODEL_VERSIONS

        def run(conn: Connection) -> None:
            for chunk in chunks(ids):
                conn.execute(
                    sa.update(mv)
                    .where(mv.c.id.in_(chunk), mv.c.forgotten_at.is_(None))
                    .values(forgotten_at=time.time())
                )

        self._db.write(run)

    def forgotten(self) -> list[ModelVersionRow]:
        """The versions marked ``forgotten_at``, oldest first."""
        mv = MODEL_VERSIONS
        stmt = sa.select(mv).where(mv.c.forgotten_at.is_not(None)).order_by(mv.c.id)
        return cast("list[ModelVersionRow]", self._db.rows(stmt))

    def count_stored(self, kind: Literal["user", "item"], ids: Sequence[str]) -> int:
        """How many of ``ids`` (distinct text ids) are stored users or items: whether a model
        trained outside the service speaks the database's ids. One ``IN`` query per
        :data:`~tastebud.service.storage.db.CHUNK` ids, all in one read transaction."""
        table = USERS if kind == "user" else ITEMS
        stmt = sa.select(sa.func.count()).where(table.c.id.in_(sa.bindparam("ids", expanding=True)))

        def run(conn: Connection) -> int:
            return sum(
                int(conn.execute(stmt, {"ids": list(chunk)}).scalar_one()) for chunk in chunks(ids)
            )

        return self._db.read(run)
