"""``tastebud.client`` against the real service: the app of this process under uvicorn (sync
client), the app through ``httpx.ASGITransport`` (async client), and ``tastebud serve`` in
its own process (sync client, and the README's walk-through). Retries and transport failures,
which a healthy server does not produce, go through ``httpx.MockTransport``.

The catalogue has two taste clusters whose answers are known: jazz items j0..j5 (1960..1965)
liked by p0..p7, rock items r0..r5 (1990..1995) liked by q0..q7, each user three neighbouring
items of their cluster; item-knn serves them (exact and fast)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from serving import app_server, ids, raised, sample_server, served_app
from tastebud.client import UNSET, AsyncClient, Client, ListOptions, ServiceError
from tastebud.client._routes import _Routes
from tastebud.errors import TastebudError
from tastebud.service.app import create_app
from tastebud.service.schemas import (
    EventIn,
    RecommendationList,
    Stages,
    Variant,
    recommend_query_docs,
)
from tastebud.service.settings import Settings

JAZZ = [f"j{i}" for i in range(6)]
ROCK = [f"r{i}" for i in range(6)]
README = Path(__file__).parents[2] / "README.md"


def likes() -> list[dict[str, Any]]:
    """p<n> likes j<n>, j<n+1>, j<n+2> (mod 6); q<n> the same rock items."""
    return [
        {"user_id": f"{who}{n}", "item_id": f"{prefix}{(n + step) % 6}", "type": "like"}
        for who, prefix in (("p", "j"), ("q", "r"))
        for n in range(8)
        for step in range(3)
    ]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No TASTEBUD_* variable of the machine running the tests leaks into the settings."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("TASTEBUD_") and name.upper() != "TASTEBUD_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "db": f"sqlite:///{tmp_path / 'service.db'}",
        "model_dir": tmp_path / "models",
        "model": "item-knn",
        "min_events_to_train": 10,
        "insecure": not {"api_key", "admin_key", "read_key"} & set(overrides),
        **overrides,
    }
    return Settings(**values)


def seed(client: Client) -> None:
    for n, item in enumerate(JAZZ + ROCK):
        style = "jazz" if item in JAZZ else "rock"
        year = (1960 if style == "jazz" else 1990) + n % 6
        client.put_item(item, title=f"Album {item}", attributes={"style": style, "year": year})
    for n in range(8):
        client.put_user(f"p{n}", {"city": "Paris"})
        client.put_user(f"q{n}", {"city": "Oslo"})
    client.add_events(likes())


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Client, Any]]:
    """The sync client and the app it talks to over HTTP: seeded, one version trained."""
    with served_app(settings(tmp_path)) as (client, app):
        seed(client)
        assert client.retrain(wait=True).status == "done"
        yield client, app


# -- the sync client on every route ----------------------------------------------------------
def test_users_items_and_events(tmp_path: Path) -> None:
    with served_app(settings(tmp_path)) as (client, _):
        assert client.put_user("ann", {"city": "Oslo"}).attributes == {"city": "Oslo"}
        assert client.put_user("bob").attributes == {}
        assert client.get_user("ann").attributes == {"city": "Oslo"}
        assert [u.id for u in client.list_users()] == ["ann", "bob"]
        assert [u.id for u in client.list_users(limit=1, offset=1)] == ["bob"]
        assert [u.id for u in client.list_users(q="a")] == ["ann"]

        odd = "Kind of Blue? #1 & 50%"  # escaped as one path segment
        item = client.put_item(odd, title="Kind of Blue", attributes={"style": "jazz"})
        assert (item.id, item.title, item.available) == (odd, "Kind of Blue", True)
        kept = client.put_item(odd, available=False)  # fields not given keep their values
        assert (kept.title, kept.attributes, kept.available) == (
            "Kind of Blue",
            {"style": "jazz"},
            False,
        )
        assert client.put_item(odd, title=None).title is None  # None clears
        assert client.patch_item(odd, title="Blue", available=True).available
        assert client.get_item(odd).title == "Blue"
        client.put_item("Thriller", title="Thriller")
        assert [i.id for i in client.list_items(q="thrill")] == ["Thriller"]
        assert {i.id for i in client.list_items()} == {odd, "Thriller"}

        first = client.add_event("ann", odd, "like", client_event_id="e1")
        again = client.add_event("ann", odd, "like", client_event_id="e1")
        assert not first.duplicate and again.duplicate and again.seq == first.seq
        batch = client.add_events(
            [
                EventIn(user_id="bob", item_id="Thriller", type="rating", value=4.5, ts=100.0),
                {"user_id": "bob", "item_id": odd, "type": "view", "client_event_id": "e1"},
                {"user_id": "ann", "item_id": "Thriller", "type": "click"},
            ]
        )
        assert (batch.stored, batch.duplicates) == (2, 1)  # e1 was stored already
        assert batch.results[1].seq == first.seq
        events = client.user_events("bob")
        assert [(e.item_id, e.type, e.value, e.ts) for e in events] == [
            ("Thriller", "rating", 4.5, 100.0)
        ]
        assert [e.type for e in client.user_events("ann", limit=1)] == ["click"]

        assert client.delete_user("ann").events == 2
        assert raised(client.get_user, "ann").status == 404
        assert client.delete_item("Thriller").deleted == "Thriller"
        assert client.user_events("bob") == []  # the item's events went with it


def test_lists_follow_the_request_options(served: tuple[Client, Any]) -> None:
    client, _ = served
    plain = client.recommend("p0", k=3)
    assert plain.user == "p0" and plain.model_version == 1
    assert sorted(ids(plain)) == ["j3", "j4", "j5"]  # the unseen jazz items
    explained = client.recommend("p0", 3, explain=True)
    assert all(row.explanation for row in explained.items)
    assert {b for row in explained.items for b in row.because or []} <= {"j0", "j1", "j2"}
    assert set(ids(client.recommend("p0", k=3, include_categories=["rock"]))) <= set(ROCK)
    assert set(ids(client.recommend("p0", k=6, exclude_categories=["jazz"]))) <= set(ROCK)
    one = client.recommend("p0", k=3, include_categories="rock", generators="popular")
    assert set(ids(one)) <= set(ROCK)  # a text is one value, not its letters
    assert sorted(ids(client.recommend("p0", k=3, filters=["year>=1964", "style=jazz"]))) == [
        "j4",
        "j5",
    ]
    mixed = client.recommend("p0", k=4, max_per_category=2)
    assert sorted(i[0] for i in ids(mixed)) == ["j", "j", "r", "r"]
    assert client.recommend("p0", k=4, diversity=0.9).items
    popular = client.recommend("p0", k=3, generators=["popular", "new"])
    assert {s for row in popular.items for s in row.sources} <= {"popular", "new"}
    assert client.recommend("p0", k=3, freshness=0.0).items

    session = client.recommend_session(["r0", "r1"], k=2, explain=True, max_per_category=5)
    assert session.user is None and set(ids(session)) <= set(ROCK) - {"r0", "r1"}
    first = client.onboard("newbie", liked_items=["r2"], attributes={"city": "Oslo"}, k=3)
    assert set(ids(first)) <= set(ROCK) - {"r2"} and first.items[0].explanation
    client.onboard("newbie", liked_items=["r2"])  # the same likes are stored once
    assert [e.item_id for e in client.user_events("newbie")] == ["r2"]
    assert client.get_user("newbie").attributes == {"city": "Oslo"}

    similar = client.similar_items("j0", k=2)
    assert similar.item == "j0" and set(ids(similar)) <= set(JAZZ) - {"j0"}
    outcome = client.feedback(plain.request_id, "p0", ids(plain)[0], "skip")
    assert (outcome.request_id, outcome.type) == (plain.request_id, "skip")
    assert client.feedback(plain.request_id, "p0", ids(plain)[0], "skip").id == outcome.id


def test_admin_experiments_and_health(served: tuple[Client, Any]) -> None:
    client, _ = served
    second = client.retrain(wait=True).version
    assert second is not None and second.id == 2 and second.active
    assert [m.id for m in client.models()] == [1, 2]
    assert client.activate_model(1).active
    stats = client.stats()
    assert (stats.users, stats.items, stats.model_version) == (16, 12, 1)
    assert client.retrain().status in ("started", "already training")

    variants: list[Variant | dict[str, Any]] = [
        Variant(name="one", share=0.5, model_version=1),
        {"name": "two", "share": 0.5, "pipeline": {"max_per_category": 1}},
    ]
    started = client.start_experiment("ab", variants)
    assert started.status == "running" and [v["name"] for v in started.variants] == ["one", "two"]
    answer = client.recommend("p1", k=3)
    assert answer.experiment == "ab" and answer.variant in ("one", "two")
    client.add_event("p1", answer.items[0].item, "click", request_id=answer.request_id)
    report = client.experiment_report("ab", outcome="click", alpha=0.1)
    by_name = {row.variant: row for row in report.variants}
    assert by_name[answer.variant].outcome_users == 1 and report.test.alpha == 0.1
    assert [e.name for e in client.experiments()] == ["ab"]
    assert client.stop_experiment("ab").status == "stopped"
    assert client.exploration().method == "off"

    assert client.live()["pid"] == client.ready().pid
    ready = client.wait_ready(5, with_model=True)
    assert ready.status == "ready" and ready.model_version in (1, 2, 3)
    assert "tastebud_requests_total" in client.metrics()


# -- errors ----------------------------------------------------------------------------------
def test_error_answers_raise_service_error_with_status_and_code(
    served: tuple[Client, Any],
) -> None:
    client, _ = served
    unknown = raised(client.get_user, "nobody")
    assert (unknown.status, unknown.code) == (404, "not_found")
    assert "nobody" in unknown.message and str(unknown).startswith("HTTP 404 not_found: ")
    assert isinstance(unknown, TastebudError)
    assert raised(client.similar_items, "nothing").code == "not_found"
    assert raised(client.patch_item, "nothing", title="x").status == 404

    bad_body = raised(client.add_event, "p0", "j0", "")  # an empty type
    assert (bad_body.status, bad_body.code) == (422, "invalid_request")
    assert bad_body.details["problems"][0]["where"] == "body.type"
    bad_type = raised(client.add_event, "p0", "j0", "teleport")
    assert bad_type.message.startswith("body.type") and "'like'" in bad_type.message
    missing = raised(client.add_events, [{"user_id": "p0", "item_id": "ghost", "type": "like"}])
    assert (missing.code, missing.details["missing"]) == ("unknown_reference", ["ghost"])
    assert raised(client.recommend, "p0", k=0).message.startswith("query.k")
    assert "magic" in raised(client.recommend, "p0", generators=["magic"]).message
    assert "nonsense" in raised(client.recommend, "p0", filters=["nonsense"]).message
    twice = [{"name": "a", "share": 0.5}, {"name": "a", "share": 0.5}]
    assert "a twice" in raised(client.start_experiment, "x", twice).message
    assert raised(client.experiment_report, "nothing").status == 404
    assert raised(client.activate_model, 99).status == 404

    fine = [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.5}]
    client.start_experiment("taken", fine)
    assert raised(client.start_experiment, "taken", fine).status == 409


def test_keys_are_sent_and_refusals_raise(tmp_path: Path) -> None:
    keys = {
        "read_key": "read-key-0123456789",
        "api_key": "write-key-0123456789",
        "admin_key": "admin-key-0123456789",
    }
    with app_server(create_app(settings(tmp_path, **keys))) as base:
        with Client(base) as anonymous:
            refused = raised(anonymous.list_users)
            assert (refused.status, refused.code) == (401, "unauthorized")
            assert anonymous.live()["status"] == "alive"  # health is open
        with Client(base, api_key="read-key-0123456789") as reader:
            assert reader.list_users() == []
            forbidden = raised(reader.put_user, "ann")
            assert (forbidden.status, forbidden.code) == (403, "forbidden")
        with Client(base, api_key="write-key-0123456789") as writer:
            assert writer.put_user("ann").id == "ann"
            assert raised(writer.stats).status == 403
        with Client(base, api_key="admin-key-0123456789") as admin:
            assert admin.stats().users == 1 and admin.get_user("ann").id == "ann"


# -- the async client --------------------------------------------------------------------------
@pytest.mark.anyio
async def test_async_client_in_process(tmp_path: Path) -> None:
    import anyio

    app = create_app(settings(tmp_path))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        AsyncClient("http://tastebud", transport=transport) as client,
    ):
        for n, item in enumerate(JAZZ + ROCK):
            await client.put_item(item, attributes={"style": "jazz" if n < 6 else "rock"})
        batch = await client.add_events(likes())
        assert batch.stored == len(likes())
        assert (await client.retrain(wait=True)).status == "done"

        answers: dict[str, RecommendationList] = {}

        async def recommend(user: str) -> None:
            answers[user] = await client.recommend(user, k=3, explain=True)

        async with anyio.create_task_group() as group:  # concurrent requests, one pool
            for user in ("p0", "q0", "p3"):
                group.start_soon(recommend, user)
        assert sorted(ids(answers["p0"])) == ["j3", "j4", "j5"]
        assert sorted(ids(answers["q0"])) == ["r3", "r4", "r5"]
        assert set(ids(answers["p3"])) == {"j0", "j1", "j2"}

        stored = await client.add_event("p0", "j3", "like", client_event_id="a1")
        assert (await client.add_event("p0", "j3", "like", client_event_id="a1")).seq == stored.seq
        assert "j3" not in ids(await client.recommend("p0", k=3))  # the next list reflects it
        assert (await client.get_user("p0")).id == "p0"
        assert (await client.wait_ready(5, with_model=True)).model_version == 1
        with pytest.raises(ServiceError) as caught:
            await client.get_item("nothing")
        assert (caught.value.status, caught.value.code) == (404, "not_found")
        with pytest.raises(ServiceError) as caught:
            await client.recommend_session(["j0"], k=0)
        assert caught.value.status == 422


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- transport failures and retries (a mock transport: a healthy server gives none) ----------
class Flaky:
    """A transport answering ``failures`` (statuses or exceptions) in turn, then 200."""

    def __init__(self, *failures: int | Exception, body: Any = None) -> None:
        self.failures = list(failures)
        self.body = {"seq": 7, "duplicate": False} if body is None else body
        self.sent: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            error = {"error": {"type": "database_unavailable", "message": "try again"}}
            return httpx.Response(failure, json=error)
        return httpx.Response(200, json=self.body)


def flaky_client(flaky: Flaky, retries: int = 2) -> Client:
    transport = httpx.MockTransport(flaky)
    return Client("http://svc", transport=transport, retries=retries, backoff_s=0)


def test_safe_requests_are_retried_a_bounded_number_of_times() -> None:
    flaky = Flaky(503, 502, body={"status": "alive", "pid": 1})
    assert flaky_client(flaky).live() == {"status": "alive", "pid": 1}
    assert len(flaky.sent) == 3

    flaky = Flaky(503, 503, 503)
    failed = raised(flaky_client(flaky).live)
    assert (failed.status, failed.code, len(flaky.sent)) == (503, "database_unavailable", 3)

    timeout = httpx.ReadTimeout("slow")
    flaky = Flaky(timeout)  # an event with client_event_id: stored once however often sent
    assert flaky_client(flaky).add_event("u", "i", "like", client_event_id="e").seq == 7
    assert len(flaky.sent) == 2 and flaky.sent[0].content == flaky.sent[1].content

    for failure in (503, timeout):  # without it, a repeat could store the event twice
        flaky = Flaky(failure)
        error = raised(flaky_client(flaky).add_event, "u", "i", "like")
        assert len(flaky.sent) == 1
        assert error.code == ("timeout" if failure is timeout else "database_unavailable")
    flaky = Flaky(503)
    raised(flaky_client(flaky).add_events, [{"user_id": "u", "item_id": "i", "type": "like"}])
    assert len(flaky.sent) == 1
    flaky = Flaky(503)
    raised(flaky_client(flaky).retrain)
    assert len(flaky.sent) == 1

    for failure in (httpx.ConnectError("refused"), httpx.ConnectTimeout("no SYN-ACK")):
        flaky = Flaky(failure)  # nothing was sent: safe for any request
        assert flaky_client(flaky).add_event("u", "i", "like").seq == 7
        assert len(flaky.sent) == 2
    flaky = Flaky(503, 503)
    assert raised(flaky_client(flaky, retries=0).live).status == 503
    assert len(flaky.sent) == 1


def test_pauses_double_up_to_a_bound() -> None:
    with Client("http://svc", retries=10, backoff_s=0.5) as client:
        call = _Routes.live()
        pauses = [client._pause(n, call, 503) for n in range(11)]
        assert pauses == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, None]
        assert client._pause(0, _Routes.add_event("u", "i", "like"), 503) is None
    with pytest.raises(ValueError):
        Client("http://svc", retries=-1)


def test_failures_without_a_service_answer_are_one_clear_line(tmp_path: Path) -> None:
    from serving import free_port

    base = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with Client(base, retries=1, backoff_s=0) as client:
        down = raised(client.get_user, "ann")
    assert (down.status, down.code) == (None, "unreachable")
    assert str(down).startswith(f"unreachable: cannot connect to {base}: ")
    assert "\n" not in str(down)

    proxy = httpx.MockTransport(lambda _: httpx.Response(502, text="<html>Bad Gateway</html>"))
    gateway = raised(Client("http://svc", transport=proxy, retries=0).get_user, "ann")
    assert (gateway.status, gateway.code, gateway.message) == (
        502,
        "http_error",
        "<html>Bad Gateway</html>",
    )
    wrong = httpx.MockTransport(lambda _: httpx.Response(200, json={"id": "ann"}))
    unreadable = raised(Client("http://svc", transport=wrong).get_user, "ann")
    assert (unreadable.status, unreadable.code) == (200, "invalid_response")
    with pytest.raises(ValueError):
        Client("http://svc", transport=proxy, http_client=httpx.Client())


def test_an_http_client_of_ones_own_is_used_and_left_open(served: tuple[Client, Any]) -> None:
    client, _ = served
    seen: list[str] = []
    own = httpx.Client(event_hooks={"request": [lambda r: seen.append(r.url.path)]})
    with Client(client.base_url, http_client=own) as mine:
        assert mine.get_item("j0").id == "j0"
    assert seen == ["/items/j0"] and not own.is_closed
    own.close()


# -- the description of the API ------------------------------------------------------------
#: A call of each client method (arguments) -> the route it must reach.
CALLS: dict[str, tuple[tuple[Any, ...], str, str]] = {
    "put_user": (("u",), "PUT", "/users/{user_id}"),
    "get_user": (("u",), "GET", "/users/{user_id}"),
    "list_users": ((), "GET", "/users"),
    "delete_user": (("u",), "DELETE", "/users/{user_id}"),
    "user_events": (("u",), "GET", "/users/{user_id}/events"),
    "put_item": (("i",), "PUT", "/items/{item_id}"),
    "patch_item": (("i",), "PATCH", "/items/{item_id}"),
    "get_item": (("i",), "GET", "/items/{item_id}"),
    "list_items": ((), "GET", "/items"),
    "delete_item": (("i",), "DELETE", "/items/{item_id}"),
    "add_event": (("u", "i", "like"), "POST", "/events"),
    "add_events": (([],), "POST", "/events/batch"),
    "recommend": (("u",), "GET", "/users/{user_id}/recommendations"),
    "recommend_session": ((["i"],), "POST", "/recommendations"),
    "onboard": (("u",), "POST", "/users/{user_id}/onboarding"),
    "feedback": (("r", "u", "i", "skip"), "POST", "/feedback"),
    "similar_items": (("i",), "GET", "/items/{item_id}/similar"),
    "retrain": ((), "POST", "/admin/retrain"),
    "models": ((), "GET", "/admin/models"),
    "activate_model": ((1,), "POST", "/admin/models/{version_id}/activate"),
    "stats": ((), "GET", "/admin/stats"),
    "start_experiment": (("x", []), "POST", "/admin/experiments"),
    "experiments": ((), "GET", "/admin/experiments"),
    "stop_experiment": (("x",), "POST", "/admin/experiments/{name}/stop"),
    "experiment_report": (("x",), "GET", "/admin/experiments/{name}/report"),
    "exploration": ((), "GET", "/admin/exploration"),
    "live": ((), "GET", "/health/live"),
    "ready": ((), "GET", "/health/ready"),
    "metrics": ((), "GET", "/metrics"),
}


def test_every_route_of_the_api_has_a_method_in_both_clients(tmp_path: Path) -> None:
    schema = create_app(settings(tmp_path)).openapi()
    documented = {
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        if not path.startswith("/ui")
        for method in operations
    }
    reached = set()
    for name, (args, method, template) in CALLS.items():
        call = getattr(_Routes, name)(*args)
        pattern = re.sub(r"\{[^}]+\}", "[^/]+", template)
        assert call.method == method and re.fullmatch(pattern, call.path), name
        reached.add((method, template))
    assert documented <= reached, documented - reached

    def methods(cls: type) -> set[str]:
        return {n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n))}

    assert methods(Client) - {"close"} == methods(AsyncClient) - {"aclose"}
    assert methods(Client) == set(CALLS) | {"close", "wait_ready"}
    for name in CALLS:
        sync, coroutine = getattr(Client, name), getattr(AsyncClient, name)
        assert inspect.signature(sync) == inspect.signature(coroutine), name
        assert sync.__doc__ and sync.__doc__ == coroutine.__doc__, name
        assert inspect.iscoroutinefunction(coroutine) and not inspect.iscoroutinefunction(sync)
        assert sync.__qualname__ == f"Client.{name}"
    signature = inspect.signature(Client.recommend)
    assert list(signature.parameters)[:3] == ["self", "user_id", "k"]
    assert signature.return_annotation == "RecommendationList"


def test_list_options_are_the_services_per_request_settings() -> None:
    options = set(ListOptions.__annotations__)
    assert options == set(Stages.model_fields)
    query = {"filter" if name == "filters" else name for name in options}
    assert query == {p["name"] for p in recommend_query_docs(10)} - {"k", "explain"}
    assert repr(UNSET) == "UNSET"


# -- a real ``tastebud serve``, and the README's walk-through on it ------------------------
def readme_snippets() -> list[str]:
    """The Python blocks of the README's Service section."""
    text = README.read_text()
    section = text[text.index("\n## Service") :]
    end = section.find("\n## ", 1)
    section = section if end < 0 else section[:end]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


@pytest.mark.slow
def test_the_readme_walk_through_runs_on_tastebud_serve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snippets = readme_snippets()
    assert snippets, "the README's Service section has no Python block"
    # the default keys: an admin key generated at the first start into the model folder
    with sample_server(tmp_path, TASTEBUD_MODEL="item-knn", TASTEBUD_INSECURE="false") as base:
        key_file = tmp_path / "models" / "admin.key"
        namespace: dict[str, Any] = {}
        for code in snippets:  # as a reader would paste them, on this server
            code = code.replace("http://127.0.0.1:8000", base)
            code = code.replace('"tastebud-models/admin.key"', repr(str(key_file)))
            exec(compile(code, str(README), "exec"), namespace)
        assert capsys.readouterr().out.strip()  # it printed what it says it prints

        with Client(base, api_key=key_file.read_text().strip()) as client:
            assert client.wait_ready(5, with_model=True).model_version is not None
            stats = client.stats()
            assert stats.users >= 300 and stats.items > 0
            first = client.list_items(limit=1)[0].id
            stored = client.add_event("u001", first, "dislike", client_event_id="t1")
            assert (
                client.add_event("u001", first, "dislike", client_event_id="t1").seq == stored.seq
            )
            assert first not in ids(client.recommend("u001", k=20))
            assert raised(client.get_user, "nobody").status == 404
