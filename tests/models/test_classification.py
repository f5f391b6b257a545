"""Recommendation as classification over a user's history (HistoryClassifier)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tastebud import Dataset
from tastebud.data.synthetic import synthetic
from tastebud.errors import InvalidInputError, TastebudError
from tastebud.models import available, create, load
from tastebud.models.classification import HistoryClassifier, history_samples

# -- the worked music example --------------------------------------------------------------------
# Four listeners, six albums. The preference is listening time in minutes: a listen of at least
# 30 minutes is a like (threshold=30 on the weight column). Listens on 1-7 March 2024.
ALBUMS = pd.DataFrame(
    {
        "item": ["freewheelin", "highway61", "blonde", "symmetry", "absolution", "okcomputer"],
        "title": [
            "The Freewheelin' Bob Dylan",
            "Highway 61 Revisited",
            "Blonde on Blonde",
            "Origin of Symmetry",
            "Absolution",
            "OK Computer",
        ],
        "artist": ["Bob Dylan"] * 3 + ["Muse"] * 2 + ["Radiohead"],
    }
)
LISTENERS = pd.DataFrame(
    {
        "user": ["ana", "ben", "cal", "dee"],
        "age": [34, 27, 45, 22],
        "gender": ["F", "M", "M", "F"],
        "location": ["London", "Paris", "London", "Paris"],
    }
)
LISTENS = pd.DataFrame(
    [
        ("ana", "freewheelin", 50, 1),
        ("ana", "symmetry", 45, 2),
        ("ana", "okcomputer", 10, 3),  # a short listen: not a like
        ("ana", "absolution", 40, 4),
        ("ben", "symmetry", 60, 1),
        ("ben", "absolution", 55, 2),
        ("ben", "okcomputer", 35, 5),
        ("cal", "freewheelin", 70, 1),
        ("cal", "highway61", 40, 3),
        ("cal", "blonde", 65, 4),
        ("cal", "symmetry", 5, 6),  # not a like
        ("dee", "highway61", 30, 2),  # exactly the threshold: a like
        ("dee", "freewheelin", 25, 3),  # not a like
        ("dee", "blonde", 80, 7),
    ],
    columns=["user", "item", "minutes", "day"],
)
DAY = 86_400.0
T0 = pd.Timestamp("2024-02-29", tz="UTC").timestamp()  # day d is T0 + d days


def music() -> Dataset:
    frame = LISTENS.assign(
        timestamp=pd.to_datetime("2024-02-29") + pd.to_timedelta(LISTENS["day"], unit="D")
    )
    return Dataset.from_frame(
        frame,
        weight="minutes",
        timestamp="timestamp",
        users=LISTENERS,
        items=ALBUMS,
        name="music",
    )


def table(rows: list[tuple], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns)


def ts(day: int) -> float:
    return T0 + day * DAY


PLAYBACK = table(
    [
        ("ana", ("freewheelin",), "symmetry", ts(2), 1.0),
        ("ana", ("freewheelin", "symmetry"), "absolution", ts(4), 1.0),
        ("ben", ("symmetry",), "absolution", ts(2), 1.0),
        ("ben", ("symmetry", "absolution"), "okcomputer", ts(5), 1.0),
        ("cal", ("freewheelin",), "highway61", ts(3), 1.0),
        ("cal", ("freewheelin", "highway61"), "blonde", ts(4), 1.0),
        ("dee", ("highway61",), "blonde", ts(7), 1.0),
    ],
    ["user", "input", "target", "timestamp", "weight"],
)
LEAVE_ONE_OUT = table(
    [
        ("ana", ("symmetry", "absolution"), "freewheelin", ts(1), 1.0),
        ("ana", ("freewheelin", "absolution"), "symmetry", ts(2), 1.0),
        ("ana", ("freewheelin", "symmetry"), "absolution", ts(4), 1.0),
        ("ben", ("absolution", "okcomputer"), "symmetry", ts(1), 1.0),
        ("ben", ("symmetry", "okcomputer"), "absolution", ts(2), 1.0),
        ("ben", ("symmetry", "absolution"), "okcomputer", ts(5), 1.0),
        ("cal", ("highway61", "blonde"), "freewheelin", ts(1), 1.0),
        ("cal", ("freewheelin", "blonde"), "highway61", ts(3), 1.0),
        ("cal", ("freewheelin", "highway61"), "blonde", ts(4), 1.0),
        ("dee", ("blonde",), "highway61", ts(2), 1.0),
        ("dee", ("highway61",), "blonde", ts(7), 1.0),
    ],
    ["user", "input", "target", "timestamp", "weight"],
)


def test_history_playback_sample_table():
    got = history_samples(music(), encoding="history-playback", threshold=30)
    pd.testing.assert_frame_equal(got, PLAYBACK, check_dtype=False)


def test_leave_one_out_sample_table():
    got = history_samples(music(), encoding="leave-one-out", threshold=30)
    pd.testing.assert_frame_equal(got, LEAVE_ONE_OUT, check_dtype=False)


def test_text_inputs_are_the_liked_album_names():
    got = history_samples(music(), encoding="history-playback", inputs="text", threshold=30)
    assert got["text"].tolist() == [
        "The Freewheelin' Bob Dylan",
        "The Freewheelin' Bob Dylan, Origin of Symmetry",
        "Origin of Symmetry",
        "Origin of Symmetry, Absolution",
        "The Freewheelin' Bob Dylan",
        "The Freewheelin' Bob Dylan, Highway 61 Revisited",
        "Highway 61 Revisited",
    ]
    named = history_samples(music(), inputs="text", threshold=30, text_field="artist")
    assert named["text"].iloc[1] == "Bob Dylan, Muse"


def test_tabular_rows_hold_the_attributes_and_keep_the_first_like():
    got = history_samples(music(), encoding="history-playback", inputs="tabular", threshold=30)
    expected = table(
        [
            ("ana", 34, "F", "London", (), "freewheelin"),
            ("ana", 34, "F", "London", ("freewheelin",), "symmetry"),
            ("ana", 34, "F", "London", ("freewheelin", "symmetry"), "absolution"),
            ("ben", 27, "M", "Paris", (), "symmetry"),
        ],
        ["user", "age", "gender", "location", "input", "target"],
    )
    pd.testing.assert_frame_equal(got[expected.columns].head(4), expected, check_dtype=False)
    assert len(got) == len(PLAYBACK) + 4  # one empty-input sample per listener


def test_threshold_defaults_and_plain_frames():
    # without a threshold, every listen of a weight-only dataset is a like
    everything = history_samples(music(), encoding="leave-one-out")
    assert len(everything) == len(LISTENS)
    # a plain table works too; ratings default to a 4-star threshold
    frame = pd.DataFrame(
        {"user": [1, 1, 1, 2, 2], "item": ["a", "b", "c", "a", "c"], "rating": [5, 2, 4, 4, 5]}
    )
    got = history_samples(frame, encoding="history-playback")
    assert got[["user", "input", "target"]].to_dict("records") == [
        {"user": 1, "input": ("a",), "target": "c"},  # b (2 stars) is not a like
        {"user": 2, "input": ("a",), "target": "c"},  # no timestamps: item order
    ]


def test_recency_weights_and_window():
    data = music()
    halved = history_samples(data, threshold=30, half_life_days=2.0)
    # ages from the latest listen (day 7); the weight halves every two days
    expected = 0.5 ** ((7 - (PLAYBACK["timestamp"] - T0) / DAY) / 2.0)
    np.testing.assert_allclose(halved["weight"], expected)
    assert halved["weight"].iloc[-1] == 1.0  # dee's day-7 like is the newest
    windowed = history_samples(data, threshold=30, window_days=3.0)
    assert windowed["target"].tolist() == ["absolution", "okcomputer", "blonde", "blonde"]
    assert (windowed["weight"] == 1.0).all()
    model = HistoryClassifier(threshold=30, window_days=3.0).fit(data)
    pd.testing.assert_frame_equal(model.samples(data), windowed)
    with pytest.raises(InvalidInputError, match="timestamps"):
        history_samples(LISTENS[["user", "item"]], half_life_days=2.0)


def fitted_music(**params) -> HistoryClassifier:
    defaults = {"threshold": 30, "epochs": 200, "learning_rate": 0.05, "alpha": 1e-2}
    return HistoryClassifier(**{**defaults, **params}).fit(music())


@pytest.mark.parametrize("inputs", ["ids", "text", "tabular"])
@pytest.mark.parametrize("encoding", ["history-playback", "leave-one-out"])
def test_a_dylan_listener_is_recommended_the_missing_dylan_album(encoding, inputs):
    model = fitted_music(encoding=encoding, inputs=inputs)
    # cal liked Freewheelin' and Highway 61 before Blonde on Blonde; so did dee, in part.
    # A new listener who liked the first two should get Blonde on Blonde first.
    recs = model.recommend_from_history(["freewheelin", "highway61"], k=3)
    assert recs["item"].iloc[0] == "blonde"
    # and a Muse listener gets Muse
    muse = model.recommend_from_history(["symmetry"], k=2)
    assert muse["item"].iloc[0] == "absolution"


def test_items_never_liked_rank_last_by_popularity():
    data = music()
    model = fitted_music(encoding="history-playback")
    # in playback, freewheelin is only ever a first like: never a class
    assert "freewheelin" not in set(data.items.to_ids(model.classes_))
    scores = model.score(["ana"], ["freewheelin", "blonde", "okcomputer"])[0]
    assert np.isfinite(scores).all()
    assert scores[0] < scores[1:].min()
    full = model.recommend("ben", k=10)
    assert len(full) == data.n_items - 3  # lists stay full
    assert full["item"].iloc[-1] == "freewheelin"


def test_explanations_name_the_history():
    model = fitted_music()
    reasons = model.explain("cal", ["absolution", "okcomputer"])
    assert list(reasons.columns) == ["item", "reason"]
    assert all(isinstance(r, str) and r for r in reasons["reason"])


# -- incremental updates -------------------------------------------------------------------------
def test_partial_update_changes_the_next_prediction_at_once():
    model = fitted_music()
    before = model.recommend("ben", k=5)
    factors_before = model.class_factors_.copy()
    model.partial_update("ben", "blonde")
    after = model.recommend("ben", k=5)
    assert "blonde" in set(before["item"]) and "blonde" not in set(after["item"])  # now seen
    assert not before.reset_index(drop=True).equals(after.reset_index(drop=True))
    assert not np.array_equal(model.class_factors_, factors_before)  # the classifier learned
    # the one sample was "ben's likes so far -> blonde": that history now scores blonde higher
    history = ["symmetry", "absolution", "okcomputer"]
    fresh = fitted_music()
    updated = model.recommend_from_history(history, k=6, exclude_seen=False)
    original = fresh.recommend_from_history(history, k=6, exclude_seen=False)
    assert (
        updated.set_index("item").loc["blonde", "score"]
        > original.set_index("item").loc["blonde", "score"]
    )


def test_partial_update_serves_a_brand_new_user():
    model = fitted_music()
    cold = model.recommend("eve", k=3)
    assert cold["item"].tolist() == model.recommend("nobody", k=3)["item"].tolist()
    model.partial_update("eve", "freewheelin")  # never a class, but now her history
    model.partial_update("eve", "highway61")
    recs = model.recommend("eve", k=3)
    assert recs["item"].iloc[0] == "blonde"
    assert not {"freewheelin", "highway61"} & set(recs["item"])
    assert "eve" in model.users_


def test_partial_update_rejects_unknown_items_and_bad_weights(tmp_path):
    model = fitted_music()
    with pytest.raises(InvalidInputError, match="refit"):
        model.partial_update("ana", "new-album")
    with pytest.raises(InvalidInputError, match="weight"):
        model.partial_update("ana", "blonde", weight=-1.0)
    # a loaded model can keep learning
    again = load(model.save(tmp_path / "hc"))
    model.partial_update("ana", "blonde")
    again.partial_update("ana", "blonde")
    np.testing.assert_allclose(again.score(["ana", "ben"]), model.score(["ana", "ben"]))


# -- persistence, parameters, registry -----------------------------------------------------------
@pytest.mark.parametrize("inputs", ["ids", "text", "tabular"])
def test_save_load_round_trip_gives_identical_scores(inputs, tmp_path):
    model = fitted_music(inputs=inputs, user_fields=("age", "location"), half_life_days=3.0)
    again = load(model.save(tmp_path / inputs))
    assert isinstance(again, HistoryClassifier)
    assert again.get_params() == model.get_params()
    users = ["ana", "ben", "cal", "dee", "nobody"]
    np.testing.assert_array_equal(again.score(users), model.score(users))
    pd.testing.assert_frame_equal(
        again.recommend_from_history(["symmetry"], k=4),
        model.recommend_from_history(["symmetry"], k=4),
    )


def test_registered_and_two_class_data():
    assert "history-classifier" in available()
    assert isinstance(create("history-classifier"), HistoryClassifier)
    frame = pd.DataFrame({"user": [1, 1, 2, 2, 3], "item": ["a", "b", "b", "a", "c"]})
    model = HistoryClassifier(encoding="leave-one-out").fit(Dataset.from_frame(frame))
    assert len(model.classes_) == model.class_factors_.shape[0] == 2
    recs = model.recommend_from_history(["a"], k=3, exclude_seen=False)
    assert recs["item"].iloc[0] == "b" and recs["item"].iloc[-1] == "c"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"encoding": "sliding"}, "encoding"),
        ({"inputs": "images"}, "inputs"),
        ({"threshold": float("nan")}, "threshold"),
        ({"half_life_days": 0.0}, "half_life_days"),
        ({"window_days": -1.0}, "window_days"),
        ({"alpha": -1.0}, "alpha"),
        ({"factors": 0}, "factors"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"batch_size": 0}, "batch_size"),
        ({"update_steps": -1}, "update_steps"),
        ({"update_rate": 0.0}, "update_rate"),
        ({"epochs": 0}, "epochs"),
        ({"epochs": 2.5}, "epochs"),
        ({"max_classes": 1}, "max_classes"),
        ({"text_features": 0}, "text_features"),
    ],
)
def test_bad_parameters_are_clear_errors(params, message):
    with pytest.raises(InvalidInputError, match=message):
        HistoryClassifier(**params).fit(music())


def test_data_problems_are_clear_errors():
    data = music()
    with pytest.raises(InvalidInputError, match=r"no interaction .* is a like"):
        HistoryClassifier(threshold=1_000).fit(data)
    with pytest.raises(InvalidInputError, match="no item field 'label'"):
        HistoryClassifier(inputs="text", text_field="label").fit(data)
    with pytest.raises(InvalidInputError, match="no user field 'income'"):
        HistoryClassifier(inputs="tabular", user_fields=("income",)).fit(data)
    untimed = Dataset.from_frame(LISTENS[["user", "item"]])
    with pytest.raises(InvalidInputError, match="timestamps"):
        HistoryClassifier(half_life_days=7.0).fit(untimed)
    with pytest.raises(InvalidInputError, match="two liked items"):
        HistoryClassifier().fit(Dataset.from_frame(pd.DataFrame({"user": [1], "item": [2]})))
    with pytest.raises(TastebudError, match="Dataset"):
        history_samples([("ana", "blonde")])  # type: ignore[arg-type]


def test_synthetic_clusters_beat_popularity():
    """On data with taste clusters the classifier learns them (known answer)."""
    from tastebud.evaluation import evaluate
    from tastebud.split import leave_last_out

    data = synthetic(300, 80, 6_000, n_clusters=4, seed=3, ratings=False)
    results = evaluate(
        {"hc": HistoryClassifier(), "popularity": "popularity"},
        leave_last_out(data, 2),
        k=10,
        beyond_accuracy=False,
        progress=False,
    )
    ndcg = results[results["metric"] == "NDCG@10"].set_index("model")["value"]
    assert ndcg["hc"] > ndcg["popularity"] + 0.02, ndcg


# -- MovieLens 100K --------------------------------------------------------------------------------
@pytest.mark.reference_data
@pytest.mark.slow
def test_movielens_leave_last_out_beats_item_knn():
    from conftest import require_reference
    from tastebud.data import load_movielens_100k
    from tastebud.evaluation import evaluate
    from tastebud.split import leave_last_out

    require_reference("ml-100k")
    split = leave_last_out(load_movielens_100k().to_implicit(4.0))
    results = evaluate(
        {"hc": HistoryClassifier(), "item-knn": "item-knn"},
        split,
        k=10,
        beyond_accuracy=False,
        progress=False,
    )
    ndcg = results[results["metric"] == "NDCG@10"].set_index("model")["value"]
    # benchmarks/classification.py: the next like is what the softmax is trained to predict
    assert ndcg["hc"] > 1.2 * ndcg["item-knn"], ndcg


def test_too_many_samples_or_too_long_histories_refuse_before_building_them():
    """max_samples bounds the samples and (x100) the likes their inputs repeat: a fit over
    either refuses, naming the limit and window_days; inside it, the model fits."""
    rows = [(u, i, 5.0, float(u * 100 + i)) for u in range(30) for i in range(8)]
    data = Dataset.from_frame(
        pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]), name="many"
    )
    # 30 users x 7 playback samples each
    with pytest.raises(InvalidInputError, match=r"210 training samples, over max_samples=200;"):
        create("history-classifier", max_samples=200, epochs=1).fit(data)
    create("history-classifier", max_samples=210, epochs=1).fit(data)
    # one history of 400 daily likes: its 399 samples repeat 1 + 2 + ... + 399 = 79,800 likes
    long = Dataset.from_frame(
        pd.DataFrame(
            {
                "user": 0,
                "item": np.arange(400),
                "rating": 5.0,
                "timestamp": np.arange(400.0) * 86_400,
            }
        ),
        rating="rating",
        timestamp="timestamp",
        name="long",
    )
    with pytest.raises(
        InvalidInputError, match=r"79,800 likes .* longest history has 400 .*window_days"
    ):
        create("history-classifier", max_samples=500, epochs=1).fit(long)
    # the window keeps the last 11 days' likes as samples: 389 + ... + 399 = 4,334 inputs
    recent = create("history-classifier", max_samples=500, epochs=1, window_days=10)
    assert len(recent.fit(long).classes_) == 11
