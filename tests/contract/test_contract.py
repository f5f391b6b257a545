"""The suite every registered model must pass (ARCHITECTURE.md, "The contract")."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from tastebud import Dataset
from tastebud.data.synthetic import synthetic
from tastebud.errors import ModelFileError, NotFittedError, TastebudError, UnknownIdError
from tastebud.models import Recommender, available, create, load

MODELS = available()


def _string_ids(ds: Dataset) -> Dataset:
    """The same data with text ids (features carried over, re-keyed)."""
    table = ds.interactions
    table["user"] = "user-" + table["user"].astype(str)
    table["item"] = "item-" + table["item"].astype(str)
    users = items = None
    if ds.user_features is not None:
        users = ds.user_features.rename(index=lambda u: f"user-{u}").rename_axis("user")
    if ds.item_features is not None:
        items = ds.item_features.rename(index=lambda i: f"item-{i}").rename_axis("item")
    return Dataset.from_frame(
        table, rating="rating", timestamp="timestamp", users=users, items=items, name="strings"
    )


@pytest.fixture(scope="module")
def int_data() -> Dataset:
    return synthetic(120, 60, 2_000, n_clusters=3, seed=11)


@pytest.fixture(scope="module", params=["int-ids", "string-ids"])
def data(request, int_data) -> Dataset:
    return int_data if request.param == "int-ids" else _string_ids(int_data)


@pytest.fixture(scope="module")
def fitted(int_data):
    return {name: create(name).fit(int_data) for name in MODELS}


@pytest.fixture(scope="module")
def fit_once() -> Callable[[str, Dataset], Recommender]:
    """One fit per model and data set, shared by the tests that only read the fitted model
    (recommend, score, save): reading must not change it, so sharing also checks that."""
    cache: dict[tuple[str, int], Recommender] = {}

    def get(name: str, data: Dataset) -> Recommender:
        key = (name, id(data))
        if key not in cache:
            cache[key] = create(name).fit(data)
        return cache[key]

    return get


def _users(ds: Dataset, n: int = 5) -> list:
    return ds.users.ids[:n].tolist()


def test_registry_lists_the_baselines():
    assert {"popularity", "trending", "random", "baseline"} <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_init_only_stores_params_and_fit_returns_self(name, int_data):
    model = create(name)
    assert not model.is_fitted
    assert not [k for k in vars(model) if k.endswith("_")]
    params = model.get_params()
    clone = create(name, **params)
    assert clone.get_params() == params
    assert model.fit(int_data) is model
    assert model.is_fitted
    with pytest.raises(TastebudError):
        model.set_params(no_such_param=1)


@pytest.mark.parametrize("name", MODELS)
def test_unfitted_model_says_so(name):
    with pytest.raises(NotFittedError, match="fit"):
        create(name).recommend([1])


@pytest.mark.parametrize("name", MODELS)
def test_recommend_shape_order_and_exclude_seen(name, data, fit_once):
    model = fit_once(name, data)
    users = _users(data)
    recs = model.recommend(users, k=7)
    assert list(recs.columns) == ["user", "item", "score", "rank"]
    assert recs["user"].drop_duplicates().tolist() == users  # order as given
    seen = set(zip(data.interactions.user, data.interactions.item, strict=True))
    for user, group in recs.groupby("user", sort=False):
        assert group["rank"].tolist() == list(range(1, len(group) + 1))
        assert np.all(np.diff(group["score"].to_numpy()) <= 1e-12)
        assert group["item"].is_unique
        assert not any((user, item) in seen for item in group["item"])
        n_unseen = data.n_items - int(data.user_activity()[data.users.to_index([user])[0]])
        assert len(group) == min(7, n_unseen)
    with_seen = model.recommend(users, k=data.n_items, exclude_seen=False)
    assert with_seen.groupby("user").size().eq(data.n_items).all()


@pytest.mark.parametrize("name", MODELS)
def test_k_larger_than_catalog_returns_every_unseen_item_once(name, data, fit_once):
    model = fit_once(name, data)
    user = _users(data, 1)[0]
    recs = model.recommend(user, k=10 * data.n_items)
    seen = set(data.history(user)["item"])
    assert set(recs["item"]) == set(data.items.ids) - seen
    assert len(recs) == data.n_items - len(seen)


@pytest.mark.parametrize("name", MODELS)
def test_unknown_users_follow_the_policy(name, data, fit_once):
    model = fit_once(name, data)
    recs = model.recommend(["nobody", _users(data, 1)[0]], k=5)
    assert (recs["user"] == "nobody").sum() == 5  # fallback answers unknown users
    strict = create(name, on_unknown="raise").fit(data)
    with pytest.raises(UnknownIdError, match="nobody"):
        strict.recommend(["nobody"], k=5)
    with pytest.raises(UnknownIdError):
        strict.score(["nobody"])


@pytest.mark.parametrize("name", MODELS)
def test_candidates_restrict_the_ranking(name, data, fit_once):
    model = fit_once(name, data)
    candidates = data.items.ids[::7].tolist()
    recs = model.recommend(_users(data), k=3, items=[*candidates, "not-an-item"])
    assert set(recs["item"]) <= set(candidates)


@pytest.mark.parametrize("name", MODELS)
def test_batches_do_not_change_answers_and_score_agrees(name, data, fit_once):
    model = fit_once(name, data)
    users = _users(data, 4)
    together = model.recommend(users, k=5)
    for user in users:
        alone = model.recommend([user], k=5)
        # the same items in the same order; float32 networks' scores may differ in the last
        # bits (a kernel sums in another order for one row than for a block of rows)
        pd.testing.assert_frame_equal(
            alone.reset_index(drop=True),
            together[together["user"] == user].reset_index(drop=True),
            check_exact=False,
            rtol=1e-5,
            atol=1e-6,
        )
    scores = model.score(users)
    assert scores.shape == (len(users), data.n_items)
    top = model.recommend(users[:1], k=1, exclude_seen=False)
    best = data.items.ids[int(np.argmax(scores[0]))]
    assert top["item"].iloc[0] == best


@pytest.mark.parametrize("name", MODELS)
def test_fitting_is_deterministic(name, int_data):
    users = _users(int_data)
    a = create(name).fit(int_data).recommend(users, k=5)
    b = create(name).fit(int_data).recommend(users, k=5)
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("name", MODELS)
def test_save_load_round_trip_without_pickle(name, data, fit_once, tmp_path):
    model = fit_once(name, data)
    folder = model.save(tmp_path / name)
    with np.load(folder / "arrays.npz", allow_pickle=False) as npz:
        assert all(npz[key].dtype != object for key in npz.files)
    again = load(folder)
    assert type(again) is type(model) and again.get_params() == model.get_params()
    users = [*_users(data), "nobody"]
    pd.testing.assert_frame_equal(again.recommend(users, k=6), model.recommend(users, k=6))
    np.testing.assert_array_equal(again.score(users[:3]), model.score(users[:3]))


def test_loading_checks_class_and_version(fitted, tmp_path):
    from tastebud.models.baseline import BaselineOnly
    from tastebud.models.popularity import Popularity

    folder = fitted["popularity"].save(tmp_path / "pop")
    with pytest.raises(ModelFileError, match="not a BaselineOnly"):
        BaselineOnly.load(folder)
    assert isinstance(Popularity.load(folder), Popularity)
    config = json.loads((folder / "config.json").read_text())
    config["format_version"] = 99
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="version 99"):
        load(folder)
    with pytest.raises(ModelFileError, match="no such folder"):
        load(tmp_path / "missing")
    with pytest.raises(ModelFileError, match=r"no config\.json"):
        load(tmp_path)


@pytest.mark.parametrize("name", MODELS)
def test_predict_is_for_rating_models_only(name, fitted, int_data):
    model = fitted[name]
    pairs = int_data.interactions.head(20)[["user", "item"]]
    if model.predicts_ratings:
        pred = model.predict(pairs)
        assert pred.shape == (20,) and np.isfinite(pred).all()
        assert pred.min() >= 1 and pred.max() <= 5
        unknown = model.predict(pd.DataFrame({"user": [-5], "item": [-7]}))
        assert np.isfinite(unknown).all()
    else:
        with pytest.raises(TastebudError, match="does not predict ratings"):
            model.predict(pairs)


@pytest.mark.parametrize("name", MODELS)
def test_similar_items_when_supported(name, fitted, int_data):
    model = fitted[name]
    items = int_data.items.ids[:3].tolist()
    if not model.supports_similar_items:
        with pytest.raises(TastebudError):
            model.similar_items(items)
        return
    sims = model.similar_items(items, k=4)
    assert list(sims.columns) == ["item", "similar", "score", "rank"]
    assert not (sims["item"] == sims["similar"]).any()


@pytest.mark.parametrize("name", MODELS)
def test_fit_rejects_wrong_inputs(name):
    with pytest.raises(TastebudError, match="Dataset"):
        create(name).fit(pd.DataFrame({"user": [1], "item": [2]}))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", MODELS)
def test_numbers_out_of_range_are_refused_by_name_before_fitting(name, int_data):
    """Every integer parameter of every model: beyond 64 bits from Python, and inf / nan /
    1e30 from the CLI's text, is an InvalidInputError naming the parameter -- never a
    crash inside the algorithm. Float parameters refuse inf and nan the same way."""
    import typing

    from tastebud.errors import InvalidInputError
    from tastebud.models.registry import get_class, parse_params

    cls = get_class(name)
    hints = typing.get_type_hints(cls)
    numbers = [f.name for f in dataclasses.fields(cls) if hints[f.name] in (int, float)]
    for param in numbers:
        for text in ("inf", "-inf", "nan"):
            with pytest.raises(InvalidInputError, match=param):
                parse_params(name, {param: text})
        if hints[param] is int:
            huge = parse_params(name, {param: "1e30"})[param]
            with pytest.raises(InvalidInputError, match=f"{param}=.*64 bits"):
                create(name, **{param: huge}).fit(int_data)


def test_params_are_declared_once_as_dataclass_fields():
    from tastebud.models.registry import get_class

    for name in MODELS:
        cls = get_class(name)
        assert dataclasses.is_dataclass(cls)
        assert "on_unknown" in {f.name for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("name", MODELS)
def test_fold_in_of_a_training_history_matches_recommend(name, fitted, int_data):
    """A user folded in from their own training history gets (about) their usual list."""
    model = fitted[name]
    user = int_data.users.ids[3]
    history = int_data.history(user)
    if not model.supports_fold_in:
        with pytest.raises(TastebudError, match="cannot recommend from a history"):
            model.recommend_from_history(history["item"])
        return
    values = history["rating"] if model.predicts_ratings else None
    folded = model.recommend_from_history(history["item"], k=10, values=values)
    assert list(folded.columns) == ["item", "score", "rank"]
    assert not set(folded["item"]) & set(history["item"])  # exclude_seen
    usual = model.recommend(user, k=10)
    overlap = len(set(folded["item"]) & set(usual["item"])) / 10
    assert overlap >= model_fold_in_overlap(name)
    anonymous = model.recommend_from_history([], k=5, values=[])  # nothing known: an answer
    assert len(anonymous) == 5
    if model.needs_ratings:  # a rating model must be told the ratings, never guess them
        with pytest.raises(TastebudError, match="values="):
            model.recommend_from_history(history["item"], k=3)
    restricted = model.recommend_from_history(
        history["item"], k=3, values=values, candidates=int_data.items.ids[:9]
    )
    assert set(restricted["item"]) <= set(int_data.items.ids[:9])


def model_fold_in_overlap(name: str) -> float:
    """Exact for memory-based models; factor models re-solve the user vector, so allow drift."""
    # user-knn: a folded-in history finds its own training copy as nearest neighbour, which
    # pushes out the k-th real neighbour (measured minimum over the contract users: 0.9)
    # Content models and the hybrids built on them learn from likes (ratings >= 4) but count
    # every item of a folded-in history; tests/models/test_content.py checks that they are
    # exact on implicit data.
    approximate = {"svd": 0.6, "svdpp": 0.6, "als": 0.6, "bpr": 0.5, "user-knn": 0.9}
    approximate |= {"tfidf": 0.7, "feature-profile": 0.7, "embedding": 0.7}
    approximate |= {"switching": 0.7, "cascade": 0.7}
    # feature-mf fits its users with their attributes and their likes; a folded-in history is
    # every item and no attributes (contract data: mean overlap 0.66 over 40 users, 0.5 here).
    # history-classifier's input is a user's likes, a folded-in history all their items.
    approximate |= {"feature-mf": 0.5, "history-classifier": 0.7}
    # hybrid-bpr, two-tower: a folded-in history has no id embedding and no attributes
    # (learned through id dropout, which hides both); contract data, mean overlap over 40
    # users: 0.83 and 0.91 (minimum 0.2 and 0.7); for this user 0.5 and 0.9.
    approximate |= {"hybrid-bpr": 0.4, "two-tower": 0.7}
    return approximate.get(name, 1.0)


@pytest.mark.parametrize("name", MODELS)
def test_users_known_by_id_only_get_the_fallback(name, int_data):
    """A cold user (in the id map, no training interactions) is answered like an unknown one."""
    table = int_data.interactions
    cold_user = int_data.users.ids[0]
    train = int_data.subset(int_data.user_index != 0)
    assert cold_user in train.users and train.user_activity()[0] == 0
    model = create(name).fit(train)
    cold = model.recommend(cold_user, k=5)
    unknown = model.recommend("stranger", k=5)
    if name in ANSWER_COLD_USERS_FROM_ATTRIBUTES:
        # These models answer a cold user from their attributes, not the fallback.
        assert model._scorable(train.users.to_index([cold_user]))[0]
        assert cold["item"].tolist() != unknown["item"].tolist()
    else:
        assert cold["item"].tolist() == unknown["item"].tolist()
    assert len(table) > len(train)


ANSWER_COLD_USERS_FROM_ATTRIBUTES = {
    "user-metadata",
    "switching",
    "feature-mf",
    "hybrid-bpr",
    "two-tower",
}
