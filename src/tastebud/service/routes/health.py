"""Health and metrics: ``/health/live``, ``/health/ready``, ``/metrics`` (open, no key)."""

from __future__ import annotations

import logging
import os
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import exc as sa_exc

from tastebud.service.routes.deps import Routes, context
from tastebud.service.runtime import error_response
from tastebud.service.schemas import ReadyOut

log = logging.getLogger("tastebud.service")


def add_routes(router: APIRouter) -> None:
    """The health routes (open: no key), added to ``router`` (the app's)."""
    routes = Routes(router, "health")
    routes.add("GET", "/health/live", live, None)
    routes.add("GET", "/health/ready", health_ready, None, ReadyOut)
    routes.add("GET", "/metrics", prometheus, None, include_in_schema=False)


def live() -> dict[str, Any]:
    """The process answers (``pid``: which one, with ``tastebud serve --workers N``)."""
    return {"status": "alive", "pid": os.getpid()}


def health_ready(request: Request) -> JSONResponse:
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
    ctx = context(request)
    if not ctx.ready.is_set():
        return error_response(503, "starting", "the service is starting")
    try:
        ctx.storage.schema_version()
    except sa_exc.SQLAlchemyError as err:  # the database went away
        log.warning("readiness: database unreachable: %s", err)
        return error_response(503, "database_unavailable", "the database does not answer")
    engine = ctx.engine
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


def prometheus(request: Request) -> Response:
    registry = context(request).metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
