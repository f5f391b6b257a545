"""The list the HTTP service returns is the list the lab's offline pipeline makes.

A split's training data is imported into the service, which trains on it; every test user's
list is then asked for over HTTP and made offline by :func:`tastebud.pipeline.replay.replay`
(what ``evaluate(..., pipeline=...)`` scores) from the same training data and the same
model. Same items, same order -- with the default pipeline and with the re-rankers on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from tests.service.test_app import make_settings, ok

from tastebud.data.sample import load_sample
from tastebud.pipeline import PipelineSettings
from tastebud.pipeline.replay import replay
from tastebud.service.app import create_app
from tastebud.split import random_split

PIPELINES: dict[str, dict[str, Any]] = {
    "default": {},
    "re-ranked": {"diversity": 0.4, "max_per_category": 2, "recent_items": 3},
    "few-candidates": {"generators": {"model": 5, "item_to_item": 10, "popular": 10}},
}


@pytest.mark.parametrize("name", list(PIPELINES))
@pytest.mark.parametrize("model", ["als", "item-knn"])
def test_http_lists_equal_the_offline_pipeline(tmp_path: Path, name: str, model: str) -> None:
    split = random_split(load_sample(), 0.2, seed=3)
    train = split.train
    pipeline = PipelineSettings.model_validate(PIPELINES[name])
    settings = make_settings(tmp_path, model=model, pipeline=pipeline)
    app = create_app(settings)
    k = 10
    with TestClient(app) as client:
        engine = app.state.engine
        counts = engine.storage.import_dataset(train, event_type="rating")
        assert counts["events"] == train.n_interactions
        # written behind the service's back, as `tastebud import` does: the catalogue
        # would see them within a second; the test does not wait for it
        engine.catalog.reload()
        ok(client.post("/admin/retrain", params={"wait": "true"}))
        served = engine.snapshot.model
        assert served is not None and engine.snapshot.version["model"] == model
        users = np.unique(train.users.to_index(split.test["user"].unique()))
        offline = replay(served, train, users, k, {"pipeline": PIPELINES[name]})
        item_ids = [str(i) for i in train.items.to_ids(np.arange(train.n_items))]
        compared = 0
        for row, user in enumerate(train.users.to_ids(users)):
            answer = ok(client.get(f"/users/{user}/recommendations", params={"k": k}))
            over_http = [entry["item"] for entry in answer["items"]]
            made_offline = [item_ids[i] for i in offline[row] if i >= 0]
            assert over_http == made_offline, f"user {user}"
            compared += len(over_http)
        assert compared >= 0.9 * k * len(users)  # full lists, not empty ones that agree
