"""ALS ``reg="auto"``: the warm-started search of large data against the cold one.

From a million training interactions on, each trial of the λ search after the first
starts from the factors of the nearest λ tried and runs 3 sweeps (``_WARM_SEARCH_FROM``
in ``tastebud.models.factorization``). The reference data are far smaller, so the warm
search is forced on here to check, where the cold one is affordable, that it chooses the
same λ: ML-100K ratings >= 4 as positives and Last.fm 2K play counts, per-user random
80/20 splits (seeds 0-2), NDCG@10 of the refitted model on the test part, and the search's
time.

Run: .venv/bin/python benchmarks/als_warm_search.py   (~3 min)
Writes benchmarks/results/als_warm_search.{json,md}.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _results import write_results
from tastebud.data import load_lastfm_2k, load_movielens_100k
from tastebud.evaluation import evaluate
from tastebud.models import create, factorization
from tastebud.split import random_split

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    datasets = {
        "ML-100K positives": load_movielens_100k().to_implicit(4.0),
        "Last.fm 2K": load_lastfm_2k(),
    }
    rows = []
    for name, data in datasets.items():
        for seed in range(3):
            split = random_split(data, 0.2, seed=seed)
            for mode, threshold in (("cold", 10**15), ("warm", 0)):
                factorization._WARM_SEARCH_FROM = threshold
                start = time.perf_counter()
                model = create("als").fit(split.train)
                seconds = time.perf_counter() - start
                result = evaluate({"als": model}, split, k=10, metrics=["ndcg"], fit=False)
                ndcg = float(result[result["metric"] == "NDCG@10"]["value"].iloc[0])
                rows.append(
                    {
                        "data": name,
                        "seed": seed,
                        "search": mode,
                        "reg": model.reg_,
                        "ndcg@10": ndcg,
                        "fit_s": seconds,
                    }
                )
                print(rows[-1], flush=True)
    lines = [
        "# ALS reg='auto': warm-started search vs cold",
        "",
        "Per-user random 80/20, seeds 0-2; the warm search forced on (it starts at 1M "
        "training interactions). λ chosen, NDCG@10 on the test part, fit time with the search.",
        "",
        "| data | seed | λ cold | λ warm | NDCG@10 cold | NDCG@10 warm | fit s cold | fit s warm |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in datasets:
        for seed in range(3):
            cold, warm = (
                next(
                    r for r in rows if r["data"] == name and r["seed"] == seed and r["search"] == m
                )
                for m in ("cold", "warm")
            )
            lines.append(
                f"| {name} | {seed} | {cold['reg']:.1f} | {warm['reg']:.1f} | "
                f"{cold['ndcg@10']:.4f} | {warm['ndcg@10']:.4f} | {cold['fit_s']:.1f} | "
                f"{warm['fit_s']:.1f} |"
            )
        pairs = [
            (r["ndcg@10"], w["ndcg@10"])
            for r in rows
            for w in rows
            if r["data"] == w["data"] == name
            and r["seed"] == w["seed"]
            and r["search"] == "cold"
            and w["search"] == "warm"
        ]
        diff = np.array([w - c for c, w in pairs])
        lines.append(
            f"| {name} | mean | | | | warm - cold: {diff.mean():+.4f} ± {diff.std():.4f} | | |"
        )
    write_results(RESULTS, "als_warm_search", {"rows": rows}, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
