"""Users: create or replace (attributes), read, find by id prefix, their events, and
delete with everything stored of them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request

from tastebud.errors import UnknownIdError
from tastebud.service.routes.deps import Routes, context, read_key, write_key
from tastebud.service.schemas import (
    Deleted,
    EventOut,
    EventsLimit,
    Limit,
    Offset,
    PathId,
    QueryText,
    UserIn,
    UserOut,
)


def add_routes(router: APIRouter) -> None:
    """The user routes, added to ``router`` (the app's)."""
    routes = Routes(router, "users")
    routes.add("PUT", "/users/{user_id}", put_user, write_key, UserOut)
    routes.add("GET", "/users/{user_id}", get_user, read_key, UserOut)
    routes.add("GET", "/users", list_users, read_key, list[UserOut])
    routes.add("DELETE", "/users/{user_id}", delete_user, write_key, Deleted)
    routes.add("GET", "/users/{user_id}/events", user_events, read_key, list[EventOut])


def put_user(
    request: Request, user_id: PathId, body: Annotated[UserIn | None, Body()] = None
) -> Mapping[str, Any]:
    """Create a user (attributes optional) or replace their attributes."""
    store = context(request).storage
    return store.upsert_user(user_id, None if body is None else body.attributes)


def get_user(request: Request, user_id: PathId) -> Mapping[str, Any]:
    user = context(request).storage.get_user(user_id)
    if user is None:
        raise UnknownIdError(f"unknown user {user_id!r}")
    return user


def list_users(
    request: Request,
    q: Annotated[
        QueryText | None,
        Query(
            max_length=256,
            description="Only users whose id starts with this (case-sensitive): a "
            "type-ahead search, one index range however many users there are",
        ),
    ] = None,
    limit: Annotated[Limit, Query()] = 100,
    offset: Annotated[Offset, Query()] = 0,
) -> Sequence[Mapping[str, Any]]:
    """Users ordered by id (code point order with ``q``), one page."""
    return context(request).storage.list_users(limit=limit, offset=offset, prefix=q or None)


def delete_user(request: Request, user_id: PathId) -> dict[str, Any]:
    """Delete a user and everything stored of them (the right to be forgotten).

    In one transaction: their attributes, events (onboarding likes included),
    exposures and feedback. Exposures of lists still buffered are dropped first, those
    of a write under way are kept out of the database, and a list served just before
    the deletion logs none after it. No table keeps the id: the
    deletions log, which tells the other processes, holds a keyed hash (HMAC-SHA256
    under a secret of the database) and keeps it 10 minutes. This process drops the
    user's cached state, the kept lists and their share of the popularity and of the
    demographics ("liked by people like you") at once; the others drop the state and
    lists within 0.1 s and learn popularity and demographics again in the background.

    Models: when the user had events, a retrain is queued; the versions trained on
    their events are never activated again (409) and their folders are deleted once
    the new version is active (the rows stay in ``GET /admin/models``). Until then the
    active version serves on (its similar items still reflect the user). With too few
    events left to train, those folders are deleted at once, the active one's too, and
    lists come from popularity until a model can be trained."""
    ctx = context(request)
    store = ctx.storage
    user = store.get_user(user_id)
    events = store.user_events(user_id)
    held = ctx.exposures.forget(user_id)  # buffered, or in a write not committed yet
    if not store.delete_user(user_id, log=held > 0) and not held:
        raise UnknownIdError(f"unknown user {user_id!r}")
    ctx.engine.forget_user(user_id, events, None if user is None else user["attributes"])
    return {"deleted": user_id, "events": len(events)}


def user_events(
    request: Request, user_id: PathId, limit: Annotated[EventsLimit, Query()] = 100
) -> Sequence[Mapping[str, Any]]:
    """The user's latest events, oldest first (404 for an unknown user)."""
    store = context(request).storage
    events = store.user_events(user_id, limit=limit)
    if not events and store.get_user(user_id) is None:
        raise UnknownIdError(f"unknown user {user_id!r}")
    for event in events:  # a row written around the API may hold NaN or infinity
        for field in ("value", "ts"):
            number = event[field]
            if number is not None and not math.isfinite(number):
                event[field] = None
    return events
