"""Complete deletion of a user (the right to be forgotten), end to end.

After ``DELETE /users/{id}`` and the retrain it queues, the id is in no table (every column of
every table of the schema, read back as text) and in no file of the model folder (the bytes of
every file and of every member of every ``arrays.npz``, as UTF-8 and as numpy's UTF-32 text);
the exposures of a list served just before the deletion do not come back; the demographics
stop counting the user at once; a version that learned from the user is never activated again.
Each test runs on SQLite and, when it answers, PostgreSQL.
"""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from tests.service.test_app import (  # noqa: F401 - _clean_environment is an autouse fixture
    A_ITEMS,
    B_ITEMS,
    ApiClient,
    _clean_environment,
    cluster_likes,
    error,
    make_settings,
    ok,
    title,
)

from tastebud.service.app import create_app
from tastebud.service.engine import Engine
from tastebud.service.settings import Settings
from tastebud.service.storage import DELETIONS, SCHEMA_VERSION, Storage

USER = "user-Ω-forget-me-7319"
#: an id every route must address whole (percent-encoded in URLs)
SLASHED = "user/Ω forget?me#7319"
CITY = "Ωville-7319"  # only the user lives there: the demographic group is theirs alone


def _url(user: str) -> str:
    return quote(user, safe="")


def _wait(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# -- where an id could hide ------------------------------------------------------------------------
def _encodings(text: str) -> list[bytes]:
    """The id as bytes the way it could be stored: UTF-8 (SQL, JSON, numpy's byte strings)
    and UTF-32 (numpy's 'U' arrays, both byte orders)."""
    return [text.encode(), text.encode("utf-32-le"), text.encode("utf-32-be")]


def _tables_holding(storage: Storage, text: str) -> list[str]:
    """``table.column`` of every value of every table in the database (reflected, not listed
    by hand) whose text holds ``text``."""
    found = []
    meta = sa.MetaData()
    with storage.engine.connect() as conn:
        meta.reflect(conn)
        assert {"users", "events", "exposures", "feedback", "deletions"} <= set(meta.tables)
        for table in meta.sorted_tables:
            for row in conn.execute(sa.select(table)):
                for column, value in row._mapping.items():
                    shown = (
                        value.decode("utf-8", "replace")
                        if isinstance(value, bytes)
                        else json.dumps(value, ensure_ascii=False, default=str)
                    )
                    if text in shown or text in str(value):
                        found.append(f"{table.name}.{column}")
    return sorted(set(found))


def _files_holding(folder: Path, text: str) -> list[str]:
    """Files under ``folder`` (and members of zip files, such as ``arrays.npz``) whose bytes
    hold ``text`` in one of :func:`_encodings`."""
    needles = _encodings(text)
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        blobs = {str(path): data}
        if zipfile.is_zipfile(io.BytesIO(data)):
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for member in archive.namelist():
                    blobs[f"{path}:{member}"] = archive.read(member)
        found += [name for name, blob in blobs.items() if any(n in blob for n in needles)]
    return found


# -- the service -----------------------------------------------------------------------------------
def _settings(tmp_path: Path, url: str) -> Settings:
    return make_settings(tmp_path, url, evaluate_on_retrain=False)


def _seed(client: ApiClient) -> None:
    for item in A_ITEMS + B_ITEMS:
        ok(client.put(f"/items/{item}", json={"title": title(item)}))
    for u in range(40):  # attributes, so that the demographics have groups
        ok(client.put(f"/users/u{u}", json={"attributes": {"age": 20 + u}}))
    ok(client.post("/events/batch", json={"events": cluster_likes()}), 201)


def _active(client: ApiClient) -> dict[str, Any]:
    return next(v for v in ok(client.get("/admin/models")) if v["active"])


@pytest.mark.parametrize("user", [USER, SLASHED], ids=["plain", "slashed"])
def test_a_deleted_user_is_in_no_table_and_no_model_file(
    storage_url: str, tmp_path: Path, user: str
) -> None:
    with ApiClient(create_app(_settings(tmp_path, storage_url))) as client:
        app_engine: Engine = client.app.state.engine  # type: ignore[attr-defined]
        store: Storage = client.app.state.storage  # type: ignore[attr-defined]
        path = f"/users/{_url(user)}"
        _seed(client)
        before = ok(client.post("/admin/retrain", params={"wait": "true"}))["version"]

        # the user: attributes the demographics use, onboarding likes, events (a client
        # event id naming them too), lists served in an experiment, feedback
        ok(client.put(path, json={"attributes": {"city": CITY, "age": 34}}))
        ok(client.post(f"{path}/onboarding", json={"liked_items": ["a0", "a1"]}))
        for item in ("a2", "a3", "a4"):
            event = {"user_id": user, "item_id": item, "type": "like"}
            ok(client.post("/events", json={**event, "client_event_id": f"{user}:{item}"}), 201)
        trained = ok(client.post("/admin/retrain", params={"wait": "true"}))["version"]
        assert _files_holding(Path(trained["path"]), user)  # the scan finds what is there
        variants = [
            {"name": "control", "share": 0.5},
            {"name": "older", "share": 0.5, "model_version": before["id"]},
        ]
        ok(client.post("/admin/experiments", json={"name": "ab", "variants": variants}), 201)
        served = ok(client.get(f"{path}/recommendations"))
        assert served["experiment"] == "ab" and served["items"]
        shown = served["items"][0]["item"]
        ok(client.post("/events", json={"user_id": user, "item_id": shown, "type": "click",
                                        "request_id": served["request_id"]}), 201)  # fmt: skip
        feedback = {"request_id": served["request_id"], "user_id": user, "item_id": shown}
        ok(client.post("/feedback", json={**feedback, "type": "like"}), 201)
        client.app.state.exposures.flush()  # type: ignore[attr-defined]
        assert "exposures.user_id" in _tables_holding(store, user)
        assert app_engine.demographics.top({"city": CITY}, 5)  # liked by someone from there
        ok(client.get(f"{path}/recommendations"))  # its exposures are still buffered

        answer = ok(client.delete(path))
        assert answer == {"deleted": user, "events": 6}
        # at once: no demographic group of theirs, no cached state
        assert app_engine.demographics.top({"city": CITY}, 5) == []
        assert user not in app_engine.states.users()
        error(client.delete(path), 404)

        # the retrain it queued replaces the version that learned from them
        _wait(lambda: not app_engine.forgetting)
        after = _active(client)
        assert after["id"] > trained["id"]
        time.sleep(0.6)  # a flush of the exposure log after the deletion
        client.app.state.exposures.flush()  # type: ignore[attr-defined]

        assert _tables_holding(store, user) == []
        assert _files_holding(Path(tmp_path / "models"), user) == []
        if store.backend == "sqlite":  # nor in the bytes of the database's files
            assert _files_holding(tmp_path / "store", user) == []
        assert not Path(trained["path"]).exists()
        assert Path(before["path"]).exists()  # trained before their first event: kept

        refused = error(client.post(f"/admin/models/{trained['id']}/activate"), 409)
        assert (
            f"model version {trained['id']} was trained on the events of a user deleted"
            in (refused["message"])
        )
        ok(client.post(f"/admin/models/{before['id']}/activate"))


def test_exposures_of_a_list_served_just_before_the_deletion_stay_away(
    storage_url: str, tmp_path: Path
) -> None:
    with ApiClient(create_app(_settings(tmp_path, storage_url))) as client:
        _seed(client)
        exposures = client.app.state.exposures  # type: ignore[attr-defined]
        store: Storage = client.app.state.storage  # type: ignore[attr-defined]
        path = f"/users/{_url(USER)}"
        ok(client.post("/events", json={"user_id": USER, "item_id": "a0", "type": "like"}), 201)
        served = ok(client.get(f"{path}/recommendations"))
        assert served["items"]
        late = (served["request_id"], USER, "a9", 0, "popular", None, None, None, time.time())

        ok(client.delete(path))
        # a list computed before the deletion logs after it, in this process...
        exposures.add_rows([late])
        # ...or in another one, straight to the database
        assert store.log_exposure_rows([late, (*late[:1], "u1", *late[2:])]) == 1
        time.sleep(2.0)  # the background flushes of the exposure log
        exposures.flush()
        assert _tables_holding(store, USER) == []
        assert "exposures.user_id" in _tables_holding(store, "u1")
        # a list shown well after the deletion asked for the id again: logged
        again = (*late[:-1], time.time() + 5.0)
        assert store.log_exposure_rows([again]) == 1
        # an id known only by the lists it was shown is a user to delete too, buffered or not
        for flushed in (True, False):
            ok(client.get("/users/only-shown/recommendations"))
            if flushed:
                exposures.flush()
            assert ok(client.delete("/users/only-shown"))["events"] == 0
            exposures.flush()
            assert _tables_holding(store, "only-shown") == []
        error(client.delete("/users/only-shown"), 404)
        # the retrain the deletion queued ends before the service stops
        assert client.app.state.engine.close()  # type: ignore[attr-defined]
        assert not client.app.state.engine.forgetting  # type: ignore[attr-defined]


def test_a_user_known_only_by_exposures_in_a_write_under_way_is_deleted(
    storage_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The background writer has taken the user's only exposures out of the buffer but not
    committed them when the deletion comes: the deletion answers 200, not "unknown user",
    and the write that lands afterwards leaves the id out."""
    with ApiClient(create_app(_settings(tmp_path, storage_url))) as client:
        _seed(client)
        exposures = client.app.state.exposures  # type: ignore[attr-defined]
        store: Storage = client.app.state.storage  # type: ignore[attr-defined]
        exposures.flush()
        write = store.log_exposure_rows
        taken, release = threading.Event(), threading.Event()

        def slow_write(rows: list[tuple[Any, ...]]) -> int:
            taken.set()  # the rows are out of the buffer...
            assert release.wait(30)  # ...and not written until the deletion is done
            return write(rows)

        monkeypatch.setattr(store, "log_exposure_rows", slow_write)
        ok(client.get("/users/only-shown/recommendations"))
        writer = threading.Thread(target=exposures.flush)
        writer.start()
        assert taken.wait(30)
        assert ok(client.delete("/users/only-shown")) == {"deleted": "only-shown", "events": 0}
        release.set()
        writer.join(30)
        assert _tables_holding(store, "only-shown") == []


def test_too_few_events_left_deletes_the_model_that_learned_from_the_user(
    storage_url: str, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, storage_url, evaluate_on_retrain=False)
    with ApiClient(create_app(settings)) as client:
        for item in A_ITEMS:
            ok(client.put(f"/items/{item}", json={}))
        likes = [{"user_id": USER, "item_id": i, "type": "like"} for i in A_ITEMS]
        likes += [{"user_id": "other", "item_id": i, "type": "like"} for i in A_ITEMS]
        ok(client.post("/events/batch", json={"events": likes}), 201)
        version = ok(client.post("/admin/retrain", params={"wait": "true"}))["version"]
        engine: Engine = client.app.state.engine  # type: ignore[attr-defined]

        ok(client.delete(f"/users/{_url(USER)}"))  # 10 events left, 20 needed to train
        _wait(lambda: not engine.forgetting)
        assert engine.snapshot.model is None
        assert not any(v["active"] for v in ok(client.get("/admin/models")))
        assert _files_holding(tmp_path / "models", USER) == []
        assert not Path(version["path"]).exists()
        answer = ok(client.get("/users/other/recommendations"))
        assert answer["model_version"] is None
        error(client.post(f"/admin/models/{version['id']}/activate"), 409)


# -- other processes ---------------------------------------------------------------------------
def test_other_processes_drop_the_user_within_their_next_look(
    storage: Storage, storage_url: str, tmp_path: Path
) -> None:
    """Two engines over one database stand for two serving processes."""
    settings = Settings(db=storage_url, model_dir=tmp_path / "models", min_events_to_train=1)
    for item in ("a", "b", "c"):
        storage.upsert_item(item)
    storage.upsert_user(USER, {"city": CITY})
    storage.upsert_user("stays", {"city": "elsewhere"})
    storage.add_events(
        [
            {"user_id": USER, "item_id": "a", "type": "like"},
            {"user_id": USER, "item_id": "b", "type": "like"},
            {"user_id": "stays", "item_id": "c", "type": "like"},
        ]
    )
    there = Engine(settings, storage)
    there.start()
    assert there.user_state(USER).values  # cached
    assert there.demographics.top({"city": CITY}, 5)
    assert dict(there.popular(3)) == {"a": 1.0, "b": 1.0, "c": 1.0}
    there.lists._lists[("a kept list",)] = (float("inf"), (), ())

    assert storage.delete_user(USER)  # by another process
    there.live.follow_events()  # what its follower does every 0.1 s
    assert USER not in there.states.users() and not there.lists._lists
    _wait(lambda: there.demographics.top({"city": CITY}, 5) == [], 10.0)
    _wait(lambda: dict(there.popular(3)) == {"c": 1.0}, 10.0)
    with storage.engine.connect() as conn:
        logged = conn.execute(sa.select(DELETIONS.c.user_hash)).scalars().all()
    assert logged == [storage.user_hash(USER)] and USER not in logged[0]


def test_the_deletions_log_is_pruned(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    for user in ("old", "new"):
        storage.upsert_user(user)
    assert storage.delete_user("old")
    monkeypatch.setattr("tastebud.service.storage.deletions.DELETION_LOG_S", 0.0)
    time.sleep(0.01)
    assert storage.delete_user("new")
    with storage.engine.connect() as conn:
        logged = conn.execute(sa.select(DELETIONS.c.user_hash)).scalars().all()
    assert logged == [storage.user_hash("new")]
    assert storage.user_hash("new") != storage.user_hash("old")


def test_versions_are_marked_only_when_they_learned_from_the_user(storage: Storage) -> None:
    storage.upsert_item("i")
    seq = storage.add_events([{"user_id": "early", "item_id": "i", "type": "like"}])[0]["seq"]
    old = storage.add_model_version("als", {}, "/nowhere/1", {"last_seq": seq}, 1)
    storage.add_events([{"user_id": "late", "item_id": "i", "type": "like"}])
    frame = storage.events_frame()
    new = storage.add_model_version("als", {}, "/nowhere/2", {"last_seq": seq + 1}, 2)
    mark = storage.forget_mark()
    assert frame.attrs["tastebud_forget_mark"] == mark

    assert storage.delete_user("late")
    assert storage.forget_mark() == mark + 1  # a model trained on `frame` may hold them
    forgotten = {v["id"]: v["forgotten_at"] for v in storage.list_model_versions()}
    assert forgotten[old["id"]] is None and forgotten[new["id"]] is not None
    assert storage.events_frame().attrs["tastebud_forget_mark"] == mark + 1


def test_an_older_deletions_log_is_hashed_by_the_migration(storage: Storage) -> None:
    """A schema-5 database logged deleted users by id: migration 6 hashes them, drops the
    column, and marks the versions trained before them."""
    storage.add_model_version("als", {}, "/nowhere", {"last_seq": 1}, 1)
    with storage.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE deletions"))
        conn.execute(sa.text("DROP TABLE meta"))
        conn.execute(sa.text("ALTER TABLE model_versions DROP COLUMN forgotten_at"))
        seq = "BIGSERIAL" if storage.backend == "postgresql" else "INTEGER"
        conn.execute(
            sa.text(
                f"CREATE TABLE deletions (seq {seq} PRIMARY KEY, user_id TEXT, item_id TEXT, "
                "ts DOUBLE PRECISION NOT NULL)"
            )
        )
        conn.execute(
            sa.text("INSERT INTO deletions (user_id, ts) VALUES (:u, :ts)"),
            {"u": USER, "ts": time.time() + 1},
        )
        conn.execute(sa.text("UPDATE schema_version SET version = 5"))
    storage.deletions.clear_key()
    assert storage.migrate() == SCHEMA_VERSION
    assert _tables_holding(storage, USER) == []
    assert storage.deletions_after(0)[0][1] == storage.user_hash(USER)
    assert storage.list_model_versions()[0]["forgotten_at"] is not None


def test_a_version_trained_while_a_user_was_deleted_is_never_activated_again(
    storage: Storage, storage_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retrain that read the events before a deletion committed holds the user: it is
    marked when it ends, and the retrain after it deletes its folder."""
    settings = Settings(
        db=storage_url,
        model="item-knn",
        model_dir=tmp_path / "models",
        min_events_to_train=1,
        evaluate_on_retrain=False,
    )
    storage.add_events(
        [{"user_id": u, "item_id": i, "type": "like"} for u in (USER, "u1", "u2") for i in "abc"],
        create_missing_items=True,
    )
    engine = Engine(settings, storage)
    engine.start()
    read = storage.events_frame

    def read_then_delete(*args: Any, **kwargs: Any) -> Any:
        frame = read(*args, **kwargs)
        monkeypatch.setattr(storage, "events_frame", read)
        assert storage.delete_user(USER)  # another process, while this one trains
        return frame

    monkeypatch.setattr(storage, "events_frame", read_then_delete)

    def forgotten(version: dict[str, Any] | None) -> bool:
        assert version is not None
        row = storage.get_model_version(version["id"])
        return row is not None and row["forgotten_at"] is not None

    racing = engine.retrain()
    assert racing is not None and forgotten(racing)
    assert _files_holding(tmp_path / "models", USER)

    clean = engine.retrain()
    assert not forgotten(clean)
    assert _files_holding(tmp_path / "models", USER) == []
    assert not Path(racing["path"]).exists()
