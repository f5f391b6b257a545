"""The pipeline as a library: configs, the offline live state, and the lab's replay."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tastebud import models
from tastebud.data.dataset import Dataset
from tastebud.data.sample import load_sample
from tastebud.errors import InvalidInputError, TastebudError
from tastebud.evaluation import evaluate
from tastebud.pipeline import (
    History,
    ModelView,
    OfflineState,
    Pipeline,
    PipelineSettings,
    Query,
    dataset_history,
    load_config,
)
from tastebud.pipeline.replay import replay
from tastebud.split import random_split

TASTEBUD = str(Path(sys.executable).parent / "tastebud")


def implicit_data() -> Dataset:
    """Clicks of three taste groups, with genres and created_at times on the items."""
    rng = np.random.default_rng(0)
    rows = []
    for user in range(90):
        group = user % 3
        for item in rng.choice(20, size=8, replace=False):
            rows.append((f"u{user}", f"i{group * 20 + item}", float(rng.integers(1, 5))))
    frame = pd.DataFrame(rows, columns=["user", "item", "weight"])
    items = pd.DataFrame(
        {
            "genre": [("a", "b", "c")[n // 20] for n in range(60)],
            "created_at": [1_000_000.0 + n for n in range(60)],
        },
        index=[f"i{n}" for n in range(60)],
    )
    return Dataset.from_frame(frame, weight="weight", items=items)


def test_the_default_pipeline_serves_the_models_own_top_k_to_warm_users() -> None:
    """EASE's fold-in is exactly its training-time scoring, so on implicit data (no
    dislikes) the default pipeline's list must be the model's own list, user by user."""
    split = random_split(implicit_data(), 0.25, seed=1)
    model = models.create("ease").fit(split.train)
    users = np.arange(split.train.n_users)
    own, _ = model.recommend_indices(users, 10, exclude=model.seen_)
    served = replay(model, split.train, users, 10)
    np.testing.assert_array_equal(served, own)
    alone = evaluate(model, split, fit=False, beyond_accuracy=False)
    piped = evaluate(model, split, fit=False, beyond_accuracy=False, pipeline=True)
    a, b = (r.set_index("metric")["value"] for r in (alone, piped))
    assert a["NDCG@10"] == pytest.approx(b["NDCG@10"])
    assert "generators model 50" in piped.attrs["protocol"]["pipeline"]


def test_the_re_rankers_trade_accuracy_for_what_they_promise() -> None:
    split = random_split(implicit_data(), 0.25, seed=2)
    model = models.create("ease").fit(split.train)
    users = np.arange(split.train.n_users)
    capped = replay(model, split.train, users, 6, {"pipeline": {"max_per_category": 2}})
    genre = np.array(
        [
            ("a", "b", "c")[int(i[1:]) // 20]
            for i in split.train.items.to_ids(np.arange(split.train.n_items))
        ]
    )
    for row in capped:
        _, per = np.unique(genre[row[row >= 0]], return_counts=True)
        assert per.max() <= 2  # the cap holds in every list
    own = replay(model, split.train, users, 6)
    assert (capped != own).any()


def test_ratings_below_the_dislike_threshold_leave_the_history_and_popularity() -> None:
    data = Dataset.from_frame(
        pd.DataFrame(
            {
                "user": ["a", "a", "b", "c"],
                "item": ["x", "y", "x", "y"],
                "rating": [5.0, 1.0, 4.0, 2.0],
                "timestamp": [2.0, 1.0, 3.0, 4.0],
            }
        ),
        rating="rating",
        timestamp="timestamp",
    )
    history = dataset_history(data, 0)
    assert history.values == {"x": 5.0} and history.disliked == {"y"}
    live = OfflineState(data)
    assert live.popular(5) == [("x", 2.0)]  # y's ratings are dislikes: not popular
    assert live.now() == 4.0  # the split's time: the latest training timestamp
    everyone = OfflineState(data, rules=load_config({"dislike_below_rating": None}))
    assert everyone.popular(5) == [("x", 2.0), ("y", 2.0)]


def test_new_items_and_cold_users_come_from_the_training_tables() -> None:
    data = implicit_data()
    live = OfflineState(data, now=1_000_059.0)
    assert [i for i, _ in live.new_items(3, days=1)] == ["i59", "i58", "i57"]
    model = models.create("ease").fit(data)
    cold = Pipeline().run(ModelView.of(model), live, Query(History({}, set(), []), k=5))
    assert not cold.scored and [c.source for c in cold.chosen] == ["popular"] * 5
    assert cold.items == [i for i, _ in live.popular(5)]


def test_configs_are_read_from_settings_files_and_their_mistakes_named(tmp_path: Path) -> None:
    good = tmp_path / "tastebud.toml"
    good.write_text('db = "sqlite:///x.db"\n[pipeline]\ndiversity = 0.5\n', encoding="utf-8")
    assert load_config(good).pipeline.diversity == 0.5  # the service's keys left to it
    assert load_config({"pipeline": {"diversity": 0.2}}).pipeline.diversity == 0.2
    assert load_config(PipelineSettings(freshness=1)).pipeline.freshness == 1
    bad = tmp_path / "bad.json"
    bad.write_text('{"pipeline": {"diversity": 2}}', encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"bad.json: pipeline.diversity: .*less than"):
        load_config(bad)
    with pytest.raises(InvalidInputError, match=r"missing\.toml: cannot read"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "broken.toml").write_text("[pipeline\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="not valid TOML"):
        load_config(tmp_path / "broken.toml")


def test_evaluate_refuses_what_a_pipeline_cannot_do() -> None:
    split = random_split(load_sample(), 0.2, seed=0)
    with pytest.raises(InvalidInputError, match="cannot be combined"):
        evaluate("popularity", split, pipeline=True, candidates="test")
    with pytest.raises(TastebudError, match="cannot recommend from a history"):
        evaluate("random", split, pipeline=True)


def test_the_cli_evaluates_a_settings_files_pipeline(tmp_path: Path) -> None:
    config = tmp_path / "tastebud.toml"
    config.write_text("[pipeline]\ndiversity = 0.3\n", encoding="utf-8")
    args = [TASTEBUD, "evaluate", "-m", "ease", "--dataset", "sample", "--json"]
    done = subprocess.run([*args, "--pipeline", str(config)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    protocol = json.loads(done.stdout)["protocol"]
    assert "diversity=0.3" in protocol["pipeline"]
    config.write_text("[pipeline]\ndiversty = 0.3\n", encoding="utf-8")
    done = subprocess.run([*args, "--pipeline", str(config)], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: --pipeline {config}: pipeline.diversty: Extra inputs are not permitted"
    )


def test_item_rows_are_found_whatever_the_type_of_the_ids() -> None:
    """Integer ids (MovieLens) are text in the pipeline and integers in the feature table."""
    frame = pd.DataFrame({"user": [1, 1, 2], "item": [10, 20, 10]})
    items = pd.DataFrame(
        {"title": ["Ten", "Twenty"], "genres": ["Jazz|Blues", None]}, index=[10, 20]
    )
    live = OfflineState(Dataset.from_frame(frame, items=items))
    rows = live.rows(["10", "20", "30"])
    assert set(rows) == {"10", "20"}
    assert rows["10"]["title"] == "Ten" and rows["20"]["attributes"] == {}
    assert live.categories("10", live.settings) == {"jazz", "blues"}
    assert live.categories("20", live.settings) == frozenset()


def test_because_names_the_history_item_that_explains_a_recommendation() -> None:
    """Two taste groups that never mix: an item of group a is explained by the liked item
    of group a, an item of group b by nothing the user liked."""
    rows = [(f"u{u}", f"{g}{i}") for u in range(20) for g in "ab"[u % 2] for i in range(4)]
    model = models.create("item-knn").fit(
        Dataset.from_frame(pd.DataFrame(rows, columns=["user", "item"]))
    )
    a0, a1, a2, b1 = model.items_.to_index(["a0", "a1", "a2", "b1"])
    found = model.because(np.array([a0, b1]), np.array([a2, a1]))
    assert found.tolist() == [a0, a0]
    assert model.because(np.array([a0]), np.array([b1])).tolist() == [-1]
    view = ModelView.of(model)
    assert view.because({"a0": 1.0}, ["a2", "b2", "zz"]) == {"a2": "a0"}


def test_a_replayed_cold_user_gets_what_users_like_them_liked() -> None:
    """Oslo's users like o-items, Lima's l-items; popularity favours l-items. A user known
    only by attributes (city Oslo, no interactions) is served the o-items."""
    rows = [(f"o{u}", f"o{i}") for u in range(3) for i in range(3)]
    rows += [(f"l{u}", f"l{i}") for u in range(6) for i in range(3)]
    users = pd.DataFrame(
        {"city": ["Oslo"] * 4 + ["Lima"] * 6},
        index=["o0", "o1", "o2", "new", *(f"l{u}" for u in range(6))],
    )
    train = Dataset.from_frame(pd.DataFrame(rows, columns=["user", "item"]), users=users)
    model = models.create("ease").fit(train)
    cold = train.users.to_index(["new"])
    served = replay(model, train, cold, 3)
    assert sorted(train.items.to_ids(served[0])) == ["o0", "o1", "o2"]
    unknown = replay(model, train, np.array([-1]), 3, user_ids=np.array(["stranger"]))
    assert sorted(train.items.to_ids(unknown[0])) == ["l0", "l1", "l2"]  # popular


def test_a_replay_explores_as_the_service_does() -> None:
    """With epsilon 1 every list gives slot 2 to a candidate that missed the list and keeps
    the ranked items around it in order; the draws are reproducible by seed; the report's
    protocol names the exploration."""
    split = random_split(implicit_data(), 0.25, seed=1)
    model = models.create("ease").fit(split.train)
    users = np.arange(split.train.n_users)
    plain = replay(model, split.train, users, 5)
    config = {"exploration": {"method": "epsilon", "epsilon": 1.0, "position": 2}}
    explored = replay(model, split.train, users, 5, config, seed=3)
    for before, after in zip(plain, explored, strict=True):
        assert after[1] not in before  # the explored item missed the ranked list
        assert [after[0], *after[2:]] == before[:4].tolist()
    np.testing.assert_array_equal(explored, replay(model, split.train, users, 5, config, seed=3))
    assert not np.array_equal(explored, replay(model, split.train, users, 5, config, seed=4))
    never = {"exploration": {"method": "epsilon", "epsilon": 0.0}}
    np.testing.assert_array_equal(replay(model, split.train, users, 5, never), plain)
    thompson = replay(model, split.train, users, 5, {"exploration": {"method": "thompson"}})
    assert all(row[2] not in base for row, base in zip(thompson, plain, strict=True))
    result = evaluate("ease", split, pipeline=config, k=5)
    assert result.attrs["protocol"]["exploration"] == "epsilon (epsilon 1.0, slot 2)"
    with pytest.raises(InvalidInputError, match=r"exploration.epsilon"):
        load_config({"exploration": {"method": "epsilon", "epsilon": 2}})


def test_an_exploration_slot_past_the_end_is_the_last_and_settings_are_strict() -> None:
    split = random_split(implicit_data(), 0.25, seed=1)
    model = models.create("ease").fit(split.train)
    users = np.arange(split.train.n_users)
    plain = replay(model, split.train, users, 5)
    far = {"exploration": {"method": "epsilon", "epsilon": 1.0, "position": 100}}
    explored = replay(model, split.train, users, 5, far)
    for before, after in zip(plain, explored, strict=True):
        assert after[-1] not in before and after[:4].tolist() == before[:4].tolist()
    for bad, field in (({"position": True}, "position"), ({"epsilon": float("nan")}, "epsilon")):
        with pytest.raises(InvalidInputError, match=f"exploration.{field}"):
            load_config({"exploration": {"method": "epsilon", **bad}})
