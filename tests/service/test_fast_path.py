"""``GET /users/{id}/recommendations`` is answered by a fast path in front of FastAPI: it
must answer exactly what the documented route answers -- lists, keys, errors, metrics -- and
pass every request it does not recognise on to the app."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tastebud.service import runtime
from tastebud.service.app import create_app

from .test_app import ApiClient, error, make_settings, ok, seed


def _without_request_id(answer: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in answer.items() if key != "request_id"}


@pytest.fixture
def client(tmp_path: Path) -> ApiClient:
    settings = make_settings(
        tmp_path, api_key="write-key-0123456789", read_key="read-key-0123456789"
    )
    with ApiClient(create_app(settings), headers={"X-API-Key": "write-key-0123456789"}) as client:
        seed(client)
        ok(client.post("/admin/retrain?wait=true"), 200)
        yield client


def test_the_fast_path_and_the_route_give_the_same_answers(
    client: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    answer = runtime.RecommendationsFastPath.__call__

    async def counting(self: Any, *args: Any) -> None:
        nonlocal calls
        calls += 1
        await answer(self, *args)

    monkeypatch.setattr(runtime.RecommendationsFastPath, "__call__", counting)
    # a root_path is one thing the fast path leaves to the route
    behind_proxy = ApiClient(
        client.app, root_path="/api", headers={"X-API-Key": "write-key-0123456789"}
    )
    queries = ["k=5", "k=3&explain=true", "generators=popular", "filter=title!=Song A1"]
    for query in queries:
        fast = ok(client.get(f"/users/u0/recommendations?{query}"))
        routed = ok(behind_proxy.get(f"/api/users/u0/recommendations?{query}"))
        assert _without_request_id(fast) == _without_request_id(routed)
        assert fast["items"], query
    assert calls == len(queries)  # the plain requests; the others went to the route


def test_keys_and_errors_are_answered_as_everywhere_else(client: ApiClient) -> None:
    url = "/users/u0/recommendations"
    assert error(client.get(url, headers={"X-API-Key": ""}), 403)["type"] == "forbidden"
    assert error(client.get(url, headers={"X-API-Key": "nope"}), 403)["type"] == "forbidden"
    client.headers.pop("X-API-Key")
    assert error(client.get(url), 401)["type"] == "unauthorized"
    client.headers["X-API-Key"] = "read-key-0123456789"
    ok(client.get(url))
    assert error(client.get(f"{url}?k=many"), 422)["type"] == "invalid_request"
    assert error(client.get(f"{url}?k=0"), 422)["type"] == "invalid_request"
    assert error(client.get("/users/a%00b/recommendations"), 422)["type"] == "invalid_request"
    # what the route refuses before the fast path would: too long an id, another method
    assert error(client.get(f"/users/{'x' * 257}/recommendations"), 422)["type"]
    assert error(client.post(url), 405)["type"] == "method_not_allowed"
    metrics = client.get("/metrics").text
    route = 'route="/users/{user_id}/recommendations"'
    assert f'tastebud_requests_total{{{route},status="200"}}' in metrics
    assert f'tastebud_requests_total{{{route},status="401"}}' in metrics
    assert f'tastebud_requests_total{{{route},status="422"}}' in metrics
