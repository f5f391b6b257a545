"""Tuning: Optuna's TPE with pruning (the default of ``tastebud.tuning.tune``) beside seeded
random search (``sampler="random", pruning=False``: what ``tune`` did before TPE), at the same
number of trials.

Protocol, per data set: one outer per-user random 80/20 split (seed 0). Each search sees only
the 80% training part and carves its own validation split from it (per-user random 20%, the
search's seed). For every model, arm and seed (0, 1, 2 by default) it reports:

- the best validation score the search found (its own split; both arms of one seed share it),
- the test score of the chosen setting, fitted on the whole training part and scored on the
  held-out 20% (full ranking, training items excluded, every test item relevant, @10; RMSE on
  every test rating for SVD),
- the search's wall time and its number of pruned trials.

Means and standard deviations are over the seeds; "TPE >= random" counts the seeds where TPE's
score is at least random search's (paired: same seed, same validation split).

Data: ML-100K ratings >= 4 as implicit positives (EASE, item-kNN, ALS on NDCG@10), ML-100K
ratings (SVD on RMSE), Last.fm 2K play counts (item-kNN, ALS on NDCG@10; EASE is left out
there: its 5,000-item inversion costs seconds per trial, see peers.md).

Cost: 20 trials x 3 seeds x 2 arms per model; the recorded run took 67 minutes on 2 cores
shared with other jobs, most of it Last.fm (full-catalogue ranking, and ALS's ``reg="auto"``
default trial); ``--tasks ml-100k-positives,ml-100k-ratings`` takes about 10 minutes.
``--quick`` runs the built-in sample data with 6 trials and one seed (a smoke run);
``--trials``, ``--seeds``, ``--tasks`` and ``--arms`` (add ``tpe-no-pruning`` to separate
TPE from pruning) change it.

Run: .venv/bin/python benchmarks/tuning.py [--quick]
Writes benchmarks/results/tuning.{json,md} (``tuning.quick.*`` with --quick).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))

from _results import write_results
from tastebud.data import Dataset, load_lastfm_2k, load_movielens_100k
from tastebud.data.sample import load_sample
from tastebud.evaluation import evaluate, leaderboard
from tastebud.models import create
from tastebud.split import random_split
from tastebud.tuning import tune

RESULTS = Path(__file__).parent / "results"
ARMS: dict[str, dict[str, Any]] = {
    "random": {"sampler": "random", "pruning": False},
    "tpe": {"sampler": "tpe", "pruning": True},
    "tpe-no-pruning": {"sampler": "tpe", "pruning": False},
}


def _ml_positives() -> Dataset:
    return load_movielens_100k().to_implicit(4.0)


# task -> (loader, models, metric)
TASKS: dict[str, tuple[Callable[[], Dataset], list[str], str]] = {
    "ml-100k-positives": (_ml_positives, ["ease", "item-knn", "als"], "ndcg"),
    "ml-100k-ratings": (load_movielens_100k, ["svd"], "rmse"),
    "lastfm-2k": (load_lastfm_2k, ["item-knn", "als"], "ndcg"),
}
QUICK_TASKS: dict[str, tuple[Callable[[], Dataset], list[str], str]] = {
    "sample-positives": (lambda: load_sample().to_implicit(4.0), ["ease", "item-knn"], "ndcg"),
    "sample-ratings": (load_sample, ["svd"], "rmse"),
}


def run_one(
    model: str, split: Any, metric: str, arm: str, seed: int, n_trials: int
) -> dict[str, Any]:
    """One search, then the chosen setting fitted on the training part and scored on test."""
    start = time.perf_counter()
    result = tune(model, split.train, n_trials=n_trials, metric=metric, seed=seed,
                  progress=False, **ARMS[arm])  # fmt: skip
    seconds = time.perf_counter() - start
    board = leaderboard(
        evaluate(
            {model: result.best_model()},
            split,
            metrics=["ndcg"],
            beyond_accuracy=False,
            progress=False,
        )
    )
    test = float(board[result.metric].iloc[0])
    return {
        "model": model,
        "arm": arm,
        "seed": seed,
        "metric": result.metric,
        "validation": result.best_score,
        "test": test,
        "seconds": seconds,
        "pruned": result.n_pruned,
        "trials": len(result.trials),
        "best_params": dict(result.best_params),
    }


def summarize(rows: pd.DataFrame, arms: list[str]) -> pd.DataFrame:
    """Mean and spread over seeds per model and arm, with the paired count against random."""
    out = []
    for (model, arm), group in rows.groupby(["model", "arm"], sort=False):
        lower = group["metric"].iloc[0] in ("RMSE", "MAE")
        entry: dict[str, Any] = {
            "model": model,
            "arm": arm,
            "metric": group["metric"].iloc[0],
            "validation mean": group["validation"].mean(),
            "validation sd": group["validation"].std(ddof=1) if len(group) > 1 else 0.0,
            "test mean": group["test"].mean(),
            "test sd": group["test"].std(ddof=1) if len(group) > 1 else 0.0,
            "seconds mean": group["seconds"].mean(),
            "pruned mean": group["pruned"].mean(),
        }
        if arm != "random" and "random" in arms:
            peer = rows[(rows.model == model) & (rows.arm == "random")].set_index("seed")
            mine = group.set_index("seed")
            seeds = mine.index.intersection(peer.index)
            for part in ("validation", "test"):
                diff = mine.loc[seeds, part] - peer.loc[seeds, part]
                wins = int(((-diff if lower else diff) >= 0).sum())
                entry[f"{part}: >= random"] = f"{wins}/{len(seeds)}"
            ratio = mine.loc[seeds, "seconds"] / peer.loc[seeds, "seconds"]
            entry["time / random"] = float(ratio.mean())
        out.append(entry)
    return pd.DataFrame(out)


def markdown(sections: dict[str, pd.DataFrame], meta: dict[str, Any]) -> str:
    lines = [
        "# Tuning: Optuna TPE + pruning vs seeded random search, same number of trials",
        "",
        f"{meta['trials']} trials per search, seeds {meta['seeds']}; validation carved from the "
        "training part only; test = the held-out 20%, the chosen setting fitted on the whole "
        "training part. Mean ± sd over seeds.",
        "",
        f"Machine: {meta['platform']}, {meta['cpus']} CPUs, load average "
        f"{meta['load_before']} before / {meta['load_after']} after; optuna "
        f"{meta['optuna']}.",
        "",
    ]
    for task, table in sections.items():
        lines += [f"## {task}", ""]
        lines += [
            "| model | arm | best validation | test | tuning s | pruned | "
            "validation >= random | test >= random | time / random |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in table.to_dict(orient="records"):
            metric = row["metric"]
            lines.append(
                f"| {row['model']} ({metric}) | {row['arm']} "
                f"| {row['validation mean']:.4f} ± {row['validation sd']:.4f} "
                f"| {row['test mean']:.4f} ± {row['test sd']:.4f} "
                f"| {row['seconds mean']:.1f} | {row['pruned mean']:.1f} "
                f"| {_cell(row.get('validation: >= random'))} "
                f"| {_cell(row.get('test: >= random'))} | {_cell(row.get('time / random'))} |"
            )
        lines.append("")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    """A summary cell: empty for the random arm itself (NaN once in a table)."""
    if value is None or value != value:
        return ""
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _warm_up(models: set[str]) -> None:
    """Compile numba kernels (SVD, item-kNN) before anything is timed, so the first arm run
    does not pay for them."""
    tiny = load_sample(60)
    for name in models:
        create(name).fit(tiny)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sample data, 6 trials, 1 seed")
    parser.add_argument("--trials", type=int, default=None, help="trials per search (20)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..n-1 (3)")
    parser.add_argument("--tasks", default=None, help=f"comma list of {', '.join(TASKS)}")
    parser.add_argument("--arms", default="random,tpe", help=f"comma list of {', '.join(ARMS)}")
    args = parser.parse_args()
    tasks = QUICK_TASKS if args.quick else TASKS
    if args.tasks:
        tasks = {name: TASKS[name] for name in args.tasks.split(",")}
    n_trials = args.trials or (6 if args.quick else 20)
    seeds = list(range(args.seeds or (1 if args.quick else 3)))
    arms = args.arms.split(",")
    unknown = set(arms) - set(ARMS)
    if unknown:
        parser.error(f"unknown arms {sorted(unknown)}")
    _warm_up({model for _, models, _ in tasks.values() for model in models})
    meta: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "optuna": optuna.__version__,
        "trials": n_trials,
        "seeds": seeds,
        "arms": {arm: ARMS[arm] for arm in arms},
        "quick": args.quick,
        "load_before": [round(v, 1) for v in os.getloadavg()],
    }
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    sections: dict[str, pd.DataFrame] = {}
    for task, (loader, models, metric) in tasks.items():
        split = random_split(loader(), 0.2, seed=0)
        task_rows = []
        for model in models:
            for seed in seeds:
                for arm in arms:
                    row = run_one(model, split, metric, arm, seed, n_trials) | {"task": task}
                    task_rows.append(row)
                    print(
                        f"{task} {model} seed {seed} {arm}: validation {row['validation']:.4f} "
                        f"test {row['test']:.4f} {row['seconds']:.1f}s pruned {row['pruned']}",
                        file=sys.stderr,
                    )
        rows += task_rows
        sections[task] = summarize(pd.DataFrame(task_rows), arms)
        # Written after every task: a run stopped half-way keeps the tasks it finished.
        meta["load_after"] = [round(v, 1) for v in os.getloadavg()]
        meta["total_seconds"] = round(time.perf_counter() - started, 1)
        meta["tasks_done"] = list(sections)
        text = markdown(sections, meta) + f"\nWall time: {meta['total_seconds']:.0f} s.\n"
        payload = {
            "meta": meta,
            "runs": rows,
            "summary": {k: v.to_dict(orient="records") for k, v in sections.items()},
        }
        write_results(RESULTS, "tuning.quick" if args.quick else "tuning", payload, text)
    print(text)


if __name__ == "__main__":
    main()
