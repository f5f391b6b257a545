"""``tastebud serve --workers 2``: two processes on one port and one database. An event
stored through either shows in the next lists of both within a second, and a model version
trained by one is served by the other."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from serving import sample_server

pytestmark = pytest.mark.slow


def _fresh(base: str, path: str) -> httpx.Response:
    """One request on a new connection: the listening socket hands it to either worker."""
    with httpx.Client(base_url=base, timeout=10) as client:
        return client.get(path)


def _both_workers(base: str) -> set[int]:
    """Wait until two processes answer ready with the same model version."""
    deadline = time.monotonic() + 60
    seen: dict[int, int | None] = {}
    while time.monotonic() < deadline:
        ready = _fresh(base, "/health/ready").json()
        seen[ready["pid"]] = ready["model_version"]
        versions = set(seen.values())
        if len(seen) >= 2 and len(versions) == 1 and None not in versions:
            return set(seen)
        time.sleep(0.05)
    raise AssertionError(f"both workers did not come up with one model: {seen}")


def test_an_event_through_one_worker_shows_in_both_within_a_second(tmp_path: Path) -> None:
    with sample_server(tmp_path, workers=2) as base:
        pids = _both_workers(base)
        assert len(pids) == 2
        user = "u001"
        url = f"/users/{user}/recommendations?k=5"
        answered_by: set[int] = set()
        # warm both workers' kept states and lists for the user
        for _ in range(20):
            assert _fresh(base, url).status_code == 200
        top = _fresh(base, url).json()["items"][0]["item"]

        with httpx.Client(base_url=base, timeout=10) as client:
            stored = client.post(
                "/events", json={"user_id": user, "item_id": top, "type": "dislike"}
            )
        assert stored.status_code == 201
        acknowledged = time.monotonic()

        # every answer from then on, from either process, leaves the disliked item out
        # once a second has passed; the last one that still showed it came before that
        last_stale = None
        while time.monotonic() - acknowledged < 2.0:
            with httpx.Client(base_url=base, timeout=10) as client:
                pid = client.get("/health/live").json()["pid"]
                items = [row["item"] for row in client.get(url).json()["items"]]
            answered_by.add(pid)
            if top in items:
                last_stale = time.monotonic() - acknowledged
        assert answered_by == pids, "both workers answered"
        assert last_stale is None or last_stale < 1.0, last_stale
