"""The service's HTTP contract: the request and answer models, the types of ids and
numbers in URLs and bodies, the one description of the recommendation query (its OpenAPI
parameters and its parser), the error answers every route documents, and the OpenAPI
document with the door's rules (:mod:`tastebud.rules`) written into it.

Everything a client needs to speak to the service and nothing that runs it: the app
(:mod:`tastebud.service.app`) and the Python client (:mod:`tastebud.client`) import these,
and importing them loads no model, engine or database code. One module (~760 lines) for
one idea: what the API accepts and answers, so its OpenAPI document comes from one place.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args
from urllib.parse import unquote

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    ValidationError,
    WithJsonSchema,
    create_model,
    field_validator,
)

from tastebud import rules
from tastebud.errors import InvalidInputError
from tastebud.pipeline.config import GENERATORS, PipelineSettings
from tastebud.pipeline.filters import FILTER_PATTERN
from tastebud.rules import RequestBody as _Body

if TYPE_CHECKING:
    from tastebud.service.settings import Settings


def _valid_id(value: str) -> str:
    problem = rules.id_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _path_id(value: Any) -> Any:
    """An id as it arrives in a path segment, percent-decoded (see :func:`_id_path`)."""
    return unquote(value) if isinstance(value, str) else value


#: An id in a body or a query: :func:`rules.id_problem`.
Id = Annotated[
    str,
    Field(
        min_length=1,
        max_length=rules.MAX_ID_LENGTH,
        description="Any text of 1 to 256 characters, not blank, without control characters",
        json_schema_extra={"pattern": rules.ID_PATTERN},
    ),
    AfterValidator(_valid_id),
]


def _valid_text(value: Any) -> Any:
    problem = rules.text_problem(value) if isinstance(value, str) else None
    if problem is not None:
        raise ValueError(problem)
    return value


#: Free text in a query (a search): :func:`rules.text_problem`.
QueryText = Annotated[str, AfterValidator(_valid_text)]

#: An id in a URL path: any :data:`Id`, percent-encoded (``a/b`` is ``a%2Fb``).
PathId = Annotated[
    Id,
    BeforeValidator(_path_id),
    Field(description="Any id, percent-encoded: a/b is a%2Fb, 50% is 50%25"),
]
_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)


def _ascii_integer(value: Any) -> Any:
    """A query or path integer as written: ASCII digits only (no spaces, no "5.0", no
    full-width or other scripts' digits, which ``int()`` would take)."""
    if isinstance(value, str) and not _INTEGER.fullmatch(value):
        raise ValueError("must be an integer written in ASCII digits")
    return value


def _ascii_decimal(value: Any) -> Any:
    """A query number as written: ASCII digits, a point and an exponent (no nan or inf)."""
    if isinstance(value, str) and not _DECIMAL.fullmatch(value):
        raise ValueError("must be a number written in ASCII digits")
    return value


def url_int(low: int, high: int) -> Any:
    """An integer in a URL (query or path), from ``low`` to ``high``. (The bounds go inside,
    before the digits check: given to ``Query()`` they would be checked all the same but
    documented as unknown keywords instead of ``minimum`` and ``maximum``.)"""
    return Annotated[int, Field(ge=low, le=high), _Digits]


_Digits = BeforeValidator(_ascii_integer)
Limit = Annotated[int, Field(ge=1, le=1000), _Digits]
EventsLimit = Annotated[int, Field(ge=1, le=10_000), _Digits]
Offset = Annotated[int, Field(ge=0, le=2**62), _Digits]
RowId = Annotated[int, Field(ge=1, le=rules.MAX_ROW_ID), _Digits]
#: A share in a URL query (strictly between 0 and 1).
UrlShare = Annotated[float, Field(gt=0, lt=1), BeforeValidator(_ascii_decimal)]
#: A candidate generator's name.
Generator = Literal["model", "item_to_item", "demographic", "popular", "new"]
assert get_args(Generator) == GENERATORS

#: Attributes: any JSON object (numbers finite, integers within 64 bits, valid text).
Attributes = dict[str, Any]


# -- bodies ----------------------------------------------------------------------------------


class UserIn(_Body):
    attributes: Attributes | None = Field(
        None, description="Replaces the stored ones (null or left out: kept as they are)"
    )


class ItemIn(_Body):
    """Creates the item, or updates the fields given (the others keep their values;
    ``"title": null`` clears the title)."""

    title: str | None = Field(None, max_length=1000)
    attributes: Attributes | None = Field(None, description="Replaces the stored ones")
    available: bool | None = None


class ItemPatch(_Body):
    """The fields to change (``"title": null`` clears the title, ``"attributes": null``
    the attributes)."""

    title: str | None = Field(None, max_length=1000)
    attributes: Attributes | None = Field(None, description="Replaces the stored ones")
    available: bool | None = Field(None, description="null: left as it is")


class EventIn(_Body):
    user_id: Id
    item_id: Id
    type: str = Field(min_length=1, max_length=64)
    value: float | None = Field(
        None,
        ge=-rules.MAX_ABS_VALUE,
        le=rules.MAX_ABS_VALUE,
        allow_inf_nan=False,
        description="a rating's value, a price...",
    )
    ts: float | None = Field(
        None, ge=0, le=rules.MAX_TS, allow_inf_nan=False, description="unix seconds"
    )
    client_event_id: Id | None = Field(None, description="idempotency key")
    request_id: Id | None = Field(
        None, description="The recommendation list the item was picked from (logs feedback too)"
    )


class EventBatch(_Body):
    events: list[EventIn]


class Stages(_Body):
    """Per-request pipeline settings (unset: the service's)."""

    include_categories: list[Annotated[str, Field(max_length=200)]] = Field(
        default_factory=list, max_length=100
    )
    exclude_categories: list[Annotated[str, Field(max_length=200)]] = Field(
        default_factory=list, max_length=100
    )
    filters: list[
        Annotated[str, Field(max_length=500, json_schema_extra={"pattern": FILTER_PATTERN})]
    ] = Field(default_factory=list, max_length=50, description="Attribute predicates: year>=1990")
    diversity: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    freshness: float | None = Field(None, ge=0, le=1000, allow_inf_nan=False)
    max_per_category: int | None = Field(None, ge=1, le=10**9)
    generators: list[Generator] | None = Field(
        None, min_length=1, max_length=10, description="The candidate generators to run"
    )


class SessionIn(Stages):
    items: list[Id] = Field(
        default_factory=list, max_length=1000, description="Recent items, oldest first"
    )
    k: int | None = Field(None, ge=1)
    explain: bool = False


class OnboardingIn(Stages):
    liked_items: list[Id] = Field(default_factory=list, max_length=100)
    attributes: Attributes | None = Field(None, description="Replaces the stored ones")
    k: int | None = Field(None, ge=1)
    explain: bool = True


class FeedbackIn(_Body):
    request_id: Id
    user_id: Id
    item_id: Id
    type: Annotated[
        str,
        Field(
            min_length=1,
            max_length=64,
            description="click, like, skip...",
            json_schema_extra={"pattern": rules.ID_PATTERN},
        ),
        AfterValidator(_valid_id),
    ]
    ts: float | None = Field(None, ge=0, le=rules.MAX_TS, allow_inf_nan=False)


# -- experiments ---------------------------------------------------------------------------
class Variant(_Body):
    """One arm of an experiment."""

    name: str = Field(min_length=1, max_length=64)
    share: float = Field(
        gt=0, le=1, allow_inf_nan=False, description="Share of users (relative to the others)"
    )
    model_version: int | None = Field(
        None, ge=1, le=rules.MAX_ROW_ID, description="Version served (None: the active one)"
    )
    pipeline: Annotated[
        dict[str, Any] | None,
        WithJsonSchema(
            {
                "anyOf": [
                    {"$ref": "#/components/schemas/PipelineSettings"},
                    {"type": "null"},
                ]
            }
        ),
    ] = Field(None, description="Pipeline settings overridden (any of the pipeline's settings)")


class ExperimentIn(_Body):
    """A new experiment: two or more variants with different names, each with a share of
    the users (relative: the shares are scaled to add up to 1, so 1 and 1 is an even
    split)."""

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.\-]+$")
    variants: list[Variant] = Field(min_length=2, max_length=20)

    @field_validator("variants")
    @classmethod
    def _shares(cls, variants: list[Variant]) -> list[Variant]:
        total = sum(v.share for v in variants)
        return [v.model_copy(update={"share": v.share / total}) for v in variants]

    def duplicate_names(self) -> list[str]:
        """Variant names given more than once (a conflict: the request is refused)."""
        names = [v.name for v in self.variants]
        return sorted({n for n in names if names.count(n) > 1})


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
    ts: float | None = Field(description="unix seconds (null: the stored value is unreadable)")
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
    forgotten_at: float | None = Field(
        None,
        description="When a user it learned from was deleted: it can no longer be activated, "
        "and its folder goes once a newer version serves",
    )


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


class ErrorDetail(BaseModel):
    type: str = Field(description="invalid_request, not_found, conflict, unauthorized...")
    message: str = Field(description="What is wrong, in words")
    problems: list[dict[str, str]] | None = Field(
        None, description="Each problem of an invalid request: where (body.items[2]...), problem"
    )
    missing: list[str] | None = Field(None, description="Unknown ids the body names (409)")


class ErrorOut(BaseModel):
    """Every error answer: ``{"error": {"type", "message", ...}}``."""

    error: ErrorDetail


_ERROR_TEXTS = {
    400: "The path is not valid percent-encoded UTF-8, the body is not valid JSON, or the "
    "Content-Length header is not a number",
    401: "An API key is needed (X-API-Key header)",
    403: "The API key does not open this endpoint, or a write came from another web origin",
    404: "No such id (or route)",
    408: "The body did not arrive within body_timeout_s",
    409: "The request conflicts with what is stored (an unknown item named in the body, too "
    "few events to train, an unservable model version, a name taken twice)",
    413: "The body is larger than max_body_bytes",
    415: "The body is not sent as JSON (Content-Type: application/json)",
    422: "A parameter or the body is invalid; problems says where",
    503: "The database does not answer, or the service is starting",
}


def document_errors(app: FastAPI) -> None:
    """Adds every error status each route can answer to its OpenAPI responses, all with
    the :class:`ErrorOut` body: 400, 422 and 503 everywhere (with the key statuses where a
    key may be needed), the body's statuses where there is one, 404 where the path names
    an id, 409 on every request that changes something."""
    for route in app.routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        codes = {400, 422, 503}
        if not route.path.startswith("/health/"):
            codes |= {401, 403}
        methods = route.methods or set()
        if methods & {"POST", "PUT", "PATCH"}:
            codes |= {403, 404, 408, 409, 413, 415}
        if "DELETE" in methods:
            codes |= {403, 404, 409}
        if "{" in route.path:
            codes.add(404)
        responses = dict(route.responses)
        for code in sorted(codes):
            responses.setdefault(
                code,
                {
                    "description": _ERROR_TEXTS[code],
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}
                    },
                },
            )
        route.responses = responses


def recommend_query_docs(max_k: int) -> list[dict[str, Any]]:
    """The OpenAPI parameters of ``GET /users/{user_id}/recommendations``, exactly as
    :func:`recommend_query` checks them."""
    texts = {
        "type": "array",
        "maxItems": 100,
        "items": {"type": "string", "maxLength": 200, "pattern": rules.TEXT_PATTERN},
    }
    params: dict[str, tuple[dict[str, Any], str]] = {
        "k": (
            {"type": "integer", "minimum": 1, "maximum": max_k},
            "List length (default: the default_k setting)",
        ),
        "explain": ({"type": "boolean"}, "Add explanations ('because you liked ...')"),
        "include_categories": (texts, "Only items of these categories (repeat or comma list)"),
        "exclude_categories": (texts, "No items of these categories (repeat or comma list)"),
        "filter": (
            {
                **texts,
                "maxItems": 50,
                "items": {"type": "string", "maxLength": 500, "pattern": FILTER_PATTERN},
            },
            "Attribute predicates such as year>=1990 or genre=jazz (repeat)",
        ),
        "diversity": (
            {"type": "number", "minimum": 0, "maximum": 1},
            "MMR trade-off, 0 (relevance only) to 1",
        ),
        "freshness": (
            {"type": "number", "minimum": 0, "maximum": 1000},
            "Boost of brand-new items, 0 to 1000",
        ),
        "max_per_category": (
            {"type": "integer", "minimum": 1, "maximum": 10**9},
            "At most this many items of one category",
        ),
        "generators": (
            {"type": "string", "maxLength": 200, "pattern": f"^{_GENERATOR_LIST.pattern}$"},
            f"Comma list of candidate generators: {', '.join(GENERATORS)}",
        ),
    }
    return [
        {"name": name, "in": "query", "required": False, "description": text, "schema": schema}
        for name, (schema, text) in params.items()
    ]


def recommend_query(query: Any, max_k: int) -> tuple[int | None, bool, Stages]:
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
        if not (_INTEGER if integer else _DECIMAL).fullmatch(text):
            kind = "an integer" if integer else "a number"
            raise InvalidInputError(f"query.{name}: {text[:50]!r} is not {kind} in ASCII digits")
        value = int(text) if integer else float(text)
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
    if generators is not None and not _GENERATOR_LIST.fullmatch(generators):
        raise InvalidInputError(
            f"query.generators: {generators[:50]!r} is not a comma list of {', '.join(GENERATORS)}"
        )
    fields = {
        "include_categories": many("include_categories", 200),
        "exclude_categories": many("exclude_categories", 200),
        "filters": many("filter", 500),
        "diversity": number("diversity", 0, 1),
        "freshness": number("freshness", 0, 1000),
        "max_per_category": number("max_per_category", 1, 10**9, integer=True),
        "generators": None if generators is None else _split_names(generators),
    }
    try:
        stages = Stages.model_validate(fields)
    except ValidationError as err:
        first = err.errors()[0]
        where = where_of(first["loc"], first.get("ctx")).replace("filters", "filter", 1)
        raise InvalidInputError(f"query.{where}: {first['msg']}") from None
    return number("k", 1, max_k, integer=True), explain, stages


_GENERATOR_LIST = re.compile(
    rf"\s*({'|'.join(GENERATORS)})(\s*,\s*({'|'.join(GENERATORS)}))*\s*", re.ASCII
)


def _split_names(text: str) -> list[str]:
    """The names of a comma list, each once."""
    return list(dict.fromkeys(name.strip() for name in text.split(",")))


#: Attribute values as the schema documents them (recursive): what :func:`rules.json_problem`
#: accepts, but for the nesting depth.
_JSON_VALUE = {
    "description": "Any JSON value: integers within 64 bits, finite numbers, text without NUL",
    "anyOf": [
        {"type": "null"},
        {"type": "boolean"},
        {"type": "integer", "minimum": rules.MIN_INT, "maximum": rules.MAX_INT},
        {"type": "number"},
        {"type": "string", "pattern": rules.TEXT_PATTERN},
        {"type": "array", "items": {"$ref": "#/components/schemas/JsonValue"}},
        {
            "type": "object",
            "propertyNames": {"pattern": rules.TEXT_PATTERN},
            "additionalProperties": {"$ref": "#/components/schemas/JsonValue"},
        },
    ],
}


def exact_openapi(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document with what every request body is held to at the door
    (:class:`rules.RequestBody`) written into it: every string without NUL or lone
    surrogates, every integer within 64 bits, every free-form object (attributes) made of
    :data:`_JSON_VALUE`; and the :class:`ErrorOut` answers of :func:`document_errors`."""
    if app.openapi_schema:
        return app.openapi_schema
    spec = FastAPI.openapi(app)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(
        ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}").pop("$defs", {})
    )
    schemas["ErrorOut"] = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas["ErrorOut"].pop("$defs", None)
    schemas["JsonValue"] = _JSON_VALUE
    schemas["PipelineSettings"] = PipelineSettings.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    requests: list[Any] = []
    for path in spec["paths"].values():
        for operation in path.values():
            requests += [param.get("schema", {}) for param in operation.get("parameters", [])]
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            requests.append((body or {}).get("schema", {}))
    for name in _referenced(requests, schemas) - {"JsonValue"}:
        _held_at_the_door(schemas[name])
    for schema in requests:
        _held_at_the_door(schema)
    app.openapi_schema = spec
    return spec


def _referenced(roots: list[Any], schemas: dict[str, Any]) -> set[str]:
    """The component schemas reachable from ``roots`` through ``$ref``s."""
    found: set[str] = set()
    todo = list(roots)
    while todo:
        node = todo.pop()
        if isinstance(node, list):
            todo += node
        elif isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                name = ref.rsplit("/", 1)[1]
                if name not in found and name in schemas:
                    found.add(name)
                    todo.append(schemas[name])
            todo += list(node.values())
    return found


def _held_at_the_door(schema: Any) -> None:
    """Writes the door's rules into one request schema, in place (see :func:`exact_openapi`)."""
    if isinstance(schema, list):
        for item in schema:
            _held_at_the_door(item)
        return
    if not isinstance(schema, dict):
        return
    kind = schema.get("type")
    if kind == "string" and not {"pattern", "enum", "const", "format"} & set(schema):
        schema["pattern"] = rules.TEXT_PATTERN
    elif kind == "integer":
        schema.setdefault("minimum", rules.MIN_INT)
        schema.setdefault("maximum", rules.MAX_INT)
    elif kind == "object" and schema.get("additionalProperties") is True:
        schema["additionalProperties"] = {"$ref": "#/components/schemas/JsonValue"}
        schema["propertyNames"] = {"pattern": rules.TEXT_PATTERN}
    for key, value in schema.items():
        if key in ("properties", "$defs"):
            for sub in value.values():
                _held_at_the_door(sub)
        elif key in ("items", "anyOf", "oneOf", "allOf", "additionalProperties", "if", "then"):
            _held_at_the_door(value)


def event_bodies(settings: Settings) -> tuple[type[EventIn], type[EventBatch]]:
    """``EventIn`` and ``EventBatch`` with this service's event types (an enum in the
    schema), batch limit, and a rating's value required (``if``/``then`` in the schema)."""
    kinds: Any = Literal[tuple(settings.event_types)]
    extra: dict[str, Any] = {}
    if "rating" in settings.event_types:
        extra = {
            "if": {"properties": {"type": {"const": "rating"}}, "required": ["type"]},
            "then": {"required": ["value"], "properties": {"value": {"type": "number"}}},
        }
    event: Any = create_model(
        "EventIn",
        __base__=EventIn,
        __doc__="One event (a rating needs its value).",
        __config__=None,
        type=(kinds, Field(description="One of the service's event types")),
    )
    event.model_config["json_schema_extra"] = extra
    event.model_rebuild(force=True)
    batch: Any = create_model(
        "EventBatch",
        __base__=EventBatch,
        events=(list[event], Field(max_length=settings.max_batch)),
    )
    return event, batch


def with_max_k(body: type[Stages], max_k: int) -> type[Stages]:
    """``body`` (a model with a list length ``k``) with ``max_k`` in its schema."""
    field: Any = (int | None, Field(None, ge=1, le=max_k, description="List length"))
    return create_model(body.__name__, __base__=body, __doc__=body.__doc__, k=field)


def where_of(loc: Any, ctx: Any) -> str:
    """Where an invalid request's problem is: ``body.events.3.type``, ``query.k``...
    (:class:`rules.RequestBody` puts the path inside the body in ``ctx``)."""
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    inner = ctx.get("path") if isinstance(ctx, dict) else None
    if inner:
        where += ("" if inner.startswith("[") or not where else ".") + str(inner)
    return where
