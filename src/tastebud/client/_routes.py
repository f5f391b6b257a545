"""Every route of the service, described once: what to send and how to read the answer.

A function of :class:`_Routes` returns a :class:`_Call`; :mod:`tastebud.client._clients`
makes it a method of both clients, with this function's signature and docstring.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Literal, TypeVar, Unpack
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter
from typing_extensions import TypedDict  # pydantic reads typing's only from Python 3.12

from tastebud.service.schemas import (
    BatchOut,
    Deleted,
    EventIn,
    EventOut,
    ExperimentOut,
    ExplorationOut,
    FeedbackOut,
    ItemOut,
    ModelVersionOut,
    ReadyOut,
    RecommendationList,
    ReportOut,
    RetrainOut,
    SimilarList,
    StatsOut,
    Stored,
    UserOut,
    Variant,
)

T = TypeVar("T")


class _Unset(enum.Enum):
    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


#: "Not given": the field keeps its stored value (``None`` clears a title).
UNSET: Final = _Unset.UNSET


class Live(TypedDict):
    """``GET /health/live`` (the service declares no response model for it)."""

    status: str
    pid: int


class ListOptions(TypedDict, total=False):
    """Per-request pipeline settings of a recommendation list (the service's defaults where
    not given); the same for a user's list, a session's and an onboarding's.

    include_categories, exclude_categories: only / no items of these categories.
    filters: attribute predicates such as ``"year>=1990"`` or ``"genre=jazz"`` (all must hold).
    diversity: MMR trade-off, 0 (relevance only) to 1. freshness: boost of brand-new items,
    0 to 1000. max_per_category: at most this many items of one category. generators: the
    candidate generators to use (``model``, ``item_to_item``, ``demographic``, ``popular``,
    ``new``).
    """

    include_categories: Sequence[str]
    exclude_categories: Sequence[str]
    filters: Sequence[str]
    diversity: float
    freshness: float
    max_per_category: int
    generators: Sequence[str]


_DEFAULT_TIMEOUT: Final = object()


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One request to the service and how to read its answer."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    params: list[tuple[str, str]] = field(default_factory=list)
    json: Any = None
    #: sending it twice stores what sending it once does (retried on timeouts and 5xx)
    safe: bool = False
    timeout: Any = _DEFAULT_TIMEOUT


@functools.cache
def _json(shape: Any) -> Callable[[httpx.Response], Any]:
    """Read a JSON answer as ``shape`` (a pydantic model, list of them or a TypedDict);
    built once per shape."""
    adapter: TypeAdapter[Any] = TypeAdapter(shape)
    return lambda response: adapter.validate_json(response.content)


def _segment(value: str) -> str:
    """``value`` as one path segment (``/``, ``?``, ``%``, spaces, dots... escaped)."""
    if value in (".", ".."):
        return value.replace(".", "%2E")
    return quote(value, safe="")


def _query(**values: Any) -> list[tuple[str, str]]:
    """Query parameters, leaving out None; sequences repeat the name; booleans as true/false."""
    params = []
    for name, value in values.items():
        if value is None:
            continue
        items = value if isinstance(value, list | tuple) else [value]
        for item in items:
            text = ("true" if item else "false") if isinstance(item, bool) else str(item)
            params.append((name, text))
    return params


def _event(event: EventIn | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(event, EventIn):
        return event.model_dump(exclude_none=True)
    return dict(event)


def _strings(values: str | Iterable[str]) -> list[str]:
    """A list of texts; one text is one value (not its characters)."""
    return [values] if isinstance(values, str) else list(values)


def _options_body(options: ListOptions) -> dict[str, Any]:
    body: dict[str, Any] = dict(options)
    for name in ("include_categories", "exclude_categories", "filters", "generators"):
        if name in body:
            body[name] = _strings(body[name])
    return body


class _Routes:
    """Every route, described once: each function returns the :class:`_Call` to send.
    Their docstrings and signatures are the clients' methods'."""

    # -- users ------------------------------------------------------------------------------
    @staticmethod
    def put_user(user_id: str, attributes: Mapping[str, Any] | None = None) -> _Call[UserOut]:
        """Create a user, or replace their attributes (``attributes`` given)."""
        body = None if attributes is None else {"attributes": dict(attributes)}
        return _Call("PUT", f"/users/{_segment(user_id)}", _json(UserOut), json=body, safe=True)

    @staticmethod
    def get_user(user_id: str) -> _Call[UserOut]:
        """A user (404 ``not_found`` when unknown)."""
        return _Call("GET", f"/users/{_segment(user_id)}", _json(UserOut), safe=True)

    @staticmethod
    def list_users(q: str | None = None, limit: int = 100, offset: int = 0) -> _Call[list[UserOut]]:
        """Users ordered by id, ``limit`` (at most 1000) from ``offset``; with ``q``, only
        those whose id starts with it."""
        params = _query(q=q, limit=limit, offset=offset)
        return _Call("GET", "/users", _json(list[UserOut]), params=params, safe=True)

    @staticmethod
    def delete_user(user_id: str) -> _Call[Deleted]:
        """Delete a user with all their events and experiment logs."""
        return _Call("DELETE", f"/users/{_segment(user_id)}", _json(Deleted))

    @staticmethod
    def user_events(user_id: str, limit: int = 100) -> _Call[list[EventOut]]:
        """The user's latest ``limit`` events, oldest first (none for an unknown user)."""
        path = f"/users/{_segment(user_id)}/events"
        return _Call("GET", path, _json(list[EventOut]), params=_query(limit=limit), safe=True)

    # -- items ------------------------------------------------------------------------------
    @staticmethod
    def put_item(
        item_id: str,
        *,
        title: str | Literal[_Unset.UNSET] | None = UNSET,
        attributes: Mapping[str, Any] | Literal[_Unset.UNSET] = UNSET,
        available: bool | Literal[_Unset.UNSET] = UNSET,
    ) -> _Call[ItemOut]:
        """Create an item (available unless told otherwise), or change the fields given; the
        others keep their values (``title=None`` clears the title)."""
        body = _item_fields(title, attributes, available)
        return _Call("PUT", f"/items/{_segment(item_id)}", _json(ItemOut), json=body, safe=True)

    @staticmethod
    def patch_item(
        item_id: str,
        *,
        title: str | Literal[_Unset.UNSET] | None = UNSET,
        attributes: Mapping[str, Any] | Literal[_Unset.UNSET] = UNSET,
        available: bool | Literal[_Unset.UNSET] = UNSET,
    ) -> _Call[ItemOut]:
        """Change some fields of an existing item (404 when unknown); ``available=False``
        takes it out of every list at once."""
        body = _item_fields(title, attributes, available)
        return _Call("PATCH", f"/items/{_segment(item_id)}", _json(ItemOut), json=body, safe=True)

    @staticmethod
    def get_item(item_id: str) -> _Call[ItemOut]:
        """An item (404 ``not_found`` when unknown)."""
        return _Call("GET", f"/items/{_segment(item_id)}", _json(ItemOut), safe=True)

    @staticmethod
    def list_items(q: str | None = None, limit: int = 100, offset: int = 0) -> _Call[list[ItemOut]]:
        """Items whose id or title contains ``q`` (all without it), ``limit`` from
        ``offset``."""
        params = _query(q=q, limit=limit, offset=offset)
        return _Call("GET", "/items", _json(list[ItemOut]), params=params, safe=True)

    @staticmethod
    def delete_item(item_id: str) -> _Call[Deleted]:
        """Delete an item and its events."""
        return _Call("DELETE", f"/items/{_segment(item_id)}", _json(Deleted))

    # -- events -----------------------------------------------------------------------------
    @staticmethod
    def add_event(
        user_id: str,
        item_id: str,
        type: str,
        *,
        value: float | None = None,
        ts: float | None = None,
        client_event_id: str | None = None,
        request_id: str | None = None,
    ) -> _Call[Stored]:
        """Store one event (``type``: view, click, like, purchase, rating with its
        ``value``, dislike... as the service allows); the user's next list reflects it.

        ``ts`` is unix seconds (default: now). ``client_event_id`` makes it idempotent: a
        repeat is answered ``duplicate=True`` with the stored event's ``seq``, and only then
        is the event sent again after a timeout. ``request_id`` names the list the item was
        picked from (its feedback, for experiments)."""
        body = {
            "user_id": user_id,
            "item_id": item_id,
            "type": type,
            "value": value,
            "ts": ts,
            "client_event_id": client_event_id,
            "request_id": request_id,
        }
        body = {name: v for name, v in body.items() if v is not None}
        safe = client_event_id is not None
        return _Call("POST", "/events", _json(Stored), json=body, safe=safe)

    @staticmethod
    def add_events(events: Iterable[EventIn | Mapping[str, Any]]) -> _Call[BatchOut]:
        """Store many events in one transaction, all or none (dicts with ``add_event``'s
        fields, or the service's ``EventIn``). Sent again after a timeout only when every
        event has a ``client_event_id``."""
        rows = [_event(event) for event in events]
        safe = all(row.get("client_event_id") is not None for row in rows)
        body = {"events": rows}
        return _Call("POST", "/events/batch", _json(BatchOut), json=body, safe=safe)

    # -- recommendations --------------------------------------------------------------------
    @staticmethod
    def recommend(
        user_id: str,
        k: int | None = None,
        *,
        explain: bool = False,
        **options: Unpack[ListOptions],
    ) -> _Call[RecommendationList]:
        """The user's top ``k`` (default: the service's ``default_k``) from their events up
        to now; ``explain=True`` adds why each item is there. ``options``: the pipeline's
        per-request settings (:class:`ListOptions`)."""
        generators = options.get("generators")
        params = _query(
            k=k,
            explain=explain or None,
            include_categories=_strings(options.get("include_categories", ())),
            exclude_categories=_strings(options.get("exclude_categories", ())),
            filter=_strings(options.get("filters", ())),
            diversity=options.get("diversity"),
            freshness=options.get("freshness"),
            max_per_category=options.get("max_per_category"),
            generators=None if generators is None else ",".join(_strings(generators)),
        )
        path = f"/users/{_segment(user_id)}/recommendations"
        return _Call("GET", path, _json(RecommendationList), params=params, safe=True)

    @staticmethod
    def recommend_session(
        items: Sequence[str],
        k: int | None = None,
        *,
        explain: bool = False,
        **options: Unpack[ListOptions],
    ) -> _Call[RecommendationList]:
        """Top ``k`` for an anonymous session given by its recent items, oldest first
        (stores nothing)."""
        body = {"items": _strings(items), "k": k, "explain": explain, **_options_body(options)}
        return _Call("POST", "/recommendations", _json(RecommendationList), json=body, safe=True)

    @staticmethod
    def onboard(
        user_id: str,
        *,
        liked_items: Sequence[str] = (),
        attributes: Mapping[str, Any] | None = None,
        k: int | None = None,
        explain: bool = True,
        **options: Unpack[ListOptions],
    ) -> _Call[RecommendationList]:
        """A new user's first list from a few liked items and/or attributes (age, city...):
        the attributes are stored, the likes stored as ``like`` events (idempotent)."""
        body: dict[str, Any] = {"liked_items": _strings(liked_items), "k": k, "explain": explain}
        if attributes is not None:
            body["attributes"] = dict(attributes)
        body.update(_options_body(options))
        path = f"/users/{_segment(user_id)}/onboarding"
        return _Call("POST", path, _json(RecommendationList), json=body, safe=True)

    @staticmethod
    def feedback(
        request_id: str, user_id: str, item_id: str, type: str, *, ts: float | None = None
    ) -> _Call[FeedbackOut]:
        """An outcome of a list (its ``request_id``) that is not an event (``skip``,
        ``dismiss``...): counted by experiment and exploration reports, not trained on.
        Stored once per list, user, item and type."""
        body: dict[str, Any] = {
            "request_id": request_id,
            "user_id": user_id,
            "item_id": item_id,
            "type": type,
        }
        if ts is not None:
            body["ts"] = ts
        return _Call("POST", "/feedback", _json(FeedbackOut), json=body, safe=True)

    @staticmethod
    def similar_items(item_id: str, k: int | None = None) -> _Call[SimilarList]:
        """The items most similar to one (popular items when the model cannot tell)."""
        path = f"/items/{_segment(item_id)}/similar"
        return _Call("GET", path, _json(SimilarList), params=_query(k=k), safe=True)

    # -- admin ------------------------------------------------------------------------------
    @staticmethod
    def retrain(wait: bool = False, *, timeout: float | None = 600.0) -> _Call[RetrainOut]:
        """Train a new model version from every event and serve it. ``wait=True`` answers
        with the version once it serves (409 ``conflict`` with too few events), waiting at
        most ``timeout`` seconds (None: no limit); otherwise ``status`` is ``started`` (or
        ``already training``) at once."""
        params = _query(wait=wait)
        limit = timeout if wait else _DEFAULT_TIMEOUT
        return _Call("POST", "/admin/retrain", _json(RetrainOut), params=params, timeout=limit)

    @staticmethod
    def models() -> _Call[list[ModelVersionOut]]:
        """Every trained version, oldest first, with its offline metrics."""
        return _Call("GET", "/admin/models", _json(list[ModelVersionOut]), safe=True)

    @staticmethod
    def activate_model(version_id: int) -> _Call[ModelVersionOut]:
        """Serve an earlier version again (a rollback)."""
        path = f"/admin/models/{int(version_id)}/activate"
        return _Call("POST", path, _json(ModelVersionOut), safe=True)

    @staticmethod
    def stats() -> _Call[StatsOut]:
        """Counts of users, items and events, the served version, cache hits."""
        return _Call("GET", "/admin/stats", _json(StatsOut), safe=True)

    # -- experiments ------------------------------------------------------------------------
    @staticmethod
    def start_experiment(
        name: str, variants: Sequence[Variant | Mapping[str, Any]]
    ) -> _Call[ExperimentOut]:
        """Start an A/B test (stopping the running one). Each variant has a ``name``, a
        ``share`` of the users (relative: scaled to add up to 1), optionally a ``model_version`` and
        ``pipeline`` settings; plain dicts or the service's ``Variant``."""
        rows = [
            v.model_dump(exclude_none=True) if isinstance(v, Variant) else dict(v) for v in variants
        ]
        body = {"name": name, "variants": rows}
        return _Call("POST", "/admin/experiments", _json(ExperimentOut), json=body)

    @staticmethod
    def experiments() -> _Call[list[ExperimentOut]]:
        """Every experiment, running or stopped."""
        return _Call("GET", "/admin/experiments", _json(list[ExperimentOut]), safe=True)

    @staticmethod
    def stop_experiment(name: str) -> _Call[ExperimentOut]:
        """Stop an experiment (lists go back to the active version)."""
        path = f"/admin/experiments/{_segment(name)}/stop"
        return _Call("POST", path, _json(ExperimentOut))

    @staticmethod
    def experiment_report(
        name: str, outcome: str | None = None, alpha: float = 0.05
    ) -> _Call[ReportOut]:
        """Per-variant exposures and the share of exposed users with an ``outcome``
        (feedback or event type; default click), with a significance test at ``alpha``."""
        path = f"/admin/experiments/{_segment(name)}/report"
        params = _query(outcome=outcome, alpha=alpha)
        return _Call("GET", path, _json(ReportOut), params=params, safe=True)

    @staticmethod
    def exploration() -> _Call[ExplorationOut]:
        """How the exploration slot's items were answered."""
        return _Call("GET", "/admin/exploration", _json(ExplorationOut), safe=True)

    # -- health -----------------------------------------------------------------------------
    @staticmethod
    def live() -> _Call[Live]:
        """The process answers (``pid``: which one, with several workers)."""
        return _Call("GET", "/health/live", _json(Live), safe=True)

    @staticmethod
    def ready() -> _Call[ReadyOut]:
        """Started with its database answering (else 503 ``starting`` or
        ``database_unavailable``); says what is served (``model_version``: None before the
        first model)."""
        return _Call("GET", "/health/ready", _json(ReadyOut), safe=True)

    @staticmethod
    def metrics() -> _Call[str]:
        """The Prometheus metrics, as text."""
        return _Call("GET", "/metrics", _text, safe=True)


def _text(response: httpx.Response) -> str:
    return response.text


def _item_fields(title: Any, attributes: Any, available: Any) -> dict[str, Any]:
    given = {"title": title, "attributes": attributes, "available": available}
    body = {name: value for name, value in given.items() if value is not UNSET}
    if isinstance(body.get("attributes"), Mapping):
        body["attributes"] = dict(body["attributes"])
    return body
