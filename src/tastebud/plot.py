"""Plots of evaluation results, for notebooks and for reports.

``leaderboard(results)``
    One panel per metric, models best first, each panel titled with the metric and whether
    higher or lower is better.
``tradeoff(results, x="Coverage@10", y="NDCG@10")``
    One point per model on two metrics, the better direction on both axes, and the models
    no other model beats on both (the Pareto front) joined by a line.
``distribution(per_user, metric="NDCG@10")``
    Each model's per-user values as a box plot (the tables ``evaluate(..., per_user={})``
    fills), so a mean carried by a few users shows.

``results`` is the tidy output of :func:`tastebud.evaluation.evaluate` or
:func:`~tastebud.evaluation.cross_validate` (then points are means over folds with the standard
deviation as error bars), or a wide table with one row per model such as
:func:`~tastebud.evaluation.leaderboard` returns. Which direction is better comes from
:mod:`tastebud.metrics.labels`.

Every function builds a :class:`matplotlib.figure.Figure` itself instead of going through
``pyplot``: no backend is switched and no figure is registered globally (nothing to close, no
figure shown twice), so the same code runs headless in reports and in notebooks, where the
returned figure is displayed. Save one with ``fig.savefig("plot.png")``.

Each model keeps one colour and one marker shape in every plot (:func:`styles`): colours from
the Okabe-Ito palette, which stays distinguishable with the common kinds of colour blindness
(Okabe & Ito, "Color universal design", 2008), and the shape tells models apart where the
colours repeat or cannot be seen.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from tastebud.errors import InvalidInputError
from tastebud.metrics.labels import describe, direction, headline_metrics, main_metric

__all__ = ["Style", "board", "distribution", "leaderboard", "styles", "tradeoff"]

#: Okabe-Ito colours without its yellow, which is too pale on white.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000")
#: Filled marker shapes; 13 is prime to 7 colours, so 91 models get distinct pairs.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "*", "h", "d")

_TIDY = {"model", "metric", "value"}


@dataclass(frozen=True)
class Style:
    """How one model is drawn: a colour and a marker shape."""

    color: str
    marker: str


def styles(models: Iterable[Any]) -> dict[str, Style]:
    """A distinct (colour, marker) pair for each model, in the order given.

    The i-th model gets colour ``i mod 7`` and marker ``i mod 13``, so both repeat only after
    91 models and the first 13 models all have different shapes.
    """
    names = list(dict.fromkeys(str(m) for m in models))
    return {
        name: Style(PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)])
        for i, name in enumerate(names)
    }


def _is_tidy(results: pd.DataFrame) -> bool:
    return _TIDY.issubset(results.columns)


def _check_results(results: Any) -> pd.DataFrame:
    if not isinstance(results, pd.DataFrame) or results.empty:
        raise InvalidInputError(
            "results must be a non-empty DataFrame from evaluate() (model, metric, value) "
            "or a leaderboard (one row per model)"
        )
    return results


def _models(results: pd.DataFrame) -> list[str]:
    """Model names in the order they were evaluated (the order styles are given in)."""
    names = results["model"] if _is_tidy(results) else results.index
    return list(dict.fromkeys(str(m) for m in names))


def board(results: pd.DataFrame, sort_by: str | None = None) -> pd.DataFrame:
    """One row per model (means over folds), one column per metric, best model first.

    ``sort_by`` defaults to the main ranking metric (NDCG@k when computed); lower-is-better
    metrics sort ascending. Models without a value of ``sort_by`` go last.
    """
    results = _check_results(results)
    if _is_tidy(results):
        table = results.pivot_table(
            index="model", columns="metric", values="value", sort=False, dropna=False
        )
        table.columns.name = None
        order = [m for m in dict.fromkeys(results["metric"]) if m in table.columns]
        table = table[order]
    else:
        table = results.apply(pd.to_numeric, errors="coerce")
    table.index = pd.Index([str(m) for m in table.index], name="model")
    key = sort_by if sort_by is not None else main_metric(table.columns)
    if key is None:
        return table
    if key not in table.columns:
        raise InvalidInputError(f"cannot sort by {key!r}; metrics: {', '.join(table.columns)}")
    return table.sort_values(
        key, ascending=direction(key) == "lower", na_position="last", kind="stable"
    )


def _spread(results: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame | None:
    """Standard deviation over folds per model and metric (``None`` for one fold)."""
    if not _is_tidy(results) or "fold" not in results.columns or results["fold"].nunique() < 2:
        return None
    std = results.pivot_table(index="model", columns="metric", values="value", aggfunc="std")
    std.index = pd.Index([str(m) for m in std.index])
    return std.reindex(index=table.index, columns=table.columns)


def _panel_metrics(table: pd.DataFrame, metrics: str | Sequence[str] | None) -> list[str]:
    """The metrics to draw: named ones, the headline (default) or ``"all"``; never all-NaN."""
    has_values = [c for c in table.columns if np.isfinite(table[c].to_numpy(float)).any()]
    if metrics is None:
        wanted = headline_metrics(table.columns, timings=False)
        wanted += [c for c in table.columns if describe(c).kind == "rating"]
    elif isinstance(metrics, str) and metrics == "all":
        wanted = [c for c in table.columns if describe(c).kind != "count"]
    else:
        wanted = [metrics] if isinstance(metrics, str) else list(metrics)
        missing = [m for m in wanted if m not in table.columns]
        if missing:
            raise InvalidInputError(
                f"no metric {missing[0]!r} in the results; metrics: {', '.join(table.columns)}"
            )
    chosen = [m for m in wanted if m in has_values]
    if not chosen:
        raise InvalidInputError("none of the chosen metrics has a value to plot")
    return chosen


def _dot_panel(
    ax: Axes, values: pd.Series, spread: pd.Series | None, style: dict[str, Style]
) -> None:
    """One metric as a dot plot: a marker per model in the board's order (best by the sort
    metric on top, the same order in every panel), the better direction in the title."""
    info = describe(str(values.name))
    shown = values[np.isfinite(values.to_numpy(float))]
    for pos, (model, value) in enumerate(shown.items()):
        st = style[str(model)]
        err = float(spread[model]) if spread is not None and pd.notna(spread[model]) else None
        if err:
            ax.errorbar(value, pos, xerr=err, fmt="none", ecolor=st.color, elinewidth=1, capsize=2)
        ax.plot(
            value,
            pos,
            linestyle="none",
            marker=st.marker,
            color=st.color,
            markersize=7,
            label=str(model),
        )
    ax.set_yticks(np.arange(len(shown)), labels=[str(m) for m in shown.index], fontsize=8)
    ax.set_ylim(len(shown) - 0.5, -0.5)
    ax.grid(axis="y", linestyle=":", linewidth=0.6)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    ax.tick_params(axis="x", labelsize=8)
    if info.kind == "timing" and (shown > 0).all():
        ax.set_xscale("log")  # fit times span orders of magnitude
    title = f"{info.label} ({info.better})" if info.better else info.label
    ax.set_title(title, fontsize=10)
    if info.direction == "higher":
        ax.set_xlabel("better →", fontsize=8, loc="right")
    elif info.direction == "lower":
        ax.set_xlabel("← better", fontsize=8, loc="left")


def _rows(labels: list[str], counts: dict[str, int], ncols: int) -> list[list[str]]:
    """Panels in rows of at most ``ncols``, those showing more models first; a panel with
    under 3/4 of its row's models (rating errors, which only some models have) starts a new,
    shorter row instead of being stretched to the height of the others."""
    rows: list[list[str]] = []
    for label in sorted(labels, key=lambda m: -counts[m]):  # stable: metric order kept
        row = rows[-1] if rows else None
        if row is None or len(row) == ncols or counts[label] < 0.75 * counts[row[0]]:
            rows.append([label])
        else:
            row.append(label)
    return rows


def leaderboard(
    results: pd.DataFrame,
    metrics: str | Sequence[str] | None = None,
    *,
    sort_by: str | None = None,
    ncols: int = 4,
    title: str | None = None,
) -> Figure:
    """One panel per metric, a dot per model, best model on top; returns the figure.

    Parameters
    ----------
    results:
        Tidy results of ``evaluate``/``cross_validate`` or a one-row-per-model table.
    metrics:
        Metric labels to draw; default the headline (NDCG, Recall, Precision, MAP, HitRate,
        Coverage, Novelty at k, and RMSE/MAE when computed); ``"all"`` draws every metric
        but user counts. Metrics no model has a value for are left out, so no panel is empty;
        a panel shows only the models with a value, and panels with fewer models (RMSE, MAE)
        go in a shorter row of their own.
    sort_by:
        The metric that orders the models (default the main ranking metric).
    ncols:
        Panels per row.
    title:
        Figure title.
    """
    table = board(results, sort_by)
    labels = _panel_metrics(table, metrics)
    spread = _spread(results, table)
    style = styles(_models(results))
    counts = {label: int(np.isfinite(table[label].to_numpy(float)).sum()) for label in labels}
    rows = _rows(labels, counts, max(1, int(ncols)))
    ncols = max(len(row) for row in rows)
    heights = [0.9 + 0.24 * max(counts[label] for label in row) for row in rows]
    fig = Figure(figsize=(4.2 * ncols, sum(heights)), layout="constrained")
    grid = fig.add_gridspec(len(rows), ncols, height_ratios=heights)
    for r, row in enumerate(rows):
        for c, label in enumerate(row):
            ax = fig.add_subplot(grid[r, c])
            _dot_panel(ax, table[label], None if spread is None else spread[label], style)
    if title:
        fig.suptitle(title)
    return fig


def _require(table: pd.DataFrame, label: str | None, role: str) -> str:
    metrics = ", ".join(table.columns)
    if label is None:
        raise InvalidInputError(f"no default metric for {role} here; name one of: {metrics}")
    if label not in table.columns:
        raise InvalidInputError(
            f"no metric {label!r} for {role} in the results; metrics: {metrics}"
        )
    return label


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        parent = ax.figure
        return (parent if isinstance(parent, Figure) else parent.figure), ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _find(table: pd.DataFrame, base: str) -> str | None:
    return next((c for c in table.columns if describe(c).base == base and "[" not in c), None)


def _pareto(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Points no other point beats on both metrics (in their better directions)."""
    sx = 1.0 if direction(x) != "lower" else -1.0
    sy = 1.0 if direction(y) != "lower" else -1.0
    gx, gy = points[x].to_numpy() * sx, points[y].to_numpy() * sy
    keep = [
        not np.any((gx >= gx[i]) & (gy >= gy[i]) & ((gx > gx[i]) | (gy > gy[i])))
        for i in range(len(points))
    ]
    return points[keep].sort_values(x)


def _place_labels(
    fig: Figure, ax: Axes, points: pd.DataFrame, x: str, y: str, fontsize: float = 8
) -> None:
    """Name each point where its name stays inside the axes and overlaps no other name or
    point (best models first); the legend names them all."""
    fig.draw_without_rendering()  # lay the figure out, so positions are final
    px = ax.transData.transform(points[[x, y]].to_numpy(float))
    frame = ax.get_window_extent()
    scale = fig.dpi / 72.0
    marker = 5.0 * scale
    taken = [(cx - marker, cy - marker, cx + marker, cy + marker) for cx, cy in px]
    offsets = (
        (5, 3, "left", "bottom"),
        (5, -3, "left", "top"),
        (-5, 3, "right", "bottom"),
        (-5, -3, "right", "top"),
        (7, 0, "left", "center"),
        (-7, 0, "right", "center"),
        (0, 7, "center", "bottom"),
        (0, -7, "center", "top"),
    )
    for (cx, cy), name in zip(px, points.index, strict=True):
        width, height = 0.6 * fontsize * len(str(name)) * scale, fontsize * scale
        for dx, dy, ha, va in offsets:
            x0 = cx + dx * scale - {"left": 0.0, "center": width / 2, "right": width}[ha]
            y0 = cy + dy * scale - {"bottom": 0.0, "center": height / 2, "top": height}[va]
            box = (x0, y0, x0 + width, y0 + height)
            inside = frame.x0 <= x0 and x0 + width <= frame.x1
            inside = inside and frame.y0 <= y0 and y0 + height <= frame.y1
            if inside and not any(_overlap(box, other) for other in taken):
                taken.append(box)
                ax.annotate(
                    str(name),
                    (float(points.loc[name, x]), float(points.loc[name, y])),
                    xytext=(dx, dy),
                    textcoords="offset points",
                    ha=ha,
                    va=va,
                    fontsize=fontsize,
                )
                break


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _axis_label(label: str, axis: str) -> str:
    info = describe(label)
    if info.direction is None:
        return label
    arrows = {("x", "higher"): "→", ("x", "lower"): "←", ("y", "higher"): "↑", ("y", "lower"): "↓"}
    return f"{label} ({info.better} {arrows[axis, info.direction]})"


def _scatter(
    ax: Axes, points: pd.DataFrame, spread: pd.DataFrame | None, style: dict[str, Style]
) -> None:
    """One marker per model at (first column, second column), fold spread as error bars."""
    x, y = points.columns[0], points.columns[1]
    if spread is not None:
        ex = spread[x].reindex(points.index).to_numpy(float)
        ey = spread[y].reindex(points.index).to_numpy(float)
        for n, model in enumerate(points.index):
            ax.errorbar(
                points[x].iloc[n],
                points[y].iloc[n],
                xerr=ex[n],
                yerr=ey[n],
                fmt="none",
                ecolor=style[model].color,
                elinewidth=0.8,
                alpha=0.6,
            )
    for model, vx, vy in zip(points.index, points[x], points[y], strict=True):
        st = style[model]
        ax.plot(
            vx, vy, linestyle="none", marker=st.marker, color=st.color, markersize=8, label=model
        )


def tradeoff(
    results: pd.DataFrame,
    x: str | None = None,
    y: str | None = None,
    *,
    ax: Axes | None = None,
    frontier: bool = True,
    title: str | None = None,
) -> Figure:
    """Scatter of two metrics, one labelled point per model; returns the figure.

    Parameters
    ----------
    results:
        Tidy results of ``evaluate``/``cross_validate`` or a one-row-per-model table.
    x, y:
        Metric labels; default ``Coverage@k`` and the main ranking metric (``NDCG@k``).
    ax:
        Draw into these axes instead of a new figure.
    frontier:
        Join the models that no other model beats on both metrics (the Pareto front).
    title:
        Axes title; default names the metrics and the better corner.
    """
    table = board(results)
    x = x if x is not None else _find(table, "Coverage")
    y = y if y is not None else main_metric(table.columns)
    x = _require(table, x, "x")
    y = _require(table, y, "y")
    if x == y:
        raise InvalidInputError(f"x and y are both {x}; a trade-off needs two metrics")
    points = table[[x, y]].replace([np.inf, -np.inf], np.nan).dropna()
    if points.empty:
        raise InvalidInputError(f"no model has values for both {x} and {y}")
    fig, ax = _axes(ax, (9.0, 5.8))
    _scatter(ax, points, _spread(results, table), styles(_models(results)))
    if frontier and len(points) > 1:
        front = _pareto(points, x, y)
        ax.plot(front[x], front[y], "--", color="0.5", linewidth=1, zorder=0, label="Pareto front")
    ax.set_xlabel(_axis_label(x, "x"))
    ax.set_ylabel(_axis_label(y, "y"))
    ax.grid(alpha=0.3)
    vertical = {"higher": "up", "lower": "down"}.get(direction(y) or "", "")
    horizontal = {"higher": "right", "lower": "left"}.get(direction(x) or "", "")
    corner = " and ".join(p for p in (vertical, horizontal) if p)
    ax.set_title(title or f"{y} vs {x}" + (f": better is {corner}" if corner else ""), fontsize=11)
    ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
        frameon=False,
        ncols=1 if len(points) <= 18 else 2,
    )
    _place_labels(fig, ax, points, x, y)
    return fig


def _box_orientation() -> dict[str, Any]:
    """Horizontal boxes in every supported matplotlib (``vert`` gave way to ``orientation``)."""
    if "orientation" in inspect.signature(Axes.boxplot).parameters:
        return {"orientation": "horizontal"}
    return {"vert": False}


def distribution(
    per_user: Mapping[str, pd.DataFrame],
    metric: str | None = None,
    *,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Per-user values of one metric as a box per model, best mean on top; returns the figure.

    Parameters
    ----------
    per_user:
        Model name -> per-user metric table, as filled by ``evaluate(..., per_user=tables)``.
        Users without a value (no relevant test item) are left out.
    metric:
        Column to draw; default the main ranking metric.
    ax:
        Draw into these axes instead of a new figure.
    title:
        Axes title; default names the metric and the better direction.

    Notes
    -----
    The box spans the quartiles, whiskers reach 1.5 times the box beyond it, outliers are
    not drawn; the marker is the mean (the number a leaderboard shows).
    """
    if not isinstance(per_user, Mapping) or not per_user:
        raise InvalidInputError("per_user must map model names to per-user metric tables")
    columns = list(dict.fromkeys(c for t in per_user.values() for c in t.columns))
    metric = metric if metric is not None else main_metric(columns)
    if metric is None or metric not in columns:
        raise InvalidInputError(
            f"no metric {metric!r} in the tables; metrics: {', '.join(columns)}"
        )
    values = {
        str(m): t[metric].to_numpy(float)[np.isfinite(t[metric].to_numpy(float))]
        for m, t in per_user.items()
        if metric in t.columns
    }
    values = {m: v for m, v in values.items() if len(v)}
    if not values:
        raise InvalidInputError(f"no user has a value of {metric}")
    reverse = direction(metric) != "lower"
    order = sorted(values, key=lambda m: float(values[m].mean()), reverse=reverse)
    style = styles(str(m) for m in per_user)
    fig, ax = _axes(ax, (7.5, max(2.6, 1.0 + 0.32 * len(order))))
    positions = np.arange(len(order))
    ax.boxplot(
        [values[m] for m in order],
        positions=positions,
        widths=0.6,
        showfliers=False,
        medianprops={"color": "0.2"},
        **_box_orientation(),
    )
    for pos, model in zip(positions, order, strict=True):
        st = style[model]
        ax.plot(
            float(values[model].mean()),
            pos,
            linestyle="none",
            marker=st.marker,
            color=st.color,
            markersize=7,
            label=model,
        )
    ax.set_yticks(positions, labels=order, fontsize=8)
    ax.set_ylim(len(order) - 0.5, -0.5)
    ax.grid(axis="x", alpha=0.3)
    info = describe(metric)
    ax.set_xlabel(_axis_label(metric, "x"))
    suffix = f" ({info.better})" if info.better else ""
    ax.set_title(title or f"{metric} per user{suffix}; marker: mean", fontsize=11)
    return fig
