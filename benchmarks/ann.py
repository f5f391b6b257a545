"""The ANN index on a synthetic catalog of 1M items: recall@100 against exact search, and the
latency of one query.

Item vectors are what a trained two-tower model gives: 64-d, L2-normalized, grouped around
2,000 topic centers (each item a center plus noise). Queries are user vectors: a mix of two
topics plus noise, normalized. Exact top-100 comes from numpy (blocked matrix products).
`tastebud.ann.VectorIndex` (faiss IVF-Flat, 4 * sqrt(n) cells) is built once and queried one
query at a time (how a service asks) at several probe counts. The target: recall@100 >= 0.95
and p99 latency under 5 ms. A second catalog of i.i.d. Gaussian vectors (no structure at
all, the worst case for any index) is reported as a stress case.

Run: .venv/bin/python benchmarks/ann.py [--items 1000000] [--queries 1000]
Writes benchmarks/results/ann.{json,md} (ann.quick.* with --quick: 100K items).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))

from _results import markdown_table, write_results
from tastebud.ann import VectorIndex

RESULTS = Path(__file__).parent / "results"
K = 100


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def catalog(n_items: int, n_queries: int, d: int = 64, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(2_000, d))
    items = np.empty((n_items, d), dtype=np.float32)
    for start in range(0, n_items, 100_000):
        n = min(100_000, n_items - start)
        topic = centers[rng.integers(0, len(centers), n)]
        items[start : start + n] = _unit(topic + 0.7 * rng.normal(size=(n, d)))
    mix = (
        centers[rng.integers(0, len(centers), n_queries)]
        + centers[rng.integers(0, len(centers), n_queries)]
    )
    queries = _unit(mix + 0.7 * rng.normal(size=(n_queries, d)))
    return items, queries


def unstructured(
    n_items: int, n_queries: int, d: int = 64, seed: int = 1
) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    items = np.empty((n_items, d), dtype=np.float32)
    for start in range(0, n_items, 100_000):
        n = min(100_000, n_items - start)
        items[start : start + n] = _unit(rng.normal(size=(n, d)))
    return items, _unit(rng.normal(size=(n_queries, d)))


def _latency_rows(
    label: str, items: np.ndarray, queries: np.ndarray, probes: tuple[int, ...]
) -> dict[str, dict[str, float]]:
    exact = VectorIndex(items, backend="exact")
    truth, _ = exact.search(queries, K)
    single = []
    for q in queries[:50]:
        t0 = time.perf_counter()
        exact.search(q[None], K)
        single.append(time.perf_counter() - t0)
    rows = {
        f"{label}: exact (numpy)": {
            "recall@100": 1.0,
            "p50 ms": float(np.percentile(single, 50) * 1000),
            "p99 ms": float(np.percentile(single, 99) * 1000),
            "build s": 0.0,
        }
    }
    t0 = time.perf_counter()
    index = VectorIndex(items, backend="faiss")
    build_seconds = time.perf_counter() - t0
    for n_probes in probes:
        index.probes = n_probes
        index.search(queries[:10], K)  # warm
        latencies, found = [], []
        for q in queries:
            t0 = time.perf_counter()
            idx, _ = index.search(q[None], K)
            latencies.append(time.perf_counter() - t0)
            found.append(idx[0])
        recall = np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)])
        name = f"{label}: faiss IVF-Flat, {index.lists} cells, {n_probes} probes"
        rows[name] = {
            "recall@100": float(recall),
            "p50 ms": float(np.percentile(latencies, 50) * 1000),
            "p99 ms": float(np.percentile(latencies, 99) * 1000),
            "build s": build_seconds,
        }
        print(f"{name}: recall {recall:.4f}, p99 {rows[name]['p99 ms']:.2f} ms", file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--quick", action="store_true", help="100K items, 200 queries")
    args = parser.parse_args()
    n_items, n_queries = (100_000, 200) if args.quick else (args.items, args.queries)
    rows = _latency_rows("clustered", *catalog(n_items, n_queries), probes=(8, 16, 32, 64))
    rows |= _latency_rows(
        "i.i.d. Gaussian", *unstructured(n_items, n_queries // 5), probes=(32, 256)
    )
    table = pd.DataFrame.from_dict(rows, orient="index")
    meta = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": len(os.sched_getaffinity(0)),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "items": n_items,
        "queries": n_queries,
        "dimensions": 64,
    }
    markdown = "\n".join(["# ANN index", "", f"{meta}", "", markdown_table(table), ""])
    result = {"meta": meta, "rows": table.round(6).reset_index(names="index").to_dict("records")}
    write_results(RESULTS, "ann.quick" if args.quick else "ann", result, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
