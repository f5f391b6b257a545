"""Validation at the door (issue 17): every value a request can carry that the service's
consumers -- the database, the models, the demographics, the routes -- cannot hold is
answered 422 naming the field; every id the API accepts is addressable on every route that
takes one. Each class is tested with the example that found it and other members."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from tests.service.test_app import (  # noqa: F401 - _clean_environment is an autouse fixture
    ApiClient,
    _clean_environment,
    error,
    make_settings,
    ok,
    seed,
    serve,
)

from tastebud import rules

JSON = {"content-type": "application/json"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[ApiClient]:
    """SQLite, item-knn, the two clusters seeded, one version trained."""
    with serve(make_settings(tmp_path, model="item-knn", max_k=50)) as api:
        seed(api)
        ok(api.post("/admin/retrain?wait=true"))
        yield api


def raw(client: ApiClient, method: str, url: str, text: str) -> Any:
    """A request whose body is sent as written (lone surrogates, NaN, huge numbers...)."""
    return client.request(method, url, content=text.encode("utf-8", "surrogatepass"), headers=JSON)


# -- attributes: any JSON object every consumer can hold -------------------------------------
BAD_ATTRIBUTES = [
    ('{"age": 18446744073709551616}', "age"),  # the example: beyond 64 bits
    ('{"age": -1180591620717411303424}', "age"),
    ('{"score": 1e400}', "score"),  # parsed as inf
    ('{"score": NaN}', "score"),
    ('{"tags": ["ok", "\\ud800"]}', "tags[1]"),  # a lone surrogate
    ('{"name": "a\\u0000b"}', "name"),  # NUL: PostgreSQL cannot store it
    ('{"a": ' * 20 + "1" + "}" * 20, "a.a.a"),  # deeper than MAX_JSON_DEPTH
]


@pytest.mark.parametrize(("attributes", "where"), BAD_ATTRIBUTES)
def test_attributes_no_consumer_can_hold_are_422_naming_the_field(
    client: ApiClient, attributes: str, where: str
) -> None:
    for method, url, body in [
        ("PUT", "/users/x", f'{{"attributes": {attributes}}}'),
        ("PUT", "/items/newitem", f'{{"attributes": {attributes}}}'),
        ("PATCH", "/items/a1", f'{{"attributes": {attributes}}}'),
        ("POST", "/users/y/onboarding", f'{{"attributes": {attributes}}}'),
    ]:
        problem = error(raw(client, method, url, body), 422)
        assert problem["problems"][0]["where"].startswith(f"body.attributes.{where}"), problem
    # nothing was stored, and the user's lists still answer
    error(client.get("/users/x"), 404)
    ok(client.get("/users/u1/recommendations"))
    ok(client.post("/users/z/onboarding", json={"attributes": {"age": 2**63 - 1}}))


def test_a_surrogate_anywhere_in_a_body_is_422(client: ApiClient) -> None:
    cases = [
        ("PUT", "/items/a1", '{"title": "x\\udc80y"}', "body.title"),
        ("PUT", "/users/x", '{"attributes": {"\\ud83d": 1}}', "body.attributes"),
        (
            "POST",
            "/events",
            '{"user_id": "u1", "item_id": "a1", "type": "like", "client_event_id": "\\ud800"}',
            "body.client_event_id",
        ),
        ("POST", "/recommendations", '{"items": ["a1", "\\udfff"]}', "body.items[1]"),
        (
            "POST",
            "/admin/experiments",
            '{"name": "e", "variants": [{"name": "\\ud800", "share": 0.5},'
            ' {"name": "b", "share": 0.5}]}',
            "body.variants[0].name",
        ),
    ]
    for method, url, body, where in cases:
        problem = error(raw(client, method, url, body), 422)
        assert problem["problems"][0]["where"] == where, problem
        assert "surrogate" in problem["message"]


# -- events: values, timestamps and ids a model can train on -----------------------------------
@pytest.mark.parametrize(
    ("field", "value"),
    [("value", 1e308), ("value", -1e10), ("value", rules.MAX_ABS_VALUE * 1.5), ("ts", 1e15)],
)
def test_event_numbers_out_of_range_are_422(client: ApiClient, field: str, value: float) -> None:
    event = {"user_id": "u1", "item_id": "a1", "type": "rating", "value": 4.0, field: value}
    assert error(client.post("/events", json=event), 422)["problems"][0]["where"] == f"body.{field}"
    batch = {"events": [dict(event, **{field: 1.0}), event]}
    where = error(client.post("/events/batch", json=batch), 422)["problems"][0]["where"]
    assert where == f"body.events[1].{field}"


BAD_IDS = [
    " ", "   ", "\t", "a\nb", "x\x00y", "\x7f", "\u0085", ".", "..",
    "x" * (rules.MAX_ID_LENGTH + 1),
]  # fmt: skip


@pytest.mark.parametrize("bad", BAD_IDS)
def test_ids_that_no_model_can_train_on_are_refused_everywhere(client: ApiClient, bad: str) -> None:
    event = {"user_id": bad, "item_id": "a1", "type": "like"}
    assert error(client.post("/events", json=event), 422)["problems"][0]["where"] == "body.user_id"
    event = {"user_id": "u1", "item_id": bad, "type": "like"}
    assert error(client.post("/events", json=event), 422)["problems"][0]["where"] == "body.item_id"
    feedback = {"request_id": "r", "user_id": bad, "item_id": "a1", "type": "skip"}
    error(client.post("/feedback", json=feedback), 422)
    error(client.post("/recommendations", json={"items": [bad]}), 422)
    error(client.post("/users/u1/onboarding", json={"liked_items": [bad]}), 422)
    if "\x00" not in bad and bad.strip(".") != "":  # no URL carries NUL, . or .. as such
        path = quote(bad, safe="")
        for method, url in [("PUT", f"/users/{path}"), ("PUT", f"/items/{path}")]:
            error(client.request(method, url, json={}), 422)
        error(client.get(f"/users/{path}/recommendations"), 422)
    assert ok(client.get("/admin/stats"))["users"] == 40  # nothing new was stored


# -- every accepted id is addressable -------------------------------------------------------
ODD_IDS = [
    "a/b",  # the example
    "a/recommendations",
    "/leading",
    "trailing/",
    "50%",
    "%2F",
    "a?b=c",
    "a#b",
    "with space",
    "  padded ",
    "naïve/ユーザー",
    "emoji 🎧",
    "...",
    "a+b&c",
]


@pytest.mark.parametrize("odd", ODD_IDS)
def test_every_accepted_id_round_trips_through_every_route(client: ApiClient, odd: str) -> None:
    path = quote(odd, safe="")
    ok(client.put(f"/items/{path}", json={"title": "odd", "attributes": {"genre": "x"}}))
    assert ok(client.get(f"/items/{path}"))["id"] == odd
    ok(client.patch(f"/items/{path}", json={"title": "odder"}))
    assert ok(client.put(f"/users/{path}", json={"attributes": {"city": "Oslo"}}))["id"] == odd
    assert ok(client.get(f"/users/{path}"))["id"] == odd
    event = {"user_id": odd, "item_id": odd, "type": "like"}
    ok(client.post("/events", json=event), 201)
    ok(client.post("/events", json={"user_id": odd, "item_id": "a1", "type": "like"}), 201)
    assert {e["item_id"] for e in ok(client.get(f"/users/{path}/events"))} == {odd, "a1"}
    answer = ok(client.get(f"/users/{path}/recommendations", params={"k": 5}))
    assert answer["user"] == odd and odd not in [row["item"] for row in answer["items"]]
    assert ok(client.get(f"/items/{path}/similar"))["item"] == odd
    listed = ok(client.post(f"/users/{path}/onboarding", json={"liked_items": [odd]}))
    assert listed["user"] == odd
    assert next(u["id"] for u in ok(client.get("/users", params={"q": odd}))) == odd
    assert ok(client.delete(f"/users/{path}"))["deleted"] == odd
    error(client.get(f"/users/{path}"), 404)
    assert ok(client.delete(f"/items/{path}"))["deleted"] == odd
    error(client.get(f"/items/{path}"), 404)


def test_a_path_that_is_not_utf8_is_400(client: ApiClient) -> None:
    assert error(client.get("/users/%ff%fe"), 400)["type"] == "bad_request"
    assert error(client.delete("/items/a%c3"), 400)["type"] == "bad_request"


@pytest.mark.parametrize(
    ("user_length", "item_length"),
    [(200, 45), (rules.MAX_ID_LENGTH, rules.MAX_ID_LENGTH), (1, rules.MAX_ID_LENGTH)],
)
def test_onboarding_with_long_ids_stores_its_likes(
    client: ApiClient, user_length: int, item_length: int
) -> None:
    """The example: user + item ids over ~240 characters overflowed the generated
    idempotency key; with any lengths it must work, twice, storing once."""
    user, item = "u" * user_length, "i" * item_length
    ok(client.put(f"/items/{item}", json={}))
    for _ in range(2):
        ok(client.post(f"/users/{user}/onboarding", json={"liked_items": [item, "a1"]}))
    assert len(ok(client.get(f"/users/{user}/events"))) == 2


# -- numbers in URLs are written in ASCII digits -------------------------------------------------
@pytest.mark.parametrize("k", [" 5", "5 ", "５", "٥", "5.0", "1e1", "0x5", "+", ""])
def test_list_lengths_must_be_plain_integers(client: ApiClient, k: str) -> None:
    error(client.get("/users/u1/recommendations", params={"k": k}), 422)
    error(client.get("/items/a1/similar", params={"k": k}), 422)
    error(client.get("/users", params={"limit": k}), 422)


def test_k_above_max_k_is_refused_and_documented(client: ApiClient) -> None:
    for request in (
        lambda: client.get("/users/u1/recommendations", params={"k": 51}),
        lambda: client.get("/items/a1/similar", params={"k": 51}),
        lambda: client.post("/recommendations", json={"items": ["a1"], "k": 51}),
        lambda: client.post("/users/u1/onboarding", json={"k": 51}),
    ):
        error(request(), 422)
    spec = client.get("/openapi.json").json()
    params = spec["paths"]["/users/{user_id}/recommendations"]["get"]["parameters"]
    assert next(p for p in params if p["name"] == "k")["schema"]["maximum"] == 50
    params = spec["paths"]["/items/{item_id}/similar"]["get"]["parameters"]
    k = next(p for p in params if p["name"] == "k")["schema"]
    assert 50 in (k.get("maximum"), *(s.get("maximum") for s in k.get("anyOf", [])))
    session = spec["components"]["schemas"]["SessionIn"]["properties"]["k"]
    assert 50 in (session.get("maximum"), *(s.get("maximum") for s in session.get("anyOf", [])))


def test_row_ids_beyond_32_bits_are_422_on_every_backend(storage_url: str, tmp_path: Path) -> None:
    """The example was PostgreSQL's: its version column is 32-bit and the route took 2**62."""
    with serve(make_settings(tmp_path, storage_url)) as api:
        for version in (2**31, 2**31 + 7, 2**62):
            error(api.post(f"/admin/models/{version}/activate"), 422)
            variants = [
                {"name": "a", "share": 0.5, "model_version": version},
                {"name": "b", "share": 0.5},
            ]
            error(api.post("/admin/experiments", json={"name": "e1", "variants": variants}), 422)
        error(api.post(f"/admin/models/{2**31 - 1}/activate"), 404)  # the largest: unknown


def test_patching_attributes_to_null_clears_them(client: ApiClient) -> None:
    ok(client.put("/items/a1", json={"attributes": {"genre": "jazz"}}))
    assert ok(client.patch("/items/a1", json={"attributes": None}))["attributes"] == {}
    assert ok(client.patch("/items/a1", json={"available": None}))["available"] is True


def test_json_body_parse_of_huge_numbers_is_not_a_500(client: ApiClient) -> None:
    huge = "9" * 5000  # Python refuses to parse ints this long (int max str digits)
    error(raw(client, "PUT", "/users/x", f'{{"attributes": {{"n": {huge}}}}}'), 400)
    body = json.dumps({"user_id": "u1", "item_id": "a1", "type": "like"})
    ok(raw(client, "POST", "/events", body), 201)


# -- pipeline overrides (the acceptance walk: new_item_days 1e308 broke every list) -----------
@pytest.mark.parametrize(
    "pipeline",
    [
        {"new_item_days": 1e308},  # the example
        {"new_item_days": 36_501},
        {"freshness_half_life_days": 1e308},
        {"freshness": 1001},
        {"max_per_category": 10**10},
        {"category_field": "x" * 201},
    ],
)
def test_pipeline_settings_no_list_can_use_are_refused_at_the_door(
    client: ApiClient, pipeline: dict[str, Any]
) -> None:
    variants = [{"name": "a", "share": 1, "pipeline": pipeline}, {"name": "b", "share": 1}]
    problem = error(
        client.post("/admin/experiments", json={"name": "z", "variants": variants}), 422
    )
    assert "pipeline." + next(iter(pipeline)) in problem["message"]
    with pytest.raises(ValueError, match=next(iter(pipeline))):
        make_settings(Path("/nonexistent"), pipeline=pipeline)
    ok(client.get("/users/u1/recommendations"))


def test_head_answers_as_get_without_a_body(client: ApiClient) -> None:
    for url in ("/health/live", "/items/a1", "/users/u1/recommendations"):
        answer = client.head(url)
        assert answer.status_code == 200 and answer.content == b""
        assert int(answer.headers["content-length"]) == len(client.get(url).content) or (
            url.endswith("recommendations")  # each list has its own request id
        )
    assert "HEAD" in client.options("/items/a1").headers["allow"].split(", ")


def test_the_largest_batch_the_schema_allows_fits_in_the_default_body_limit() -> None:
    """At the default settings every batch the OpenAPI schema allows is one the size limit
    takes (a schema-valid request answered 413 would break the contract): max_batch events
    whose four ids are 256 non-BMP characters each, sent as JSON escapes (12 bytes each)."""
    from tastebud.service.settings import Settings

    settings = Settings()
    worst = "\U0001f3a7" * rules.MAX_ID_LENGTH
    event = {
        "user_id": worst, "item_id": worst, "type": "purchase", "client_event_id": worst,
        "request_id": worst, "value": -1.2345678901234567e-300, "ts": 253402300798.99997,
    }  # fmt: skip
    body = json.dumps({"events": [event] * settings.max_batch}).encode()
    assert len(body) <= settings.max_body_bytes
