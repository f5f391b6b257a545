"""Benchmark: ``tastebud import`` of millions of events into SQLite and PostgreSQL, and the
retrain's read of them (``Storage.events_frame()``), before and after the batched import and
the streaming read (issue 19, item 3).

For each size N (``--events``, default 20M): power-law synthetic interactions from
``tastebud.data.synthetic.synthetic(n_users=N // 20, n_items=N // 20, n_interactions=N)``
with ratings and timestamps, no feature tables, written once to CSV and to Parquet under
``--work``. Then, for each backend, each step in its own process (its peak RSS is its own):

1. **import** from the CSV into an empty database: the file read (``read_interactions``, what
   ``tastebud import --data`` does first), the database write (``Storage.import_dataset``),
   rows/s of the write (users + items + events); the peak RSS of the file read, then of the
   write alone (Linux: the peak is reset between them; the write's includes the dataset in
   memory and, on SQLite, the bulk connection's page cache of up to 256 MiB);
2. **re-import** of the same data from the Parquet file: every event is a duplicate, skipped;
3. **read**: ``Storage.events_frame()`` of every event: seconds, peak RSS, and the RSS it
   added to the process (peak minus the RSS before the read).

"before" is the code at ``--before REV`` (default: the parent of the commit that added this
file; ``HEAD`` while it is not committed), extracted with ``git archive`` and put first on
``PYTHONPATH``: its import into a fresh database and its read of the database the "after"
import wrote. The old read holds every event as a tuple (about 0.7 GB per million events), so
"before" runs only up to ``--before-max`` events (default 5M).

Timings are reported, never asserted. Each row records the 1-minute load average around it:
on a shared 2-core machine other processes' work shows up in the seconds (not in the RSS).
Run from the project root::

    .venv/bin/python benchmarks/import_scale.py --events 1000000,5000000
    .venv/bin/python benchmarks/import_scale.py --events 20000000 --backends sqlite

PostgreSQL: ``--postgres-url`` (default ``$TASTEBUD_BENCH_POSTGRES_URL``, else database
``tastebud_bench`` at 127.0.0.1:5432 as ``postgres``, created when missing); its tastebud
tables are dropped before each import. Rows merge into ``benchmarks/results/import_scale.json``
and ``.md`` by (events, backend, step, code), so sizes can be run separately.
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import json
import math
import os
import platform
import re
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from _results import write_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STEM = "import_scale"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/tastebud_bench"


def _rss_mib() -> float:
    """Resident set size of this process now, MiB (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    """Peak RSS since the start or the last :func:`_reset_peak` (Linux's VmHWM), MiB."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]
    except (OSError, AttributeError):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def _reset_peak() -> bool:
    """Start the peak RSS again from the RSS now (Linux: ``5`` to ``clear_refs``), so that
    a step's own peak is measured, not the file read's before it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# -- children: one step each, printing one JSON line ---------------------------------------------
def child_import(url: str, data: str, name: str, fresh: bool) -> dict[str, Any]:
    from tastebud.data.files import read_interactions
    from tastebud.service.storage import Storage

    t0 = time.perf_counter()
    ds = read_interactions(data, name=name)
    t1 = time.perf_counter()
    file_peak, rss_loaded = _peak_mib(), _rss_mib()
    reset = _reset_peak()
    with Storage(url) as storage:
        if fresh:
            storage.drop_all()
        storage.migrate()
        quiet = (
            {"progress": False}
            if "progress" in inspect.signature(storage.import_dataset).parameters
            else {}
        )
        t2 = time.perf_counter()
        counts = storage.import_dataset(ds, **quiet)
        t3 = time.perf_counter()
    with Storage(url) as storage:  # SQLite: the log was checkpointed into the file at close
        size = _database_mib(storage)
    rows = ds.n_users + ds.n_items + ds.n_interactions
    return {
        "read_file_s": t1 - t0,
        "write_s": t3 - t2,
        "rows_per_s": rows / (t3 - t2),
        "counts": dict(counts),
        "file_peak_rss_mib": file_peak,
        "rss_after_file_mib": rss_loaded,
        "peak_rss_mib": _peak_mib(),  # of the write (the process's, if it could not reset)
        "peak_reset": reset,
        "database_mib": size,
    }


def child_read(url: str) -> dict[str, Any]:
    from tastebud.service.storage import Storage

    with Storage(url) as storage:
        storage.count_events()  # connect first: the read alone is measured
        before = _rss_mib()
        _reset_peak()
        t0 = time.perf_counter()
        frame = storage.events_frame()
        seconds = time.perf_counter() - t0
        return {
            "read_s": seconds,
            "events_read": len(frame),
            "rss_before_mib": before,
            "peak_rss_mib": _peak_mib(),
            "added_mib": _peak_mib() - before,
            "frame_mib": float(frame.memory_usage(deep=False).sum()) / 2**20,
        }


def _database_mib(storage: Any) -> float | None:
    """Size of the database: the SQLite file (with its log), or the PostgreSQL tables with
    their indexes."""
    url = storage.url
    if url.startswith("sqlite"):
        path = Path(url.split("///", 1)[1])
        files = [path, path.with_name(path.name + "-wal")]
        return sum(f.stat().st_size for f in files if f.exists()) / 2**20
    import sqlalchemy as sa

    with storage.engine.connect() as conn:
        query = sa.text(
            "SELECT sum(pg_total_relation_size(c)) FROM unnest(ARRAY['events', 'users', "
            "'items']::regclass[]) AS c"
        )
        return float(conn.execute(query).scalar_one()) / 2**20


# -- the parent ------------------------------------------------------------------------------------
def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True)
    return done.stdout.decode().strip()


def before_revision(requested: str | None) -> str:
    """``requested``, or the parent of the commit that added this file (``HEAD`` while it
    is not committed)."""
    if requested:
        return _git("rev-parse", requested)
    added = _git("log", "--diff-filter=A", "--format=%H", "--", "benchmarks/import_scale.py")
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


def run_child(source: Path, *args: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(source), "TQDM_DISABLE": "1"}
    load = os.getloadavg()[0]
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"child {args} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row |= {"load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)}
    row["date_utc"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return row


def make_files(n: int, work: Path) -> tuple[Path, Path, dict[str, Any]]:
    """The synthetic set of ``n`` interactions as CSV and Parquet (made once, then reused)."""
    csv, parquet = work / f"synthetic-{n}.csv", work / f"synthetic-{n}.parquet"
    if not (csv.exists() and parquet.exists()):
        from tastebud.data.synthetic import synthetic

        ds = synthetic(
            n_users=n // 20, n_items=n // 20, n_interactions=n, features=False, progress=False
        )
        frame = ds.interactions[["user", "item", "rating", "timestamp"]]
        frame.to_parquet(parquet, index=False)
        frame.to_csv(csv.with_suffix(".tmp"), index=False)
        csv.with_suffix(".tmp").replace(csv)
    info = {"csv_mib": csv.stat().st_size / 2**20, "parquet_mib": parquet.stat().st_size / 2**20}
    return csv, parquet, info


def ensure_postgres(url: str) -> None:
    """Create the benchmark's database when it is missing."""
    import sqlalchemy as sa

    parsed = sa.make_url(url)
    try:
        sa.create_engine(parsed).connect().close()
        return
    except sa.exc.OperationalError:
        pass
    admin = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{parsed.database}"')
    admin.dispose()


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    revision = before_revision(args.before) if args.before_max > 0 else None
    tmp = Path(tempfile.mkdtemp(prefix="import-scale-"))
    sources = {"after": ROOT / "src"}
    if revision is not None:
        sources["before"] = extract_source(revision, tmp)
    backends = args.backends.split(",")
    if "postgresql" in backends:
        ensure_postgres(args.postgres_url)
    rows: list[dict[str, Any]] = []
    for n in (int(x) for x in args.events.split(",")):
        csv, parquet, files = make_files(n, work)
        for backend in backends:
            url = args.postgres_url if backend == "postgresql" else f"sqlite:///{work / 'bench.db'}"
            codes = ["after"] + (["before"] if "before" in sources and n <= args.before_max else [])
            info = {"events": n, "backend": backend, **files}
            for row in measure_one(url, csv, parquet, {c: sources[c] for c in codes}):
                row = {**info, **row}
                row["revision"] = revision if row["code"] == "before" else "working tree"
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def measure_one(url: str, csv: Path, parquet: Path, sources: dict[str, Path]) -> list[dict]:
    """The steps on one database: the old code's import first, into a fresh database; then
    the new code's, whose database stays for the re-import and the reads of both."""
    name = csv.stem
    lite = Path(url.split("///", 1)[1]) if url.startswith("sqlite") else None

    def fresh() -> None:
        if lite is not None:
            for suffix in ("", "-wal", "-shm"):
                lite.with_name(lite.name + suffix).unlink(missing_ok=True)

    rows = []
    for code in sorted(sources, reverse=True):  # "before", then "after"
        fresh()
        row = run_child(sources[code], "import", url, str(csv), name, "1")
        rows.append({"step": "import", "code": code, **row})
    row = run_child(sources["after"], "import", url, str(parquet), name, "0")
    rows.append({"step": "re-import", "code": "after", **row})
    for code in sources:
        rows.append({"step": "read", "code": code, **run_child(sources[code], "read", url)})
    fresh()
    return rows


def merge(rows: list[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
    """The stored rows with these replacing those of the same (events, backend, step, code)."""
    path = out / f"{STEM}.json"
    old = json.loads(path.read_text())["rows"] if path.exists() else []

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r["events"], r["backend"], r["step"], r["code"])

    mine = {key(r) for r in rows}
    merged = [r for r in old if key(r) not in mine] + rows
    return sorted(merged, key=lambda r: (r["events"], r["backend"], r["step"], r["code"]))


def markdown(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    def g(v: float) -> str:
        return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"

    lines = [
        "# Import at scale and the retrain's read (issue 19, item 3)",
        "",
        "Written by `benchmarks/import_scale.py` (see its docstring for what each step does). "
        f"Machine: {machine['cpu_count']} cores shared with other work ({machine['platform']}), "
        f"Python {machine['python']}, SQLite {machine['sqlite']}, PostgreSQL "
        f"{machine.get('postgresql') or 'n/a'} on the same machine. The load column is the "
        "1-minute load average before/after the step: above 2, other processes took CPU from it.",
        "",
        "## Import from CSV into an empty database; re-import of the same data from Parquet",
        "",
        "| events | backend | step | code | file read s | file peak RSS MiB | RSS after file "
        "MiB | write s | rows/s | write peak RSS MiB | new events | duplicates | DB MiB | load |",
        "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r["step"] == "read":
            continue
        c = r["counts"]
        lines.append(
            f"| {r['events']:,} | {r['backend']} | {r['step']} | {r['code']} "
            f"| {g(r['read_file_s'])} | {g(r.get('file_peak_rss_mib', math.nan))} "
            f"| {g(r['rss_after_file_mib'])} | {g(r['write_s'])} | {r['rows_per_s']:,.0f} "
            f"| {g(r['peak_rss_mib'])} | {c['events']:,} "
            f"| {c['duplicates']:,} | {g(r['database_mib'] or 0)} "
            f"| {r['load_before']}/{r['load_after']} |"
        )
    lines += [
        "",
        "## `Storage.events_frame()` of every event (the retrain's read)",
        "",
        "| events | backend | code | read s | events/s | peak RSS MiB | added by the read MiB "
        "| frame MiB (8 B per text cell) | load |",
        "|---:|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r["step"] != "read":
            continue
        lines.append(
            f"| {r['events']:,} | {r['backend']} | {r['code']} | {g(r['read_s'])} "
            f"| {r['events_read'] / r['read_s']:,.0f} | {g(r['peak_rss_mib'])} "
            f"| {g(r['added_mib'])} | {g(r['frame_mib'])} "
            f"| {r['load_before']}/{r['load_after']} |"
        )
    revisions = sorted({r["revision"] for r in rows if r["code"] == "before"})
    if revisions:
        lines += ["", f"before = `{', '.join(revisions)}`; after = the working tree."]
    return "\n".join(lines) + "\n"


def machine_info(url: str | None) -> dict[str, Any]:
    import sqlite3

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "sqlite": sqlite3.sqlite_version,
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if url:
        import sqlalchemy as sa

        with sa.create_engine(url).connect() as conn:
            info["postgresql"] = conn.exec_driver_sql("SHOW server_version").scalar_one()
    return info


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        step, *rest = sys.argv[2:]
        if step == "import":
            url, data, name, fresh = rest
            row = child_import(url, data, name, fresh == "1")
        else:
            row = child_read(rest[0])
        print(json.dumps(row), flush=True)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", default="20000000", help="sizes, comma-separated")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument(
        "--postgres-url", default=os.environ.get("TASTEBUD_BENCH_POSTGRES_URL", DEFAULT_PG)
    )
    parser.add_argument("--work", default="/tmp/tastebud-import-scale", help="data + SQLite")
    parser.add_argument("--before", help="git revision of the 'before' code (default: above)")
    parser.add_argument(
        "--before-max", type=int, default=5_000_000, help="largest size run with the old code"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = measure(args)
    pg = args.postgres_url if "postgresql" in args.backends.split(",") else None
    machine = machine_info(pg)
    merged = merge(rows, args.out)
    text = markdown(merged, machine)
    write_results(args.out, STEM, {"machine": machine, "rows": merged}, text)
    print(text)


if __name__ == "__main__":
    main()
