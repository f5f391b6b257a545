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
import dataclasses
import gc
import logging
import os
import random
import re
import secrets
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Header, Query, Request
from fastapi import Path as FastPath
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import exc as sa_exc
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tastebud import __version__
from tastebud.errors import InvalidInputError, TastebudError, UnknownIdError
from tastebud.service.engine import Engine, Snapshot, UserState
from tastebud.service.experiments import (
    EXPLORATION_SOURCE,
    ExperimentIn,
    Explorer,
    ExposureLog,
    assign,
    report,
)
from tastebud.service.pipeline import GENERATORS, Candidate, Filters, PipelineSettings
from tastebud.service.settings import Settings
from tastebud.service.storage import MissingIdsError, Storage
from tastebud.service.ui import mount_docs, mount_ui

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
    request_id: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="The recommendation list the item was picked from (logs feedback too)",
    )


class EventBatch(_Body):
    events: list[EventIn]


class _Stages(_Body):
    """Per-request pipeline settings (unset: the service's)."""

    include_categories: list[Annotated[str, Field(max_length=200)]] = Field(
        default_factory=list, max_length=100
    )
    exclude_categories: list[Annotated[str, Field(max_length=200)]] = Field(
        default_factory=list, max_length=100
    )
    filters: list[Annotated[str, Field(max_length=500)]] = Field(
        default_factory=list, max_length=50, description="Attribute predicates: year>=1990"
    )
    diversity: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    freshness: float | None = Field(None, ge=0, le=1000, allow_inf_nan=False)
    max_per_category: int | None = Field(None, ge=1)
    generators: list[str] | None = Field(None, max_length=10)


class SessionIn(_Stages):
    items: list[Id] = Field(
        default_factory=list, max_length=1000, description="Recent items, oldest first"
    )
    k: int | None = Field(None, ge=1)
    explain: bool = False


class OnboardingIn(_Stages):
    liked_items: list[Id] = Field(default_factory=list, max_length=100)
    attributes: dict[str, Any] | None = Field(None, description="Replaces the stored ones")
    k: int | None = Field(None, ge=1)
    explain: bool = True


class FeedbackIn(_Body):
    request_id: Id
    user_id: Id
    item_id: Id
    type: str = Field(min_length=1, max_length=64, description="click, like, skip...")
    ts: float | None = Field(None, ge=0, allow_inf_nan=False)


# -- answers ---------------------------------------------------------------------------------
class UserOut(BaseModel):
    id: str
    attributes: dict[str, Any]
    created_at: float


class ItemOut(BaseModel):
    id: str
    title: str | None
    attributes: dict[str, Any]
    available: bool
    created_at: float


class EventOut(BaseModel):
    seq: int
    user_id: str
    item_id: str
    type: str
    value: float | None
    ts: float
    client_event_id: str | None
    received_at: float


class Stored(BaseModel):
    seq: int
    duplicate: bool


class BatchOut(BaseModel):
    stored: int
    duplicates: int
    results: list[Stored]


class Deleted(BaseModel):
    deleted: str
    events: int | None = None


class Recommendation(BaseModel):
    item: str
    title: str | None
    score: float
    rank: int
    source: str = Field(description="The generator that proposed it (or exploration)")
    sources: list[str] = Field(description="Every generator that proposed it")
    exploration: bool = False
    explanation: str | None = None
    because: list[str] | None = None


class RecommendationList(BaseModel):
    user: str | None
    request_id: str = Field(description="Send it back with feedback on these items")
    model_version: int | None
    experiment: str | None = None
    variant: str | None = None
    items: list[Recommendation]


class Similar(BaseModel):
    item: str
    title: str | None
    score: float = Field(description="Higher is closer; the list's basis says what it is")
    rank: int
    source: str = Field(description="model, content or popular: the list's source")


class SimilarList(BaseModel):
    item: str
    source: str = Field(
        description="model: the serving model's item similarity; content: the catalogue's "
        "metadata (titles, attributes), before the first model exists, for items the model "
        "has not learned, or under a model without item similarities; popular: neither can "
        "tell, popular items instead"
    )
    basis: str = Field(description="What the scores are, in words")
    items: list[Similar]


class FeedbackOut(BaseModel):
    id: int
    request_id: str | None
    user_id: str
    item_id: str
    type: str
    ts: float


class ModelVersionOut(BaseModel):
    id: int
    model: str
    params: dict[str, Any]
    path: str
    metrics: dict[str, Any]
    created_at: float
    n_events: int
    active: bool


class RetrainOut(BaseModel):
    status: str
    version: ModelVersionOut | None = None


class StatsOut(BaseModel):
    users: int
    items: int
    events: int
    model_version: int | None
    training: bool
    experiment: str | None
    exploration: str
    list_cache: dict[str, int] = Field(description="Lists served again / rebuilt")
    state_cache: dict[str, int] = Field(
        description="User histories kept in memory / read from the database"
    )


class ReadyOut(BaseModel):
    status: str = Field(description="ready")
    serving: str = Field(description="What lists come from now, in words")
    model_version: int | None = Field(description="The serving version; null before the first")
    model: str | None = Field(description="Its model (als, item-knn...); null before the first")
    training: bool = Field(description="A retrain runs now")
    pid: int = Field(description="The answering process")


class ExperimentOut(BaseModel):
    name: str
    variants: list[dict[str, Any]]
    status: str
    created_at: float
    stopped_at: float | None


class VariantReport(BaseModel):
    variant: str
    share: float
    model_version: int | None
    users: int
    requests: int
    exposures: int
    outcome_users: int
    outcome_events: int
    rate: float | None = Field(description="Share of exposed users with the outcome")
    per_exposure: float | None = Field(description="Outcomes per item shown")
    lift: float | None = Field(description="rate / control's rate - 1")
    outcomes: dict[str, int] = Field(description="Users with each outcome type")


class TestOut(BaseModel):
    method: str
    alpha: float
    statistic: float | None
    p_value: float | None
    significant: bool


class ReportOut(BaseModel):
    experiment: str
    status: str
    outcome: str
    control: str
    variants: list[VariantReport]
    test: TestOut


class ExplorationOut(BaseModel):
    method: str
    items: int = Field(description="Items explored so far")
    exposures: int
    answered: int
    rate: float | None


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
                "problem": str(e.get("msg", "invalid")).removeprefix("Value error, "),
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

    def record(self, scope: Scope, route: str, status: int, seconds: float) -> None:
        """One answered request."""
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        log.debug("%s %s %d %.1fms", scope.get("method"), route, status, seconds * 1e3)


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
            self.metrics.record(scope, route, status, time.perf_counter() - start)


class _RequestIds:
    """Ids of served lists: 32 hex digits, the time in milliseconds then 80 random bits
    from a generator seeded once from the system's randomness. They sort by time, so the
    exposures' request index grows at its end, and cost no system call each (``uuid4``
    asks the kernel every time)."""

    def __init__(self) -> None:
        self._random = random.Random(os.urandom(32))

    def __call__(self) -> str:
        return f"{int(time.time() * 1000):012x}{self._random.getrandbits(80):020x}"


_RECOMMEND_PATH = "/users/{user_id}/recommendations"
_RECOMMEND_URL = re.compile(r"/users/([^/]{1,256})/recommendations")


class _RecommendationsFastPath:
    """Answers ``GET /users/{user_id}/recommendations`` -- the request that carries the
    load -- in front of everything FastAPI and Starlette put between the server and a route
    (their middleware, routing by a regex per route, dependency solving), which together
    cost more than a kept list.

    It does what the documented route does, through the same functions: the read-key check,
    the answer, errors turned into responses by the app's own exception handlers, and the
    request metrics. A request it does not recognise exactly (another method, a body, a
    ``root_path``, an id longer than the route accepts) goes the usual way."""

    def __init__(
        self,
        *,
        route: Any,
        check_key: Callable[[str | None], Awaitable[None]],
        answer: Callable[[str, QueryParams], Response],
        metrics: _Metrics,
    ) -> None:
        self.route = route
        self.check_key = check_key
        self.answer = answer
        self.metrics = metrics

    @staticmethod
    def match(scope: Scope) -> re.Match[str] | None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("root_path"):
            return None
        for name, _ in scope["headers"]:
            if name in (b"content-length", b"transfer-encoding"):
                return None
        return _RECOMMEND_URL.fullmatch(scope["path"])

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, user_id: str, app: Starlette
    ) -> None:
        start = time.perf_counter()
        scope["app"] = app  # as Starlette sets it: the exception handlers' request.app
        scope["route"] = self.route
        request = Request(scope, receive)
        try:
            await self.check_key(request.headers.get("x-api-key"))
            response = self.answer(user_id, request.query_params)
        except Exception as err:
            handler = _exception_handler(app, err)
            if handler is None:  # pragma: no cover - the app handles Exception itself
                raise
            response = await handler(request, err)
        try:
            await response(scope, receive, send)
        finally:
            self.metrics.record(
                scope, self.route.path, response.status_code, time.perf_counter() - start
            )


class _ServiceApp(FastAPI):
    """The service's FastAPI app, with :class:`_RecommendationsFastPath` ahead of it."""

    fast_path: _RecommendationsFastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fast_path
        match = None if fast is None else fast.match(scope)
        if match is None:
            await super().__call__(scope, receive, send)
            return
        assert fast is not None
        await fast(scope, receive, send, match.group(1), self)


def _exception_handler(app: Any, err: Exception) -> Any:
    """The app's handler for ``err`` (its closest class with one), as Starlette picks it."""
    handlers = app.exception_handlers
    for cls in type(err).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None


# -- the app ---------------------------------------------------------------------------------
#: How ``tastebud serve --workers N`` hands its settings to the worker processes.
WORKER_SETTINGS_ENV = "_TASTEBUD_WORKER_SETTINGS"


#: How long a thread may hold the interpreter while another waits for it (CPython's default
#: is 5 ms): a serving process runs requests on the event loop and writes events, exposures
#: and refreshes in threads, and each hand-over at the default added up to 5 ms to a list.
SWITCH_INTERVAL_S = 0.0005


def serving_app(settings: Settings, storage: Storage | None = None) -> FastAPI:
    """The app of a process that does nothing but serve it (``tastebud serve`` and each of
    its workers), with the process tuned for latency first: BLAS on one thread (its others
    only spun against the request threads), a short :data:`SWITCH_INTERVAL_S`, and the
    heap frozen for the garbage collector (``create_app(freeze_heap=True)``)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    return create_app(settings, storage, freeze_heap=True)


def worker_app() -> FastAPI:
    """The app of one ``tastebud serve --workers N`` process (a uvicorn factory)."""
    from tastebud.service import logs

    settings = Settings.model_validate_json(os.environ[WORKER_SETTINGS_ENV])
    logs.configure(settings.log_level, settings.log_json)
    return serving_app(settings)


#: How often a serving process freezes what survived (``create_app(freeze_heap=True)``).
REFREEZE_S = 10.0


class _Freezer:
    """Keeps the heap frozen for the garbage collector (``create_app(freeze_heap=True)``).

    :meth:`freeze` collects fully, then freezes what is left (after start-up and after a
    model swap). :meth:`refresh` does the same every :data:`REFREEZE_S` -- what lived
    through the last seconds (cache entries, mostly) is frozen too -- except while a
    retrain runs (its temporaries would be frozen with it). A frozen object that later turns
    into cyclic garbage is never collected, so when the frozen heap has grown by half since
    the last start-up, swap or full look, it is unfrozen and collected whole once (about
    0.1 s on ML-100K). A swap resets that mark: a new model is growth, not garbage."""

    def __init__(self) -> None:
        self.mark = 0

    def freeze(self) -> None:
        gc.collect()
        gc.freeze()
        self.mark = gc.get_freeze_count()

    def refresh(self) -> None:
        gc.collect()
        gc.freeze()
        if gc.get_freeze_count() > 1.5 * self.mark:
            gc.unfreeze()
            self.freeze()


def create_app(
    settings: Settings, storage: Storage | None = None, *, freeze_heap: bool = False
) -> FastAPI:
    """A new app over ``settings``. ``storage`` is used as given (and left open) when passed;
    otherwise the app opens ``settings.db`` and closes it at shutdown. The schema is
    migrated at start-up either way.

    ``freeze_heap`` (what ``tastebud serve`` does: one app per process) hides everything
    alive from the cyclic garbage collector (``gc.freeze``) once the app has started, after
    each model swap and every :data:`REFREEZE_S` seconds (:class:`_Freezer`): its full
    collections otherwise walk every object of every imported module -- about 300,000,
    140 ms on ML-100K, a stalled request each time -- and then every cache entry, where
    they now walk only what was allocated since the last freeze (a few ms every 10 s). An
    app in a long-lived process that makes many apps (a test suite) leaves it off: what a
    frozen app leaves behind is not collected until the heap is looked at whole."""
    store = storage if storage is not None else Storage(settings.db)
    engine = Engine(settings, store)
    freezer = _Freezer()
    if freeze_heap:
        engine.after_swap = freezer.freeze
    explorer = Explorer(settings.exploration, store)
    exposures = ExposureLog(store)
    new_request_id = _RequestIds()
    metrics = _Metrics()
    ready = threading.Event()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(store.migrate)
        await run_in_threadpool(engine.start)
        if engine.snapshot.model is None:  # a first model from what is already stored
            _retrain_in_background()
        exposures.start()
        stop_following = threading.Event()
        threading.Thread(
            target=engine.follow, args=(stop_following,), name="tastebud-follow", daemon=True
        ).start()
        tasks = []
        if freeze_heap:
            freezer.freeze()  # before the first request: start-up's garbage goes first
            tasks.append(asyncio.create_task(_refreeze()))
        ready.set()
        if settings.retrain_every_s > 0:
            tasks.append(asyncio.create_task(_scheduled_retrain()))
        try:
            yield
        finally:
            ready.clear()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            stop_following.set()
            await run_in_threadpool(exposures.close)
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

    async def _refreeze() -> None:
        """:meth:`_Freezer.refresh` on the event loop, between requests."""
        while True:
            await asyncio.sleep(REFREEZE_S)
            if not engine.training:
                freezer.refresh()

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

    app = _ServiceApp(
        title="tastebud",
        version=__version__,
        description="Recommendations over HTTP, learning from every event.",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's pages load Swagger UI and ReDoc from a CDN: mount_docs
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.storage = store
    app.state.engine = engine
    app.state.exposures = exposures
    _install_error_handlers(app)
    mount_ui(app)  # the web UI: /ui/ for users, /ui/admin
    mount_docs(app)  # /docs and /redoc, with their assets served from the package

    # -- keys ------------------------------------------------------------------------------
    def _key_check(*accepted: str | None) -> Callable[[str | None], Awaitable[None]]:
        """A dependency: open when ``accepted[0]`` (the key this level needs) is unset, else
        one of the ``accepted`` keys (that one or a stronger one) must be sent. A coroutine,
        so FastAPI runs it on the event loop: a plain function would cost every request a
        hop to the thread pool and back."""
        required = accepted[0]
        keys = [key.encode() for key in accepted if key]

        async def check(
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
    check_read_key = _key_check(settings.read_key, settings.api_key, admin)
    read_key = Depends(check_read_key)

    # -- health and metrics ----------------------------------------------------------------
    @app.get("/health/live", tags=["health"])
    def live() -> dict[str, Any]:
        """The process answers (``pid``: which one, with ``tastebud serve --workers N``)."""
        return {"status": "alive", "pid": os.getpid()}

    @app.get("/health/ready", tags=["health"], response_model=ReadyOut)
    def health_ready() -> JSONResponse:
        """200 once started with the database answering -- whether a model is trained yet
        or not, since lists are served either way -- and 503 before start-up finishes or
        while the database does not answer. The body says what is served: ``model_version``
        and ``model`` (``null`` until the first model is trained), ``training`` (a retrain
        runs now), and ``serving`` in words -- "model version 3 (als)" once a model serves;
        before that "popular items (no model yet; the first is training)", or why none was
        trained ("popular items (no model yet: too few positive events to train ...)").
        ``pid``: which process answered, with ``tastebud serve --workers N``."""
        if not ready.is_set():
            return _error(503, "starting", "the service is starting")
        try:
            store.schema_version()
        except sa_exc.SQLAlchemyError as err:  # the database went away
            log.warning("readiness: database unreachable: %s", err)
            return _error(503, "database_unavailable", "the database does not answer")
        version = engine.snapshot.version
        training = engine.training
        if version is not None:
            serving = f"model version {version['id']} ({version['model']})"
        elif training:
            serving = "popular items (no model yet; the first is training)"
        else:
            why = engine.retrain_problem
            serving = "popular items (no model yet" + (f": {why})" if why else ")")
        return JSONResponse(
            {
                "status": "ready",
                "serving": serving,
                "model_version": None if version is None else version["id"],
                "model": None if version is None else version["model"],
                "training": training,
                "pid": os.getpid(),
            }
        )

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- users -----------------------------------------------------------------------------
    @app.put("/users/{user_id}", tags=["users"], dependencies=[write_key], response_model=UserOut)
    def put_user(user_id: Id, body: Annotated[UserIn | None, Body()] = None) -> dict[str, Any]:
        """Create a user (attributes optional) or replace their attributes."""
        return store.upsert_user(user_id, None if body is None else body.attributes)

    @app.get("/users/{user_id}", tags=["users"], dependencies=[read_key], response_model=UserOut)
    def get_user(user_id: Id) -> dict[str, Any]:
        user = store.get_user(user_id)
        if user is None:
            raise UnknownIdError(f"unknown user {user_id!r}")
        return user

    @app.get("/users", tags=["users"], dependencies=[read_key], response_model=list[UserOut])
    def list_users(
        q: Annotated[
            str | None,
            Query(
                max_length=256,
                description="Only users whose id starts with this (case-sensitive): a "
                "type-ahead search, one index range however many users there are",
            ),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
    ) -> list[dict[str, Any]]:
        """Users ordered by id (code point order with ``q``), one page."""
        return store.list_users(limit=limit, offset=offset, prefix=q or None)

    @app.delete(
        "/users/{user_id}", tags=["users"], dependencies=[write_key], response_model=Deleted
    )
    def delete_user(user_id: Id) -> dict[str, Any]:
        """Delete a user with all their events (and experiment logs)."""
        events = store.user_events(user_id)
        if not store.delete_user(user_id):
            raise UnknownIdError(f"unknown user {user_id!r}")
        engine.forget_events(events)
        return {"deleted": user_id, "events": len(events)}

    @app.get(
        "/users/{user_id}/events",
        tags=["users"],
        dependencies=[read_key],
        response_model=list[EventOut],
    )
    def user_events(
        user_id: Id, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
    ) -> list[dict[str, Any]]:
        """The user's latest events, oldest first (empty for an unknown user)."""
        return store.user_events(user_id, limit=limit)

    # -- items -----------------------------------------------------------------------------
    @app.put("/items/{item_id}", tags=["items"], dependencies=[write_key], response_model=ItemOut)
    def put_item(item_id: Id, body: Annotated[ItemIn | None, Body()] = None) -> dict[str, Any]:
        """Create an item (available unless told otherwise) or update the fields given."""
        fields = {} if body is None else body.model_dump(exclude_unset=True)
        clear_title = "title" in fields and fields["title"] is None
        item = store.upsert_item(item_id, **{k: v for k, v in fields.items() if v is not None})
        if clear_title:
            item = store.update_item(item_id, title=None)
        engine.catalog.put(item)
        return item

    @app.patch("/items/{item_id}", tags=["items"], dependencies=[write_key], response_model=ItemOut)
    def patch_item(item_id: Id, body: ItemPatch) -> dict[str, Any]:
        """Change some fields of an item; ``available: false`` takes it out of every list
        at once (it keeps its events)."""
        item = store.update_item(item_id, **body.model_dump(exclude_unset=True))
        engine.catalog.put(item)
        return item

    @app.get("/items/{item_id}", tags=["items"], dependencies=[read_key], response_model=ItemOut)
    def get_item(item_id: Id) -> dict[str, Any]:
        item = store.get_item(item_id)
        if item is None:
            raise UnknownIdError(f"unknown item {item_id!r}")
        return item

    @app.get("/items", tags=["items"], dependencies=[read_key], response_model=list[ItemOut])
    def list_items(
        q: Annotated[str | None, Query(max_length=200, description="title/id contains")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
    ) -> list[dict[str, Any]]:
        return store.list_items(limit=limit, offset=offset, query=q)

    @app.delete(
        "/items/{item_id}", tags=["items"], dependencies=[write_key], response_model=Deleted
    )
    def delete_item(item_id: Id) -> dict[str, Any]:
        """Delete an item and its events."""
        if not store.delete_item(item_id):
            raise UnknownIdError(f"unknown item {item_id!r}")
        engine.forget_item(item_id)
        engine.catalog.drop(item_id)
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
        engine.events_stored({row["user_id"] for row in rows})
        fresh = [row for row, res in zip(rows, results, strict=True) if not res["duplicate"]]
        for row in fresh:
            metrics.events.labels(row["type"]).inc()
        metrics.duplicates.inc(len(rows) - len(fresh))
        return results

    @app.post(
        "/events",
        tags=["events"],
        status_code=201,
        dependencies=[write_key],
        response_model=Stored,
    )
    async def post_event(body: EventIn) -> JSONResponse:
        """Store one event; the user's next list reflects it. A repeated ``client_event_id``
        is answered ``duplicate: true`` with the stored event's ``seq``. With ``request_id``
        (the list the item came from) it also counts as that list's feedback.

        Only the write runs in the thread pool (it waits for the disk); the answer is built
        here, without a second validation against the response model."""
        stored = await run_in_threadpool(_store_events, [body], lambda _: "")
        return JSONResponse(stored[0], status_code=201)

    @app.post(
        "/events/batch",
        tags=["events"],
        status_code=201,
        dependencies=[write_key],
        response_model=BatchOut,
    )
    async def post_events(body: EventBatch) -> JSONResponse:
        """Store many events in one transaction (all or nothing)."""
        results = await run_in_threadpool(_store_events, body.events, lambda n: f"events[{n}].")
        return JSONResponse(
            {
                "stored": sum(not r["duplicate"] for r in results),
                "duplicates": sum(r["duplicate"] for r in results),
                "results": results,
            },
            status_code=201,
        )

    # -- recommendations -------------------------------------------------------------------
    def _k(k: int | None) -> int:
        k = settings.default_k if k is None else k
        if k > settings.max_k:
            raise InvalidInputError(f"k={k} is above the limit max_k={settings.max_k}")
        return k

    def _options(base: PipelineSettings, stages: _Stages | None) -> PipelineSettings:
        if stages is None:
            return base
        overrides: dict[str, Any] = {
            "diversity": stages.diversity,
            "freshness": stages.freshness,
            "max_per_category": stages.max_per_category,
        }
        if stages.generators is not None:
            names = [n.strip() for g in stages.generators for n in g.split(",") if n.strip()]
            unknown = sorted(set(names) - set(GENERATORS))
            if unknown:
                raise InvalidInputError(
                    f"generators: unknown {', '.join(unknown)}; known: {', '.join(GENERATORS)}"
                )
            default = PipelineSettings().generators
            overrides["generators"] = {
                n: base.generators.get(n) or default[n] for n in dict.fromkeys(names)
            }
        return _merged(base, overrides, "")

    def _filters(stages: _Stages | None) -> Filters:
        if stages is None:
            return Filters()
        return Filters.build(stages.include_categories, stages.exclude_categories, stages.filters)

    def _serve(
        user_id: str | None,
        state: UserState,
        k: int,
        explain: bool,
        stages: _Stages | None,
    ) -> dict[str, Any]:
        """Run the pipeline (in the user's experiment variant, with exploration) and log
        what is shown."""
        experiment = engine.running_experiment() if user_id is not None else None
        variant: dict[str, Any] | None = None
        snapshot = engine.snapshot
        base = settings.pipeline
        if experiment is not None and user_id is not None:
            variant = assign(experiment, user_id)
            try:
                snapshot = engine.snapshot_for(variant.get("model_version"))
            except TastebudError as err:  # its files are gone: serve the active version
                log.error("experiment %s: %s", experiment["name"], err)
            if variant.get("pipeline"):
                base = _merged(base, variant["pipeline"], "experiment pipeline.")
        options = _options(base, stages)

        def attributes() -> dict[str, Any] | None:
            user = store.get_user(user_id) if user_id is not None else None
            return None if user is None else user["attributes"]

        result = engine.recommend(
            state,
            k,
            snapshot=snapshot,
            options=options,
            filters=_filters(stages),
            attributes=attributes,
            keep_rest=user_id is not None and explorer.on,
        )
        chosen = list(result.chosen)
        if user_id is not None and explorer.on:
            picked = explorer.pick([c.item for c in result.rest])
            if picked is not None:
                found = next(c for c in result.rest if c.item == picked)
                cand = dataclasses.replace(found, exploration=True)  # lists may be cached
                chosen.insert(min(settings.exploration.position, len(chosen) + 1) - 1, cand)
                chosen = chosen[:k]
        request_id = new_request_id()
        version = result.snapshot.version
        version_id = None if version is None else int(version["id"])
        out = _rows(chosen, result.rows, state, result.snapshot, explain)
        if user_id is not None and chosen:
            now = time.time()
            tested = None if experiment is None else experiment["name"]
            arm = None if variant is None else variant["name"]
            exposures.add_rows(  # in EXPOSURE_COLUMNS order; ids checked on the way in
                (request_id, user_id, row["item"], pos, row["source"], version_id, tested, arm, now)
                for pos, row in enumerate(out)
            )
        metrics.recommendations.labels(out[0]["source"] if out else "empty").inc()
        return {
            "user": user_id,
            "request_id": request_id,
            "model_version": version_id,
            "experiment": None if experiment is None else experiment["name"],
            "variant": None if variant is None else variant["name"],
            "items": out,
        }

    def _rows(
        chosen: list[Candidate],
        rows: dict[str, dict[str, Any]],
        state: UserState,
        snapshot: Snapshot,
        explain: bool,
    ) -> list[dict[str, Any]]:
        because: dict[str, str] = {}
        if explain:
            because = {c.item: c.because for c in chosen if c.because is not None}
            rest = [c.item for c in chosen if c.because is None and "model" in c.scores]
            because.update(engine.explain(snapshot, state.values, rest))
        titles = engine.catalog.get(set(because.values())) if because else {}
        out = []
        for rank, cand in enumerate(chosen, start=1):
            row: dict[str, Any] = {
                "item": cand.item,
                "score": cand.score,
                "rank": rank,
                "source": cand.source,
                "sources": cand.sources,
                "exploration": cand.exploration,
                "title": rows[cand.item].get("title"),
            }
            if explain:
                liked = because.get(cand.item)
                if cand.exploration:
                    row["explanation"] = "something different, to learn more about your taste"
                elif liked is not None:
                    name = (titles.get(liked) or {}).get("title") or liked
                    row["explanation"] = f"because you liked {name}"
                    row["because"] = [liked]
                else:
                    row["explanation"] = _REASONS.get(cand.source, "matches your history")
            out.append(row)
        return out

    @app.get(
        "/users/{user_id}/recommendations",
        tags=["recommendations"],
        dependencies=[read_key],
        response_model=RecommendationList,
        openapi_extra={"parameters": _RECOMMEND_QUERY_DOCS},
    )
    async def recommend_user(user_id: Id, request: Request) -> JSONResponse:
        """Top-k for a user from their events up to now: candidates from every generator,
        ranked by the model, filtered and re-ranked (see the pipeline settings); never items
        they interacted with, disliked, or unavailable ones. A user with no events gets what
        users with the same attributes liked, popular and new items.

        Runs on the event loop itself, not in the thread pool, and reads its query itself:
        the work is a millisecond or two of one indexed read and numpy, and the hop to a
        worker thread, FastAPI's per-parameter validation and the response model's second
        validation each cost a large share of that under load. (Requests reach it through
        :class:`_RecommendationsFastPath`, which skips FastAPI's routing too; this route is
        what the API documents and what answers when the fast path passes a request on.)"""
        return _recommend_user(user_id, request.query_params)

    def _recommend_user(user_id: str, query: QueryParams) -> JSONResponse:
        k, explain, stages = _recommend_query(query)
        state = engine.user_state(user_id)
        return JSONResponse(_serve(user_id, state, _k(k), explain, stages))

    @app.post(
        "/recommendations",
        tags=["recommendations"],
        dependencies=[read_key],
        response_model=RecommendationList,
    )
    def recommend_session(body: SessionIn) -> JSONResponse:
        """Top-k for an anonymous session given by its items (stores nothing)."""
        state = engine.session_state(body.items)
        return JSONResponse(_serve(None, state, _k(body.k), body.explain, body))

    @app.post(
        "/users/{user_id}/onboarding",
        tags=["recommendations"],
        dependencies=[write_key],
        response_model=RecommendationList,
    )
    def onboarding(user_id: Id, body: OnboardingIn) -> JSONResponse:
        """A new user's first list from a few liked items and/or attributes (age, city...):
        the attributes are stored, the likes stored as ``like`` events (idempotent: sending
        the same onboarding twice stores them once)."""
        k = _k(body.k)
        if body.attributes is not None or store.get_user(user_id) is None:
            store.upsert_user(user_id, body.attributes)
        if body.liked_items:
            _store_events(
                [
                    EventIn(
                        user_id=user_id,
                        item_id=item,
                        type="like",
                        client_event_id=f"onboarding:{len(user_id)}:{user_id}:{item}",
                    )
                    for item in dict.fromkeys(body.liked_items)
                ],
                lambda n: f"liked_items[{n}]: ",
            )
        return JSONResponse(_serve(user_id, engine.user_state(user_id), k, body.explain, body))

    @app.post(
        "/feedback",
        tags=["recommendations"],
        status_code=201,
        dependencies=[write_key],
        response_model=FeedbackOut,
    )
    def feedback(body: FeedbackIn) -> dict[str, Any]:
        """An outcome of a list (``request_id``) that is not an event (``skip``,
        ``dismiss``...): counted in experiment and exploration reports, not trained on."""
        return store.log_feedback(body.model_dump())

    @app.get(
        "/items/{item_id}/similar",
        tags=["recommendations"],
        dependencies=[read_key],
        response_model=SimilarList,
    )
    def similar(item_id: Id, k: Annotated[int | None, Query(ge=1)] = None) -> dict[str, Any]:
        """Items most similar to one, from the best source that can tell (``source``, and
        ``basis`` says what the scores are): the serving model's learned similarity; the
        catalogue's metadata (titles, attributes; cosine of TF-IDF or attribute vectors)
        for an item the model has not learned, before the first model exists, or under a
        model without item similarities; popular items, labelled so and scored as a share
        of the most popular one's events, only when neither can tell. Unavailable items are
        left out."""
        k = _k(k)
        if store.get_item(item_id) is None:
            raise UnknownIdError(f"unknown item {item_id!r}")
        answer = engine.similar(item_id, 3 * k + 16)
        items = engine.catalog.get(i for i, _ in answer.pairs)
        pairs = [(i, s) for i, s in answer.pairs if i in items and items[i]["available"]][:k]
        return {
            "item": item_id,
            "source": answer.source,
            "basis": answer.basis,
            "items": [
                {
                    "item": i,
                    "score": s,
                    "rank": r,
                    "source": answer.source,
                    "title": items[i].get("title"),
                }
                for r, (i, s) in enumerate(pairs, start=1)
            ],
        }

    # -- admin -----------------------------------------------------------------------------
    @app.post("/admin/retrain", tags=["admin"], dependencies=[admin_key], response_model=RetrainOut)
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

    @app.get(
        "/admin/models",
        tags=["admin"],
        dependencies=[admin_key],
        response_model=list[ModelVersionOut],
    )
    def models() -> list[dict[str, Any]]:
        """Every trained version, oldest first, with its offline metrics."""
        return store.list_model_versions()

    @app.post(
        "/admin/models/{version_id}/activate",
        tags=["admin"],
        dependencies=[admin_key],
        response_model=ModelVersionOut,
    )
    def activate(version_id: Annotated[int, FastPath(ge=1, le=2**62)]) -> dict[str, Any]:
        """Serve an earlier version again (a rollback)."""
        return engine.activate(version_id)

    @app.get("/admin/stats", tags=["admin"], dependencies=[admin_key], response_model=StatsOut)
    def stats() -> dict[str, Any]:
        version = engine.snapshot.version
        experiment = engine.running_experiment()
        return {
            "users": store.count_users(),
            "items": store.count_items(),
            "events": store.count_events(),
            "model_version": None if version is None else version["id"],
            "training": engine.training,
            "experiment": None if experiment is None else experiment["name"],
            "exploration": settings.exploration.method,
            "list_cache": {"hits": engine.list_cache_hits, "misses": engine.list_cache_misses},
            "state_cache": {
                "hits": engine.state_cache_hits,
                "misses": engine.state_cache_misses,
            },
        }

    @app.post(
        "/admin/experiments",
        tags=["experiments"],
        status_code=201,
        dependencies=[admin_key],
        response_model=ExperimentOut,
    )
    def start_experiment(body: ExperimentIn) -> dict[str, Any]:
        """Start an A/B test (stops the running one): users are split between the variants
        by a stable hash of their id; each variant serves a model version (or the active
        one) and may override pipeline settings."""
        for variant in body.variants:
            if variant.model_version is not None:
                engine.snapshot_for(variant.model_version)  # 404 unknown, 409 unservable
            if variant.pipeline:
                _merged(settings.pipeline, variant.pipeline, f"variant {variant.name}: pipeline.")
        row = store.create_experiment(body.name, [v.model_dump() for v in body.variants])
        engine.forget_experiment_cache()
        return row

    @app.get(
        "/admin/experiments",
        tags=["experiments"],
        dependencies=[admin_key],
        response_model=list[ExperimentOut],
    )
    def experiments() -> list[dict[str, Any]]:
        return store.list_experiments()

    @app.post(
        "/admin/experiments/{name}/stop",
        tags=["experiments"],
        dependencies=[admin_key],
        response_model=ExperimentOut,
    )
    def stop_experiment(name: Id) -> dict[str, Any]:
        row = store.stop_experiment(name)
        engine.forget_experiment_cache()
        return row

    @app.get(
        "/admin/experiments/{name}/report",
        tags=["experiments"],
        dependencies=[admin_key],
        response_model=ReportOut,
    )
    def experiment_report(
        name: Id,
        outcome: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
        alpha: Annotated[float, Query(gt=0, lt=1)] = 0.05,
    ) -> dict[str, Any]:
        """Per-variant exposures and the share of exposed users with an ``outcome``
        (feedback type, default click), with a significance test between variants."""
        exposures.flush()
        return report(store, name, outcome, alpha)

    @app.get(
        "/admin/exploration",
        tags=["experiments"],
        dependencies=[admin_key],
        response_model=ExplorationOut,
    )
    def exploration() -> dict[str, Any]:
        """How the exploration slot's items were answered."""
        exposures.flush()
        per_item = store.exploration_stats(
            EXPLORATION_SOURCE, settings.exploration.positive_feedback
        )
        shown = sum(n for n, _ in per_item.values())
        answered = sum(a for _, a in per_item.values())
        return {
            "method": settings.exploration.method,
            "items": len(per_item),
            "exposures": shown,
            "answered": answered,
            "rate": answered / shown if shown else None,
        }

    app.add_middleware(_Guard, max_body_bytes=settings.max_body_bytes, metrics=metrics)
    app.fast_path = _RecommendationsFastPath(
        route=next(r for r in app.routes if getattr(r, "path", None) == _RECOMMEND_PATH),
        check_key=check_read_key,
        answer=_recommend_user,
        metrics=metrics,
    )
    return app


_RECOMMEND_QUERY: dict[str, tuple[str, str]] = {
    # name: (JSON schema type, description)
    "k": ("integer", "List length (default: the default_k setting)"),
    "explain": ("boolean", "Add explanations ('because you liked ...')"),
    "include_categories": ("array", "Only items of these categories (repeat or comma list)"),
    "exclude_categories": ("array", "No items of these categories (repeat or comma list)"),
    "filter": ("array", "Attribute predicates such as year>=1990 or genre=jazz (repeat)"),
    "diversity": ("number", "MMR trade-off, 0 (relevance only) to 1"),
    "freshness": ("number", "Boost of brand-new items, 0 to 1000"),
    "max_per_category": ("integer", "At most this many items of one category"),
    "generators": ("string", f"Comma list of candidate generators: {', '.join(GENERATORS)}"),
}
_RECOMMEND_QUERY_DOCS = [
    {
        "name": name,
        "in": "query",
        "required": False,
        "description": text,
        "schema": {"type": kind, "items": {"type": "string"}}
        if kind == "array"
        else {"type": kind},
    }
    for name, (kind, text) in _RECOMMEND_QUERY.items()
]


def _recommend_query(query: Any) -> tuple[int | None, bool, _Stages]:
    """The recommendation query parameters, checked (422 naming the parameter)."""

    def one(name: str) -> str | None:
        values = query.getlist(name)
        if len(values) > 1:
            raise InvalidInputError(f"query.{name}: give it once")
        return values[0] if values else None

    def number(name: str, low: float, high: float, integer: bool = False) -> Any:
        text = one(name)
        if text is None:
            return None
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            kind = "an integer" if integer else "a number"
            raise InvalidInputError(f"query.{name}: {text[:50]!r} is not {kind}") from None
        if not low <= value <= high:  # also refuses nan
            raise InvalidInputError(f"query.{name}: must be between {low:g} and {high:g}")
        return value

    def many(name: str, longest: int) -> list[str]:
        values = query.getlist(name)
        if len(values) > 100 or any(len(v) > longest for v in values):
            raise InvalidInputError(f"query.{name}: at most 100 values of {longest} characters")
        return list(values)

    explain_text = one("explain")
    explain = False
    if explain_text is not None:
        lowered = explain_text.lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise InvalidInputError(f"query.explain: {explain_text[:50]!r} is not true or false")
        explain = lowered in ("true", "1", "yes", "on")
    generators = one("generators")
    if generators is not None and len(generators) > 200:
        raise InvalidInputError("query.generators: at most 200 characters")
    stages = _Stages(
        include_categories=many("include_categories", 200),
        exclude_categories=many("exclude_categories", 200),
        filters=many("filter", 500),
        diversity=number("diversity", 0, 1),
        freshness=number("freshness", 0, 1000),
        max_per_category=number("max_per_category", 1, 10**9, integer=True),
        generators=None if generators is None else [generators],
    )
    return number("k", 1, 10**9, integer=True), explain, stages


def _merged(base: PipelineSettings, overrides: dict[str, Any], where: str) -> PipelineSettings:
    """``base.merged(overrides)``, an invalid value answered 422 naming it."""
    try:
        return base.merged(overrides)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidInputError(f"{where}{loc}: {message}") from None


_REASONS = {
    "popular": "popular with everyone right now",
    "demographic": "liked by people like you",
    "new": "new arrival",
    "item_to_item": "similar to what you liked",
    "model": "matches your history",
}
