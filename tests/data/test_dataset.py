from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tastebud import Dataset
from tastebud.data.sample import load_sample
from tastebud.data.synthetic import synthetic
from tastebud.errors import DataError, InvalidInputError


@pytest.fixture
def ratings() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "u": ["ann", "bob", "ann", "cy", "ann"],
            "i": [10, 20, 10, 30, 20],
            "r": [3.0, 4.0, 5.0, 2.0, 1.0],
            "t": [100, 200, 300, 400, 500],
        }
    )


def test_from_frame_maps_ids_and_folds_rerating_to_latest(ratings):
    ds = Dataset.from_frame(ratings, user="u", item="i", rating="r", timestamp="t")
    assert (ds.n_users, ds.n_items, len(ds)) == (3, 3, 4)
    table = ds.interactions
    # ann rated item 10 twice: the later rating (5 at t=300) wins
    ann10 = table[(table.user == "ann") & (table.item == 10)]
    assert ann10.rating.tolist() == [5.0] and ann10.timestamp.tolist() == [300.0]
    dense = ds.matrix().toarray()
    assert dense.tolist() == [[5, 1, 0], [0, 4, 0], [0, 0, 2]]


def test_implicit_repeats_sum_by_default_and_policy_is_selectable(ratings):
    ds = Dataset.from_frame(ratings, user="u", item="i", timestamp="t")
    assert ds.rating is None
    table = ds.interactions.set_index(["user", "item"])
    assert table.loc[("ann", 10), "weight"] == 2.0  # two events count twice
    assert table.loc[("ann", 10), "timestamp"] == 300.0
    plays = ratings.assign(p=[1.0, 2.0, 5.0, 1.0, 1.0])
    assert (
        Dataset.from_frame(plays, user="u", item="i", weight="p", duplicates="max").matrix()[0, 0]
        == 5
    )
    assert (
        Dataset.from_frame(plays, user="u", item="i", weight="p", duplicates="first").matrix()[0, 0]
        == 1
    )
    assert Dataset.from_frame(plays, user="u", item="i", weight="p").matrix()[0, 0] == 6
    with pytest.raises(DataError, match="repeated"):
        Dataset.from_frame(ratings, user="u", item="i", duplicates="error")


def test_feature_tables_add_cold_users_and_items_aligned_to_ids(ratings):
    users = pd.DataFrame({"u": ["ann", "dee"], "age": [30, 41]})
    items = pd.DataFrame({"genre": ["jazz", "rock", "pop", "folk"]}, index=[10, 20, 30, 40])
    ds = Dataset.from_frame(ratings, user="u", item="i", rating="r", users=users, items=items)
    assert ds.users.ids.tolist() == ["ann", "bob", "cy", "dee"]  # dee has no interactions
    assert ds.items.ids.tolist() == [10, 20, 30, 40]
    assert ds.user_features is not None and ds.item_features is not None
    assert ds.user_features["age"].tolist()[0] == 30 and np.isnan(ds.user_features["age"].iloc[1])
    assert ds.item_features.loc[40, "genre"] == "folk"
    assert ds.user_activity().tolist() == [2, 1, 1, 0]


def test_history_is_time_ordered_and_unknown_user_is_clear(ratings):
    ds = Dataset.from_frame(ratings, user="u", item="i", rating="r", timestamp="t")
    assert ds.history("ann").item.tolist() == [10, 20]  # t=300 then t=500
    with pytest.raises(LookupError, match="unknown user"):
        ds.history("zed")


def test_to_implicit_keeps_positives_only(ratings):
    ds = Dataset.from_frame(ratings, user="u", item="i", rating="r")
    pos = ds.to_implicit(4.0)
    assert pos.rating is None and len(pos) == 2  # ann/10 (5) and bob/20 (4)
    assert pos.n_users == ds.n_users and pos.n_items == ds.n_items
    assert pos.matrix().sum() == 2


def test_matrix_is_csr_over_sorted_unique_pairs():
    ds = synthetic(200, 100, 3000, seed=3)
    key = ds.user_index.astype(np.int64) * ds.n_items + ds.item_index
    assert np.all(np.diff(key) > 0)
    m = ds.matrix()
    assert m.shape == (200, 100) and m.nnz == len(ds)
    assert ds.item_popularity().sum() == len(ds)


def test_bad_values_in_frames_name_the_row_and_column():
    df = pd.DataFrame({"user": [1, 2, 3], "item": [1, 2, 3], "rating": [1.0, np.inf, 2.0]})
    with pytest.raises(DataError, match=r"row 1: column 'rating': inf is not finite"):
        Dataset.from_frame(df, rating="rating")
    df2 = pd.DataFrame({"user": [1, None], "item": [1, 2]})
    with pytest.raises(DataError, match=r"row 1: column 'user': missing id"):
        Dataset.from_frame(df2)
    with pytest.raises(DataError, match="missing column"):
        Dataset.from_frame(df, user="who")
    with pytest.raises(InvalidInputError, match="DataFrame"):
        Dataset.from_frame([1, 2])  # type: ignore[arg-type]


def test_skip_mode_counts_reasons():
    df = pd.DataFrame({"user": [1, 2, 3, 4], "item": [1, 2, 3, 4], "rating": [1, 9, "x", 3]})
    with pytest.warns(UserWarning, match="skipped 2 of 4 rows"):
        ds = Dataset.from_frame(df, rating="rating", rating_range=(1, 5), on_bad_rows="skip")
    assert len(ds) == 2
    assert sum(ds.skipped.values()) == 2
    assert set(ds.skipped) == {
        "column 'rating': not a number",
        "column 'rating': outside the rating range [1, 5]",
    }


def test_synthetic_is_seeded_power_law_with_cluster_structure():
    a = synthetic(500, 300, 10_000, seed=1)
    b = synthetic(500, 300, 10_000, seed=1)
    assert np.array_equal(a.item_index, b.item_index) and np.array_equal(a.rating, b.rating)
    assert 9_000 <= len(a) <= 10_000
    pop = np.sort(a.item_popularity())[::-1]
    assert pop[:30].sum() > 3 * pop[-30:].sum() * 1.0  # head much heavier than tail
    assert a.user_features is not None and a.item_features is not None
    same = (
        a.user_features["cluster"].to_numpy()[a.user_index]
        == a.item_features["cluster"].to_numpy()[a.item_index]
    )
    assert same.mean() > 0.6  # affinity 0.8 minus global draws
    assert a.rating is not None and a.rating[same].mean() > a.rating[~same].mean() + 1


def test_sample_music_store():
    ds = load_sample()
    assert ds.n_users == 300 and ds.n_items == 60 and ds.has_ratings and ds.has_timestamps
    assert "Origin of Symmetry" in ds.items
    assert (
        ds.item_features is not None
        and ds.item_features.loc["Origin of Symmetry", "artist"] == "Muse"
    )
    assert set(ds.user_features.columns) == {"age", "gender", "city"}  # type: ignore[union-attr]
    assert ds.rating is not None and set(np.unique(ds.rating)) <= {1, 2, 3, 4, 5}


def test_synthetic_density_and_argument_checks():
    ds = synthetic(200, 100, None, density=0.05, seed=0)
    assert 950 <= len(ds) <= 1000  # repeats that 8 top-up rounds did not replace are dropped
    with pytest.raises(InvalidInputError, match="density"):
        synthetic(10, 10, None, density=0.9)
    with pytest.raises(InvalidInputError, match="affinity"):
        synthetic(affinity=1.5)


def test_ids_are_never_merged_or_retyped_silently():
    ds = Dataset.from_frame(pd.DataFrame({"user": ["007", "7", " 7"], "item": ["a", "b", "c"]}))
    assert sorted(ds.users.ids.tolist()) == [" 7", "007", "7"]
    canonical = Dataset.from_frame(pd.DataFrame({"user": ["1", "22"], "item": ["a", "b"]}))
    assert canonical.users.ids.tolist() == [1, 22]  # canonical integer text becomes ints
    with pytest.raises(DataError, match="not true/false"):
        Dataset.from_frame(pd.DataFrame({"user": [True, False], "item": [1, 2]}))


def test_feature_tables_must_share_ids_with_the_interactions():
    events = pd.DataFrame({"user": ["ann", "bob"], "item": [1, 2]})
    with pytest.raises(DataError, match="no 'user' column"):
        Dataset.from_frame(events, users=pd.DataFrame({"id": ["ann"], "age": [3]}))
    with pytest.raises(DataError, match="no id of the user feature table"):
        Dataset.from_frame(events, users=pd.DataFrame({"user": ["zed"], "age": [3]}))


def test_policy_and_range_arguments_are_checked_up_front():
    events = pd.DataFrame({"user": [1, 2], "item": [1, 2], "rating": [3, 4]})
    with pytest.raises(InvalidInputError, match="duplicates must be"):
        Dataset.from_frame(events, rating="rating", duplicates="avg")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="rating_range"):
        Dataset.from_frame(events, rating="rating", rating_range=(5, 1))
    with pytest.raises(DataError, match="more than once"):
        Dataset.from_frame(pd.DataFrame([[1, 2, 3]], columns=["user", "item", "item"]))
