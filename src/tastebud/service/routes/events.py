"""Events: one, or a batch in one transaction; the user's next list reflects them.

The bodies' types are made per app from its settings (event types, batch limit): see
:func:`add_routes`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tastebud.errors import InvalidInputError
from tastebud.service.routes.deps import Context, Routes, context, typed, write_key
from tastebud.service.schemas import BatchOut, EventBatch, EventIn, Stored, event_bodies
from tastebud.service.settings import Settings


def add_routes(router: APIRouter, settings: Settings) -> None:
    """The event routes, added to ``router`` (the app's), their bodies typed by this app's
    ``settings`` (:func:`~tastebud.service.schemas.event_bodies`)."""
    event_in, batch_in = event_bodies(settings)
    routes = Routes(router, "events")
    one, batch = typed(post_event, body=event_in), typed(post_events, body=batch_in)
    routes.add("POST", "/events", one, write_key, Stored, status_code=201)
    routes.add("POST", "/events/batch", batch, write_key, BatchOut, status_code=201)


def store_events(
    ctx: Context, events: list[EventIn], where: Callable[[int], str]
) -> Sequence[Mapping[str, Any]]:
    """Stores ``events`` (checked against the settings; ``where(n)`` names the n-th in an
    error), tells the engine whose states changed and counts them; one result per event."""
    settings = ctx.settings
    if len(events) > settings.max_batch:
        raise InvalidInputError(
            f"{len(events)} events in one batch; the limit is {settings.max_batch}"
        )
    allowed = settings.event_types
    rows = []
    for n, event in enumerate(events):
        if event.type not in allowed:
            raise InvalidInputError(
                f"{where(n)}type: {event.type!r} is not one of {', '.join(allowed)}"
            )
        if event.type == "rating" and event.value is None:
            raise InvalidInputError(f"{where(n)}value: a rating needs a value")
        rows.append(event.model_dump())
    results = ctx.storage.add_events(rows, create_missing_items=settings.create_missing_items)
    ctx.engine.events_stored({row["user_id"] for row in rows})
    fresh = [row for row, res in zip(rows, results, strict=True) if not res["duplicate"]]
    metrics = ctx.metrics
    for row in fresh:
        metrics.events.labels(row["type"]).inc()
    metrics.duplicates.inc(len(rows) - len(fresh))
    return results


def _nowhere(_: int) -> str:
    return ""


def _in_batch(n: int) -> str:
    return f"events[{n}]."


async def post_event(request: Request, body: EventIn) -> JSONResponse:
    """Store one event; the user's next list reflects it. A repeated ``client_event_id``
    is answered ``duplicate: true`` with the stored event's ``seq``. With ``request_id``
    (the list the item came from) it also counts as that list's feedback.

    Only the write runs in the thread pool (it waits for the disk); the answer is built
    here, without a second validation against the response model."""
    stored = await run_in_threadpool(store_events, context(request), [body], _nowhere)
    return JSONResponse(stored[0], status_code=201)


async def post_events(request: Request, body: EventBatch) -> JSONResponse:
    """Store many events in one transaction (all or nothing)."""
    results = await run_in_threadpool(store_events, context(request), body.events, _in_batch)
    return JSONResponse(
        {
            "stored": sum(not r["duplicate"] for r in results),
            "duplicates": sum(r["duplicate"] for r in results),
            "results": results,
        },
        status_code=201,
    )
