"""The HTTP API: ``create_app(settings)`` builds a FastAPI app with no module-level state.

Errors are JSON: ``{"error": {"type": ..., "message": ...}}`` (plus ``problems`` where the
problem has a place) with 4xx for the caller's mistakes (422 invalid parameter or body; 404
unknown id or route; 409 a conflict with what is stored, such as an event naming an unknown
item; 401/403 keys; 408/413/415 a body too slow, too large or not JSON), 503 when the
database does not answer, and a bare 500 without a traceback for our own bugs (logged with
the traceback). Every route documents these (:mod:`tastebud.service.schemas`).

Keys (``X-API-Key`` header, :mod:`tastebud.service.keys`): ``read_key`` guards reads when
set, ``api_key`` writes, ``admin_key`` (else ``api_key``) the admin endpoints; with none
configured an admin key is generated at the first start and guards writes and admin.

~960 lines, most of them ``create_app``'s closure holding the routes: splitting the routes
by area into module-level functions is issue 18, not done yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Body, Depends, FastAPI, Header, Query, Request
from fastapi import Path as FastPath
from fastapi.responses import JSONResponse, Response
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import (
    ValidationError,
)
from sqlalchemy import exc as sa_exc
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams

from tastebud import __version__
from tastebud.errors import InvalidInputError, TastebudError, UnknownIdError
from tastebud.service import runtime
from tastebud.service.engine import Engine, Snapshot, UserState
from tastebud.service.experiments import (
    EXPLORATION_SOURCE,
    Explorer,
    ExposureLog,
    assign,
    report,
)
from tastebud.service.keys import Keys
from tastebud.service.keys import announce as announce_keys
from tastebud.service.keys import resolve as access_keys
from tastebud.service.pipeline import (
    Candidate,
    Filters,
    PipelineSettings,
)
from tastebud.service.runtime import (
    RECOMMEND_PATH,
    Freezer,
    Guard,
    HTTPError,
    RecommendationsFastPath,
    RequestIds,
    RequestMetrics,
    ServiceApp,
    error_response,
    install_error_handlers,
)
from tastebud.service.schemas import (
    BatchOut,
    Deleted,
    EventBatch,
    EventIn,
    EventOut,
    EventsLimit,
    ExperimentIn,
    ExperimentOut,
    ExplorationOut,
    FeedbackIn,
    FeedbackOut,
    ItemIn,
    ItemOut,
    ItemPatch,
    Limit,
    ModelVersionOut,
    Offset,
    OnboardingIn,
    PathId,
    QueryText,
    ReadyOut,
    RecommendationList,
    ReportOut,
    RetrainOut,
    RowId,
    SessionIn,
    SimilarList,
    Stages,
    StatsOut,
    Stored,
    UrlShare,
    UserIn,
    UserOut,
    document_errors,
    event_bodies,
    exact_openapi,
    recommend_query,
    recommend_query_docs,
    url_int,
    with_max_k,
)
from tastebud.service.settings import Settings
from tastebud.service.storage import Storage
from tastebud.service.ui import mount_docs, mount_ui

log = logging.getLogger("tastebud.service")
_F = TypeVar("_F", bound=Callable[..., Any])


# -- the app ---------------------------------------------------------------------------------
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
    freezer = Freezer()
    if freeze_heap:
        engine.after_swap = freezer.freeze
    explorer = Explorer(settings.exploration, store)
    exposures = ExposureLog(store)
    new_request_id = RequestIds()
    metrics = RequestMetrics()
    ready = threading.Event()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        announce_keys(await run_in_threadpool(current_keys))
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
            if not await run_in_threadpool(engine.close):
                log.warning("shutdown: background work still runs after 60 s; stopping anyway")
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
        """:meth:`Freezer.refresh` on the event loop, between requests."""
        while True:
            await asyncio.sleep(runtime.REFREEZE_S)
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

    app = ServiceApp(
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
    install_error_handlers(app)
    mount_ui(app)  # the web UI: /ui/ for users, /ui/admin
    mount_docs(app)  # /docs and /redoc, with their assets served from the package

    # -- keys ------------------------------------------------------------------------------
    access: list[Keys] = []  # resolved once, at start-up (or by the first request)

    def current_keys() -> Keys:
        if not access:
            access.append(access_keys(settings))
        return access[0]

    def _key_check(level: str) -> Callable[[str | None], Awaitable[None]]:
        """A dependency: open when the key of ``level`` (read, write, admin) is unset, else
        that key or a stronger one must be sent. A coroutine, so FastAPI runs it on the
        event loop: a plain function would cost every request a hop to the thread pool and
        back."""

        async def check(
            x_api_key: Annotated[str | None, Header(description="API key")] = None,
        ) -> None:
            keys = current_keys()
            if getattr(keys, level) is None:
                return
            if x_api_key is None:
                raise HTTPError(401, "unauthorized", "this endpoint needs an X-API-Key header")
            sent = x_api_key.encode()
            # compare with every key (no early exit), so timing does not tell which matched
            matches = [secrets.compare_digest(sent, key) for key in keys.accepted(level)]
            if not any(matches):
                raise HTTPError(403, "forbidden", "the X-API-Key is not valid here")

        return check

    admin_key = Depends(_key_check("admin"))
    write_key = Depends(_key_check("write"))
    check_read_key = _key_check("read")
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
        When the active version's files cannot be loaded, it also says why and what is
        served instead ("model version 2 (als); the active model version 3 cannot be
        loaded (...); serving version 2 instead": ``engine.start_note``).
        ``pid``: which process answered, with ``tastebud serve --workers N``."""
        if not ready.is_set():
            return error_response(503, "starting", "the service is starting")
        try:
            store.schema_version()
        except sa_exc.SQLAlchemyError as err:  # the database went away
            log.warning("readiness: database unreachable: %s", err)
            return error_response(503, "database_unavailable", "the database does not answer")
        version = engine.snapshot.version
        training = engine.training
        note = engine.start_note
        if version is not None:
            serving = f"model version {version['id']} ({version['model']})"
        elif note is not None:
            serving = "popular items" + (" (a new model is training)" if training else "")
        elif training:
            serving = "popular items (no model yet; the first is training)"
        else:
            why = engine.retrain_problem
            serving = "popular items (no model yet" + (f": {why})" if why else ")")
        if note is not None:
            serving += f"; {note}"
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
    def put_user(user_id: PathId, body: Annotated[UserIn | None, Body()] = None) -> dict[str, Any]:
        """Create a user (attributes optional) or replace their attributes."""
        return store.upsert_user(user_id, None if body is None else body.attributes)

    @app.get("/users/{user_id}", tags=["users"], dependencies=[read_key], response_model=UserOut)
    def get_user(user_id: PathId) -> dict[str, Any]:
        user = store.get_user(user_id)
        if user is None:
            raise UnknownIdError(f"unknown user {user_id!r}")
        return user

    @app.get("/users", tags=["users"], dependencies=[read_key], response_model=list[UserOut])
    def list_users(
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
    ) -> list[dict[str, Any]]:
        """Users ordered by id (code point order with ``q``), one page."""
        return store.list_users(limit=limit, offset=offset, prefix=q or None)

    @app.delete(
        "/users/{user_id}", tags=["users"], dependencies=[write_key], response_model=Deleted
    )
    def delete_user(user_id: PathId) -> dict[str, Any]:
        """Delete a user and everything stored of them (the right to be forgotten).

        In one transaction: their attributes, events (onboarding likes included),
        exposures and feedback. Exposures of lists still buffered are dropped first, and a
        list served just before the deletion logs none after it. No table keeps the id: the
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
        user = store.get_user(user_id)
        events = store.user_events(user_id)
        buffered = exposures.forget(user_id)
        if not store.delete_user(user_id, log=buffered > 0) and not buffered:
            raise UnknownIdError(f"unknown user {user_id!r}")
        engine.forget_user(user_id, events, None if user is None else user["attributes"])
        return {"deleted": user_id, "events": len(events)}

    @app.get(
        "/users/{user_id}/events",
        tags=["users"],
        dependencies=[read_key],
        response_model=list[EventOut],
    )
    def user_events(
        user_id: PathId, limit: Annotated[EventsLimit, Query()] = 100
    ) -> list[dict[str, Any]]:
        """The user's latest events, oldest first (404 for an unknown user)."""
        events = store.user_events(user_id, limit=limit)
        if not events and store.get_user(user_id) is None:
            raise UnknownIdError(f"unknown user {user_id!r}")
        for event in events:  # a row written around the API may hold NaN or infinity
            for field in ("value", "ts"):
                number = event[field]
                if number is not None and not math.isfinite(number):
                    event[field] = None
        return events

    # -- items -----------------------------------------------------------------------------
    @app.put("/items/{item_id}", tags=["items"], dependencies=[write_key], response_model=ItemOut)
    def put_item(item_id: PathId, body: Annotated[ItemIn | None, Body()] = None) -> dict[str, Any]:
        """Create an item (available unless told otherwise) or update the fields given."""
        fields = {} if body is None else body.model_dump(exclude_unset=True)
        clear_title = "title" in fields and fields["title"] is None
        item = store.upsert_item(item_id, **{k: v for k, v in fields.items() if v is not None})
        if clear_title:
            item = store.update_item(item_id, title=None)
        engine.catalog.put(item)
        return item

    @app.patch("/items/{item_id}", tags=["items"], dependencies=[write_key], response_model=ItemOut)
    def patch_item(item_id: PathId, body: ItemPatch) -> dict[str, Any]:
        """Change some fields of an item; ``available: false`` takes it out of every list
        at once (it keeps its events)."""
        fields = body.model_dump(exclude_unset=True)
        if "attributes" in fields and fields["attributes"] is None:
            fields["attributes"] = {}
        if "available" in fields and fields["available"] is None:
            del fields["available"]
        item = store.update_item(item_id, **fields)
        engine.catalog.put(item)
        return item

    @app.get("/items/{item_id}", tags=["items"], dependencies=[read_key], response_model=ItemOut)
    def get_item(item_id: PathId) -> dict[str, Any]:
        item = store.get_item(item_id)
        if item is None:
            raise UnknownIdError(f"unknown item {item_id!r}")
        return item

    @app.get("/items", tags=["items"], dependencies=[read_key], response_model=list[ItemOut])
    def list_items(
        q: Annotated[
            QueryText | None, Query(max_length=200, description="title/id contains")
        ] = None,
        limit: Annotated[Limit, Query()] = 100,
        offset: Annotated[Offset, Query()] = 0,
    ) -> list[dict[str, Any]]:
        return store.list_items(limit=limit, offset=offset, query=q)

    @app.delete(
        "/items/{item_id}", tags=["items"], dependencies=[write_key], response_model=Deleted
    )
    def delete_item(item_id: PathId) -> dict[str, Any]:
        """Delete an item and its events."""
        if not store.delete_item(item_id):
            raise UnknownIdError(f"unknown item {item_id!r}")
        engine.forget_item(item_id)
        engine.catalog.drop(item_id)
        return {"deleted": item_id}

    # -- events ----------------------------------------------------------------------------
    event_in, batch_in = event_bodies(settings)

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
    @_annotated(body=event_in)
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
    @_annotated(body=batch_in)
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
    session_body = with_max_k(SessionIn, settings.max_k)
    onboarding_body = with_max_k(OnboardingIn, settings.max_k)

    def _k(k: int | None) -> int:
        k = settings.default_k if k is None else k
        if k > settings.max_k:
            raise InvalidInputError(f"k={k} is above the limit max_k={settings.max_k}")
        return k

    def _options(base: PipelineSettings, stages: Stages | None) -> PipelineSettings:
        if stages is None:
            return base
        overrides: dict[str, Any] = {
            "diversity": stages.diversity,
            "freshness": stages.freshness,
            "max_per_category": stages.max_per_category,
        }
        if stages.generators is not None:
            names = stages.generators
            default = PipelineSettings().generators
            overrides["generators"] = {
                n: base.generators.get(n) or default[n] for n in dict.fromkeys(names)
            }
        return _merged(base, overrides, "")

    def _filters(stages: Stages | None) -> Filters:
        if stages is None:
            return Filters()
        return Filters.build(stages.include_categories, stages.exclude_categories, stages.filters)

    def _serve(
        user_id: str | None,
        state: UserState,
        k: int,
        explain: bool,
        stages: Stages | None,
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
                try:
                    base = _merged(base, variant["pipeline"], "experiment pipeline.")
                except InvalidInputError as err:  # stored before today's bounds, or by hand
                    log.error("experiment %s: variant %s: %s", experiment["name"], variant, err)
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
        openapi_extra={"parameters": recommend_query_docs(settings.max_k)},
    )
    async def recommend_user(user_id: PathId, request: Request) -> JSONResponse:
        """Top-k for a user from their events up to now: candidates from every generator,
        ranked by the model, filtered and re-ranked (see the pipeline settings); never items
        they interacted with, disliked, or unavailable ones. A user with no events gets what
        users with the same attributes liked, popular and new items.

        Runs on the event loop itself, not in the thread pool, and reads its query itself:
        the work is a millisecond or two of one indexed read and numpy, and the hop to a
        worker thread, FastAPI's per-parameter validation and the response model's second
        validation each cost a large share of that under load. (Requests reach it through
        :class:`RecommendationsFastPath`, which skips FastAPI's routing too; this route is
        what the API documents and what answers when the fast path passes a request on.)"""
        return _recommend_user(user_id, request.query_params)

    def _recommend_user(user_id: str, query: QueryParams) -> JSONResponse:
        k, explain, stages = recommend_query(query, settings.max_k)
        state = engine.user_state(user_id)
        return JSONResponse(_serve(user_id, state, _k(k), explain, stages))

    @app.post(
        "/recommendations",
        tags=["recommendations"],
        dependencies=[read_key],
        response_model=RecommendationList,
    )
    @_annotated(body=session_body)
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
    @_annotated(body=onboarding_body)
    def onboarding(user_id: PathId, body: OnboardingIn) -> JSONResponse:
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
                        client_event_id=_onboarding_event_id(user_id, item),
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
    @_annotated(k=Annotated[url_int(1, settings.max_k) | None, Query()])
    def similar(item_id: PathId, k: Annotated[int | None, Query()] = None) -> dict[str, Any]:
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
    @app.post(
        "/admin/retrain",
        tags=["admin"],
        dependencies=[admin_key],
        response_model=RetrainOut,
        responses={202: {"model": RetrainOut, "description": "Started, or already training"}},
    )
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
    def activate(
        version_id: Annotated[RowId, FastPath()],
    ) -> dict[str, Any]:
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
        one) and may override pipeline settings. Shares are relative (scaled to add up to
        1); two variants with one name are a conflict (409)."""
        twice = body.duplicate_names()
        if twice:
            raise TastebudError(f"variant names must be different: {', '.join(twice)} twice")
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
    def stop_experiment(name: PathId) -> dict[str, Any]:
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
        name: PathId,
        outcome: Annotated[QueryText | None, Query(min_length=1, max_length=64)] = None,
        alpha: Annotated[UrlShare, Query()] = 0.05,
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

    document_errors(app)
    app.openapi = lambda: exact_openapi(app)  # type: ignore[method-assign]
    app.add_middleware(
        Guard,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        allowed_origins=settings.allowed_origins,
        metrics=metrics,
    )
    app.fast_path = RecommendationsFastPath(
        route=next(r for r in app.routes if getattr(r, "path", None) == RECOMMEND_PATH),
        check_key=check_read_key,
        answer=_recommend_user,
        metrics=metrics,
    )
    return app


def _annotated(**types: Any) -> Callable[[_F], _F]:
    """Gives a route's parameters types made at run time (FastAPI reads them from
    ``__annotations__``; a local variable in a string annotation would not resolve)."""

    def mark(fn: _F) -> _F:
        fn.__annotations__.update(types)
        return fn

    return mark


def _onboarding_event_id(user_id: str, item_id: str) -> str:
    """The ``client_event_id`` of an onboarding like: the same for the same pair (sending an
    onboarding twice stores it once), within the id length limit for any two ids."""
    pair = json.dumps([user_id, item_id], ensure_ascii=False).encode("utf-8", "surrogatepass")
    return "onboarding:" + hashlib.sha256(pair).hexdigest()


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
