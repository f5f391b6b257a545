"""Experiments: start an A/B test, list, stop, report; how exploration's items were
answered. Every route asks for the admin key."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from tastebud.errors import TastebudError
from tastebud.pipeline.explore import EXPLORATION_SOURCE
from tastebud.service.experiments import report
from tastebud.service.routes.deps import Routes, admin_key, context, merged
from tastebud.service.schemas import (
    ExperimentIn,
    ExperimentOut,
    ExplorationOut,
    PathId,
    QueryText,
    ReportOut,
    UrlShare,
)


def add_routes(router: APIRouter) -> None:
    """The experiment routes, added to ``router`` (the app's)."""
    routes = Routes(router, "experiments")
    routes.add(
        "POST", "/admin/experiments", start_experiment, admin_key, ExperimentOut, status_code=201
    )
    routes.add("GET", "/admin/experiments", experiments, admin_key, list[ExperimentOut])
    routes.add("POST", "/admin/experiments/{name}/stop", stop_experiment, admin_key, ExperimentOut)
    routes.add("GET", "/admin/experiments/{name}/report", experiment_report, admin_key, ReportOut)
    routes.add("GET", "/admin/exploration", exploration, admin_key, ExplorationOut)


def start_experiment(request: Request, body: ExperimentIn) -> Mapping[str, Any]:
    """Start an A/B test (stops the running one): users are split between the variants
    by a stable hash of their id; each variant serves a model version (or the active
    one) and may override pipeline settings. Shares are relative (scaled to add up to
    1); two variants with one name are a conflict (409)."""
    ctx = context(request)
    twice = body.duplicate_names()
    if twice:
        raise TastebudError(f"variant names must be different: {', '.join(twice)} twice")
    for variant in body.variants:
        if variant.model_version is not None:
            ctx.engine.snapshot_for(variant.model_version)  # 404 unknown, 409 unservable
        if variant.pipeline:
            merged(ctx.settings.pipeline, variant.pipeline, f"variant {variant.name}: pipeline.")
    row = ctx.storage.create_experiment(body.name, [v.model_dump() for v in body.variants])
    ctx.engine.forget_experiment_cache()
    return row


def experiments(request: Request) -> Sequence[Mapping[str, Any]]:
    return context(request).storage.list_experiments()


def stop_experiment(request: Request, name: PathId) -> Mapping[str, Any]:
    ctx = context(request)
    row = ctx.storage.stop_experiment(name)
    ctx.engine.forget_experiment_cache()
    return row


def experiment_report(
    request: Request,
    name: PathId,
    outcome: Annotated[QueryText | None, Query(min_length=1, max_length=64)] = None,
    alpha: Annotated[UrlShare, Query()] = 0.05,
) -> dict[str, Any]:
    """Per-variant exposures and the share of exposed users with an ``outcome``
    (feedback type, default click), with a significance test between variants."""
    ctx = context(request)
    ctx.exposures.flush()
    return report(ctx.storage, name, outcome, alpha)


def exploration(request: Request) -> dict[str, Any]:
    """How the exploration slot's items were answered."""
    ctx = context(request)
    ctx.exposures.flush()
    explore = ctx.settings.exploration
    per_item = ctx.storage.exploration_stats(EXPLORATION_SOURCE, explore.positive_feedback)
    shown = sum(n for n, _ in per_item.values())
    answered = sum(a for _, a in per_item.values())
    return {
        "method": explore.method,
        "items": len(per_item),
        "exposures": shown,
        "answered": answered,
        "rate": answered / shown if shown else None,
    }
