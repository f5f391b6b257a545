"""Recommendation as classification (``history-classifier``) beside the non-sequential
baselines, on a temporal leave-last-out split, and its incremental update.

Data: ML-100K likes (ratings >= 4, ``to_implicit(4.0)``).

1. Next like: ``leave_last_out(likes, 1)`` -- each user's latest like is the test item, ranked
   over the whole catalog with the user's training items excluded; NDCG@10 and HitRate@10
   (= Recall@10 with one test item) from ``tastebud.evaluation.evaluate``. Baselines:
   popularity, item-kNN, EASE, ALS (none of them sequential).
2. Incremental update: ``leave_last_out(likes, 2)`` -- the model is fitted without each
   user's last two likes; then the second-to-last like arrives as a new event and the last one
   is the target. Three ways to take the new like into account:

   * ``none``: the model as fitted (the new like is only excluded from the list);
   * ``incremental``: ``history-classifier.partial_update(user, item)`` for every user (the
     like joins the input, one gradient step; the mean milliseconds per call is reported) --
     for item-kNN the equivalent is ``recommend_from_history`` with the new like appended
     (its scores are a function of the history);
   * ``refit``: a new fit on the training data plus every user's new like.

   The table reports NDCG@10 / HitRate@10 of the last like and the share of users whose
   top-10 changed with the update.

Run: .venv/bin/python benchmarks/classification.py [--quick]
Writes benchmarks/results/classification{.quick}.{json,md}.
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
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).parent))

from _results import markdown_table, write_results
from tastebud.data import load_movielens_100k
from tastebud.data.dataset import Dataset
from tastebud.evaluation import evaluate
from tastebud.metrics.ranking import hit_rate_at_k, ndcg_at_k
from tastebud.models import Recommender, create
from tastebud.split import leave_last_out

RESULTS = Path(__file__).parent / "results"
K = 10


def classifiers(quick: bool) -> dict[str, Recommender]:
    out = {
        "history-classifier (playback, ids)": create("history-classifier"),
        "history-classifier (leave-one-out, ids)": create(
            "history-classifier", encoding="leave-one-out"
        ),
    }
    if not quick:
        out |= {
            "history-classifier (playback, titles as text)": create(
                "history-classifier", inputs="text"
            ),
            "history-classifier (playback, user attributes + ids)": create(
                "history-classifier", inputs="tabular"
            ),
            "history-classifier (playback, half-life 30 days)": create(
                "history-classifier", half_life_days=30.0
            ),
        }
    return out


def next_like(likes: Dataset, quick: bool) -> pd.DataFrame:
    split = leave_last_out(likes, 1)
    models: dict[str, Any] = {
        "popularity": "popularity",
        "item-knn": "item-knn",
        "ease": "ease",
        "als": "als",
        **classifiers(quick),
    }
    result = evaluate(
        models, split, metrics=["ndcg", "hit_rate"], beyond_accuracy=False, progress=False
    )
    table = result.pivot(index="model", columns="metric", values="value").loc[list(models)]
    table.columns.name = None
    return table[["NDCG@10", "HitRate@10", "fit_seconds"]]


def _scores(lists: list[list[Any]], targets: list[Any], likes: Dataset) -> tuple[float, float]:
    """Mean NDCG@10 and HitRate@10 of one target item per list (tastebud's metrics)."""
    top = np.full((len(lists), K), -1, dtype=np.int64)
    for row, items in enumerate(lists):
        top[row, : len(items)] = likes.items.to_index(items)
    rows = np.arange(len(targets))
    relevant = sp.csr_matrix(
        (np.ones(len(targets)), (rows, likes.items.to_index(targets))),
        shape=(len(targets), likes.n_items),
    )
    return float(ndcg_at_k(top, relevant, K).mean()), float(hit_rate_at_k(top, relevant, K).mean())


def _lists(model: Recommender, users: list[Any], extra: dict[Any, Any]) -> list[list[Any]]:
    """Top-10 of each user, their training items and their new like excluded."""
    out = []
    for user in users:
        rec = model.recommend(user, k=K + 1)
        out.append([i for i in rec["item"] if i != extra[user]][:K])
    return out


def incremental(likes: Dataset, quick: bool) -> pd.DataFrame:
    before = leave_last_out(likes, 2)
    after = leave_last_out(likes, 1)  # its train = before's train + every new like
    target = after.test.set_index("user")["item"]
    new = (
        before.test[
            ~before.test.set_index(["user", "item"]).index.isin(
                after.test.set_index(["user", "item"]).index
            )
        ]
        .drop_duplicates("user")
        .set_index("user")["item"]
    )
    users = [u for u in target.index if u in new.index]
    if quick:
        users = users[:300]
    targets = [target[u] for u in users]
    new_like = {u: new[u] for u in users}
    rows = {}
    models: dict[str, Any] = {
        "item-knn": "item-knn",
        **{k: v for k, v in classifiers(quick).items() if "ids" in k},
    }
    for label, spec in models.items():
        model = create(spec) if isinstance(spec, str) else spec
        model.fit(before.train)
        plain = _lists(model, users, new_like)
        t0 = time.perf_counter()
        if hasattr(model, "partial_update"):
            for user in users:
                model.partial_update(user, new_like[user])
            updated = _lists(model, users, new_like)
            how = "partial_update"
        else:
            updated = []
            for user in users:
                history = [*before.train.history(user)["item"], new_like[user]]
                rec = model.recommend_from_history(history, k=K)
                updated.append(list(rec["item"]))
            how = "recommend_from_history"
        update_ms = (time.perf_counter() - t0) / len(users) * 1000
        refit = create(spec) if isinstance(spec, str) else type(spec)(**spec.get_params())
        t1 = time.perf_counter()
        refit.fit(after.train)
        refit_seconds = time.perf_counter() - t1
        refitted = _lists(refit, users, new_like)
        changed = np.mean([a != b for a, b in zip(plain, updated, strict=True)])
        for variant, lists in (("none", plain), (how, updated), ("refit", refitted)):
            ndcg, hit = _scores(lists, targets, likes)
            rows[f"{label}: {variant}"] = {
                "NDCG@10": ndcg,
                "HitRate@10": hit,
                "top-10 changed": changed if variant == how else np.nan,
                "ms per user update": update_ms if variant == how else np.nan,
                "refit seconds": refit_seconds if variant == "refit" else np.nan,
            }
    return pd.DataFrame.from_dict(rows, orient="index")


def _markdown(sections: dict[str, pd.DataFrame], meta: dict[str, Any]) -> str:
    lines = ["# Recommendation as classification", "", f"{meta}", ""]
    for title, table in sections.items():
        lines += [f"## {title}", "", markdown_table(table).replace("nan", ""), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer variants and users")
    args = parser.parse_args()
    likes = load_movielens_100k().to_implicit(4.0)
    started = time.perf_counter()
    sections = {
        "Next like: ML-100K likes, temporal leave-last-out, full ranking": next_like(
            likes, args.quick
        ),
        "Incremental update: the second-to-last like arrives, the last is the target": (
            incremental(likes, args.quick)
        ),
    }
    meta = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": len(os.sched_getaffinity(0)),
        "load_average": os.getloadavg(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    result = {
        "meta": meta,
        "sections": {
            title: table.round(6).reset_index(names="model").to_dict("records")
            for title, table in sections.items()
        },
    }
    stem = "classification.quick" if args.quick else "classification"
    write_results(RESULTS, stem, result, _markdown(sections, meta))
    print(_markdown(sections, meta))


if __name__ == "__main__":
    main()
