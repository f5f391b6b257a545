"""Persistent state of the service: users, items, events, model versions and experiment logs.

One :class:`Storage` works over SQLite (a file; the default) and PostgreSQL, through
SQLAlchemy Core with bound parameters only. Call :meth:`Storage.migrate` at every start: it
creates the schema, or brings an older one up to date, and does nothing when it is current.
Every write method commits before it returns; rows are plain dicts, typed per kind.

The package, a repository per area over one database:

``db``
    engine creation (SQLite: WAL, ``synchronous=FULL``, ``BEGIN IMMEDIATE`` writes),
    transactions rerun when they lose a race, bulk inserts, and the column types that read
    whatever a SQLite row holds as the type its column promises
``schema``
    the tables and their versioned migrations
``rows``
    the rows the repositories return, one ``TypedDict`` per kind
``checks``
    checks of what is written, by :mod:`tastebud.rules`
``users``, ``items``, ``events``, ``versions`` (model versions), ``experiments``,
``exposures`` (and feedback), ``deletions`` (the deletions log, the forget mark)
    one repository each
``bulk_import``
    a :class:`~tastebud.data.dataset.Dataset` into the database, idempotently
``facade``
    :class:`Storage`, composing them under the method names the service calls
"""

from __future__ import annotations

from tastebud.service.storage.deletions import FORGET_MARK
from tastebud.service.storage.events import MissingIdsError
from tastebud.service.storage.exposures import EXPOSURE_COLUMNS, exposure_row
from tastebud.service.storage.facade import Storage
from tastebud.service.storage.rows import (
    AddedEvent,
    EventRow,
    ExperimentRow,
    FeedbackRow,
    ImportCounts,
    ItemRow,
    ModelVersionRow,
    UserRow,
)
from tastebud.service.storage.schema import (
    DELETIONS,
    EVENTS,
    EXPERIMENTS,
    EXPOSURES,
    FEEDBACK,
    ITEMS,
    META,
    METADATA,
    MIGRATIONS,
    MODEL_VERSIONS,
    SCHEMA_VERSION,
    SCHEMA_VERSION_TABLE,
    USERS,
)

__all__ = [
    "DELETIONS",
    "EVENTS",
    "EXPERIMENTS",
    "EXPOSURES",
    "EXPOSURE_COLUMNS",
    "FEEDBACK",
    "FORGET_MARK",
    "ITEMS",
    "META",
    "METADATA",
    "MIGRATIONS",
    "MODEL_VERSIONS",
    "SCHEMA_VERSION",
    "SCHEMA_VERSION_TABLE",
    "USERS",
    "AddedEvent",
    "EventRow",
    "ExperimentRow",
    "FeedbackRow",
    "ImportCounts",
    "ItemRow",
    "MissingIdsError",
    "ModelVersionRow",
    "Storage",
    "UserRow",
    "exposure_row",
]
