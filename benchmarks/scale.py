"""Every model at its defaults on power-law synthetic data of growing size: does it fit, how
long, how much memory -- or does it refuse clearly?

Sizes: 1M, 5M and 20M interactions (`--sizes`), with as many users and items as
interactions / 20 (the 20M set is issue 19's 1M users x 1M items). Each model is fitted in
its own process (`create(name).fit(data)`, defaults) so that its peak RSS is its own and a
crash or a timeout (`--timeout`, default 15 min) stays one row; after the fit the process
times `recommend_indices` for 1,000 random users with history (top-10, seen items
excluded). A refusal (a `TastebudError` naming a limit) is recorded as such. implicit's ALS
and BPR at the settings tastebud's fits ended with (factors, λ, iterations, learning rate)
run in one more process per size, beside tastebud's at those fixed settings (ALS without
its λ search), on the same data.

Run: .venv/bin/python benchmarks/scale.py [--sizes 1000000,5000000] [--models als,bpr,...]
     [--timeout 900] [--no-peer]
Writes benchmarks/results/scale.{json,md} (a row per size and model, written as it comes
and merged into what is there, so sizes and models can be run apart).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _results import write_results

RESULTS = Path(__file__).parent / "results"
QUERIES = 1_000


def dataset(size: int) -> Any:
    from tastebud.data.synthetic import synthetic

    side = max(size // 20, 100)
    return synthetic(n_users=side, n_items=side, n_interactions=size, seed=0, progress=False)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def child_model(name: str, size: int) -> dict[str, Any]:
    from tastebud.errors import TastebudError
    from tastebud.models import create

    data = dataset(size)
    base_rss = peak_rss_gib()
    model = create(name)
    start = time.perf_counter()
    try:
        model.fit(data)
    except TastebudError as err:
        return {"status": "refused", "message": str(err), "seconds": time.perf_counter() - start}
    fit_s = time.perf_counter() - start
    fit_rss = peak_rss_gib()
    rng = np.random.default_rng(0)
    active = np.flatnonzero(np.diff(model.seen_.indptr) > 0)
    users = np.sort(rng.choice(active, min(QUERIES, len(active)), replace=False))
    start = time.perf_counter()
    model.recommend_indices(users, 10, exclude=model.seen_)
    rec_s = time.perf_counter() - start
    out = {
        "status": "fitted",
        "fit_s": fit_s,
        "peak_rss_gib": fit_rss,
        "data_rss_gib": base_rss,
        "recommend_1000_s": rec_s,
        "peak_rss_after_recommend_gib": peak_rss_gib(),
    }
    if name in ("als", "bpr"):
        out["settings"] = {
            "factors": int(model.n_factors),
            "reg": float(getattr(model, "reg_", model.reg)),
            "iterations": int(getattr(model, "n_iterations", getattr(model, "n_epochs", 0))),
            "lr": float(getattr(model, "lr", 0.0)),
        }
    return out


def child_implicit(size: int, settings: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """implicit's engines and tastebud's models at the same fixed settings, one process."""
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    from tastebud.models import create

    data = dataset(size)
    matrix = data.matrix("binary").astype(np.float32).tocsr()
    out: dict[str, Any] = {}
    for name, engine in (("als", AlternatingLeastSquares), ("bpr", BayesianPersonalizedRanking)):
        if name not in settings:
            continue
        s = settings[name]
        kwargs: dict[str, Any] = {"factors": s["factors"], "regularization": s["reg"]}
        kwargs["iterations"] = s["iterations"]
        if name == "bpr":
            kwargs["learning_rate"] = s["lr"]
        model = engine(**kwargs, random_state=0)
        start = time.perf_counter()
        model.fit(matrix, show_progress=False)
        peer_s = time.perf_counter() - start
        ours = create(name, reg=s["reg"])  # the rest are the defaults the settings came from
        start = time.perf_counter()
        ours.fit(data)
        out[name] = {"fit_s": peer_s, "tastebud_fixed_fit_s": time.perf_counter() - start}
    return out


def run_child(args: list[str], timeout: float) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "seconds": time.perf_counter() - start}
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"status": "crashed", "returncode": done.returncode, "message": " / ".join(tail)}
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| size | model | status | fit s | peak RSS GiB | recommend 1,000 s | same settings: "
        "tastebud fit s | implicit fit s |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for key in sorted(rows, key=lambda k: (int(k.split("/")[0]), k.split("/")[1])):
        size, name = key.split("/")
        row = rows[key]
        peer = row.get("implicit", {})

        def num(value: Any, digits: int = 1) -> str:
            return "" if value is None else f"{value:,.{digits}f}"

        status = row["status"]
        if status in ("refused", "crashed"):
            status += ": " + str(row.get("message", ""))[:160].replace("|", "/")
        lines.append(
            f"| {int(size):,} | {name} | {status} | {num(row.get('fit_s'))} | "
            f"{num(row.get('peak_rss_gib'), 2)} | {num(row.get('recommend_1000_s'), 2)} | "
            f"{num(peer.get('tastebud_fixed_fit_s'))} | {num(peer.get('fit_s'))} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000000,5000000,20000000")
    parser.add_argument("--models", default="", help="comma-separated (default: every one)")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument(
        "--no-peer", action="store_true", help="skip implicit's ALS/BPR at the same settings"
    )
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "SIZE"), help=argparse.SUPPRESS)
    parser.add_argument("--peer", nargs=2, metavar=("SIZE", "JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child_model(args.child[0], int(args.child[1]))))
        return
    if args.peer:
        print(json.dumps(child_implicit(int(args.peer[0]), json.loads(args.peer[1]))))
        return
    from tastebud.models import available

    names = args.models.split(",") if args.models else available()
    mine: dict[str, dict[str, Any]] = {}  # this run's rows, merged into the file's at writing
    for size in (int(s) for s in args.sizes.split(",")):
        settings = {}
        for name in names:
            row = run_child(["--child", name, str(size)], args.timeout)
            mine[f"{size}/{name}"] = row
            print(f"{size:,} {name}: {row}", flush=True)
            if row.get("settings"):
                settings[name] = row["settings"]
            save(mine)  # each row as it comes: a run stopped later keeps it
        if settings and not args.no_peer:
            peer = run_child(["--peer", str(size), json.dumps(settings)], args.timeout)
            for name in settings:
                mine[f"{size}/{name}"]["implicit"] = peer.get(name, peer)
            print(f"{size:,} implicit: {peer}", flush=True)
            save(mine)


def save(mine: dict[str, dict[str, Any]]) -> None:
    """This run's rows merged into the results file (read again now: another run may have
    written rows since this one started)."""
    meta = (
        f"{platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs. "
        "Synthetic power-law data, users = items = interactions / 20; each model fitted "
        "at its defaults in its own process (peak RSS includes the data); recommend: "
        "1,000 users' top-10. implicit: its ALS/BPR at the settings tastebud's fit ended "
        "with, on the binary matrix. Targets at 20M: ALS < 10 min, peak RSS < 8 GiB."
    )
    previous = RESULTS / "scale.json"
    rows = json.loads(previous.read_text())["rows"] if previous.exists() else {}
    rows.update(mine)
    result = {"platform": platform.platform(), "rows": rows}
    markdown = "\n".join(["# Scale: every model at its defaults", "", meta, "", table(rows), ""])
    write_results(RESULTS, "scale", result, markdown)


if __name__ == "__main__":
    main()
