"""The pipeline, cold start, experiments and exploration through the HTTP API.

The catalogue is the two taste clusters of ``test_app`` (a-items liked by u0..u19, b-items by
u20..u39), with categories (a: jazz, b: rock), years, and cities for the users (Paris for the
a-cluster, Oslo for the b-cluster), so every right answer is known."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from service.test_app import (
    A_ITEMS,
    B_ITEMS,
    U0_LIKES,
    ApiClient,
    cluster_likes,
    error,
    ids,
    make_settings,
    ok,
    recs,
    serve,
    title,
)
from tastebud.service.experiments import assign

TASTEBUD = str(Path(sys.executable).parent / "tastebud")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.upper().startswith("TASTEBUD_") and name.upper() != "TASTEBUD_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)


def seed_catalogue(client: ApiClient) -> None:
    for n, item in enumerate(A_ITEMS + B_ITEMS):
        genre = "jazz" if item.startswith("a") else "rock"
        attrs = {"genre": genre, "year": 1990 + 2 * n, "tags": [genre, f"t{n % 3}"]}
        ok(client.put(f"/items/{item}", json={"title": title(item), "attributes": attrs}))
    for u in range(40):
        city = "Paris" if u < 20 else "Oslo"
        ok(client.put(f"/users/u{u}", json={"attributes": {"city": city, "age": 20 + u % 30}}))
    ok(client.post("/events/batch", json={"events": cluster_likes()}), 201)


def start(tmp_path: Path, **overrides: Any) -> Iterator[ApiClient]:
    with serve(make_settings(tmp_path, **overrides)) as client:
        seed_catalogue(client)
        ok(client.post("/admin/retrain", params={"wait": "true"}))
        yield client


@pytest.fixture
def client(tmp_path: Path) -> Iterator[ApiClient]:
    """SQLite, the default model (ALS), the catalogue seeded and one version trained."""
    yield from start(tmp_path)


# -- generators and sources ------------------------------------------------------------------
def test_every_item_names_its_generators_and_generators_can_be_chosen(client: ApiClient) -> None:
    answer = recs(client, "u0", k=6, explain="true")
    for row in answer["items"]:
        assert row["source"] == row["sources"][0]
        assert set(row["sources"]) <= {"model", "item_to_item", "popular", "new", "demographic"}
        assert row["item"] in A_ITEMS and row["item"] not in U0_LIKES
    # a-items are both the model's picks and neighbours of u0's recent likes
    assert any("item_to_item" in row["sources"] for row in answer["items"])

    only_popular = recs(client, "u0", k=6, generators="popular")
    assert all(row["sources"] == ["popular"] for row in only_popular["items"])
    # ranked by the model all the same: u0 still gets a-items first
    assert ids(only_popular)[0] in A_ITEMS

    bad = error(client.get("/users/u0/recommendations", params={"generators": "magic"}), 422)
    assert "magic" in bad["message"]


def test_item_to_item_explains_with_the_recent_item_it_came_from(client: ApiClient) -> None:
    answer = recs(client, "u0", k=5, explain="true", generators="item_to_item")
    assert len(answer["items"]) == 5
    for row in answer["items"]:
        assert row["sources"] == ["item_to_item"]
        (liked,) = row["because"]
        assert liked in U0_LIKES
        assert row["explanation"] == f"because you liked {title(liked)}"


# -- business filters and re-rankers ---------------------------------------------------------
def test_category_and_attribute_filters(client: ApiClient) -> None:
    # u0 likes jazz, but asked for rock gets rock only
    rock = recs(client, "u0", k=5, include_categories="rock")
    assert len(rock["items"]) == 5 and set(ids(rock)) <= set(B_ITEMS)
    no_jazz = recs(client, "u0", k=5, exclude_categories="JAZZ")  # case does not matter
    assert set(ids(no_jazz)) <= set(B_ITEMS)
    # year: a-items are 1990..2008, b-items 2010..2028
    recent = recs(client, "u0", k=5, filter="year>=2020")
    assert {int(i[1:]) for i in ids(recent)} <= {5, 6, 7, 8, 9}
    assert set(ids(recent)) <= set(B_ITEMS)
    both = ok(
        client.get(
            "/users/u0/recommendations",
            params=[("k", "10"), ("filter", "year>=1994"), ("filter", "tags=t0")],
        )
    )
    for item in ids(both):
        n = (A_ITEMS + B_ITEMS).index(item)
        assert 1990 + 2 * n >= 1994 and n % 3 == 0
    bad = error(client.get("/users/u0/recommendations", params={"filter": "year>=soon"}), 422)
    assert "year>=soon" in bad["message"]
    error(client.get("/users/u0/recommendations", params={"filter": "nonsense"}), 422)


def test_category_cap_and_diversity_mix_the_list(client: ApiClient) -> None:
    plain = recs(client, "u0", k=6)
    assert set(ids(plain)) <= set(A_ITEMS)  # six unseen a-items: all jazz
    capped = recs(client, "u0", k=6, max_per_category=3)
    genres = ["jazz" if i in A_ITEMS else "rock" for i in ids(capped)]
    assert genres.count("jazz") == 3 and genres.count("rock") == 3
    diverse = recs(client, "u0", k=6, diversity=0.9)
    assert ids(diverse)[0] == ids(plain)[0]  # MMR's first pick is the most relevant
    assert set(ids(diverse)) & set(B_ITEMS)  # then it reaches for the other cluster
    error(client.get("/users/u0/recommendations", params={"diversity": 2}), 422)


def test_a_new_item_is_recommended_before_the_next_retrain(client: ApiClient) -> None:
    # the catalogue came out two months ago
    store = client.app.state.storage  # type: ignore[attr-defined]
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE items SET created_at = created_at - 60 * 86400"))
    client.app.state.engine.catalog.reload()  # type: ignore[attr-defined]
    ok(client.put("/items/fresh", json={"title": "Just out", "attributes": {"genre": "jazz"}}))
    plain = recs(client, "u0", k=5)
    assert "fresh" not in ids(plain)  # the model does not know it; no boost asked
    boosted = recs(client, "u0", k=5, freshness=2, explain="true")
    first = boosted["items"][0]
    assert first["item"] == "fresh" and first["sources"] == ["new"]
    assert first["explanation"] == "new arrival"
    # liked by many at once it is popular, so a cold user sees it without any boost
    likes = [{"user_id": f"fan{n}", "item_id": "fresh", "type": "purchase"} for n in range(30)]
    ok(client.post("/events/batch", json={"events": likes}), 201)
    cold = recs(client, "brand-new-user", k=3)
    assert ids(cold)[0] == "fresh"
    # unavailable: gone from every list at once
    ok(client.patch("/items/fresh", json={"available": False}))
    assert "fresh" not in ids(recs(client, "brand-new-user", k=10, freshness=5))


# -- cold start --------------------------------------------------------------------------------
def test_onboarding_with_likes_and_with_attributes(client: ApiClient) -> None:
    answer = ok(client.post("/users/newbie/onboarding", json={"liked_items": ["b1", "b2"], "k": 5}))
    assert answer["user"] == "newbie"
    assert set(ids(answer)) <= set(B_ITEMS) - {"b1", "b2"}
    assert all(row["explanation"] for row in answer["items"])
    again = ok(client.post("/users/newbie/onboarding", json={"liked_items": ["b1", "b2"]}))
    assert again["items"]
    events = ok(client.get("/users/newbie/events"))
    assert sorted(e["item_id"] for e in events) == ["b1", "b2"]  # stored once

    # attributes only: people from Oslo liked b-items
    oslo = ok(
        client.post("/users/viking/onboarding", json={"attributes": {"city": "Oslo"}, "k": 5})
    )
    assert ok(client.get("/users/viking"))["attributes"] == {"city": "Oslo"}
    assert set(ids(oslo)) <= set(B_ITEMS)
    assert oslo["items"][0]["source"] == "demographic"
    assert oslo["items"][0]["explanation"] == "liked by people like you"
    paris = ok(client.post("/users/parisian/onboarding", json={"attributes": {"city": "paris"}}))
    assert ids(paris)[:5] and set(ids(paris)[:5]) <= set(A_ITEMS)

    unknown = error(client.post("/users/x/onboarding", json={"liked_items": ["nope"]}), 422)
    assert "nope" in unknown["message"]


# -- experiments -----------------------------------------------------------------------------
def test_ab_test_between_two_versions_with_report(client: ApiClient, tmp_path: Path) -> None:
    first = ok(client.get("/admin/models"))[0]
    second = ok(client.post("/admin/retrain", params={"wait": "true"}))["version"]
    assert first["metrics"]["ndcg@10"] > 0  # offline metrics on a holdout
    assert "precision@10" in first["metrics"] and "recall@10" in first["metrics"]
    assert 0 < first["metrics"]["coverage@10"] <= 1
    spec = {
        "name": "als-v1-vs-v2",
        "variants": [
            {"name": "control", "share": 0.5, "model_version": first["id"]},
            {"name": "treatment", "share": 0.5, "model_version": second["id"]},
        ],
    }
    created = ok(client.post("/admin/experiments", json=spec), 201)
    assert created["status"] == "running"
    error(client.post("/admin/experiments", json=spec), 409)  # the name is taken

    users = [f"u{n}" for n in range(40)]
    clicked: dict[str, int] = {"control": 0, "treatment": 0}
    for user in users:
        answer = recs(client, user, k=5)
        variant = assign(created, user)["name"]
        assert answer["experiment"] == "als-v1-vs-v2" and answer["variant"] == variant
        version = first["id"] if variant == "control" else second["id"]
        assert answer["model_version"] == version
        if variant == "treatment":  # every treatment user clicks their first item
            event = {
                "user_id": user,
                "item_id": answer["items"][0]["item"],
                "type": "click",
                "request_id": answer["request_id"],
            }
            ok(client.post("/events", json=event), 201)
            ok(client.post("/events", json=event), 201)  # a retry counts once
            clicked[variant] += 1
    report = ok(client.get("/admin/experiments/als-v1-vs-v2/report"))
    by_name = {row["variant"]: row for row in report["variants"]}
    n_treatment = sum(assign(created, u)["name"] == "treatment" for u in users)
    assert by_name["treatment"]["users"] == n_treatment
    assert by_name["control"]["users"] == len(users) - n_treatment
    assert by_name["treatment"]["exposures"] == 5 * n_treatment
    assert by_name["treatment"]["outcome_users"] == n_treatment
    assert by_name["treatment"]["rate"] == 1.0 and by_name["control"]["rate"] == 0.0
    assert report["outcome"] == "click" and report["control"] == "control"
    assert report["test"]["method"] == "two-proportion z-test"
    assert report["test"]["p_value"] < 1e-6 and report["test"]["significant"] is True

    stopped = ok(client.post("/admin/experiments/als-v1-vs-v2/stop"))
    assert stopped["status"] == "stopped"
    time.sleep(0.01)
    assert recs(client, "u0", k=3)["experiment"] is None

    # the same report from the command line, on the same database
    db = f"sqlite:///{tmp_path / 'service.db'}"
    cli = subprocess.run(
        [TASTEBUD, "experiments", "report", "als-v1-vs-v2", "--db", db, "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(cli.stdout)["variants"] == report["variants"]
    table = subprocess.run(
        [TASTEBUD, "experiments", "report", "als-v1-vs-v2", "--db", db],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "treatment" in table and "100.00%" in table and "-> significant" in table


def test_experiment_requests_are_checked(client: ApiClient) -> None:
    variants = [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.6}]
    bad = error(client.post("/admin/experiments", json={"name": "x", "variants": variants}), 422)
    assert "add up to 1.1" in bad["message"]
    variants = [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.5, "model_version": 99}]
    error(client.post("/admin/experiments", json={"name": "x", "variants": variants}), 404)
    variants = [
        {"name": "a", "share": 0.5},
        {"name": "b", "share": 0.5, "pipeline": {"diversity": 5}},
    ]
    bad = error(client.post("/admin/experiments", json={"name": "x", "variants": variants}), 422)
    assert "diversity" in bad["message"]
    error(client.get("/admin/experiments/nothing/report"), 404)
    error(client.post("/admin/experiments/nothing/stop"), 404)


def test_a_variant_can_change_the_pipeline(client: ApiClient) -> None:
    variants = [
        {"name": "focused", "share": 0.5},
        {"name": "mixed", "share": 0.5, "pipeline": {"max_per_category": 2}},
    ]
    experiment = ok(
        client.post("/admin/experiments", json={"name": "cap", "variants": variants}), 201
    )
    liked: dict[str, set[str]] = {}
    for event in cluster_likes():
        liked.setdefault(event["user_id"], set()).add(event["item_id"])
    arms = set()
    for n in range(20):  # the a-cluster: unseen jazz items rank first
        user = f"u{n}"
        answer = recs(client, user, k=4)
        assert len(answer["items"]) == 4  # a cap never leaves a list short
        jazz = sum(item in A_ITEMS for item in ids(answer))
        unseen = len(set(A_ITEMS) - liked[user])
        arm = assign(experiment, user)["name"]
        arms.add(arm)
        assert answer["variant"] == arm
        assert jazz == min(unseen, 2 if arm == "mixed" else 4)
    assert arms == {"focused", "mixed"}


# -- exploration -------------------------------------------------------------------------------
def test_epsilon_greedy_slot_is_logged_apart(tmp_path: Path) -> None:
    exploration = {"method": "epsilon", "epsilon": 1.0, "position": 2}
    for client in start(tmp_path, exploration=exploration):
        answer = recs(client, "u0", k=4, explain="true")
        explored = [row for row in answer["items"] if row["exploration"]]
        assert len(explored) == 1 and answer["items"][1] is explored[0]
        assert explored[0]["source"] == "exploration"
        assert explored[0]["explanation"].startswith("something different")
        assert len(answer["items"]) == 4
        ranked = [row["item"] for row in answer["items"] if not row["exploration"]]
        assert explored[0]["item"] not in ranked  # drawn from what missed the list
        event = {
            "user_id": "u0",
            "item_id": explored[0]["item"],
            "type": "like",
            "request_id": answer["request_id"],
        }
        ok(client.post("/events", json=event), 201)
        again = recs(client, "u1", k=4)
        assert sum(row["exploration"] for row in again["items"]) == 1
        stats = ok(client.get("/admin/exploration"))
        assert stats["method"] == "epsilon"
        # the explored exposures of both lists; one was answered
        assert stats["exposures"] == 2 and stats["answered"] == 1


def test_thompson_sampling_explores_one_slot_per_list(tmp_path: Path) -> None:
    for client in start(tmp_path, exploration={"method": "thompson"}):
        for n in range(5):
            answer = recs(client, f"u{n}", k=5)
            assert sum(row["exploration"] for row in answer["items"]) == 1
            assert answer["items"][2]["exploration"]  # the default position is 3
        assert ok(client.get("/admin/stats"))["exploration"] == "thompson"


def test_a_warm_users_list_is_served_again_until_something_of_theirs_changes(
    client: ApiClient,
) -> None:
    before = ok(client.get("/admin/stats"))
    first = recs(client, "u0", k=5)
    second = recs(client, "u0", k=5)
    assert ids(second) == ids(first) and second["request_id"] != first["request_id"]
    after = ok(client.get("/admin/stats"))
    assert after["list_cache"]["hits"] == before["list_cache"]["hits"] + 1
    assert after["state_cache"]["hits"] >= before["state_cache"]["hits"] + 1  # the 2nd read
    # an item made unavailable leaves the kept list at once
    ok(client.patch(f"/items/{ids(first)[0]}", json={"available": False}))
    third = recs(client, "u0", k=5)
    assert ids(first)[0] not in ids(third) and len(third["items"]) == 5
    # the user's own event changes the history, so the list is rebuilt
    like = {"user_id": "u0", "item_id": ids(third)[0], "type": "like"}
    ok(client.post("/events", json=like), 201)
    assert ids(third)[0] not in ids(recs(client, "u0", k=5))
    # other options are another list
    assert recs(client, "u0", k=5, diversity=0.5)["items"]


def test_a_low_rating_is_a_dislike_and_a_high_one_a_like(client: ApiClient) -> None:
    def rate(item: str, stars: float) -> None:
        event = {"user_id": "critic", "item_id": item, "type": "rating", "value": stars}
        ok(client.post("/events", json=event), 201)

    rate("a1", 5)
    liked = recs(client, "critic", k=5)
    assert set(ids(liked)) <= set(A_ITEMS)  # five stars: the a-cluster
    rate(ids(liked)[0], 1)  # one star hides the item and adds nothing to the taste
    after = recs(client, "critic", k=5)
    assert ids(liked)[0] not in ids(after)
    assert set(ids(after)) <= set(A_ITEMS)
    rate("a1", 2)  # the latest word on a1: the only liked item is gone, popularity answers
    assert {row["source"] for row in recs(client, "critic", k=3)["items"]} == {"popular"}
