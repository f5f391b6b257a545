"""Recommendations: a user's list (also answered by the fast path in front of the app,
through :func:`answer_user`), an anonymous session's, a new user's onboarding, feedback on
a list, and similar items.

Every list is made by :func:`serve`: the pipeline in the user's experiment variant, the
exploration slot, the answer's rows, the exposures logged. The routes' types that depend
on the settings (``max_k``) are made per app: see :func:`add_routes`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import QueryParams

from tastebud.errors import InvalidInputError, TastebudError, UnknownIdError
from tastebud.pipeline import Candidate, Filters, History, PipelineSettings, explain_items
from tastebud.service.engine import Snapshot
from tastebud.service.experiments import assign
from tastebud.service.routes.deps import (
    Context,
    Routes,
    context,
    merged,
    read_key,
    typed,
    write_key,
)
from tastebud.service.routes.events import store_events
from tastebud.service.runtime import RECOMMEND_PATH
from tastebud.service.schemas import (
    EventIn,
    FeedbackIn,
    FeedbackOut,
    OnboardingIn,
    PathId,
    RecommendationList,
    SessionIn,
    SimilarList,
    Stages,
    recommend_query,
    recommend_query_docs,
    url_int,
    with_max_k,
)
from tastebud.service.settings import Settings

log = logging.getLogger("tastebud.service")


def add_routes(router: APIRouter, settings: Settings) -> None:
    """The recommendation routes, added to ``router`` (the app's), their list lengths
    bounded by this app's ``max_k`` (the query's documentation, the bodies' and
    ``/similar``'s ``k``)."""
    max_k = settings.max_k
    query = {"parameters": recommend_query_docs(max_k)}
    session = typed(recommend_session, body=with_max_k(SessionIn, max_k))
    onboard = typed(onboarding, body=with_max_k(OnboardingIn, max_k))
    similar_to = typed(similar, k=Annotated[url_int(1, max_k) | None, Query()])
    routes = Routes(router, "recommendations")
    answer = RecommendationList
    routes.add("GET", RECOMMEND_PATH, recommend_user, read_key, answer, openapi_extra=query)
    routes.add("POST", "/recommendations", session, read_key, answer)
    routes.add("POST", "/users/{user_id}/onboarding", onboard, write_key, answer)
    routes.add("POST", "/feedback", feedback, write_key, FeedbackOut, status_code=201)
    routes.add("GET", "/items/{item_id}/similar", similar_to, read_key, SimilarList)


# -- the routes ------------------------------------------------------------------------------
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
    return answer_user(context(request), user_id, request.query_params)


def answer_user(ctx: Context, user_id: str, query: QueryParams) -> JSONResponse:
    """The answer of :func:`recommend_user`, and of the fast path (given this app's
    ``ctx``)."""
    k, explain, stages = recommend_query(query, ctx.settings.max_k)
    state = ctx.engine.user_state(user_id)
    return JSONResponse(serve(ctx, user_id, state, list_length(ctx, k), explain, stages))


def recommend_session(request: Request, body: SessionIn) -> JSONResponse:
    """Top-k for an anonymous session given by its items (stores nothing)."""
    ctx = context(request)
    state = ctx.engine.session_state(body.items)
    return JSONResponse(serve(ctx, None, state, list_length(ctx, body.k), body.explain, body))


def onboarding(request: Request, user_id: PathId, body: OnboardingIn) -> JSONResponse:
    """A new user's first list from a few liked items and/or attributes (age, city...):
    the attributes are stored, the likes stored as ``like`` events (idempotent: sending
    the same onboarding twice stores them once)."""
    ctx = context(request)
    k = list_length(ctx, body.k)
    store = ctx.storage
    if body.attributes is not None or store.get_user(user_id) is None:
        store.upsert_user(user_id, body.attributes)
    if body.liked_items:
        store_events(
            ctx,
            [
                EventIn(
                    user_id=user_id,
                    item_id=item,
                    type="like",
                    client_event_id=onboarding_event_id(user_id, item),
                )
                for item in dict.fromkeys(body.liked_items)
            ],
            lambda n: f"liked_items[{n}]: ",
        )
    state = ctx.engine.user_state(user_id)
    return JSONResponse(serve(ctx, user_id, state, k, body.explain, body))


def feedback(request: Request, body: FeedbackIn) -> Mapping[str, Any]:
    """An outcome of a list (``request_id``) that is not an event (``skip``,
    ``dismiss``...): counted in experiment and exploration reports, not trained on."""
    return context(request).storage.log_feedback(body.model_dump())


def similar(
    request: Request, item_id: PathId, k: Annotated[int | None, Query()] = None
) -> dict[str, Any]:
    """Items most similar to one, from the best source that can tell (``source``, and
    ``basis`` says what the scores are): the serving model's learned similarity; the
    catalogue's metadata (titles, attributes; cosine of TF-IDF or attribute vectors)
    for an item the model has not learned, before the first model exists, or under a
    model without item similarities; popular items, labelled so and scored as a share
    of the most popular one's events, only when neither can tell. Unavailable items are
    left out."""
    ctx = context(request)
    k = list_length(ctx, k)
    if ctx.storage.get_item(item_id) is None:
        raise UnknownIdError(f"unknown item {item_id!r}")
    engine = ctx.engine
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


# -- a list ----------------------------------------------------------------------------------
def list_length(ctx: Context, k: int | None) -> int:
    """The ``k`` asked for, else ``default_k``; above ``max_k`` is a 422."""
    settings = ctx.settings
    k = settings.default_k if k is None else k
    if k > settings.max_k:
        raise InvalidInputError(f"k={k} is above the limit max_k={settings.max_k}")
    return k


def serve(
    ctx: Context,
    user_id: str | None,
    state: History,
    k: int,
    explain: bool,
    stages: Stages | None,
) -> dict[str, Any]:
    """Run the pipeline (in the user's experiment variant, with exploration) and log
    what is shown."""
    engine = ctx.engine
    experiment = engine.running_experiment() if user_id is not None else None
    variant: dict[str, Any] | None = None
    snapshot = engine.snapshot
    base = ctx.settings.pipeline
    if experiment is not None and user_id is not None:
        variant = assign(experiment, user_id)
        snapshot = _variant_snapshot(ctx, experiment, variant) or snapshot
        base = _variant_pipeline(experiment, variant, base)
    options = _options(base, stages)
    explore = user_id is not None and ctx.explorer.on

    def attributes() -> dict[str, Any] | None:
        user = ctx.storage.get_user(user_id) if user_id is not None else None
        return None if user is None else user["attributes"]

    result = engine.recommend(
        state,
        k,
        snapshot=snapshot,
        options=options,
        filters=_filters(stages),
        attributes=attributes,
        keep_rest=explore,
    )
    chosen = list(result.chosen)
    if explore:
        chosen = ctx.explorer.explore(chosen, result.rest, k)
    request_id = ctx.new_request_id()
    version = result.snapshot.version
    version_id = None if version is None else int(version["id"])
    out = _rows(ctx, chosen, result.rows, state, result.snapshot, explain)
    if user_id is not None and chosen:
        now = time.time()
        tested = None if experiment is None else experiment["name"]
        arm = None if variant is None else variant["name"]
        ctx.exposures.add_rows(  # in EXPOSURE_COLUMNS order; ids checked on the way in
            (request_id, user_id, row["item"], pos, row["source"], version_id, tested, arm, now)
            for pos, row in enumerate(out)
        )
    ctx.metrics.recommendations.labels(out[0]["source"] if out else "empty").inc()
    return {
        "user": user_id,
        "request_id": request_id,
        "model_version": version_id,
        "experiment": None if experiment is None else experiment["name"],
        "variant": None if variant is None else variant["name"],
        "items": out,
    }


def _variant_snapshot(
    ctx: Context, experiment: dict[str, Any], variant: dict[str, Any]
) -> Snapshot | None:
    """The snapshot an experiment's ``variant`` serves; ``None`` (logged) when its files
    are gone: the active version serves instead."""
    try:
        return ctx.engine.snapshot_for(variant.get("model_version"))
    except TastebudError as err:
        log.error("experiment %s: %s", experiment["name"], err)
        return None


def _variant_pipeline(
    experiment: dict[str, Any], variant: dict[str, Any], base: PipelineSettings
) -> PipelineSettings:
    """``base`` with an experiment ``variant``'s pipeline settings; ``base`` itself (logged)
    when they are invalid now (stored before today's bounds, or by hand)."""
    if not variant.get("pipeline"):
        return base
    try:
        return merged(base, variant["pipeline"], "experiment pipeline.")
    except InvalidInputError as err:
        log.error("experiment %s: variant %s: %s", experiment["name"], variant, err)
        return base


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
    return merged(base, overrides, "")


def _filters(stages: Stages | None) -> Filters:
    if stages is None:
        return Filters()
    return Filters.build(stages.include_categories, stages.exclude_categories, stages.filters)


def _rows(
    ctx: Context,
    chosen: list[Candidate],
    rows: dict[str, dict[str, Any]],
    state: History,
    snapshot: Snapshot,
    explain: bool,
) -> list[dict[str, Any]]:
    engine = ctx.engine
    because = explain_items(chosen, snapshot, state.values) if explain else {}
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


_REASONS = {
    "popular": "popular with everyone right now",
    "demographic": "liked by people like you",
    "new": "new arrival",
    "item_to_item": "similar to what you liked",
    "model": "matches your history",
}


def onboarding_event_id(user_id: str, item_id: str) -> str:
    """The ``client_event_id`` of an onboarding like: the same for the same pair (sending an
    onboarding twice stores it once), within the id length limit for any two ids."""
    pair = json.dumps([user_id, item_id], ensure_ascii=False).encode("utf-8", "surrogatepass")
    return "onboarding:" + hashlib.sha256(pair).hexdigest()
