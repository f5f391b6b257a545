"""Items: the catalogue, and the reads that serving processes follow it by.

``updated_at`` is set by every write, so a serving process reads only the rows changed since
its last look (:meth:`Items.changed_since`); :meth:`Items.newest` feeds the new-items generator.
Both are on the request path's refresh: plain rows, no per-row work beyond the column types.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tastebud.errors import InvalidInputError, UnknownIdError
from tastebud.service.storage.checks import (
    check_bool,
    check_id,
    check_limit,
    check_number,
    check_text,
    json_object,
)
from tastebud.service.storage.db import Database, get_one
from tastebud.service.storage.deletions import DeletionLog
from tastebud.service.storage.rows import ItemRow
from tastebud.service.storage.schema import EVENTS, ITEMS


class Items:
    """The ``items`` table."""

    def __init__(self, db: Database, deletions: DeletionLog) -> None:
        self._db = db
        self._deletions = deletions

    def upsert(
        self,
        item_id: str,
        title: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        available: bool | None = None,
    ) -> ItemRow:
        """Create an item or update the fields given (``None``: keep; on insert the default).

        Defaults of a new item: no title, ``{}`` attributes, available. Use :meth:`update` to
        clear a title. Returns the stored item.
        """
        iid = check_id(item_id, "item_id")
        fields: dict[str, Any] = {}
        if title is not None:
            fields["title"] = check_text(title, "title")
        if attributes is not None:
            fields["attributes"] = json_object(attributes, "attributes")
        if available is not None:
            fields["available"] = check_bool(available, "available")

        def run(conn: Connection) -> ItemRow:
            row = {"title": None, "attributes": {}, "available": True, **fields}
            now = time.time()
            stmt = self._db.insert(ITEMS).values(id=iid, created_at=now, updated_at=now, **row)
            if fields:
                stmt = stmt.on_conflict_do_update(
                    index_elements=[ITEMS.c.id],
                    set_={name: stmt.excluded[name] for name in [*fields, "updated_at"]},
                )
            else:
                stmt = stmt.on_conflict_do_nothing(index_elements=[ITEMS.c.id])
            conn.execute(stmt)
            item = get_one(conn, ITEMS, iid)
            assert item is not None
            return cast(ItemRow, item)

        return self._db.write(run)

    def update(self, item_id: str, **fields: Any) -> ItemRow:
        """Change some of ``title`` (``None`` clears it), ``attributes``, ``available``.

        Raises :class:`UnknownIdError` for an unknown item. Returns the stored item.
        """
        iid = check_id(item_id, "item_id")
        unknown = sorted(set(fields) - {"title", "attributes", "available"})
        if unknown:
            raise InvalidInputError(
                f"cannot update item field(s) {', '.join(unknown)}; "
                "updatable: title, attributes, available"
            )
        values: dict[str, Any] = {}
        if "title" in fields:
            values["title"] = check_text(fields["title"], "title")
        if "attributes" in fields:
            values["attributes"] = json_object(fields["attributes"], "attributes")
        if "available" in fields:
            values["available"] = check_bool(fields["available"], "available")

        def run(conn: Connection) -> ItemRow:
            if values:
                conn.execute(
                    sa.update(ITEMS)
                    .where(ITEMS.c.id == iid)
                    .values(**values, updated_at=time.time())
                )
            item = get_one(conn, ITEMS, iid)
            if item is None:
                raise UnknownIdError(f"unknown item id {iid!r}")
            return cast(ItemRow, item)

        return self._db.write(run)

    def get(self, item_id: str) -> ItemRow | None:
        """The item, or ``None``."""
        iid = check_id(item_id, "item_id")
        return cast("ItemRow | None", self._db.read(lambda conn: get_one(conn, ITEMS, iid)))

    def delete(self, item_id: str) -> bool:
        """Delete an item and its events; returns whether the item or any event existed."""
        iid = check_id(item_id, "item_id")

        def run(conn: Connection) -> bool:
            events = conn.execute(sa.delete(EVENTS).where(EVENTS.c.item_id == iid)).rowcount
            item = conn.execute(sa.delete(ITEMS).where(ITEMS.c.id == iid)).rowcount
            if events:
                self._deletions.log(conn, time.time(), item_id=iid)
            return bool(item or events)

        return self._db.write(run)

    def page(self, limit: int = 100, offset: int = 0, query: str | None = None) -> list[ItemRow]:
        """Items ordered by id, one page; ``query`` keeps those whose title or id contains it
        (case-insensitive; ``%`` and ``_`` match themselves)."""
        check_limit(limit, offset)
        stmt = sa.select(ITEMS).order_by(ITEMS.c.id).limit(limit).offset(offset)
        if query:
            if not isinstance(query, str):
                raise InvalidInputError(f"query must be a string, got {type(query).__name__}")
            stmt = stmt.where(
                sa.or_(self._contains(ITEMS.c.title, query), self._contains(ITEMS.c.id, query))
            )
        return cast("list[ItemRow]", self._db.rows(stmt))

    def _contains(self, column: sa.Column[Any], text: str) -> sa.ColumnElement[bool]:
        """Case-insensitive substring test with a bound pattern."""
        if self._db.backend == "postgresql":
            return column.ilike(_like_pattern(text), escape="!")
        folded = sa.func.tastebud_casefold(column, type_=sa.Text)
        return folded.like(_like_pattern(text.casefold()), escape="!")

    def count(self) -> int:
        """Number of items."""
        return self._db.count(ITEMS)

    def all(self) -> list[ItemRow]:
        """Every item, ordered by id."""
        stmt = sa.select(ITEMS).order_by(ITEMS.c.id)
        return cast("list[ItemRow]", self._db.rows(stmt))

    def changed_since(self, ts: float) -> list[ItemRow]:
        """Items written (created or updated) at or after ``ts`` (unix seconds)."""
        since = check_number(ts, "ts")
        stmt = sa.select(ITEMS).where(ITEMS.c.updated_at >= since)
        return cast("list[ItemRow]", self._db.rows(stmt))

    def newest(self, limit: int, since: float = 0.0) -> list[ItemRow]:
        """Up to ``limit`` available items created at or after ``since``, newest first."""
        check_limit(limit)
        after = check_number(since, "since")
        stmt = (
            sa.select(ITEMS)
            .where(ITEMS.c.created_at >= after, ITEMS.c.available.is_(True))
            .order_by(ITEMS.c.created_at.desc(), ITEMS.c.id)
            .limit(limit)
        )
        return cast("list[ItemRow]", self._db.rows(stmt))


def _like_pattern(text: str) -> str:
    """``%text%`` with LIKE wildcards in ``text`` escaped by ``!``."""
    escaped = text.replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return f"%{escaped}%"
