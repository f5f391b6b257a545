"""The deep-learning models beside the rest of tastebud, on two ML-100K protocols.

1. Next item: temporal leave-last-out on all ML-100K ratings -- each user's latest rating is
   the test item, ranked among all items with the user's training items excluded; NDCG@10
   and HitRate@10 from ``tastebud.evaluation.evaluate``. Every non-sequential model of the
   library that ranks (popularity, item-kNN, EASE, ALS, BPR, feature-mf, history-classifier)
   runs beside SASRec, BERT4Rec, NCF (NeuMF), the hybrid BPR network and the two-tower model.
   The target: SASRec at least 10% above the best non-sequential model; a paired t-test over
   the users gives the 95% interval of SASRec's NDCG@10 minus that model's.
2. Top-N protocol of the collaborative-filtering issue (``peers.py``): per-user random 80/20
   of all ratings (seed 0), test ratings >= 4 relevant, full ranking, @10: NCF (GMF, MLP,
   NeuMF), the hybrid BPR network and the two-tower model beside EASE and ALS.

Fit time is one plain fit, each model alone on the machine (the target: under 5 minutes on
2 CPU cores for every neural model).

Run: .venv/bin/python benchmarks/neural.py [--quick] [--tasks next,topn]
Writes benchmarks/results/neural{.quick}.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))

from _results import markdown_table, write_results
from tastebud.data import load_movielens_100k
from tastebud.evaluation import evaluate, paired_test
from tastebud.models import create
from tastebud.split import Split, leave_last_out, random_split

RESULTS = Path(__file__).parent / "results"
SEQUENTIAL = ("sasrec", "bert4rec")
# not sequence models, but their user side averages the latest items (time-ordered training)
RECENT_ITEMS = ("hybrid-bpr", "two-tower")


def _models(names: list[str], quick: bool) -> dict[str, Any]:
    specs: dict[str, Any] = {
        "popularity": "popularity",
        "item-knn": "item-knn",
        "ease": "ease",
        "als": "als",
        "bpr": "bpr",
        "feature-mf": "feature-mf",
        "history-classifier": "history-classifier",
        "sasrec": {"name": "sasrec"},
        "bert4rec": {"name": "bert4rec"},
        "ncf (neumf)": {"name": "ncf", "model": "neumf"},
        "ncf (gmf)": {"name": "ncf", "model": "gmf"},
        "ncf (mlp)": {"name": "ncf", "model": "mlp"},
        "hybrid-bpr": {"name": "hybrid-bpr"},
        "two-tower": {"name": "two-tower"},
    }
    out = {}
    for name in names:
        spec = specs[name]
        if isinstance(spec, dict):
            params = {k: v for k, v in spec.items() if k != "name"}
            if quick:
                params["epochs"] = 2
            out[name] = create(spec["name"], **params)
        else:
            out[name] = create(spec)
    return out


def _evaluate(
    names: list[str],
    split: Split,
    quick: bool,
    threshold: float | None,
    per_user: dict[str, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    models = _models(names, quick)
    rows = {}
    for label, spec in models.items():  # one at a time: each fit has the machine to itself
        result = evaluate(
            {label: spec},
            split,
            k=10,
            metrics=["ndcg", "hit_rate", "recall"],
            relevance_threshold=threshold,
            beyond_accuracy=False,
            progress=False,
            per_user=per_user,
        )
        row = result.set_index("metric")["value"]
        rows[label] = row
        print(
            f"  {label}: NDCG@10 {row['NDCG@10']:.4f}, fit {row['fit_seconds']:.0f}s",
            file=sys.stderr,
        )
    table = pd.DataFrame.from_dict(rows, orient="index")
    return table[["NDCG@10", "HitRate@10", "Recall@10", "fit_seconds"]]


def next_item(quick: bool) -> tuple[pd.DataFrame, dict[str, Any]]:
    split = leave_last_out(load_movielens_100k(), 1)
    names = [
        "popularity",
        "item-knn",
        "ease",
        "als",
        "bpr",
        "feature-mf",
        "history-classifier",
        "sasrec",
        "bert4rec",
        "ncf (neumf)",
        "hybrid-bpr",
        "two-tower",
    ]
    per_user: dict[str, pd.DataFrame] = {}
    table = _evaluate(names, split, quick, None, per_user)
    non_sequential = table.drop(index=[n for n in SEQUENTIAL if n in table.index])
    order_blind = non_sequential.drop(index=[n for n in RECENT_ITEMS if n in table.index])
    sasrec = float(table.loc["sasrec", "NDCG@10"])
    summary: dict[str, Any] = {"sasrec_ndcg": sasrec}
    for key, pool in (("non_sequential", non_sequential), ("order_blind", order_blind)):
        best = str(pool["NDCG@10"].idxmax())
        summary |= {
            f"best_{key}": best,
            f"best_{key}_ndcg": float(pool.loc[best, "NDCG@10"]),
            f"sasrec_gain_over_{key}": sasrec / float(pool.loc[best, "NDCG@10"]) - 1,
        }
        test = paired_test(per_user["sasrec"], per_user[best], "NDCG@10")
        summary[f"sasrec_minus_{key}_95ci"] = [round(test.ci_low, 4), round(test.ci_high, 4)]
        summary[f"sasrec_vs_{key}_p"] = round(test.p_value, 4)
    return table, summary


def top_n(quick: bool) -> pd.DataFrame:
    split = random_split(load_movielens_100k(), 0.2, seed=0)
    names = ["ease", "als", "ncf (gmf)", "ncf (mlp)", "ncf (neumf)", "hybrid-bpr", "two-tower"]
    return _evaluate(names, split, quick, 4.0)


def _markdown(sections: dict[str, pd.DataFrame], meta: dict[str, Any]) -> str:
    lines = ["# Neural models", "", f"{meta}", ""]
    for title, table in sections.items():
        lines += [f"## {title}", "", markdown_table(table), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="2 epochs per neural model")
    parser.add_argument("--tasks", default="next,topn")
    args = parser.parse_args()
    tasks = set(args.tasks.split(","))
    started = time.perf_counter()
    sections: dict[str, pd.DataFrame] = {}
    summary: dict[str, Any] = {}
    if "next" in tasks:
        table, summary = next_item(args.quick)
        sections["Next item: ML-100K, temporal leave-last-out, full ranking"] = table
    if "topn" in tasks:
        sections["Top-N: ML-100K, per-user random 80/20, ratings >= 4 relevant"] = top_n(args.quick)
    meta = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": len(os.sched_getaffinity(0)),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "seconds": round(time.perf_counter() - started, 1),
        **summary,
    }
    result = {
        "meta": meta,
        "sections": {
            title: table.round(6).reset_index(names="model").to_dict("records")
            for title, table in sections.items()
        },
    }
    stem = "neural.quick" if args.quick else "neural"
    write_results(RESULTS, stem, result, _markdown(sections, meta))
    print(_markdown(sections, meta))


if __name__ == "__main__":
    main()
