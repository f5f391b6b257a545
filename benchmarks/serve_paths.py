"""Benchmark: the service's CPU per recommendation list, in one process, by path.

What ``benchmarks/serve_load.py`` measures end to end (HTTP, two processes, a load client
on the same two cores) is the sum of a few paths; this script times them one at a time, so a
change to one shows without the noise of the load test:

- ``kept``: ``GET /users/{id}/recommendations?k=10`` through the ASGI app (the fast path,
  the kept user state, the kept list, the answer's JSON, the exposure rows), no server;
- ``rebuilt``: the same request with the list cache off (``list_cache_s=0``): the whole
  pipeline -- fold-in, generators, filters, ranking -- runs for every request;
- ``pipeline``: ``Engine.recommend`` alone on a kept state with the list cache off;
- ``state read``: ``Engine.user_state`` with the state cache off (one indexed read of the
  user's latest events and their values).

ML-100K (943 users, 1,682 items, 100,000 ratings) is imported into a fresh SQLite file in a
temporary folder and ALS (the service's default model) is trained on it once. Each path runs
over every user, ``--repeats`` times; the report gives the main thread's CPU time per request
(``time.thread_time``: other threads and processes do not count), best and median of the
repeats. BLAS runs on one thread, as in ``tastebud serve``.

Run from the project root::

    .venv/bin/python benchmarks/serve_paths.py              # about a minute
    .venv/bin/python benchmarks/serve_paths.py --quick      # the sample data, seconds
    .venv/bin/python benchmarks/serve_paths.py --synthetic 200000,100000,2000000

``--synthetic USERS,ITEMS,EVENTS`` serves the project's power-law synthetic data (seed 0)
instead, ALS at λ 30 (no λ search, and no offline metrics before the first version, as
``serve_load.py --scale``), and times the paths over
``--users`` users drawn at random (2,000 by default): what a list costs when the catalogue
is large (issue 19's serve target is 100,000 items).

Writes ``serve_paths.json`` and ``serve_paths.md`` to ``--out`` (``serve_paths.quick.*``
with ``--quick``, ``serve_paths.synthetic.*`` with ``--synthetic``) and prints the
markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from _results import write_results

RESULTS = Path(__file__).resolve().parent / "results"


def _request(app: Any, path: str) -> Callable[[], Awaitable[int]]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"k=10",
        "root_path": "",
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }

    async def call() -> int:
        status = 0

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])

        await app(dict(scope), receive, send)
        return status

    return call


async def _cpu_per_call(
    run: Callable[[], Awaitable[None]], n: int, repeats: int
) -> dict[str, float]:
    """Main-thread CPU per call of ``run`` (``n`` calls each), best and median of
    ``repeats``, after one warm-up (caches filled, code paths compiled)."""
    await run()
    per_call = []
    for _ in range(repeats):
        start = time.thread_time()
        await run()
        per_call.append(1e6 * (time.thread_time() - start) / n)
    return {"best_us": round(min(per_call), 1), "median_us": round(statistics.median(per_call), 1)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    from tastebud.data import load_movielens_100k, load_sample
    from tastebud.service.app import create_app
    from tastebud.service.settings import Settings
    from tastebud.service.storage import Storage

    model_params: dict[str, Any] = {}
    synthetic_settings: dict[str, Any] = {}
    if args.synthetic:
        from tastebud.data import synthetic

        n_users, n_items, n_events = args.synthetic
        dataset = synthetic(
            n_users=n_users, n_items=n_items, n_interactions=n_events, seed=0, progress=False
        )
        model_params = {"reg": 30}
        synthetic_settings = {"evaluate_on_retrain": False}
    else:
        dataset = load_sample() if args.quick else load_movielens_100k()
    users = [str(u) for u in dataset.users.ids.tolist()]
    if len(users) > args.users:
        rng = random.Random(0)
        users = rng.sample(users, args.users)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="serve_paths-") as tmp:
        db = f"sqlite:///{Path(tmp) / 'bench.db'}"
        with Storage(db) as storage:
            storage.migrate()
            storage.import_dataset(dataset, event_type="rating")
        base = Settings(
            db=db,
            model_dir=Path(tmp) / "models",
            log_level="warning",
            model_params=model_params,
            **synthetic_settings,
        )
        trained = False
        for name, overrides in (("kept", {}), ("rebuilt", {"list_cache_s": 0.0})):
            app = create_app(base.model_copy(update=overrides))
            threadpool_limits(1, user_api="blas")

            async def measure(app: Any = app, name: str = name) -> None:
                nonlocal trained
                async with app.router.lifespan_context(app):
                    engine = app.state.engine
                    if not trained:
                        engine.retrain(wait=True)
                        trained = True
                    while engine.snapshot.model is None:  # the second app loads it
                        await asyncio.sleep(0.05)
                    calls = [_request(app, f"/users/{u}/recommendations") for u in users]

                    async def all_users() -> None:
                        for call in calls:
                            status = await call()
                            assert status == 200, status

                    results[name] = await _cpu_per_call(all_users, len(users), args.repeats)
                    if name == "rebuilt":
                        states = {u: engine.user_state(u) for u in users}

                        async def pipeline() -> None:
                            for u in users:
                                engine.recommend(states[u], 10, keep_rest=False)

                        async def state_reads() -> None:
                            for u in users:
                                engine.user_state(u)

                        results["pipeline"] = await _cpu_per_call(
                            pipeline, len(users), args.repeats
                        )
                        engine.settings = engine.settings.model_copy(
                            update={"state_cache_users": 0}
                        )
                        results["state read"] = await _cpu_per_call(
                            state_reads, len(users), args.repeats
                        )

            asyncio.run(measure())
    return {
        "benchmark": "serve_paths",
        "quick": args.quick,
        "synthetic": args.synthetic,
        "machine": {
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
        "data": {
            "name": str(dataset.name),
            "users": dataset.n_users,
            "items": dataset.n_items,
            "events": dataset.n_interactions,
            "timed_users": len(users),
        },
        "model": "als (the service default)" + (", λ 30" if model_params else ""),
        "repeats": args.repeats,
        "cpu_per_request": results,
    }


def to_markdown(result: dict[str, Any]) -> str:
    data = result["data"]
    lines = [
        "# Service CPU per recommendation list, by path (one process, no HTTP server)",
        "",
        f"{result['machine']['platform']}, Python {result['machine']['python']}; "
        f"{result['machine']['date']}.",
        "",
        f"Data: {data['name']} ({data['users']:,} users, {data['items']:,} items, "
        f"{data.get('events', 0):,} events) in SQLite; model {result['model']}. Main-thread "
        f"CPU per request over {data.get('timed_users', data['users']):,} users, best and "
        f"median of {result['repeats']} repeats, in µs.",
        "",
        "| path | best | median |",
        "|---|---:|---:|",
    ]
    for name, row in result["cpu_per_request"].items():
        lines.append(f"| {name} | {row['best_us']:.0f} | {row['median_us']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="sample data (seconds)")
    parser.add_argument(
        "--synthetic",
        type=lambda text: tuple(int(part) for part in text.split(",")),
        metavar="USERS,ITEMS,EVENTS",
        help="power-law synthetic data of this size instead of ML-100K",
    )
    parser.add_argument("--users", type=int, default=2_000, help="users timed (at most)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args(argv)
    result = run(args)
    markdown = to_markdown(result)
    stem = "serve_paths.synthetic" if args.synthetic else "serve_paths"
    write_results(args.out, stem + (".quick" if args.quick else ""), result, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
