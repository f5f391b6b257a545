"""The engine's live state across processes: cached user states and popularity follow the
events table (new rows by seq, holes a slow transaction fills late, the deletions log).

Two engines over one database stand for two serving processes: ``here`` is the one under
test, ``there`` (or plain storage calls) writes the way another process would. Each test
runs on SQLite and, when it answers, PostgreSQL.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from tastebud.pipeline import Demographics
from tastebud.service.engine import Engine
from tastebud.service.live import popularity_order
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


def test_a_recount_read_before_a_deletion_does_not_bring_it_back(
    here: Engine, storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relearn (after another process deleted a user) reads every event; an item deleted
    and forgotten by the follower while that read is under way stays forgotten."""
    for user, item in (("v", "b"), ("w", "c"), ("x", "c")):
        _like(storage, user, item)
    here.live.follow_events()
    assert dict(here.popular(3)) == {"c": 2.0, "b": 1.0}
    read = storage.events_frame
    reads = []

    def racing() -> pd.DataFrame:
        frame = read()  # the read still holds c's events...
        if not reads:
            assert storage.delete_item("c")  # ...while c is deleted and followed
            here.live.follow_events()
        reads.append(len(frame))
        return frame

    monkeypatch.setattr(storage, "events_frame", racing)
    here.live.relearn()
    assert reads == [3, 1]  # read again once, without c's events
    assert dict(here.popular(3)) == {"b": 1.0}


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


def test_popularity_follows_every_counted_event_and_at_once_for_own_events(
    here: Engine, storage: Storage
) -> None:
    _like(storage, "x", "a")
    here.live.follow_events()
    assert here.popular(1) == [("a", 1.0)]
    for user in ("y", "z"):  # another process: b overtakes a, as soon as it is counted
        _like(storage, user, "b")
    here.live.follow_events()
    assert here.popular(2, current=False) == [("b", 2.0), ("a", 1.0)]
    assert here.popular(2, skip={"b"}, current=False) == [("a", 1.0)]

    for user in ("x", "y", "z"):  # this process: c overtakes b, shown to the next cold list
        _like(storage, user, "c")
    here.events_stored(["x", "y", "z"])
    assert here.popular(1) == [("c", 3.0)]


@pytest.mark.parametrize("batch", [1, 7, 600])  # 600: past _RESORT_FROM, sorted anew
def test_the_popularity_order_moved_per_event_equals_a_full_sort(here: Engine, batch: int) -> None:
    """Counting events moves each item within the kept order; the order must stay what a
    full sort of the counts gives (most events first, ties by id), whatever the counts."""
    rng = random.Random(batch)
    items = [f"i{n}" for n in range(60)] + ["10", "9", "b", "B"]  # ids sort as text
    live = here.live
    live.set_counts(Counter({item: rng.randrange(1, 4) for item in items[::2]}), 0)
    for _ in range(40):
        with live._counts_lock:
            live._count([rng.choice(items) for _ in range(batch)])
        counts = live._positive_counts
        want = sorted(counts.items(), key=lambda p: (-p[1], p[0]))
        skip = set(rng.sample(items, 5))
        assert live.popular(len(items), current=False) == [(i, float(n)) for i, n in want]
        assert (
            live.popular(8, skip=skip, current=False)
            == [(i, float(n)) for i, n in want if i not in skip][:8]
        )
        assert live._order == popularity_order(counts)


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


def test_event_values_and_popularity_equal_the_rules_row_by_row(here: Engine) -> None:
    """``event_values`` asks the rules once per distinct (type, value) pair; each row must
    still get what :meth:`EventRules.value` says of it (NaN: no value; values the rules
    refuse: nothing), and the popularity counts the rows worth more than 0."""
    rng = random.Random(0)
    kinds = ["like", "view", "rating", "dislike", "purchase", "not-a-type"]
    values = [float("nan"), 1.0, 2.0, 2.5, 3.0, 5.0, 0.0, -1.0, float("inf"), 1e308]
    n = 500
    frame = pd.DataFrame(
        {
            "item": [f"i{rng.randrange(20)}" for _ in range(n)],
            "type": [rng.choice(kinds) for _ in range(n)],
            "value": np.array([rng.choice(values) for _ in range(n)], dtype=np.float64),
            "seq": np.arange(1, n + 1),
        }
    )
    live = here.live
    rules = live.rules
    want = [
        rules.value(kind, None if math.isnan(v) else v)
        for kind, v in zip(frame["type"], frame["value"], strict=True)
    ]
    got = live.event_values(frame)
    assert got.tolist() == want
    counts, last = live.popularity(frame)
    assert last == n
    assert counts == Counter(item for item, v in zip(frame["item"], want, strict=True) if v > 0)
    assert live.event_values(frame.iloc[:0]).shape == (0,)


def test_the_newest_items_are_read_again_by_the_follower_not_by_requests(
    here: Engine, storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The newest items are read once per ``n`` and ``days`` asked for; after that the
    follower checks them every second and reads them again only when the catalogue
    changed, so a request never waits for that read -- unless nothing checked them for
    ``_NEW_STALE_S`` (no follower runs)."""
    read = storage.newest_items
    reads: list[int] = []

    def counted(limit: int, since: float = 0.0) -> list[Any]:
        reads.append(limit)
        return read(limit, since=since)

    monkeypatch.setattr(storage, "newest_items", counted)
    live, key = here.live, (10, 30.0)

    def a_second_later() -> None:
        checked_at, rows, version = live._new_cache[key]
        live._new_cache[key] = (checked_at - 1.0, rows, version)

    first = [item for item, _ in live.new_items(10, 30.0)]
    assert sorted(first) == ["a", "b", "c", "d"] and reads == [10]
    live.refresh_new_items()  # under a second old: left as it is
    a_second_later()
    live.refresh_new_items()  # the catalogue did not change: checked, not read
    assert reads == [10]

    storage.upsert_item("e")  # another process adds an item...
    assert [item for item, _ in live.new_items(10, 30.0)] == first  # kept: no read
    here.catalog.reload()  # ...which the follower's look at the catalogue finds
    a_second_later()
    live.refresh_new_items()
    assert reads == [10, 10]
    assert live.new_items(10, 30.0)[0][0] == "e"  # the newest first
    assert reads == [10, 10]

    checked_at, rows, version = live._new_cache[key]
    live._new_cache[key] = (checked_at - 6.0, rows, version)  # no follower: the request reads
    live.new_items(10, 30.0)
    assert reads == [10, 10, 10]


def test_cold_demographic_answers_are_kept_per_attributes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A demographic answer scores every user with attributes; the same attributes (as
    the model reads them) and ``n`` get the kept answer, bounded in number."""
    users = {
        "u1": {"gender": "F", "age": 30},
        "u2": {"gender": "F", "age": 31},
        "u3": {"gender": "M", "age": 60},
    }
    positive = pd.DataFrame({"user": ["u1", "u1", "u2", "u3"], "item": ["a", "b", "a", "c"]})
    demographics = Demographics.learn(positive, users)
    assert demographics.model is not None
    calls = 0
    score = demographics.model.liked_by_similar

    def counted(table: Any, n: int) -> Any:
        nonlocal calls
        calls += 1
        return score(table, n)

    demographics.model.liked_by_similar = counted  # type: ignore[method-assign]
    first = demographics.top({"gender": "F", "age": 30}, 2)
    assert first and first[0][0] == "a"
    assert demographics.top({"age": 30, "gender": " f "}, 2) == first  # read alike: kept
    assert calls == 1
    demographics.top({"gender": "F", "age": 30}, 3)  # another n: scored
    demographics.top({"gender": "M", "age": 60}, 2)
    assert calls == 3
    assert len(demographics._answers) == 3
    monkeypatch.setattr("tastebud.pipeline.live.DEMOGRAPHIC_ANSWERS", 2)
    demographics.top({"gender": "M", "age": 61}, 2)
    assert len(demographics._answers) == 2  # the least recently used went
