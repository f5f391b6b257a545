"""ALS defaults on the top-N protocol, over several random splits (seeds 0-4).

ML-100K ratings >= 4 as positives, per-user random 80/20 (``random_split``), full ranking,
training items excluded, NDCG@10. Three settings side by side: the defaults (``reg="auto"``
with user/item frequency weighting), a fixed λ 30 with the same weighting, and plain Hu et al.
ALS at λ 30, α 3 (the previous defaults).

Run: .venv/bin/python benchmarks/als_defaults.py   (~1 min)
Writes benchmarks/results/als_defaults.{json,md}.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from tastebud.data import load_movielens_100k
from tastebud.evaluation import evaluate, leaderboard
from tastebud.models import create
from tastebud.split import random_split

RESULTS = Path(__file__).parent / "results"
SETTINGS = {
    "defaults (reg auto)": {},
    "reg 30": {"reg": 30.0},
    "plain ALS (reg 30, alpha 3, no frequency weighting)": {
        "reg": 30.0,
        "alpha": 3.0,
        "user_exponent": 0.0,
        "item_exponent": 0.0,
    },
}


def main() -> None:
    positives = load_movielens_100k().to_implicit(4.0)
    rows = []
    for seed in range(5):
        split = random_split(positives, 0.2, seed=seed)
        for label, params in SETTINGS.items():
            model = create("als", **params)
            start = time.perf_counter()
            model.fit(split.train)
            seconds = time.perf_counter() - start
            board = leaderboard(
                evaluate(
                    {label: model},
                    split,
                    k=10,
                    metrics=["ndcg"],
                    beyond_accuracy=False,
                    fit=False,
                    progress=False,
                )
            )
            ndcg = float(board["NDCG@10"].iloc[0])
            rows.append(
                {"seed": seed, "setting": label, "reg": model.reg_, "NDCG@10": ndcg,
                 "fit_seconds": seconds}
            )  # fmt: skip
            print(f"seed {seed} {label}: reg {model.reg_:.1f} NDCG@10 {ndcg:.4f} {seconds:.1f}s")
    table = pd.DataFrame(rows)
    wide = table.pivot(index="seed", columns="setting", values="NDCG@10")[list(SETTINGS)]
    wide.loc["mean"] = wide.mean()
    regs = table[table.setting == "defaults (reg auto)"].set_index("seed")["reg"]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "als_defaults.json").write_text(json.dumps(rows, indent=2))
    lines = [
        "# ALS on ML-100K positives, random 80/20 splits, NDCG@10",
        "",
        "| seed | " + " | ".join(SETTINGS) + " | λ chosen by auto |",
        "|---|" + "---:|" * (len(SETTINGS) + 1),
    ]
    for seed, row in wide.iterrows():
        reg = f"{regs[seed]:.1f}" if seed in regs.index else ""
        lines.append(f"| {seed} | " + " | ".join(f"{v:.4f}" for v in row) + f" | {reg} |")
    (RESULTS / "als_defaults.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
