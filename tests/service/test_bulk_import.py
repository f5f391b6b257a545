"""Bulk import in batches (COPY on PostgreSQL, executemany on SQLite) and the streaming read of
the training set, on both backends (see conftest.py)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from tastebud import Dataset
from tastebud.data.synthetic import synthetic
from tastebud.service.storage import Storage, bulk_import, events
from tastebud.service.storage.bulk_import import ImportStoppedError, _batches, _import_event_id
from tastebud.service.storage.db import Database
from tastebud.service.storage.deletions import FORGET_MARK
from tastebud.service.storage.schema import EVENTS


def small(seed: int = 0) -> Dataset:
    """Users and items with features, ratings and timestamps: every column an import writes."""
    ds = synthetic(n_users=40, n_items=40, n_interactions=150, seed=seed, progress=False)
    assert ds.n_interactions > 120  # as the tests below count batches
    return ds


def stored_pairs(storage: Storage) -> set[tuple[str, str]]:
    frame = storage.events_frame()
    return set(zip(frame["user"], frame["item"], strict=True))


def source_pairs(ds: Dataset) -> set[tuple[str, str]]:
    frame = ds.interactions.astype({"user": str, "item": str})
    return set(zip(frame["user"], frame["item"], strict=True))


# -- batches -------------------------------------------------------------------------------------
def test_batches_cut_parts_into_runs_of_the_batch_size() -> None:
    assert _batches([3, 0, 4], 5) == [[(0, 0, 3), (2, 0, 2)], [(2, 2, 4)]]
    assert _batches([5, 5], 5) == [[(0, 0, 5)], [(1, 0, 5)]]
    assert _batches([0, 0], 5) == []
    assert _batches([7], 100) == [[(0, 0, 7)]]


# -- import ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [7, 1_000])
def test_import_in_batches_counts_and_is_idempotent(
    storage: Storage, monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    """Batches smaller than every part, and spanning parts (users, items, events): the same
    rows as one transaction, and importing again adds nothing."""
    monkeypatch.setattr(bulk_import, "IMPORT_BATCH", batch)
    ds = small()
    counts = storage.import_dataset(ds)
    assert counts == {
        "users": ds.n_users,
        "items": ds.n_items,
        "events": ds.n_interactions,
        "duplicates": 0,
    }
    assert storage.count_users() == ds.n_users
    assert storage.count_items() == ds.n_items
    assert stored_pairs(storage) == source_pairs(ds)

    frame = storage.events_frame().sort_values(["user", "item"]).reset_index(drop=True)
    source = ds.interactions.astype({"user": str, "item": str})
    source = source.sort_values(["user", "item"]).reset_index(drop=True)
    assert ds.rating is not None
    np.testing.assert_array_equal(frame["value"], source["rating"].astype(np.float64))
    np.testing.assert_array_equal(frame["timestamp"], source["timestamp"])
    assert set(frame["type"]) == {"rating"}
    assert frame["seq"].is_unique

    features = ds.item_features
    assert features is not None
    item = storage.get_item(str(ds.items.ids[3]))
    assert item is not None
    expected = {
        k: (v.item() if isinstance(v, np.generic) else v) for k, v in features.iloc[3].items()
    }
    assert item["attributes"] == expected
    user = storage.get_user(str(ds.users.ids[29]))
    assert user is not None and set(user["attributes"]) == {"age", "gender", "country", "cluster"}

    again = storage.import_dataset(ds)
    assert again == {"users": 0, "items": 0, "events": 0, "duplicates": ds.n_interactions}
    assert storage.count_events() == ds.n_interactions


def test_event_keys_are_the_per_pair_keys_long_ids_hashed(storage: Storage) -> None:
    """The keys built a batch at a time are :func:`_import_event_id`'s: the same text as
    imports before batching, so data imported by older code is recognized."""
    long_user = "u" * 240  # its key is over 256 characters: stored as a SHA-256
    interactions = pd.DataFrame(
        {"user": ["a", long_user, 'quo"te', "é"], "item": ["x", "x", "y", "\\z"]}
    )
    ds = Dataset.from_frame(interactions, name="keys")
    storage.import_dataset(ds)
    with storage.engine.connect() as conn:
        rows = conn.execute(sa.select(EVENTS.c.user_id, EVENTS.c.item_id, EVENTS.c.client_event_id))
        stored = {(u, i): key for u, i, key in rows}

    def encode(text: str) -> str:
        return json.dumps(text, ensure_ascii=False)

    expected = {
        (u, i): _import_event_id(encode("keys"), encode(u), encode(i))
        for u, i in interactions.itertuples(index=False)
    }
    assert stored == expected
    assert stored[(long_user, "x")].startswith("import:sha256:")
    assert stored[("é", "\\z")] == 'import:["keys","é","\\\\z"]'


def test_an_import_that_stops_keeps_its_committed_batches(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that fails is rolled back, the ones before stay and the error says how many
    rows they hold; importing again adds exactly the rest."""
    monkeypatch.setattr(bulk_import, "IMPORT_BATCH", 40)
    ds = small()
    n = ds.n_interactions
    total = 80 + n  # 40 users, 40 items, then the events: a batch each, then events by 40
    real = Database.load_rows
    calls = 0

    def failing(self: Database, conn: Any, table: sa.Table, *args: Any, **kwargs: Any) -> int:
        nonlocal calls
        calls += 1
        written = real(self, conn, table, *args, **kwargs)
        if calls == 4:  # events 40:80, written, then the failure
            raise sa_exc.OperationalError("INSERT", {}, Exception("disk I/O error"))
        return written

    monkeypatch.setattr(Database, "load_rows", failing)
    with pytest.raises(ImportStoppedError) as stopped:
        storage.import_dataset(ds)
    message = str(stopped.value)
    assert "\n" not in message
    assert f"(disk I/O error) after 120 of {total} rows were stored" in message
    assert "40 new users, 40 new items, 40 new events" in message
    assert stopped.value.counts == {"users": 40, "items": 40, "events": 40, "duplicates": 0}
    assert storage.count_events() == 40  # the failed batch's events were rolled back

    monkeypatch.setattr(Database, "load_rows", real)
    rest = storage.import_dataset(ds)
    assert rest == {"users": 0, "items": 0, "events": n - 40, "duplicates": 40}
    assert storage.count_events() == n
    assert stored_pairs(storage) == source_pairs(ds)


def test_a_small_import_is_all_or_nothing(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Up to IMPORT_BATCH rows, users, items and events are one transaction."""
    real = Database.load_rows

    def failing(self: Database, conn: Any, table: sa.Table, *args: Any, **kwargs: Any) -> int:
        real(self, conn, table, *args, **kwargs)
        if table is EVENTS:
            raise sa_exc.OperationalError("INSERT", {}, Exception("connection lost"))
        return 0

    monkeypatch.setattr(Database, "load_rows", failing)
    with pytest.raises(ImportStoppedError, match=r"\(connection lost\); nothing was imported$"):
        storage.import_dataset(small())
    assert (storage.count_users(), storage.count_items(), storage.count_events()) == (0, 0, 0)


def test_only_the_last_batch_waits_for_the_disk(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches before the last commit without an fsync on SQLite; the last one syncs the
    whole log, so what the import acknowledges is on disk. The connection is left as the
    pool had it."""
    monkeypatch.setattr(bulk_import, "IMPORT_BATCH", 60)
    real = Database.write
    waits: list[bool] = []

    def recording(self: Database, fn: Any, *, durable: bool = True, on: Any = None) -> Any:
        waits.append(durable)
        return real(self, fn, durable=durable, on=on)

    monkeypatch.setattr(Database, "write", recording)
    storage.import_dataset(small())  # 80 + 143 rows: 4 batches
    assert waits == [False, False, False, True]
    if storage.db.backend == "sqlite":
        with storage.engine.connect() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            assert raw.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
            assert raw.execute("PRAGMA cache_size").fetchone()[0] == -2000  # the default


def test_progress_bar_with_rows_per_second(
    storage: Storage, capsys: pytest.CaptureFixture[str]
) -> None:
    storage.import_dataset(small(), progress=True)
    err = capsys.readouterr().err
    assert "import synthetic" in err and "rows/s" in err and "223/223" in err
    storage.import_dataset(small(seed=1), progress=False)
    assert capsys.readouterr().err == ""
    storage.import_dataset(small(seed=2))  # default: only for large imports
    assert capsys.readouterr().err == ""


# -- the streaming read ---------------------------------------------------------------------------
def old_frame(storage: Storage, since: int = 0) -> pd.DataFrame:
    """:meth:`Events.frame` as it was before it streamed (every row as a tuple through the
    column types), the reference the new read must equal."""
    stmt = (
        sa.select(
            EVENTS.c.user_id,
            EVENTS.c.item_id,
            EVENTS.c.type,
            EVENTS.c.value,
            EVENTS.c.ts,
            EVENTS.c.seq,
        )
        .where(EVENTS.c.seq > since)
        .order_by(EVENTS.c.seq)
    )
    with storage.engine.connect() as conn:
        found = conn.execute(stmt).all()
    columns = list(zip(*found, strict=True)) if found else [()] * 6

    def floats(values: Any) -> np.ndarray:
        return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan
        )

    return pd.DataFrame(
        {
            "user": pd.Series(columns[0], dtype=object),
            "item": pd.Series(columns[1], dtype=object),
            "type": pd.Series(columns[2], dtype=object),
            "value": floats(columns[3]),
            "timestamp": floats(columns[4]),
            "seq": np.array(columns[5], dtype=np.int64),
        }
    )


@pytest.mark.parametrize("chunk", [1, 7, 50_000])
def test_streamed_frame_equals_the_whole_read(
    storage: Storage, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """Chunks smaller than the data (one row; 7 rows, so ids recur across chunks) and one
    chunk for all: the frame the old read built, dtypes included; each distinct id is one
    string object."""
    monkeypatch.setattr(events, "FRAME_CHUNK", chunk)
    storage.upsert_item("a")
    storage.upsert_item("b")
    storage.add_events(
        [
            {"user_id": "u1", "item_id": "a", "type": "click", "value": 5.0, "ts": 300.0},
            {"user_id": "u2", "item_id": "b", "type": "click", "ts": 100.0},
            {"user_id": "u1", "item_id": "b", "type": "like", "value": -1.5, "ts": 200.0},
        ]
    )
    storage.import_dataset(small())
    mark = storage.forget_mark()
    for since in (0, 2, storage.last_seq() - 5, storage.last_seq()):
        frame = storage.events_frame(since_seq=since)
        pd.testing.assert_frame_equal(frame, old_frame(storage, since))
        assert frame.attrs[FORGET_MARK] == mark
    frame = storage.events_frame()
    assert [c.dtype for _, c in frame.items()] == [object] * 3 + [np.float64] * 2 + [np.int64]
    u1 = frame["user"].to_numpy()[frame["user"].to_numpy() == "u1"]
    assert len(u1) == 2 and u1[0] is u1[1]
    assert math.isnan(frame["value"].iloc[1])


def test_empty_frame_keeps_its_columns_and_dtypes(storage: Storage) -> None:
    frame = storage.events_frame()
    pd.testing.assert_frame_equal(frame, old_frame(storage))
    assert list(frame.columns) == ["user", "item", "type", "value", "timestamp", "seq"]


def test_streamed_frame_reads_rows_written_around_the_api_as_before(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite holds whatever a row was given: a BLOB id, a number as text, text that is no
    number. They read as the column types read them (:class:`ReadText`, :class:`ReadNumber`),
    across chunk boundaries."""
    monkeypatch.setattr(events, "FRAME_CHUNK", 2)
    with Storage(f"sqlite:///{tmp_path / 'odd.db'}") as storage:
        storage.migrate()
        storage.upsert_item("i")
        storage.add_events([{"user_id": "u", "item_id": "i", "type": "click", "value": 1.0}])
        insert = (
            "INSERT INTO events (user_id, item_id, type, value, ts, received_at) "
            "VALUES (?, ?, ?, ?, ?, 0)"
        )
        with storage.engine.begin() as conn:
            for row in [
                (b"u", "i", "click", "2.5", 10.0),  # the BLOB reads as "u", the same user
                ("v", b"caf\xe9", "click", "lots", "later"),  # bad UTF-8; text no number
                ("w", "i", b"like", None, "1e3"),
            ]:
                conn.exec_driver_sql(insert, row)
        frame = storage.events_frame()
        pd.testing.assert_frame_equal(frame, old_frame(storage))
        assert frame["user"].tolist() == ["u", "u", "v", "w"]
        assert frame["item"].tolist() == ["i", "i", "caf\ufffd", "i"]
        assert frame["type"].tolist() == ["click", "click", "click", "like"]
        np.testing.assert_array_equal(frame["value"], [1.0, 2.5, np.nan, np.nan])
        np.testing.assert_array_equal(frame["timestamp"].iloc[1:], [10.0, np.nan, 1e3])


# -- the command ----------------------------------------------------------------------------------
BAD_ROWS = "user,item,rating\n1,10,5\n1,20,3\n2,10,x\n2,30,4\n3,20,2,9\n3,30,1\n"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from tastebud.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_import_command_reads_csv_and_parquet_and_names_bad_rows(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 'shop.db'}"
    bad = tmp_path / "bad.csv"
    bad.write_text(BAD_ROWS)
    code, _, err = cli(capsys, "import", "--db", db, "--data", str(bad))
    assert code == 2 and err.count("\n") == 1
    assert "bad.csv:4: column 'rating': 'x' is not a number" in err

    code, out, err = cli(capsys, "import", "--db", db, "--data", str(bad), "--on-bad-rows", "skip")
    assert code == 0, err
    assert "3 users, 3 items, 4 events, 0 duplicates" in out

    frame = pd.DataFrame({"user": ["1", "9"], "item": ["10", "90"], "rating": [5.0, 2.0]})
    frame.to_parquet(tmp_path / "more.parquet")
    code, out, err = cli(
        capsys, "import", "--db", db, "--data", str(tmp_path / "more.parquet"), "-q"
    )
    assert code == 0 and err == "", err
    assert "1 users, 1 items, 2 events, 0 duplicates" in out  # its own dataset name: new keys
    with Storage(db) as storage:
        assert storage.count_events() == 6
