"""Sequential models served by the service read a user's history in time order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.service.test_app import ids, make_settings, ok, recs, serve

pytestmark = pytest.mark.neural

SMALL = {"factors": 32, "epochs": 40, "learning_rate": 0.01, "patience": 0, "max_len": 10}


def test_sasrec_served_answers_from_the_order_of_the_likes(tmp_path: Path) -> None:
    """Users walk chains of items (c0..c9, c10..c19, c20..c29): after a like of c4 the next
    step is c5, after c13 it is c14 -- whichever of the two was liked last decides."""
    rng = np.random.default_rng(0)
    events = []
    for u in range(150):
        chain, length = u % 3, int(rng.integers(4, 9))
        start = int(rng.integers(0, 10 - length + 1))
        events += [
            {
                "user_id": f"u{u}",
                "item_id": f"c{10 * chain + start + step}",
                "type": "like",
                "ts": 1_000.0 * u + step,
            }
            for step in range(length)
        ]
    settings = make_settings(tmp_path, model="sasrec", model_params=SMALL, min_events_to_train=10)
    with serve(settings) as client:
        for item in range(30):
            ok(client.put(f"/items/c{item}", json={"title": f"step {item}"}))
        for start in range(0, len(events), 500):
            ok(client.post("/events/batch", json={"events": events[start : start + 500]}), 201)
        answer = ok(client.post("/admin/retrain", params={"wait": "true"}))
        assert answer["status"] == "done"
        for user, likes, following in (("x", ["c13", "c4"], "c5"), ("y", ["c4", "c13"], "c14")):
            for step, item in enumerate(likes):
                event = {"user_id": user, "item_id": item, "type": "like", "ts": 1e6 + step}
                ok(client.post("/events", json=event), 201)
            assert ids(recs(client, user, k=1, generators="model")) == [following]
