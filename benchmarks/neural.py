"""The deep-learning models against the targets of the neural-quality issue, with defaults.

Top-N protocols (per-user random 80/20, full ranking with training items excluded, @10;
seeds 0, 1, 2 unless ``--seeds`` says otherwise; mean and standard deviation over seeds):

``ml-all``
    ML-100K, every rating in train, test ratings >= 4 relevant (timestamps kept);
``ml-pos``
    ML-100K, ratings >= 4 only, in train and test, **timestamps dropped** (the models that
    read recent items must fall back to a random order and still work);
``lastfm``
    Last.fm 2K play counts (no timestamps in the data), every test artist relevant.

Each neural model (NCF NeuMF, two-tower, hybrid BPR, SASRec, BERT4Rec) runs beside
popularity, ALS and EASE on the same splits, and the table computes the issue's ratios:
every neural model / popularity (target >= 1.3), two-tower / ALS (>= 0.9), NCF / EASE
(>= 0.85), hybrid BPR / ALS (>= 0.9; every test user of these splits is warm).

``next``: temporal leave-last-out on all ML-100K ratings (each user's latest rating is the
test item; full ranking), SASRec and BERT4Rec with random_state 0, 1, 2 beside popularity,
EASE, ALS and the two-tower model (its default set-like history, and ``history_order=
"time"``: next-item samples); target BERT4Rec / SASRec >= 0.95.

``fit_seconds`` is one plain fit, each model alone on its core (two tasks may run side by
side, one per core: ``--tasks ml-all`` in one process, ``--tasks lastfm`` in another); the
target is under 5 minutes for every neural model on ML-100K on 2 CPU cores.

Run: .venv/bin/python benchmarks/neural.py [--tasks ml-all,ml-pos,lastfm,next] [--seeds 0,1,2]
(``--models hybrid-bpr``: rerun one model and merge it into a top-N task's results)
Each task writes benchmarks/results/neural.<task>.json; every run rewrites neural.{json,md}
from all the task files there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))

from _results import markdown_table, write_results
from tastebud import ModelWarning
from tastebud.data import Dataset, load_lastfm_2k, load_movielens_100k
from tastebud.evaluation import evaluate
from tastebud.models import create
from tastebud.split import Split, leave_last_out, random_split

RESULTS = Path(__file__).parent / "results"
REFERENCES = ("popularity", "als", "ease")
NEURAL = ("ncf", "two-tower", "hybrid-bpr", "sasrec", "bert4rec")
#: model -> (reference, the issue's minimum ratio to it)
TARGETS = {"two-tower": ("als", 0.9), "ncf": ("ease", 0.85), "hybrid-bpr": ("als", 0.9)}
POPULARITY_RATIO = 1.3
TITLES = {
    "ml-all": "ML-100K, all ratings, test ratings >= 4 relevant",
    "ml-pos": "ML-100K, ratings >= 4 only, no timestamps",
    "lastfm": "Last.fm 2K, play counts (no timestamps)",
    "next": "ML-100K next item: temporal leave-last-out",
}


def _data(task: str) -> tuple[Dataset, float | None]:
    if task == "ml-all":
        return load_movielens_100k(), 4.0
    if task == "ml-pos":
        positives = load_movielens_100k().to_implicit(4.0)
        return dataclasses.replace(positives, timestamp=None), None
    return load_lastfm_2k(), None


def _run(name: str, split: Split, threshold: float | None, **params: Any) -> dict[str, Any]:
    model = create(name, **params)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluate(
            {name: model},
            split,
            k=10,
            metrics=["ndcg", "hit_rate", "recall"],
            relevance_threshold=threshold,
            beyond_accuracy=False,
            progress=False,
        )
    row = result.set_index("metric")["value"]
    out = {
        "NDCG@10": float(row["NDCG@10"]),
        "Recall@10": float(row["Recall@10"]),
        "fit_seconds": float(row["fit_seconds"]),
        "best_epoch": getattr(model, "best_epoch_", None),
        "warnings": sorted(
            {str(w.message)[:100] for w in caught if issubclass(w.category, ModelWarning)}
        ),
    }
    print(
        f"  {name} {params}: NDCG@10 {out['NDCG@10']:.4f}, fit {out['fit_seconds']:.0f}s",
        file=sys.stderr,
        flush=True,
    )
    return out


def top_n(task: str, seeds: list[int], only: list[str] | None = None) -> dict[str, Any]:
    """Every model on each seed's split; with ``only``, just those models, merged into the
    task's existing results (same seeds) -- to rerun a model after a change to it."""
    data, threshold = _data(task)
    runs: dict[str, list[dict[str, Any]]] = {}
    for seed in seeds:
        split = random_split(data, 0.2, seed=seed)
        for name in only or REFERENCES + NEURAL:
            runs.setdefault(name, []).append(_run(name, split, threshold))
    if only:
        kept = json.loads((RESULTS / f"neural.{task}.json").read_text())
        if kept["seeds"] != seeds:
            raise SystemExit(f"--models: neural.{task}.json has seeds {kept['seeds']}")
        return {"seeds": seeds, "runs": kept["runs"] | runs, "rerun": only}
    return {"seeds": seeds, "runs": runs}


def next_item(seeds: list[int]) -> dict[str, Any]:
    split = leave_last_out(load_movielens_100k(), 1)
    runs: dict[str, list[dict[str, Any]]] = {}
    for name in REFERENCES:
        runs[name] = [_run(name, split, None)]
    for name in ("sasrec", "bert4rec"):
        runs[name] = [_run(name, split, None, random_state=seed) for seed in seeds]
    # two-tower reads its history as a set by default; "time" trains on next-item samples
    runs["two-tower"] = [_run("two-tower", split, None)]
    runs["two-tower (history_order=time)"] = [_run("two-tower", split, None, history_order="time")]
    return {"seeds": seeds, "runs": runs}


def _worst(runs: list[dict[str, Any]], reference: list[dict[str, Any]]) -> float:
    """The lowest per-seed ratio of NDCG@10 to the reference's on the same split."""
    return min(r["NDCG@10"] / q["NDCG@10"] for r, q in zip(runs, reference, strict=True))


def _summary(task: str, result: dict[str, Any]) -> pd.DataFrame:
    """Mean and spread per model, and the issue's ratios (means over seeds)."""
    runs = result["runs"]
    mean = {name: float(np.mean([r["NDCG@10"] for r in rs])) for name, rs in runs.items()}
    rows = {}
    for name, rs in runs.items():
        ndcg = [r["NDCG@10"] for r in rs]
        row: dict[str, Any] = {
            "NDCG@10": mean[name],
            "std": float(np.std(ndcg)),
            "Recall@10": float(np.mean([r["Recall@10"] for r in rs])),
            "fit_seconds": float(np.mean([r["fit_seconds"] for r in rs])),
            "x popularity": mean[name] / mean["popularity"],
        }
        if task == "next":
            row["x sasrec"] = mean[name] / mean["sasrec"] if "sasrec" in mean else np.nan
        else:  # the worst seed's ratio too: a target met on the mean by a hair is not met
            row["worst seed x popularity"] = _worst(rs, runs["popularity"])
            if name in TARGETS:
                reference, _ = TARGETS[name]
                row["x target reference"] = mean[name] / mean[reference]
                row["worst seed x reference"] = _worst(rs, runs[reference])
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def _verdict(mean: float, worst: float, target: float) -> str:
    if worst >= target:
        return "met"
    return "met on the mean, not on every seed" if mean >= target else "NOT met"


def _verdicts(task: str, table: pd.DataFrame) -> list[str]:
    lines = []
    if task == "next":
        ratio = table.loc["bert4rec", "x sasrec"]
        lines.append(
            f"- BERT4Rec / SASRec = {ratio:.3f} (target >= 0.95): "
            f"{'met' if ratio >= 0.95 else 'NOT met'}"
        )
        return lines
    for name in NEURAL:
        ratio, worst = table.loc[name, ["x popularity", "worst seed x popularity"]]
        text = f"- {name}: {ratio:.3f}x popularity, worst seed {worst:.3f}x (target >= "
        text += f"{POPULARITY_RATIO}): {_verdict(ratio, worst, POPULARITY_RATIO)}"
        if name in TARGETS:
            reference, target = TARGETS[name]
            r, w = table.loc[name, ["x target reference", "worst seed x reference"]]
            text += f"; {r:.3f}x {reference}, worst seed {w:.3f}x (target >= {target}): "
            text += _verdict(r, w, target)
        lines.append(text)
    return lines


def _markdown() -> str:
    lines = ["# Neural models against the issue's targets", ""]
    for task, title in TITLES.items():
        path = RESULTS / f"neural.{task}.json"
        if not path.exists():
            continue
        result = json.loads(path.read_text())
        table = _summary(task, result)
        lines += [f"## {title}", "", f"seeds {result['seeds']}; {result['meta']}", ""]
        lines += [markdown_table(table), "", *_verdicts(task, table), ""]
        warned = {
            n: sorted({w for r in rs for w in r["warnings"]}) for n, rs in result["runs"].items()
        }
        warned = {n: w for n, w in warned.items() if w}
        if warned:
            lines += [f"Warnings at fit: {warned}", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", default="ml-all,ml-pos,lastfm,next")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--models", default="", help="rerun only these models, merged into the task files"
    )
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    for task in filter(None, args.tasks.split(",")):  # "": only rewrite neural.md
        if task not in TITLES:
            parser.error(f"unknown task {task!r}; tasks: {', '.join(TITLES)}")
        started = time.perf_counter()
        only = args.models.split(",") if args.models else None
        if task == "next" and only:
            parser.error("--models reruns top-N tasks only")
        result = next_item(seeds) if task == "next" else top_n(task, seeds, only)
        result["meta"] = {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": len(os.sched_getaffinity(0)),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "seconds": round(time.perf_counter() - started, 1),
        }
        path = RESULTS / f"neural.{task}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
    merged = {
        task: json.loads((RESULTS / f"neural.{task}.json").read_text())
        for task in TITLES
        if (RESULTS / f"neural.{task}.json").exists()
    }
    markdown = _markdown()
    write_results(RESULTS, "neural", merged, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
