"""top_k: the compiled heap (rows of 1,024 columns and more in blocks, 32,768 and more
alone) beside the partition path it replaced there (``top_k(..., wide=False)``), on the
shapes the library meets: one row (the service), blocks of validation or evaluation users
(the lab, blend's weight search), catalogues from ML-100K's 1,682 items to 1M.

Scores: standard normal, 5% masked (-inf), and a tied variant (scores rounded to 8
distinct values: content models on a few shared terms). Each cell is the median of
``--repeats`` timed calls (after one warm-up call); the ratio is partition / heap, so
above 1 the heap is faster. Both paths give the same answer (checked on every cell).

Run: .venv/bin/python benchmarks/top_k.py [--repeats 15]
Writes benchmarks/results/top_k.{json,md}.
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
from tastebud.models.base import top_k

RESULTS = Path(__file__).parent / "results"
SHAPES = [  # rows, columns, k
    (1, 1_682, 10),
    (1, 17_632, 10),
    (1, 100_000, 10),
    (1, 1_000_000, 10),
    (1_024, 1_682, 10),
    (256, 17_632, 10),
    (256, 17_632, 100),
    (80, 100_000, 100),
    (8, 1_000_000, 10),
    (8, 1_000_000, 100),
]


def _median_ms(call: Any, repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def run(repeats: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    rows = []
    for n_rows, n_cols, k in SHAPES:
        for kind in ("random", "tied"):
            scores = rng.standard_normal((n_rows, n_cols))
            if kind == "tied":
                scores = np.round(scores * 2) / 2
            scores[rng.random(scores.shape) < 0.05] = -np.inf
            heap, part = top_k(scores, k), top_k(scores, k, wide=False)
            assert np.array_equal(heap[0], part[0])
            row = {
                "rows": n_rows,
                "columns": n_cols,
                "k": k,
                "scores": kind,
                "partition_ms": _median_ms(lambda s=scores, k=k: top_k(s, k, wide=False), repeats),
                "top_k_ms": _median_ms(lambda s=scores, k=k: top_k(s, k), repeats),
            }
            row["ratio"] = row["partition_ms"] / row["top_k_ms"]
            rows.append(row)
            print(row, flush=True)
    return rows


def _markdown(result: dict[str, Any]) -> str:
    lines = [
        "# top_k: compiled heap vs partition",
        "",
        f"{result['platform']}; median of {result['repeats']} calls per cell. "
        "`top_k` is the library's default (the heap where it applies, else the partition); "
        "ratio = partition / top_k.",
        "",
        "| rows | columns | k | scores | partition ms | top_k ms | ratio |",
        "|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['rows']:,} | {r['columns']:,} | {r['k']} | {r['scores']} | "
            f"{r['partition_ms']:.3f} | {r['top_k_ms']:.3f} | {r['ratio']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    result = {
        "platform": f"{platform.platform()}, Python {platform.python_version()}",
        "repeats": args.repeats,
        "rows": run(args.repeats),
    }
    write_results(RESULTS, "top_k", result, _markdown(result))


if __name__ == "__main__":
    main()
