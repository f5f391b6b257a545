"""Content models served by the service: the catalogue's titles and attributes reach the
model at retraining, so an item nobody has touched yet is recommended from its metadata."""

from __future__ import annotations

from pathlib import Path

from tests.service.test_app import make_settings

from serving import ids, served_app

JAZZ = ["j0", "j1", "j2", "j3"]
ROCK = ["r0", "r1", "r2", "r3"]


def test_tfidf_serves_an_untouched_item_from_its_attributes(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, model="tfidf", min_events_to_train=4)
    with served_app(settings) as (client, _):
        for item in JAZZ:
            client.put_item(item, title=f"Album {item}", attributes={"genre": ["jazz", "bebop"]})
        for item in ROCK:
            client.put_item(item, title=f"Album {item}", attributes={"genre": ["rock"]})
        client.add_events(
            {"user_id": f"u{u}", "item_id": item, "type": "like"}
            for u, items in ((0, ["j0", "j1"]), (1, ["r0", "r1"]), (2, ["r0", "r2"]))
            for item in items
        )
        version = client.retrain(wait=True).version
        assert version is not None and version.model == "tfidf"
        # j2 and j3 have no events at all: only their attributes say they are jazz.
        top = ids(client.recommend("u0", k=2, generators=["model"]))
        assert sorted(top) == ["j2", "j3"]
        # a like changes the next list at once (fold-in of the stored history)
        client.add_event("u9", "r3", "like")
        assert set(ids(client.recommend("u9", k=2, generators=["model"]))) <= {"r0", "r1", "r2"}
