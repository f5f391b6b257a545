"""The rows the repositories return, one :class:`~typing.TypedDict` per kind.

They are the plain dicts SQLAlchemy's rows turn into (no object per row, no conversion), typed
so that a reader of a row (and mypy) knows its keys. Text and times read as the columns promise
whatever a SQLite row holds (:mod:`.db`), except an event's ``value`` and ``ts``, which read as
``None`` when unreadable: the training set counts such rows and skips them.
"""

from __future__ import annotations

from typing import Any, TypedDict


class UserRow(TypedDict):
    id: str
    attributes: dict[str, Any]
    created_at: float


class ItemRow(TypedDict):
    id: str
    title: str | None
    attributes: dict[str, Any]
    available: bool
    created_at: float
    #: set by every write (``None`` only for rows written around the API)
    updated_at: float | None


class EventRow(TypedDict):
    seq: int
    user_id: str
    item_id: str
    type: str
    value: float | None
    ts: float | None
    client_event_id: str | None
    received_at: float


class AddedEvent(TypedDict):
    """What storing one event of a batch did: its ``seq``, and whether it was stored
    before (the same ``client_event_id``)."""

    seq: int
    duplicate: bool


class ModelVersionRow(TypedDict):
    id: int
    model: str
    params: dict[str, Any]
    path: str
    metrics: dict[str, Any]
    created_at: float
    n_events: int
    active: bool
    #: when a user it may have learned from was deleted (never activated again), or None
    forgotten_at: float | None


class ExperimentRow(TypedDict):
    name: str
    #: ``[{"name", "share", "model_version", "pipeline"}]`` (shares sum to 1)
    variants: list[dict[str, Any]]
    #: ``"running"`` or ``"stopped"``
    status: str
    created_at: float
    stopped_at: float | None


class FeedbackRow(TypedDict):
    id: int
    request_id: str | None
    user_id: str
    item_id: str
    type: str
    ts: float


class ImportCounts(TypedDict):
    """Rows an import wrote, and the events it skipped as stored already."""

    users: int
    items: int
    events: int
    duplicates: int


#: A user's recent event as the request path reads it: ``(item_id, type, value)``.
RecentEvent = tuple[str, str, float | None]
#: An event as serving processes follow the table: ``(seq, user_id, item_id, type, value)``.
FollowedEvent = tuple[int, str, str, str, float | None]
#: A row of the deletions log: ``(seq, user_hash, item_id)``.
Deletion = tuple[int, str | None, str | None]
