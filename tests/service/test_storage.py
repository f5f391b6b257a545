"""The service's storage layer, run against SQLite and PostgreSQL (see conftest.py)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from tastebud import Dataset
from tastebud.data.sample import load_sample
from tastebud.errors import InvalidInputError, TastebudError, UnknownIdError
from tastebud.service.storage import (
    SCHEMA_VERSION,
    SCHEMA_VERSION_TABLE,
    MissingIdsError,
    Storage,
)

SRC = Path(__file__).resolve().parents[2] / "src"


def must(value: dict[str, Any] | None) -> dict[str, Any]:
    """A row that must exist."""
    assert value is not None
    return value


def event(user: str, item: str, cid: str | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"user_id": user, "item_id": item, "type": "click", **extra}
    if cid is not None:
        out["client_event_id"] = cid
    return out


# -- schema ----------------------------------------------------------------------------------------
def test_migrate_is_idempotent_and_reports_the_version(storage: Storage, storage_url: str) -> None:
    assert storage.schema_version() == SCHEMA_VERSION
    storage.upsert_user("kept")
    assert storage.migrate() == SCHEMA_VERSION
    with Storage(storage_url) as other:  # a second process starting up
        assert other.migrate() == SCHEMA_VERSION
        assert other.schema_version() == SCHEMA_VERSION
    assert storage.get_user("kept") is not None
    with storage.engine.connect() as conn:
        rows = conn.execute(sa.select(SCHEMA_VERSION_TABLE)).all()
    assert len(rows) == 1


def test_unmigrated_database_reports_version_zero(storage: Storage) -> None:
    storage.drop_all()
    assert storage.schema_version() == 0
    assert storage.migrate() == SCHEMA_VERSION
    assert storage.count_users() == 0


def test_a_version_1_database_is_upgraded_in_place(storage: Storage) -> None:
    """What version 1 lacked: the experiments table, idempotent feedback, items.updated_at."""
    storage.upsert_item("old", title="Old")
    storage.log_feedback({"request_id": "r", "user_id": "u", "item_id": "old", "type": "click"})
    with storage.engine.begin() as conn:  # back to version 1
        conn.execute(sa.text("DROP TABLE experiments"))
        conn.execute(sa.text("DROP INDEX ux_feedback_outcome"))
        conn.execute(sa.text("DROP INDEX ix_items_updated_at"))
        conn.execute(sa.text("ALTER TABLE items DROP COLUMN updated_at"))
        conn.execute(
            sa.text(
                "INSERT INTO feedback (request_id, user_id, item_id, type, ts) "
                "VALUES ('r', 'u', 'old', 'click', 1), ('r', 'u', 'old', 'click', 2)"
            )
        )
        conn.execute(sa.update(SCHEMA_VERSION_TABLE).values(version=1))
    assert storage.migrate() == SCHEMA_VERSION
    item = storage.get_item("old")
    assert item is not None and item["updated_at"] == item["created_at"]
    with storage.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM feedback")).scalar() == 1
    storage.create_experiment("e", [{"name": "a", "share": 1.0}])
    assert [e["name"] for e in storage.list_experiments()] == ["e"]


def test_a_newer_schema_is_refused(storage: Storage) -> None:
    with storage.engine.begin() as conn:
        conn.execute(sa.update(SCHEMA_VERSION_TABLE).values(version=SCHEMA_VERSION + 1))
    with pytest.raises(TastebudError, match="newer"):
        storage.migrate()


@pytest.mark.parametrize(
    "url",
    [
        "",
        "not a url",
        "mysql://user@127.0.0.1/db",
        "postgresql+asyncpg://user@127.0.0.1/db",
        "sqlite://",
        "sqlite:///:memory:",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidInputError):
        Storage(url)


def test_sqlite_connections_are_set_up_for_durability(tmp_path: Path) -> None:
    with Storage(f"sqlite:///{tmp_path / 'new' / 'folder' / 'x.db'}") as store:
        store.migrate()
        with store.engine.connect() as conn:
            pragma = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
    assert pragma == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1,
                      "busy_timeout": 10_000}  # fmt: skip


# -- users -----------------------------------------------------------------------------------------
ATTRS = {"city": "São Paulo", "tags": ["jazz", "фолк"], "nested": {"a": {"b": [1, 2.5, None]}}}


def test_users_round_trip(storage: Storage) -> None:
    created = storage.upsert_user("ü-1", ATTRS)
    assert created["id"] == "ü-1"
    assert created["attributes"] == ATTRS
    assert storage.get_user("ü-1") == created

    updated = storage.upsert_user("ü-1", {"city": "Lagos"})
    assert updated["attributes"] == {"city": "Lagos"}
    assert updated["created_at"] == created["created_at"]
    assert storage.upsert_user("ü-1")["attributes"] == {"city": "Lagos"}  # None: unchanged

    assert storage.get_user("nobody") is None
    for name in ("b", "a", "c"):
        storage.upsert_user(name)
    assert storage.count_users() == 4
    assert [u["id"] for u in storage.list_users()] == ["a", "b", "c", "ü-1"]
    assert [u["id"] for u in storage.list_users(limit=2, offset=1)] == ["b", "c"]
    assert storage.upsert_user("new")["attributes"] == {}


def test_user_attributes_are_every_stored_object_in_one_read(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``user_attributes`` (what the demographics learn from) holds what the pages hold,
    users without attributes left out, over more rows than one fetch."""
    monkeypatch.setattr("tastebud.service.storage.users.ATTRIBUTE_CHUNK", 3)
    nested = {"age": 31, "tags": ["jazz", "ü"], "plan": {"tier": "gold"}, "score": 0.5}
    storage.upsert_user("ü-1", nested)
    for n in range(10):
        storage.upsert_user(f"u{n}", {"n": n} if n % 3 else None)
    pages = {u["id"]: u["attributes"] for u in storage.list_users(limit=1000)}
    assert storage.user_attributes() == {u: a for u, a in pages.items() if a}
    assert storage.user_attributes()["ü-1"] == nested
    assert len(storage.user_attributes()) == 7


@pytest.mark.parametrize(
    "attributes", [{"x": float("nan")}, {"x": object()}, ["not", "a", "dict"], {"x": "\x00"}]
)
def test_bad_attributes_are_refused(storage: Storage, attributes: Any) -> None:
    with pytest.raises(InvalidInputError):
        storage.upsert_user("u", attributes)
    assert storage.count_users() == 0


def test_delete_user_removes_their_events_exposures_and_feedback(storage: Storage) -> None:
    storage.upsert_item("i1")
    storage.add_events([event("gone", "i1"), event("gone", "i1"), event("stays", "i1")])
    storage.log_exposures(
        [
            {"request_id": "r1", "user_id": "gone", "item_id": "i1", "position": 0},
            {"request_id": "r2", "user_id": "stays", "item_id": "i1", "position": 0},
        ]
    )
    storage.log_feedback({"request_id": "r1", "user_id": "gone", "item_id": "i1", "type": "click"})
    storage.log_feedback({"request_id": "r2", "user_id": "stays", "item_id": "i1", "type": "like"})

    assert storage.delete_user("gone") is True
    assert storage.get_user("gone") is None
    assert storage.user_events("gone") == []
    assert storage.count_events() == 1
    with storage.engine.connect() as conn:
        for table in ("exposures", "feedback"):
            users = conn.execute(sa.text(f"SELECT user_id FROM {table}")).scalars().all()
            assert users == ["stays"]
    assert storage.delete_user("gone") is False
    assert storage.get_user("stays") is not None


# -- items -----------------------------------------------------------------------------------------
def test_items_round_trip_and_partial_update(storage: Storage) -> None:
    item = storage.upsert_item("homogenic", title="Homogenic", attributes=ATTRS)
    assert item == {
        "id": "homogenic",
        "title": "Homogenic",
        "attributes": ATTRS,
        "available": True,
        "created_at": item["created_at"],
        "updated_at": item["created_at"],
    }
    assert storage.get_item("homogenic") == item

    again = storage.upsert_item("homogenic", available=False)  # other fields kept
    assert again == {**item, "available": False, "updated_at": again["updated_at"]}
    assert again["updated_at"] >= item["updated_at"]  # every write stamps it
    changed = storage.update_item("homogenic", title=None, attributes={"year": 1997})
    assert changed == {
        **item,
        "title": None,
        "attributes": {"year": 1997},
        "available": False,
        "updated_at": changed["updated_at"],
    }
    assert changed["updated_at"] >= again["updated_at"]
    assert storage.items_changed_since(changed["updated_at"]) == [changed]
    assert must(storage.get_item("homogenic"))["available"] is False
    assert storage.update_item("homogenic", available=True)["available"] is True

    with pytest.raises(UnknownIdError):
        storage.update_item("missing", title="x")
    with pytest.raises(InvalidInputError, match="price"):
        storage.update_item("homogenic", price=3)
    with pytest.raises(InvalidInputError):
        storage.upsert_item("x", available="yes")  # type: ignore[arg-type]
    assert storage.get_item("missing") is None
    assert storage.count_items() == 1


def test_list_items_searches_title_and_id_case_insensitively(storage: Storage) -> None:
    storage.upsert_item("bjork-homogenic", title="Homogenic by Björk")
    storage.upsert_item("daft-discovery", title="Discovery")
    storage.upsert_item("no-title")
    storage.upsert_item("pct", title="100% Pure_Fun")

    def ids(query: str | None, **kw: Any) -> list[str]:
        return [item["id"] for item in storage.list_items(query=query, **kw)]

    assert ids("BJÖRK") == ["bjork-homogenic"]
    assert ids("DISCO") == ["daft-discovery"]
    assert ids("TITLE") == ["no-title"]  # matched on the id
    assert ids("0% p") == ["pct"]
    assert ids("%") == ["pct"]  # wildcards match themselves
    assert ids("_") == ["pct"]
    assert ids(None) == ["bjork-homogenic", "daft-discovery", "no-title", "pct"]
    assert ids("o", limit=2, offset=1) == ["daft-discovery", "no-title"]


def test_sql_injection_is_harmless(storage: Storage) -> None:
    nasty = "x'; DROP TABLE items; --"
    storage.upsert_item("a", title="Alpha")
    assert storage.list_items(query=nasty) == []
    storage.upsert_item(nasty, title=nasty)
    storage.upsert_user(nasty, {nasty: nasty})
    assert storage.count_items() == 2
    assert [i["id"] for i in storage.list_items(query=nasty)] == [nasty]
    assert must(storage.get_user(nasty))["attributes"] == {nasty: nasty}
    storage.add_events([event(nasty, nasty, cid=nasty)])
    assert storage.user_events(nasty)[0]["client_event_id"] == nasty


def test_newest_items_and_delete_item(storage: Storage) -> None:
    old = storage.upsert_item("old")
    time.sleep(0.01)
    cut = time.time()
    storage.upsert_item("new")
    storage.upsert_item("hidden", available=False)
    assert [i["id"] for i in storage.newest_items(10, since=cut)] == ["new"]
    assert [i["id"] for i in storage.newest_items(10, since=old["created_at"])] == ["new", "old"]
    assert [i["id"] for i in storage.newest_items(1)] == ["new"]

    storage.add_events([event("u", "old"), event("u", "new")])
    assert storage.delete_item("old") is True
    assert storage.get_item("old") is None
    assert [e["item_id"] for e in storage.user_events("u")] == ["new"]
    assert storage.delete_item("old") is False


# -- events ----------------------------------------------------------------------------------------
def test_add_events_is_idempotent_on_client_event_id(storage: Storage) -> None:
    storage.upsert_item("i")
    first = storage.add_events([event("u", "i", "a"), event("u", "i", "a"), event("u", "i")])
    assert [r["duplicate"] for r in first] == [False, True, False]
    assert first[0]["seq"] == first[1]["seq"]
    assert first[2]["seq"] > first[0]["seq"]

    second = storage.add_events([event("u", "i", "b"), event("u", "i", "a"), event("u", "i", "b")])
    assert [r["duplicate"] for r in second] == [False, True, True]
    assert second[1]["seq"] == first[0]["seq"]
    assert second[2]["seq"] == second[0]["seq"]
    assert storage.count_events() == 3
    assert storage.add_events([]) == []


def test_unknown_item_writes_nothing_of_the_batch(storage: Storage) -> None:
    storage.upsert_item("known")
    batch = [
        event("new-user", "known", "c1"),
        event("u", "ghost"),
        event("u", "known"),
        event("u", "phantom"),
        event("u", "ghost"),
    ]
    with pytest.raises(UnknownIdError) as info:
        storage.add_events(batch)
    assert isinstance(info.value, MissingIdsError)
    assert info.value.missing == {"ghost": [1, 4], "phantom": [3]}
    message = str(info.value)
    assert "'ghost' (events 1, 4)" in message
    assert "'phantom' (event 3)" in message
    assert storage.count_events() == 0
    assert storage.count_users() == 0  # the users it would have created are not there either
    assert storage.count_items() == 1

    # with create_missing_items the same batch goes in, creating the items
    assert len(storage.add_events(batch, create_missing_items=True)) == 5
    assert storage.count_items() == 3
    assert must(storage.get_item("ghost"))["title"] is None


def test_missing_users_are_created_unless_told_not_to(storage: Storage) -> None:
    storage.upsert_item("i")
    storage.upsert_user("known", {"k": 1})
    storage.add_events([event("known", "i"), event("fresh", "i")])
    assert storage.get_user("fresh") is not None
    assert must(storage.get_user("known"))["attributes"] == {"k": 1}
    with pytest.raises(MissingIdsError, match="user") as info:
        storage.add_events([event("known", "i"), event("other", "i")], create_missing_users=False)
    assert info.value.kind == "user"
    assert info.value.missing == {"other": [1]}
    assert storage.count_events() == 2


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"user_id": "u", "item_id": "i"}, "event 1: type"),
        ({"user_id": "u", "item_id": "i", "type": "t", "value": float("nan")}, "finite"),
        ({"user_id": "u", "item_id": "i", "type": "t", "value": "5"}, "number"),
        ({"user_id": "", "item_id": "i", "type": "t"}, "empty"),
        ({"user_id": "u", "item_id": "i", "type": "t", "timestamp": 1}, "timestamp"),
        ("not an event", "object"),
    ],
)
def test_malformed_events_are_refused(storage: Storage, bad: Any, match: str) -> None:
    storage.upsert_item("i")
    with pytest.raises(InvalidInputError, match=match):
        storage.add_events([event("u", "i"), bad])
    assert storage.count_events() == 0


def test_concurrent_batches_with_the_same_client_ids_store_each_once(storage: Storage) -> None:
    storage.upsert_item("i")
    batch = [event(f"u{k % 7}", "i", f"cid-{k}", value=float(k)) for k in range(200)]
    barrier = threading.Barrier(8)
    answers: list[list[dict[str, Any]]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def post() -> None:
        try:
            barrier.wait()
            got = storage.add_events(batch)
            with lock:
                answers.append(got)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert len(answers) == 8
    assert storage.count_events() == 200
    stored = storage.events_frame()
    seq_of = dict(zip(stored["value"].astype(int), stored["seq"], strict=True))
    for k in range(200):
        seqs = {answer[k]["seq"] for answer in answers}
        assert seqs == {seq_of[k]}, k  # every caller is told the stored event's seq
        assert sum(not answer[k]["duplicate"] for answer in answers) == 1, k


def test_events_frame_user_events_and_seq(storage: Storage) -> None:
    storage.upsert_item("a")
    storage.upsert_item("b")
    results = storage.add_events(
        [
            event("u1", "a", value=5.0, ts=300.0),
            event("u2", "b", ts=100.0),
            event("u1", "b", value=1.5, ts=200.0),
            {"user_id": "u1", "item_id": "a", "type": "like", "ts": 200.0},
        ]
    )
    seqs = [r["seq"] for r in results]
    assert seqs == sorted(seqs)
    assert storage.last_seq() == seqs[-1]
    assert storage.count_events() == 4

    frame = storage.events_frame()
    assert list(frame.columns) == ["user", "item", "type", "value", "timestamp", "seq"]
    assert frame["seq"].tolist() == seqs
    assert frame["user"].tolist() == ["u1", "u2", "u1", "u1"]
    assert frame["type"].tolist() == ["click", "click", "click", "like"]
    assert frame["value"].tolist()[0] == 5.0
    assert math.isnan(frame["value"].tolist()[1])
    assert frame["timestamp"].tolist() == [300.0, 100.0, 200.0, 200.0]
    assert frame["seq"].dtype == np.int64
    assert frame["value"].dtype == np.float64

    later = storage.events_frame(since_seq=seqs[1])
    assert later["seq"].tolist() == seqs[2:]
    empty = storage.events_frame(since_seq=seqs[-1])
    assert len(empty) == 0
    assert list(empty.columns) == list(frame.columns)

    history = storage.user_events("u1")
    assert [(e["ts"], e["seq"]) for e in history] == [
        (200.0, seqs[2]),
        (200.0, seqs[3]),
        (300.0, seqs[0]),
    ]
    assert [e["seq"] for e in storage.user_events("u1", limit=2)] == [seqs[3], seqs[0]]
    assert set(history[0]) == {
        "seq", "user_id", "item_id", "type", "value", "ts", "client_event_id", "received_at",
    }  # fmt: skip


def test_seq_is_not_reused_after_a_delete(storage: Storage) -> None:
    storage.upsert_item("i")
    last = storage.add_events([event("u", "i"), event("u", "i")])[-1]["seq"]
    storage.delete_user("u")
    assert storage.add_events([event("v", "i")])[0]["seq"] > last


def test_a_large_batch_goes_in_whole(storage: Storage) -> None:
    storage.upsert_item("seed")
    batch = [event(f"u{k % 300}", f"i{k % 500}", f"c{k}", value=float(k)) for k in range(10_000)]
    results = storage.add_events(batch, create_missing_items=True)
    assert not any(r["duplicate"] for r in results)
    frame = storage.events_frame()
    assert frame["seq"].tolist() == [r["seq"] for r in results]
    assert frame["value"].tolist() == [float(k) for k in range(10_000)]
    assert storage.count_users() == 300
    assert storage.count_items() == 501


# -- model versions --------------------------------------------------------------------------------
def test_model_versions_have_exactly_one_active(storage: Storage) -> None:
    assert storage.active_model_version() is None
    first = storage.add_model_version(
        "svd", {"factors": np.int64(32), "lr": np.float64(0.01)}, "/m/1", {"ndcg": math.nan}, 10
    )
    assert first["params"] == {"factors": 32, "lr": 0.01}
    assert first["metrics"] == {"ndcg": None}
    assert first["active"] is False
    second = storage.add_model_version("als", {}, "/m/2", {"ndcg": 0.3}, 20)
    third = storage.add_model_version("ease", {}, "/m/3", {}, 30)

    for chosen in (second, first, third, third):
        active = storage.activate_model_version(chosen["id"])
        assert active["id"] == chosen["id"]
        assert active["active"] is True
        flags = {v["id"]: v["active"] for v in storage.list_model_versions()}
        assert sum(flags.values()) == 1
        assert flags[chosen["id"]] is True
        assert storage.active_model_version() == active

    assert [v["model"] for v in storage.list_model_versions()] == ["svd", "als", "ease"]
    assert storage.get_model_version(second["id"]) == {**second, "active": False}
    assert storage.get_model_version(999) is None
    with pytest.raises(UnknownIdError):
        storage.activate_model_version(999)
    assert must(storage.active_model_version())["id"] == third["id"]


# -- experiments -----------------------------------------------------------------------------------
def test_exposure_counts_by_hand(storage: Storage) -> None:
    def shown(request: str, user: str, items: list[str], variant: str, exp: str = "exp1") -> None:
        storage.log_exposures(
            [
                {"request_id": request, "user_id": user, "item_id": item, "position": pos,
                 "source": "model", "model_version": 1, "experiment": exp, "variant": variant}
                for pos, item in enumerate(items)
            ]
        )  # fmt: skip

    shown("r1", "a", ["i1", "i2"], "A")
    shown("r2", "b", ["i1", "i3"], "A")
    shown("r3", "a", ["i2"], "A")
    shown("r4", "c", ["i1", "i2", "i3"], "B")
    shown("r5", "d", ["i1"], "A", exp="exp2")
    for request, user, item, kind in [
        ("r1", "a", "i1", "click"),
        ("r1", "a", "i2", "click"),
        ("r1", "a", "i1", "like"),
        ("r2", "b", "i3", "click"),
        ("r4", "c", "i2", "click"),
        ("r5", "d", "i1", "click"),  # another experiment
        (None, "a", "i1", "click"),  # no request: not attributable
        ("r-unknown", "a", "i1", "like"),
    ]:
        storage.log_feedback(
            {"request_id": request, "user_id": user, "item_id": item, "type": kind}
        )

    counts = storage.exposure_counts("exp1")
    expected = pd.DataFrame(
        {
            "variant": ["A", "B"],
            "users": [2, 1],
            "requests": [3, 1],
            "exposures": [5, 3],
            "click_events": [3, 1],
            "click_users": [2, 1],
            "like_events": [1, 0],
            "like_users": [1, 0],
        }
    ).astype({"variant": object})
    pd.testing.assert_frame_equal(counts.astype({"variant": object}), expected)

    none = storage.exposure_counts("never-run")
    assert list(none.columns) == ["variant", "users", "requests", "exposures"]
    assert len(none) == 0


def test_exposure_rows_are_checked(storage: Storage) -> None:
    with pytest.raises(InvalidInputError, match="exposure 0: position"):
        storage.log_exposures([{"request_id": "r", "user_id": "u", "item_id": "i"}])
    with pytest.raises(InvalidInputError, match="colour"):
        storage.log_feedback({"user_id": "u", "item_id": "i", "type": "t", "colour": "red"})
    assert storage.log_exposures([]) == 0


# -- bulk import -----------------------------------------------------------------------------------
def test_import_sample_dataset(storage: Storage) -> None:
    ds = load_sample()
    counts = storage.import_dataset(ds)
    assert counts == {
        "users": ds.n_users,
        "items": ds.n_items,
        "events": ds.n_interactions,
        "duplicates": 0,
    }
    assert storage.count_users() == ds.n_users
    assert storage.count_items() == ds.n_items
    assert storage.count_events() == ds.n_interactions

    frame = storage.events_frame()
    stored = frame.sort_values(["user", "item"]).reset_index(drop=True)
    source = ds.interactions.sort_values(["user", "item"]).reset_index(drop=True)
    assert stored["user"].tolist() == source["user"].astype(str).tolist()
    assert stored["item"].tolist() == source["item"].astype(str).tolist()
    np.testing.assert_array_equal(stored["value"], source["rating"].astype(np.float64))
    np.testing.assert_array_equal(stored["timestamp"], source["timestamp"])
    assert set(frame["type"]) == {"rating"}

    features = ds.item_features
    assert features is not None
    album = str(features.index[0])
    item = must(storage.get_item(album))
    has_titles = "title" in features.columns
    assert (item["title"] is not None) == has_titles
    row = features.iloc[0]
    assert item["attributes"] == {
        str(k): (v.item() if isinstance(v, np.generic) else v)
        for k, v in row.items()
        if k != "title"
    }
    user = must(storage.get_user(str(ds.users.ids[0])))
    assert ds.user_features is not None
    assert set(user["attributes"]) == set(ds.user_features.columns)

    again = storage.import_dataset(ds)
    assert again == {"users": 0, "items": 0, "events": 0, "duplicates": ds.n_interactions}
    assert storage.count_events() == ds.n_interactions


def test_import_titles_missing_values_and_int_ids(storage: Storage) -> None:
    interactions = pd.DataFrame(
        {"user": [1, 1, 2], "item": [10, 20, 10], "weight": [1.0, 0.1, 3.0]}
    )
    items = pd.DataFrame(
        {"item": [10, 20, 30], "title": ["Ten", None, "Thirty"], "year": [1990.0, np.nan, 2001.0]}
    )
    ds = Dataset.from_frame(interactions, weight="weight", items=items, name="tiny")
    counts = storage.import_dataset(ds, event_type="play")
    assert counts == {"users": 2, "items": 3, "events": 3, "duplicates": 0}
    ten, twenty, thirty = (must(storage.get_item(key)) for key in ("10", "20", "30"))
    assert (ten["title"], ten["attributes"]) == ("Ten", {"year": 1990.0})
    assert (twenty["title"], twenty["attributes"]) == (None, {})  # missing values left out
    assert thirty["title"] == "Thirty"
    frame = storage.events_frame()
    assert sorted(frame["value"].tolist()) == [0.1, 1.0, 3.0]  # float32 0.1 stored as 0.1
    assert set(frame["type"]) == {"play"}
    with pytest.raises(InvalidInputError, match="no ratings"):
        storage.import_dataset(ds, value="rating")
    with pytest.raises(InvalidInputError):
        storage.import_dataset(ds, value="stars")


# -- durability ------------------------------------------------------------------------------------
WRITER = textwrap.dedent(
    """
    import os, signal, sys, threading
    from tastebud.service.storage import Storage

    store = Storage(sys.argv[1])
    store.migrate()
    store.upsert_item("song")
    acked = threading.Semaphore(0)

    def write():
        batch = 0
        while True:
            store.add_events([
                {"user_id": f"u{batch}", "item_id": "song", "type": "play",
                 "client_event_id": f"b{batch}-e{k}"}
                for k in range(50)
            ])
            print("ACK", batch, flush=True)
            acked.release()
            batch += 1

    threading.Thread(target=write, daemon=True).start()
    for _ in range(15):
        acked.acquire()
    os.kill(os.getpid(), signal.SIGKILL)  # most likely in the middle of the next batch
    """
)


def test_acknowledged_events_survive_sigkill(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'durable.db'}"
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    proc = subprocess.run(
        [sys.executable, "-c", WRITER, url], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    acked = [int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("ACK")]
    assert len(acked) >= 15

    with Storage(url) as store:
        assert store.migrate() == SCHEMA_VERSION
        frame = store.events_frame()
    per_batch = frame.groupby("user").size().to_dict()
    for batch in acked:
        assert per_batch.get(f"u{batch}") == 50, batch  # every acknowledged event is there
    assert set(per_batch.values()) == {50}  # and no batch is there in part
