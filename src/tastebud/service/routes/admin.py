"""Admin: retrain, the model versions (and a rollback), the service's counts. Every route
asks for the admin key."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi import Path as FastPath
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tastebud.errors import TastebudError
from tastebud.service.engine import Engine
from tastebud.service.routes.deps import Routes, admin_key, context
from tastebud.service.schemas import ModelVersionOut, RetrainOut, RowId, StatsOut

log = logging.getLogger("tastebud.service")


def add_routes(router: APIRouter) -> None:
    """The admin routes, added to ``router`` (the app's)."""
    routes = Routes(router, "admin")
    started = {202: {"model": RetrainOut, "description": "Started, or already training"}}
    routes.add("POST", "/admin/retrain", retrain, admin_key, RetrainOut, responses=started)
    routes.add("GET", "/admin/models", models, admin_key, list[ModelVersionOut])
    routes.add("POST", "/admin/models/{version_id}/activate", activate, admin_key, ModelVersionOut)
    routes.add("GET", "/admin/stats", stats, admin_key, StatsOut)


def retrain_in_background(engine: Engine) -> None:
    """Starts a retrain in a thread of its own (skipped while one runs; a refusal, such as
    too few events, is logged)."""

    def background() -> None:
        try:
            if engine.retrain(wait=False) is None:
                log.info("retrain skipped: one is already running")
        except TastebudError as err:
            log.info("retrain refused: %s", err)
        except Exception:
            log.exception("retrain failed")

    threading.Thread(target=background, name="tastebud-retrain", daemon=True).start()


async def retrain(request: Request, wait: bool = False) -> JSONResponse:
    """Train a new version from all events and swap it in. ``wait=true`` answers with
    the version when done (409 with too few events); otherwise 202 at once."""
    engine = context(request).engine
    if wait:
        version = await run_in_threadpool(engine.retrain)
        return JSONResponse({"status": "done", "version": version}, 200)
    if engine.training:
        return JSONResponse({"status": "already training"}, 202)

    retrain_in_background(engine)
    return JSONResponse({"status": "started"}, 202)


def models(request: Request) -> Sequence[Mapping[str, Any]]:
    """Every trained version, oldest first, with its offline metrics."""
    return context(request).storage.list_model_versions()


def activate(request: Request, version_id: Annotated[RowId, FastPath()]) -> Mapping[str, Any]:
    """Serve an earlier version again (a rollback)."""
    return context(request).engine.activate(version_id)


def stats(request: Request) -> dict[str, Any]:
    ctx = context(request)
    store, engine = ctx.storage, ctx.engine
    version = engine.snapshot.version
    experiment = engine.running_experiment()
    return {
        "users": store.count_users(),
        "items": store.count_items(),
        "events": store.count_events(),
        "model_version": None if version is None else version["id"],
        "training": engine.training,
        "experiment": None if experiment is None else experiment["name"],
        "exploration": ctx.settings.exploration.method,
        "list_cache": {"hits": engine.list_cache_hits, "misses": engine.list_cache_misses},
        "state_cache": {
            "hits": engine.state_cache_hits,
            "misses": engine.state_cache_misses,
        },
    }
