"""write_report: compact main table, appendix, integer counts, plots, complete JSON."""

from __future__ import annotations

import json
import re

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from tastebud.data.sample import load_sample
from tastebud.evaluation import evaluate
from tastebud.report import format_value, main_columns, markdown_table, write_report
from tastebud.split import random_split

MODELS = ["popularity", "random", "baseline", "item-knn"]


@pytest.fixture(scope="module")
def evaluated():
    """Four quick models on the sample store, with fairness by gender and per-user tables."""
    split = random_split(load_sample(), 0.2, seed=0)
    per_user: dict[str, pd.DataFrame] = {}
    results = evaluate(MODELS, split, k=5, fairness_by="gender", per_user=per_user)
    return results, per_user


@pytest.fixture(scope="module")
def report(evaluated, tmp_path_factory):
    results, per_user = evaluated
    folder = tmp_path_factory.mktemp("report")
    paths = write_report(results, folder, title="Test", dataset={"users": 300}, per_user=per_user)
    return paths, paths["markdown"].read_text()


def section(text: str, heading: str) -> str:
    """The markdown under one heading, up to the next heading of any level."""
    start = text.index(heading) + len(heading)
    following = re.search(r"^#+ ", text[start:], flags=re.MULTILINE)
    return text[start : start + following.start()] if following else text[start:]


def table_rows(block: str) -> list[list[str]]:
    """Cells of the first pipe table in a block (header included, separator left out)."""
    lines = [line for line in block.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines if "---" not in line]


@pytest.mark.slow  # fits four models once for the module (~2-6 s)
def test_main_table_is_compact_sorted_and_marks_the_best(evaluated, report):
    results, _ = evaluated
    _, text = report
    rows = table_rows(section(text, "## Results"))
    header = rows[0]
    assert header == [
        "model",
        "NDCG@5 ↑",
        "Recall@5 ↑",
        "Precision@5 ↑",
        "MAP@5 ↑",
        "HitRate@5 ↑",
        "Coverage@5 ↑",
        "Novelty@5 ↑",
        "fit (s) ↓",
    ]
    ndcg = results[results.metric == "NDCG@5"].set_index("model")["value"]
    assert [r[0] for r in rows[1:]] == list(ndcg.sort_values(ascending=False).index)
    best = rows[1]
    assert best[1] == f"**{ndcg.max():.3f}**"  # the best NDCG, bold, 3 decimals
    coverage = results[results.metric == "Coverage@5"].set_index("model")["value"]
    column = header.index("Coverage@5 ↑")
    bold = {r[0] for r in rows[1:] if r[column].startswith("**")}
    assert bold == set(coverage[coverage.round(3) == coverage.max().round(3)].index)
    assert text.startswith(f"# Test\n\nBest by NDCG@5: **{ndcg.idxmax()} (")
    assert "## Data\n\n- users: 300" in text and "- split: random(0.2, seed=0)" in text


@pytest.mark.slow  # fits four models once for the module (~2-6 s)
def test_appendix_holds_every_other_number(evaluated, report):
    results, _ = evaluated
    _, text = report
    main = table_rows(section(text, "## Results"))[0]
    appendix = text[text.index("## Appendix") :]
    for metric in ["MRR@5", "ARP@5", "Gini@5", "RMSE", "MAE", "NDCG@5 gap by gender"]:
        assert not any(h.startswith(metric) for h in main)
        assert f" {metric} " in appendix
    shown = {"fit_seconds": "fit (s)", "recommend_seconds": "recommend (s)"}
    counts = {"users [gender=F]", "users [gender=M]", "users [gender=X]"}  # one line, below
    for label in set(results.metric) - counts:
        assert f" {shown.get(label, label)} " in text, label
    rating = table_rows(section(text, "### Rating prediction"))
    assert sorted(r[0] for r in rating[1:]) == ["baseline", "item-knn"]  # the rating models
    timings = table_rows(section(text, "### Timings"))[0]
    assert timings == ["model", "fit (s) ↓", "recommend (s) ↓"]


@pytest.mark.slow  # fits four models once for the module (~2-6 s)
def test_counts_are_written_as_integers(evaluated, report):
    results, _ = evaluated
    _, text = report
    sizes = results[results.metric.str.startswith("users [")].drop_duplicates("metric")
    expected = ", ".join(
        f"{m.split('=')[1].rstrip(']')} {int(v)}"
        for m, v in zip(sizes.metric, sizes.value, strict=True)
    )
    assert f"Users per group: {expected}." in section(text, "### By gender")
    assert not re.search(r"\d\.0000", text)  # no count written as a float anywhere
    # when the sizes differ between models they stay columns, still integers
    board = pd.DataFrame({"users [g=a]": [12.0, 13.0], "NDCG@5 [g=a]": [0.5, 0.25]})
    board.index = pd.Index(["x", "y"], name="model")
    assert "| x | 12 | **0.500** |" in markdown_table(board, bold_best=True)


def test_format_value_by_kind():
    assert format_value("users [g=a]", 139.0) == "139"
    assert format_value("NDCG@10", 0.48176) == "0.482"
    assert format_value("NDCG@10", float("nan")) == "-"
    assert format_value("NDCG@10", None) == "-"
    seconds = [106.49, 23.55, 5.7259, 0.2342, 0.0161, 0.0003, 0.0]
    assert [format_value("fit_seconds", s) for s in seconds] == [
        "106",
        "23.6",
        "5.73",
        "0.234",
        "0.016",
        "<0.001",
        "0",
    ]


@pytest.mark.slow  # fits four models once for the module (~2-6 s)
def test_plots_exist_and_are_not_blank(report):
    paths, text = report
    for key, name in [("plot", "metrics.png"), ("tradeoff", "tradeoff.png")]:
        assert paths[key].name == name and f"]({name})" in text
    assert "](distribution.png)" in text
    for key in ("plot", "tradeoff", "distribution"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = matplotlib.image.imread(paths[key])
        assert min(image.shape[:2]) > 200
        assert np.asarray(image[..., :3]).std() > 0.05  # drawn on, not an empty canvas


@pytest.mark.slow  # fits four models once for the module (~2-6 s)
def test_json_stays_complete_and_machine_readable(evaluated, report):
    results, _ = evaluated
    paths, _ = report
    payload = json.loads(paths["json"].read_text())
    assert len(payload["results"]) == len(results)
    assert payload["protocol"]["k"] == 5 and payload["dataset"] == {"users": 300}
    assert payload["metrics"]["NDCG@5"] == {"kind": "ranking", "better": "higher"}
    assert payload["metrics"]["users [gender=F]"] == {"kind": "count", "better": None}
    rmse = [r for r in payload["results"] if r["metric"] == "RMSE"]
    assert {r["model"] for r in rmse} == {"baseline", "item-knn"}


def test_report_without_coverage_or_folds(tmp_path):
    rows = [
        ("a", 1, "NDCG@10", 0.5),
        ("a", 2, "NDCG@10", 0.3),
        ("b", 1, "NDCG@10", 0.2),
        ("b", 2, "NDCG@10", 0.2),
        ("a", 1, "fit_seconds", 1.0),
        ("a", 2, "fit_seconds", 3.0),
        ("b", 1, "fit_seconds", 0.5),
        ("b", 2, "fit_seconds", 0.5),
    ]
    results = pd.DataFrame(rows, columns=["model", "fold", "metric", "value"])
    paths = write_report(results, tmp_path)
    text = paths["markdown"].read_text()
    assert "tradeoff" not in paths and "tradeoff.png" not in text  # no coverage to trade off
    assert "means over 2 folds" in text
    assert table_rows(section(text, "## Results"))[1] == ["a", "**0.400**", "2.00"]
    assert "## Appendix" not in text  # nothing beyond the main table
    assert main_columns(pd.DataFrame(columns=["MRR@3", "RMSE"])) == []
