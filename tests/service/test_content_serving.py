"""Content models served by the service: the catalogue's titles and attributes reach the
model at retraining, so an item nobody has touched yet is recommended from its metadata."""

from __future__ import annotations

from pathlib import Path

from tests.service.test_app import ids, make_settings, ok, recs, serve

JAZZ = ["j0", "j1", "j2", "j3"]
ROCK = ["r0", "r1", "r2", "r3"]


def test_tfidf_serves_an_untouched_item_from_its_attributes(tmp_path: Path) -> None:
    with serve(make_settings(tmp_path, model="tfidf", min_events_to_train=4)) as client:
        for item in JAZZ:
            ok(
                client.put(
                    f"/items/{item}",
                    json={"title": f"Album {item}", "attributes": {"genre": ["jazz", "bebop"]}},
                )
            )
        for item in ROCK:
            ok(
                client.put(
                    f"/items/{item}",
                    json={"title": f"Album {item}", "attributes": {"genre": ["rock"]}},
                )
            )
        events = [
            {"user_id": f"u{u}", "item_id": item, "type": "like"}
            for u, items in ((0, ["j0", "j1"]), (1, ["r0", "r1"]), (2, ["r0", "r2"]))
            for item in items
        ]
        ok(client.post("/events/batch", json={"events": events}), 201)
        answer = ok(client.post("/admin/retrain", params={"wait": "true"}))
        assert answer["status"] == "done" and answer["version"]["model"] == "tfidf"
        # j2 and j3 have no events at all: only their attributes say they are jazz.
        top = ids(recs(client, "u0", k=2, generators="model"))
        assert sorted(top) == ["j2", "j3"]
        # a like changes the next list at once (fold-in of the stored history)
        ok(client.post("/events", json={"user_id": "u9", "item_id": "r3", "type": "like"}), 201)
        assert set(ids(recs(client, "u9", k=2, generators="model"))) <= {"r0", "r1", "r2"}
