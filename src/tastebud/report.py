"""Reports of evaluation results: markdown + PNG plots + JSON, in one folder."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tastebud._io import output_folder, to_json
from tastebud.evaluation import leaderboard

_TIMING = ("fit_seconds", "recommend_seconds")


def markdown_table(table: pd.DataFrame, *, digits: int = 4) -> str:
    """A pipe table (GitHub markdown) of a frame, index as the first column."""

    def cell(value: Any) -> str:
        if isinstance(value, float | np.floating):
            return "" if math.isnan(value) else f"{value:.{digits}f}"
        return str(value)

    header = [str(table.index.name or "")] + [str(c) for c in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for idx, row in table.iterrows():
        lines.append("| " + " | ".join([cell(idx)] + [cell(v) for v in row]) + " |")
    return "\n".join(lines)


def _plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [c for c in table.columns if c not in _TIMING and "[" not in c and " gap " not in c]
    if not columns:
        return
    n_cols = min(4, len(columns))
    n_rows = math.ceil(len(columns) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.2 * n_cols, 2.8 * n_rows), squeeze=False)
    colors = plt.get_cmap("tab10")(np.arange(len(table)) % 10)
    for ax, column in zip(axes.ravel(), columns, strict=False):
        values = table[column].to_numpy(dtype=float)
        ax.barh(np.arange(len(table)), values, color=colors)
        ax.set_yticks(np.arange(len(table)), [str(m) for m in table.index], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(column, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
    for ax in axes.ravel()[len(columns) :]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(
    results: pd.DataFrame,
    folder: str | Path,
    *,
    title: str = "tastebud evaluation",
    dataset: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``report.md``, ``metrics.png`` and ``results.json`` to ``folder``.

    ``results`` is the tidy output of :func:`~tastebud.evaluation.evaluate`.
    """
    out = output_folder(folder)
    board = leaderboard(results)
    protocol = results.attrs.get("protocol", {})
    paths = {
        "markdown": out / "report.md",
        "plot": out / "metrics.png",
        "json": out / "results.json",
    }
    _plot(board, paths["plot"])
    lines = [f"# {title}", ""]
    if dataset:
        lines += ["## Data", ""]
        lines += [f"- {key}: {value}" for key, value in dataset.items()]
        lines.append("")
    if protocol:
        lines += ["## Protocol", ""]
        lines += [f"- {key}: {value}" for key, value in protocol.items()]
        lines.append("")
    lines += ["## Results", "", markdown_table(board), "", "![metrics](metrics.png)", ""]
    paths["markdown"].write_text("\n".join(lines))
    payload = {
        "title": title,
        "dataset": dataset or {},
        "protocol": protocol,
        "results": results.to_dict(orient="records"),
    }
    paths["json"].write_text(to_json(payload))
    return paths
