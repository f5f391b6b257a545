"""tastebud.plot on hand-made results whose right picture is known (no model is fitted)."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import pandas as pd
import pytest

from tastebud import plot
from tastebud.errors import InvalidInputError
from tastebud.metrics import describe, direction, headline_metrics, main_metric
from tastebud.metrics.ranking import _LABELS

NAN = float("nan")


def tidy(table: dict[str, dict[str, float]], fold: int | None = None) -> pd.DataFrame:
    """Tidy results (model, metric, value) from {model: {metric: value}}."""
    rows = [(m, metric, v) for m, values in table.items() for metric, v in values.items()]
    frame = pd.DataFrame(rows, columns=["model", "metric", "value"])
    if fold is not None:
        frame.insert(1, "fold", fold)
    return frame


RESULTS = tidy(
    {
        "pop": {"NDCG@10": 0.20, "Coverage@10": 0.30, "Serendipity@10": NAN, "RMSE": NAN},
        "knn": {"NDCG@10": 0.45, "Coverage@10": 0.90, "Serendipity@10": NAN, "RMSE": 0.95},
        "svd": {"NDCG@10": 0.30, "Coverage@10": 0.50, "Serendipity@10": NAN, "RMSE": 0.90},
        "rand": {"NDCG@10": 0.10, "Coverage@10": 1.00, "Serendipity@10": NAN, "RMSE": NAN},
    }
)


def dots(ax) -> dict[str, tuple[float, float, str, str]]:
    """Model -> (x, y, marker, colour) of the labelled points in one axes."""
    out = {}
    for line in ax.get_lines():
        if line.get_label().startswith("_") or line.get_label() == "Pareto front":
            continue
        x, y = line.get_xdata()[0], line.get_ydata()[0]
        out[line.get_label()] = (float(x), float(y), line.get_marker(), line.get_color())
    return out


def test_directions_come_from_one_table():
    assert direction("NDCG@10") == "higher" and direction("RMSE") == "lower"
    assert direction("ARP@10") == "lower" and direction("Gini@10") == "lower"
    assert direction("fit_seconds") == "lower" and direction("Novelty@5") == "higher"
    group = describe("NDCG@10 [gender=F]")
    assert (group.kind, group.direction, group.k, group.group) == (
        "group",
        "higher",
        10,
        "gender=F",
    )
    gap = describe("NDCG@10 gap by gender")
    assert (gap.kind, gap.direction, gap.group) == ("gap", "lower", "gender")
    count = describe("users [gender=F]")
    assert (count.kind, count.direction) == ("count", None)
    assert describe("my-metric").direction is None
    # every ranking metric evaluate() can label has a direction
    assert all(direction(f"{label}@3") == "higher" for label in _LABELS.values())
    labels = ["Precision@10", "MRR@10", "NDCG@10", "ARP@10", "Coverage@10", "fit_seconds", "RMSE"]
    assert headline_metrics(labels) == ["NDCG@10", "Precision@10", "Coverage@10", "fit_seconds"]
    assert headline_metrics(["MRR@5", "AUC@5", "Gini@5"]) == ["MRR@5", "AUC@5"]
    assert main_metric(labels) == "NDCG@10" and main_metric(["RMSE", "MAE"]) == "RMSE"


def test_board_sorts_best_first_by_the_metrics_direction():
    assert list(plot.board(RESULTS).index) == ["knn", "svd", "pop", "rand"]
    assert list(plot.board(RESULTS, sort_by="RMSE").index) == ["svd", "knn", "pop", "rand"]
    with pytest.raises(InvalidInputError, match="cannot sort by 'MAP@10'"):
        plot.board(RESULTS, sort_by="MAP@10")


def test_panel_titles_say_which_direction_is_better():
    fig = plot.leaderboard(RESULTS, metrics=["NDCG@10", "RMSE"])
    titles = {ax.get_title(): ax for ax in fig.axes}
    assert set(titles) == {"NDCG@10 (higher is better)", "RMSE (lower is better)"}
    assert titles["NDCG@10 (higher is better)"].get_xlabel() == "better →"
    assert titles["RMSE (lower is better)"].get_xlabel() == "← better"
    # models top to bottom in the board's order; a panel shows only models with a value
    ndcg = [t.get_text() for t in titles["NDCG@10 (higher is better)"].get_yticklabels()]
    assert ndcg == ["knn", "svd", "pop", "rand"]
    rmse = dots(titles["RMSE (lower is better)"])
    assert set(rmse) == {"knn", "svd"} and rmse["svd"][0] == pytest.approx(0.90)


def test_no_panel_is_empty_when_a_metric_is_all_nan():
    fig = plot.leaderboard(RESULTS, metrics="all", ncols=2)
    titles = sorted(ax.get_title().split(" (")[0] for ax in fig.axes)
    assert titles == ["Coverage@10", "NDCG@10", "RMSE"]  # Serendipity has no value anywhere
    assert all(dots(ax) for ax in fig.axes)
    # the 2-model RMSE panel gets its own shorter row instead of a stretched cell
    rows = {ax.get_title().split(" (")[0]: ax.get_subplotspec().rowspan.start for ax in fig.axes}
    assert rows["NDCG@10"] == rows["Coverage@10"] != rows["RMSE"]
    with pytest.raises(InvalidInputError, match="none of the chosen metrics has a value"):
        plot.leaderboard(RESULTS, metrics=["Serendipity@10"])
    with pytest.raises(InvalidInputError, match="no metric 'MAP@10'"):
        plot.leaderboard(RESULTS, metrics=["MAP@10"])


def test_each_model_keeps_one_distinct_marker_and_colour():
    names = [f"m{i}" for i in range(30)]
    style = plot.styles(names)
    assert len({(s.marker, s.color) for s in style.values()}) == 30
    assert len({style[n].marker for n in names[:13]}) == 13  # shapes alone tell 13 apart
    fig = plot.leaderboard(RESULTS)  # default: headline metrics (+ RMSE)
    seen: dict[str, set[tuple[str, str]]] = {}
    for ax in fig.axes:
        for model, (_, _, marker, color) in dots(ax).items():
            seen.setdefault(model, set()).add((marker, color))
    assert all(len(v) == 1 for v in seen.values())  # the same look in every panel
    assert len({next(iter(v)) for v in seen.values()}) == len(seen) == 4
    trade = dots(plot.tradeoff(RESULTS).axes[0])
    assert {m: (d[2], d[3]) for m, d in trade.items()} == {
        m: next(iter(v)) for m, v in seen.items()
    }


def test_tradeoff_shows_directions_labels_and_the_pareto_front():
    fig = plot.tradeoff(RESULTS)  # NDCG@10 against Coverage@10
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Coverage@10 (higher is better →)"
    assert ax.get_ylabel() == "NDCG@10 (higher is better ↑)"
    assert ax.get_title().endswith("better is up and right")
    points = dots(ax)
    assert points["knn"][:2] == pytest.approx((0.90, 0.45))
    assert {t.get_text() for t in ax.texts} == {"pop", "knn", "svd", "rand"}  # room for all
    front = next(line for line in ax.get_lines() if line.get_label() == "Pareto front")
    # pop and svd are beaten on both axes by knn; rand has the widest coverage
    assert list(zip(front.get_xdata(), front.get_ydata(), strict=True)) == [(0.9, 0.45), (1.0, 0.1)]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["knn", "svd", "pop", "rand", "Pareto front"]


def test_tradeoff_with_a_lower_is_better_axis():
    results = tidy({"a": {"ARP@5": 10.0, "NDCG@5": 0.3}, "b": {"ARP@5": 40.0, "NDCG@5": 0.4}})
    results = pd.concat([results, tidy({"c": {"ARP@5": 30.0, "NDCG@5": 0.2}})])
    ax = plot.tradeoff(results, x="ARP@5").axes[0]
    assert ax.get_xlabel() == "ARP@5 (lower is better ←)"
    assert ax.get_title() == "NDCG@5 vs ARP@5: better is up and left"
    front = next(line for line in ax.get_lines() if line.get_label() == "Pareto front")
    assert list(front.get_xdata()) == [10.0, 40.0]  # c: more popular and less accurate than a
    with pytest.raises(InvalidInputError, match="no metric 'Coverage@5' for x"):
        plot.tradeoff(results, x="Coverage@5")
    with pytest.raises(InvalidInputError, match="no default metric for x here; name one of: "):
        plot.tradeoff(results)  # no coverage computed and none named
    with pytest.raises(InvalidInputError, match="a trade-off needs two metrics"):
        plot.tradeoff(results, x="NDCG@5")


def test_cross_validated_results_get_error_bars_of_the_fold_spread():
    folds = pd.concat(
        [
            tidy({"a": {"NDCG@10": 0.4, "Coverage@10": 0.5}}, fold=1),
            tidy({"a": {"NDCG@10": 0.6, "Coverage@10": 0.7}}, fold=2),
            tidy({"b": {"NDCG@10": 0.2, "Coverage@10": 0.9}}, fold=1),
            tidy({"b": {"NDCG@10": 0.2, "Coverage@10": 0.9}}, fold=2),
        ]
    )
    ax = next(a for a in plot.leaderboard(folds).axes if a.get_title().startswith("NDCG"))
    assert dots(ax)["a"][0] == pytest.approx(0.5)  # mean over folds
    bars = [c for c in ax.collections if len(c.get_segments())]
    assert len(bars) == 1  # b has no spread
    (x0, _), (x1, _) = bars[0].get_segments()[0]
    spread = np.std([0.4, 0.6], ddof=1)  # the sample standard deviation over folds
    assert (x0, x1) == pytest.approx((0.5 - spread, 0.5 + spread))


def test_distribution_draws_per_user_values_best_mean_first():
    per_user = {
        "low": pd.DataFrame({"NDCG@10": [0.0, 0.1, 0.2, NAN]}),
        "high": pd.DataFrame({"NDCG@10": [0.5, 0.7, 0.9, NAN]}),
        "empty": pd.DataFrame({"NDCG@10": [NAN, NAN]}),
    }
    ax = plot.distribution(per_user).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["high", "low"]  # no values: no box
    means = dots(ax)
    assert means["high"][:2] == pytest.approx((0.7, 0.0)) and means["low"][0] == pytest.approx(0.1)
    assert ax.get_title() == "NDCG@10 per user (higher is better); marker: mean"
    with pytest.raises(InvalidInputError, match="no metric 'MAP@10'"):
        plot.distribution(per_user, "MAP@10")


def test_plots_render_headless_without_touching_pyplot():
    import matplotlib.pyplot as plt

    backend, open_before = matplotlib.get_backend(), plt.get_fignums()
    fig = plot.leaderboard(RESULTS)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    assert buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n" and len(buffer.getvalue()) > 10_000
    assert plt.get_fignums() == open_before and matplotlib.get_backend() == backend
    with pytest.raises(InvalidInputError, match="non-empty DataFrame"):
        plot.leaderboard(RESULTS.iloc[:0])
