"""What the service says it serves: readiness names the source of its lists, and similar
items come from the model, the catalogue's metadata, or -- labelled so -- popularity.

The music-store sample has a style per album (eight styles, 60 albums), so the right answer
for a jazz album's similar items is known: other jazz albums."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.service.test_app import (  # noqa: F401 - _clean_environment is an autouse fixture
    ApiClient,
    _clean_environment,
    make_settings,
    ok,
)

from tastebud.data.sample import ALBUMS, load_sample
from tastebud.service.app import create_app
from tastebud.service.similar import CatalogueContent, popular_pairs
from tastebud.service.storage import Storage

STYLE = {album: style for album, _, _, style in ALBUMS}
JAZZ = sorted(album for album, style in STYLE.items() if style == "jazz")


@pytest.fixture
def sample_url(tmp_path: Path) -> str:
    """A SQLite database holding the music-store sample (users, albums, ratings)."""
    url = f"sqlite:///{tmp_path / 'sample.db'}"
    with Storage(url) as store:
        store.migrate()
        store.import_dataset(load_sample(), event_type="rating")
    return url


def started(tmp_path: Path, url: str, **settings: Any) -> ApiClient:
    return ApiClient(create_app(make_settings(tmp_path, url, **settings)))


def similar(client: ApiClient, item: str, k: int = 5) -> dict[str, Any]:
    answer = ok(client.get(f"/items/{item}/similar", params={"k": k}))
    assert [row["rank"] for row in answer["items"]] == list(range(1, len(answer["items"]) + 1))
    assert all(row["source"] == answer["source"] for row in answer["items"])
    assert all(row["item"] != item for row in answer["items"])
    return dict(answer)


def wait_idle(client: ApiClient) -> dict[str, Any]:
    """/health/ready once no retrain runs (the one started with the app ends quickly)."""
    import time

    deadline = time.monotonic() + 30
    while (ready := ok(client.get("/health/ready")))["training"]:
        assert time.monotonic() < deadline, "the start-up retrain did not end"
        time.sleep(0.02)
    return dict(ready)


def test_a_first_start_serves_popular_lists_and_content_similar_items(
    tmp_path: Path, sample_url: str
) -> None:
    """No model can be trained (the threshold is out of reach): readiness says lists are
    popular items and why; a jazz album's similar items are jazz albums, by metadata."""
    with started(tmp_path, sample_url, min_events_to_train=10**9) as client:
        ready = wait_idle(client)
        assert ready["status"] == "ready"
        assert ready["model_version"] is None and ready["model"] is None
        assert ready["serving"].startswith("popular items (no model yet: too few positive")
        answer = similar(client, "Kind of Blue")
        assert answer["source"] == "content" and "TF-IDF" in answer["basis"]
        assert len(answer["items"]) == 5
        assert [STYLE[row["item"]] for row in answer["items"]] == ["jazz"] * 5
        assert all(0 < row["score"] <= 1 for row in answer["items"])
        # the same artist weighs most: Metallica's other album first
        metal = similar(client, "Master of Puppets", k=3)["items"]
        assert metal[0]["item"] == "Ride the Lightning"
        assert {STYLE[row["item"]] for row in metal} == {"metal"}

        # while the first model trains, readiness says so (and stays 200 for balancers)
        engine = client.app.state.engine  # type: ignore[attr-defined]
        with engine.versions._train_lock:
            ready = ok(client.get("/health/ready"))
        assert ready["training"] is True
        assert ready["serving"] == "popular items (no model yet; the first is training)"


def test_items_the_model_has_not_learned_get_content_similar_items(
    tmp_path: Path, sample_url: str
) -> None:
    with started(tmp_path, sample_url, model="item-knn", evaluate_on_retrain=False) as client:
        version = ok(client.post("/admin/retrain", params={"wait": "true"}))["version"]
        ready = wait_idle(client)
        assert ready["model_version"] == version["id"] and ready["model"] == "item-knn"
        assert ready["serving"] == f"model version {version['id']} (item-knn)"
        learned = similar(client, "Kind of Blue")
        assert learned["source"] == "model"
        assert learned["basis"] == f"item similarity of model version {version['id']} (item-knn)"

        # an album added after training: the model has never seen it, its metadata says jazz
        attributes = {"artist": "John Coltrane", "year": 1960, "style": "jazz"}
        ok(client.put("/items/Giant Steps", json={"attributes": attributes}))
        new = similar(client, "Giant Steps")
        assert new["source"] == "content"
        assert new["items"][0]["item"] == "A Love Supreme"  # same artist, same style
        assert {STYLE[row["item"]] for row in new["items"]} == {"jazz"}
        # unavailable items are left out of every source
        ok(client.patch("/items/A Love Supreme", json={"available": False}))
        after = similar(client, "Giant Steps")["items"]
        assert "A Love Supreme" not in [row["item"] for row in after]


def test_without_metadata_similar_items_are_popular_items_labelled_so(tmp_path: Path) -> None:
    likes = {"i0": 5, "i1": 4, "i2": 2, "i3": 1}  # positive events per item
    with started(tmp_path, None, min_events_to_train=10**9) as client:
        for item in [*likes, "i4"]:
            ok(client.put(f"/items/{item}", json={}))
        events = [
            {"user_id": f"u{n}", "item_id": item, "type": "like"}
            for item, count in likes.items()
            for n in range(count)
        ]
        ok(client.post("/events/batch", json={"events": events}), 201)
        answer = similar(client, "i1", k=3)
        assert answer["source"] == "popular"
        assert answer["basis"].startswith("no similarity known for this item")
        # scored as a share of the most popular item's events, never as raw counts
        assert [(row["item"], row["score"]) for row in answer["items"]] == [
            ("i0", 1.0),
            ("i2", 0.4),
            ("i3", 0.2),
        ]


def test_the_catalogue_content_follows_item_writes(tmp_path: Path) -> None:
    with Storage(f"sqlite:///{tmp_path / 'c.db'}") as store:
        store.migrate()
        content = CatalogueContent(store, refresh_s=0)
        assert content.similar("a", 3) is None  # an empty catalogue
        store.upsert_item("a", attributes={"genre": "jazz"})
        store.upsert_item("b", attributes={"genre": "jazz"})
        store.upsert_item("c", attributes={"genre": "rock"})
        found = content.similar("a", 3)
        assert found is not None
        basis, pairs = found
        assert "TF-IDF" in basis
        assert [item for item, _ in pairs] == ["b"]  # c has nothing in common with a
        assert pairs[0][1] == pytest.approx(1.0)
        again = content.similar("a", 3)
        assert again is not None and again[1] is pairs  # kept until items change
        store.upsert_item("c", attributes={"genre": "jazz"})  # changed: fitted again
        found = content.similar("a", 3)
        assert found is not None and [item for item, _ in found[1]] == ["b", "c"]

        numbers = Storage(f"sqlite:///{tmp_path / 'n.db'}")
        with numbers:
            numbers.migrate()
            years = {"x": 1960, "y": 1961, **{f"z{n}": 1990 + 4 * n for n in range(8)}}
            for item, year in years.items():  # numbers only: no text for TF-IDF
                numbers.upsert_item(item, attributes={"year": year})
            found = CatalogueContent(numbers).similar("x", 3)
            assert found is not None and "attribute profiles" in found[0]
            assert found[1][0][0] == "y"  # the nearest year (bins are quantiles: z0 is next)
            assert "z7" not in [item for item, _ in found[1]]


def test_popular_pairs_are_shares_of_the_top_count() -> None:
    counts = [("a", 10.0), ("b", 5.0), ("c", 1.0)]
    assert popular_pairs(lambda n: counts[:n], "b", 2) == [("a", 1.0), ("c", 0.1)]
    assert popular_pairs(lambda n: [], "b", 2) == []
