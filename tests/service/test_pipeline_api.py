"""The pipeline, cold start, experiments and exploration through the HTTP API, with
:class:`tastebud.client.Client`.

The catalogue is the two taste clusters of ``test_app`` (a-items liked by u0..u19, b-items by
u20..u39), with categories (a: jazz, b: rock), years, and cities for the users (Paris for the
a-cluster, Oslo for the b-cluster), so every right answer is known."""

from __future__ import annotations

import contextlib
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
    cluster_likes,
    make_settings,
    title,
)
from serving import ids, raised, served_app
from tastebud.client import Client
from tastebud.service.experiments import assign

TASTEBUD = str(Path(sys.executable).parent / "tastebud")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.upper().startswith("TASTEBUD_") and name.upper() != "TASTEBUD_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)


def seed_catalogue(client: Client) -> None:
    for n, item in enumerate(A_ITEMS + B_ITEMS):
        genre = "jazz" if item.startswith("a") else "rock"
        attrs = {"genre": genre, "year": 1990 + 2 * n, "tags": [genre, f"t{n % 3}"]}
        client.put_item(item, title=title(item), attributes=attrs)
    for u in range(40):
        city = "Paris" if u < 20 else "Oslo"
        client.put_user(f"u{u}", {"city": city, "age": 20 + u % 30})
    client.add_events(cluster_likes())


@contextlib.contextmanager
def start(tmp_path: Path, **overrides: Any) -> Iterator[tuple[Client, Any]]:
    """The service over SQLite (``overrides`` its settings), seeded, one version trained:
    a client and the app it talks to."""
    with served_app(make_settings(tmp_path, **overrides)) as (client, app):
        seed_catalogue(client)
        client.retrain(wait=True)
        yield client, app


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Client, Any]]:
    """SQLite, the default model (ALS), the catalogue seeded and one version trained."""
    with start(tmp_path) as running:
        yield running


@pytest.fixture
def client(running: tuple[Client, Any]) -> Client:
    return running[0]


# -- generators and sources ------------------------------------------------------------------
def test_every_item_names_its_generators_and_generators_can_be_chosen(client: Client) -> None:
    answer = client.recommend("u0", k=6, explain=True)
    for row in answer.items:
        assert row.source == row.sources[0]
        assert set(row.sources) <= {"model", "item_to_item", "popular", "new", "demographic"}
        assert row.item in A_ITEMS and row.item not in U0_LIKES
    # a-items are both the model's picks and neighbours of u0's recent likes
    assert any("item_to_item" in row.sources for row in answer.items)

    only_popular = client.recommend("u0", k=6, generators=["popular"])
    assert all(row.sources == ["popular"] for row in only_popular.items)
    # ranked by the model all the same: u0 still gets a-items first
    assert ids(only_popular)[0] in A_ITEMS

    bad = raised(client.recommend, "u0", generators=["magic"])
    assert (bad.status, bad.code) == (422, "invalid_request") and "magic" in bad.message


def test_item_to_item_explains_with_the_recent_item_it_came_from(client: Client) -> None:
    answer = client.recommend("u0", k=5, explain=True, generators=["item_to_item"])
    assert len(answer.items) == 5
    for row in answer.items:
        assert row.sources == ["item_to_item"]
        (liked,) = row.because or []
        assert liked in U0_LIKES
        assert row.explanation == f"because you liked {title(liked)}"


# -- business filters and re-rankers ---------------------------------------------------------
def test_category_and_attribute_filters(client: Client) -> None:
    # u0 likes jazz, but asked for rock gets rock only
    rock = client.recommend("u0", k=5, include_categories=["rock"])
    assert len(rock.items) == 5 and set(ids(rock)) <= set(B_ITEMS)
    no_jazz = client.recommend("u0", k=5, exclude_categories=["JAZZ"])  # case does not matter
    assert set(ids(no_jazz)) <= set(B_ITEMS)
    # year: a-items are 1990..2008, b-items 2010..2028
    recent = client.recommend("u0", k=5, filters=["year>=2020"])
    assert {int(i[1:]) for i in ids(recent)} <= {5, 6, 7, 8, 9}
    assert set(ids(recent)) <= set(B_ITEMS)
    both = client.recommend("u0", k=10, filters=["year>=1994", "tags=t0"])
    for item in ids(both):
        n = (A_ITEMS + B_ITEMS).index(item)
        assert 1990 + 2 * n >= 1994 and n % 3 == 0
    bad = raised(client.recommend, "u0", filters=["year>=soon"])
    assert bad.status == 422 and "year>=soon" in bad.message
    assert raised(client.recommend, "u0", filters=["nonsense"]).status == 422


def test_category_cap_and_diversity_mix_the_list(client: Client) -> None:
    plain = client.recommend("u0", k=6)
    assert set(ids(plain)) <= set(A_ITEMS)  # six unseen a-items: all jazz
    capped = client.recommend("u0", k=6, max_per_category=3)
    genres = ["jazz" if i in A_ITEMS else "rock" for i in ids(capped)]
    assert genres.count("jazz") == 3 and genres.count("rock") == 3
    diverse = client.recommend("u0", k=6, diversity=0.9)
    assert ids(diverse)[0] == ids(plain)[0]  # MMR's first pick is the most relevant
    assert set(ids(diverse)) & set(B_ITEMS)  # then it reaches for the other cluster
    assert raised(client.recommend, "u0", diversity=2).status == 422


def test_a_new_item_is_recommended_before_the_next_retrain(
    running: tuple[Client, Any],
) -> None:
    client, app = running
    # the catalogue came out two months ago
    with app.state.storage.engine.begin() as conn:
        conn.execute(sa.text("UPDATE items SET created_at = created_at - 60 * 86400"))
    app.state.engine.catalog.reload()
    client.put_item("fresh", title="Just out", attributes={"genre": "jazz"})
    plain = client.recommend("u0", k=5)
    assert "fresh" not in ids(plain)  # the model does not know it; no boost asked
    boosted = client.recommend("u0", k=5, freshness=2, explain=True)
    first = boosted.items[0]
    assert first.item == "fresh" and first.sources == ["new"]
    assert first.explanation == "new arrival"
    # liked by many at once it is popular, so a cold user sees it without any boost
    client.add_events(
        [{"user_id": f"fan{n}", "item_id": "fresh", "type": "purchase"} for n in range(30)]
    )
    cold = client.recommend("brand-new-user", k=3)
    assert ids(cold)[0] == "fresh"
    # unavailable: gone from every list at once
    client.patch_item("fresh", available=False)
    assert "fresh" not in ids(client.recommend("brand-new-user", k=10, freshness=5))


# -- cold start --------------------------------------------------------------------------------
def test_onboarding_with_likes_and_with_attributes(client: Client) -> None:
    answer = client.onboard("newbie", liked_items=["b1", "b2"], k=5)
    assert answer.user == "newbie"
    assert set(ids(answer)) <= set(B_ITEMS) - {"b1", "b2"}
    assert all(row.explanation for row in answer.items)
    again = client.onboard("newbie", liked_items=["b1", "b2"])
    assert again.items
    events = client.user_events("newbie")
    assert sorted(e.item_id for e in events) == ["b1", "b2"]  # stored once

    # attributes only: people from Oslo liked b-items
    oslo = client.onboard("viking", attributes={"city": "Oslo"}, k=5)
    assert client.get_user("viking").attributes == {"city": "Oslo"}
    assert set(ids(oslo)) <= set(B_ITEMS)
    assert oslo.items[0].source == "demographic"
    assert oslo.items[0].explanation == "liked by people like you"
    paris = client.onboard("parisian", attributes={"city": "paris"})
    assert ids(paris)[:5] and set(ids(paris)[:5]) <= set(A_ITEMS)

    unknown = raised(client.onboard, "x", liked_items=["nope"])
    assert unknown.status == 409 and "nope" in unknown.message


# -- experiments -----------------------------------------------------------------------------
def test_ab_test_between_two_versions_with_report(client: Client, tmp_path: Path) -> None:
    first = client.models()[0]
    second = client.retrain(wait=True).version
    assert second is not None
    assert first.metrics["ndcg@10"] > 0  # offline metrics on a holdout
    assert "the lists the pipeline serves" in first.metrics["holdout"]
    assert first.metrics["model_alone_ndcg@10"] > 0  # beside the model's own top-k
    assert "precision@10" in first.metrics and "recall@10" in first.metrics
    assert 0 < first.metrics["coverage@10"] <= 1
    variants = [
        {"name": "control", "share": 0.5, "model_version": first.id},
        {"name": "treatment", "share": 0.5, "model_version": second.id},
    ]
    created = client.start_experiment("als-v1-vs-v2", variants)
    assert created.status == "running"
    taken = raised(client.start_experiment, "als-v1-vs-v2", variants)
    assert (taken.status, taken.code) == (409, "conflict")

    users = [f"u{n}" for n in range(40)]
    for user in users:
        answer = client.recommend(user, k=5)
        variant = assign(created.model_dump(), user)["name"]
        assert answer.experiment == "als-v1-vs-v2" and answer.variant == variant
        version = first.id if variant == "control" else second.id
        assert answer.model_version == version
        if variant == "treatment":  # every treatment user clicks their first item
            click = (user, answer.items[0].item, "click")
            client.add_event(*click, request_id=answer.request_id)
            client.add_event(*click, request_id=answer.request_id)  # a retry counts once
    report = client.experiment_report("als-v1-vs-v2")
    by_name = {row.variant: row for row in report.variants}
    n_treatment = sum(assign(created.model_dump(), u)["name"] == "treatment" for u in users)
    assert by_name["treatment"].users == n_treatment
    assert by_name["control"].users == len(users) - n_treatment
    assert by_name["treatment"].exposures == 5 * n_treatment
    assert by_name["treatment"].outcome_users == n_treatment
    assert by_name["treatment"].rate == 1.0 and by_name["control"].rate == 0.0
    assert report.outcome == "click" and report.control == "control"
    assert report.test.method == "two-proportion z-test"
    assert report.test.p_value is not None and report.test.p_value < 1e-6
    assert report.test.significant is True

    assert client.stop_experiment("als-v1-vs-v2").status == "stopped"
    time.sleep(0.01)
    assert client.recommend("u0", k=3).experiment is None

    # the same report from the command line, on the same database
    db = f"sqlite:///{tmp_path / 'service.db'}"
    cli = subprocess.run(
        [TASTEBUD, "experiments", "report", "als-v1-vs-v2", "--db", db, "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(cli.stdout)["variants"] == [row.model_dump() for row in report.variants]
    table = subprocess.run(
        [TASTEBUD, "experiments", "report", "als-v1-vs-v2", "--db", db],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "treatment" in table and "100.00%" in table and "-> significant" in table


def test_experiment_requests_are_checked(client: Client) -> None:
    variants: list[dict[str, Any]] = [{"name": "a", "share": 0.5}, {"name": "a", "share": 0.5}]
    bad = raised(client.start_experiment, "x", variants)
    assert bad.status == 409 and "a twice" in bad.message
    # shares are relative: 1 and 3 is a quarter and three quarters
    variants = [{"name": "a", "share": 0.25}, {"name": "b", "share": 0.75}]
    relative = client.start_experiment(
        "relative", [dict(v, share=v["share"] / 4) for v in variants]
    )
    assert [v["share"] for v in relative.variants] == [0.25, 0.75]
    variants = [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.5, "model_version": 99}]
    assert raised(client.start_experiment, "x", variants).status == 404
    variants = [
        {"name": "a", "share": 0.5},
        {"name": "b", "share": 0.5, "pipeline": {"diversity": 5}},
    ]
    bad = raised(client.start_experiment, "x", variants)
    assert bad.status == 422 and "diversity" in bad.message
    assert raised(client.experiment_report, "nothing").status == 404
    assert raised(client.stop_experiment, "nothing").status == 404


def test_a_variant_can_change_the_pipeline(client: Client) -> None:
    variants = [
        {"name": "focused", "share": 0.5},
        {"name": "mixed", "share": 0.5, "pipeline": {"max_per_category": 2}},
    ]
    experiment = client.start_experiment("cap", variants).model_dump()
    liked: dict[str, set[str]] = {}
    for event in cluster_likes():
        liked.setdefault(event["user_id"], set()).add(event["item_id"])
    arms = set()
    for n in range(20):  # the a-cluster: unseen jazz items rank first
        user = f"u{n}"
        answer = client.recommend(user, k=4)
        assert len(answer.items) == 4  # a cap never leaves a list short
        jazz = sum(item in A_ITEMS for item in ids(answer))
        unseen = len(set(A_ITEMS) - liked[user])
        arm = assign(experiment, user)["name"]
        arms.add(arm)
        assert answer.variant == arm
        assert jazz == min(unseen, 2 if arm == "mixed" else 4)
    assert arms == {"focused", "mixed"}


# -- exploration -------------------------------------------------------------------------------
def test_epsilon_greedy_slot_is_logged_apart(tmp_path: Path) -> None:
    exploration = {"method": "epsilon", "epsilon": 1.0, "position": 2}
    with start(tmp_path, exploration=exploration) as (client, _):
        answer = client.recommend("u0", k=4, explain=True)
        explored = [row for row in answer.items if row.exploration]
        assert len(explored) == 1 and answer.items[1] is explored[0]
        assert explored[0].source == "exploration"
        assert (explored[0].explanation or "").startswith("something different")
        assert len(answer.items) == 4
        ranked = [row.item for row in answer.items if not row.exploration]
        assert explored[0].item not in ranked  # drawn from what missed the list
        client.add_event("u0", explored[0].item, "like", request_id=answer.request_id)
        again = client.recommend("u1", k=4)
        assert sum(row.exploration for row in again.items) == 1
        stats = client.exploration()
        assert stats.method == "epsilon"
        # the explored exposures of both lists; one was answered
        assert stats.exposures == 2 and stats.answered == 1


def test_thompson_sampling_explores_one_slot_per_list(tmp_path: Path) -> None:
    with start(tmp_path, exploration={"method": "thompson"}) as (client, _):
        for n in range(5):
            answer = client.recommend(f"u{n}", k=5)
            assert sum(row.exploration for row in answer.items) == 1
            assert answer.items[2].exploration  # the default position is 3
        assert client.stats().exploration == "thompson"


def test_a_warm_users_list_is_served_again_until_something_of_theirs_changes(
    client: Client,
) -> None:
    before = client.stats()
    first = client.recommend("u0", k=5)
    second = client.recommend("u0", k=5)
    assert ids(second) == ids(first) and second.request_id != first.request_id
    after = client.stats()
    assert after.list_cache["hits"] == before.list_cache["hits"] + 1
    assert after.state_cache["hits"] >= before.state_cache["hits"] + 1  # the 2nd read
    # an item made unavailable leaves the kept list at once
    client.patch_item(ids(first)[0], available=False)
    third = client.recommend("u0", k=5)
    assert ids(first)[0] not in ids(third) and len(third.items) == 5
    # the user's own event changes the history, so the list is rebuilt
    client.add_event("u0", ids(third)[0], "like")
    assert ids(third)[0] not in ids(client.recommend("u0", k=5))
    # other options are another list
    assert client.recommend("u0", k=5, diversity=0.5).items


def test_a_low_rating_is_a_dislike_and_a_high_one_a_like(client: Client) -> None:
    def rate(item: str, stars: float) -> None:
        client.add_event("critic", item, "rating", value=stars)

    rate("a1", 5)
    liked = client.recommend("critic", k=5)
    assert set(ids(liked)) <= set(A_ITEMS)  # five stars: the a-cluster
    rate(ids(liked)[0], 1)  # one star hides the item and adds nothing to the taste
    after = client.recommend("critic", k=5)
    assert ids(liked)[0] not in ids(after)
    assert set(ids(after)) <= set(A_ITEMS)
    rate("a1", 2)  # the latest word on a1: the only liked item is gone, popularity answers
    assert {row.source for row in client.recommend("critic", k=3).items} == {"popular"}
