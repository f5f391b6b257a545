"""The HTTP service end to end: real storage (SQLite, and PostgreSQL for the core flows), real
models, the FastAPI app with its lifespan. Nothing of tastebud is mocked."""

from __future__ import annotations

import json
import os
import random
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tastebud.errors import InvalidInputError
from tastebud.service.app import create_app
from tastebud.service.settings import Settings, load_settings

with warnings.catch_warnings():  # starlette prefers httpx2 where it is installed; httpx works
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

Response = Any  # httpx.Response or httpx2.Response, whichever the TestClient uses

# -- the catalogue: two taste clusters -------------------------------------------------------------
A_ITEMS = [f"a{i}" for i in range(10)]
B_ITEMS = [f"b{i}" for i in range(10)]
U0_LIKES = ["a0", "a1", "a2", "a3"]  # u0 has six unseen a-items, so a top 5 can be all "a"


def title(item: str) -> str:
    return f"Song {item.upper()}"


def cluster_likes(seed: int = 7) -> list[dict[str, Any]]:
    """u0..u19 like a-items, u20..u39 like b-items, each pair with probability 0.7."""
    rng = random.Random(seed)
    events = []
    for u in range(40):
        items = A_ITEMS if u < 20 else B_ITEMS
        for item in items:
            liked = item in U0_LIKES if u == 0 else rng.random() < 0.7
            if liked:
                events.append({"user_id": f"u{u}", "item_id": item, "type": "like"})
    return events


class ApiClient(TestClient):
    """A TestClient that fails the test on any 5xx or a traceback in a body."""

    def request(self, *args: Any, **kwargs: Any) -> Response:  # type: ignore[override]
        response = super().request(*args, **kwargs)
        assert "Traceback" not in response.text
        assert response.status_code < 500, response.text
        return response


def ok(response: Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def error(response: Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"]["type"], str)
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return dict(body["error"])


def make_settings(tmp_path: Path, db: str | None = None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "db": db or f"sqlite:///{tmp_path / 'service.db'}",
        "model_dir": tmp_path / "models",
        "min_events_to_train": 20,
        # no keys unless a test sets some (test_security covers the generated admin key)
        "insecure": not {"api_key", "admin_key", "read_key"} & set(overrides),
        **overrides,
    }
    return Settings(**values)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No TASTEBUD_* variable of the machine running the tests leaks into the settings."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("TASTEBUD_") and name.upper() != "TASTEBUD_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)


def serve(settings: Settings) -> ApiClient:
    return ApiClient(create_app(settings))


def seed(client: TestClient) -> list[dict[str, Any]]:
    for item in A_ITEMS + B_ITEMS:
        ok(client.put(f"/items/{item}", json={"title": title(item)}))
    events = cluster_likes()
    answer = ok(client.post("/events/batch", json={"events": events}), 201)
    assert answer["stored"] == len(events) and answer["duplicates"] == 0
    return events


def recs(client: TestClient, user: str, **params: Any) -> dict[str, Any]:
    return dict(ok(client.get(f"/users/{user}/recommendations", params=params)))


def ids(answer: dict[str, Any]) -> list[str]:
    return [row["item"] for row in answer["items"]]


@pytest.fixture
def trained(storage_url: str, tmp_path: Path) -> Iterator[tuple[ApiClient, dict[str, Any]]]:
    """A started app on each backend, seeded with the two clusters and one trained version
    of the default model (ALS with reg="auto")."""
    with serve(make_settings(tmp_path, storage_url)) as client:
        seed(client)
        answer = ok(client.post("/admin/retrain", params={"wait": "true"}))
        assert answer["status"] == "done"
        yield client, answer["version"]


@pytest.fixture
def fast(tmp_path: Path) -> Iterator[ApiClient]:
    """SQLite, item-knn, seeded but not trained."""
    with serve(make_settings(tmp_path, model="item-knn")) as client:
        seed(client)
        yield client


# -- the core flow ---------------------------------------------------------------------------------
def test_core_flow_trains_and_serves_explained_lists(
    trained: tuple[ApiClient, dict[str, Any]],
) -> None:
    client, version = trained
    assert version["model"] == "als" and version["active"] is True
    assert version["params"]["reg"] == "auto"
    assert version["n_events"] == len(cluster_likes())

    answer = recs(client, "u0", k=5, explain="true")
    assert answer["user"] == "u0" and answer["model_version"] == version["id"]
    assert len(answer["items"]) == 5
    assert [row["rank"] for row in answer["items"]] == [1, 2, 3, 4, 5]
    scores = [row["score"] for row in answer["items"]]
    assert scores == sorted(scores, reverse=True)
    for row in answer["items"]:
        assert row["item"] in A_ITEMS and row["item"] not in U0_LIKES
        assert row["source"] == "model"
        assert row["title"] == title(row["item"])
        (liked,) = row["because"]
        assert liked in U0_LIKES
        assert row["explanation"] == f"because you liked {title(liked)}"

    ready = ok(client.get("/health/ready"))
    assert ready["status"] == "ready" and ready["model_version"] == version["id"]
    assert ok(client.get("/health/live")) == {"status": "alive", "pid": os.getpid()}

    # without explain=true there are no explanations
    plain = recs(client, "u0", k=5)
    assert ids(plain) == ids(answer)
    assert all("explanation" not in row for row in plain["items"])


def test_events_change_the_next_list_without_retraining(
    trained: tuple[ApiClient, dict[str, Any]],
) -> None:
    client, version = trained
    ok(client.post("/events", json={"user_id": "fresh", "item_id": "b3", "type": "like"}), 201)
    first = recs(client, "fresh", k=8)
    assert first["model_version"] == version["id"]
    assert all(row["source"] == "model" for row in first["items"])
    assert "b3" not in ids(first)
    assert all(item in B_ITEMS for item in ids(first)[:5]), ids(first)

    likes = [{"user_id": "fresh", "item_id": i, "type": "like"} for i in A_ITEMS[:5]]
    ok(client.post("/events/batch", json={"events": likes}), 201)
    second = recs(client, "fresh", k=8)
    assert second["model_version"] == version["id"]  # no retrain happened
    assert ids(second)[0] in A_ITEMS, ids(second)
    a_first = sum(i in A_ITEMS for i in ids(first)[:5])
    a_second = sum(i in A_ITEMS for i in ids(second)[:5])
    assert a_second > a_first
    assert not set(ids(second)) & {"b3", *A_ITEMS[:5]}  # what they liked is never offered


def test_dislike_removes_an_item_and_a_later_like_brings_it_back(
    trained: tuple[ApiClient, dict[str, Any]],
) -> None:
    client, _ = trained

    def post(item: str, kind: str) -> None:
        ok(client.post("/events", json={"user_id": "moody", "item_id": item, "type": kind}), 201)

    post("b3", "like")
    before = ids(recs(client, "moody", k=19))
    target = before[0]
    post(target, "dislike")
    after = ids(recs(client, "moody", k=19))
    assert target not in after
    assert after == [i for i in before if i != target]  # nothing else moved

    # Disliking their only liked item takes it out of their taste: popularity answers...
    post("b3", "dislike")
    gone = recs(client, "moody", k=5)
    assert {row["source"] for row in gone["items"]} == {"popular"}
    assert "b3" not in ids(gone)
    # ...and liking it again brings it back: the model answers from b3 once more.
    post("b3", "like")
    back = recs(client, "moody", k=5)
    assert {row["source"] for row in back["items"]} == {"model"}
    assert all(item in B_ITEMS for item in ids(back)) and "b3" not in ids(back)


def test_items_the_model_never_saw_fall_back_to_popularity(
    trained: tuple[ApiClient, dict[str, Any]],
) -> None:
    client, _ = trained
    ok(client.put("/items/c0", json={"title": "Brand new"}))
    ok(client.post("/events", json={"user_id": "early", "item_id": "c0", "type": "like"}), 201)
    answer = recs(client, "early", k=5)
    assert [row["source"] for row in answer["items"]] == ["popular"] * 5
    assert "c0" not in ids(answer)


def test_unknown_users_get_popular_items_and_sessions_fold_in(
    trained: tuple[ApiClient, dict[str, Any]],
) -> None:
    client, _ = trained
    counts = Counter(e["item_id"] for e in cluster_likes())
    expected = sorted(counts, key=lambda i: (-counts[i], i))[:6]
    answer = recs(client, "nobody-at-all", k=6, explain="true")
    assert ids(answer) == expected
    top = counts[expected[0]]
    for row in answer["items"]:
        assert row["source"] == "popular"
        assert row["sources"][0] == "popular"
        # popularity ranks a cold user's list: 0.4 x the count as a share of the top count
        assert row["score"] == pytest.approx(0.4 * counts[row["item"]] / top)
        assert row["explanation"] == "popular with everyone right now"
    error(client.get("/users/nobody-at-all"), 404)  # recommending created nothing

    session = ok(client.post("/recommendations", json={"items": ["a1", "a2"], "k": 5}))
    assert session["user"] is None
    assert all(row["source"] == "model" for row in session["items"])
    assert set(ids(session)) <= set(A_ITEMS) - {"a1", "a2"}
    assert len(session["items"]) == 5
    empty = ok(client.post("/recommendations", json={"items": []}))
    assert ids(empty) == sorted(counts, key=lambda i: (-counts[i], i))[:10]


def test_a_repeated_client_event_id_is_stored_once(
    trained: tuple[ApiClient, dict[str, Any]],
) -> None:
    client, _ = trained
    event = {"user_id": "twice", "item_id": "a4", "type": "click", "client_event_id": "evt-1"}
    first = ok(client.post("/events", json=event), 201)
    second = ok(client.post("/events", json=event), 201)
    assert first["duplicate"] is False and second["duplicate"] is True
    assert second["seq"] == first["seq"]
    stored = ok(client.get("/users/twice/events"))
    assert [(e["seq"], e["client_event_id"]) for e in stored] == [(first["seq"], "evt-1")]

    again = {**event, "client_event_id": "evt-2"}
    batch = ok(client.post("/events/batch", json={"events": [again, again, event]}), 201)
    assert batch["stored"] == 1 and batch["duplicates"] == 2
    seqs = [r["seq"] for r in batch["results"]]
    assert seqs[0] == seqs[1] and seqs[2] == first["seq"]
    assert len(ok(client.get("/users/twice/events"))) == 2


def test_users_and_items_crud(trained: tuple[ApiClient, dict[str, Any]]) -> None:
    client, _ = trained
    user = ok(client.put("/users/carol", json={"attributes": {"country": "NO"}}))
    assert user["id"] == "carol" and user["attributes"] == {"country": "NO"}
    assert ok(client.get("/users/carol"))["attributes"] == {"country": "NO"}
    ok(client.put("/users/carol"))  # no body: the user exists, attributes kept
    assert ok(client.get("/users/carol"))["attributes"] == {"country": "NO"}
    listed = ok(client.get("/users", params={"limit": 1000}))
    assert "carol" in {u["id"] for u in listed} and "u0" in {u["id"] for u in listed}

    item = ok(client.put("/items/z1", json={"title": "Zed", "attributes": {"genre": "jazz"}}))
    assert item["available"] is True and item["title"] == "Zed"
    item = ok(client.put("/items/z1", json={"attributes": {"genre": "funk"}}))
    assert item["title"] == "Zed" and item["attributes"] == {"genre": "funk"}  # title kept
    assert ok(client.patch("/items/z1", json={"title": None}))["title"] is None
    found = ok(client.get("/items", params={"q": "song a1"}))
    assert [i["id"] for i in found] == ["a1"]
    ok(client.delete("/items/z1"))
    error(client.get("/items/z1"), 404)
    error(client.delete("/items/z1"), 404)
    error(client.patch("/items/z1", json={"available": False}), 404)

    # available=false takes the item out of every list at once, true puts it back
    top = ids(recs(client, "u0", k=5))[0]
    ok(client.patch(f"/items/{top}", json={"available": False}))
    assert ok(client.get(f"/items/{top}"))["available"] is False
    assert top not in ids(recs(client, "u0", k=19))
    assert top not in ids(recs(client, "nobody", k=19))
    assert top not in ids(ok(client.get("/items/a0/similar", params={"k": 19})))
    ok(client.patch(f"/items/{top}", json={"available": True}))
    assert ids(recs(client, "u0", k=5))[0] == top

    # a deleted item is never recommended, though the model still knows it
    ok(client.delete(f"/items/{top}"))
    after = recs(client, "u0", k=5)
    assert top not in ids(after) and len(after["items"]) == 5

    # deleting a user deletes their events; their lists fall back to popularity
    assert ok(client.get("/users/u1/events"))
    deleted = ok(client.delete("/users/u1"))
    assert deleted["deleted"] == "u1" and deleted["events"] > 0
    error(client.get("/users/u1/events"), 404)
    error(client.get("/users/u1"), 404)
    error(client.delete("/users/u1"), 404)
    assert {row["source"] for row in recs(client, "u1", k=5)["items"]} == {"popular"}


def test_similar_items(trained: tuple[ApiClient, dict[str, Any]]) -> None:
    client, _ = trained
    answer = ok(client.get("/items/b2/similar", params={"k": 5}))
    assert answer["item"] == "b2" and len(answer["items"]) == 5
    for row in answer["items"]:
        assert row["item"] in B_ITEMS and row["item"] != "b2"
        assert row["source"] == "model" and row["title"] == title(row["item"])
    error(client.get("/items/nope/similar"), 404)


def test_numeric_item_ids(tmp_path: Path) -> None:
    """Ids that all spell integers are ints inside the model; the service speaks text."""
    with serve(make_settings(tmp_path, model="item-knn")) as client:
        numbered = {item: str(100 + n) for n, item in enumerate(A_ITEMS + B_ITEMS)}
        for item, number in numbered.items():
            ok(client.put(f"/items/{number}", json={"title": title(item)}))
        events = [{**e, "item_id": numbered[e["item_id"]]} for e in cluster_likes()]
        ok(client.post("/events/batch", json={"events": events}), 201)
        ok(client.post("/admin/retrain?wait=true"))
        b_numbers = {numbered[item] for item in B_ITEMS}

        event = {"user_id": "counter", "item_id": numbered["b3"], "type": "like"}
        ok(client.post("/events", json=event), 201)
        answer = recs(client, "counter", k=5, explain="true")
        assert {row["source"] for row in answer["items"]} == {"model"}
        assert set(ids(answer)) <= b_numbers - {numbered["b3"]}
        assert all(row["because"] == [numbered["b3"]] for row in answer["items"])
        similar = ok(client.get(f"/items/{numbered['b3']}/similar", params={"k": 5}))
        assert {row["source"] for row in similar["items"]} == {"model"}
        assert set(ids(similar)) <= b_numbers - {numbered["b3"]}


# -- popularity across processes -------------------------------------------------------------------
def test_two_apps_on_one_database_share_live_popularity(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)

    def popular(app: ApiClient) -> list[str]:
        time.sleep(1.2)  # another process sees new events in 0.2 s, new items in 1 s
        return ids(recs(app, "someone", k=2, generators="popular"))

    with serve(settings) as one, serve(settings) as two:
        for item in ("p", "q"):
            ok(one.put(f"/items/{item}", json={"title": item}))
        likes = [{"user_id": f"v{n}", "item_id": "q", "type": "like"} for n in range(3)]
        ok(one.post("/events/batch", json={"events": likes}), 201)
        assert popular(two) == ["q"]
        likes = [{"user_id": f"w{n}", "item_id": "p", "type": "purchase"} for n in range(5)]
        ok(two.post("/events/batch", json={"events": likes}), 201)
        assert popular(one) == ["p", "q"]
        # dislikes are not popularity
        dislikes = [{"user_id": f"x{n}", "item_id": "q", "type": "dislike"} for n in range(9)]
        ok(one.post("/events/batch", json={"events": dislikes}), 201)
        assert popular(two) == ["p", "q"]
        # a deleted user's events no longer count
        for n in range(5):
            ok(two.delete(f"/users/w{n}"))
        assert popular(two) == ["q"]


# -- errors ---------------------------------------------------------------------------------------
def test_invalid_requests_are_json_4xx(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_batch=3, max_k=20, max_body_bytes=4096)
    with serve(settings) as client:
        ok(client.put("/items/x", json={"title": "X"}))
        good = {"user_id": "u", "item_id": "x", "type": "like"}

        for body, where in [
            ({"item_id": "x", "type": "like"}, "body.user_id"),
            ({**good, "user_id": 5}, "body.user_id"),
            ({**good, "value": "5"}, "body.value"),
            ({**good, "ts": True}, "body.ts"),
            ({**good, "ts": -1}, "body.ts"),
            ({**good, "extra": 1}, "body.extra"),
            ({**good, "user_id": ""}, "body.user_id"),
            ([good], "body"),
        ]:
            problem = error(client.post("/events", json=body), 422)
            assert problem["type"] == "invalid_request"
            assert where in [p["where"] for p in problem["problems"]], problem
            assert problem["message"].startswith(where)

        message = error(client.post("/events", json={**good, "type": "poke"}), 422)["message"]
        assert message.startswith("body.type") and "'like'" in message
        message = error(client.post("/events", json={**good, "type": "rating"}), 422)["message"]
        assert "rating needs a value" in message
        ok(client.post("/events", json={**good, "type": "rating", "value": 4}), 201)

        # an event naming an item that does not exist: a conflict with what is stored
        problem = error(client.post("/events", json={**good, "item_id": "ghost"}), 409)
        assert "'ghost'" in problem["message"] and problem["missing"] == ["ghost"]
        batch = {"events": [good, {**good, "item_id": "ghost"}]}
        error(client.post("/events/batch", json=batch), 409)
        assert len(ok(client.get("/users/u/events"))) == 1  # all or nothing

        nan = b'{"user_id": "u", "item_id": "x", "type": "rating", "value": NaN}'
        headers = {"content-type": "application/json"}
        problem = error(client.post("/events", content=nan, headers=headers), 422)
        assert problem["problems"][0]["where"] == "body.value"
        nan_attrs = b'{"attributes": {"score": NaN}}'
        error(client.put("/items/y", content=nan_attrs, headers=headers), 422)
        error(client.get("/items/y"), 404)  # nothing was written
        error(client.post("/events", content=b'{"user_id": ', headers=headers), 422)
        error(
            client.post("/events", content=b"user=u", headers={"content-type": "text/plain"}), 415
        )

        assert error(client.get("/users/nobody"), 404)["type"] == "not_found"
        error(client.get("/items/nothing"), 404)
        assert (
            "between 1 and 20" in error(client.get("/users/u/recommendations?k=21"), 422)["message"]
        )
        error(client.get("/users/u/recommendations?k=0"), 422)
        error(client.get("/users/u/recommendations?k=many"), 422)
        error(client.post("/recommendations", json={"items": ["x"], "k": 21}), 422)
        error(client.get("/users/" + "u" * 300), 422)

        four = {"events": [good] * 4}
        assert "at most 3 items" in error(client.post("/events/batch", json=four), 422)["message"]
        huge = {"events": [{**good, "client_event_id": "c" * 200}] * 3, "pad": "x" * 5000}
        assert error(client.post("/events/batch", json=huge), 413)["type"] == "too_large"

        def chunks() -> Iterator[bytes]:  # no Content-Length: the streamed size counts
            yield b'{"events": ['
            for _ in range(100):
                yield json.dumps(good).encode() + b","
            yield json.dumps(good).encode() + b"]}"

        error(client.post("/events/batch", content=chunks(), headers=headers), 413)
        assert len(ok(client.get("/users/u/events"))) == 1

        assert error(client.get("/no/such/route"), 404)["type"] == "not_found"
        assert error(client.delete("/health/live"), 405)["type"] == "method_not_allowed"
        assert "too few" in error(client.post("/admin/retrain?wait=true"), 409)["message"]
        error(client.post("/admin/models/99/activate"), 404)
        error(client.post("/admin/models/latest/activate"), 422)
        error(client.patch("/items/x", json={"available": "no"}), 422)


def test_our_own_bugs_are_a_bare_json_500(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path))

    @app.get("/crash")  # a route with a bug, added for this test
    def crash() -> None:
        raise RuntimeError("secret internals")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/crash")
        assert response.status_code == 500
        assert response.json() == {
            "error": {"type": "internal_error", "message": "internal error; see the server log"}
        }
        assert "secret" not in response.text and "Traceback" not in response.text
        metrics = client.get("/metrics").text
        assert 'tastebud_requests_total{route="/crash",status="500"} 1.0' in metrics


def test_not_ready_before_start_up(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path))
    client = TestClient(app)  # no `with`: the lifespan did not run
    assert error(client.get("/health/ready"), 503)["type"] == "starting"
    assert ok(client.get("/health/live")) == {"status": "alive", "pid": os.getpid()}
    app.state.storage.close()


def test_api_keys(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, api_key="write-key-0123456789", admin_key="admin-key-0123456789"
    )
    with serve(settings) as client:
        event = {"user_id": "u", "item_id": "x", "type": "like"}
        assert error(client.put("/items/x", json={}), 401)["type"] == "unauthorized"
        ok(client.put("/items/x", json={}, headers={"X-API-Key": "write-key-0123456789"}))
        assert error(client.post("/events", json=event), 401)["type"] == "unauthorized"
        forbidden = error(client.post("/events", json=event, headers={"X-API-Key": "nope"}), 403)
        assert forbidden["type"] == "forbidden"
        ok(client.post("/events", json=event, headers={"X-API-Key": "write-key-0123456789"}), 201)
        ok(
            client.post("/events", json=event, headers={"X-API-Key": "admin-key-0123456789"}), 201
        )  # admin writes

        error(client.post("/admin/retrain"), 401)
        error(client.post("/admin/retrain", headers={"X-API-Key": "write-key-0123456789"}), 403)
        error(client.get("/admin/models", headers={"X-API-Key": "write-key-0123456789"}), 403)
        assert ok(client.get("/admin/models", headers={"X-API-Key": "admin-key-0123456789"})) == []
        error(
            client.post("/admin/retrain?wait=true", headers={"X-API-Key": "admin-key-0123456789"}),
            409,
        )
        stats = ok(client.get("/admin/stats", headers={"X-API-Key": "admin-key-0123456789"}))
        assert stats["events"] == 2 and stats["items"] == 1

        # reads are open without a read key
        ok(client.get("/users/u/recommendations"))
        ok(client.get("/items/x"))
        ok(client.get("/health/ready"))

    settings = make_settings(
        tmp_path, api_key="write-key-0123456789", read_key="read-key-0123456789"
    )
    with serve(settings) as client:
        error(client.get("/items/x"), 401)
        error(client.get("/items/x", headers={"X-API-Key": "nope"}), 403)
        for key in ("read-key-0123456789", "write-key-0123456789"):
            ok(client.get("/items/x", headers={"X-API-Key": key}))
        error(client.put("/items/x", json={}, headers={"X-API-Key": "read-key-0123456789"}), 403)
        # without an admin key the write key runs the admin endpoints
        ok(client.get("/admin/models", headers={"X-API-Key": "write-key-0123456789"}))
        ok(client.get("/health/live"))  # health stays open for load balancers
        ok(client.get("/health/ready"))


# -- admin -----------------------------------------------------------------------------------------
def test_model_versions_can_be_listed_and_rolled_back(fast: ApiClient) -> None:
    client = fast
    assert ok(client.get("/health/ready"))["model_version"] is None
    first = ok(client.post("/admin/retrain?wait=true"))["version"]
    ok(client.post("/events", json={"user_id": "u0", "item_id": "a9", "type": "purchase"}), 201)
    second = ok(client.post("/admin/retrain?wait=true"))["version"]
    assert second["id"] > first["id"] and second["n_events"] == first["n_events"] + 1
    versions = ok(client.get("/admin/models"))
    assert [v["id"] for v in versions] == [first["id"], second["id"]]
    assert [v["active"] for v in versions] == [False, True]
    assert all(v["model"] == "item-knn" for v in versions)

    back = ok(client.post(f"/admin/models/{first['id']}/activate"))
    assert back["id"] == first["id"] and back["active"] is True
    assert ok(client.get("/health/ready"))["model_version"] == first["id"]
    answer = recs(client, "u0", k=3)
    assert answer["model_version"] == first["id"]
    assert {row["source"] for row in answer["items"]} == {"model"}
    assert [v["active"] for v in ok(client.get("/admin/models"))] == [True, False]
    error(client.post("/admin/models/12345/activate"), 404)


def test_a_restart_serves_the_active_version(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, model="item-knn")
    with serve(settings) as client:
        seed(client)
        version = ok(client.post("/admin/retrain?wait=true"))["version"]
        before = recs(client, "u0", k=5)
    with serve(settings) as client:
        assert ok(client.get("/health/ready"))["model_version"] == version["id"]
        assert recs(client, "u0", k=5)["items"] == before["items"]


def test_retraining_swaps_models_without_failing_a_request(fast: ApiClient) -> None:
    client = fast
    ok(client.post("/admin/retrain?wait=true"))
    statuses: list[int] = []
    versions: set[int] = set()
    stop = threading.Event()

    def hammer() -> None:
        users = [f"u{n}" for n in range(40)] + ["stranger"]
        n = 0
        while not stop.is_set():
            response = client.get(f"/users/{users[n % len(users)]}/recommendations?k=5")
            statuses.append(response.status_code)
            if response.status_code == 200:
                versions.add(response.json()["model_version"])
            n += 1

    worker = threading.Thread(target=hammer)
    worker.start()
    try:
        for _ in range(3):
            time.sleep(0.05)
            ok(client.post("/admin/retrain?wait=true"))
        # and one in the background, which answers at once
        started = ok(client.post("/admin/retrain"), 202)
        assert started["status"] in ("started", "already training")
        deadline = time.monotonic() + 20
        while ok(client.get("/health/ready"))["model_version"] != 5:
            assert time.monotonic() < deadline, "the background retrain did not finish"
            time.sleep(0.02)
        time.sleep(0.05)
    finally:
        stop.set()
        worker.join()
    assert statuses and set(statuses) == {200}
    assert len(versions) >= 2  # the hammer saw swaps happen
    assert [v["active"] for v in ok(client.get("/admin/models"))] == [False] * 4 + [True]


def test_scheduled_retraining(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, model="item-knn", retrain_every_s=0.1)
    with serve(settings) as client:
        seed(client)
        deadline = time.monotonic() + 20
        while ok(client.get("/health/ready"))["model_version"] is None:
            assert time.monotonic() < deadline, "no scheduled retrain happened"
            time.sleep(0.05)
        time.sleep(0.5)  # nothing new: no more versions
        assert len(ok(client.get("/admin/models"))) == 1


# -- metrics and the schema ------------------------------------------------------------------------
def test_metrics_and_openapi(fast: ApiClient) -> None:
    client = fast
    recs(client, "u0")
    error(client.get("/users/nobody"), 404)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'tastebud_requests_total{route="/users/{user_id}/recommendations",status="200"}' in text
    assert 'tastebud_requests_total{route="/users/{user_id}",status="404"}' in text
    assert 'tastebud_events_total{type="like"}' in text
    assert "tastebud_request_seconds_bucket" in text

    schema = json.loads(client.get("/openapi.json").text)
    assert schema["info"]["title"] == "tastebud"
    paths = schema["paths"]
    for path, method in [
        ("/events", "post"),
        ("/events/batch", "post"),
        ("/users/{user_id}", "put"),
        ("/users/{user_id}/recommendations", "get"),
        ("/recommendations", "post"),
        ("/items/{item_id}", "patch"),
        ("/items/{item_id}/similar", "get"),
        ("/admin/retrain", "post"),
        ("/admin/models/{version_id}/activate", "post"),
        ("/health/ready", "get"),
    ]:
        assert method in paths[path], path
    assert "/metrics" not in paths


def test_apps_are_independent(tmp_path: Path) -> None:
    one = make_settings(tmp_path / "one")
    two = make_settings(tmp_path / "two", max_k=7, default_k=5)
    with serve(one) as first, serve(two) as second:
        ok(first.put("/items/x", json={}))
        ok(first.post("/events", json={"user_id": "u", "item_id": "x", "type": "like"}), 201)
        error(second.get("/items/x"), 404)
        error(second.get("/users/u/events"), 404)
        ok(first.get("/users/u/recommendations?k=8"))
        error(second.get("/users/u/recommendations?k=8"), 422)
        assert 'route="/events"' in first.get("/metrics").text
        assert 'route="/events"' not in second.get("/metrics").text


# -- settings --------------------------------------------------------------------------------------
def test_settings_come_from_file_environment_and_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_settings().max_k == 200
    monkeypatch.setenv("TASTEBUD_MAX_K", "5")
    assert load_settings().max_k == 5
    monkeypatch.setenv("TASTEBUD_EVENT_WEIGHTS", '{"like": 3, "dislike": 0}')
    monkeypatch.setenv("TASTEBUD_DB", "postgresql://me@db:5432/recs")
    settings = load_settings()
    assert settings.event_weights == {"like": 3.0, "dislike": 0.0}
    assert settings.db == "postgresql+psycopg://me@db:5432/recs"
    monkeypatch.delenv("TASTEBUD_EVENT_WEIGHTS")
    monkeypatch.delenv("TASTEBUD_DB")

    toml = tmp_path / "tastebud.toml"
    toml.write_text(
        'db = "sqlite:///from-file.db"\nmax_k = 7\ndefault_k = 4\nmodel = "item-knn"\n'
        "[model_params]\nk = 20\n",
        encoding="utf-8",
    )
    from_file = load_settings(toml)
    assert from_file.db == "sqlite:///from-file.db" and from_file.model == "item-knn"
    assert from_file.model_params == {"k": 20} and from_file.default_k == 4
    assert from_file.max_k == 5  # the environment beats the file
    assert load_settings(toml, max_k=6, db=None).max_k == 6  # arguments beat both; None: unset
    monkeypatch.delenv("TASTEBUD_MAX_K")
    assert load_settings(toml).max_k == 7

    as_json = tmp_path / "tastebud.json"
    as_json.write_text(
        json.dumps({"max_batch": 10, "api_key": "k-0123456789abcdef"}), encoding="utf-8"
    )
    assert load_settings(as_json).max_batch == 10


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"db": "mysql://x"}, "setting db"),
        ({"model": "nope"}, "setting model"),
        ({"model": "svd"}, "setting model"),  # needs ratings
        ({"model": "blend"}, "setting model"),  # cannot fold in a live history
        ({"model_params": {"regg": 1.0}}, "setting model_params"),
        ({"model_params": {"reg": "much"}}, "setting model_params"),
        ({"max_k": 0}, "setting max_k"),
        ({"default_k": 50, "max_k": 20}, "setting max_k"),
        ({"log_level": "loud"}, "setting log_level"),
        ({"event_weights": {"like": -1.0}}, "setting event_weights"),
        ({"event_types": []}, "setting event_types"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_invalid_settings_name_the_setting(overrides: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidInputError, match=named):
        load_settings(**overrides)


def test_invalid_settings_name_their_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('model = "nope"\n', encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"setting model \(in .*bad.toml\)"):
        load_settings(config)
    monkeypatch.setenv("TASTEBUD_MAX_K", "lots")
    with pytest.raises(InvalidInputError, match="environment variable TASTEBUD_MAX_K"):
        load_settings()
    broken = tmp_path / "broken.toml"
    broken.write_text("max_k = = 3\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"broken\.toml"):
        load_settings(broken)
    with pytest.raises(InvalidInputError, match="cannot read"):
        load_settings(tmp_path / "missing.toml")
