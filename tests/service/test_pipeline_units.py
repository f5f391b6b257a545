"""The pipeline's and the experiments' pure parts, on inputs whose right answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats

from tastebud.errors import InvalidInputError
from tastebud.service.experiments import ExperimentIn, assign, bucket, significance
from tastebud.service.pipeline import (
    FALLBACK_WEIGHT,
    Candidate,
    Filters,
    PipelineSettings,
    Pool,
    Predicate,
    boost_fresh,
    categories,
    rank,
    select,
)


# -- settings and filters --------------------------------------------------------------------
def test_pipeline_settings_are_validated_and_merged() -> None:
    base = PipelineSettings()
    assert base.merged({"diversity": None}) is base  # None means "not given"
    assert base.merged({"diversity": 0.4}).diversity == 0.4
    with pytest.raises(ValidationError, match="magic"):
        PipelineSettings(generators={"magic": 5})
    with pytest.raises(ValidationError, match=r"0\.\.10000"):
        PipelineSettings(generators={"model": -1})
    with pytest.raises(ValidationError):
        base.merged({"diversity": 1.5})


@pytest.mark.parametrize(
    ("text", "attributes", "expected"),
    [
        ("genre=Jazz", {"genre": "jazz"}, True),
        ("genre=jazz", {"genre": ["rock", "JAZZ"]}, True),  # a list: contains
        ("genre!=jazz", {"genre": ["rock", "jazz"]}, False),
        ("genre!=jazz", {}, True),  # missing: only != passes
        ("genre=jazz", {}, False),
        ("year>=1990", {"year": 1990}, True),
        ("year>1990", {"year": "1991"}, True),  # numeric text compares as a number
        ("year<1990", {"year": 1990.0}, False),
        ("year<=1990", {"year": "soon"}, False),
        ("live=true", {"live": True}, True),
        ("year=1990", {"year": 1990.0}, True),
        (" year >= 2000 ", {"year": 2001}, True),
    ],
)
def test_predicates(text: str, attributes: dict[str, object], expected: bool) -> None:
    assert Predicate.parse(text)(attributes) is expected


@pytest.mark.parametrize("text", ["nonsense", "=jazz", "year>=soon", "year<"])
def test_bad_predicates_name_the_filter(text: str) -> None:
    with pytest.raises(InvalidInputError, match="filter"):
        Predicate.parse(text)


def test_categories_and_filters() -> None:
    auto = PipelineSettings()
    assert categories(auto, {"style": "Jazz"}) == {"jazz"}
    assert categories(auto, {"genre": "a|B", "style": "x"}) == {"a", "b"}  # genre first
    assert categories(auto, {"tags": ["x", " Y "]}) == {"x", "y"}
    assert categories(PipelineSettings(category_field="mood"), {"genre": "a"}) == set()
    filters = Filters.build(["rock, pop"], ["metal"], ["year>=2000"])
    assert filters
    assert not Filters()
    assert filters.keep(frozenset({"pop"}), {"year": 2001})
    assert not filters.keep(frozenset({"pop", "metal"}), {"year": 2001})
    assert not filters.keep(frozenset({"jazz"}), {"year": 2001})
    assert not filters.keep(frozenset({"rock"}), {"year": 1999})


# -- candidates, ranking, re-ranking ---------------------------------------------------------
def test_pool_merges_spellings_and_keeps_the_best_score() -> None:
    pool = Pool()
    pool.add("model", [(7, 0.5), ("8", 0.1)])
    pool.add("item_to_item", [("7", 0.3)], because="a")
    pool.add("item_to_item", [("7", 0.9)], because="b")
    pool.add("item_to_item", [("7", 0.2)], because="c")
    assert len(pool) == 2
    seven = pool.by_item["7"]
    assert seven.scores == {"model": 0.5, "item_to_item": 0.9}
    assert seven.because == "b"
    assert seven.sources == ["model", "item_to_item"] and seven.source == "model"
    seven.exploration = True
    assert seven.source == "exploration" and seven.sources[-1] == "exploration"


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
    same = [Candidate("x", {"model": 3.0}), Candidate("y", {"model": 3.0})]
    rank(same, {"x": 3.0, "y": 3.0})
    assert [c.relevance for c in same] == [1.0, 1.0]


def test_freshness_boost_is_exact() -> None:
    day = 86_400.0
    old, fresh = Candidate("old", relevance=0.9), Candidate("fresh", relevance=0.2)
    settings = PipelineSettings(freshness=1.0, freshness_half_life_days=7)
    boost_fresh([old, fresh], {"old": 0.0, "fresh": 100 * day - 7 * day}, settings, 100 * day)
    assert old.score == pytest.approx(0.9 + 0.5 ** (100 / 7))
    assert fresh.score == pytest.approx(0.2 + 0.5)
    boost_fresh([old], {"old": 0.0}, PipelineSettings(), 100 * day)
    assert old.score == 0.9


def _scored(scores: dict[str, float]) -> list[Candidate]:
    return [Candidate(item, score=value) for item, value in scores.items()]


def test_select_caps_categories_and_relaxes_rather_than_leave_a_gap() -> None:
    cands = _scored({"j1": 0.9, "j2": 0.8, "j3": 0.7, "r1": 0.6, "b": 0.6})
    cats = {"j1": frozenset({"jazz"}), "j2": frozenset({"jazz"}), "j3": frozenset({"jazz"})}
    plain = select(cands, 3, PipelineSettings(), cats, None)
    assert [c.item for c in plain] == ["j1", "j2", "j3"]
    capped = select(cands, 3, PipelineSettings(max_per_category=1), cats, None)
    assert [c.item for c in capped] == ["j1", "b", "r1"]  # ties by id
    short = select(cands[:3], 3, PipelineSettings(max_per_category=1), cats, None)
    assert [c.item for c in short] == ["j1", "j2", "j3"]  # only jazz left: relaxed


def test_mmr_picks_the_different_item_second() -> None:
    """Three near-duplicates lead; 'other' is a little less relevant and unlike them."""
    cands = _scored({"d1": 1.0, "d2": 0.99, "d3": 0.98, "other": 0.9})
    names = [c.item for c in cands]

    def similarity(items: list[str]) -> np.ndarray:
        dup = [i.startswith("d") for i in items]
        return np.array([[1.0 if a and b else 0.0 for b in dup] for a in dup])

    assert names == [c.item for c in select(cands, 4, PipelineSettings(), {}, similarity)]
    diverse = select(cands, 2, PipelineSettings(diversity=0.5), {}, similarity)
    assert [c.item for c in diverse] == ["d1", "other"]
    # no model similarity: the categories' overlap stands in
    cats = {n: frozenset({"x"}) for n in ("d1", "d2", "d3")} | {"other": frozenset({"y"})}
    by_category = select(cands, 2, PipelineSettings(diversity=0.5), cats, None)
    assert [c.item for c in by_category] == ["d1", "other"]
    # a kNN model's -inf (not a neighbour) is no similarity, not an overflow
    inf = select(cands, 2, PipelineSettings(diversity=0.5), {}, lambda i: np.full((4, 4), -np.inf))
    assert [c.item for c in inf] == ["d1", "d2"]


# -- experiments -----------------------------------------------------------------------------
def test_buckets_are_stable_uniform_and_independent() -> None:
    users = [f"user-{n}" for n in range(20_000)]
    one = np.array([bucket("exp-a", u) for u in users])
    two = np.array([bucket("exp-b", u) for u in users])
    assert bucket("exp-a", "user-1") == one[1]
    assert ((one >= 0) & (one < 1)).all()
    deciles = np.bincount((one * 10).astype(int), minlength=10) / len(users)
    assert (np.abs(deciles - 0.1) < 0.01).all()
    assert abs(np.corrcoef(one, two)[0, 1]) < 0.03


def test_assignment_follows_the_shares() -> None:
    experiment = {
        "name": "split",
        "variants": [{"name": "small", "share": 0.2}, {"name": "big", "share": 0.8}],
    }
    names = [assign(experiment, f"u{n}")["name"] for n in range(20_000)]
    assert abs(names.count("small") / len(names) - 0.2) < 0.015
    assert assign(experiment, "u7") == assign(experiment, "u7")


def test_experiment_specs_are_checked() -> None:
    ok = {"name": "ab-1", "variants": [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.5}]}
    assert len(ExperimentIn.model_validate(ok).variants) == 2
    bad = [
        {**ok, "variants": [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.4}]},
        {**ok, "variants": [{"name": "a", "share": 0.5}, {"name": "a", "share": 0.5}]},
        {**ok, "variants": [{"name": "a", "share": 1.0}]},
        {**ok, "name": "spaces are not allowed"},
    ]
    for spec in bad:
        with pytest.raises(ValidationError):
            ExperimentIn.model_validate(spec)


def test_significance_matches_the_textbook() -> None:
    test = significance([(120, 1000), (150, 1000)])
    pooled = 270 / 2000
    z = (0.15 - 0.12) / math.sqrt(pooled * (1 - pooled) * (2 / 1000))
    assert test["method"] == "two-proportion z-test"
    assert test["statistic"] == pytest.approx(z)
    assert test["p_value"] == pytest.approx(2 * (1 - stats.norm.cdf(z)))
    assert test["significant"] is (test["p_value"] < 0.05)
    assert significance([(120, 1000), (150, 1000)], alpha=0.01)["significant"] is False

    three = significance([(10, 100), (20, 100), (35, 100)])
    chi2, p, _, _ = stats.chi2_contingency([[10, 90], [20, 80], [35, 65]], correction=False)
    assert three["method"] == "chi-square test"
    assert three["statistic"] == pytest.approx(chi2) and three["p_value"] == pytest.approx(p)
    for groups in ([(0, 0), (5, 10)], [(0, 10), (0, 10)], [(10, 10), (5, 5)]):
        assert significance(groups)["p_value"] is None
