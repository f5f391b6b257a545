"""Crash safety of the real HTTP server: ``kill -9`` it while clients stream events.

After a restart on the same database every acknowledged event (its POST answered 201) must be
stored exactly once, with the ``seq`` it was acknowledged with; a batch is there whole or not
at all; and posting an acknowledged event again is answered as a duplicate of the stored one.
Runs against SQLite and PostgreSQL (see conftest.py).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tastebud.service.storage import Storage

TASTEBUD = str(Path(sys.executable).parent / "tastebud")
CLIENTS = 4
USERS = [f"user-{k}" for k in range(12)]
ITEMS = [f"item-{k}" for k in range(40)]
TYPES = ["like", "view", "click", "purchase", "dislike", "rating"]
MIN_ACKED = 100  # acknowledged before the kill, or the test proves nothing
TARGET_ACKED = 400  # kill once this many are acknowledged...
MIN_STREAM_S, MAX_STREAM_S = 1.5, 3.0  # ...but stream for at least / at most this long,
GIVE_UP_S = 10.0  # or longer on a slow machine until MIN_ACKED are, but never longer than this
READY_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(server: subprocess.Popen[bytes], sig: int) -> None:
    """Send ``sig`` to the server's whole process group and reap it (SIGKILL as a last resort)."""
    if server.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, sig)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=15)


@contextlib.contextmanager
def _server(url: str, workdir: Path, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``tastebud serve`` on ``url`` in its own process group, ready; stopped on exit."""
    port = _free_port()
    env = {
        **os.environ,
        "TASTEBUD_LOG_LEVEL": "warning",
        "TASTEBUD_CREATE_MISSING_ITEMS": "true",
        "TASTEBUD_MODEL_DIR": str(workdir / "models"),
        # No background training: this test is about the event path only.
        "TASTEBUD_MIN_EVENTS_TO_TRAIN": str(10**9),
        "TASTEBUD_RETRAIN_EVERY_S": "0",
        "TASTEBUD_INSECURE": "true",
    }
    with log.open("ab") as out:
        server = subprocess.Popen(
            [TASTEBUD, "serve", "--db", url, "--host", "127.0.0.1", "--port", str(port)],
            cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, f"the server exited early:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"the server was not ready:\n{log.read_text()}"
            time.sleep(0.1)
        yield server, base
    finally:
        _stop(server, signal.SIGTERM)


@dataclass
class Ledger:
    """What the clients sent and what the server answered, shared by the client threads."""

    sent: dict[str, dict[str, Any]] = field(default_factory=dict)  # cid -> event
    acked: dict[str, int] = field(default_factory=dict)  # cid -> seq answered with 201
    unknown: set[str] = field(default_factory=set)  # cids whose request got no answer
    batches: list[list[str]] = field(default_factory=list)  # cids of each batch posted
    refused: list[str] = field(default_factory=list)  # answers other than 201
    lock: threading.Lock = field(default_factory=threading.Lock)

    def n_acked(self) -> int:
        with self.lock:
            return len(self.acked)


def _event(rng: random.Random, cid: str) -> dict[str, Any]:
    kind = rng.choice(TYPES)
    out: dict[str, Any] = {
        "user_id": rng.choice(USERS),
        "item_id": rng.choice(ITEMS),
        "type": kind,
        "client_event_id": cid,
    }
    if kind == "rating":
        out["value"] = float(rng.randint(1, 5))
    return out


def _client(n: int, base: str, ledger: Ledger, stop: threading.Event) -> None:
    """Post single events and batches of 2-6 until told to stop or the server goes away."""
    rng = random.Random(n)
    with httpx.Client(base_url=base, timeout=10) as http:
        for k in range(1_000_000):
            if stop.is_set():
                return
            size = 1 if rng.random() < 0.5 else rng.randint(2, 6)
            events = [_event(rng, f"c{n}-r{k}-e{j}") for j in range(size)]
            cids = [e["client_event_id"] for e in events]
            with ledger.lock:
                ledger.sent.update(zip(cids, events, strict=True))
                if size > 1:
                    ledger.batches.append(cids)
            try:
                if size == 1:
                    res = http.post("/events", json=events[0])
                else:
                    res = http.post("/events/batch", json={"events": events})
            except httpx.TransportError:
                with ledger.lock:
                    ledger.unknown.update(cids)
                return  # the server is gone
            with ledger.lock:
                if res.status_code != 201:
                    ledger.refused.append(f"{res.status_code} {res.text[:300]}")
                    ledger.unknown.update(cids)
                    continue
                answers = [res.json()] if size == 1 else res.json()["results"]
                assert len(answers) == size
                for cid, answer in zip(cids, answers, strict=True):
                    assert answer["duplicate"] is False, answer
                    ledger.acked[cid] = answer["seq"]


def _stored(store: Storage) -> dict[str, dict[str, Any]]:
    """Every stored event by client_event_id, read through Storage; fails on any repeat."""
    rows = [row for user in USERS for row in store.user_events(user)]
    assert len(rows) == store.count_events()  # no event of any other user
    cids = [row["client_event_id"] for row in rows]
    assert None not in cids
    assert len(set(cids)) == len(cids), "an event is stored twice"
    return {row["client_event_id"]: row for row in rows}


@pytest.fixture
def db_url(storage_url: str) -> Iterator[str]:
    """``storage_url``; on PostgreSQL in a schema of its own, so that other tests running on
    the same database at the same time (and dropping its tables) cannot disturb this one."""
    if not storage_url.startswith("postgresql"):
        yield storage_url
        return
    schema = f"crash_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(storage_url)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        url = sa.make_url(storage_url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


@pytest.mark.slow
def test_acknowledged_events_survive_kill_9_of_the_server(db_url: str, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    ledger = Ledger()
    stop = threading.Event()
    pool = ThreadPoolExecutor(CLIENTS, thread_name_prefix="client")
    clients: list[Future[None]] = []

    # -- stream events, then kill -9 the server in the middle of it ------------------------------
    with _server(db_url, tmp_path, log) as (server, base):
        try:
            started = time.monotonic()
            clients = [pool.submit(_client, n, base, ledger, stop) for n in range(CLIENTS)]
            while True:
                elapsed, acked = time.monotonic() - started, ledger.n_acked()
                if (
                    (elapsed >= MIN_STREAM_S and acked >= TARGET_ACKED)
                    or (elapsed >= MAX_STREAM_S and acked >= MIN_ACKED)
                    or elapsed >= GIVE_UP_S
                ):
                    break
                for client in clients:  # one stopped early: show why
                    assert not client.done(), client.result() or log.read_text()
                time.sleep(0.02)
            os.killpg(server.pid, signal.SIGKILL)
            assert server.wait(timeout=15) == -signal.SIGKILL
        finally:
            if server.poll() is None:  # failed before the kill; else they must notice it alone
                stop.set()
            wait(clients, timeout=30)
            pool.shutdown(wait=False, cancel_futures=True)
    for client in clients:
        assert client.done(), "a client did not notice the kill"
        client.result()  # re-raises what went wrong in it
    assert not ledger.refused, ledger.refused[:5]
    assert len(ledger.acked) >= MIN_ACKED, f"only {len(ledger.acked)} events acknowledged"
    assert ledger.unknown, "no client saw the server go away"

    # -- restart on the same database: what does Storage see? -------------------------------------
    with Storage(db_url) as store:
        store.migrate()
        stored = _stored(store)
    assert set(stored) <= set(ledger.sent), "events nobody sent"
    lost = sorted(set(ledger.acked) - set(stored))
    assert not lost, f"{len(lost)} acknowledged events lost, e.g. {lost[:5]}"
    assert set(stored) - set(ledger.acked) <= ledger.unknown
    for cid, row in stored.items():
        sent = ledger.sent[cid]
        assert (row["user_id"], row["item_id"], row["type"]) == (
            sent["user_id"],
            sent["item_id"],
            sent["type"],
        ), cid
        assert row["value"] == sent.get("value"), cid
        if cid in ledger.acked:
            assert row["seq"] == ledger.acked[cid], cid
    for batch in ledger.batches:  # all or nothing
        present = [cid in stored for cid in batch]
        assert all(present) or not any(present), f"batch stored in part: {batch} {present}"

    # -- ...and the restarted server? ------------------------------------------------------------
    with _server(db_url, tmp_path, log) as (_, base), httpx.Client(base_url=base) as http:
        over_http: dict[str, int] = {}
        for user in USERS:
            res = http.get(f"/users/{user}/events", params={"limit": 10_000})
            assert res.status_code == 200, (res.text, log.read_text()[-4000:])
            for row in res.json():
                assert row["client_event_id"] not in over_http, row
                over_http[row["client_event_id"]] = row["seq"]
        assert over_http == {cid: row["seq"] for cid, row in stored.items()}

        # re-posting acknowledged events is answered as the stored ones, and stores nothing
        rng = random.Random(0)
        acked = sorted(ledger.acked)
        for cid in rng.sample(acked, 20):
            res = http.post("/events", json=ledger.sent[cid])
            assert res.status_code == 201, (res.text, log.read_text()[-4000:])
            answer = res.json()
            assert (answer["seq"], answer["duplicate"]) == (ledger.acked[cid], True), cid
        again = rng.sample(acked, 10)
        res = http.post("/events/batch", json={"events": [ledger.sent[c] for c in again]})
        assert res.status_code == 201, (res.text, log.read_text()[-4000:])
        assert res.json()["stored"] == 0 and res.json()["duplicates"] == len(again)
        assert [r["seq"] for r in res.json()["results"]] == [ledger.acked[c] for c in again]

        # an event nobody knows the fate of is stored at most once when retried
        for cid in sorted(ledger.unknown):
            res = http.post("/events", json=ledger.sent[cid])
            assert res.status_code == 201, (res.text, log.read_text()[-4000:])
            assert res.json()["duplicate"] is (cid in stored), cid
            if cid in stored:
                assert res.json()["seq"] == stored[cid]["seq"], cid

        # the restarted server takes new events, with seqs never handed out before
        fresh = {"user_id": USERS[0], "item_id": ITEMS[0], "type": "like", "client_event_id": "new"}
        res = http.post("/events", json=fresh)
        assert res.status_code == 201, (res.text, log.read_text()[-4000:])
        assert res.json()["duplicate"] is False
        assert res.json()["seq"] > max(row["seq"] for row in stored.values())

    with Storage(db_url) as store:
        final = _stored(store)
    assert set(final) == set(stored) | ledger.unknown | {"new"}
