"""Reports of evaluation results: markdown + PNG plots + JSON, in one folder.

``report.md`` is meant to be looked at before it is read: a one-line verdict, the data and the
protocol, a compact main table (the headline ranking metrics, coverage, novelty and fit time;
best model first, the best value of each column in bold, arrows saying which direction is
better), the plots, and an appendix with every other number (more ranking and
beyond-accuracy metrics, rating error, metrics per user group and their gaps, timings).
Counts are written as integers, seconds with a precision that suits their size, metrics with
three decimals.

The plots come from :mod:`tastebud.plot` (the same code a notebook calls): ``metrics.png``
(the leaderboard panels), ``tradeoff.png`` (the main ranking metric against catalog coverage)
and, when per-user tables are given, ``distribution.png``. ``results.json`` keeps every
result row, the protocol, the data summary and each metric's better direction, for machines.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tastebud import plot
from tastebud._io import output_folder, to_json
from tastebud.errors import InvalidInputError
from tastebud.metrics.labels import describe, headline_metrics, main_metric

__all__ = ["format_value", "main_columns", "markdown_table", "write_report"]

_HEADERS = {"fit_seconds": "fit (s)", "recommend_seconds": "recommend (s)"}


def _seconds(value: float) -> str:
    """Seconds at a precision that suits their size: 106, 23.6, 5.73, 0.016, <0.001."""
    if value == 0:
        return "0"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    if value >= 0.001:
        return f"{value:.3f}"
    return "<0.001"


def format_value(label: str, value: Any, *, digits: int = 3) -> str:
    """A result value as a report shows it: counts as integers, seconds by size, metrics with
    ``digits`` decimals, ``-`` where there is no value.

    The CLI's leaderboard and the report format numbers the same way through this function.
    """
    if value is None or isinstance(value, str):
        return "-" if value is None else value
    number = float(value)
    if not math.isfinite(number):
        return "-"
    kind = describe(label).kind
    if kind == "count":
        return str(round(number))
    if kind == "timing":
        return _seconds(number)
    return f"{number:.{digits}f}"


def column_title(label: str, arrows: bool = True) -> str:
    """A result column's title: ``fit (s) ↓``, ``NDCG@10 ↑`` (the CLI uses it too)."""
    name = _HEADERS.get(label, label)
    arrow = describe(label).arrow if arrows else ""
    return f"{name} {arrow}" if arrow else name


def _best_cells(table: pd.DataFrame, digits: int) -> dict[str, set[str]]:
    """Per column, the shown text of the best value (by the metric's direction)."""
    best: dict[str, set[str]] = {}
    for column in table.columns:
        info = describe(str(column))
        values = table[column].to_numpy(dtype=float)
        finite = values[np.isfinite(values)]
        if info.direction is None or len(finite) < 2:
            continue
        top = finite.max() if info.direction == "higher" else finite.min()
        best[str(column)] = {format_value(str(column), top, digits=digits)}
    return best


def markdown_table(
    table: pd.DataFrame, *, digits: int = 3, bold_best: bool = False, arrows: bool = False
) -> str:
    """A pipe table (GitHub markdown) of a one-row-per-model frame, index as first column.

    Each cell is written by :func:`format_value` for its column's label. ``bold_best`` makes
    the best value of each column bold (every cell showing the same text as the best one),
    ``arrows`` adds ↑ / ↓ to the headers of metrics that are better higher / lower.
    """
    best = _best_cells(table, digits) if bold_best else {}
    header = [str(table.index.name or "")] + [column_title(str(c), arrows) for c in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for idx, row in zip(table.index, table.itertuples(index=False), strict=True):
        cells = [str(idx)]
        for column, value in zip(table.columns, row, strict=True):
            text = format_value(str(column), value, digits=digits)
            cells.append(f"**{text}**" if text in best.get(str(column), ()) else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _with_values(table: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    return [c for c in columns if c in table.columns and table[c].notna().any()]


def main_columns(board: pd.DataFrame) -> list[str]:
    """The main table's columns: headline ranking metrics, coverage, novelty, fit time.

    Only columns with at least one value; see :func:`tastebud.metrics.headline_metrics`.
    """
    return _with_values(board, headline_metrics(board.columns))


def _group_sizes(board: pd.DataFrame, columns: list[str]) -> str | None:
    """``F 139, M 153`` when every model saw the same group sizes (evaluate's do: the same
    test users); ``None`` when they differ, and the sizes stay table columns."""
    parts = []
    for column in columns:
        values = board[column].dropna().unique()
        if len(values) != 1:
            return None
        group = (describe(column).group or "").split("=", 1)[-1]
        parts.append(f"{group} {format_value(column, values[0])}")
    return ", ".join(parts)


def _fairness_sections(board: pd.DataFrame, rest: list[str]) -> tuple[list[str], set[str]]:
    """Per grouping column: group sizes in a line, then per-group metrics and their gap."""
    lines: list[str] = []
    used: set[str] = set()
    infos = [describe(c) for c in rest]
    by_names = {i.group for i in infos if i.kind == "gap"}
    by_names |= {(i.group or "").split("=")[0] for i in infos if i.kind in ("group", "count")}
    for by in sorted(n for n in by_names if n):
        group = [
            i.label for i in infos if i.kind == "group" and (i.group or "").startswith(by + "=")
        ]
        gaps = [i.label for i in infos if i.kind == "gap" and i.group == by]
        counts = [
            i.label for i in infos if i.kind == "count" and (i.group or "").startswith(by + "=")
        ]
        sizes = _group_sizes(board, counts) if counts else None
        shown = group + gaps + ([] if sizes else counts)
        used |= set(group + gaps + counts)
        lines += [f"### By {by}", ""]
        if sizes:
            lines += [f"Users per group: {sizes}.", ""]
        if shown:
            lines += [markdown_table(board[shown], bold_best=True, arrows=True), ""]
    return lines, used


def _appendix(board: pd.DataFrame, main: list[str]) -> list[str]:
    """Every column not in the main table, grouped by kind (timings show fit and recommend)."""
    rest = [c for c in board.columns if c not in main and board[c].notna().any()]
    lines = ["## Appendix", ""]
    more = [c for c in rest if describe(c).kind in ("ranking", "beyond")]
    if more:
        lines += ["### More ranking and beyond-accuracy metrics", ""]
        lines += [markdown_table(board[more], bold_best=True, arrows=True), ""]
    rating = [c for c in rest if describe(c).kind == "rating"]
    if rating:
        rows = board[rating].dropna(how="all")
        lines += ["### Rating prediction (models that predict ratings)", ""]
        lines += [markdown_table(rows, bold_best=True, arrows=True), ""]
    fairness, used = _fairness_sections(board, rest)
    lines += fairness
    timing = [c for c in board.columns if describe(c).kind == "timing" and board[c].notna().any()]
    if any(c in rest for c in timing):
        lines += ["### Timings (seconds, this machine)", ""]
        lines += [markdown_table(board[timing], bold_best=True, arrows=True), ""]
    other = [c for c in rest if c not in set(more + rating + timing) | used]
    if other:
        lines += ["### Other", "", markdown_table(board[other], bold_best=True, arrows=True), ""]
    return lines if len(lines) > 2 else []


def _facts(heading: str, facts: Mapping[str, Any]) -> list[str]:
    def show(value: Any) -> str:
        if isinstance(value, float | np.floating):
            return f"{float(value):.4g}"
        return str(value)

    if not facts:
        return []
    return [f"## {heading}", "", *[f"- {key}: {show(value)}" for key, value in facts.items()], ""]


def _verdict(board: pd.DataFrame, sort_by: str | None) -> list[str]:
    if sort_by is None or board[sort_by].isna().all():
        return []
    ranked = board[sort_by].dropna()
    names = [f"{m} ({format_value(sort_by, v)})" for m, v in ranked.items()]
    text = f"Best by {sort_by}: **{names[0]}**"
    if len(names) > 1:
        text += ", then " + " and ".join(names[1:3])
    compared = f"{len(board)} models" if len(board) > 1 else "1 model"
    return [text + f"; {compared} compared.", ""]


def _plots(
    results: pd.DataFrame, out: Path, per_user: Mapping[str, pd.DataFrame] | None
) -> dict[str, Path]:
    """Draw the report's figures with :mod:`tastebud.plot`; the ones that apply."""
    paths: dict[str, Path] = {}
    figures: dict[str, Any] = {}
    # A figure is left out when its metrics have no values (e.g. no coverage without
    # beyond-accuracy metrics): plot says so with an InvalidInputError; the tables remain.
    with contextlib.suppress(InvalidInputError):
        figures["plot"] = plot.leaderboard(results)
    with contextlib.suppress(InvalidInputError):
        figures["tradeoff"] = plot.tradeoff(results)
    if per_user:
        figures["distribution"] = plot.distribution(per_user)
    names = {"plot": "metrics.png", "tradeoff": "tradeoff.png", "distribution": "distribution.png"}
    for key, fig in figures.items():
        paths[key] = out / names[key]
        fig.savefig(paths[key], dpi=110)
    return paths


def write_report(
    results: pd.DataFrame,
    folder: str | Path,
    *,
    title: str = "tastebud evaluation",
    dataset: dict[str, Any] | None = None,
    per_user: Mapping[str, pd.DataFrame] | None = None,
) -> dict[str, Path]:
    """Write ``report.md``, ``metrics.png``, ``tradeoff.png`` and ``results.json`` to ``folder``.

    ``results`` is the tidy output of :func:`~tastebud.evaluation.evaluate` (or
    ``cross_validate``: tables show means over folds, plots their spread). ``per_user``, the
    tables ``evaluate(..., per_user={})`` fills, adds ``distribution.png``. Returns the
    written paths under the keys ``markdown``, ``json``, ``plot`` (``metrics.png``) and, when
    drawn, ``tradeoff`` and ``distribution``.
    """
    out = output_folder(folder)
    board = plot.board(results)
    sort_by = main_metric(board.columns)
    main = main_columns(board)
    protocol = results.attrs.get("protocol", {})
    paths = {"markdown": out / "report.md", "json": out / "results.json"}
    paths |= _plots(results, out, per_user)
    lines = [f"# {title}", "", *_verdict(board, sort_by)]
    lines += _facts("Data", dataset or {}) + _facts("Protocol", protocol)
    notes = "↑ higher is better, ↓ lower is better; the best value of each column is bold"
    if sort_by:
        notes += f"; sorted by {sort_by}"
    if "fold" in results.columns:
        notes += f"; means over {results['fold'].nunique()} folds (results.json has each fold)"
    lines += ["## Results", "", markdown_table(board[main], bold_best=True, arrows=True), ""]
    lines += [notes + ". Everything else is in the appendix.", ""]
    captions = {"plot": "metrics", "tradeoff": "trade-off", "distribution": "per-user spread"}
    lines += [f"![{captions[k]}]({paths[k].name})" for k in captions if k in paths] + [""]
    lines += _appendix(board, main)
    paths["markdown"].write_text("\n".join(lines))
    metrics = list(dict.fromkeys(results["metric"]))
    payload = {
        "title": title,
        "dataset": dataset or {},
        "protocol": protocol,
        "metrics": {
            m: {"kind": describe(m).kind, "better": describe(m).direction} for m in metrics
        },
        "results": results.to_dict(orient="records"),
    }
    paths["json"].write_text(to_json(payload))
    return paths
