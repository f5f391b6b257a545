"""Benchmark: fit + recommend time on a quiet machine and beside busy processes, before and
after tastebud's thread policy (``src/tastebud/_threads.py``).

The question (issue 16): how much slower does tastebud get when other work shares the
cores? Thread pools that start a thread per core (torch, OpenBLAS, the OpenMP pools of
``implicit`` and faiss) wait at every synchronisation for a thread the scheduler gave to
someone else, so short parallel regions turn a 2x slowdown into 10x. The target: with
``--busy 2`` processes (``while True: pass``, each in its own session, as independent
programs are) on a 2-core machine, no case is more than 3x slower than on the quiet
machine.

Each case (a model fit on a data set, then ``recommend`` for every user, k=10; or the whole
``tastebud demo`` command) is timed in a fresh process, quiet and loaded, for two versions
of the code:

- ``before``: the source tree of the commit before the thread policy (``--before``; by
  default the parent of the commit that added ``src/tastebud/_threads.py``, or ``HEAD``
  while that file is not committed), extracted with ``git archive`` into a temporary folder
  and put first on ``PYTHONPATH``;
- ``after``: this checkout's ``src``.

Both run in the same environment, without the variables that pin thread counts
(``OMP_NUM_THREADS``... and ``TASTEBUD_THREADS`` are removed): the defaults are what is
measured. Repeats alternate the order of versions and load states; the report gives the
median and the range of each, the loaded/quiet ratio of the medians, each process's CPU
seconds (threads that spin show up there), and the 1-minute load average before and after
every measurement -- on a shared machine "quiet" is only as quiet as the other users, so
read the load averages with the times. ``--priority -10`` runs every measured process and
busy process in its own scheduling group at that nice value (needs root), which makes the
rest of the machine matter far less; the record says whether it was used.

Run from the project root::

    .venv/bin/python benchmarks/threads_load.py             # about 16 minutes on 2 cores
    .venv/bin/python benchmarks/threads_load.py --quick     # the sample data, 3 models, 1 repeat

Writes ``threads_load.json`` and ``threads_load.md`` to ``benchmarks/results``
(``threads_load.quick.*`` with ``--quick``, ``*.subset.*`` with ``--cases`` or ``--env``)
and prints the markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _results import write_results
from tastebud import _threads

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

#: name -> (registry model, data set, parameters). Classic models on ML-100K; the torch
#: models on the built-in sample (their ML-100K fits take minutes), as in the demo.
CASES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "als": ("als", "ml-100k", {}),
    "bpr": ("bpr", "ml-100k", {}),
    "ease": ("ease", "ml-100k", {}),
    "item-knn": ("item-knn", "ml-100k", {}),
    "svd": ("svd", "ml-100k", {}),
    "feature-mf": ("feature-mf", "sample", {}),
    "history-classifier": ("history-classifier", "ml-100k", {"epochs": 3}),
    "sasrec": ("sasrec", "sample", {}),
    "bert4rec": ("bert4rec", "sample", {}),
    "two-tower": ("two-tower", "sample", {}),
}
#: Not run by default (``--cases``): whether every core pays on large data -- ALS on 2M
#: interactions, the policy's choice (every core) beside one engine thread.
EXTRA_CASES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "als-2m": ("als", "synthetic-2m", {"reg": 30.0}),
    "als-2m-1-thread": ("als", "synthetic-2m", {"reg": 30.0, "num_threads": 1}),
}
QUICK_CASES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "als": ("als", "sample", {}),
    "ease": ("ease", "sample", {}),
    "sasrec": ("sasrec", "sample", {"epochs": 3}),
}
DEMO = "demo"
#: Removed from the measured processes' environment: the defaults are what is measured.
PINNING = (
    _threads.ENV,
    *_threads.PINNING_VARIABLES,
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "KMP_BLOCKTIME",
)
#: A busy process: spins until its parent is gone (so a killed benchmark leaves none behind).
BUSY = (
    "import os\np = os.getppid()\n"
    "while os.getppid() == p:\n    for _ in range(1_000_000):\n        pass\n"
)


# -- the measured process -----------------------------------------------------------------------
def _dataset(name: str) -> Any:
    if name == "sample":
        from tastebud.data.sample import load_sample

        return load_sample()
    if name == "synthetic-2m":
        from tastebud.data.synthetic import synthetic

        return synthetic(20_000, 5_000, 2_000_000, features=False, progress=False, seed=0)
    from tastebud.data.reference import load_movielens_100k

    return load_movielens_100k()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker(cases: dict[str, tuple[str, str, dict[str, Any]]]) -> None:
    """Time each case in this process; one JSON line per case on stdout."""
    import tastebud
    from tastebud.models import create

    data = {name: _dataset(name) for name in {spec[1] for spec in cases.values()} | {"sample"}}
    print(json.dumps({"tastebud": tastebud.__file__}), flush=True)
    for model_name, _data_name, params in cases.values():
        # untimed: imports (torch's among them), numba's cache, first-call set-up
        warm = create(model_name, **params)
        if "epochs" in warm.get_params():
            warm.set_params(epochs=1)
        warm.fit(data["sample"]).recommend(data["sample"].users.ids[:10], k=10)
    for case, (model_name, data_name, params) in cases.items():
        ds = data[data_name]
        model = create(model_name, **params)
        load_before = os.getloadavg()[0]
        cpu0, t0 = _cpu(), time.perf_counter()
        model.fit(ds)
        t1 = time.perf_counter()
        model.recommend(ds.users.ids, k=10)
        t2, cpu2 = time.perf_counter(), _cpu()
        row = {"case": case, "seconds": t2 - t0, "fit_seconds": t1 - t0}
        row |= {"recommend_seconds": t2 - t1, "cpu_seconds": cpu2 - cpu0}
        row |= {"load_before": load_before, "load_after": os.getloadavg()[0]}
        print(json.dumps(row), flush=True)


# -- the parent: versions, busy processes, measurements -----------------------------------------
def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def before_revision(requested: str | None) -> str:
    """``requested``, or the parent of the commit that added the thread policy (``HEAD``
    while it is not committed)."""
    if requested:
        return _git("rev-parse", requested)
    added = _git("log", "--diff-filter=A", "--format=%H", "--", "src/tastebud/_threads.py")
    return _git("rev-parse", f"{added.splitlines()[-1]}^" if added else "HEAD")


def extract_source(revision: str, folder: Path) -> Path:
    """The ``src`` tree of ``revision`` under ``folder`` (``git archive``; git state untouched)."""
    archive = folder / "src.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "-C", str(ROOT), "archive", revision, "src"], check=True, stdout=out)
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    archive.unlink()
    return folder / "src"


def _environment(source: Path, extra: list[str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PINNING}
    env |= dict(item.split("=", 1) for item in extra)
    env["PYTHONPATH"] = str(source)
    env["TQDM_DISABLE"] = "1"
    return env


def _start(priority: int | None) -> Any:
    """What a measured or busy child runs before exec: its own scheduling group, at
    ``priority`` when given (the autogroup's nice and the process's)."""

    def boost() -> None:
        if priority is None:
            return
        with contextlib.suppress(FileNotFoundError):  # kernels without autogroup
            Path("/proc/self/autogroup").write_text(str(priority))
        os.setpriority(os.PRIO_PROCESS, 0, priority)

    return boost


@contextlib.contextmanager
def busy(count: int, priority: int | None) -> Iterator[None]:
    """``count`` spinning processes, each in its own session, for the block."""
    loops = [
        subprocess.Popen(
            [sys.executable, "-c", BUSY], start_new_session=True, preexec_fn=_start(priority)
        )
        for _ in range(count)
    ]
    try:
        time.sleep(0.5 if count else 0.0)  # running before the measured process starts
        yield
    finally:
        for loop in loops:
            loop.kill()
        for loop in loops:
            loop.wait()


def run_worker(
    cases: dict[str, Any], env: dict[str, str], priority: int | None, timeout: float
) -> list[dict[str, Any]]:
    """One measured process timing ``cases``; its rows (the first names the tastebud used)."""
    spec = json.dumps({k: list(v) for k, v in cases.items()})
    done = subprocess.run(
        [sys.executable, __file__, "--worker", spec],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,  # where the reference data are found; tastebud itself comes from PYTHONPATH
        start_new_session=True,
        preexec_fn=_start(priority),
    )
    if done.returncode:
        raise SystemExit(f"worker failed:\n{done.stderr[-3000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def run_demo(env: dict[str, str], priority: int | None, timeout: float) -> dict[str, Any]:
    """``tastebud demo`` in a fresh process: wall and CPU seconds (import included)."""
    with tempfile.TemporaryDirectory() as out:
        load_before = os.getloadavg()[0]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", "from tastebud.cli import app; app()", "demo", "--out", out],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            start_new_session=True,
            preexec_fn=_start(priority),
        )
        seconds = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"demo failed:\n{done.stderr[-3000:]}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"case": DEMO, "seconds": seconds, "cpu_seconds": cpu, "load_before": load_before}


def measure(
    args: argparse.Namespace, cases: dict[str, Any], sources: dict[str, Path]
) -> list[dict[str, Any]]:
    """Every repeat of every version x load state; one row per case and measurement."""
    rows: list[dict[str, Any]] = []
    versions = list(sources)
    for repeat in range(args.repeats):
        order = versions if repeat % 2 == 0 else versions[::-1]
        loads = (0, args.busy) if repeat % 2 == 0 else (args.busy, 0)
        for version in order:
            env = _environment(sources[version], args.env)
            for n_busy in loads:
                state = "loaded" if n_busy else "quiet"
                with busy(n_busy, args.priority):
                    found = run_worker(cases, env, args.priority, args.timeout) if cases else []
                    if args.demo and repeat < args.demo_repeats:
                        found.append(run_demo(env, args.priority, args.timeout))
                for row in found:
                    if "case" not in row:
                        if not row["tastebud"].startswith(str(sources[version])):
                            raise SystemExit(f"{version} imported {row['tastebud']}")
                        continue
                    row.setdefault("load_after", os.getloadavg()[0])
                    rows.append(row | {"version": version, "state": state, "repeat": repeat})
                    print(
                        f"[{repeat}] {version:6s} {state:6s} {row['case']:18s} "
                        f"{row['seconds']:8.2f} s  cpu {row['cpu_seconds']:7.2f} s  "
                        f"load {row['load_before']:.1f}",
                        flush=True,
                    )
    return rows


# -- summary and report -------------------------------------------------------------------------
def summarize(rows: list[dict[str, Any]], versions: list[str]) -> dict[str, Any]:
    """Per case and version: median/min/max seconds quiet and loaded, the ratio of the
    medians and the range of the per-repeat ratios."""
    out: dict[str, Any] = {}
    for case in dict.fromkeys(r["case"] for r in rows):
        out[case] = {}
        for version in versions:
            mine = [r for r in rows if r["case"] == case and r["version"] == version]
            entry: dict[str, Any] = {}
            for state in ("quiet", "loaded"):
                secs = [r["seconds"] for r in mine if r["state"] == state]
                cpu = [r["cpu_seconds"] for r in mine if r["state"] == state]
                entry[state] = {
                    "median": statistics.median(secs),
                    "min": min(secs),
                    "max": max(secs),
                    "cpu_median": statistics.median(cpu),
                    "seconds": secs,
                }
            entry["ratio"] = entry["loaded"]["median"] / entry["quiet"]["median"]
            pairs = {}
            for r in mine:
                pairs.setdefault(r["repeat"], {})[r["state"]] = r["seconds"]
            ratios = [p["loaded"] / p["quiet"] for p in pairs.values() if len(p) == 2]
            entry["ratio_range"] = [min(ratios), max(ratios)]
            out[case][version] = entry
    return out


def _cell(entry: dict[str, Any]) -> str:
    return f"{entry['median']:.2f} ({entry['min']:.2f}-{entry['max']:.2f})"


def markdown(summary: dict[str, Any], meta: dict[str, Any], cases: dict[str, Any]) -> str:
    lines = [
        "# Thread pools on a busy machine: quiet vs loaded",
        "",
        f"{meta['busy']} busy processes beside the measured one on {meta['cpus']} CPUs; "
        f"median (min-max) seconds of fit + recommend for every user over {meta['repeats']} "
        f"repeats; ratio = loaded / quiet medians (range over repeats). before = "
        f"`{meta['before']['revision'][:10]}` ({meta['before']['subject']}), after = this "
        f"checkout. Priority: {meta['priority']}. Load average (1 min) from "
        f"{meta['load_average_start'][0]:.1f} to {meta['load_average_end'][0]:.1f}."
        + (
            f" Set in every process: {', '.join(meta['added_variables'])}."
            if meta["added_variables"]
            else ""
        ),
        "",
        "| case | data | before quiet | before loaded | before ratio | after quiet "
        "| after loaded | after ratio | after CPU quiet/loaded |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    worst = ("", 0.0)
    for case, entry in summary.items():
        before, after = entry.get("before"), entry["after"]
        data = cases[case][1] if case in cases else "sample"
        b = (
            [_cell(before["quiet"]), _cell(before["loaded"]), _ratio(before)]
            if before
            else ["", "", ""]
        )
        cpu = f"{after['quiet']['cpu_median']:.1f} / {after['loaded']['cpu_median']:.1f}"
        lines.append(
            f"| {case} | {data} | "
            + " | ".join([*b, _cell(after["quiet"]), _cell(after["loaded"]), _ratio(after), cpu])
            + " |"
        )
        if after["ratio"] > worst[1]:
            worst = (case, after["ratio"])
    met = "met" if worst[1] <= 3.0 else "NOT met"
    target = f"Target (after: every ratio <= 3): **{met}** (worst: {worst[0]} {worst[1]:.2f}x)."
    if meta["quick"]:
        target = "Quick run (a smoke test): one repeat of cases lasting milliseconds to seconds."
    lines += ["", target, ""]
    return "\n".join(lines)


def _ratio(entry: dict[str, Any]) -> str:
    low, high = entry["ratio_range"]
    return f"{entry['ratio']:.2f}x ({low:.2f}-{high:.2f})"


def _meta(args: argparse.Namespace, revision: str) -> dict[str, Any]:
    autogroup = Path("/proc/sys/kernel/sched_autogroup_enabled")
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "busy": args.busy,
        "repeats": args.repeats,
        "demo_repeats": args.demo_repeats if args.demo else 0,
        "quick": args.quick,
        "priority": args.priority if args.priority is not None else "not raised",
        "autogroup": autogroup.read_text().strip() == "1" if autogroup.exists() else None,
        "removed_variables": list(PINNING),
        "added_variables": args.env,
        "before": {
            "revision": revision,
            "subject": _git("log", "-1", "--format=%s", revision),
        },
        "load_average_start": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="sample data, 3 models, 1 repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--demo-repeats", type=int, default=2, help="repeats of the demo")
    parser.add_argument("--no-demo", dest="demo", action="store_false")
    parser.add_argument("--busy", type=int, default=2, help="busy processes when loaded")
    parser.add_argument(
        "--cases", help="comma-separated, from: " + ", ".join([*CASES, *EXTRA_CASES, DEMO])
    )
    parser.add_argument("--before", help="git revision of the 'before' code (default: above)")
    parser.add_argument("--no-before", action="store_true", help="measure this checkout only")
    parser.add_argument("--priority", type=int, help="nice value of every measured process")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per process")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set in every measured process (e.g. OPENBLAS_NUM_THREADS=1: what one thread does)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker({k: (v[0], v[1], v[2]) for k, v in json.loads(args.worker).items()})
        return
    cases = QUICK_CASES if args.quick else CASES
    if args.cases:
        chosen = args.cases.split(",")
        known = cases | EXTRA_CASES
        unknown = set(chosen) - set(known) - {DEMO}
        if unknown:
            parser.error(f"unknown cases: {', '.join(sorted(unknown))}")
        args.demo = args.demo and DEMO in chosen
        cases = {k: known[k] for k in chosen if k in known}
    if args.quick:
        args.repeats, args.demo = 1, False
    if any("=" not in item for item in args.env):
        parser.error("--env takes NAME=VALUE")
    revision = before_revision(args.before)
    meta = _meta(args, revision)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        sources = {"after": ROOT / "src"}
        if not args.no_before:
            sources = {"before": extract_source(revision, Path(tmp)), "after": ROOT / "src"}
        # untimed warm-up: numba compiles its kernels into each tree's cache, files get cached
        for source in sources.values():
            run_worker(QUICK_CASES, _environment(source, args.env), args.priority, args.timeout)
        rows = measure(args, cases, sources)
    meta |= {"seconds": time.perf_counter() - started, "load_average_end": os.getloadavg()}
    summary = summarize(rows, list(sources))
    result = {"meta": meta, "cases": {k: list(v) for k, v in cases.items()}, "summary": summary}
    result["measurements"] = rows
    text = markdown(summary, meta, cases)
    stem = "threads_load.quick" if args.quick else "threads_load"
    write_results(RESULTS, f"{stem}.subset" if args.cases or args.env else stem, result, text)
    print(text)


if __name__ == "__main__":
    main()
