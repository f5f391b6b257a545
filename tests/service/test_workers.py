"""``tastebud serve --workers 2``: two processes on one port and one database. An event
stored through either shows in the next lists of both within a second, and a model version
trained by one is served by the other."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from serving import sample_server
from tastebud.client import Client

pytestmark = pytest.mark.slow


def fresh(base: str) -> Client:
    """A client with its own connection: the listening socket hands it to either worker."""
    return Client(base, retries=0)


def _both_workers(base: str) -> set[int]:
    """Wait until two processes answer ready with the same model version."""
    deadline = time.monotonic() + 60
    seen: dict[int, int | None] = {}
    while time.monotonic() < deadline:
        with fresh(base) as client:
            ready = client.ready()
        seen[ready.pid] = ready.model_version
        versions = set(seen.values())
        if len(seen) >= 2 and len(versions) == 1 and None not in versions:
            return set(seen)
        time.sleep(0.05)
    raise AssertionError(f"both workers did not come up with one model: {seen}")


@pytest.mark.slow
def test_an_event_through_one_worker_shows_in_both_within_a_second(tmp_path: Path) -> None:
    with sample_server(tmp_path, workers=2) as base:
        pids = _both_workers(base)
        assert len(pids) == 2
        user = "u001"
        answered_by: set[int] = set()
        # warm both workers' kept states and lists for the user
        for _ in range(20):
            with fresh(base) as client:
                client.recommend(user, k=5)
        with fresh(base) as client:
            top = client.recommend(user, k=5).items[0].item
            client.add_event(user, top, "dislike")
        acknowledged = time.monotonic()

        # every answer from then on, from either process, leaves the disliked item out
        # once a second has passed; the last one that still showed it came before that
        last_stale = None
        while time.monotonic() - acknowledged < 2.0:
            with fresh(base) as client:
                pid = client.live()["pid"]
                items = [row.item for row in client.recommend(user, k=5).items]
            answered_by.add(pid)
            if top in items:
                last_stale = time.monotonic() - acknowledged
        assert answered_by == pids, "both workers answered"
        assert last_stale is None or last_stale < 1.0, last_stale
