"""Recommend through the vector index: the factor models over a catalogue of 1M items.

A power-law synthetic data set (`tastebud.data.synthetic`, latent taste clusters) with 1M
items is fitted once per model at fixed settings (ALS reg 30; the retrieval does not
depend on how the factors were chosen). Then, for 1,000 random users with history, the
top-10 lists are asked twice: with `index="exact"` (every item scored, blocked) and with
`index="ann"` (over `[v_i, b_i]`: the norm-pruned exact search where it scores at most 5% of
the items for sampled users, else faiss IVF; `tastebud.models._retrieval`). Reported: the
time of each (median and spread over `--repeats` runs; the index build is timed apart,
once per model, as it happens on the first list), and recall@10 of the searched lists
against the exact ones. Target (issue 19): < 1 s for 1,000 users, recall@10 >= 0.95.

Run: .venv/bin/python benchmarks/retrieval.py [--items 1000000] [--users 100000]
     [--interactions 5000000] [--models als,bpr] [--repeats 3]
Writes benchmarks/results/retrieval.{json,md} (retrieval.quick.* with --quick: 100K items).
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
from tastebud.data.synthetic import synthetic
from tastebud.models import create

RESULTS = Path(__file__).parent / "results"
K = 10
SETTINGS = {"als": {"reg": 30.0}, "bpr": {"n_epochs": 20}, "svd": {"n_epochs": 20}}


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = [
        len(set(f[f >= 0]) & set(t[t >= 0])) / max((t >= 0).sum(), 1)
        for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(hits))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--interactions", type=int, default=5_000_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--models", default="als,bpr")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="100K items, 20K users, 1M rows")
    args = parser.parse_args()
    if args.quick:
        args.items, args.users, args.interactions = 100_000, 20_000, 1_000_000
    start = time.perf_counter()
    data = synthetic(
        n_users=args.users,
        n_items=args.items,
        n_interactions=args.interactions,
        ratings="svd" in args.models.split(","),
        timestamps=False,
        features=False,
        seed=0,
    )
    made = time.perf_counter() - start
    print(
        f"data: {data.n_users:,} users, {data.n_items:,} items, {len(data):,} rows ({made:.1f} s)"
    )
    rng = np.random.default_rng(0)
    active = np.flatnonzero(np.diff(data.matrix("binary").indptr) > 0)
    users = np.sort(rng.choice(active, min(args.queries, len(active)), replace=False))
    rows, record, backends = {}, {}, {}
    for name in args.models.split(","):
        t0 = time.perf_counter()
        model = create(name, index="exact", **SETTINGS.get(name, {})).fit(data)
        fit_s = time.perf_counter() - t0
        print(f"{name}: fitted in {fit_s:.0f} s")
        exact_s, ann_s = [], []
        truth = found = None
        for _ in range(args.repeats):
            model.set_params(index="exact")
            t0 = time.perf_counter()
            truth, _ = model.recommend_indices(users, K, exclude=model.seen_)
            exact_s.append(time.perf_counter() - t0)
        model.set_params(index="ann")
        t0 = time.perf_counter()
        backend = model.vector_index().backend
        build_s = time.perf_counter() - t0
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            found, _ = model.recommend_indices(users, K, exclude=model.seen_)
            ann_s.append(time.perf_counter() - t0)
        hit = recall(found, truth)
        print(
            f"{name}: exact {np.median(exact_s):.2f} s, ann {np.median(ann_s):.3f} s "
            f"({backend}, index built in {build_s:.1f} s), recall@{K} {hit:.4f}"
        )
        rows[name] = {
            "exact s (median)": float(np.median(exact_s)),
            "ann s (median)": float(np.median(ann_s)),
            "ann s (max)": float(np.max(ann_s)),
            f"recall@{K}": hit,
            "index build s": build_s,
            "fit s": fit_s,
        }
        backends[name] = backend
        record[name] = {
            "backend": backend,
            "exact_s": exact_s,
            "ann_s": ann_s,
            "build_s": build_s,
            "fit_s": fit_s,
            f"recall@{K}": hit,
        }
    table = pd.DataFrame(rows).T
    meta = (
        f"{platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs. "
        f"Synthetic: {data.n_users:,} users, {data.n_items:,} items, {len(data):,} "
        f"interactions; {len(users):,} users' top-{K} per run, {args.repeats} runs. "
        'Target: ann < 1 s per 1,000 users, recall@10 >= 0.95. The search `index="ann"` '
        "chose: " + ", ".join(f"{m} {b}" for m, b in backends.items()) + " (pruned: the "
        "norm-pruned exact search; faiss: the inverted file)."
    )
    result = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "items": data.n_items,
        "users": data.n_users,
        "interactions": len(data),
        "queries": len(users),
        "models": record,
    }
    markdown = "\n".join(
        ["# Retrieval through the vector index", "", meta, "", markdown_table(table), ""]
    )
    write_results(RESULTS, "retrieval.quick" if args.quick else "retrieval", result, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
