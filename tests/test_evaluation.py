from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tastebud import Dataset
from tastebud.data.sample import load_sample
from tastebud.data.synthetic import synthetic
from tastebud.errors import InvalidInputError
from tastebud.evaluation import (
    compare,
    cross_validate,
    evaluate,
    leaderboard,
    paired_test,
    prepare_test,
    summarize,
)
from tastebud.models import create
from tastebud.report import write_report
from tastebud.split import Split, kfold, random_split


@pytest.fixture(scope="module")
def split() -> Split:
    return random_split(synthetic(400, 150, 8_000, n_clusters=4, seed=2), 0.2, seed=0)


def test_tiny_split_known_values():
    """Two users, hand-computed metrics for popularity."""
    train = Dataset.from_frame(
        pd.DataFrame({"user": [1, 2, 3, 3, 4], "item": ["a", "a", "a", "b", "c"]})
    )
    # popularity: a(3) > b(1) = c(1) (tie -> b); user 1 saw a -> list [b, c, d?]: d unknown
    test = pd.DataFrame({"user": [1, 1, 4], "item": ["c", "d", "b"]})
    result = evaluate(["popularity"], Split(train, test), k=2, beyond_accuracy=False)
    values = dict(zip(result.metric, result.value, strict=True))
    # user 1: list [b, c]; relevant {c, d(unknown to train)}: hit at 2
    #   P=1/2, R=1/2, NDCG=(1/log2 3)/(1 + 1/log2 3), AP=(1/2)/2, RR=1/2, HR=1
    # user 4 (saw c): list [a, b]; relevant {b}: hit at 2
    #   P=1/2, R=1, NDCG=(1/log2 3)/1, AP=(1/2)/1, RR=1/2, HR=1
    g = 1 / math.log2(3)
    assert values["Precision@2"] == pytest.approx(0.5)
    assert values["Recall@2"] == pytest.approx(0.75)
    assert values["NDCG@2"] == pytest.approx((g / (1 + g) + g) / 2)
    assert values["MAP@2"] == pytest.approx((0.25 + 0.5) / 2)
    assert values["MRR@2"] == pytest.approx(0.5)
    assert values["HitRate@2"] == pytest.approx(1.0)
    protocol = result.attrs["protocol"]
    assert protocol["users_evaluated"] == 2 and protocol["relevance"] == "every test interaction"


def test_relevance_threshold_and_unseen_items():
    train = Dataset.from_frame(
        pd.DataFrame({"user": [1, 2], "item": [10, 20], "rating": [5, 4]}), rating="rating"
    )
    test = pd.DataFrame({"user": [1, 1, 2], "item": [20, 30, 10], "rating": [5.0, 4.0, 2.0]})
    prepared = prepare_test(Split(train, test), relevance_threshold=4)
    assert prepared.user_ids.tolist() == [1]  # user 2's only test rating (2) is not relevant
    assert prepared.relevant.shape == (1, 3)  # item 30 gets a column past the catalog
    assert prepared.n_candidates.tolist() == [2]  # 2 items - 1 seen + 1 unseen relevant
    with pytest.raises(InvalidInputError, match="no relevant"):
        prepare_test(Split(train, test), relevance_threshold=6)


def test_evaluate_is_tidy_and_orders_models_sensibly(split):
    per_user: dict[str, pd.DataFrame] = {}
    result = evaluate(
        {"pop": "popularity", "rnd": create("random"), "base": "baseline"},
        split,
        k=10,
        metrics=["precision", "recall", "ndcg", "map", "mrr", "hit_rate", "auc", "f1"],
        fairness_by="gender",
        per_user=per_user,
    )
    assert list(result.columns) == ["model", "metric", "value"]
    board = leaderboard(result)
    assert (
        list(board.index) == ["pop", "base", "rnd"]
        or board.loc["pop", "NDCG@10"] > board.loc["rnd", "NDCG@10"]
    )
    assert board.loc["pop", "NDCG@10"] > 2 * board.loc["rnd", "NDCG@10"]
    assert 0.4 < board.loc["rnd", "AUC@10"] < 0.6  # random ranking: AUC ~ 1/2
    assert math.isnan(board.loc["pop", "RMSE"]) and board.loc["base", "RMSE"] < 1.2
    for column in ("Coverage@10", "Novelty@10", "ARP@10", "Gini@10", "Serendipity@10", "ILD@10"):
        assert column in board.columns
    assert board.loc["pop", "Coverage@10"] < board.loc["rnd", "Coverage@10"]
    assert board.loc["pop", "Gini@10"] > board.loc["rnd", "Gini@10"]
    assert board.loc["pop", "Serendipity@10"] == 0.0  # popularity is the baseline itself
    assert any(c.startswith("NDCG@10 gap by gender") for c in board.columns)
    assert set(per_user) == {"pop", "rnd", "base"}
    assert per_user["pop"].shape[0] == result.attrs["protocol"]["users_evaluated"]


def test_paired_test_matches_hand_computation():
    a = pd.Series([1.0, 2.0, 3.0, 4.0], index=list("wxyz"))
    b = pd.Series([0.0, 2.0, 2.0, 2.0, 9.0], index=list("wxyzq"))  # q is not in a: ignored
    res = paired_test(a, b)
    # d = [1, 0, 1, 2]: mean 1, sd sqrt(2/3), t = 1 / (sd / 2) = 2.449..., df = 3
    t = 1 / (math.sqrt(2 / 3) / 2)
    assert res.n == 4 and res.difference == pytest.approx(1.0)
    assert res.statistic == pytest.approx(t)
    assert res.p_value == pytest.approx(2 * stats.t.sf(t, 3))
    half = stats.t.ppf(0.975, 3) * math.sqrt(2 / 3) / 2
    assert (res.ci_low, res.ci_high) == pytest.approx((1 - half, 1 + half))
    w = paired_test(a, b, method="wilcoxon")
    assert w.p_value == pytest.approx(stats.wilcoxon([1.0, 0.0, 1.0, 2.0]).pvalue)
    with pytest.raises(InvalidInputError):
        paired_test(a, b, method="z")


def test_compare_finds_a_real_difference(split):
    res = compare("popularity", "random", split, metric="ndcg", k=10)
    assert res.difference > 0 and res.significant(0.01)


def test_cross_validate_and_summarize():
    ds = load_sample()
    results = cross_validate(["popularity", "random"], ds, folds=3, k=5, beyond_accuracy=False)
    assert sorted(results.fold.unique()) == [1, 2, 3]
    summary = summarize(results)
    ndcg = summary[(summary.metric == "NDCG@5")].set_index("model")
    assert ndcg.loc["popularity", "count"] == 3
    assert ndcg.loc["popularity", "mean"] > ndcg.loc["random", "mean"]
    given = cross_validate(["popularity"], kfold(ds, 2), beyond_accuracy=False)
    assert given.fold.max() == 2


def test_report_writes_markdown_png_and_json(split, tmp_path):
    result = evaluate(["popularity", "random"], split, k=5)
    paths = write_report(result, tmp_path / "report", title="Test report", dataset={"users": 400})
    text = paths["markdown"].read_text()
    assert "# Test report" in text and "| popularity |" in text and "NDCG@5" in text
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    payload = json.loads(paths["json"].read_text())
    assert payload["protocol"]["k"] == 5
    assert {r["model"] for r in payload["results"]} == {"popularity", "random"}


def test_evaluate_rejects_bad_arguments(split):
    with pytest.raises(InvalidInputError, match="unknown metric"):
        evaluate(["popularity"], split, metrics=["accuracy"])
    with pytest.raises(InvalidInputError, match="k must be"):
        evaluate(["popularity"], split, k=0)
    with pytest.raises(InvalidInputError, match="unknown model"):
        evaluate(["populariti"], split)
    with pytest.raises(InvalidInputError, match="Split"):
        evaluate(["popularity"], split.train)  # type: ignore[arg-type]
    assert np.isfinite(evaluate(["popularity"], split, beyond_accuracy=False).value).all()


def test_auc_counts_test_items_already_in_training_as_unrankable():
    # user 1 trained on a and b; test holds b again (rankable: no) and c
    train = Dataset.from_frame(pd.DataFrame({"user": [1, 1, 2], "item": ["a", "b", "c"]}))
    test = pd.DataFrame({"user": [1, 1], "item": ["b", "c"]})
    prepared = prepare_test(Split(train, test))
    assert prepared.n_candidates.tolist() == [2]  # 3 items - 2 seen + 1 relevant-but-seen
    result = evaluate(
        ["popularity"], Split(train, test), k=1, metrics=["auc"], beyond_accuracy=False
    )
    # list [c]: P=2, N=0 -> AUC undefined (NaN), and evaluate must not crash
    assert math.isnan(result.set_index("metric").loc["AUC@1", "value"])


def test_test_sets_are_validated_and_unfitted_models_refused(split):
    bad = split.test.head(3).copy()
    bad.loc[bad.index[0], "user"] = None
    with pytest.raises(InvalidInputError, match="test set row"):
        evaluate(["popularity"], Split(split.train, bad))
    from tastebud.errors import NotFittedError

    with pytest.raises(NotFittedError):
        evaluate({"p": create("popularity")}, split, fit=False)
    single = evaluate(["popularity"], split, metrics="ndcg", beyond_accuracy=False)
    assert "NDCG@10" in set(single.metric)


def test_protocol_counts_test_ids_unknown_to_training():
    train = Dataset.from_frame(pd.DataFrame({"user": [1, 2], "item": [10, 20]}))
    test = pd.DataFrame({"user": [1, 3], "item": [20, 30]})
    protocol = evaluate(["popularity"], Split(train, test), beyond_accuracy=False).attrs["protocol"]
    assert protocol["test_users_unknown_to_training"] == 1
    assert protocol["test_items_unknown_to_training"] == 1
    assert "smaller id first" in protocol["ties"]


def test_paired_test_accepts_lists_and_checks_inputs():
    res = paired_test([1.0, 2.0, 3.0], [0.0, 2.0, 2.0])
    assert res.n == 3 and res.difference == pytest.approx(2 / 3)
    with pytest.raises(InvalidInputError, match="name a metric"):
        paired_test(pd.DataFrame({"x": [1.0]}), pd.DataFrame({"x": [1.0]}), "NDCG@10")
