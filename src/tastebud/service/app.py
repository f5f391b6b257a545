"""The HTTP API: ``create_app(settings)`` builds a FastAPI app with no module-level state.

Errors are JSON: ``{"error": {"type": ..., "message": ...}}`` (plus ``problems`` for an
invalid request) with 4xx for the caller's mistakes (422 invalid body or parameter, or an
event naming an unknown item; 404 unknown id or route; 401/403 keys; 409 conflict; 413 too
large), 503 when the database does not answer, and a bare 500 without a traceback for our own
bugs (logged with the traceback).

Keys (``X-API-Key`` header), each optional: ``read_key`` guards reads, ``api_key`` writes,
``admin_key`` (else ``api_key``) the admin endpoints. A stronger key opens everything a weaker
one does: the admin key also writes and reads, the write key also reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import pandas as pd
from fastapi import Body, Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import exc as sa_exc
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tastebud.errors import InvalidInputError, TastebudError, UnknownIdError
from tastebud.service.engine import Engine, Snapshot, knows_items
from tastebud.service.settings import Settings
from tastebud.service.storage import MissingIdsError, Storage

log = logging.getLogger("tastebud.service")

Id = Annotated[str, Field(min_length=1, max_length=256)]


# -- bodies ----------------------------------------------------------------------------------
class _Body(BaseModel):
    # strict: "5" is not a number and true is not a timestamp; extra fields are mistakes
    model_config = ConfigDict(extra="forbid", strict=True)


class UserIn(_Body):
    attributes: dict[str, Any] | None = Field(None, description="Replaces the stored ones")


class ItemIn(_Body):
    """Creates the item, or updates the fields given (the others keep their values;
    ``"title": null`` clears the title)."""

    title: str | None = Field(None, max_length=1000)
    attributes: dict[str, Any] | None = None
    available: bool | None = None


class ItemPatch(_Body):
    """The fields to change (``"title": null`` clears the title)."""

    title: str | None = Field(None, max_length=1000)
    attributes: dict[str, Any] | None = None
    available: bool | None = None


class EventIn(_Body):
    user_id: Id
    item_id: Id
    type: str = Field(min_length=1, max_length=64)
    value: float | None = Field(None, allow_inf_nan=False, description="a rating's value")
    ts: float | None = Field(None, ge=0, allow_inf_nan=False, description="unix seconds")
    client_event_id: str | None = Field(
        None, min_length=1, max_length=256, description="idempotency key"
    )


class EventBatch(_Body):
    events: list[EventIn]


class SessionIn(_Body):
    items: list[Id] = Field(default_factory=list, description="Recent items, oldest first")
    k: int | None = Field(None, ge=1)
    explain: bool = False


# -- errors ----------------------------------------------------------------------------------
def _error(status: int, kind: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message, **extra}}, status)


_HTTP_KINDS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
}


class _HTTPError(StarletteHTTPException):
    """A 4xx with our error type (a Starlette HTTPException, so FastAPI passes it through
    untouched even when raised while the body is read)."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(status, message)
        self.kind = kind


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        problems = [
            {
                "where": ".".join(str(p) for p in e.get("loc", ())),
                "problem": e.get("msg", "invalid"),
            }
            for e in err.errors()
        ]
        first = problems[0] if problems else {"where": "request", "problem": "invalid"}
        message = f"{first['where']}: {first['problem']}"
        if len(problems) > 1:
            message += f" (and {len(problems) - 1} more problem{'s' * (len(problems) > 2)})"
        return _error(422, "invalid_request", message, problems=problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, err: StarletteHTTPException) -> Response:
        kind = getattr(err, "kind", None) or _HTTP_KINDS.get(err.status_code, "http_error")
        if err.status_code < 400:  # pragma: no cover - no redirects are raised
            return Response(status_code=err.status_code, headers=err.headers)
        response = _error(err.status_code, kind, str(err.detail))
        if err.headers:
            response.headers.update(err.headers)
        return response

    @app.exception_handler(MissingIdsError)
    async def missing_reference(_: Request, err: MissingIdsError) -> JSONResponse:
        # The body names something that does not exist: the request is invalid (422),
        # the URL itself was fine (that would be a 404).
        return _error(422, "unknown_reference", str(err), missing=sorted(err.missing))

    @app.exception_handler(UnknownIdError)
    async def unknown(_: Request, err: UnknownIdError) -> JSONResponse:
        return _error(404, "not_found", str(err))

    @app.exception_handler(InvalidInputError)
    async def bad_input(_: Request, err: InvalidInputError) -> JSONResponse:
        return _error(422, "invalid_request", str(err))

    @app.exception_handler(TastebudError)
    async def conflict(_: Request, err: TastebudError) -> JSONResponse:
        return _error(409, "conflict", str(err))

    @app.exception_handler(sa_exc.OperationalError)
    @app.exception_handler(sa_exc.InterfaceError)
    @app.exception_handler(sa_exc.TimeoutError)
    async def database_down(request: Request, err: Exception) -> JSONResponse:
        log.error("database error on %s %s: %s", request.method, request.url.path, err)
        return _error(503, "database_unavailable", "the database does not answer; try again")

    @app.exception_handler(Exception)
    async def crash(request: Request, err: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=err)
        return _error(500, "internal_error", "internal error; see the server log")


# -- metrics and limits ----------------------------------------------------------------------
class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tastebud_requests", "HTTP requests", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "tastebud_request_seconds",
            "Request latency",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
        )
        self.events = Counter("tastebud_events", "Events stored", ["type"], registry=self.registry)
        self.duplicates = Counter(
            "tastebud_duplicate_events", "Events answered as duplicates", registry=self.registry
        )
        self.recommendations = Counter(
            "tastebud_recommendations",
            "Recommendation lists served, by where the first item came from",
            ["source"],
            registry=self.registry,
        )


class _Guard:
    """Pure ASGI middleware: the body size limit (declared or streamed) and request metrics.

    Sits inside Starlette's error middleware and outside the exception handlers, so it sees
    the status of every answer, including the 500s of unhandled errors.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, metrics: _Metrics) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        limit = self.max_body_bytes

        async def send_counting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            headers = dict(scope.get("headers") or [])
            length = headers.get(b"content-length")
            if length is not None and not length.strip().isdigit():
                response = _error(400, "bad_request", "the Content-Length header is not a number")
                await response(scope, receive, send_counting)
                return
            if length is not None and int(length) > limit:
                response = _error(413, "too_large", f"the body is larger than {limit} bytes")
                await response(scope, receive, send_counting)
                return
            received = 0

            async def receive_limited() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise _HTTPError(413, "too_large", f"the body is larger than {limit} bytes")
                return message

            await self.app(scope, receive_limited, send_counting)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            seconds = time.perf_counter() - start
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(seconds)
            log.debug("%s %s %d %.1fms", scope.get("method"), route, status, seconds * 1e3)


# -- the app ---------------------------------------------------------------------------------
def create_app(settings: Settings, storage: Storage | None = None) -> FastAPI:
    """A new app over ``settings``. ``storage`` is used as given (and left open) when passed;
    otherwise the app opens ``settings.db`` and closes it at shutdown. The schema is
    migrated at start-up either way."""
    store = storage if storage is not None else Storage(settings.db)
    engine = Engine(settings, store)
    metrics = _Metrics()
    ready = threading.Event()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(store.migrate)
        await run_in_threadpool(engine.start)
        if engine.snapshot.model is None:  # a first model from what is already stored
            _retrain_in_background()
        ready.set()
        task = None
        if settings.retrain_every_s > 0:
            task = asyncio.create_task(_scheduled_retrain())
        try:
            yield
        finally:
            ready.clear()
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if storage is None:
                store.close()

    def _retrain_in_background() -> None:
        def background() -> None:
            try:
                if engine.retrain(wait=False) is None:
                    log.info("retrain skipped: one is already running")
            except TastebudError as err:
                log.info("retrain refused: %s", err)
            except Exception:
                log.exception("retrain failed")

        threading.Thread(target=background, name="tastebud-retrain", daemon=True).start()

    async def _scheduled_retrain() -> None:
        while True:
            await asyncio.sleep(settings.retrain_every_s)
            try:
                if await run_in_threadpool(engine.has_new_events):
                    await run_in_threadpool(lambda: engine.retrain(wait=False))
            except TastebudError as err:
                log.info("scheduled retrain skipped: %s", err)
            except Exception:
                log.exception("scheduled retrain failed")

    app = FastAPI(
        title="tastebud",
        version="0.1.0",
        description="Recommendations over HTTP, learning from every event.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.storage = store
    app.state.engine = engine
    _install_error_handlers(app)
    app.add_middleware(_Guard, max_body_bytes=settings.max_body_bytes, metrics=metrics)

    # -- keys ------------------------------------------------------------------------------
    def _key_check(*accepted: str | None) -> Callable[[str | None], None]:
        """A dependency: open when ``accepted[0]`` (the key this level needs) is unset, else
        one of the ``accepted`` keys (that one or a stronger one) must be sent."""
        required = accepted[0]
        keys = [key.encode() for key in accepted if key]

        def check(
            x_api_key: Annotated[str | None, Header(description="API key")] = None,
        ) -> None:
            if required is None:
                return
            if x_api_key is None:
                raise _HTTPError(401, "unauthorized", "this endpoint needs an X-API-Key header")
            sent = x_api_key.encode()
            # compare with every key (no early exit), so timing does not tell which matched
            matches = [secrets.compare_digest(sent, key) for key in keys]
            if not any(matches):
                raise _HTTPError(403, "forbidden", "the X-API-Key is not valid here")

        return check

    admin = settings.admin_key or settings.api_key
    admin_key = Depends(_key_check(admin))
    write_key = Depends(_key_check(settings.api_key, admin))
    read_key = Depends(_key_check(settings.read_key, settings.api_key, admin))

    # -- health and metrics ----------------------------------------------------------------
    @app.get("/health/live", tags=["health"])
    def live() -> dict[str, str]:
        """The process answers."""
        return {"status": "alive"}

    @app.get("/health/ready", tags=["health"])
    def health_ready() -> JSONResponse:
        """Started and the database answers; names the active model version."""
        if not ready.is_set():
            return _error(503, "starting", "the service is starting")
        try:
            store.schema_version()
        except sa_exc.SQLAlchemyError as err:  # the database went away
            log.warning("readiness: database unreachable: %s", err)
            return _error(503, "database_unavailable", "the database does not answer")
        version = engine.snapshot.version
        return JSONResponse(
            {
                "status": "ready",
                "model_version": None if version is None else version["id"],
                "training": engine.training,
            }
        )

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- users -----------------------------------------------------------------------------
    @app.put("/users/{user_id}", tags=["users"], dependencies=[write_key])
    def put_user(user_id: Id, body: Annotated[UserIn | None, Body()] = None) -> dict[str, Any]:
        """Create a user (attributes optional) or replace their attributes."""
        return store.upsert_user(user_id, None if body is None else body.attributes)

    @app.get("/users/{user_id}", tags=["users"], dependencies=[read_key])
    def get_user(user_id: Id) -> dict[str, Any]:
        user = store.get_user(user_id)
        if user is None:
            raise UnknownIdError(f"unknown user {user_id!r}")
        return user

    @app.get("/users", tags=["users"], dependencies=[read_key])
    def list_users(
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[dict[str, Any]]:
        return store.list_users(limit=limit, offset=offset)

    @app.delete("/users/{user_id}", tags=["users"], dependencies=[write_key])
    def delete_user(user_id: Id) -> dict[str, Any]:
        """Delete a user with all their events (and experiment logs)."""
        events = store.user_events(user_id)
        if not store.delete_user(user_id):
            raise UnknownIdError(f"unknown user {user_id!r}")
        engine.forget_events(events)
        return {"deleted": user_id, "events": len(events)}

    @app.get("/users/{user_id}/events", tags=["users"], dependencies=[read_key])
    def user_events(
        user_id: Id, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
    ) -> list[dict[str, Any]]:
        """The user's latest events, oldest first (empty for an unknown user)."""
        return store.user_events(user_id, limit=limit)

    # -- items -----------------------------------------------------------------------------
    @app.put("/items/{item_id}", tags=["items"], dependencies=[write_key])
    def put_item(item_id: Id, body: Annotated[ItemIn | None, Body()] = None) -> dict[str, Any]:
        """Create an item (available unless told otherwise) or update the fields given."""
        fields = {} if body is None else body.model_dump(exclude_unset=True)
        clear_title = "title" in fields and fields["title"] is None
        item = store.upsert_item(item_id, **{k: v for k, v in fields.items() if v is not None})
        if clear_title:
            item = store.update_item(item_id, title=None)
        return item

    @app.patch("/items/{item_id}", tags=["items"], dependencies=[write_key])
    def patch_item(item_id: Id, body: ItemPatch) -> dict[str, Any]:
        """Change some fields of an item; ``available: false`` takes it out of every list
        at once (it keeps its events)."""
        return store.update_item(item_id, **body.model_dump(exclude_unset=True))

    @app.get("/items/{item_id}", tags=["items"], dependencies=[read_key])
    def get_item(item_id: Id) -> dict[str, Any]:
        item = store.get_item(item_id)
        if item is None:
            raise UnknownIdError(f"unknown item {item_id!r}")
        return item

    @app.get("/items", tags=["items"], dependencies=[read_key])
    def list_items(
        q: Annotated[str | None, Query(max_length=200, description="title/id contains")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[dict[str, Any]]:
        return store.list_items(limit=limit, offset=offset, query=q)

    @app.delete("/items/{item_id}", tags=["items"], dependencies=[write_key])
    def delete_item(item_id: Id) -> dict[str, Any]:
        """Delete an item and its events."""
        if not store.delete_item(item_id):
            raise UnknownIdError(f"unknown item {item_id!r}")
        engine.forget_item(item_id)
        return {"deleted": item_id}

    # -- events ----------------------------------------------------------------------------
    def _store_events(events: list[EventIn], where: Callable[[int], str]) -> list[dict[str, Any]]:
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
        results = store.add_events(rows, create_missing_items=settings.create_missing_items)
        fresh = [row for row, res in zip(rows, results, strict=True) if not res["duplicate"]]
        for row in fresh:
            metrics.events.labels(row["type"]).inc()
        metrics.duplicates.inc(len(rows) - len(fresh))
        return results

    @app.post("/events", tags=["events"], status_code=201, dependencies=[write_key])
    def post_event(body: EventIn) -> dict[str, Any]:
        """Store one event; the user's next list reflects it. A repeated ``client_event_id``
        is answered ``duplicate: true`` with the stored event's ``seq``."""
        return _store_events([body], lambda _: "")[0]

    @app.post("/events/batch", tags=["events"], status_code=201, dependencies=[write_key])
    def post_events(body: EventBatch) -> dict[str, Any]:
        """Store many events in one transaction (all or nothing)."""
        results = _store_events(body.events, lambda n: f"events[{n}].")
        return {
            "stored": sum(not r["duplicate"] for r in results),
            "duplicates": sum(r["duplicate"] for r in results),
            "results": results,
        }

    # -- recommendations -------------------------------------------------------------------
    def _k(k: int | None) -> int:
        k = settings.default_k if k is None else k
        if k > settings.max_k:
            raise InvalidInputError(f"k={k} is above the limit max_k={settings.max_k}")
        return k

    def _answer(
        user_id: str | None, history: pd.DataFrame, disliked: set[str], k: int, explain: bool
    ) -> dict[str, Any]:
        exclude = disliked | store.unavailable_items()
        recs: list[tuple[str, float, str]] = []
        snapshot: Snapshot = engine.snapshot
        items: dict[str, dict[str, Any]] = {}
        for _attempt in range(3):
            # The model still knows items deleted since it was trained: leave them out and
            # ask again for the places they took.
            recs, snapshot = engine.recommend(history, k, exclude=exclude)
            items = store.get_items([item for item, _, _ in recs])
            gone = {item for item, _, _ in recs if item not in items}
            if not gone:
                break
            exclude = exclude | gone
        recs = [rec for rec in recs if rec[0] in items]
        because: dict[str, str] = {}
        titles: dict[str, dict[str, Any]] = {}
        if explain:
            because = engine.explain(snapshot, history, [i for i, _, s in recs if s == "model"])
            titles = store.get_items(set(because.values())) if because else {}
        out = []
        for rank, (item, score, source) in enumerate(recs, start=1):
            row: dict[str, Any] = {
                "item": item,
                "score": score,
                "rank": rank,
                "source": source,
                "title": items[item].get("title"),
            }
            if explain:
                if item in because:
                    liked = because[item]
                    name = (titles.get(liked) or {}).get("title") or liked
                    row["explanation"] = f"because you liked {name}"
                    row["because"] = [liked]
                elif source == "popular":
                    row["explanation"] = "popular with everyone right now"
                else:
                    row["explanation"] = "matches your history"
            out.append(row)
        metrics.recommendations.labels(recs[0][2] if recs else "empty").inc()
        version = snapshot.version
        return {
            "user": user_id,
            "request_id": uuid.uuid4().hex,
            "model_version": None if version is None else version["id"],
            "items": out,
        }

    @app.get("/users/{user_id}/recommendations", tags=["recommendations"], dependencies=[read_key])
    def recommend_user(
        user_id: Id,
        k: Annotated[int | None, Query(ge=1)] = None,
        explain: bool = False,
    ) -> dict[str, Any]:
        """Top-k for a user from their events up to now (popular items for a user with
        none); never items they interacted with, disliked, or unavailable ones."""
        k = _k(k)
        history, disliked = engine.user_history(user_id)
        return _answer(user_id, history, disliked, k, explain)

    @app.post("/recommendations", tags=["recommendations"], dependencies=[read_key])
    def recommend_session(body: SessionIn) -> dict[str, Any]:
        """Top-k for an anonymous session given by its items (stores nothing)."""
        k = _k(body.k)
        history = pd.DataFrame(
            {"item": pd.Series(body.items, dtype=object), "value": [1.0] * len(body.items)}
        )
        history = history.groupby("item", sort=False)["value"].sum().reset_index()
        return _answer(None, history, set(), k, body.explain)

    @app.get("/items/{item_id}/similar", tags=["recommendations"], dependencies=[read_key])
    def similar(item_id: Id, k: Annotated[int | None, Query(ge=1)] = None) -> dict[str, Any]:
        """Items most similar to one (popular items when the model cannot tell)."""
        k = _k(k)
        if store.get_item(item_id) is None:
            raise UnknownIdError(f"unknown item {item_id!r}")
        exclude = store.unavailable_items() | {item_id}
        model = engine.snapshot.model
        pairs: list[tuple[str, float]] = []
        source = "popular"
        if (
            model is not None
            and model.supports_similar_items
            and knows_items(model, [item_id]).all()
        ):
            want = min(k + len(exclude) + 16, len(model.items_))
            table = model.similar_items([item_id], k=want)
            pairs = [
                (str(i), float(s))
                for i, s in zip(table["similar"], table["score"], strict=True)
                if str(i) not in exclude
            ]
            source = "model"
        else:
            pairs = [(i, s) for i, s in engine.popular(k + len(exclude)) if i not in exclude]
        items = store.get_items([i for i, _ in pairs[: 2 * k + 16]])
        pairs = [(i, s) for i, s in pairs if i in items][:k]
        return {
            "item": item_id,
            "items": [
                {
                    "item": i,
                    "score": s,
                    "rank": r,
                    "source": source,
                    "title": items[i].get("title"),
                }
                for r, (i, s) in enumerate(pairs, start=1)
            ],
        }

    # -- admin -----------------------------------------------------------------------------
    @app.post("/admin/retrain", tags=["admin"], dependencies=[admin_key])
    async def retrain(wait: bool = False) -> JSONResponse:
        """Train a new version from all events and swap it in. ``wait=true`` answers with
        the version when done (409 with too few events); otherwise 202 at once."""
        if wait:
            version = await run_in_threadpool(engine.retrain)
            return JSONResponse({"status": "done", "version": version}, 200)
        if engine.training:
            return JSONResponse({"status": "already training"}, 202)

        _retrain_in_background()
        return JSONResponse({"status": "started"}, 202)

    @app.get("/admin/models", tags=["admin"], dependencies=[admin_key])
    def models() -> list[dict[str, Any]]:
        """Every trained version, oldest first."""
        return store.list_model_versions()

    @app.post("/admin/models/{version_id}/activate", tags=["admin"], dependencies=[admin_key])
    def activate(version_id: int) -> dict[str, Any]:
        """Serve an earlier version again (a rollback)."""
        return engine.activate(version_id)

    @app.get("/admin/stats", tags=["admin"], dependencies=[admin_key])
    def stats() -> dict[str, Any]:
        version = engine.snapshot.version
        return {
            "users": store.count_users(),
            "items": store.count_items(),
            "events": store.count_events(),
            "model_version": None if version is None else version["id"],
            "training": engine.training,
        }

    return app
