"""``evaluate(..., candidates=...)``: only the given items (or the test set's items) are ranked,
and AUC counts only those candidates -- checked on tiny splits by hand."""

from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import pytest

from tastebud import Dataset
from tastebud.errors import InvalidInputError, TastebudError
from tastebud.evaluation import evaluate, leaderboard, prepare_test
from tastebud.split import Split, cold_item_split


def values(result: pd.DataFrame, model: str | None = None) -> dict[str, float]:
    rows = result if model is None else result[result["model"] == model]
    return dict(zip(rows["metric"], rows["value"], strict=True))


@pytest.fixture
def popular_first() -> Split:
    """Popularity ranks p1 (3 users) and p2 (2) first; the test items t1 and t2 lie below.
    Internal order: p1, p2, q, t1, t2."""
    train = Dataset.from_frame(
        pd.DataFrame(
            [
                ("h1", "p1"),
                ("h1", "p2"),
                ("h2", "p1"),
                ("h2", "p2"),
                ("h3", "p1"),
                ("h3", "t1"),
                ("h4", "t1"),
                ("h4", "t2"),
                ("u1", "q"),
                ("u2", "q"),
            ],
            columns=["user", "item"],
        )
    )
    test = pd.DataFrame({"user": ["u1", "u2"], "item": ["t1", "t2"]})
    return Split(train, test, name="by hand")


def test_only_the_candidates_are_ranked(popular_first):
    everything = values(evaluate("popularity", popular_first, k=2))
    assert everything["HitRate@2"] == 0.0  # both lists are [p1, p2]
    assert everything["Coverage@2"] == pytest.approx(2 / 5)
    only_test = values(evaluate("popularity", popular_first, k=2, candidates="test"))
    assert only_test["HitRate@2"] == 1.0  # both lists are [t1, t2]
    assert only_test["Precision@2"] == pytest.approx(0.5)
    assert only_test["MRR@2"] == pytest.approx((1 + 1 / 2) / 2)
    # the same as naming them; an unknown id is ignored
    named = evaluate("popularity", popular_first, k=2, candidates=["t2", "t1", "nope"])
    assert values(named) == pytest.approx(
        {
            **only_test,
            "fit_seconds": values(named)["fit_seconds"],
            "recommend_seconds": values(named)["recommend_seconds"],
        }
    )
    # one candidate: every list is that item
    one = values(evaluate("popularity", popular_first, k=2, candidates=np.array(["t2"])))
    assert one["HitRate@2"] == pytest.approx(0.5)  # u2's t2; u1's t1 cannot be ranked
    assert one["Coverage@2"] == pytest.approx(1 / 5)


def test_lists_hold_nothing_but_candidates(popular_first):
    per_user: dict[str, pd.DataFrame] = {}
    result = evaluate(
        "popularity",
        popular_first,
        k=5,
        candidates=["q", "t2"],
        metrics=["precision"],
        per_user=per_user,
    )
    # u1 and u2 saw q: their lists are [t2] alone (precision@5 counts the missing slots)
    assert per_user["popularity"]["Precision@5"].tolist() == [0.0, 0.2]
    assert values(result)["Coverage@5"] == pytest.approx(1 / 5)


def test_protocol_names_the_candidates(popular_first):
    default = evaluate("popularity", popular_first, k=2)
    assert default.attrs["protocol"]["candidates"] == "all items minus the user's training items"
    given = evaluate("popularity", popular_first, k=2, candidates=["t1", "t2", "p1", "zzz"])
    assert given.attrs["protocol"]["candidates"] == (
        "3 given items minus the user's training items"
    )
    from_test = evaluate("popularity", popular_first, k=2, candidates="test")
    assert from_test.attrs["protocol"]["candidates"].startswith("2 given items")


def test_bad_candidates_are_refused(popular_first):
    with pytest.raises(InvalidInputError, match="none of the candidate items"):
        evaluate("popularity", popular_first, candidates=["x", "y"])
    with pytest.raises(InvalidInputError, match="none of the candidate items"):
        evaluate("popularity", popular_first, candidates=[])
    with pytest.raises(InvalidInputError, match="'test'"):
        evaluate("popularity", popular_first, candidates="all")
    with pytest.raises(InvalidInputError, match="'test'"):
        evaluate("popularity", popular_first, candidates="t1")  # one id is a list of one


def test_one_numeric_candidate_is_a_clear_answer():
    train = Dataset.from_frame(pd.DataFrame({"user": [1, 2, 3], "item": [7, 8, 9]}))
    split = Split(train, pd.DataFrame({"user": [1], "item": [8]}))
    with contextlib.suppress(TastebudError):  # accepted as one id, or refused clearly
        evaluate("popularity", split, candidates=8, beyond_accuracy=False)


# -- AUC: what counts as a candidate ---------------------------------------------------------------
def auc_split(unknown_test_item: bool = False) -> Split:
    """Items a..e; u1 saw a and b. Popularity: d (3) > c (2) > a = b = e (1).
    u1's test items: c (rankable), a (already seen in training) and, optionally, x (unknown
    to training)."""
    train = Dataset.from_frame(
        pd.DataFrame(
            [
                ("u1", "a"),
                ("u1", "b"),
                ("v", "c"),
                ("v", "d"),
                ("v", "e"),
                ("w", "c"),
                ("w", "d"),
                ("y", "d"),
            ],
            columns=["user", "item"],
        )
    )
    items = ["c", "a", "x"] if unknown_test_item else ["c", "a"]
    return Split(train, pd.DataFrame({"user": ["u1"] * len(items), "item": items}))


def candidates(split: Split, ids: list[str]) -> np.ndarray:
    return np.sort(split.train.items.to_index(ids))


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        (None, 4),  # c, d, e rankable + a tied at the bottom
        (["b", "c", "d"], 3),  # c, d (b was seen) + a
        (["a", "c", "d"], 3),  # c, d (a was seen) + a
        (["c", "e"], 3),  # c, e + a
        (["d", "e"], 4),  # d, e + c (not a candidate) and a
        (["a", "b", "c", "d", "e"], 4),  # the whole catalogue: as without candidates
    ],
)
def test_n_candidates_by_hand(ids, expected):
    split = auc_split()
    cand = None if ids is None else candidates(split, ids)
    prepared = prepare_test(split, None, cand)
    assert prepared.n_candidates.tolist() == [expected]
    assert prepared.relevant.sum() == 2


def auc(split: Split, ids: list[str] | None) -> float:
    result = evaluate("popularity", split, k=2, metrics=["auc"], candidates=ids)
    return values(result)["AUC@2"]


def test_auc_counts_only_candidates():
    split = auc_split()
    # All items: list [d, c]; P = 2 relevant (c, a), N = 4 - 2 = 2 (d, e). The hit c has one
    # non-relevant item above it: (2 - 1) + 0.5 * (2 - 1) * (2 - 1) = 1.5 of P * N = 4 pairs.
    assert auc(split, None) == pytest.approx(1.5 / 4)
    # Candidates c and e: list [c, e]; N = 3 - 2 = 1 (e). c is first: 1 + 0.5 * 1 * 0 = 1 of 2.
    assert auc(split, ["c", "e"]) == pytest.approx(1 / 2)
    # Candidates d and e: list [d, e], no hit; N = 2: 0.5 * 2 * (2 - 2) = 0.
    assert auc(split, ["d", "e"]) == pytest.approx(0.0)
    # Candidates b, c, d, e: list [d, c]; N = 4 - 2 = 2, as with everything.
    assert auc(split, ["b", "c", "d", "e"]) == pytest.approx(1.5 / 4)


@pytest.mark.parametrize(
    ("ids", "expected_n", "expected_auc"),
    [
        # c, e + a, x: N = 4 - 3 = 1; list [c, e]: (1 - 0) + 0.5 * 2 * 0 = 1 of 3 pairs
        (["c", "e"], 4, 1 / 3),
        # d, e + c, a, x: N = 2; list [d, e], no hit: 0.5 * 3 * 0 = 0
        (["d", "e"], 5, 0.0),
    ],
)
def test_candidates_with_a_test_item_unknown_to_training(ids, expected_n, expected_auc):
    split = auc_split(unknown_test_item=True)
    assert prepare_test(split, None, None).n_candidates.tolist() == [5]  # c, d, e + a, x
    assert prepare_test(split, None, candidates(split, ids)).n_candidates.tolist() == [expected_n]
    assert auc(split, ids) == pytest.approx(expected_auc)


# -- the use it is made for: ranking new items among themselves -----------------------------------
def test_content_beats_popularity_on_new_items():
    rng = np.random.default_rng(0)
    genre = ["jazz"] * 15 + ["rock"] * 15
    items = pd.DataFrame(
        {
            "item": [f"i{i:02d}" for i in range(30)],
            "genre": genre,
            "title": [f"{g} album" for g in genre],
        }
    )
    rows = [
        (f"u{u:02d}", f"i{i:02d}")
        for u in range(40)
        for i in (range(0, 15) if u < 20 else range(15, 30))
        if rng.random() < 0.5
    ]
    ds = Dataset.from_frame(pd.DataFrame(rows, columns=["user", "item"]), items=items)
    split = cold_item_split(ds, 0.3, seed=1)
    result = evaluate(["tfidf", "popularity"], split, k=3, candidates="test", beyond_accuracy=False)
    board = leaderboard(result)
    # the new items have no plays: popularity can only guess, the genre tells tfidf
    assert board.loc["tfidf", "NDCG@3"] > board.loc["popularity", "NDCG@3"] + 0.2
    assert result.attrs["protocol"]["candidates"].startswith(
        f"{split.test['item'].nunique()} given"
    )
