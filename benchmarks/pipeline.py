"""The model alone against the pipeline the service serves, on ML-100K and Last.fm.

``evaluate(model)`` scores the model's own top-10; ``evaluate(model, pipeline=...)`` scores
the list the service would show the same user: their training history replayed through
:mod:`tastebud.pipeline` (generators, ranker, re-rankers) with live state built from the
training data as of the split. Rows:

- ``alone``: the model's own top-10;
- ``default``: the default pipeline (model 50, item-to-item 20, popular 20, new 10,
  demographic 50 candidates; no re-ranker that trades accuracy);
- ``diversity 0.3``: MMR diversity on (trades NDCG for intra-list diversity);
- ``cap 2/genre``: at most two items of a genre per list (ML-100K; Last.fm has no
  categories).

Protocols: ML-100K, all ratings, per-user random 80/20, test ratings >= 4 relevant; Last.fm
2K, per-user random 80/20, every test artist relevant. Seeds 0, 1, 2 (the split). For each
pipeline the mean of per-user NDCG@10 minus the model alone's, with the 95% interval of a
paired t-test over users (seed 0) and the mean and spread over the seeds.
The target: the default pipeline does not lose accuracy (its interval is not below 0).

Run: .venv/bin/python benchmarks/pipeline.py [--quick]
Writes benchmarks/results/pipeline{.quick}.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))

from _results import write_results
from tastebud.data import load_lastfm_2k, load_movielens_100k
from tastebud.evaluation import evaluate, paired_test
from tastebud.models import create
from tastebud.split import random_split

RESULTS = Path(__file__).parent / "results"
PIPELINES: dict[str, Any] = {
    "default": {},
    "diversity 0.3": {"pipeline": {"diversity": 0.3}},
    "cap 2/genre": {"pipeline": {"max_per_category": 2}},
}
COLUMNS = ("NDCG@10", "Recall@10", "ILD@10", "Novelty@10", "Coverage@10")


def run(dataset: str, models: list[str], seeds: list[int]) -> list[dict[str, Any]]:
    data = load_movielens_100k() if dataset == "ml-100k" else load_lastfm_2k()
    threshold = 4.0 if dataset == "ml-100k" else None
    pipelines = {
        name: cfg
        for name, cfg in PIPELINES.items()
        if dataset == "ml-100k" or "genre" not in name  # Last.fm: no categories
    }
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        split = random_split(data, 0.2, seed=seed)
        for name in models:
            t0 = time.perf_counter()
            model = create(name).fit(split.train)
            fit_s = time.perf_counter() - t0
            per_user: dict[str, pd.DataFrame] = {}
            variants = {"alone": None, **pipelines}
            for variant, cfg in variants.items():
                tables: dict[str, pd.DataFrame] = {}
                t1 = time.perf_counter()
                result = evaluate(
                    {variant: model},
                    split,
                    fit=False,
                    relevance_threshold=threshold,
                    per_user=tables,
                    pipeline=None if cfg is None else (cfg or True),
                    progress=False,
                )
                seconds = time.perf_counter() - t1
                per_user[variant] = tables[variant]
                values = result.set_index("metric")["value"]
                row = {
                    "dataset": dataset,
                    "seed": seed,
                    "model": name,
                    "variant": variant,
                    "fit_s": fit_s,
                    "lists_s": seconds,
                    **{c: float(values[c]) for c in COLUMNS if c in values},
                }
                if cfg is not None:
                    test = paired_test(per_user[variant], per_user["alone"], "NDCG@10")
                    row |= {
                        "ndcg_diff": test.difference,
                        "ci_low": test.ci_low,
                        "ci_high": test.ci_high,
                        "p": test.p_value,
                    }
                rows.append(row)
                print(
                    f"{dataset} seed {seed} {name:9s} {variant:14s} "
                    f"NDCG@10 {row['NDCG@10']:.4f} {seconds:.1f}s",
                    flush=True,
                )
    return rows


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    frame = pd.DataFrame(rows)
    lines = [
        "# The model alone vs the served pipeline",
        "",
        f"{meta['when']}, {meta['machine']}; `{meta['command']}`. Per-user random 80/20, "
        f"seeds {meta['seeds']}; ML-100K: test ratings >= 4 relevant.",
        "",
        "Mean over seeds (± standard deviation); ΔNDCG: pipeline minus the model alone, "
        "mean over seeds (± sd), and the 95% interval of the paired t-test over users of "
        "seed 0.",
        "",
        "| data | model | list | NDCG@10 | Recall@10 | ILD@10 | Novelty@10 | Coverage@10 "
        "| ΔNDCG@10 | 95% CI (seed 0) | lists (s) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    keys = ["dataset", "model", "variant"]
    for (dataset, model, variant), g in frame.groupby(keys, sort=False):

        def cell(col: str, g: pd.DataFrame = g) -> str:
            if col not in g or g[col].isna().all():
                return "–"
            return f"{g[col].mean():.4f} ± {g[col].std(ddof=0):.4f}"

        first = g[g["seed"] == g["seed"].min()].iloc[0]
        ci = f"[{first['ci_low']:+.4f}, {first['ci_high']:+.4f}]" if variant != "alone" else "–"
        diff = cell("ndcg_diff") if variant != "alone" else "–"
        lines.append(
            f"| {dataset} | {model} | {variant} | "
            + " | ".join(cell(c) for c in COLUMNS)
            + f" | {diff} | {ci} | {g['lists_s'].mean():.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, ML-100K, ALS only")
    args = parser.parse_args()
    seeds = [0] if args.quick else [0, 1, 2]
    plan = (
        {"ml-100k": ["als"]}
        if args.quick
        else {"ml-100k": ["als", "ease", "item-knn"], "lastfm": ["als", "item-knn"]}
    )
    rows: list[dict[str, Any]] = []
    for dataset, models in plan.items():
        rows += run(dataset, models, seeds)
    meta = {
        "when": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "command": "python benchmarks/pipeline.py" + (" --quick" if args.quick else ""),
        "seeds": seeds,
    }
    stem = "pipeline.quick" if args.quick else "pipeline"
    write_results(RESULTS, stem, {"meta": meta, "rows": rows}, markdown(rows, meta))
    print(markdown(rows, meta))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
