"""Benchmark: latency of top-10 recommendations over HTTP while events stream in.

What it does
------------
1. Imports MovieLens 100K (943 users, 1,682 items, 100,000 ratings, read from
   ``$TASTEBUD_DATA/ml-100k`` or ``../shared/data/ml-100k``) into a fresh SQLite database in a
   temporary folder -- ``--smoke``: the built-in music-store sample, generated in code -- then
   starts ``tastebud serve`` on it as a subprocess (``TASTEBUD_LOG_LEVEL=warning``, model
   folder in the temporary folder, every other ``TASTEBUD_*`` variable but ``TASTEBUD_DATA``
   removed) and waits until ``GET /health/ready`` names a model version: the first ALS model
   trains in the background at start. The model is not retrained during the run unless
   ``--retrain-every`` says so; events still change the lists at once (live fold-in).
2. Offers load at a fixed arrival rate (open loop) for ``--warmup`` seconds (discarded), then
   ``--duration`` measured seconds, in one uninterrupted schedule:
   ``GET /users/{id}/recommendations?k=10`` for random known users at ``--rate`` per second,
   and on top of that ``POST /events`` (like, view or click on a random known item, each with
   a unique ``client_event_id``) at ``--events-share`` of that rate. The defaults offer
   300 + 30 = 330 requests/s.
3. Reports, separately for recommendations and events, p50/p90/p99/max latency, the offered
   and achieved rates and the errors (any non-2xx answer, transport error or timeout), and
   whether the target is met: p99 <= 10 ms for recommendations at >= 300 requests/s, 0 errors.
   Latency is reported, not asserted; only ``--smoke`` exits non-zero, and only on errors.

The load generator, and why this one
------------------------------------
A small asyncio HTTP/1.1 client written here (keep-alive connections, requests prebuilt as
bytes, responses framed by Content-Length), run in its own process with nothing else to do:

- Open loop, like wrk2: every request has an intended start time on a fixed schedule (evenly
  spaced; ``--arrivals poisson`` draws exponential gaps instead). It is sent then on an idle
  keep-alive connection, or on a new one when all are busy (at most ``--max-connections``,
  after which it waits for one), so a slow answer never delays the requests behind it.
  Latency is measured from the intended start, so any wait on the client side (a late timer,
  no free connection) counts against the service: no coordinated omission. The service time
  (from writing the request to its last byte) is reported beside it. The schedule is kept by
  a clock thread (``time.sleep`` wakes within tens of microseconds; asyncio's timers round
  up to the next millisecond) that hands each request to the event loop.
- Errors: any non-2xx status, a transport error, or no complete answer within ``--timeout``
  (10 s; the connection is then closed). A request that finds its idle keep-alive
  connection closed by the server's keep-alive timeout is retried once on a new one, as
  HTTP clients do (all requests here are idempotent: events carry a client_event_id), and
  counted; a connection that answered a 5xx is never reused. Lists shorter than k are
  counted too (not errors).
- No admission control on either side: past the server's capacity the queue grows, every
  later request waits behind it, and the run ends in timeouts -- that is the result.
- Not ``wrk``: Debian's wrk is closed-loop (each connection waits for its answer before the
  next request), which hides queueing -- the coordinated omission the issue warns about --
  and the constant-rate fork (wrk2) is not packaged. Not locust or httpx: on a 2-core machine
  the client shares the CPUs with the server, and a general-purpose client spends about ten
  times more CPU per request than this one (each request here is a write, a ``readuntil``
  and a ``readexactly``), which would be taken from the server and added to every latency:
  sequential requests to the stub below cost 73 µs of client CPU each with this client and
  778 µs with ``httpx.AsyncClient`` on the machine of the committed results.
- Its cost is measured, not assumed: the client's CPU time per request and share of one core
  (``getrusage``), how late its timers fired, and a calibration run (``--calibrate`` seconds,
  before the real run) of the same client at the same rates against a stub HTTP server in
  another process that answers at once with canned bodies of the real sizes: the floor that
  the client, the loopback and the kernel add to every latency. The server's own CPU use
  during the measured window (from ``/proc``) and its mean in-app time per route (from its
  ``/metrics``; warm-up included) are reported too, with how busy the rest of the machine
  was (``/proc/stat``): other processes' CPU use is added noise, not the service's.
- ``--client-cpu N`` pins the client to one CPU (``os.sched_setaffinity``); by default it is
  not pinned and the kernel places the client and the server's threads.

Run from the project root::

    .venv/bin/python benchmarks/serve_load.py                  # 60 s at 300 + 30 req/s
    .venv/bin/python benchmarks/serve_load.py --smoke          # CI: sample data, 3 s, 20 req/s
    .venv/bin/python benchmarks/serve_load.py --rate 500 --duration 30 --arrivals poisson

The scale variant (issue 19)
----------------------------
``--scale`` serves the project's power-law synthetic data instead
(``tastebud.data.synthetic``, seed ``--seed``): 1,000,000 users, 100,000 items and
10,000,000 interactions (``--users``, ``--items``, ``--events`` change them), imported with
the project's own ``Storage.import_dataset`` (its time is reported), under the same load.
Users are drawn from all 1M, so a process sees a given user about once in two hours at 300
lists/s and nearly every list is rebuilt (state read, pipeline, fold-in over 100,000 items)
rather than served from the list cache; the caches' hits and misses during the load are
summed from every server process's ``GET /admin/stats``. It also reports each server
process's peak and final RSS (``/proc``: VmHWM, VmRSS), the worker processes seen from launch
on (uvicorn replaces a worker that misses its health check: 120 s in tastebud serve), the
load average, and -- with ``--profile`` -- where py-spy's samples of the server fell (text,
not a flame graph).

The server waits for every worker to serve the model before the load, and scores no
holdout before its first version (``evaluate_on_retrain`` off: that replays nearly every
user through the pipeline; ``--offline-metrics`` turns it back on). ``--data-cache DIR``
keeps the imported database there and copies it for later runs of the same size and seed
instead of importing again (a copy: each run starts from the same events and no model
version, so the model still trains at start and ``--ready-timeout`` defaults to an hour).
``--model-params JSON`` and ``--pipeline JSON`` change the served model's parameters and
the pipeline (``TASTEBUD_MODEL_PARAMS``, ``TASTEBUD_PIPELINE``) to see what a part costs;
``--tag NAME`` writes such a run beside the main one::

    .venv/bin/python benchmarks/serve_load.py --scale --data-cache ~/.cache/serve_load
    .venv/bin/python benchmarks/serve_load.py --scale --data-cache ~/.cache/serve_load \\
        --pipeline '{"generators": {"model": 50, "item_to_item": 0, "popular": 20,
        "new": 10, "demographic": 50}}' --tag no_item_to_item

It writes ``serve_load_scale.json`` and ``.md`` (``serve_load_scale.TAG.*`` with ``--tag``;
the profile in ``serve_load_scale*.profile.txt``) instead of the files below.

Writes ``serve_load.json`` and ``serve_load.md`` to ``--out`` (default
``benchmarks/results``; ``serve_load.smoke.*`` with ``--smoke``, so a smoke run never
overwrites full results) and prints the markdown. ``--profile`` also records the server with
py-spy (when installed; ``--nonblocking``, every thread, 200 Hz) from the start of the load
into ``serve_load.profile.svg``; a profiled run's latencies are not the benchmark's (the
sampler takes CPU from the same two cores).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import importlib.util
import json
import math
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, deque
from pathlib import Path
from typing import Any
from urllib.parse import quote

from _results import write_results

RESULTS = Path(__file__).resolve().parent / "results"
TASTEBUD = Path(sys.executable).parent / "tastebud"
TARGET_P99_MS = 10.0
TARGET_RATE = 300.0
KINDS = ("recommendations", "events")
EVENT_TYPES = ("like", "view", "click")
STUB_REC_BYTES = 1500  # about the size of a top-10 answer on ML-100K (titles included)
STUB_EVENT_BYTES = 35  # {"seq":100001,"duplicate":false}
#: Past this many users the client builds each list request when it sends it.
_PREBUILT_USERS = 100_000
#: The scale variant's size (issue 19): users, items, interactions.
SCALE = (1_000_000, 100_000, 10_000_000)


# -- the load generator (child process) --------------------------------------------------------
class _ProtocolError(Exception):
    pass


class _Conn:
    __slots__ = ("fresh", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.fresh = True  # opened for this request, not taken from the idle ones

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Send one request, read one response (Content-Length framing only)."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 "):
            raise _ProtocolError(f"not an HTTP/1.1 response: {head[:40]!r}")
        status = int(head[9:12])
        lower = head.lower()
        pos = lower.find(b"\r\ncontent-length:")
        if pos < 0:
            raise _ProtocolError("response without Content-Length")
        end = lower.index(b"\r\n", pos + 2)
        length = int(lower[pos + 17 : end])
        body = await self.reader.readexactly(length) if length else b""
        if b"\r\nconnection: close" in lower:
            raise _ProtocolError("the server closed the connection")
        return status, body


class _Pool:
    """Keep-alive connections: the most recently used idle one first, a new one when all are
    busy, and a wait for one once ``limit`` are open (counted from the moment a connection
    is asked for, so that the limit holds while connections are being opened)."""

    def __init__(self, host: str, port: int, limit: int) -> None:
        self.host, self.port, self.limit = host, port, limit
        self.idle: list[_Conn] = []
        self.waiters: deque[asyncio.Future[_Conn | None]] = deque()
        self.open = 0
        self.opened = 0
        self.peak = 0

    def _reserve(self) -> None:
        self.open += 1
        self.peak = max(self.peak, self.open)

    async def _connect(self) -> _Conn:
        """Open a connection in a slot already reserved."""
        self.opened += 1
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except BaseException:
            self.open -= 1
            self._wake_one()
            raise
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Conn(reader, writer)

    async def get(self) -> _Conn:
        while self.idle:
            conn = self.idle.pop()
            if not conn.reader.at_eof():
                return conn
            self.discard(conn)  # closed by the server while idle (keep-alive timeout)
        if self.open < self.limit:
            self._reserve()
            return await self._connect()
        waiter: asyncio.Future[_Conn | None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            conn = await waiter
        except asyncio.CancelledError:  # timed out while waiting: give back what it got
            if waiter.done() and not waiter.cancelled():
                got = waiter.result()
                if got is None:
                    self.open -= 1
                    self._wake_one()
                else:
                    self.put(got)
            raise
        return conn if conn is not None else await self._connect()

    def put(self, conn: _Conn) -> None:
        conn.fresh = False
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self.idle.append(conn)

    def discard(self, conn: _Conn) -> None:
        conn.close()
        self.open -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self.waiters:  # a slot is free: reserved for the first waiter, which opens it
            waiter = self.waiters.popleft()
            if not waiter.done():
                self._reserve()
                waiter.set_result(None)
                return

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


def _schedule(
    rate: float, events_rate: float, seconds: float, arrivals: str, seed: int
) -> list[tuple[float, int]]:
    """(offset in seconds, kind index) of every request, in time order."""
    rng = random.Random(seed)
    out: list[tuple[float, int]] = []
    for kind, per_s in enumerate((rate, events_rate)):
        if per_s <= 0:
            continue
        if arrivals == "uniform":
            phase = 0.0 if kind == 0 else 0.5  # events halfway between two recommendations
            n = int(seconds * per_s)
            out += [((i + phase) / per_s, kind) for i in range(n)]
        else:
            t = rng.expovariate(per_s)
            while t < seconds:
                out.append((t, kind))
                t += rng.expovariate(per_s)
    out.sort()
    return out


def _proc_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process (all its threads) and of its live children
    (the workers of ``tastebud serve --workers N``), from /proc."""
    if pid is None:
        return None
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        total += _proc_cpu_seconds(int(child)) or 0.0
    return total


def _machine_busy_seconds() -> float | None:
    """CPU seconds all CPUs of the machine spent busy since boot (/proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    ticks = [int(v) for v in fields]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # guest time is in user


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _load(cfg: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    host, port, k = cfg["host"], cfg["port"], cfg["k"]
    rng = random.Random(cfg["seed"] + 1)
    authority = f"{host}:{port}"
    users, items = cfg["users"], cfg["items"]

    def rec_request(user: str) -> bytes:
        return (
            f"GET /users/{quote(str(user), safe='')}/recommendations?k={k} HTTP/1.1\r\n"
            f"Host: {authority}\r\n\r\n"
        ).encode()

    # every request prebuilt, except for a million users (the scale variant): built when
    # sent there, a few µs each, instead of holding a million of them
    lazy = len(users) > _PREBUILT_USERS
    rec_requests = [] if lazy else [rec_request(u) for u in users]
    run_id = f"load-{os.getpid()}-{int(time.time())}"

    def event_request(n: int) -> bytes:
        body = json.dumps(
            {
                "user_id": str(rng.choice(users)),
                "item_id": str(rng.choice(items)),
                "type": rng.choice(EVENT_TYPES),
                "client_event_id": f"{run_id}-{n}",
            },
            separators=(",", ":"),
        ).encode()
        return (
            f"POST /events HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n"
            f"X-API-Key: {API_KEY}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    warmup, duration = cfg["warmup"], cfg["duration"]
    schedule = _schedule(
        cfg["rate"], cfg["events_rate"], warmup + duration, cfg["arrivals"], cfg["seed"]
    )
    n = len(schedule)
    kind_of = [kind for _, kind in schedule]
    intended = [0.0] * n
    sent = [math.nan] * n
    done = [math.nan] * n
    status = [0] * n  # HTTP status; -1 transport or protocol error, -2 timeout
    short = [False] * n  # a 2xx list with fewer than k items
    retried = [False] * n  # retried after the server closed its idle connection
    errors: dict[int, tuple[str, str]] = {}  # index -> (reason, detail)
    pool = _Pool(host, port, cfg["max_connections"])
    timeout = cfg["timeout"]
    pending: set[asyncio.Task[None]] = set()
    marks: dict[str, float | None] = {}
    rec_marker = b'"rank":'

    def fail(idx: int, code: int, reason: str, detail: str) -> None:
        status[idx] = code
        errors[idx] = (reason, f"{KINDS[kind_of[idx]]}: {detail}"[:300])

    async def one(idx: int, request: bytes) -> None:
        conn: _Conn | None = None
        try:
            async with asyncio.timeout(timeout):
                conn = await pool.get()
                sent[idx] = loop.time()
                try:
                    code, body = await conn.exchange(request)
                except (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError) as err:
                    # An idle keep-alive connection the server closed as this request went
                    # out (its keep-alive timeout): retried once on a new connection, as
                    # HTTP clients do; every request here is idempotent (events carry a
                    # client_event_id). The retry's time counts in the latency.
                    partial = getattr(err, "partial", b"")
                    if conn.fresh or partial:
                        raise
                    pool.discard(conn)
                    conn = None
                    retried[idx] = True
                    conn = await pool.get()
                    code, body = await conn.exchange(request)
            done[idx] = loop.time()
            if code < 500:  # after a 5xx the server may close the connection: never reuse it
                pool.put(conn)
                conn = None
            if 200 <= code < 300:
                status[idx] = code
                if kind_of[idx] == 0 and body.count(rec_marker) < k:
                    short[idx] = True
            else:
                fail(idx, code, f"HTTP {code}", f"HTTP {code}: {body[:200]!r}")
        except TimeoutError:
            fail(idx, -2, "timeout", f"no answer within {timeout} s")
        except (OSError, EOFError, asyncio.LimitOverrunError, _ProtocolError, ValueError) as err:
            fail(idx, -1, type(err).__name__, repr(err))
        finally:
            if conn is not None:
                pool.discard(conn)

    # a few connections before the clock starts (more open on demand)
    warm_conns = [await pool.get() for _ in range(min(cfg["connections"], pool.limit))]
    for conn in warm_conns:
        pool.put(conn)
    gc.collect()
    gc.freeze()  # nothing allocated so far is ever collected: cheaper young collections

    t0 = loop.time() + 0.05

    def mark(name: str) -> None:
        marks[f"{name}_at"] = loop.time() - t0
        marks[f"{name}_client_cpu"] = _own_cpu_seconds()
        marks[f"{name}_watched_cpu"] = _proc_cpu_seconds(cfg.get("watch_pid"))
        marks[f"{name}_machine_cpu"] = _machine_busy_seconds()
        marks[f"{name}_loadavg"] = os.getloadavg()[0]

    loop.call_at(t0 + warmup, mark, "window_start")
    loop.call_at(t0 + warmup + duration, mark, "window_end")
    timer_lag: list[float] = []
    n_events = 0

    def fire(idx: int) -> None:
        nonlocal n_events
        timer_lag.append(loop.time() - intended[idx])
        if kind_of[idx] == 0:
            pick = rng.randrange(len(users))
            request = rec_request(users[pick]) if lazy else rec_requests[pick]
        else:
            request = event_request(n_events)
            n_events += 1
        task = loop.create_task(one(idx, request))
        pending.add(task)
        task.add_done_callback(pending.discard)

    # The clock is a thread: asyncio's timers wake up to 1 ms late (epoll's millisecond
    # timeout, rounded up), which would add about 0.5 ms to every latency; time.sleep
    # wakes within tens of microseconds and hands each request to the loop.
    finished: asyncio.Future[None] = loop.create_future()

    def ticker() -> None:
        try:
            for idx, (offset, _kind) in enumerate(schedule):
                when = t0 + offset
                intended[idx] = when
                delay = when - time.monotonic()  # the loop's clock
                if delay > 0:
                    time.sleep(delay)
                loop.call_soon_threadsafe(fire, idx)
        finally:
            loop.call_soon_threadsafe(finished.set_result, None)

    clock = threading.Thread(target=ticker, name="serve-load-clock", daemon=True)
    clock.start()
    await finished
    clock.join()
    await asyncio.sleep(max(0.0, t0 + warmup + duration - loop.time()))  # the window's end
    if pending:
        await asyncio.wait(list(pending))
    mark("drained")
    pool.close()

    window_start = t0 + warmup
    measured = [i for i in range(n) if intended[i] >= window_start]
    reasons: Counter[str] = Counter()
    samples: list[str] = []
    for i in measured:
        if i in errors:
            reason, detail = errors[i]
            reasons[reason] += 1
            if reasons[reason] == 1 and len(samples) < 10:  # the first of each kind
                samples.append(detail)
    out: dict[str, Any] = {
        "requests": {
            KINDS[kind]: {
                "latency_s": [done[i] - intended[i] for i in measured if kind_of[i] == kind],
                "service_s": [done[i] - sent[i] for i in measured if kind_of[i] == kind],
                "status": [status[i] for i in measured if kind_of[i] == kind],
                "done_at": [done[i] - window_start for i in measured if kind_of[i] == kind],
            }
            for kind in (0, 1)
        },
        "short_lists": sum(short[i] for i in measured),
        "stale_retries": sum(retried[i] for i in measured),
        "error_reasons": dict(reasons),
        "error_samples": samples,
        "timer_lag_s": timer_lag,
        "connections_opened": pool.opened,
        "connections_peak": pool.peak,
        "marks": marks,
    }
    return out


def _client_child(config_path: Path) -> None:
    cfg = json.loads(config_path.read_text())
    if cfg.get("cpu") is not None:
        os.sched_setaffinity(0, {cfg["cpu"]})
    result = asyncio.run(_load(cfg))
    Path(cfg["result_path"]).write_text(json.dumps(result))


# -- the calibration stub (child process) ------------------------------------------------------
def _stub_child() -> None:
    """An HTTP/1.1 server that answers every request at once with a canned body."""
    rec_body = b'{"items":"' + b"x" * (STUB_REC_BYTES - 12) + b'"}'
    event_body = b'{"seq":100001,"duplicate":false}'.ljust(STUB_EVENT_BYTES)

    def answer(code: bytes, body: bytes) -> bytes:
        return (
            b"HTTP/1.1 " + code + b"\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )

    rec_answer = answer(b"200 OK", rec_body)
    event_answer = answer(b"201 Created", event_body)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lower = head.lower()
                pos = lower.find(b"\r\ncontent-length:")
                if pos >= 0:
                    end = lower.index(b"\r\n", pos + 2)
                    await reader.readexactly(int(lower[pos + 17 : end]))
                writer.write(event_answer if head.startswith(b"POST") else rec_answer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        print(port, flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


# -- orchestration -----------------------------------------------------------------------------
def _log(message: str) -> None:
    print(f"serve_load: {message}", file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get_json(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers={"X-API-Key": API_KEY})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, None


def _route_means(base: str, patience_s: float) -> dict[str, dict[str, float]] | None:
    """The server's /metrics timers; a server still working through a backlog gets up to
    ``patience_s`` to answer, then None."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
                return _server_route_means(response.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                return None


def _prepare_database(db_path: Path, smoke: bool) -> tuple[str, list[str], list[str], int]:
    """Import the data set into a new SQLite file; returns its name, user and item ids and
    the number of events written."""
    from tastebud.data import load_movielens_100k, load_sample
    from tastebud.service.storage import Storage

    dataset = load_sample() if smoke else load_movielens_100k()
    storage = Storage(f"sqlite:///{db_path}")
    try:
        storage.migrate()
        counts = storage.import_dataset(dataset, event_type="rating")
    finally:
        storage.close()
    users = [str(u) for u in dataset.users.ids.tolist()]
    items = [str(i) for i in dataset.items.ids.tolist()]
    return str(dataset.name), users, items, int(counts["events"])


def _prepare_synthetic(
    db_path: Path, size: tuple[int, int, int], seed: int, cache_dir: Path | None
) -> tuple[str, list[str], list[str], int, dict[str, Any]]:
    """The scale variant's data: ``synthetic(n_users, n_items, n_interactions, seed)``
    imported with ``Storage.import_dataset`` into a new SQLite file -- or, with
    ``cache_dir``, a copy of the database an earlier run imported there (same size and
    seed). Returns its name, user and item ids (the generator's are ``0..n-1``), the number
    of events and how the import went (seconds, reused or not)."""
    from tastebud.data import synthetic
    from tastebud.service.storage import Storage

    n_users, n_items, n_events = size
    stem = f"synthetic-u{n_users}-i{n_items}-e{n_events}-s{seed}"
    cached = None if cache_dir is None else cache_dir / f"{stem}.db"
    about = None if cached is None else cached.with_suffix(".json")
    if cached is not None and about is not None and cached.exists() and about.exists():
        info = json.loads(about.read_text())
        started = time.perf_counter()
        shutil.copyfile(cached, db_path)
        info = {**info, "reused": str(cached), "copy_s": round(time.perf_counter() - started, 1)}
    else:
        started = time.perf_counter()
        dataset = synthetic(
            n_users=n_users, n_items=n_items, n_interactions=n_events, seed=seed, progress=False
        )
        generated = time.perf_counter() - started
        if dataset.users.ids.tolist() != list(range(len(dataset.users))):  # the ids below
            raise RuntimeError("synthetic() no longer names users 0..n-1")
        storage = Storage(f"sqlite:///{db_path}")
        try:
            storage.migrate()
            started = time.perf_counter()
            counts = storage.import_dataset(dataset, event_type="rating", progress=False)
            imported = time.perf_counter() - started
        finally:
            storage.close()
        info = {
            "name": f"synthetic power-law (seed {seed})",
            "users": len(dataset.users),
            "items": len(dataset.items),
            "events": int(counts["events"]),
            "generate_s": round(generated, 1),
            "import_s": round(imported, 1),
            "import_rows_per_s": round(
                (counts["users"] + counts["items"] + counts["events"]) / imported
            ),
            "db_mib": round(db_path.stat().st_size / 2**20),
        }
        del dataset
        gc.collect()
        if cached is not None and about is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_suffix(".partial")
            shutil.copyfile(db_path, partial)
            partial.replace(cached)
            about.write_text(json.dumps(info, indent=1))
    users = [str(u) for u in range(info["users"])]
    items = [str(i) for i in range(info["items"])]
    return str(info["name"]), users, items, int(info["events"]), info


def _wait_all_ready(
    server: subprocess.Popen[bytes], base: str, workers: int, limit_s: float
) -> set[int]:
    """Wait until ``workers`` server processes answer ``/health/ready`` with a model version
    (one trains it, the others load it when it is activated): a load that starts sooner
    measures a process still loading a model, or serving popular items. Returns their
    pids."""
    deadline = time.monotonic() + limit_s
    ready: set[int] = set()
    while len(ready) < workers:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited ({server.returncode})")
        with contextlib.suppress(OSError, ValueError, AttributeError):
            code, body = _get_json(f"{base}/health/ready", timeout=5)  # a new connection
            if code == 200 and body.get("model_version") is not None:
                ready.add(int(body["pid"]))
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(ready)} of {workers} processes had a model after {limit_s} s")
        time.sleep(0.1)
    return ready


class _Workers:
    """The worker processes of ``tastebud serve --workers N`` seen from its launch on (every
    0.5 s): more than N means the supervisor replaced some -- uvicorn kills a worker that
    does not answer its health check within 5 s, which a process busy starting up at this
    size can miss."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.seen: set[int] = set()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.5):
            with contextlib.suppress(OSError, ValueError):
                children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
                for child in children.split():
                    cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
                    if b"multiprocessing-fork" in cmdline:  # not the resource tracker
                        self.seen.add(int(child))

    def stop(self) -> list[int]:
        self._done.set()
        self._thread.join()
        return sorted(self.seen)


def _cache_stats(host: str, port: int, workers: int, tries: int = 200) -> dict[int, Any]:
    """Every server process's ``GET /admin/stats`` caches (list and state: hits, misses),
    by pid: ``/health/live`` names the process, then the same keep-alive connection asks
    its stats; new connections until each of the ``workers`` processes answered."""
    import http.client

    out: dict[int, Any] = {}
    for _ in range(tries):
        if len(out) >= workers:
            break
        conn = http.client.HTTPConnection(host, port, timeout=10)
        try:
            conn.request("GET", "/health/live")
            pid = int(json.loads(conn.getresponse().read())["pid"])
            conn.request("GET", "/admin/stats", headers={"X-API-Key": API_KEY})
            response = conn.getresponse()
            body = json.loads(response.read())
            if response.status == 200:
                out[pid] = {"list_cache": body["list_cache"], "state_cache": body["state_cache"]}
        except (OSError, ValueError, KeyError, http.client.HTTPException):
            time.sleep(0.05)
        finally:
            conn.close()
    return out


def _cache_share(before: dict[int, Any], after: dict[int, Any]) -> dict[str, Any]:
    """Hits and misses of the list and state caches during the load, summed over the
    processes answered both times (warm-up included)."""
    out: dict[str, Any] = {"processes": sorted(set(before) & set(after))}
    for cache in ("list_cache", "state_cache"):
        hits = sum(after[p][cache]["hits"] - before[p][cache]["hits"] for p in out["processes"])
        misses = sum(
            after[p][cache]["misses"] - before[p][cache]["misses"] for p in out["processes"]
        )
        total = hits + misses
        out[cache] = {
            "hits": hits,
            "misses": misses,
            "hit_share": round(hits / total, 4) if total else None,
        }
    return out


def _memory(pid: int, role: str = "supervisor") -> list[dict[str, Any]]:
    """Peak (VmHWM) and current (VmRSS) resident memory of a process and its children
    (``tastebud serve --workers N``: the supervisor, the workers, multiprocessing's resource
    tracker), MiB, from /proc."""
    out: list[dict[str, Any]] = []
    try:
        fields = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        )
        out.append(
            {
                "pid": pid,
                "role": role,
                "peak_rss_mib": round(int(fields["VmHWM"].split()[0]) / 1024),
                "rss_mib": round(int(fields["VmRSS"].split()[0]) / 1024),
            }
        )
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except (OSError, KeyError, ValueError):
        return out
    for child in children:
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        out += _memory(int(child), "worker" if b"multiprocessing-fork" in cmdline else "other")
    return out


def _profile_summary(raw: Path, top: int = 15) -> dict[str, Any] | None:
    """Where a py-spy ``--format raw`` profile's samples fell: the share of all samples
    whose stack holds each of tastebud's functions (inclusive: what the service's own code
    spends, callees included) and whose innermost frame is each function (self), the
    ``top`` of each, functions named as ``name (file)`` with line numbers dropped."""
    try:
        lines = raw.read_text().splitlines()
    except OSError:
        return None
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        for frame in {f for f in frames if "tastebud/" in f}:
            inclusive[frame] += count
        if frames:
            own[frames[-1]] += count
    if not total:
        return None

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)]

    return {"samples": total, "inclusive_pct": shares(inclusive), "self_pct": shares(own)}


#: The server's API key (events and admin calls send it; the load clients run in processes
#: of their own, so it is a constant: the server lives in a temporary folder for one run).
API_KEY = "serve-load-benchmark-key"


def _server_env(
    tmp: Path,
    retrain_every: float,
    offline_metrics: bool = True,
    model_params: str | None = None,
    pipeline: str | None = None,
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASTEBUD_")}
    if "TASTEBUD_DATA" in os.environ:
        env["TASTEBUD_DATA"] = os.environ["TASTEBUD_DATA"]
    env["TASTEBUD_LOG_LEVEL"] = "warning"
    env["TASTEBUD_MODEL_DIR"] = str(tmp / "models")
    env["TASTEBUD_API_KEY"] = API_KEY  # as in production: writes and admin need the key
    if retrain_every > 0:
        env["TASTEBUD_RETRAIN_EVERY_S"] = str(retrain_every)
    if not offline_metrics:
        env["TASTEBUD_EVALUATE_ON_RETRAIN"] = "false"
    if model_params:
        env["TASTEBUD_MODEL_PARAMS"] = model_params
    if pipeline:
        env["TASTEBUD_PIPELINE"] = pipeline
    return env


def _wait_ready(server: subprocess.Popen[bytes], base: str, limit_s: float, log: Path) -> Any:
    deadline = time.monotonic() + limit_s
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited ({server.returncode}):\n{_tail(log)}")
        with contextlib.suppress(OSError, ValueError):
            code, body = _get_json(f"{base}/health/ready", timeout=2)
            if code == 200 and body.get("model_version") is not None:
                return body
        if time.monotonic() > deadline:
            raise RuntimeError(f"no model after {limit_s:.0f} s:\n{_tail(log)}")
        time.sleep(0.25)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


def _stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _run_client(cfg: dict[str, Any], tmp: Path, name: str) -> dict[str, Any]:
    cfg = {**cfg, "result_path": str(tmp / f"{name}.result.json")}
    config_path = tmp / f"{name}.config.json"
    config_path.write_text(json.dumps(cfg))
    limit = cfg["warmup"] + cfg["duration"] + cfg["timeout"] + 60
    subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--client-child", str(config_path)],
        check=True,
        timeout=limit,
    )
    return dict(json.loads(Path(cfg["result_path"]).read_text()))


def _server_route_means(metrics_text: str) -> dict[str, dict[str, float]]:
    """Per-route count and sum of the server's own request timer (Prometheus text)."""
    out: dict[str, dict[str, float]] = {}
    pattern = re.compile(r'^tastebud_request_seconds_(sum|count)\{route="([^"]*)"\} (\S+)$')
    for line in metrics_text.splitlines():
        match = pattern.match(line)
        if match:
            out.setdefault(match.group(2), {})[match.group(1)] = float(match.group(3))
    return out


def _percentiles(values: list[float]) -> dict[str, float | None]:
    import numpy as np

    if not values:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}
    arr = np.asarray(values, dtype=np.float64) * 1e3
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {
        "p50_ms": round(float(p50), 3),
        "p90_ms": round(float(p90), 3),
        "p99_ms": round(float(p99), 3),
        "max_ms": round(float(arr.max()), 3),
        "mean_ms": round(float(arr.mean()), 3),
    }


def _summarise(raw: dict[str, Any], rates: dict[str, float], duration: float) -> dict[str, Any]:
    """Latency and error statistics of one client run (measured window only)."""
    out: dict[str, Any] = {}
    marks = raw["marks"]
    for kind in KINDS:
        part = raw["requests"][kind]
        ok = [i for i, code in enumerate(part["status"]) if 200 <= code < 300]
        latency = [part["latency_s"][i] for i in ok]
        service = [part["service_s"][i] for i in ok]
        last_done = max((part["done_at"][i] for i in ok), default=0.0)
        errors = len(part["status"]) - len(ok)
        out[kind] = {
            "offered_rps": rates[kind],
            "requests": len(part["status"]),
            "ok": len(ok),
            "errors": errors,
            "achieved_rps": round(len(ok) / max(last_done, duration), 2) if ok else 0.0,
            **_percentiles(latency),
            "service": _percentiles(service),
        }
    lag = raw["timer_lag_s"]
    client_cpu = marks["drained_client_cpu"] - marks["window_start_client_cpu"]
    window = marks["drained_at"] - marks["window_start_at"]
    n_requests = sum(out[kind]["requests"] for kind in KINDS)
    span = marks["window_end_at"] - marks["window_start_at"]

    def used(key: str) -> float | None:  # CPU seconds over the measured window
        start, end = marks.get(f"window_start_{key}"), marks.get(f"window_end_{key}")
        return None if start is None or end is None else end - start

    watched, machine = used("watched_cpu"), used("machine_cpu")
    client_window = used("client_cpu") or 0.0
    others = None
    if machine is not None and watched is not None:
        others = round(100 * max(machine - watched - client_window, 0.0) / span, 1)
    out["client"] = {
        "cpu_us_per_request": round(1e6 * client_cpu / max(n_requests, 1), 1),
        "cpu_percent_of_one_core": round(100 * client_cpu / window, 1),
        "timer_lag_ms": _percentiles(lag),
        "connections_opened": raw["connections_opened"],
        "connections_peak": raw["connections_peak"],
        "stale_connection_retries": raw["stale_retries"],
    }
    out["server_cpu_percent_of_one_core"] = (
        None if watched is None else round(100 * watched / span, 1)
    )
    # everything else the machine ran meanwhile (other processes, the kernel's own work)
    out["other_cpu_percent_of_one_core"] = others
    out["loadavg_1min"] = [marks.get("window_start_loadavg"), marks.get("window_end_loadavg")]
    out["short_lists"] = raw["short_lists"]
    out["error_reasons"] = raw["error_reasons"]
    out["error_samples"] = raw["error_samples"]
    return out


def _source(package: Path) -> dict[str, Any]:
    """Where the served tastebud came from: its folder, and the git commit (and whether its
    files differ from it) when the folder is in a git checkout."""
    out: dict[str, Any] = {"tastebud_source": str(package)}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = ["git", "-C", str(package)]
        commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True)
        if commit.returncode == 0:
            status = subprocess.run(
                [*git, "status", "--porcelain", "--", "."], capture_output=True, text=True
            )
            out["git_commit"] = commit.stdout.strip()
            out["git_dirty"] = bool(status.stdout.strip())
    return out


def _machine() -> dict[str, Any]:
    import fastapi
    import numpy as np
    import starlette
    import uvicorn

    import tastebud

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "numpy": np.__version__,
        "fastapi": fastapi.__version__,
        "starlette": starlette.__version__,
        "uvicorn": uvicorn.__version__,
        "uvicorn_loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "uvicorn_http": "httptools" if importlib.util.find_spec("httptools") else "h11",
        "tastebud": getattr(tastebud, "__version__", None),
        **_source(Path(tastebud.__file__).resolve().parent),
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def to_markdown(result: dict[str, Any]) -> str:
    cfg, m = result["config"], result["machine"]
    load = result["load"]
    lines = [
        "# Service load"
        + (" at scale" if result.get("scale") else "")
        + ": top-10 recommendations while events stream in",
        "",
        f"{m['platform']}, Python {m['python']}, {m['cpus_usable']} usable CPUs, "
        f"uvicorn {m['uvicorn']} ({m['uvicorn_loop']} + {m['uvicorn_http']}), FastAPI "
        f"{m['fastapi']}; {m['date_utc']}. tastebud from {m['tastebud_source']}"
        + (
            f" (commit {m['git_commit'][:10]}{', with local changes' if m['git_dirty'] else ''})"
            if m.get("git_commit")
            else ""
        )
        + ".",
        "",
        *([f"Note: {cfg['note']}", ""] if cfg.get("note") else []),
        f"Data: {result['data']['name']} ({result['data']['users']:,} users, "
        f"{result['data']['items']:,} items, {result['data']['events']:,} events) in SQLite; "
        f"model version {result['server']['model_version']} "
        f"({result['server'].get('model') or 'model'}, first fit at start; "
        f"ready after {result['server']['ready_after_s']:.1f} s).",
        "",
        f"Load: {cfg['generator']}; {cfg['arrivals']} arrivals, {cfg['rate']:g} "
        f"recommendation requests/s (k={cfg['k']}) + {cfg['events_rate']:g} events/s, "
        f"{cfg['warmup']:g} s warm-up then {cfg['duration']:g} s measured; latency from the "
        "intended start (service = from the write to the last byte). Times in ms.",
        "",
        "| run | requests | offered/s | achieved/s | errors | p50 | p90 | p99 | max | "
        "service p50 | service p99 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    runs = [("tastebud", load)]
    if result.get("calibration"):
        runs.append(("stub floor", result["calibration"]))
    for label, run in runs:
        for kind in KINDS:
            r = run[kind]
            lines.append(
                f"| {label} {kind} | {r['requests']:,} | {r['offered_rps']:g} | "
                f"{r['achieved_rps']:.1f} | {r['errors']} | {_fmt(r['p50_ms'])} | "
                f"{_fmt(r['p90_ms'])} | {_fmt(r['p99_ms'])} | {_fmt(r['max_ms'])} | "
                f"{_fmt(r['service']['p50_ms'])} | {_fmt(r['service']['p99_ms'])} |"
            )
    target = result["target"]
    client = load["client"]
    lines += [
        "",
        f"Target (p99 <= {target['p99_ms']:g} ms for recommendations at >= "
        f"{target['rate']:g} requests/s, 0 errors): **{'met' if target['met'] else 'not met'}**"
        f" -- p99 {_fmt(load['recommendations']['p99_ms'])} ms at "
        f"{load['recommendations']['achieved_rps']:.1f}/s, "
        f"{load['recommendations']['errors'] + load['events']['errors']} errors.",
        "",
        f"Client: {client['cpu_us_per_request']:.0f} µs CPU per request, "
        f"{client['cpu_percent_of_one_core']:.1f}% of one core; timer lag p99 "
        f"{_fmt(client['timer_lag_ms']['p99_ms'])} ms; {client['connections_opened']} "
        f"connections opened (peak {client['connections_peak']} open), "
        f"{client['stale_connection_retries']} retried after the server closed an idle one. "
        "Server CPU during the "
        f"window: {_fmt(load['server_cpu_percent_of_one_core'], 0)}% of one core; everything "
        f"else on the machine: {_fmt(load['other_cpu_percent_of_one_core'], 0)}% of one core "
        f"(1-min load average {_fmt(load['loadavg_1min'][0])} -> "
        f"{_fmt(load['loadavg_1min'][1])}). "
        f"Lists shorter than k: {load['short_lists']}.",
    ]
    means = result["server"].get("in_app_mean_ms") or {}
    if means:
        inner = ", ".join(f"{route} {ms:.2f} ms" for route, ms in means.items())
        lines += [
            "",
            f"Server's own mean time per request (its /metrics, warm-up and any backlog "
            f"included): {inner}; /metrics answered "
            f"{_fmt(result['server']['metrics_answered_after_s'], 1)} s after the load ended.",
        ]
    if load["error_reasons"]:
        counts = ", ".join(f"{n:,} {why}" for why, n in load["error_reasons"].items())
        first = "; ".join(load["error_samples"])
        lines += ["", f"Errors: {counts}. First of each kind: {first}"]
    if result.get("scale"):
        lines += _scale_markdown(result["scale"], result.get("profile_summary"))
    changed = [
        f"{what} `{cfg[key]}`"
        for what, key in (("model parameters", "model_params"), ("pipeline", "pipeline"))
        if cfg.get(key)
    ]
    if cfg.get("offline_metrics_at_start") is False:
        changed.append("no offline metrics before the first version is served")
    if changed:
        lines += ["", f"Server settings changed for this run: {'; '.join(changed)}."]
    if result.get("profile"):
        lines += ["", f"Profile (py-spy, this run's latencies are perturbed): {result['profile']}"]
    lines.append("")
    return "\n".join(lines)


def _scale_markdown(scale: dict[str, Any], profile: dict[str, Any] | None) -> list[str]:
    """The scale variant's lines: the import, the caches' hit shares, memory, profile."""
    lines: list[str] = []
    imp = scale.get("import") or {}
    reused = imp.get("reused")
    how = f"copied from {reused} in {imp.get('copy_s')} s; first " if reused else ""
    if imp.get("import_s") is not None:
        lines += [
            "",
            f"Import: {how}`Storage.import_dataset` took {imp['import_s']:g} s "
            f"({imp['import_rows_per_s']:,} rows/s; {imp['users']:,} users, {imp['items']:,} "
            f"items, {imp['events']:,} events; SQLite file {imp['db_mib']:,} MiB; generated "
            f"in {imp['generate_s']:g} s). The first process had the model "
            f"{scale['first_process_ready_after_s']:.1f} s after the server was launched.",
        ]
    caches = scale["caches"]
    lists, states = caches["list_cache"], caches["state_cache"]

    def pct(share: float | None) -> str:
        return "—" if share is None else f"{100 * share:.2f}%"

    lines += [
        "",
        f"Caches during the load (every process's `/admin/stats`, {len(caches['processes'])} "
        f"processes, warm-up included): lists served again {lists['hits']:,}, rebuilt "
        f"{lists['misses']:,} (hits {pct(lists['hit_share'])}); user states kept "
        f"{states['hits']:,}, read {states['misses']:,} (hits {pct(states['hit_share'])}).",
    ]
    seen = scale.get("worker_pids_seen")
    if seen is not None:
        lines += [
            "",
            f"Worker processes seen from launch to the end of the load: {len(seen)} "
            f"({', '.join(map(str, seen))})"
            + (
                " -- more than --workers: the supervisor replaced some."
                if len(seen) > scale.get("workers", 2)
                else "."
            ),
        ]
    for label, key in (("at ready", "memory_at_ready"), ("after the load", "memory_after_load")):
        procs = scale.get(key) or []
        if procs:
            inner = ", ".join(
                f"{m.get('role', 'process')} {m['pid']} {m['rss_mib']:,} MiB "
                f"(peak {m['peak_rss_mib']:,})"
                for m in procs
            )
            lines += ["", f"Server memory {label} (RSS, peak since start): {inner}."]
    if profile:
        lines += [
            "",
            f"Where the server's {profile['samples']:,} py-spy samples fell (every process "
            "and thread; % of samples whose stack holds the tastebud function / ends in the "
            "function):",
            "",
            "| function (inclusive) | % | function (self) | % |",
            "|---|---:|---|---:|",
        ]
        inc, own = profile["inclusive_pct"], profile["self_pct"]
        for i in range(max(len(inc), len(own))):
            a = inc[i] if i < len(inc) else ("", "")
            b = own[i] if i < len(own) else ("", "")
            lines.append(f"| `{a[0]}` | {a[1]} | `{b[0]}` | {b[1]} |")
    return lines


def _start_profile(
    pid: int, seconds: float, out: Path, *, raw: bool = False
) -> subprocess.Popen[bytes] | None:
    """py-spy on the server and its workers; ``raw``: collapsed stacks (summed by
    :func:`_profile_summary`) instead of a flame graph."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        _log("py-spy not found; --profile ignored")
        return None
    command = [py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds))]
    command += [
        "--rate",
        "200",
        "--threads",
        "--nonblocking",
        "--subprocesses",
        "--output",
        str(out),
    ]
    if raw:
        command += ["--format", "raw"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run(args: argparse.Namespace) -> dict[str, Any]:
    machine = _machine()  # before the server starts: the code it loads is the code named here
    events_rate = args.rate * args.events_share
    rates = {"recommendations": args.rate, "events": events_rate}
    stem = _stem(args)
    profile_path = args.out / (
        f"{stem}.profile.txt" if args.size is not None else "serve_load.profile.svg"
    )
    with tempfile.TemporaryDirectory(prefix="serve_load-") as tmp_name:
        tmp = Path(tmp_name)
        started = time.perf_counter()
        data_info: dict[str, Any] | None = None
        if args.size is not None:
            name, users, items, n_events, data_info = _prepare_synthetic(
                tmp / "bench.db", args.size, args.seed, args.data_cache
            )
        else:
            name, users, items, n_events = _prepare_database(tmp / "bench.db", args.smoke)
        _log(f"imported {name}: {n_events:,} events ({time.perf_counter() - started:.1f} s)")
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        log_path = tmp / "server.log"
        command = [str(TASTEBUD), "serve", "--db", f"sqlite:///{tmp / 'bench.db'}"]
        command += ["--port", str(port), "--workers", str(args.workers)]
        launched = time.perf_counter()
        with log_path.open("wb") as log_file:
            server = subprocess.Popen(
                command,
                cwd=tmp,
                env=_server_env(
                    tmp,
                    args.retrain_every,
                    _offline_metrics(args),
                    args.model_params,
                    args.pipeline,
                ),
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        watcher = _Workers(server.pid) if args.size is not None else None
        try:
            ready = _wait_ready(server, base, args.ready_timeout, log_path)
            first_ready_after = time.perf_counter() - launched
            if args.size is not None:  # every process has the model before the load
                _wait_all_ready(server, base, args.workers, args.ready_timeout)
            ready_after = time.perf_counter() - launched
            _log(f"server ready after {ready_after:.1f} s, model version {ready['model_version']}")
            model_info: dict[str, Any] = {}
            with contextlib.suppress(OSError, ValueError, TypeError):
                _, versions = _get_json(f"{base}/admin/models")
                active = [v for v in versions if v.get("active")]
                if active:
                    model_info = {"model": active[0]["model"], "metrics": active[0]["metrics"]}
            code, first = _get_json(
                f"{base}/users/{quote(users[0], safe='')}/recommendations?k={args.k}"
            )
            sources = sorted({r["source"] for r in first["items"]}) if code == 200 else []
            cfg = {
                "host": "127.0.0.1",
                "port": port,
                "k": args.k,
                "rate": args.rate,
                "events_rate": events_rate,
                "users": users,
                "items": items,
                "arrivals": args.arrivals,
                "seed": args.seed,
                "timeout": args.timeout,
                "connections": args.connections,
                "max_connections": args.max_connections,
                "cpu": args.client_cpu,
            }
            calibration = None
            if args.calibrate > 0:
                stub = subprocess.Popen(
                    [sys.executable, str(Path(__file__).resolve()), "--stub-child"],
                    stdout=subprocess.PIPE,
                )
                try:
                    assert stub.stdout is not None
                    stub_port = int(stub.stdout.readline())
                    _log(f"calibrating the client against a stub for {args.calibrate:g} s")
                    raw = _run_client(
                        {
                            **cfg,
                            "port": stub_port,
                            "warmup": min(1.0, args.warmup),
                            "duration": args.calibrate,
                            "watch_pid": stub.pid,
                        },
                        tmp,
                        "calibration",
                    )
                    calibration = _summarise(raw, rates, args.calibrate)
                finally:
                    _stop(stub)
            memory_ready = _memory(server.pid) if args.size is not None else None
            caches_before = (
                _cache_stats("127.0.0.1", port, args.workers) if args.size is not None else None
            )
            before = _route_means(base, 30)
            profiler = None
            if args.profile:
                profiler = _start_profile(
                    server.pid, args.warmup + args.duration, profile_path, raw=args.size is not None
                )
            _log(
                f"load: {args.rate:g} recommendations/s + {events_rate:g} events/s, "
                f"{args.warmup:g} s warm-up + {args.duration:g} s"
            )
            raw = _run_client(
                {**cfg, "warmup": args.warmup, "duration": args.duration, "watch_pid": server.pid},
                tmp,
                "load",
            )
            load = _summarise(raw, rates, args.duration)
            if profiler is not None:
                try:
                    profiler.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    profiler.kill()
                    profiler = None
            drain_start = time.perf_counter()
            after = _route_means(base, 120)
            drained_after = time.perf_counter() - drain_start
            scale: dict[str, Any] | None = None
            if args.size is not None and caches_before is not None:
                scale = {
                    "import": data_info,
                    "first_process_ready_after_s": round(first_ready_after, 2),
                    "caches": _cache_share(
                        caches_before, _cache_stats("127.0.0.1", port, args.workers)
                    ),
                    "memory_at_ready": memory_ready,
                    "memory_after_load": _memory(server.pid),
                    "workers": args.workers,
                    "worker_pids_seen": None if watcher is None else watcher.stop(),
                }
            in_app: dict[str, float] = {}
            for route, stats in (after or {}).items():
                count = stats.get("count", 0) - (before or {}).get(route, {}).get("count", 0)
                total = stats.get("sum", 0) - (before or {}).get(route, {}).get("sum", 0)
                if count > 0 and route in ("/users/{user_id}/recommendations", "/events"):
                    in_app[route] = round(1e3 * total / count, 3)
        finally:
            _stop(server)
        server_log = _tail(log_path, 20)
    recs = load["recommendations"]
    errors = recs["errors"] + load["events"]["errors"]
    met = (
        recs["p99_ms"] is not None
        and recs["p99_ms"] <= TARGET_P99_MS
        and recs["achieved_rps"] >= TARGET_RATE
        and errors == 0
    )
    return {
        "benchmark": "serve_load",
        "smoke": args.smoke,
        "machine": machine,
        "config": {
            "generator": (
                "asyncio HTTP/1.1 client in its own process (open loop, keep-alive"
                + (f", pinned to CPU {args.client_cpu}" if args.client_cpu is not None else "")
                + ")"
            ),
            "rate": args.rate,
            "events_rate": events_rate,
            "events_share": args.events_share,
            "k": args.k,
            "duration": args.duration,
            "warmup": args.warmup,
            "calibrate": args.calibrate,
            "arrivals": args.arrivals,
            "timeout_s": args.timeout,
            "max_connections": args.max_connections,
            "client_cpu": args.client_cpu,
            "retrain_every_s": args.retrain_every,
            "workers": args.workers,
            "offline_metrics_at_start": _offline_metrics(args),
            "model_params": args.model_params,
            "pipeline": args.pipeline,
            "seed": args.seed,
            "synthetic_size": None
            if args.size is None
            else dict(zip(("users", "items", "events"), args.size, strict=True)),
            "note": args.note,
        },
        "data": {"name": name, "users": len(users), "items": len(items), "events": n_events},
        "server": {
            "model_version": ready["model_version"],
            **model_info,
            "ready_after_s": round(ready_after, 2),
            "first_list_sources": sources,
            "in_app_mean_ms": in_app,
            # how long /metrics took to answer after the load: a backlog being worked off
            "metrics_answered_after_s": round(drained_after, 2) if after is not None else None,
            "log_tail": server_log,
        },
        "target": {"p99_ms": TARGET_P99_MS, "rate": TARGET_RATE, "met": met},
        "load": load,
        "calibration": calibration,
        "profile": str(profile_path) if profiler is not None else None,
        **({} if scale is None else {"scale": scale}),
        **(
            {"profile_summary": _profile_summary(profile_path)}
            if profiler is not None and args.size is not None
            else {}
        ),
    }


def _offline_metrics(args: argparse.Namespace) -> bool:
    """Whether the server scores its first version on a holdout before serving it
    (``evaluate_on_retrain``): not in the scale variant unless asked -- that replays every
    test user of a random 20% holdout through the pipeline, nearly all 1M users (a
    development run on 1M users and 1M events was still replaying them 20 minutes after
    start) -- a start-up cost, not the serving measured here."""
    return args.size is None or args.offline_metrics


def _stem(args: argparse.Namespace) -> str:
    """The results' file name: the smoke run and the scale variant never overwrite the
    full results."""
    if args.size is not None:
        return "serve_load_scale" + (f".{args.tag}" if args.tag else "")
    return "serve_load.smoke" if args.smoke else "serve_load"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, help="recommendation requests/s (default: 300)")
    parser.add_argument(
        "--events-share",
        type=float,
        default=0.1,
        help="events/s as a share of --rate, sent on top (default: %(default)s)",
    )
    parser.add_argument("--duration", type=float, help="measured seconds (default: 60)")
    parser.add_argument("--warmup", type=float, help="discarded seconds first (default: 5)")
    parser.add_argument(
        "--calibrate", type=float, help="seconds against the stub first, 0: none (default: 5)"
    )
    parser.add_argument("--k", type=int, default=10, help="list length (default: %(default)s)")
    parser.add_argument("--arrivals", choices=("uniform", "poisson"), default="uniform")
    parser.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    parser.add_argument("--connections", type=int, default=8, help="opened before the clock")
    parser.add_argument("--max-connections", type=int, default=256)
    parser.add_argument("--client-cpu", type=int, help="pin the client to this CPU")
    parser.add_argument(
        "--retrain-every", type=float, default=0.0, help="server retrains every N s (0: never)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="server processes, `tastebud serve --workers` (default: %(default)s, one per core)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--ready-timeout", type=float, help="seconds (default: 300; 3600 with --scale)"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="CI: sample data, 3 s at 20/s, 1 s warm-up"
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the server (perturbs it)")
    parser.add_argument(
        "--scale",
        action="store_true",
        help="issue 19's variant: synthetic power-law data, 1M users, 100K items, 10M events "
        "(--users/--items/--events change them); results serve_load_scale.*",
    )
    parser.add_argument("--users", type=int, help="synthetic users (implies --scale)")
    parser.add_argument("--items", type=int, help="synthetic items (implies --scale)")
    parser.add_argument("--events", type=int, help="synthetic interactions (implies --scale)")
    parser.add_argument(
        "--model-params",
        help="the served model's parameters as JSON (TASTEBUD_MODEL_PARAMS; default: its "
        'defaults), e.g. \'{"reg": 100}\' for quicker development runs than reg="auto"',
    )
    parser.add_argument(
        "--pipeline",
        help="the server's pipeline settings as JSON (TASTEBUD_PIPELINE; default: the "
        "defaults), e.g. generators without item_to_item, to see what a stage costs",
    )
    parser.add_argument(
        "--offline-metrics",
        action="store_true",
        help="with --scale: score the first version on a holdout before serving (slow)",
    )
    parser.add_argument(
        "--data-cache",
        type=Path,
        help="keep the imported synthetic database in this folder and copy it next time",
    )
    parser.add_argument("--note", default="", help="a line of text for the report")
    parser.add_argument(
        "--tag",
        help="with --scale: results serve_load_scale.TAG.* (a variant beside the main run)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--client-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--stub-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.client_child is not None:
        _client_child(args.client_child)
        return 0
    if args.stub_child:
        _stub_child()
        return 0

    defaults = (20.0, 3.0, 1.0, 1.0) if args.smoke else (300.0, 60.0, 5.0, 5.0)
    for name, default in zip(("rate", "duration", "warmup", "calibrate"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.rate <= 0 or args.duration <= 0 or args.warmup < 0 or args.events_share < 0:
        parser.error("--rate and --duration must be > 0, --warmup and --events-share >= 0")
    args.size = None
    if args.scale or any(v is not None for v in (args.users, args.items, args.events)):
        if args.smoke:
            parser.error("--smoke runs the sample data: leave out --scale/--users/--items/--events")
        given = (args.users, args.items, args.events)
        args.size = tuple(d if v is None else v for v, d in zip(given, SCALE, strict=True))
        if min(args.size) < 1:
            parser.error("--users, --items and --events must be >= 1")
    elif args.data_cache is not None or args.tag:
        parser.error("--data-cache and --tag are for the synthetic data of --scale")
    if args.tag and not re.fullmatch(r"[A-Za-z0-9_-]+", args.tag):
        parser.error("--tag: letters, digits, - and _ only")
    if args.ready_timeout is None:
        args.ready_timeout = 300.0 if args.size is None else 3600.0
    args.out.mkdir(parents=True, exist_ok=True)

    result = run(args)
    markdown = to_markdown(result)
    write_results(args.out, _stem(args), result, markdown)  # never over the full results
    print(markdown)
    errors = result["load"]["recommendations"]["errors"] + result["load"]["events"]["errors"]
    return 1 if args.smoke and errors else 0


if __name__ == "__main__":
    sys.exit(main())
