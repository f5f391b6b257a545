"""Loaders of the reference data sets, checked against facts published with the data."""

from __future__ import annotations

import pytest

from tastebud.data.reference import (
    data_home,
    load_lastfm_2k,
    load_movielens_100k,
    load_movielens_100k_fold,
    load_movielens_latest,
)

pytestmark = pytest.mark.reference_data


def folder_or_skip(name: str):
    path = data_home() / name
    if not path.is_dir():
        pytest.skip(f"reference data folder {path} not found (set TASTEBUD_DATA)")
    return path


@pytest.fixture(scope="module")
def ml100k():
    return load_movielens_100k(folder_or_skip("ml-100k"))


@pytest.fixture(scope="module")
def lastfm():
    return load_lastfm_2k(folder_or_skip("hetrec2011-lastfm-2k"))


# -- MovieLens 100K --------------------------------------------------------------------------
def test_ml100k_counts_ratings_and_timestamps(ml100k):
    assert (ml100k.n_users, ml100k.n_items, len(ml100k)) == (943, 1682, 100_000)
    assert ml100k.has_ratings and ml100k.has_timestamps and ml100k.weight is None
    assert sorted(set(ml100k.rating.tolist())) == [1.0, 2.0, 3.0, 4.0, 5.0]
    # Collected from 19 Sep 1997 to 22 Apr 1998.
    assert (ml100k.timestamp.min(), ml100k.timestamp.max()) == (874724710.0, 893286638.0)
    assert ml100k.skipped == {}
    assert ml100k.name == "ml-100k"


def test_ml100k_matrix(ml100k):
    m = ml100k.matrix()
    assert m.shape == (943, 1682)
    assert m.nnz == 100_000
    # Ids 1..943 / 1..1682 are sorted, so index = id - 1; first line of u.data: 196 242 3.
    assert ml100k.users.ids[0] == 1 and ml100k.items.ids[-1] == 1682
    assert m[195, 241] == 3.0
    assert ml100k.user_activity()[0] == 272  # user 1 rated 272 movies
    assert ml100k.item_popularity()[49] == 583  # Star Wars (item 50), the most rated


def test_ml100k_item_features(ml100k):
    items = ml100k.item_features
    assert items.loc[1, "title"] == "Toy Story (1995)"
    assert items.loc[1, "year"] == 1995
    assert "Animation" in items.loc[1, "genres"].split("|")
    assert items.loc[1, "genres"] == "Animation|Children's|Comedy"
    assert items.loc[50, "title"] == "Star Wars (1977)"


def test_ml100k_user_features(ml100k):
    user = ml100k.user_features.loc[1]
    assert (user["age"], user["gender"], user["occupation"]) == (24, "M", "technician")


def test_ml100k_official_fold_1():
    folder = folder_or_skip("ml-100k")
    train, test = load_movielens_100k_fold(1, folder)
    assert len(train) == 80_000
    assert len(test) == 20_000
    assert (train.n_users, train.n_items) == (943, 1682)
    assert list(test.columns) == ["user", "item", "rating", "timestamp"]
    assert set(test["user"]) <= set(train.users.ids.tolist())
    assert train.item_features.loc[1, "title"] == "Toy Story (1995)"


# -- Last.fm HetRec 2011 ---------------------------------------------------------------------
def test_lastfm_counts_and_play_counts(lastfm):
    assert (lastfm.n_users, lastfm.n_items, len(lastfm)) == (1892, 17632, 92_834)
    assert lastfm.rating is None and lastfm.timestamp is None
    assert lastfm.weight is not None
    u, i = lastfm.users.to_index([2])[0], lastfm.items.to_index([51])[0]
    assert lastfm.matrix()[u, i] == 13883.0  # first line of user_artists.dat: 2 51 13883


def test_lastfm_features(lastfm):
    assert lastfm.item_features.loc[1, "name"] == "MALICE MIZER"
    friends = lastfm.user_features.loc[2, "friends"].split("|")
    assert "275" in friends
    assert friends[0] == "275"


# -- MovieLens "latest" format ---------------------------------------------------------------
def test_load_movielens_latest_on_a_tiny_folder(tmp_path):
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n"
        "1,1,4.0,964982703\n"
        "1,3,0.5,964981247\n"
        "2,1,5.0,964982224\n"
        "2,11,3.5,964983815\n"
    )
    (tmp_path / "movies.csv").write_text(
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
        '3,"American President, The (1995)",Comedy|Drama|Romance\n'
        "11,Unknown Thing (2020),(no genres listed)\n"
        "99,Never Rated (1999),Drama\n"
    )
    (tmp_path / "tags.csv").write_text(
        "userId,movieId,tag,timestamp\n"
        "2,1,pixar,1445714994\n"
        "1,1,fun,1445714996\n"
        "3,1,pixar,1445714992\n"
        '2,3,"politics, romance",1445715000\n'
    )
    ds = load_movielens_latest(tmp_path)
    assert (ds.n_users, len(ds)) == (2, 4)
    assert ds.rating.tolist() == [4.0, 0.5, 5.0, 3.5]
    # Movie 99 has no ratings: a cold item known from movies.csv.
    assert ds.items.ids.tolist() == [1, 3, 11, 99]
    items = ds.item_features
    assert items.loc[1, "title"] == "Toy Story (1995)"
    assert items.loc[3, "title"] == "American President, The (1995)"
    assert items.loc[11, "genres"] == ""  # "(no genres listed)"
    assert items.loc[1, "tags"] == "fun|pixar"
    assert items.loc[3, "tags"] == "politics, romance"
    assert items.loc[99, "tags"] == ""
