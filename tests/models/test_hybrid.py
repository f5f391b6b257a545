"""Switching and Cascade hybrids, and the weighted hybrid (Blend) with content members: each
checked against its members, fitted separately, on small data built so the answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tastebud import Dataset
from tastebud.errors import InvalidInputError
from tastebud.models import create, load
from tastebud.models.hybrid import Cascade, Switching


def taste_groups(seed: int = 0, with_users: bool = True, with_time: bool = False) -> Dataset:
    """40 users in two taste groups over 20 items (the first ten are "jazz", the rest "rock");
    u00..u19 are young Parisians, u20..u39 older Berliners. Extra catalogue entries: n1 (jazz)
    and n2 (rock) were never played, s1 (jazz) was played once. Users new_young / new_old are
    known only by their attributes."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(40):
        block = range(0, 10) if u < 20 else range(10, 20)
        rows += [(f"u{u:02d}", f"i{i:02d}") for i in block if rng.random() < 0.6]
    rows.append(("u00", "s1"))
    frame = pd.DataFrame(rows, columns=["user", "item"])
    if with_time:
        frame["time"] = 1_700_000_000 + 3600.0 * np.arange(len(frame))
    genre = ["jazz"] * 10 + ["rock"] * 10 + ["jazz", "rock", "jazz"]
    names = [f"i{i:02d}" for i in range(20)] + ["n1", "n2", "s1"]
    items = pd.DataFrame(
        {
            "item": names,
            "genre": genre,
            "title": [f"{g} record {n}" for g, n in zip(genre, names, strict=True)],
        }
    )
    users = None
    if with_users:
        ids = [f"u{u:02d}" for u in range(40)] + ["new_young", "new_old"]
        young = [u < 20 for u in range(40)] + [True, False]
        users = pd.DataFrame(
            {
                "user": ids,
                "age": [22 + (k % 5) if y else 60 + (k % 5) for k, y in enumerate(young)],
                "city": ["paris" if y else "berlin" for y in young],
            }
        )
    return Dataset.from_frame(
        frame, items=items, users=users, timestamp="time" if with_time else None
    )


def z(scores: np.ndarray) -> np.ndarray:
    """Per-row standardization, written out independently."""
    scores = np.asarray(scores, dtype=np.float64)
    std = scores.std(axis=1, keepdims=True)
    return (scores - scores.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1.0)


def order(frame: pd.DataFrame) -> list:
    return frame.sort_values("rank")["item"].tolist()


@pytest.fixture(scope="module")
def data() -> Dataset:
    return taste_groups()


# -- Switching ------------------------------------------------------------------------------------
def test_switching_is_the_documented_mix_of_standardized_members(data):
    model = Switching(
        collaborative="ease", content="tfidf", cold_user="popularity", min_item_interactions=3
    ).fit(data)
    users = [*data.users.ids.tolist(), "stranger"]
    cf = z(create("ease").fit(data).score(users))
    content = z(create("tfidf").fit(data).score(users))
    cold_user = z(create("popularity").fit(data).score(users))
    counts = data.item_popularity()
    cold = counts < 3
    assert {data.items.ids[i] for i in np.flatnonzero(cold)} == {"n1", "n2", "s1"}
    np.testing.assert_array_equal(model.cold_items_, cold)
    cf[:, cold] = content[:, cold]
    n = np.append(data.user_activity(), 0).astype(float)  # implicit: every interaction a like
    w = (n / (n + 3.0))[:, None]
    np.testing.assert_allclose(model.score(users), w * cf + (1 - w) * cold_user, atol=1e-9)


def test_a_cold_item_gets_the_content_models_score(data):
    # user_pivot=0: a user with likes is all collaborative -- except on cold items
    model = Switching(content="feature-profile", cold_user="popularity", user_pivot=0).fit(data)
    ease = z(create("ease").fit(data).score("u01"))[0]
    content = z(create("feature-profile").fit(data).score("u01"))[0]
    mixed = model.score("u01")[0]
    cold = np.flatnonzero(model.cold_items_)
    warm = np.flatnonzero(~model.cold_items_)
    np.testing.assert_allclose(mixed[cold], content[cold], atol=1e-9)
    np.testing.assert_allclose(mixed[warm], ease[warm], atol=1e-9)
    # the never-played jazz record reaches a jazz fan's list, the rock one does not
    top = order(model.recommend("u01", k=8))
    assert "n1" in top and "n2" not in top


def test_users_without_likes_get_the_cold_user_models_order(data):
    model = Switching(cold_user="popularity").fit(data)
    popularity = create("popularity").fit(data)
    for user in ("new_young", "stranger"):
        assert order(model.recommend(user, k=23)) == order(popularity.recommend(user, k=23))
    demographic = Switching(cold_user="user-metadata").fit(data)
    metadata = create("user-metadata").fit(data)
    assert order(demographic.recommend("new_young", k=10)) == order(
        metadata.recommend("new_young", k=10)
    )
    # and that is "people like you": the young newcomer gets jazz, the older one rock
    assert all(int(i[1:]) < 10 for i in order(demographic.recommend("new_young", k=5)))
    assert all(int(i[1:]) >= 10 for i in order(demographic.recommend("new_old", k=5)))


def test_a_user_with_many_likes_gets_nearly_the_collaborative_order(data):
    rng = np.random.default_rng(1)
    rows = []
    for u in range(60):
        block = range(0, 40) if u < 30 else range(40, 80)
        rows += [(f"u{u:02d}", f"i{i:02d}") for i in block if rng.random() < 0.3]
    rows += [("power", f"i{i:02d}") for i in rng.choice(80, 45, replace=False)]
    rows += [("light", "i01")]
    ds = Dataset.from_frame(pd.DataFrame(rows, columns=["user", "item"]))
    model = Switching(min_item_interactions=0, content="popularity", cold_user="popularity")
    model.fit(ds)
    ease, popularity = create("ease").fit(ds), create("popularity").fit(ds)

    def rho(user, member):
        return stats.spearmanr(model.score(user)[0], member.score(user)[0]).statistic

    # 45 likes: w = 45 / 48, nearly all collaborative
    assert rho("power", ease) > 0.99
    assert order(model.recommend("power", k=8)) == order(ease.recommend("power", k=8))
    # one like: w = 1 / 4, mostly popularity
    assert rho("light", popularity) > 0.9 > rho("light", ease)
    # user_pivot=0: all collaborative as soon as there is one like
    exact = Switching(min_item_interactions=0, content="popularity", user_pivot=0).fit(ds)
    for user in ("power", "light"):
        assert order(exact.recommend(user, k=10)) == order(ease.recommend(user, k=10))


def test_history_length_counts_likes_on_rated_data():
    rows = pd.DataFrame(
        {
            "user": ["a", "a", "a", "b", "b", "c"],
            "item": ["x", "y", "z", "x", "y", "z"],
            "rating": [5, 4, 2, 1, 3, 5],
        }
    )
    ds = Dataset.from_frame(rows, rating="rating")
    model = Switching(collaborative="popularity", content="popularity").fit(ds)
    np.testing.assert_array_equal(model.history_length_, [2, 0, 1])
    lenient = Switching(collaborative="popularity", content="popularity", like_threshold=1).fit(ds)
    np.testing.assert_array_equal(lenient.history_length_, [3, 2, 1])


def test_cold_user_auto_picks_by_user_attributes(data):
    assert Switching().fit(data).cold_user_spec_ == "user-metadata"
    plain = taste_groups(with_users=False)
    model = Switching().fit(plain)
    assert model.cold_user_spec_ == "popularity"
    assert [m.name for m in model._members] == ["ease", "feature-profile", "popularity"]


def test_new_item_days_makes_recent_items_cold():
    ds = taste_groups(with_time=True)
    counts_only = Switching(min_item_interactions=1, cold_user="popularity").fit(ds)
    recent = Switching(min_item_interactions=1, new_item_days=2, cold_user="popularity").fit(ds)
    first = {}
    for item, time in zip(ds.items.to_ids(ds.item_index), ds.timestamp, strict=True):
        first[item] = min(first.get(item, np.inf), time)
    cutoff = ds.timestamp.max() - 2 * 86_400
    expected = {i for i, t in first.items() if t > cutoff} | {"n1", "n2"}
    assert {ds.items.ids[i] for i in np.flatnonzero(recent.cold_items_)} == expected
    assert {ds.items.ids[i] for i in np.flatnonzero(counts_only.cold_items_)} == {"n1", "n2"}
    assert len(expected) > 2  # the rule adds items


def test_switching_saves_and_loads(data, tmp_path):
    model = Switching(content="tfidf").fit(data)
    assert model.cold_user_spec_ == "user-metadata"
    folder = model.save(tmp_path / "switching")
    assert (folder / "members" / "2" / "config.json").is_file()
    again = load(folder)
    assert isinstance(again, Switching)
    assert again.get_params() == model.get_params()
    users = ["u00", "u25", "new_young", "new_old", "stranger"]
    np.testing.assert_array_equal(again.score(users), model.score(users))
    pd.testing.assert_frame_equal(again.recommend(users, k=5), model.recommend(users, k=5))
    history = ["i01", "i02", "n1"]
    pd.testing.assert_frame_equal(
        again.recommend_from_history(history, k=5), model.recommend_from_history(history, k=5)
    )


def test_switching_fold_in_mixes_the_members_histories(data):
    model = Switching(content="tfidf", cold_user="popularity", min_item_interactions=3).fit(data)
    history = ["i01", "i02", "i03", "i04"]
    ease, tfidf, popularity = (create(n).fit(data) for n in ("ease", "tfidf", "popularity"))
    row = ease.history_matrix(history)
    cf = z(ease._score_history(row))
    content = z(tfidf._score_history(row))
    cold_user = z(popularity._score_history(row))
    cf[:, model.cold_items_] = content[:, model.cold_items_]
    expected = 4 / 7 * cf + 3 / 7 * cold_user
    expected[0, ease.items_.to_index(history)] = -np.inf
    top = np.argsort(-expected[0], kind="stable")[:5]
    got = model.recommend_from_history(history, k=5)
    assert got["item"].tolist() == data.items.to_ids(top).tolist()
    np.testing.assert_allclose(got["score"], expected[0, top], atol=1e-9)


def test_switching_rejects_bad_parameters(data):
    with pytest.raises(InvalidInputError, match="user_pivot"):
        Switching(user_pivot=-1).fit(data)
    with pytest.raises(InvalidInputError, match="new_item_days"):
        Switching(new_item_days=0).fit(data)
    with pytest.raises(InvalidInputError, match="unknown model"):
        Switching(content="nope").fit(data)


# -- Cascade --------------------------------------------------------------------------------------
def expected_cascade(first: np.ndarray, second: np.ndarray, seen: set[int], c: int) -> list[int]:
    unseen = [i for i in range(len(first)) if i not in seen]
    by_first = sorted(unseen, key=lambda i: (-first[i], i))
    chosen, rest = by_first[:c], by_first[c:]
    return sorted(chosen, key=lambda i: (-second[i], i)) + rest


@pytest.mark.parametrize("candidates", [1, 4, 10, 1000])
def test_cascade_reorders_the_first_models_best_by_the_second(data, candidates):
    model = Cascade(first="ease", second="popularity", candidates=candidates).fit(data)
    ease = create("ease").fit(data)
    popularity = create("popularity").fit(data)
    for user in ("u03", "u30"):
        u = data.users.to_index([user])[0]
        seen = set(data.matrix("binary")[u].indices.tolist())
        expected = expected_cascade(
            ease.score(user)[0], popularity.score(user)[0], seen, candidates
        )
        got = model.recommend(user, k=data.n_items)
        assert data.items.to_index(got["item"]).tolist() == expected
        top = got["score"].to_numpy()[: min(candidates, len(expected))]
        # candidates score in [1, 2], the rest in [-1, 0]
        assert (top >= 1).all() and (got["score"].to_numpy()[len(top) :] <= 0).all()


def test_cascade_with_more_candidates_than_items_is_the_second_model_on_unseen_items(data):
    model = Cascade(first="ease", second="feature-profile", candidates=500).fit(data)
    profile = create("feature-profile").fit(data)
    assert order(model.recommend("u05", k=30)) == order(profile.recommend("u05", k=30))


def test_cascade_fold_in_and_save(data, tmp_path):
    model = Cascade(first="ease", second="tfidf", candidates=5).fit(data)
    ease, tfidf = create("ease").fit(data), create("tfidf").fit(data)
    history = ["i01", "i02", "i15"]
    row = ease.history_matrix(history)
    expected = expected_cascade(
        ease._score_history(row)[0],
        tfidf._score_history(row)[0],
        set(row.indices.tolist()),
        5,
    )
    got = model.recommend_from_history(history, k=data.n_items)
    assert data.items.to_index(got["item"]).tolist() == expected
    again = load(model.save(tmp_path / "cascade"))
    assert isinstance(again, Cascade)
    users = ["u00", "u33", "new_old", "stranger"]
    np.testing.assert_array_equal(again.score(users), model.score(users))
    pd.testing.assert_frame_equal(
        again.recommend_from_history(history, k=5), model.recommend_from_history(history, k=5)
    )


def test_cascade_rejects_bad_parameters(data):
    with pytest.raises(InvalidInputError, match="candidates"):
        Cascade(candidates=0).fit(data)


def test_hybrids_are_made_from_specs():
    model = create("switching", collaborative="item-knn:k=5", content="tfidf:combine=union")
    model.fit(taste_groups(with_users=False))
    assert model._members[0].k == 5 and model._members[1].combine == "union"
    assert isinstance(create("cascade"), Cascade)
    with pytest.raises(InvalidInputError, match="not key=value"):
        Cascade(second="tfidf:neighbors").fit(taste_groups(with_users=False))
    with pytest.raises(InvalidInputError, match="combine"):
        Cascade(second="tfidf:combine=both").fit(taste_groups(with_users=False))


# -- the weighted hybrid ---------------------------------------------------------------------------
@pytest.mark.parametrize("members", [("ease", "tfidf"), ("ease", "feature-profile")])
def test_blend_with_a_content_member_fits_and_saves(data, members, tmp_path):
    blend = create("blend", members=members).fit(data)
    assert len(blend.weights_) == 2 and blend.weights_.sum() == pytest.approx(1.0)
    again = load(blend.save(tmp_path / "blend"))
    users = ["u00", "u21", "new_young", "stranger"]
    np.testing.assert_array_equal(again.score(users), blend.score(users))
    pd.testing.assert_frame_equal(again.recommend(users, k=5), blend.recommend(users, k=5))
    assert (tmp_path / "blend" / "members" / "1" / "config.json").is_file()
    assert type(again._members[1]).__name__ == type(blend._members[1]).__name__


def test_auto_cold_user_model_ignores_free_text_only_attributes():
    """Last.fm's users carry only a free-text friends list: no attribute to compare, so the
    cold-user part is popularity instead of a failing user-metadata."""
    import pandas as pd

    from tastebud import Dataset
    from tastebud.models import create

    frame = pd.DataFrame(
        {"user": [f"u{i}" for i in range(6) for _ in range(2)], "item": list("abcdef") * 2}
    )
    users = pd.DataFrame(
        {"user": [f"u{i}" for i in range(6)], "friends": [f"f{i}" for i in range(6)]}
    )
    items = pd.DataFrame(
        {
            "item": list("abcdef"),
            "name": ["jazz one", "jazz two", "rock one", "rock two", "folk one", "folk two"],
        }
    )
    ds = Dataset.from_frame(frame, users=users, items=items)
    model = create("switching", content="tfidf").fit(ds)
    assert model.cold_user_spec_ == "popularity"
