"""Cold start and hybrids: the targets of the content/hybrid issue, side by side.

1. Cold items, ML-100K: 20% of the items held out entirely (``cold_item_split``), each model
   ranks only the held-out items for every test user (``evaluate(candidates="test")``);
   Recall@10 and NDCG@10 against a random ranking of them (target: >= 3x random's recall).
2. Cold users with attributes only, ML-100K: 20% of the users held out entirely
   (``cold_user_split``); NDCG@10 against global popularity (target: >= +10%).
3. The same users after 1, 3 and 5 onboarding likes (``cold_user_split(onboarding=n)``)
   (target with 3: >= +25% over popularity).
4. Warm users, the CF issue's top-N protocol (per-user random 80/20, seed 0, full ranking,
   training items excluded): the best hybrid against the best pure collaborative model on
   ML-100K and Last.fm 2K (target: at least as good).

ML-100K is read under two protocols: "positives" (ratings >= 4 are the only interactions,
in train and test) and "all ratings" (every rating in train, test ratings >= 4 relevant).
Sections 1-3 are means over seeds 0, 1, 2.

The neural models that read features (hybrid-bpr, two-tower) have cold-item and cold-user
rows too; ``--neural`` runs only them beside random, popularity and feature-mf (the
references of the ratios) and writes ``cold_start.neural.{json,md}``.

Run: .venv/bin/python benchmarks/cold_start.py [--quick] [--neural]
(about 25 min; --quick: one seed)
Writes benchmarks/results/cold_start.{json,md}.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))

from _results import markdown_table, write_results
from tastebud.data import load_lastfm_2k, load_movielens_100k
from tastebud.data.dataset import Dataset
from tastebud.evaluation import evaluate
from tastebud.models import available, create
from tastebud.split import cold_item_split, cold_user_split, random_split

RESULTS = Path(__file__).parent / "results"
METRICS = ["ndcg", "recall"]
#: the neural models that read features (``--neural`` runs only these and the references)
NEURAL: dict[str, Any] = {"hybrid-bpr": "hybrid-bpr", "two-tower": "two-tower"}
REFERENCES = ("random", "popularity", "feature-mf")


def _has(name: str) -> bool:
    return name in available()


def _models(names: dict[str, Any], neural_only: bool = False) -> dict[str, Any]:
    """Models by label, leaving out ones not built in this checkout (and, with
    ``neural_only``, all but the neural models and the references the ratios divide by)."""
    out = {}
    for label, spec in names.items():
        if neural_only and label not in NEURAL and label not in REFERENCES:
            continue
        name = spec if isinstance(spec, str) else spec[0]
        if _has(name.split(":")[0]):
            out[label] = create(name, **spec[1]) if isinstance(spec, tuple) else spec
    return out


def _run(
    models: dict[str, Any],
    splits: list[Any],
    *,
    threshold: float | None = None,
    candidates: str | None = None,
) -> pd.DataFrame:
    """Mean metrics and fit seconds per model over the splits."""
    frames = []
    for split in splits:
        result = evaluate(
            models,
            split,
            metrics=METRICS,
            relevance_threshold=threshold,
            candidates=candidates,
            beyond_accuracy=False,
            progress=False,
        )
        frames.append(result.pivot(index="model", columns="metric", values="value"))
    mean = pd.concat(frames).groupby(level=0).mean()
    return mean[["NDCG@10", "Recall@10", "fit_seconds"]]


def _protocols(ml: Dataset) -> dict[str, tuple[Dataset, float | None]]:
    return {"positives": (ml.to_implicit(4.0), None), "all ratings": (ml, 4.0)}


def cold_items(ml: Dataset, seeds: list[int], neural_only: bool) -> dict[str, pd.DataFrame]:
    out = {}
    for protocol, (data, threshold) in _protocols(ml).items():
        splits = [cold_item_split(data, 0.2, seed=s) for s in seeds]
        models = _models(
            {
                "random": "random",
                "tfidf (profile)": "tfidf",
                "tfidf (intersection)": ("tfidf", {"combine": "intersection"}),
                "embedding (MiniLM)": "embedding",
                "feature-profile": "feature-profile",
                "feature-mf": "feature-mf",
                "switching (ease + feature-profile)": "switching",
                "blend (ease, tfidf, feature-profile)": (
                    "blend",
                    {"members": ("ease", "tfidf", "feature-profile")},
                ),
                **NEURAL,
            },
            neural_only,
        )
        table = _run(models, splits, threshold=threshold, candidates="test")
        table["recall / random"] = table["Recall@10"] / table.loc["random", "Recall@10"]
        out[protocol] = table
        print(f"### cold items, {protocol}\n{markdown_table(table)}\n", flush=True)
    return out


def cold_users(ml: Dataset, seeds: list[int], neural_only: bool) -> dict[str, pd.DataFrame]:
    out = {}
    for protocol, (data, threshold) in _protocols(ml).items():
        for onboarding in (0, 1, 3, 5):
            splits = [cold_user_split(data, 0.2, seed=s, onboarding=onboarding) for s in seeds]
            specs: dict[str, Any] = {
                "popularity": "popularity",
                "user-metadata": "user-metadata",
                "feature-mf": "feature-mf",
                "switching (ease + user-metadata)": "switching",
                "switching (als + user-metadata)": ("switching", {"collaborative": "als"}),
                **NEURAL,
            }
            if onboarding:
                specs |= {"ease": "ease", "als": "als", "item-knn": "item-knn"}
            table = _run(_models(specs, neural_only), splits, threshold=threshold)
            table["NDCG / popularity"] = table["NDCG@10"] / table.loc["popularity", "NDCG@10"]
            label = f"{protocol}, {onboarding} onboarding likes"
            out[label] = table
            print(f"### cold users, {label}\n{markdown_table(table)}\n", flush=True)
    return out


def warm(ml: Dataset, lastfm: Dataset) -> dict[str, pd.DataFrame]:
    out = {}
    cases = {
        "ML-100K positives": (ml.to_implicit(4.0), None),
        "ML-100K all ratings": (ml, 4.0),
        "Last.fm 2K play counts": (lastfm, None),
    }
    for label, (data, threshold) in cases.items():
        specs: dict[str, Any] = {
            "als": "als",
            "ease": "ease",
            "feature-mf": "feature-mf",
            # Last.fm's artists have only a name: TF-IDF reads it; there are no attributes.
            "switching (als)": ("switching", {"collaborative": "als", "content": "tfidf"}),
            "blend (als, feature-mf)": ("blend", {"members": ("als", "feature-mf")}),
            "blend (als, ease, feature-mf)": (
                "blend",
                {"members": ("als", "ease", "feature-mf")},
            ),
        }
        table = _run(_models(specs), [random_split(data, 0.2, seed=0)], threshold=threshold)
        best_cf = table.loc[["als", "ease"], "NDCG@10"].max()
        table["NDCG / best CF"] = table["NDCG@10"] / best_cf
        out[label] = table
        print(f"### {label}\n{markdown_table(table)}\n", flush=True)
    return out


def _markdown(sections: dict[str, dict[str, pd.DataFrame]], meta: dict[str, Any]) -> str:
    lines = ["# Cold start and hybrids", "", f"{meta}", ""]
    for title, tables in sections.items():
        lines += [f"## {title}", ""]
        for label, table in tables.items():
            lines += [f"### {label}", "", markdown_table(table), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="one seed instead of three")
    parser.add_argument(
        "--neural",
        action="store_true",
        help="only the neural rows (and the references): cold_start.neural.{json,md}",
    )
    args = parser.parse_args()
    seeds = [0] if args.quick else [0, 1, 2]
    ml = load_movielens_100k()
    lastfm = load_lastfm_2k()
    started = time.perf_counter()
    sections = {
        "Cold items (ML-100K, 20% of items held out, only they are ranked)": cold_items(
            ml, seeds, args.neural
        ),
        "Cold users (ML-100K, 20% of users held out)": cold_users(ml, seeds, args.neural),
    }
    if not args.neural:
        sections["Warm users (per-user random 80/20, seed 0)"] = warm(ml, lastfm)
    meta = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": len(__import__("os").sched_getaffinity(0)),
        "seeds": seeds,
        "seconds": round(time.perf_counter() - started, 1),
    }
    result = {
        "meta": meta,
        "sections": {
            title: {
                label: table.round(6).reset_index().to_dict("records")
                for label, table in tables.items()
            }
            for title, tables in sections.items()
        },
    }
    stem = "cold_start" + (".neural" if args.neural else "") + (".quick" if args.quick else "")
    write_results(RESULTS, stem, result, _markdown(sections, meta))
    print(_markdown(sections, meta))


if __name__ == "__main__":
    main()
