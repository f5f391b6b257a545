"""Writing a benchmark's results: ``<stem>.json`` and ``<stem>.md`` in the results folder,
each replaced whole (a run stopped half-way never leaves a half-written file)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_results(out: Path, stem: str, result: dict[str, Any], markdown: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for path, text in (
        (out / f"{stem}.json", json.dumps(result, indent=2) + "\n"),
        (out / f"{stem}.md", markdown),
    ):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)


def markdown_table(table: Any) -> str:
    """A pandas table (index = model) as a markdown table with 4-decimal numbers."""
    header = "| model | " + " | ".join(map(str, table.columns)) + " |"
    lines = [header, "|---|" + "---:|" * len(table.columns)]
    for name, row in table.iterrows():
        cells = [f"{v:.4f}" if abs(v) < 100 else f"{v:.0f}" for v in row.to_numpy(dtype=float)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
