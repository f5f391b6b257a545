"""The HTTP API: ``create_app(settings)`` builds a FastAPI app with no module-level state.

The routes live in :mod:`tastebud.service.routes`, one module per area (health, users,
items, events, recommendations, admin, experiments), each route a module-level function
that reaches this app's state through one :class:`~tastebud.service.routes.deps.Context`
in ``app.state.context``. ``create_app`` makes that context, adds the routes and puts the
process layer (:mod:`tastebud.service.runtime`) around them; :func:`_lifespan` starts and
stops the background work.

Errors are JSON: ``{"error": {"type": ..., "message": ...}}`` (plus ``problems`` where the
problem has a place) with 4xx for the caller's mistakes (422 invalid parameter or body; 404
unknown id or route; 409 a conflict with what is stored, such as an event naming an unknown
item; 401/403 keys; 408/413/415 a body too slow, too large or not JSON), 503 when the
database does not answer, and a bare 500 without a traceback for our own bugs (logged with
the traceback). Every route documents these (:mod:`tastebud.service.schemas`).

Keys (``X-API-Key`` header, :mod:`tastebud.service.keys`): ``read_key`` guards reads when
set, ``api_key`` writes, ``admin_key`` (else ``api_key``) the admin endpoints; with none
configured an admin key is generated at the first start and guards writes and admin.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from tastebud import __version__
from tastebud.errors import TastebudError
from tastebud.service import runtime
from tastebud.service.engine import Engine
from tastebud.service.experiments import ExposureLog, explorer
from tastebud.service.keys import announce as announce_keys
from tastebud.service.routes import (
    admin,
    events,
    experiments,
    health,
    items,
    recommendations,
    users,
)
from tastebud.service.routes.admin import retrain_in_background
from tastebud.service.routes.deps import Context, check_key
from tastebud.service.runtime import (
    RECOMMEND_PATH,
    Freezer,
    Guard,
    RecommendationsFastPath,
    RequestIds,
    RequestMetrics,
    ServiceApp,
    install_error_handlers,
)
from tastebud.service.schemas import document_errors, exact_openapi
from tastebud.service.settings import Settings
from tastebud.service.storage import Storage
from tastebud.service.ui import mount_docs, mount_ui

log = logging.getLogger("tastebud.service")


def create_app(
    settings: Settings, storage: Storage | None = None, *, freeze_heap: bool = False
) -> FastAPI:
    """A new app over ``settings``. ``storage`` is used as given (and left open) when passed;
    otherwise the app opens ``settings.db`` and closes it at shutdown. The schema is
    migrated at start-up either way.

    ``freeze_heap`` (what ``tastebud serve`` does: one app per process) hides everything
    alive from the cyclic garbage collector (``gc.freeze``) once the app has started, after
    each model swap and every :data:`REFREEZE_S` seconds (:class:`Freezer`): its full
    collections otherwise walk every object of every imported module -- about 300,000,
    140 ms on ML-100K, a stalled request each time -- and then every cache entry, where
    they now walk only what was allocated since the last freeze (a few ms every 10 s). An
    app in a long-lived process that makes many apps (a test suite) leaves it off: what a
    frozen app leaves behind is not collected until the heap is looked at whole."""
    store = storage if storage is not None else Storage(settings.db)
    engine = Engine(settings, store)
    freezer = Freezer() if freeze_heap else None
    if freezer is not None:
        engine.after_swap = freezer.freeze
    ctx = Context(
        settings=settings,
        storage=store,
        engine=engine,
        explorer=explorer(settings.exploration, store),
        exposures=ExposureLog(store),
        metrics=RequestMetrics(),
        new_request_id=RequestIds(),
    )
    app = ServiceApp(
        title="tastebud",
        version=__version__,
        description="Recommendations over HTTP, learning from every event.",
        lifespan=functools.partial(_lifespan, ctx, freezer, storage is None),
        docs_url=None,  # FastAPI's pages load Swagger UI and ReDoc from a CDN: mount_docs
        redoc_url=None,
    )
    app.state.context = ctx  # what the routes read; the parts one by one for tests and tools
    app.state.settings = settings
    app.state.storage = store
    app.state.engine = engine
    app.state.exposures = ctx.exposures
    install_error_handlers(app)
    mount_ui(app)  # the web UI: /ui/ for users, /ui/admin
    mount_docs(app)  # /docs and /redoc, with their assets served from the package
    # the routes, in the order of the OpenAPI document; added to the app's own router, not
    # included as routers: FastAPI keeps an included router as one node of app.routes,
    # which document_errors, the fast path and the docs' route table read route by route
    health.add_routes(app.router)
    users.add_routes(app.router)
    items.add_routes(app.router)
    events.add_routes(app.router, settings)
    recommendations.add_routes(app.router, settings)
    admin.add_routes(app.router)
    experiments.add_routes(app.router)
    document_errors(app)
    app.openapi = lambda: exact_openapi(app)  # type: ignore[method-assign]
    app.add_middleware(
        Guard,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        allowed_origins=settings.allowed_origins,
        metrics=ctx.metrics,
    )
    app.fast_path = RecommendationsFastPath(
        route=next(r for r in app.routes if getattr(r, "path", None) == RECOMMEND_PATH),
        check_key=functools.partial(check_key, ctx, "read"),
        answer=functools.partial(recommendations.answer_user, ctx),
        metrics=ctx.metrics,
    )
    return app


@contextlib.asynccontextmanager
async def _lifespan(
    ctx: Context, freezer: Freezer | None, close_storage: bool, _: FastAPI
) -> AsyncIterator[None]:
    """Start-up (keys announced, schema migrated, the serving model loaded -- a first one
    trained in the background when none exists --, the exposure log, the follower of the
    database, the heap frozen with a ``freezer``, scheduled retraining) and shutdown, in
    the reverse order; the storage is closed when the app opened it."""
    engine = ctx.engine
    announce_keys(await run_in_threadpool(ctx.keys))
    await run_in_threadpool(ctx.storage.migrate)
    await run_in_threadpool(engine.start)
    if engine.snapshot.model is None:  # a first model from what is already stored
        retrain_in_background(engine)
    ctx.exposures.start()
    stop_following = threading.Event()
    threading.Thread(
        target=engine.follow, args=(stop_following,), name="tastebud-follow", daemon=True
    ).start()
    tasks = []
    if freezer is not None:
        freezer.freeze()  # before the first request: start-up's garbage goes first
        tasks.append(asyncio.create_task(_refreeze(engine, freezer)))
    ctx.ready.set()
    if ctx.settings.retrain_every_s > 0:
        tasks.append(asyncio.create_task(_scheduled_retrain(ctx)))
    try:
        yield
    finally:
        ctx.ready.clear()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        stop_following.set()
        await run_in_threadpool(ctx.exposures.close)
        if not await run_in_threadpool(engine.close):
            log.warning("shutdown: background work still runs after 60 s; stopping anyway")
        if close_storage:
            ctx.storage.close()


async def _refreeze(engine: Engine, freezer: Freezer) -> None:
    """:meth:`Freezer.refresh` on the event loop, between requests."""
    while True:
        await asyncio.sleep(runtime.REFREEZE_S)
        if not engine.training:
            freezer.refresh()


async def _scheduled_retrain(ctx: Context) -> None:
    engine = ctx.engine
    while True:
        await asyncio.sleep(ctx.settings.retrain_every_s)
        try:
            if await run_in_threadpool(engine.has_new_events):
                await run_in_threadpool(lambda: engine.retrain(wait=False))
        except TastebudError as err:
            log.info("scheduled retrain skipped: %s", err)
        except Exception:
            log.exception("scheduled retrain failed")
