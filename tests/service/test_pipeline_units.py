"""The pipeline's and the experiments' pure parts, on inputs whose right answer is known.

Everything here is fast: no HTTP, no models; the storage-backed parts (exploration, the
exposure log, the report) run on a fresh SQLite file.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats

from tastebud.errors import InvalidInputError, UnknownIdError
from tastebud.pipeline.config import (
    CATEGORY_FIELDS,
    FALLBACK_WEIGHT,
    GENERATORS,
    SECONDS_PER_DAY,
    ExplorationSettings,
    PipelineSettings,
)
from tastebud.pipeline.explore import EXPLORATION_SOURCE
from tastebud.pipeline.filters import Filters, Predicate, categories
from tastebud.pipeline.stages import Candidate, Pool, boost_fresh, rank, select
from tastebud.service.experiments import (
    ExposureLog,
    assign,
    bucket,
    report,
    significance,
)
from tastebud.service.experiments import explorer as explorer_of
from tastebud.service.schemas import ExperimentIn
from tastebud.service.storage import Storage


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Storage]:
    """A migrated, empty SQLite :class:`Storage`."""
    storage = Storage(f"sqlite:///{tmp_path / 'units.db'}")
    storage.migrate()
    try:
        yield storage
    finally:
        storage.close()


# -- settings ----------------------------------------------------------------------------------
def test_pipeline_settings_defaults_cover_every_generator() -> None:
    settings = PipelineSettings()
    assert set(settings.generators) == set(GENERATORS)
    assert settings.diversity == 0.0 and settings.freshness == 0.0
    assert settings.category_field is None and settings.max_per_category is None


@pytest.mark.parametrize("count", [0, 1, 10_000, "5"])
def test_generator_counts_in_range_are_accepted(count: int | str) -> None:
    assert PipelineSettings(generators={"popular": count}).generators == {"popular": int(count)}


def test_unknown_generators_are_named() -> None:
    with pytest.raises(ValidationError, match="magic, zzz") as err:
        PipelineSettings(generators={"zzz": 1, "model": 5, "magic": 5})
    assert "known: model, item_to_item" in str(err.value)


@pytest.mark.parametrize("count", [-1, 10_001, 2.5, None, "many"])
def test_generator_counts_out_of_range_are_refused(count: object) -> None:
    with pytest.raises(ValidationError):
        PipelineSettings(generators={"model": count})


def test_generator_counts_refuse_booleans() -> None:
    with pytest.raises(ValidationError):
        PipelineSettings(generators={"model": True})


@pytest.mark.parametrize(
    "bad",
    [
        {"recent_items": 0},
        {"recent_items": 101},
        {"new_item_days": 0},
        {"diversity": -0.1},
        {"diversity": 1.01},
        {"freshness": -1},
        {"freshness_half_life_days": 0},
        {"max_per_category": 0},
        {"no_such_setting": 1},
    ],
)
def test_pipeline_settings_refuse_bad_values(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        PipelineSettings(**bad)


def test_pipeline_settings_are_frozen() -> None:
    with pytest.raises(ValidationError):
        PipelineSettings().diversity = 0.5  # type: ignore[misc]


def test_merged_ignores_none_and_validates() -> None:
    base = PipelineSettings(recent_items=7, freshness=0.2)
    assert base.merged({}) is base
    assert base.merged({"diversity": None, "freshness": None}) is base  # None: "not given"
    merged = base.merged({"diversity": 0.4, "freshness": None, "max_per_category": 2})
    assert (merged.diversity, merged.max_per_category) == (0.4, 2)
    assert (merged.recent_items, merged.freshness) == (7, 0.2)  # the rest kept
    assert (base.diversity, base.max_per_category) == (0.0, None)  # base untouched
    # a generators override replaces the whole table
    assert base.merged({"generators": {"popular": 5}}).generators == {"popular": 5}
    for bad in (
        {"diversity": 1.5},
        {"generators": {"magic": 1}},
        {"generators": {"model": -1}},
        {"unknown": 1},
    ):
        with pytest.raises(ValidationError):
            base.merged(bad)


# -- predicates --------------------------------------------------------------------------------
def test_predicates_parse_into_field_op_value() -> None:
    assert Predicate.parse("year>=1990") == Predicate("year", ">=", "1990")
    assert Predicate.parse(" release year <= 2000 ") == Predicate("release year", "<=", "2000")
    assert Predicate.parse("genre != Hip Hop") == Predicate("genre", "!=", "Hip Hop")
    assert Predicate.parse("price<-1.5") == Predicate("price", "<", "-1.5")
    assert Predicate.parse("year>1e3") == Predicate("year", ">", "1e3")


@pytest.mark.parametrize(
    ("text", "attributes", "expected"),
    [
        # text, case-insensitively, the whole value
        ("genre=Jazz", {"genre": "jazz"}, True),
        ("genre=jazz", {"genre": "JAZZ"}, True),
        ("genre=jazz", {"genre": "jazz fusion"}, False),
        ("genre!=Jazz", {"genre": "jazz"}, False),
        ("genre!=rock", {"genre": "jazz"}, True),
        ("genre = Hip Hop", {"genre": "hip hop"}, True),
        ("title=Straße", {"title": "STRASSE"}, True),  # case folding, not lower()
        # a list: "contains"
        ("genre=jazz", {"genre": ["rock", "JAZZ"]}, True),
        ("genre=jazz", {"genre": ["rock"]}, False),
        ("genre=jazz", {"genre": []}, False),
        ("genre!=jazz", {"genre": ["rock", "jazz"]}, False),
        ("genre!=jazz", {"genre": ["rock"]}, True),
        ("genre!=jazz", {"genre": []}, True),
        ("ids=3", {"ids": [1, 3]}, True),
        # missing (or null): everything fails but !=
        ("genre=jazz", {}, False),
        ("genre!=jazz", {}, True),
        ("genre!=jazz", {"genre": None}, True),
        ("year>=1990", {}, False),
        ("year<1990", {}, False),
        ("year<=1990", {"year": None}, False),
        ("year>1990", {"other": 2000}, False),
        # numbers, also spelt as text
        ("year>=1990", {"year": 1990}, True),
        ("year>1990", {"year": 1990}, False),
        ("year<=1990", {"year": 1990}, True),
        ("year<1990", {"year": 1990.0}, False),
        ("year<1990", {"year": 1989.5}, True),
        ("year>1990", {"year": "1991"}, True),
        ("year>=1990.5", {"year": "1990.25"}, False),
        ("year<10", {"year": 9}, True),  # as numbers, not as text ("9" > "10")
        ("year<10", {"year": "9"}, True),
        ("price<-1", {"price": -2}, True),
        ("year>=1e3", {"year": 1000}, True),
        # not a number: the comparison fails
        ("year<=1990", {"year": "soon"}, False),
        ("year>0", {"year": float("nan")}, False),
        ("year>0", {"year": "inf"}, False),
        ("year>0", {"year": [5]}, False),
        ("year>0", {"year": True}, False),  # a bool is not a number
        # = on numbers compares their text; an integral float reads as the integer
        ("year=1990", {"year": 1990}, True),
        ("year=1990", {"year": 1990.0}, True),
        ("year=1990", {"year": "1990"}, True),
        ("score=4.5", {"score": 4.5}, True),
        # bools read as true / false
        ("live=true", {"live": True}, True),
        ("live=True", {"live": True}, True),
        ("live=false", {"live": False}, True),
        ("live=true", {"live": False}, False),
        ("live!=true", {"live": False}, True),
        ("live=1", {"live": True}, False),
        # whitespace around the parts
        (" year >= 2000 ", {"year": 2001}, True),
        ("release year<=2000", {"release year": 1999}, True),
    ],
)
def test_predicates(text: str, attributes: dict[str, object], expected: bool) -> None:
    assert Predicate.parse(text)(attributes) is expected


def test_equality_on_an_integral_float_spelt_with_a_decimal_point() -> None:
    assert Predicate.parse("rating=4.0")({"rating": 4.0})


@pytest.mark.parametrize(
    "text",
    [
        "nonsense",
        "",
        "   ",
        "=jazz",
        "!=jazz",
        ">=3",
        "year>=soon",
        "year<",
        "year>=",
        "year>nan",
        "year<=inf",
        "year>1990s",
    ],
)
def test_bad_predicates_name_the_filter(text: str) -> None:
    with pytest.raises(InvalidInputError, match="filter") as err:
        Predicate.parse(text)
    assert repr(text) in str(err.value)


# -- categories and filters --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "attributes", "expected"),
    [
        (None, {"category": "Rock"}, {"rock"}),
        (None, {"categories": ["Rock", "Pop"]}, {"rock", "pop"}),
        (None, {"genre": "a|B"}, {"a", "b"}),
        (None, {"genres": "a, b ,c"}, {"a", "b", "c"}),
        (None, {"style": "Rock|Pop, Jazz"}, {"rock", "pop", "jazz"}),
        (None, {"tags": ["x", " Y ", "", "  "]}, {"x", "y"}),
        (None, {"tags": "a||b,"}, {"a", "b"}),
        (None, {"genre": "Straße"}, {"strasse"}),
        (None, {"genre": 5}, {"5"}),
        (None, {"genre": [1, 2.0, True]}, {"1", "2", "true"}),
        (None, {"genre": None}, set()),
        (None, {"title": "x"}, set()),
        (None, {}, set()),
        ("mood", {"mood": "Happy|Calm", "genre": "rock"}, {"happy", "calm"}),
        ("mood", {"genre": "rock"}, set()),  # an explicit field is not second-guessed
    ],
)
def test_categories(field: str | None, attributes: dict[str, Any], expected: set[str]) -> None:
    assert categories(PipelineSettings(category_field=field), attributes) == expected


def test_categories_come_from_the_first_field_present() -> None:
    assert CATEGORY_FIELDS == ("category", "categories", "genre", "genres", "style", "tags")
    settings = PipelineSettings()
    for i, name in enumerate(CATEGORY_FIELDS):
        attributes = {n: f"{n.upper()}|shared" for n in reversed(CATEGORY_FIELDS[i:])}
        assert categories(settings, attributes) == {name, "shared"}


def test_filters_build_from_comma_lists() -> None:
    filters = Filters.build(["Rock, pop", "JAZZ"], ["metal,", " ", " Punk "], ["year>=2000"])
    assert filters.include_categories == {"rock", "pop", "jazz"}
    assert filters.exclude_categories == {"metal", "punk"}
    assert filters.predicates == (Predicate("year", ">=", "2000"),)
    with pytest.raises(InvalidInputError, match="year>=x"):
        Filters.build(predicates=["year>=x"])


def test_filters_are_false_when_empty() -> None:
    assert not Filters()
    assert not Filters.build()
    assert not Filters.build([" , ", ""], [","])
    assert Filters.build(include=["a"])
    assert Filters.build(exclude=["a"])
    assert Filters.build(predicates=["a=b"])


@pytest.mark.parametrize(
    ("cats", "attributes", "expected"),
    [
        ({"pop"}, {"year": 2001}, True),
        ({"rock", "jazz"}, {"year": 2000}, True),
        ({"pop", "metal"}, {"year": 2001}, False),  # exclude wins over include
        ({"jazz"}, {"year": 2001}, False),  # not included
        (set(), {"year": 2001}, False),  # no categories: not included either
        ({"rock"}, {"year": 1999}, False),  # predicate fails
        ({"rock"}, {}, False),  # attribute missing
        ({"rock"}, {"year": 2001, "live": False}, False),
    ],
)
def test_filters_keep(cats: set[str], attributes: dict[str, Any], expected: bool) -> None:
    filters = Filters.build(["rock, pop"], ["metal"], ["year>=2000", "live!=false"])
    assert filters.keep(frozenset(cats), attributes) is expected


def test_exclude_only_filters_keep_uncategorised_items() -> None:
    filters = Filters.build(exclude=["metal"])
    assert filters.keep(frozenset(), {})
    assert filters.keep(frozenset({"jazz"}), {})
    assert not filters.keep(frozenset({"metal", "jazz"}), {})
    assert Filters().keep(frozenset(), {})


# -- candidates --------------------------------------------------------------------------------
def test_pool_merges_spellings_and_keeps_the_best_score() -> None:
    pool = Pool()
    pool.add("model", [(7, 0.5), ("8", 0.1)])
    pool.add("item_to_item", [("7", 0.3)], because="a")
    pool.add("item_to_item", [("7", 0.9)], because="b")
    pool.add("item_to_item", [("7", 0.2)], because="c")  # lower: ignored
    pool.add("item_to_item", [("7", 0.9)], because="d")  # equal: the first stays
    pool.add("model", [(7, 0.4)])
    pool.add("popular", [(9, 3)])
    assert len(pool) == 3
    assert [c.item for c in pool] == ["7", "8", "9"]
    seven = pool.by_item["7"]
    assert seven.scores == {"model": 0.5, "item_to_item": 0.9}
    assert seven.because == "b"
    nine = pool.by_item["9"]
    assert nine.scores == {"popular": 3.0} and type(nine.scores["popular"]) is float


def test_because_is_only_for_item_to_item() -> None:
    pool = Pool()
    pool.add("model", [("x", 1.0)], because="h1")
    pool.add("popular", [("x", 1.0)], because="h2")
    assert pool.by_item["x"].because is None
    pool.add("item_to_item", [("x", 0.1)], because="h3")
    pool.add("popular", [("x", 5.0)], because="h4")  # a better popular score: no effect
    assert pool.by_item["x"].because == "h3"


def test_candidate_sources_follow_the_generator_order() -> None:
    cand = Candidate("x", dict.fromkeys(reversed(GENERATORS), 1.0))
    assert cand.sources == ["model", "item_to_item", "demographic", "popular", "new"]
    assert cand.source == "model"
    assert Candidate("y", {"new": 1.0, "popular": 2.0}).source == "popular"
    cand.lead = "new"
    assert cand.source == "new"
    cand.exploration = True
    assert cand.source == "exploration"
    assert cand.sources == [*GENERATORS, "exploration"]


# -- ranking -----------------------------------------------------------------------------------
def test_rank_scales_model_scores_and_weights_the_rest() -> None:
    a = Candidate("a", {"model": -2.0})
    b = Candidate("b", {"model": 2.0})
    c = Candidate("c", {"model": 0.0})
    new = Candidate("n", {"new": 0.5, "popular": 10.0})
    top = Candidate("p", {"popular": 20.0})
    rank([a, b, c, new, top], {"a": -2.0, "b": 2.0, "c": 0.0})
    assert (a.relevance, c.relevance, b.relevance) == (0.0, 0.5, 1.0)
    # not scored by the model: the weighted shares of each generator's best, summed
    assert top.relevance == pytest.approx(FALLBACK_WEIGHT["popular"])
    expected = FALLBACK_WEIGHT["popular"] * 0.5 + FALLBACK_WEIGHT["new"] * 1.0
    assert new.relevance == pytest.approx(expected)
    assert new.lead == "popular"
    assert a.lead is None and a.source == "model"


def test_rank_fallback_by_hand() -> None:
    """Each generator's scores are scaled over the unscored candidates it proposed: popular
    [20, 10] -> [1, .5], demographic [4, 8] -> [.5, 1], item_to_item [.8] -> [1], new [.5]
    -> [1]; a candidate's relevance is the sum of weight * share, its lead the largest part."""
    p = Candidate("p", {"popular": 20})
    n = Candidate("n", {"new": 0.5, "popular": 10})
    i = Candidate("i", {"item_to_item": 0.8, "demographic": 4})
    d = Candidate("d", {"demographic": 8})
    m = Candidate("m", {"model": 3.0, "popular": 1000})  # model-scored: generators ignored
    rank([p, n, i, d, m], {"m": 3.0})
    w = FALLBACK_WEIGHT
    assert p.relevance == pytest.approx(w["popular"])
    assert n.relevance == pytest.approx(w["popular"] * 0.5 + w["new"])
    assert i.relevance == pytest.approx(w["item_to_item"] + w["demographic"] * 0.5)
    assert d.relevance == pytest.approx(w["demographic"])
    assert m.relevance == 1.0
    assert (p.lead, n.lead, i.lead, d.lead, m.lead) == (
        "popular",
        "popular",
        "item_to_item",
        "demographic",
        None,
    )


def test_rank_min_max_scales_signed_generator_scores() -> None:
    cands = [Candidate(x, {"item_to_item": s}) for x, s in (("a", -0.5), ("b", 0.5), ("c", 0.0))]
    rank(cands, {})
    w = FALLBACK_WEIGHT["item_to_item"]
    assert [c.relevance for c in cands] == pytest.approx([0.0, w, w / 2])


@pytest.mark.parametrize("value", [3.0, -2.0, 0.0])
def test_rank_all_equal_scores_are_one(value: float) -> None:
    same = [Candidate("x", {"model": value}), Candidate("y", {"model": value})]
    rank(same, {"x": value, "y": value})
    assert [c.relevance for c in same] == [1.0, 1.0]
    rest = [Candidate("p", {"popular": value}), Candidate("q", {"popular": value})]
    rank(rest, {})
    assert [c.relevance for c in rest] == [FALLBACK_WEIGHT["popular"]] * 2


def test_rank_min_max_scales_non_negative_model_scores() -> None:
    cands = [Candidate(x, {"model": s}) for x, s in (("a", 10.0), ("b", 11.0), ("c", 12.0))]
    rank(cands, {"a": 10.0, "b": 11.0, "c": 12.0})
    assert [c.relevance for c in cands] == pytest.approx([0.0, 0.5, 1.0])


def test_rank_sums_the_fallback_shares_of_an_unscored_candidate() -> None:
    """What every fallback generator ranks first sums their weights (documented: only a cold
    list can have it; there nothing is model-scored)."""
    agreed = Candidate("n", {"item_to_item": 1.0, "demographic": 1.0, "popular": 1.0, "new": 1.0})
    rank([agreed], {})
    assert agreed.relevance == pytest.approx(sum(FALLBACK_WEIGHT[g] for g in agreed.scores))
    best = Candidate("m", {"model": 5.0})
    warm = Candidate("w", {"popular": 1.0, "new": 1.0})
    rank([best, warm], {"m": 5.0})
    assert best.relevance == 1.0 and warm.relevance == pytest.approx(0.5)


# -- freshness ---------------------------------------------------------------------------------
def test_freshness_boost_is_exact() -> None:
    now = 1000 * SECONDS_PER_DAY
    settings = PipelineSettings(freshness=0.6, freshness_half_life_days=5)
    ages = {"brand-new": 0.0, "half": 5.0, "older": 12.5, "ancient": 400.0}
    cands = [Candidate(item, relevance=0.3) for item in [*ages, "future", "unknown"]]
    created = {item: now - age * SECONDS_PER_DAY for item, age in ages.items()}
    created["future"] = now + SECONDS_PER_DAY  # a clock ahead: age 0, not a bigger boost
    boost_fresh(cands, created, settings, now)
    scores = {c.item: c.score for c in cands}
    assert scores["brand-new"] == pytest.approx(0.3 + 0.6)
    assert scores["half"] == pytest.approx(0.3 + 0.3)
    assert scores["older"] == pytest.approx(0.3 + 0.6 * 0.5**2.5)
    assert scores["ancient"] == pytest.approx(0.3 + 0.6 * 0.5**80)
    assert scores["future"] == pytest.approx(0.3 + 0.6)
    assert scores["unknown"] == 0.3
    boost_fresh(cands, created, settings, now)  # starts from the relevance again
    assert cands[0].score == pytest.approx(0.9)


def test_no_freshness_leaves_the_relevance() -> None:
    cands = [Candidate("a", relevance=0.25), Candidate("b", relevance=0.75)]
    boost_fresh(cands, {"a": 5.0, "b": 5.0}, PipelineSettings(), 5.0)
    assert [c.score for c in cands] == [0.25, 0.75]


# -- selection ---------------------------------------------------------------------------------
def _scored(scores: dict[str, float]) -> list[Candidate]:
    return [Candidate(item, score=value) for item, value in scores.items()]


def _items(cands: list[Candidate]) -> list[str]:
    return [c.item for c in cands]


def test_select_top_k_with_ties_by_id() -> None:
    cands = _scored({"c": 0.5, "a": 0.5, "b": 0.9, "d": 0.1})
    assert _items(select(cands, 3, PipelineSettings(), {}, None)) == ["b", "a", "c"]
    assert _items(select(cands, 10, PipelineSettings(), {}, None)) == ["b", "a", "c", "d"]
    assert _items(select(cands, 1, PipelineSettings(diversity=0.5), {}, None)) == ["b"]
    assert select([], 3, PipelineSettings(), {}, None) == []


def test_select_caps_categories_and_relaxes_rather_than_leave_a_gap() -> None:
    cands = _scored({"j1": 0.9, "j2": 0.8, "j3": 0.7, "r1": 0.6, "b": 0.6})
    cats = {"j1": frozenset({"jazz"}), "j2": frozenset({"jazz"}), "j3": frozenset({"jazz"})}
    plain = select(cands, 3, PipelineSettings(), cats, None)
    assert _items(plain) == ["j1", "j2", "j3"]
    capped = select(cands, 3, PipelineSettings(max_per_category=1), cats, None)
    assert _items(capped) == ["j1", "b", "r1"]  # ties by id
    two = select(cands, 4, PipelineSettings(max_per_category=2), cats, None)
    assert _items(two) == ["j1", "j2", "b", "r1"]
    short = select(cands[:3], 3, PipelineSettings(max_per_category=1), cats, None)
    assert _items(short) == ["j1", "j2", "j3"]  # only jazz left: relaxed


def test_an_item_counts_for_each_of_its_categories() -> None:
    cands = _scored({"j": 0.9, "jr": 0.8, "r": 0.7, "x": 0.6})
    cats = {"j": frozenset({"jazz"}), "jr": frozenset({"jazz", "rock"}), "r": frozenset({"rock"})}
    settings = PipelineSettings(max_per_category=1)
    assert _items(select(cands, 3, settings, cats, None)) == ["j", "r", "x"]
    assert _items(select(cands, 4, settings, cats, None)) == ["j", "r", "x", "jr"]


def _duplicates(items: list[str]) -> np.ndarray:
    """Items starting with "d" are near-duplicates (similarity 1); the rest unlike them."""
    dup = [i.startswith("d") for i in items]
    return np.array([[1.0 if a and b else 0.0 for b in dup] for a in dup])


def test_mmr_picks_the_different_item_second() -> None:
    """Three near-duplicates lead; 'other' is a little less relevant and unlike them. With
    diversity .5 the second pick compares .5 * .99 - .5 * 1 (d2) with .5 * .9 - 0 (other)."""
    cands = _scored({"d1": 1.0, "d2": 0.99, "d3": 0.98, "other": 0.9})
    by_score = ["d1", "d2", "d3", "other"]
    assert _items(select(cands, 4, PipelineSettings(), {}, _duplicates)) == by_score
    diverse = select(cands, 4, PipelineSettings(diversity=0.5), {}, _duplicates)
    assert _items(diverse) == ["d1", "other", "d2", "d3"]
    assert _items(select(cands, 2, PipelineSettings(diversity=1.0), {}, _duplicates)) == [
        "d1",
        "other",
    ]
    # no model similarity: the categories' overlap stands in
    cats = {n: frozenset({"x"}) for n in ("d1", "d2", "d3")} | {"other": frozenset({"y"})}
    by_category = select(cands, 4, PipelineSettings(diversity=0.5), cats, None)
    assert _items(by_category) == ["d1", "other", "d2", "d3"]
    assert _items(select(cands, 4, PipelineSettings(), cats, None)) == by_score


def test_mmr_scales_model_similarities_to_the_largest() -> None:
    """Duplicates 2.0, duplicate-to-other 1.0 scale to 1 and .5; negatives are no similarity."""
    cands = _scored({"d1": 1.0, "d2": 0.99, "other": 0.9})

    def scaled(items: list[str]) -> np.ndarray:
        return _duplicates(items) + 1.0

    # after d1: d2 .5*.99 - .5*1 < other .5*.9 - .5*.5
    assert _items(select(cands, 2, PipelineSettings(diversity=0.5), {}, scaled)) == ["d1", "other"]

    def negative(items: list[str]) -> np.ndarray:
        return -_duplicates(items)

    assert _items(select(cands, 2, PipelineSettings(diversity=0.5), {}, negative)) == ["d1", "d2"]
    # a kNN model's -inf (not a neighbour) is no similarity, not an overflow
    inf = select(cands, 2, PipelineSettings(diversity=0.5), {}, lambda i: np.full((3, 3), -np.inf))
    assert _items(inf) == ["d1", "d2"]


def test_mmr_category_jaccard_by_hand() -> None:
    """a {x, y} and b {y, z} overlap 1/3; c shares nothing. After a, b is worth
    (1 - l) * .9 - l / 3 and c (1 - l) * .8: c wins once l > .1 / (.1 + 1/3) = .2308."""
    cands = _scored({"a": 1.0, "b": 0.9, "c": 0.8})
    cats = {"a": frozenset({"x", "y"}), "b": frozenset({"y", "z"}), "c": frozenset({"w"})}
    assert _items(select(cands, 3, PipelineSettings(diversity=0.2), cats, None)) == ["a", "b", "c"]
    assert _items(select(cands, 3, PipelineSettings(diversity=0.25), cats, None)) == [
        "a",
        "c",
        "b",
    ]
    # a model similarity of zero everywhere leaves the categories' overlap in charge
    zeros = select(cands, 3, PipelineSettings(diversity=0.25), cats, lambda i: np.zeros((3, 3)))
    assert _items(zeros) == ["a", "c", "b"]


def test_mmr_respects_the_category_cap_and_fills() -> None:
    """diversity .1 over category overlap: after d1, other (.9 * .9 = .81) beats d2
    (.9 * .99 - .1 = .791); the cap of 2 then holds d3 back until the fill."""
    cands = _scored({"d1": 1.0, "d2": 0.99, "d3": 0.98, "other": 0.9})
    cats = {n: frozenset({"x"}) for n in ("d1", "d2", "d3")} | {"other": frozenset({"y"})}
    settings = PipelineSettings(diversity=0.1, max_per_category=2)
    assert _items(select(cands, 3, settings, cats, None)) == ["d1", "other", "d2"]
    assert _items(select(cands, 4, settings, cats, None)) == ["d1", "other", "d2", "d3"]


# -- A/B assignment ----------------------------------------------------------------------------
def test_bucket_is_a_stable_hash() -> None:
    digest = hashlib.sha256(b"exp-a\x00user-1").digest()
    assert bucket("exp-a", "user-1") == int.from_bytes(digest[:8], "big") / 2.0**64
    assert bucket("exp-a", "user-1") == bucket("exp-a", "user-1")
    assert bucket("exp-a", "user-1") != bucket("exp-a", "user-2")
    assert bucket("exp-a", "user-1") != bucket("exp-b", "user-1")


def test_buckets_are_uniform_and_independent() -> None:
    users = [f"user-{n}" for n in range(20_000)]
    one = np.array([bucket("exp-a", u) for u in users])
    two = np.array([bucket("exp-b", u) for u in users])
    assert ((one >= 0) & (one < 1)).all()
    deciles = np.bincount((one * 10).astype(int), minlength=10) / len(users)
    assert (np.abs(deciles - 0.1) < 0.01).all()
    assert abs(np.corrcoef(one, two)[0, 1]) < 0.03
    # independent: being in the first half of one says nothing about the other
    both = ((one < 0.5) & (two < 0.5)).mean()
    assert both == pytest.approx(0.25, abs=0.015)


def test_assignment_follows_the_shares() -> None:
    experiment = {
        "name": "split",
        "variants": [
            {"name": "small", "share": 0.2},
            {"name": "mid", "share": 0.3},
            {"name": "big", "share": 0.5},
        ],
    }
    users = [f"u{n}" for n in range(20_000)]
    names = [assign(experiment, u)["name"] for u in users]
    for name, share in (("small", 0.2), ("mid", 0.3), ("big", 0.5)):
        assert abs(names.count(name) / len(names) - share) < 0.015
    # exactly the bucket's interval
    for user, name in zip(users[:2000], names, strict=False):
        position = bucket("split", user)
        assert name == ("small" if position < 0.2 else "mid" if position < 0.5 else "big")
    assert [assign(experiment, u)["name"] for u in users[:500]] == names[:500]  # stable


def test_two_way_split() -> None:
    experiment = {
        "name": "split",
        "variants": [{"name": "small", "share": 0.2}, {"name": "big", "share": 0.8}],
    }
    names = [assign(experiment, f"u{n}")["name"] for n in range(20_000)]
    assert abs(names.count("small") / len(names) - 0.2) < 0.015


def test_assign_returns_a_copy_and_falls_back_to_the_last_variant() -> None:
    experiment: dict[str, Any] = {
        "name": "e",
        "variants": [{"name": "a", "share": 0.0}, {"name": "b", "share": 0.0}],
    }
    variant = assign(experiment, "u1")
    assert variant == {"name": "b", "share": 0.0}  # shares short of 1: the last one
    variant["name"] = "changed"
    assert experiment["variants"][1]["name"] == "b"


_OK = {"name": "ab-1", "variants": [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.5}]}


def test_experiment_specs_that_are_fine() -> None:
    assert len(ExperimentIn.model_validate(_OK).variants) == 2
    three = {
        "name": "A_b.c-1",
        "variants": [
            {"name": "a", "share": 0.2},
            {"name": "b", "share": 0.3, "model_version": 3},
            {"name": "c", "share": 0.5, "pipeline": {"diversity": 0.3}},
        ],
    }
    parsed = ExperimentIn.model_validate(three)
    assert parsed.variants[1].model_version == 3
    assert parsed.variants[2].pipeline == {"diversity": 0.3}
    ten = {"name": "ten", "variants": [{"name": f"v{i}", "share": 0.1} for i in range(10)]}
    assert len(ExperimentIn.model_validate(ten).variants) == 10  # 0.1 * 10 is 0.9999...


@pytest.mark.parametrize(
    "change",
    [
        {"variants": [{"name": "a", "share": 1.0}]},
        {"variants": []},
        {"variants": [{"name": f"v{i}", "share": 1 / 21} for i in range(21)]},
        {"variants": [{"name": "a", "share": 0.0}, {"name": "b", "share": 1.0}]},
        {"variants": [{"name": "a", "share": "0.5"}, {"name": "b", "share": 0.5}]},
        {"variants": [{"name": "a", "share": math.nan}, {"name": "b", "share": 0.5}]},
        {"variants": [{"name": "", "share": 0.5}, {"name": "b", "share": 0.5}]},
        {
            "variants": [
                {"name": "a", "share": 0.5, "model_version": 0},
                {"name": "b", "share": 0.5},
            ]
        },
        {"variants": [{"name": "a", "share": 0.5, "colour": "red"}, {"name": "b", "share": 0.5}]},
        {"name": "spaces are not allowed"},
        {"name": "slash/no"},
        {"name": ""},
        {"name": "x" * 129},
        {"owner": "me"},
    ],
)
def test_experiment_specs_are_checked(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ExperimentIn.model_validate({**_OK, **change})


def test_experiment_shares_are_relative_and_names_twice_are_named() -> None:
    spec = ExperimentIn.model_validate(
        {"name": "e", "variants": [{"name": "a", "share": 0.2}, {"name": "b", "share": 0.6}]}
    )
    assert [v.share for v in spec.variants] == pytest.approx([0.25, 0.75])
    twice = [{"name": "a", "share": 0.5}, {"name": "a", "share": 0.5}, {"name": "b", "share": 1}]
    assert ExperimentIn.model_validate({"name": "e", "variants": twice}).duplicate_names() == ["a"]


# -- significance ------------------------------------------------------------------------------
def _two_proportion_z(s1: int, n1: int, s2: int, n2: int) -> float:
    """The textbook pooled two-proportion z statistic (group 2 minus group 1)."""
    pooled = (s1 + s2) / (n1 + n2)
    return (s2 / n2 - s1 / n1) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))


def test_significance_matches_the_textbook() -> None:
    test = significance([(120, 1000), (150, 1000)])
    z = _two_proportion_z(120, 1000, 150, 1000)
    assert z == pytest.approx(1.9630, abs=1e-4)  # .03 / sqrt(.135 * .865 * .002)
    assert test["method"] == "two-proportion z-test"
    assert test["statistic"] == pytest.approx(z)
    assert test["p_value"] == pytest.approx(math.erfc(z / math.sqrt(2)))  # two-sided
    assert test["p_value"] == pytest.approx(0.0496, abs=1e-4)
    assert test["alpha"] == 0.05 and test["significant"] is True
    strict = significance([(120, 1000), (150, 1000)], alpha=0.049)
    assert strict["significant"] is False and strict["alpha"] == 0.049
    assert strict["p_value"] == test["p_value"]


def test_significance_two_groups_sign_and_sizes() -> None:
    down = significance([(150, 1000), (120, 1000)])
    up = significance([(120, 1000), (150, 1000)])
    assert down["statistic"] == pytest.approx(-up["statistic"])
    assert down["p_value"] == pytest.approx(up["p_value"])
    uneven = significance([(30, 200), (20, 100)])
    z = _two_proportion_z(30, 200, 20, 100)
    assert uneven["statistic"] == pytest.approx(z)
    assert uneven["p_value"] == pytest.approx(2 * stats.norm.sf(abs(z)))
    assert uneven["significant"] is False
    # z squared is the uncorrected chi-square of the 2 x 2 table
    chi2, p, _, _ = stats.chi2_contingency([[30, 170], [20, 80]], correction=False)
    assert z**2 == pytest.approx(chi2) and uneven["p_value"] == pytest.approx(p)
    same = significance([(50, 100), (50, 100)])
    assert same["statistic"] == 0.0 and same["p_value"] == pytest.approx(1.0)


def test_significance_of_three_groups_is_a_chi_square() -> None:
    groups = [(10, 100), (20, 100), (35, 100)]
    three = significance(groups)
    chi2, p, dof, _ = stats.chi2_contingency([[10, 90], [20, 80], [35, 65]], correction=False)
    assert three["method"] == "chi-square test"
    assert three["statistic"] == pytest.approx(chi2) and three["p_value"] == pytest.approx(p)
    # by hand: sum of (observed - expected)^2 / expected, 2 degrees of freedom
    rate = 65 / 300
    by_hand = sum(
        (s - n * rate) ** 2 / (n * rate) + ((n - s) - n * (1 - rate)) ** 2 / (n * (1 - rate))
        for s, n in groups
    )
    assert dof == 2
    assert three["statistic"] == pytest.approx(by_hand)
    assert three["p_value"] == pytest.approx(stats.chi2.sf(by_hand, 2))
    assert three["significant"] is True
    flat = significance([(10, 100), (11, 100), (12, 100)])
    assert flat["significant"] is False and flat["p_value"] > 0.5


@pytest.mark.parametrize(
    "groups",
    [
        [(0, 0), (5, 10)],  # a group without trials
        [(0, 10), (0, 10)],  # nobody succeeded
        [(10, 10), (5, 5)],  # everybody succeeded
        [(1, 10), (2, 10), (0, 0)],
        [(0, 10), (0, 20), (0, 30)],
    ],
)
def test_significance_without_an_answer(groups: list[tuple[int, int]]) -> None:
    out = significance(groups)
    assert out["statistic"] is None and out["p_value"] is None
    assert out["significant"] is False
    assert out["method"] == ("two-proportion z-test" if len(groups) == 2 else "chi-square test")


# -- storage helpers ---------------------------------------------------------------------------
def _show(
    store: Storage,
    request_id: str,
    user_id: str,
    items: list[str],
    *,
    experiment: str | None = None,
    variant: str | None = None,
    source: str | None = None,
) -> None:
    store.log_exposures(
        [
            {
                "request_id": request_id,
                "user_id": user_id,
                "item_id": item,
                "position": pos,
                "source": source,
                "experiment": experiment,
                "variant": variant,
            }
            for pos, item in enumerate(items)
        ]
    )


def _answer(store: Storage, request_id: str | None, user_id: str, item: str, kind: str) -> int:
    row = {"request_id": request_id, "user_id": user_id, "item_id": item, "type": kind}
    return int(store.log_feedback(row)["id"])


def _explored(store: Storage, item: str, shown: int, clicked: int) -> None:
    """``shown`` explored exposures of ``item``, the first ``clicked`` of them clicked."""
    store.log_exposures(
        [
            {
                "request_id": f"t-{item}-{n}",
                "user_id": f"u{n}",
                "item_id": item,
                "position": 2,
                "source": EXPLORATION_SOURCE,
            }
            for n in range(shown)
        ]
    )
    for n in range(clicked):
        _answer(store, f"t-{item}-{n}", f"u{n}", item, "click")


def test_feedback_on_a_list_is_stored_once(store: Storage) -> None:
    first = _answer(store, "r1", "u1", "i1", "click")
    assert _answer(store, "r1", "u1", "i1", "click") == first
    assert _answer(store, "r1", "u1", "i1", "like") != first
    assert _answer(store, "r2", "u1", "i1", "click") != first
    # without a request it answers no list: each is its own row
    assert _answer(store, None, "u1", "i1", "click") != _answer(store, None, "u1", "i1", "click")


def test_exploration_stats_count_answered_explored_exposures(store: Storage) -> None:
    _show(store, "r1", "u1", ["g"], source=EXPLORATION_SOURCE)
    _show(store, "r1", "u1", ["x"], source="model")
    _show(store, "r2", "u2", ["g"], source=EXPLORATION_SOURCE)
    _show(store, "r3", "u3", ["b"], source=EXPLORATION_SOURCE)
    _answer(store, "r1", "u1", "g", "click")
    _answer(store, "r1", "u1", "x", "click")  # ranked, not explored: not counted
    _answer(store, "r2", "u2", "g", "view")  # not a positive type
    _answer(store, "r2", "u2", "x", "click")  # another item of the request
    _answer(store, "r3", "u3", "b", "click")
    _answer(store, "r3", "u3", "b", "like")  # one exposure answered twice: counted once
    _answer(store, None, "u2", "g", "click")  # no request: answers no exposure
    assert store.exploration_stats(EXPLORATION_SOURCE, ["click"]) == {"g": (2, 1), "b": (1, 1)}
    assert store.exploration_stats(EXPLORATION_SOURCE, ["click", "like"]) == {
        "g": (2, 1),
        "b": (1, 1),
    }
    assert store.exploration_stats(EXPLORATION_SOURCE, ["view"]) == {"g": (2, 1), "b": (1, 0)}
    assert store.exploration_stats("model", ["click"]) == {"x": (1, 1)}
    assert store.exploration_stats("nothing", ["click"]) == {}


# -- exploration -------------------------------------------------------------------------------
def test_exploration_off_picks_nothing(store: Storage) -> None:
    explorer = explorer_of(ExplorationSettings(), store, seed=0)
    assert not explorer.on
    assert explorer.pick(["a", "b"]) is None
    assert explorer_of(ExplorationSettings(method="epsilon", epsilon=1.0), store).pick([]) is None


def test_epsilon_zero_and_one(store: Storage) -> None:
    never = explorer_of(ExplorationSettings(method="epsilon", epsilon=0.0), store, seed=0)
    assert never.on
    assert all(never.pick(["a", "b", "c"]) is None for _ in range(200))
    always = explorer_of(ExplorationSettings(method="epsilon", epsilon=1.0), store, seed=0)
    picks = [always.pick(["a", "b", "c"]) for _ in range(300)]
    assert set(picks) == {"a", "b", "c"}  # uniform over the pool: all of them, none missing
    assert all(picks.count(x) > 60 for x in "abc")


def test_epsilon_explores_that_share_of_lists_reproducibly(store: Storage) -> None:
    settings = ExplorationSettings(method="epsilon", epsilon=0.25)
    pool = [f"i{n}" for n in range(10)]
    one = [explorer_of(settings, store, seed=0).pick(pool) for _ in range(3)]  # fresh each time
    assert len(set(one)) == 1
    first, second = explorer_of(settings, store, seed=0), explorer_of(settings, store, seed=0)
    a = [first.pick(pool) for _ in range(4000)]
    b = [second.pick(pool) for _ in range(4000)]
    assert a == b
    explored = sum(p is not None for p in a) / len(a)
    assert explored == pytest.approx(0.25, abs=0.03)
    other = explorer_of(settings, store, seed=1)
    assert [other.pick(pool) for _ in range(4000)] != a


def test_thompson_prefers_what_was_answered(store: Storage) -> None:
    """good: Beta(46, 6), mean .88; bad: Beta(1, 51), mean .02; unseen: Beta(1, 1), which
    beats bad with probability 51/52 and good with probability 6/52."""
    _explored(store, "good", 50, 45)
    _explored(store, "bad", 50, 0)
    assert store.exploration_stats(EXPLORATION_SOURCE, ["click"]) == {
        "good": (50, 45),
        "bad": (50, 0),
    }
    explorer = explorer_of(ExplorationSettings(method="thompson"), store, seed=0)
    picks = [explorer.pick(["bad", "good"]) for _ in range(200)]
    assert picks.count("good") > 180
    versus_bad = [explorer.pick(["bad", "unseen"]) for _ in range(200)]
    assert versus_bad.count("unseen") > 180
    versus_good = [explorer.pick(["good", "unseen"]) for _ in range(200)]
    assert 5 < versus_good.count("unseen") < 60  # about 23
    again = explorer_of(ExplorationSettings(method="thompson"), store, seed=0)
    assert [again.pick(["bad", "good"]) for _ in range(200)] == picks


def test_thompson_rereads_the_stats_after_refresh_s(store: Storage) -> None:
    slow = explorer_of(ExplorationSettings(method="thompson", refresh_s=3600), store, seed=0)
    fast = explorer_of(ExplorationSettings(method="thompson", refresh_s=1e-9), store, seed=0)
    assert slow.pick(["bad", "good"]) is not None and fast.pick(["bad", "good"]) is not None
    _explored(store, "good", 50, 50)
    _explored(store, "bad", 50, 0)
    fast_picks = [fast.pick(["bad", "good"]) for _ in range(100)]
    slow_picks = [slow.pick(["bad", "good"]) for _ in range(100)]
    assert fast_picks.count("good") > 95
    assert 25 < slow_picks.count("good") < 75  # still Beta(1, 1) against Beta(1, 1)


# -- the exposure log --------------------------------------------------------------------------
def _rows(n: int, experiment: str = "e", variant: str = "A") -> list[dict[str, Any]]:
    return [
        {
            "request_id": f"r{i}",
            "user_id": f"u{i}",
            "item_id": "item",
            "position": 0,
            "experiment": experiment,
            "variant": variant,
        }
        for i in range(n)
    ]


def _exposures(store: Storage, experiment: str = "e") -> int:
    return int(store.exposure_counts(experiment)["exposures"].sum())


def test_exposure_log_writes_on_flush(store: Storage) -> None:
    exposures = ExposureLog(store)
    rows = _rows(3)
    exposures.add(rows)
    rows[0]["item_id"] = "changed"  # add copies the rows
    exposures.add(iter(_rows(2, variant="B")))
    assert _exposures(store) == 0
    assert exposures.flush() == 5
    counts = store.exposure_counts("e").set_index("variant")
    assert counts.loc["A", "exposures"] == 3 and counts.loc["B", "exposures"] == 2
    assert counts.loc["A", "users"] == 3
    assert exposures.flush() == 0
    assert store.exploration_stats("model", ["click"]) == {}
    exposures.close()
    assert _exposures(store) == 5


def test_exposure_log_writes_in_the_background(store: Storage) -> None:
    exposures = ExposureLog(store, flush_every_s=0.05)
    exposures.start()
    exposures.start()  # a second start is a no-op
    try:
        exposures.add(_rows(4))
        deadline = time.monotonic() + 5.0
        while _exposures(store) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _exposures(store) == 4
        assert exposures.flush() == 0  # nothing left behind
    finally:
        exposures.close()


def test_exposure_log_close_writes_the_rest(store: Storage) -> None:
    exposures = ExposureLog(store, flush_every_s=60.0)
    exposures.start()
    exposures.add(_rows(6))
    started = time.monotonic()
    exposures.close()
    assert time.monotonic() - started < 5.0  # does not wait out the interval
    assert _exposures(store) == 6
    idle = ExposureLog(store)  # never started
    idle.add(_rows(2, experiment="f"))
    idle.close()
    assert _exposures(store, "f") == 2


def test_exposure_log_keeps_rows_the_database_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Storage(f"sqlite:///{tmp_path / 'late.db'}")  # no tables yet
    try:
        exposures = ExposureLog(store)
        exposures.add(_rows(3))
        with caplog.at_level(logging.ERROR, logger="tastebud.service"):
            assert exposures.flush() == 0
        assert "could not write 3 exposures" in caplog.text
        exposures.add(_rows(1, experiment="g"))
        store.migrate()
        assert exposures.flush() == 4  # the kept ones come first, then the new one
        assert _exposures(store) == 3 and _exposures(store, "g") == 1
    finally:
        store.close()


# -- the report --------------------------------------------------------------------------------
_AB = [
    {"name": "A", "share": 0.5, "model_version": None, "pipeline": None},
    {"name": "B", "share": 0.5, "model_version": None, "pipeline": None},
]


def _ab_test(store: Storage) -> None:
    """A: users a0..a3, B: users b0..b4, each shown two items in one request. Clicks: a0
    (both items), a1; b0, b1, b2; b0 also likes. Noise: a click without a request, an
    exposure of another experiment."""
    store.create_experiment("exp", _AB)
    for variant, users in (("A", 4), ("B", 5)):
        for n in range(users):
            user = f"{variant.lower()}{n}"
            _show(store, f"r-{user}", user, ["i1", "i2"], experiment="exp", variant=variant)
    _answer(store, "r-a0", "a0", "i1", "click")
    _answer(store, "r-a0", "a0", "i2", "click")
    _answer(store, "r-a1", "a1", "i1", "click")
    for user in ("b0", "b1", "b2"):
        _answer(store, f"r-{user}", user, "i1", "click")
    _answer(store, "r-b0", "b0", "i2", "like")
    _answer(store, None, "a2", "i1", "click")
    _show(store, "r-other", "a3", ["i1"], experiment="other", variant="A")
    _answer(store, "r-other", "a3", "i1", "click")


def test_report_by_hand(store: Storage) -> None:
    _ab_test(store)
    out = report(store, "exp")
    assert (out["experiment"], out["status"], out["outcome"], out["control"]) == (
        "exp",
        "running",
        "click",
        "A",
    )
    a, b = out["variants"]
    assert (a["variant"], a["share"], a["model_version"]) == ("A", 0.5, None)
    assert (a["users"], a["requests"], a["exposures"]) == (4, 4, 8)
    assert (b["users"], b["requests"], b["exposures"]) == (5, 5, 10)
    assert (a["outcome_users"], a["outcome_events"]) == (2, 3)
    assert (b["outcome_users"], b["outcome_events"]) == (3, 3)
    assert a["rate"] == 0.5 and b["rate"] == 0.6
    assert a["per_exposure"] == 3 / 8 and b["per_exposure"] == 3 / 10
    assert a["lift"] == 0.0 and b["lift"] == pytest.approx(0.2)
    assert a["outcomes"] == {"click": 2, "like": 0} and b["outcomes"] == {"click": 3, "like": 1}
    assert out["test"] == significance([(2, 4), (3, 5)])
    assert out["test"]["statistic"] == pytest.approx(_two_proportion_z(2, 4, 3, 5))

    likes = report(store, "exp", outcome="like", alpha=0.1)
    a, b = likes["variants"]
    assert likes["outcome"] == "like"
    assert (a["outcome_users"], b["outcome_users"]) == (0, 1)
    assert (a["rate"], b["rate"]) == (0.0, 0.2)
    assert a["lift"] is None and b["lift"] is None  # no lift over a control rate of 0
    assert likes["test"] == significance([(0, 4), (1, 5)], alpha=0.1)


def test_report_default_outcome_without_clicks(store: Storage) -> None:
    store.create_experiment("quiet", _AB)
    empty = report(store, "quiet")
    assert empty["outcome"] == "click"  # nothing logged yet
    assert [v["users"] for v in empty["variants"]] == [0, 0]
    assert [v["rate"] for v in empty["variants"]] == [None, None]
    assert [v["lift"] for v in empty["variants"]] == [None, None]
    assert empty["test"]["p_value"] is None
    _show(store, "q1", "u1", ["i"], experiment="quiet", variant="B")
    _answer(store, "q1", "u1", "i", "purchase")
    _answer(store, "q1", "u1", "i", "like")
    out = report(store, "quiet")
    assert out["outcome"] == "like"  # the first type logged, in name order
    assert out["variants"][0]["users"] == 0 and out["variants"][1]["rate"] == 1.0
    assert out["test"]["p_value"] is None  # A has nobody


def test_report_refuses_unknown_experiments_and_bad_alpha(store: Storage) -> None:
    with pytest.raises(UnknownIdError, match="nope"):
        report(store, "nope")
    store.create_experiment("exp", _AB)
    for alpha in (0.0, 1.0, -0.5):
        with pytest.raises(InvalidInputError, match="alpha"):
            report(store, "exp", alpha=alpha)


def test_a_null_first_category_field_falls_through_to_the_next() -> None:
    assert categories(PipelineSettings(), {"category": None, "genre": "rock"}) == {"rock"}


def test_a_batch_the_database_refuses_is_dropped_not_retried_forever(store: Storage) -> None:
    exposures = ExposureLog(store)
    exposures.add([{"request_id": "r", "user_id": "u", "item_id": "i", "position": -1}])
    assert exposures.flush() == 0  # refused (a bad position), dropped
    exposures.add([{"request_id": "r", "user_id": "u", "item_id": "i", "position": 0}])
    assert exposures.flush() == 1  # the next good batch is not blocked by it
