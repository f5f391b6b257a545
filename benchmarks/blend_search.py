"""Blend's weight search: blending the members' best items (with the exactness bound) against
blending the whole catalogue, on one block of standardized member scores.

`Blend.fit` scores a block of validation users with every member and ranks 66 weightings
(3 members, steps of 0.1). The union search ranks each weighting over the members' 100 best
items per user and falls back to the whole row where the bound does not prove the answer;
both give the same lists (checked here). Members are `common + noise * own` normal scores:
real members agree on much (`noise` 0.3-1.0), independent random members never do (the
worst case: the bound rarely holds). Each configuration is timed `--repeats` times, both
ways, in one process.

Run: .venv/bin/python benchmarks/blend_search.py [--items 50000] [--repeats 3]
Writes benchmarks/results/blend_search.{json,md}.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _results import write_results
from tastebud.models import blend
from tastebud.models.base import _BATCH_CELLS

RESULTS = Path(__file__).parent / "results"


def members(rng: np.random.Generator, rows: int, items: int, noise: float | None) -> list:
    if noise is None:  # independent members
        return [rng.normal(size=(rows, items)) for _ in range(3)]
    common = rng.normal(size=(rows, items))
    return [common + noise * rng.normal(size=(rows, items)) for _ in range(3)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = max(1, min(1024, _BATCH_CELLS // args.items))  # Holdout.blocks' block
    grid = blend._simplex_grid(3, 10)
    rng = np.random.default_rng(0)
    found: list[dict[str, Any]] = []
    for noise in (0.3, 0.6, 1.0, None):
        block = members(rng, rows, args.items, noise)
        union, full = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fast = blend._blended_tops(block, grid, 10)
            union.append(time.perf_counter() - start)
            start = time.perf_counter()
            slow = [blend._blend_all(block, w, 10, np.arange(rows)) for w in grid]
            full.append(time.perf_counter() - start)
            assert all(np.array_equal(a, b) for a, b in zip(fast, slow, strict=True))
        ratios = [f / u for f, u in zip(full, union, strict=True)]
        found.append(
            {
                "members": "independent" if noise is None else f"noise {noise}",
                "union_s": union,
                "full_s": full,
                "speedup_median": float(np.median(ratios)),
                "speedup_min": float(min(ratios)),
                "speedup_max": float(max(ratios)),
            }
        )
        print(found[-1], flush=True)
    machine = f"{platform.platform()}, Python {platform.python_version()}"
    result = {"machine": machine, "rows": rows, "items": args.items, "weightings": len(grid),
              "runs": found}  # fmt: skip
    lines = [
        "# Blend's weight search: the members' best items against the whole catalogue",
        "",
        f"{machine}. One block of {rows} validation users x {args.items:,} items, 3 members, "
        f"{len(grid)} weightings, top 10; {args.repeats} runs each way in one process "
        "(`benchmarks/blend_search.py`). Both give the same lists.",
        "",
        "| members | union s (median) | full s (median) | speed-up median | min-max |",
        "|---|---:|---:|---:|---:|",
    ]
    for run in found:
        lines.append(
            f"| {run['members']} | {np.median(run['union_s']):.2f} | "
            f"{np.median(run['full_s']):.2f} | {run['speedup_median']:.1f}x | "
            f"{run['speedup_min']:.1f}-{run['speedup_max']:.1f}x |"
        )
    write_results(RESULTS, "blend_search", result, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
