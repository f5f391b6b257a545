"""feature-mf's L2 penalty, chosen on validation data: the shrinkage of every parameter after
each epoch is exp(-learning_rate · alpha), whatever the data's size.

Until 2026-12 it was exp(-learning_rate · alpha · n), n the number of positives: the penalty
grew with the data, and at 20M interactions (12.2M positives) the default alpha = 1e-5 made
it 0.0022 -- every epoch wiped out nearly all that was learnt, and the training loss rose
from epoch to epoch (docs/benchmarks.md, scale). "legacy" below is that rule, reproduced
exactly by alpha = 1e-5 · n of each fit.

Protocol, per data set and seed (0, 1, 2): an outer per-user random 80/20 split; the
penalty is chosen on a validation split carved from the outer training part (per-user
random 20%, seed + 100): fit on the rest, NDCG@10 of the validation interactions (ML-100K:
ratings >= 4 relevant, the model's own positives; Last.fm: every play). The chosen value is
then fitted on the whole training part and scored on the outer test part, beside legacy.

Data: ML-100K with its user and item attributes (feature-mf's defaults use them) and
Last.fm 2K (no attributes: identities only).

Run: .venv/bin/python benchmarks/feature_mf_penalty.py [--seeds 3] [--grid 0,0.1,0.3,1,3]
     [--test ALPHA]
Writes benchmarks/results/feature_mf_penalty.{json,md}.
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

RESULTS = Path(__file__).parent / "results"
LEGACY_ALPHA = 1e-5
DATASETS = {"ml-100k": 4.0, "lastfm-2k": None}  # name -> relevance threshold


def _load(name: str) -> Any:
    from tastebud.data.reference import load_lastfm_2k, load_movielens_100k

    return load_movielens_100k() if name == "ml-100k" else load_lastfm_2k()


def _positives(train: Any, threshold: float | None) -> int:
    if threshold is None or train.rating is None:
        return int(train.n_interactions)
    return int(np.count_nonzero(np.asarray(train.rating) >= threshold))


def _ndcg(alpha: float, split: Any, threshold: float | None) -> float:
    from tastebud.evaluation import evaluate
    from tastebud.models import create

    model = create("feature-mf", user_alpha=alpha, item_alpha=alpha)
    table = evaluate(
        {"m": model},
        split,
        metrics=["ndcg"],
        k=10,
        relevance_threshold=threshold,
        beyond_accuracy=False,
        progress=False,
    )
    return float(table.loc[table["metric"] == "NDCG@10", "value"].iloc[0])


def _stat(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1))}


def run(seeds: list[int], grid: list[float], test_alpha: float | None) -> dict[str, Any]:
    from tastebud.split import random_split

    out: dict[str, Any] = {}
    for name, threshold in DATASETS.items():
        data = _load(name)
        rows = []
        for seed in seeds:
            outer = random_split(data, 0.2, seed=seed)
            inner = random_split(outer.train, 0.2, seed=seed + 100)
            row: dict[str, Any] = {"seed": seed}
            legacy = LEGACY_ALPHA * _positives(inner.train, threshold)
            row["validation"] = {str(a): _ndcg(a, inner, threshold) for a in grid}
            row["validation"]["legacy"] = _ndcg(legacy, inner, threshold)
            row["legacy_alpha_validation"] = legacy
            if test_alpha is not None:
                legacy = LEGACY_ALPHA * _positives(outer.train, threshold)
                row["test"] = {
                    str(test_alpha): _ndcg(test_alpha, outer, threshold),
                    "legacy": _ndcg(legacy, outer, threshold),
                }
                row["legacy_alpha_test"] = legacy
            rows.append(row)
            print(name, row, flush=True)
        out[name] = rows
    return out


def _markdown(result: dict[str, Any]) -> str:
    lines = [
        "# feature-mf: the L2 penalty, chosen on validation data",
        "",
        f"{result['platform']}. Command: `{result['command']}`; {result['seconds']:.0f} s.",
        "Shrinkage after each epoch: exp(-learning_rate · alpha); legacy: alpha = 1e-5 · n "
        "positives (the rule before 2026-12). NDCG@10, mean ± sd over seeds "
        f"{', '.join(map(str, result['seeds']))}.",
        "",
        "## Validation (carved from each seed's training part)",
        "",
    ]
    keys = list(next(iter(result["runs"].values()))[0]["validation"])
    lines += ["| alpha | " + " | ".join(result["runs"]) + " | mean ratio to legacy |"]
    lines += ["|---|" + "---:|" * (len(result["runs"]) + 1)]
    for key in keys:
        cells, ratios = [], []
        for rows in result["runs"].values():
            s = _stat([r["validation"][key] for r in rows])
            cells.append(f"{s['mean']:.4f} ± {s['std']:.4f}")
            ratios += [r["validation"][key] / r["validation"]["legacy"] for r in rows]
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {np.mean(ratios):.3f} |")
    first = next(iter(result["runs"].values()))[0]
    if "test" in first:
        lines += ["", "## Test (the outer 20%; fitted on the whole training part)", ""]
        lines += ["| alpha | " + " | ".join(result["runs"]) + " |", "|---|---:|---:|"]
        for key in first["test"]:
            cells = []
            for rows in result["runs"].values():
                s = _stat([r["test"][key] for r in rows])
                per = " / ".join(f"{r['test'][key]:.4f}" for r in rows)
                cells.append(f"{s['mean']:.4f} ± {s['std']:.4f} ({per})")
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--grid", default="0,0.1,0.3,1,3")
    parser.add_argument("--test", type=float, default=None, help="alpha scored on the test part")
    args = parser.parse_args()
    start = time.time()
    seeds = list(range(args.seeds))
    runs = run(seeds, [float(a) for a in args.grid.split(",")], args.test)
    result = {
        "platform": f"{platform.platform()}, Python {platform.python_version()}",
        "command": "benchmarks/feature_mf_penalty.py " + " ".join(sys.argv[1:]),
        "seconds": time.time() - start,
        "seeds": seeds,
        "runs": runs,
    }
    write_results(RESULTS, "feature_mf_penalty", result, _markdown(result))


if __name__ == "__main__":
    main()
