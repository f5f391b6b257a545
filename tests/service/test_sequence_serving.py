"""Sequential models served by the service read a user's history in time order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.service.test_app import make_settings

from serving import ids, served_app
from tastebud.ann import faiss_or_none

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
    with served_app(settings) as (client, _):
        for item in range(30):
            client.put_item(f"c{item}", title=f"step {item}")
        for start in range(0, len(events), 500):
            client.add_events(events[start : start + 500])
        assert client.retrain(wait=True).status == "done"
        for user, likes, following in (("x", ["c13", "c4"], "c5"), ("y", ["c4", "c13"], "c14")):
            for step, item in enumerate(likes):
                client.add_event(user, item, "like", ts=1e6 + step)
            assert ids(client.recommend(user, k=1, generators=["model"])) == [following]


@pytest.mark.skipif(faiss_or_none() is None, reason="faiss is not installed")
def test_a_two_tower_model_with_an_ann_index_serves_from_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With an approximate index the service searches it for the model's candidates and
    scores only the candidates: it never scores the whole catalogue (which a catalogue of
    millions cannot afford per list). On a small catalogue the index is an exact scan, so
    the lists equal those of the same model scoring every item."""
    from tastebud.models.neural.two_tower import TwoTower

    rng = np.random.default_rng(1)
    events = [
        {"user_id": f"u{u}", "item_id": f"{'ab'[u % 2]}{i}", "type": "like"}
        for u in range(80)
        for i in rng.choice(15, size=6, replace=False)
    ]
    params = {"factors": 16, "layers": [32], "epochs": 15, "patience": 0, "index": "ann"}
    settings = make_settings(tmp_path, model="two-tower", model_params=params)
    with served_app(settings) as (client, app):
        for side in "ab":
            for i in range(15):
                client.put_item(f"{side}{i}", title=f"{side}{i}")
        client.add_events(events)
        assert client.retrain(wait=True).status == "done"
        engine = app.state.engine
        model = engine.snapshot.model
        assert model.vector_index().backend == "faiss"
        whole = model._score_history

        def refused(*args: object) -> np.ndarray:
            raise AssertionError("the whole catalogue was scored")

        monkeypatch.setattr(TwoTower, "_score_history", refused)
        client.add_event("new", "a3", "like")
        client.add_event("new", "a7", "like")
        served = client.recommend("new", k=5, explain=True)
        assert not {"a3", "a7"} & set(ids(served))

        monkeypatch.setattr(TwoTower, "_score_history", whole)
        model.__dict__["_retriever"] = lambda *args: None  # the same model, every item scored
        engine.settings = engine.settings.model_copy(update={"list_cache_s": 0.0})
        everything = client.recommend("new", k=5)
        del model.__dict__["_retriever"]
        assert ids(served) == ids(everything)
        assert [r.score for r in served.items] == pytest.approx(
            [r.score for r in everything.items], rel=1e-4
        )
