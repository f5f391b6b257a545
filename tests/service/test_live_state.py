"""The engine's live state across processes: cached user states and popularity follow the
events table (new rows by seq, holes a slow transaction fills late, the deletions log).

Two engines over one database stand for two serving processes: ``here`` is the one under
test, ``there`` (or plain storage calls) writes the way another process would. Each test
runs on SQLite and, when it answers, PostgreSQL.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tastebud.service.engine import Engine
from tastebud.service.settings import Settings
from tastebud.service.storage import EVENTS, Storage


def _settings(url: str, tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(db=url, model_dir=tmp_path / "models", **overrides)


@pytest.fixture
def here(storage: Storage, storage_url: str, tmp_path: Path) -> Engine:
    for item in ("a", "b", "c", "d"):
        storage.upsert_item(item)
    engine = Engine(_settings(storage_url, tmp_path), storage)
    engine.start()
    return engine


def _like(storage: Storage, user: str, item: str, kind: str = "like") -> int:
    return int(storage.add_events([{"user_id": user, "item_id": item, "type": kind}])[0]["seq"])


def test_a_state_is_read_once_and_kept_until_the_user_has_news(
    here: Engine, storage: Storage
) -> None:
    _like(storage, "u", "a")
    assert here.user_state("u").values == {"a": 4.0}
    reads = here.state_cache_misses
    assert here.user_state("u").values == {"a": 4.0}
    assert here.state_cache_misses == reads and here.state_cache_hits >= 1

    _like(storage, "u", "b")  # written by another process: not seen yet
    assert here.user_state("u").values == {"a": 4.0}
    here.live.follow_events()
    assert here.user_state("u").values == {"a": 4.0, "b": 4.0}
    assert here.user_state("u").recent == ["b", "a"]


def test_this_process_writes_drop_the_state_before_they_are_answered(
    here: Engine, storage: Storage
) -> None:
    _like(storage, "u", "a")
    assert here.user_state("u").values == {"a": 4.0}
    _like(storage, "u", "a", "dislike")
    here.events_stored(["u"])  # what the app does before its 201
    state = here.user_state("u")
    assert state.values == {} and state.disliked == {"a"}


def test_deletions_elsewhere_reach_cached_states_and_popularity(
    here: Engine, storage: Storage
) -> None:
    for user, item in (("u", "a"), ("u", "b"), ("v", "b"), ("w", "c")):
        _like(storage, user, item)
    here.live.follow_events()
    assert here.user_state("u").values == {"a": 4.0, "b": 4.0}
    assert here.user_state("w").values == {"c": 4.0}
    assert dict(here.popular(3)) == {"b": 2.0, "a": 1.0, "c": 1.0}

    assert storage.delete_user("u")  # another process deletes u with their history
    here.live.follow_events()
    assert here.user_state("u").values == {}

    assert storage.delete_item("c")  # and an item with its events
    here.live.follow_events()
    assert here.user_state("w").values == {}
    assert "c" not in dict(here.popular(3))


def test_an_event_committed_after_a_later_seq_is_still_followed(
    here: Engine, storage: Storage
) -> None:
    """PostgreSQL hands out seqs before commit: a slow transaction may commit seq n after
    seq n + 1 was read. The hole is asked for again until it fills."""
    last = _like(storage, "u", "a")
    here.live.follow_events()
    assert here.user_state("v").values == {}

    def insert(seq: int, user: str, item: str) -> None:
        row = {
            "seq": seq, "user_id": user, "item_id": item, "type": "like", "value": None,
            "ts": time.time(), "client_event_id": None, "received_at": time.time(),
        }  # fmt: skip
        with storage.engine.begin() as conn:
            conn.execute(sa.insert(EVENTS).values(**row))

    insert(last + 2, "w", "b")  # the later transaction commits first
    here.live.follow_events()
    assert set(here.live._gaps) == {last + 1}
    assert here.live._positive_counts == {"a": 1, "b": 1}
    insert(last + 1, "v", "c")  # the earlier one commits now
    here.live.follow_events()
    assert here.live._gaps == {}
    assert here.user_state("v").values == {"c": 4.0}
    assert here.live._positive_counts == {"a": 1, "b": 1, "c": 1}


def test_a_state_read_while_the_user_changed_is_not_kept(
    here: Engine, storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    _like(storage, "u", "a")
    read = storage.recent_events

    def racing(user_id: str, limit: int) -> list[tuple[str, str, float | None]]:
        rows = read(user_id, limit)  # the read sees the old history...
        _like(storage, "u", "b")  # ...while an event is stored and announced
        here.events_stored(["u"])
        return rows

    monkeypatch.setattr(storage, "recent_events", racing)
    assert here.user_state("u").values == {"a": 4.0}
    monkeypatch.setattr(storage, "recent_events", read)
    assert here.user_state("u").values == {"a": 4.0, "b": 4.0}  # read again, not kept


def test_the_state_cache_is_bounded_and_expires(
    storage: Storage, storage_url: str, tmp_path: Path
) -> None:
    storage.upsert_item("a")
    engine = Engine(
        _settings(storage_url, tmp_path, state_cache_users=2, state_cache_s=0.2), storage
    )
    for user in ("u", "v", "w"):
        _like(storage, user, "a")
        engine.user_state(user)
    assert engine.states.users() == ["v", "w"]  # the least recently used went first
    engine.user_state("v")
    assert engine.states.users() == ["w", "v"]
    misses = engine.state_cache_misses
    time.sleep(0.25)
    engine.user_state("v")
    assert engine.state_cache_misses == misses + 1  # expired: read again

    off = Engine(_settings(storage_url, tmp_path, state_cache_users=0), storage)
    off.user_state("u")
    off.user_state("u")
    assert off.states.users() == [] and off.state_cache_hits == 0


def test_popularity_is_sorted_again_at_most_every_second_but_at_once_for_own_events(
    here: Engine, storage: Storage
) -> None:
    _like(storage, "x", "a")
    here.live.follow_events()
    assert here.popular(1) == [("a", 1.0)]
    for user in ("y", "z"):  # another process: b overtakes a
        _like(storage, user, "b")
    here.live.follow_events()
    assert here.popular(1, current=False) == [("a", 1.0)]  # the order of a moment ago
    here.live._ranked_at -= 1.0
    assert here.popular(1, current=False) == [("b", 2.0)]

    for user in ("x", "y", "z"):  # this process: c overtakes b, shown to the next cold list
        _like(storage, user, "c")
    here.events_stored(["x", "y", "z"])
    assert here.popular(1) == [("c", 3.0)]


def test_a_hole_that_never_fills_is_given_up(
    here: Engine, storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _like(storage, "u", "a")
    for item in ("b", "c"):
        _like(storage, "u", item)
    assert storage.delete_user("u")  # a hole of seqs that will never be filled
    _like(storage, "v", "d")
    here.live._counted_seq = first - 1  # as if the engine had read up to before them
    here.live.follow_events()
    assert here.live._gaps  # the deleted seqs are asked for again...
    monkeypatch.setattr("tastebud.service.live._GAP_S", 0.0)
    time.sleep(0.01)
    here.live.follow_events()
    assert here.live._gaps == {}  # ...until they are given up
