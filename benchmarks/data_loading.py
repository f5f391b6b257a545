"""Benchmark: loading reference data, building the CSR matrix, and synthetic generation.

Sections
--------
1. ``load_movielens_100k()`` / ``load_lastfm_2k()`` followed by ``ds.matrix()``: the first
   (cold) run in this process, then best and median of N warm runs. Next to them, the same
   interactions file read by tastebud without feature tables (``read_interactions``), and a bare
   peer -- ``pandas.read_csv`` + ``pandas.factorize`` + ``scipy.sparse.csr_matrix`` -- which is
   the least any loader must pay; the gap is what validation and feature tables cost.
2. ``synthetic()`` at several sizes, each in its own subprocess: wall time, and the peak memory
   added by generation (``ru_maxrss`` after generation minus ``ru_maxrss`` right after importing
   tastebud) next to the size of the dataset's own arrays.

Timings are reported, never asserted. Run from the project root::

    .venv/bin/python benchmarks/data_loading.py            # full run (about a minute)
    .venv/bin/python benchmarks/data_loading.py --quick    # CI smoke run (seconds)

Writes ``benchmarks/results/data_loading.json`` and ``benchmarks/results/data_loading.md``
(``data_loading.quick.*`` with ``--quick``, so a smoke run never overwrites full results) and
prints the markdown.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _results import write_results

RESULTS = Path(__file__).resolve().parent / "results"
ML_NAMES = ["user", "item", "rating", "timestamp"]
LASTFM_NAMES = ["user", "item", "weight"]


# -- helpers -------------------------------------------------------------------------------------
def _maxrss_bytes() -> int:
    """Peak resident set size of this process so far, in bytes (Linux: KiB, macOS: bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def _machine() -> dict[str, Any]:
    import numpy as np
    import pandas as pd
    import scipy

    import tastebud

    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scipy": scipy.__version__,
        "tastebud": getattr(tastebud, "__version__", None),
        "cpu_count": os.cpu_count(),
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _time_runs(fn: Callable[[], dict[str, float]], warm_runs: int) -> dict[str, Any]:
    """Run ``fn`` once cold, then ``warm_runs`` times; ``fn`` returns its phase timings."""
    cold = fn()
    warm = [fn() for _ in range(warm_runs)]
    totals = [w["total"] for w in warm]
    return {
        "cold_s": cold["total"],
        "cold_phases_s": cold,
        "warm_best_s": min(totals),
        "warm_median_s": statistics.median(totals),
        "warm_runs_s": totals,
        "warm_phases_median_s": {
            phase: statistics.median(w[phase] for w in warm) for phase in warm[0]
        },
    }


def _two_phase(load: Callable[[], Any], build: Callable[[Any], Any]) -> Callable[[], Any]:
    """A run timing ``load()`` then ``build(loaded)``; returns the timings and the matrix."""

    def run() -> dict[str, Any]:
        t0 = time.perf_counter()
        loaded = load()
        t1 = time.perf_counter()
        matrix = build(loaded)
        t2 = time.perf_counter()
        run.last_matrix = matrix  # type: ignore[attr-defined]
        return {"load": t1 - t0, "matrix": t2 - t1, "total": t2 - t0}

    return run


# -- section 1: reference data -------------------------------------------------------------------
def _has_header(path: Path) -> bool:
    """Whether the first line is a header (copies of Last.fm 2K come with and without one)."""
    with path.open(encoding="utf-8", errors="replace") as fh:
        first = fh.readline().split("\t")[0].strip()
    return not first.isdigit()


def _bare_peer(path: Path, names: list[str], value: str) -> Callable[[], Any]:
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    header = _has_header(path)

    def load() -> Any:
        return pd.read_csv(path, sep="\t", names=names, header=0 if header else None)

    def build(df: Any) -> Any:
        users, user_ids = pd.factorize(df["user"])
        items, item_ids = pd.factorize(df["item"])
        values = df[value].to_numpy(dtype=np.float32)
        return sp.csr_matrix((values, (users, items)), shape=(len(user_ids), len(item_ids)))

    return _two_phase(load, build)


def bench_reference(warm_runs: int) -> dict[str, Any]:
    from tastebud.data.files import read_interactions
    from tastebud.data.reference import data_home, load_lastfm_2k, load_movielens_100k

    home = data_home()
    out: dict[str, Any] = {"data_home": str(home), "warm_runs": warm_runs, "datasets": {}}
    specs = [
        (
            "ml-100k",
            home / "ml-100k",
            "u.data",
            load_movielens_100k,
            {"names": ML_NAMES, "sep": "\t", "header": False, "rating_range": (1, 5)},
            (ML_NAMES, "rating"),
        ),
        (
            "lastfm-2k",
            home / "hetrec2011-lastfm-2k",
            "user_artists.dat",
            load_lastfm_2k,
            {"names": LASTFM_NAMES, "sep": "\t"},
            (LASTFM_NAMES, "weight"),
        ),
    ]
    for name, folder, file_name, loader, read_kwargs, (names, value) in specs:
        path = folder / file_name
        if not path.is_file():
            print(f"note: {path} not found; skipping {name} (set TASTEBUD_DATA)")
            out["datasets"][name] = {"skipped": f"{path} not found"}
            continue
        contenders: dict[str, Callable[[], Any]] = {
            f"tastebud {loader.__name__}() + matrix()": _two_phase(loader, lambda ds: ds.matrix()),
            "tastebud read_interactions() + matrix() (no feature tables)": _two_phase(
                lambda p=path, kw=read_kwargs: read_interactions(p, **kw),
                lambda ds: ds.matrix(),
            ),
            "bare peer: pandas.read_csv + factorize + csr_matrix": _bare_peer(path, names, value),
        }
        rows = {}
        for label, run in contenders.items():
            result = _time_runs(run, warm_runs)
            matrix = run.last_matrix  # type: ignore[attr-defined]
            result["shape"] = list(matrix.shape)
            result["nnz"] = int(matrix.nnz)
            rows[label] = result
        nnz = {r["nnz"] for r in rows.values()}
        if len(nnz) > 1:
            print(f"note: {name}: contenders disagree on the number of interactions: {nnz}")
        out["datasets"][name] = {"file": str(path), "nnz_agree": len(nnz) == 1, "contenders": rows}
    return out


# -- section 2: synthetic ------------------------------------------------------------------------
def _synthetic_child(n_interactions: int) -> None:
    """Run in a fresh subprocess: generate once, print a JSON line with time and memory."""
    import tastebud  # noqa: F401  (the baseline includes the library's own imports)
    from tastebud.data.synthetic import synthetic

    base = _maxrss_bytes()
    n_users, n_items = max(n_interactions // 100, 1), max(n_interactions // 200, 1)
    t0 = time.perf_counter()
    ds = synthetic(n_users=n_users, n_items=n_items, n_interactions=n_interactions)
    wall = time.perf_counter() - t0
    peak = _maxrss_bytes()
    arrays = {
        name: int(arr.nbytes)
        for name in ("user_index", "item_index", "rating", "timestamp")
        if (arr := getattr(ds, name)) is not None
    }
    arrays_total = sum(arrays.values())
    extra = peak - base
    print(
        json.dumps(
            {
                "n_interactions_requested": n_interactions,
                "n_interactions": ds.n_interactions,
                "n_users": n_users,
                "n_items": n_items,
                "wall_s": wall,
                "maxrss_after_import_bytes": base,
                "maxrss_after_generation_bytes": peak,
                "peak_extra_bytes": extra,
                "arrays_bytes": arrays,
                "arrays_total_bytes": arrays_total,
                "ratio_peak_extra_to_arrays": extra / arrays_total if arrays_total else None,
            }
        )
    )


def bench_synthetic(sizes: list[int]) -> dict[str, Any]:
    rows = []
    for size in sizes:
        proc = subprocess.run(
            [sys.executable, __file__, "--synthetic-child", str(size)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            print(f"note: synthetic({size}) failed:\n{proc.stderr}")
            rows.append({"n_interactions_requested": size, "error": proc.stderr[-2000:]})
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {"sizes": sizes, "runs": rows}


# -- report --------------------------------------------------------------------------------------
def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f}"


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f}"


def to_markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "# Data loading benchmark",
        "",
        f"{m['platform']}, Python {m['python']}, numpy {m['numpy']}, pandas {m['pandas']}, "
        f"scipy {m['scipy']}, {m['cpu_count']} CPUs; {m['date_utc']}."
        + (" Quick (smoke) run." if result["quick"] else ""),
        "",
    ]
    ref = result["reference"]
    n = ref["warm_runs"] if ref else 0
    for name, data in (ref["datasets"] if ref else {}).items():
        lines += [f"## {name}: load + CSR matrix", ""]
        if "skipped" in data:
            lines += [f"Skipped: {data['skipped']}.", ""]
            continue
        lines += [
            f"`{data['file']}`. Cold = first call in this process (the file may already be in "
            f"the OS page cache); warm = {n} run{'s' if n != 1 else ''} after it. Times in ms; "
            "load/matrix = warm medians of each phase.",
            "",
            "| contender | cold | warm best | warm median | load | matrix | shape | nnz |",
            "|---|---:|---:|---:|---:|---:|---|---:|",
        ]
        peer = next(v for k, v in data["contenders"].items() if k.startswith("bare peer"))
        for label, r in data["contenders"].items():
            phases = r["warm_phases_median_s"]
            lines.append(
                f"| {label} | {_ms(r['cold_s'])} | {_ms(r['warm_best_s'])} | "
                f"{_ms(r['warm_median_s'])} | {_ms(phases['load'])} | {_ms(phases['matrix'])} | "
                f"{r['shape'][0]} x {r['shape'][1]} | {r['nnz']:,} |"
            )
        lines.append("")
        tb = next(iter(data["contenders"].values()))
        lines += [
            f"Full loader vs bare peer (warm medians): "
            f"{tb['warm_median_s'] / peer['warm_median_s']:.1f}x.",
            "",
        ]
    if not ref:
        lines += ["Reference data sections skipped: data folder not found.", ""]

    lines += [
        "## synthetic(): generation time and peak memory",
        "",
        "One fresh subprocess per size; n_users = n/100, n_items = n/200, default options "
        "(ratings, timestamps, feature tables). Peak extra = ru_maxrss after generation minus "
        "ru_maxrss right after importing tastebud; arrays = nbytes of user_index, item_index, "
        "rating and timestamp. ru_maxrss is a high-water mark, so generation that stays under "
        "the peak reached while importing shows as 0 (small sizes).",
        "",
        "| requested | interactions | users | items | wall (s) | peak extra (MiB) | "
        "arrays (MiB) | peak extra / arrays |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["synthetic"]["runs"]:
        if "error" in r:
            lines.append(f"| {r['n_interactions_requested']:,} | failed | | | | | | |")
            continue
        lines.append(
            f"| {r['n_interactions_requested']:,} | {r['n_interactions']:,} | {r['n_users']:,} | "
            f"{r['n_items']:,} | {r['wall_s']:.2f} | {_mib(r['peak_extra_bytes'])} | "
            f"{_mib(r['arrays_total_bytes'])} | {r['ratio_peak_extra_to_arrays']:.2f} |"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        default="1000000,10000000",
        help="comma-separated synthetic sizes in interactions (default: %(default)s)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: synthetic size 100000, 1 warm run"
    )
    parser.add_argument("--warm-runs", type=int, default=5, help="warm runs (default: 5)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--synthetic-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.synthetic_child is not None:
        _synthetic_child(args.synthetic_child)
        return 0

    sizes = [100_000] if args.quick else [int(s) for s in args.sizes.split(",") if s.strip()]
    warm_runs = 1 if args.quick else max(args.warm_runs, 1)

    from tastebud.data.reference import data_home

    home = data_home()
    reference = None
    if home.is_dir():
        reference = bench_reference(warm_runs)
    else:
        print(f"note: reference data folder {home} not found; skipping reference data sections")

    result = {
        "benchmark": "data_loading",
        "quick": args.quick,
        "machine": _machine(),
        "reference": reference,
        "synthetic": bench_synthetic(sizes),
    }
    markdown = to_markdown(result)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "data_loading.quick" if args.quick else "data_loading"  # keep full results intact
    write_results(args.out, stem, result, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
