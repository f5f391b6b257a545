"""Nothing stored can block training or start-up (issue 17).

Rows the API would refuse are written straight into the database (raw SQL, around the API and
the storage checks) -- bad ids, values, timestamps and attributes, several members of each
class -- and the service must still retrain (leaving those rows out, counted by reason in the
version record), restart, and answer lists, onboarding, user pages and similar items. Each
consumer of attributes is also given a zoo of JSON values directly. A failed retrain leaves
the active version as it was, and a start with the active version's files damaged or gone
serves the newest loadable version (else popular items) and says so in ``/health/ready``."""

from __future__ import annotations

import json
import logging
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from tests.service.test_app import (  # noqa: F401 - _clean_environment is an autouse fixture
    A_ITEMS,
    B_ITEMS,
    ApiClient,
    _clean_environment,
    error,
    make_settings,
    ok,
    seed,
    serve,
)

from tastebud import rules
from tastebud.data.dataset import Dataset
from tastebud.models import create, get_class
from tastebud.pipeline import Demographics, Filters, PipelineSettings, Predicate, categories
from tastebud.pipeline.live import attribute_table
from tastebud.service.app import create_app
from tastebud.service.catalog import Catalog
from tastebud.service.engine import Engine
from tastebud.service.live import Live
from tastebud.service.settings import Settings
from tastebud.service.similar import fit_catalogue, item_feature_table
from tastebud.service.storage import Storage
from tastebud.service.storage.bulk_import import MISSING, feature_value
from tastebud.service.training import (
    BAD_CATALOGUE_ITEM,
    BAD_ITEM,
    BAD_TS,
    BAD_USER,
    BAD_VALUE,
    build_dataset,
    usable_events,
)

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

NOW = 1_700_000_000.0
BAD_IDS = [" ", "\t", "a\nb", "x" * 300]


def _nested(depth: int, leaf: Any, *, as_dict: bool) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"k": value} if as_dict else [value]
    return value


#: JSON values an attribute may hold in a database, whatever the API accepts today.
ZOO: list[Any] = [
    2**64,
    -(2**70),
    2**63 - 1,
    1e308,
    -1e308,
    5e-324,
    _nested(20, 1, as_dict=False),
    _nested(20, "x", as_dict=True),
    "",
    " ",
    "ünïcødé ★ 音楽 \u200b\u202e",
    True,
    False,
    None,
    [],
    {},
    "long " * 20_000,
    [1, "rock", [2], {"a": 1}, None, 2**64, True, 1e308],
    "rock|pop, jazz",
    34,
    34.5,
]


# -- writing around the API ------------------------------------------------------------------------
def _raw(storage: Storage, sql: str, rows: list[dict[str, Any]]) -> None:
    with storage.engine.begin() as conn:
        conn.execute(sa.text(sql), rows)


def _json_param(storage: Storage) -> str:
    """A bound JSON text as the column takes it (PostgreSQL checks it is JSON; SQLite not)."""
    return "CAST(:a AS json)" if storage.backend == "postgresql" else ":a"


def _event(user: str, item: str, kind: str = "like", value: Any = None, ts: Any = NOW) -> dict:
    return {"u": user, "i": item, "k": kind, "v": value, "t": ts, "r": NOW}


def poison(storage: Storage) -> dict[str, int]:
    """Write every class of poison straight into ``storage``; returns the skip counts a
    retrain must report."""
    events = [_event(bad, "a1") for bad in BAD_IDS]  # user ids
    events += [_event("u1", bad) for bad in BAD_IDS]  # item ids
    bad_values: list[float] = [1e308, -float("inf"), float("inf"), 1e12, -1e12]
    events += [_event("u2", "a2", "rating", v) for v in bad_values]
    bad_ts: list[Any] = [-1.0, 1e15, float("inf"), -float("inf")]
    if storage.backend == "postgresql":  # PostgreSQL keeps NaN; SQLite turns it into NULL
        bad_ts.append(float("nan"))
        events.append(_event("u2", "a3", "rating", float("nan")))  # NaN value: no value
    events += [_event("u3", "a3", "like", None, ts) for ts in bad_ts]
    events += [_event("u4", "a5", "rating", 1e9) for _ in range(5)]  # 5e9 summed: capped
    _raw(
        storage,
        "INSERT INTO events (user_id, item_id, type, value, ts, received_at) "
        "VALUES (:u, :i, :k, :v, :t, :r)",
        events,
    )
    if storage.backend == "sqlite":  # SQLite keeps text given to a numeric column as text
        _raw(
            storage,
            "INSERT INTO events (user_id, item_id, type, value, ts, received_at) "
            "VALUES ('u5', 'a6', 'rating', 'not a number', 'not a time', 0)",
            [{}],
        )
        bad_ts.append(float("nan"))

    attributes = {
        "huge": '{"age": 18446744073709551616, "city": "Oslo"}',
        "negative-huge": '{"age": -1180591620717411303424}',
        "deep": json.dumps({"tree": _nested(20, 1, as_dict=True), "age": 30}),
        "a-list": "[1, 2, 3]",
        "a-string": '"just text"',
        "a-number": "42",
        "odd": json.dumps({"name": "ünï ★ \u202e", "tags": [[], {}], "none": None}),
    }
    if storage.backend == "sqlite":  # PostgreSQL's json column refuses these
        attributes |= {
            "not-json": "{not json",
            "nan": '{"age": NaN, "city": "Bergen"}',
            "surrogate": '{"name": "\\ud800", "city": "Oslo"}',
            "empty-text": "",
        }
    param = _json_param(storage)
    _raw(
        storage,
        f"INSERT INTO users (id, attributes, created_at) VALUES (:id, {param}, :t)",
        [{"id": uid, "a": text, "t": NOW} for uid, text in attributes.items()]
        + [{"id": bad, "a": '{"age": 20}', "t": NOW} for bad in BAD_IDS],
    )
    _raw(
        storage,
        "INSERT INTO items (id, title, attributes, available, created_at, updated_at) "
        f"VALUES (:id, :title, {param}, :av, :t, :t)",
        [
            {"id": f"p-{uid}", "title": f"Poisoned {uid}", "a": text, "av": True, "t": NOW}
            for uid, text in attributes.items()
        ]
        + [{"id": bad, "title": "bad id", "a": "{}", "av": True, "t": NOW} for bad in BAD_IDS],
    )
    return {
        BAD_USER: len(BAD_IDS),
        BAD_ITEM: len(BAD_IDS),
        BAD_VALUE: len(bad_values),
        BAD_TS: len(bad_ts),
        BAD_CATALOGUE_ITEM: len(BAD_IDS),
    }


POISONED_USERS = [
    *("huge", "negative-huge", "deep", "a-list", "a-string", "a-number", "odd"),
    *("not-json", "nan", "surrogate", "empty-text"),  # SQLite only
]


@pytest.fixture
def poisoned(storage_url: str, tmp_path: Path) -> tuple[Settings, dict[str, int]]:
    """The two taste clusters written through the API, then every poison class written
    around it; the settings of a service over that database (default model: ALS)."""
    settings = make_settings(tmp_path, storage_url)
    with serve(settings) as client:
        seed(client)
    with Storage(storage_url) as storage:
        expected = poison(storage)
    return settings, expected


def _users(client: ApiClient) -> list[str]:
    return [row["id"] for row in ok(client.get("/users", params={"limit": 1000}))]


def _serves_everyone(client: ApiClient) -> None:
    """Lists, onboarding, user pages and similar items answer for the poisoned rows."""
    users = _users(client)
    for user in [u for u in POISONED_USERS if u in users] + ["u0", "u2"]:
        answer = ok(client.get(f"/users/{user}/recommendations", params={"k": 5}))
        assert answer["items"], user
        assert isinstance(ok(client.get(f"/users/{user}"))["attributes"], dict)
        body = {"liked_items": ["a1"], "k": 5}
        assert ok(client.post(f"/users/{user}/onboarding", json=body))["items"]
    fresh = {"liked_items": ["b1", "b2"], "attributes": {"age": 30, "city": "Oslo"}, "k": 5}
    assert ok(client.post("/users/newcomer/onboarding", json=fresh))["items"]
    assert ok(client.get("/users/never-seen/recommendations", params={"k": 5}))["items"]
    ok(client.get("/users/huge/recommendations", params={"k": 5, "filter": "age>=18"}))
    for item in ["p-huge", "p-deep", "p-a-list", "p-odd", "a1"]:
        ok(client.get(f"/items/{item}/similar", params={"k": 3}))
        assert isinstance(ok(client.get(f"/items/{item}"))["attributes"], dict)
    ok(client.get("/items", params={"limit": 1000}))


def test_poison_in_the_database_blocks_neither_retrain_nor_restart(
    poisoned: tuple[Settings, dict[str, int]], caplog: pytest.LogCaptureFixture
) -> None:
    settings, expected = poisoned
    with serve(settings) as client, caplog.at_level(logging.WARNING, "tastebud.service"):
        answer = ok(client.post("/admin/retrain", params={"wait": "true"}))
        version = answer["version"]
        assert version["active"] is True
        assert version["metrics"]["skipped"] == expected
        assert version["metrics"]["capped_pairs"] == 1  # u4's five 1e9 ratings of a5
        listed = {v["id"]: v for v in ok(client.get("/admin/models"))}
        assert listed[version["id"]]["metrics"]["skipped"] == expected
        assert ok(client.get("/health/ready"))["model_version"] == version["id"]
        warned = [r.getMessage() for r in caplog.records if "cannot use" in r.getMessage()]
        assert warned and f"{len(BAD_IDS)} {BAD_USER}" in warned[-1]
        # what a model learned holds none of the poison
        model = client.app.state.engine.snapshot.model  # type: ignore[attr-defined]
        known = {str(i) for i in model.items_.ids.tolist()}
        assert set(A_ITEMS + B_ITEMS) <= known and not known & set(BAD_IDS)
        _serves_everyone(client)
    with serve(settings) as client:  # a restart over the same database and model folder
        ready = ok(client.get("/health/ready"))
        assert ready["model_version"] == version["id"] and "cannot" not in ready["serving"]
        _serves_everyone(client)
        again = ok(client.post("/admin/retrain", params={"wait": "true"}))["version"]
        assert again["metrics"]["skipped"] == expected


def test_the_training_set_skips_and_counts_what_no_model_can_use() -> None:
    frame = pd.DataFrame(
        {
            "user": pd.Series(["u", " ", "u", "u", "u", None, b"bytes", "u"], dtype=object),
            "item": pd.Series(["i", "i", "\t", "i", "i", "i", "i", "j"], dtype=object),
            "type": ["like"] * 8,
            "value": [np.nan, 1.0, 1.0, 1e308, 2.0, 1.0, 1.0, -np.inf],
            "timestamp": [NOW, NOW, NOW, NOW, -5.0, NOW, NOW, NOW],
            "seq": np.arange(1, 9),
        }
    )
    usable, skipped = usable_events(frame)
    assert usable.tolist() == [True] + [False] * 7
    assert skipped == {BAD_USER: 3, BAD_ITEM: 1, BAD_VALUE: 2, BAD_TS: 1}
    none, nothing = usable_events(frame.iloc[:0])
    assert len(none) == 0 and nothing == {}


def test_summed_weights_are_capped_and_numeric_ids_stay_one_item() -> None:
    positive = pd.DataFrame(
        {
            "user": ["1", "1", "1", "2", "2"],
            "item": ["7", "7", "7", "8", "7"],
            "timestamp": [NOW, NOW + 5, NOW + 1, NOW, NOW],
            "weight": [rules.MAX_ABS_VALUE] * 3 + [1.0, 2.0],
        }
    )
    catalogue = [
        {"id": "7", "title": "Seven", "attributes": {"genre": "rock"}},
        {"id": "x", "title": "Ex", "attributes": {"genre": "jazz"}},  # not a number: text ids
        {"id": " ", "title": "blank", "attributes": {}},
    ]
    dataset, skipped, capped = build_dataset(positive, catalogue)
    assert skipped == {BAD_CATALOGUE_ITEM: 1} and capped == 1
    assert sorted(map(str, dataset.items.ids.tolist())) == ["7", "8", "x"]  # "7" once
    users = map(str, dataset.users.to_ids(dataset.user_index).tolist())
    items = map(str, dataset.items.to_ids(dataset.item_index).tolist())
    assert dataset.weight is not None and dataset.timestamp is not None
    weights = dict(zip(zip(users, items, strict=True), dataset.weight.tolist(), strict=True))
    assert weights == {("1", "7"): rules.MAX_ABS_VALUE, ("2", "7"): 2.0, ("2", "8"): 1.0}
    assert dataset.timestamp.max() == NOW + 5
    # ids that all spell integers are ints inside, as Dataset.from_frame makes them
    ints, _, _ = build_dataset(positive, catalogue[:1])
    assert ints.items.ids.dtype.kind == "i" and ints.users.ids.dtype.kind == "i"


# -- every consumer of attributes, given any JSON --------------------------------------------------
@pytest.mark.parametrize("value", ZOO, ids=lambda v: repr(v)[:30])
def test_every_attribute_consumer_takes_any_json_value(value: Any) -> None:
    attributes = {"age": value, "genre": value, "category": value, "year": value}
    for attrs in (attributes, value):  # also as the whole attributes column
        table = attribute_table({"u": attrs})
        cells = [c for c in table.to_numpy().ravel().tolist() if c is not None and c == c]
        assert all((isinstance(c, str) and c) or isinstance(c, float) for c in cells)
        cats = categories(PipelineSettings(), attrs)
        assert all(isinstance(c, str) and c for c in cats)
        for text in ("year>=1990", "genre=rock", "genre!=rock", "age<40", "category=1"):
            assert isinstance(Predicate.parse(text)(attrs), bool)
        assert isinstance(Filters.build(["rock"], ["pop"], ["year>1"]).keep(cats, attrs), bool)
        cell = feature_value(attrs)  # an import's cell: a JSON value the rules accept
        assert cell is MISSING or rules.json_problem(cell) is None
    positive = pd.DataFrame({"user": ["u", "v", "v"], "item": ["a", "a", "b"]})
    learned = Demographics.learn(positive, {"u": attributes, "v": value, "w": attributes})
    assert isinstance(learned.top(attributes, 5), list)


def test_demographics_learn_from_every_json_value_at_once() -> None:
    """One column holding every kind of value (mixed types in one table) still learns, and
    a cold user with any of them gets a list."""
    users = {f"u{n}": {"v": v, "city": "oslo" if n % 2 else "lima"} for n, v in enumerate(ZOO)}
    positive = pd.DataFrame(
        {"user": list(users), "item": ["o" if n % 2 else "l" for n in range(len(users))]}
    )
    learned = Demographics.learn(positive, users)
    assert learned.model is not None
    assert [item for item, _ in learned.top({"city": "Oslo "}, 5)] == ["o"]
    for value in ZOO:
        assert isinstance(learned.top({"v": value}, 5), list)


def test_feature_tables_and_content_models_take_the_whole_zoo() -> None:
    rows = [
        {"id": f"i{n}", "title": f"Item {n}", "attributes": {"v": v, f"only{n}": v, "tag": "x"}}
        for n, v in enumerate(ZOO)
    ]
    rows += [
        {"id": "list", "title": None, "attributes": [1, 2]},
        {"id": "text", "title": 5, "attributes": "text"},
        {"id": "null", "title": "\ud800", "attributes": None},
    ]
    table = item_feature_table(rows)
    assert len(table) == len(rows)
    for column in table.columns.drop("item"):
        for cell in table[column].dropna().tolist():
            assert rules.json_problem(cell) is None and not isinstance(cell, list | dict)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert fit_catalogue(rows) is not None  # TF-IDF over the titles
        assert fit_catalogue([{**r, "title": None} for r in rows]) is not None
        rng = np.random.default_rng(0)
        pairs = [(f"u{u}", r["id"]) for u in range(20) for r in rows if rng.random() < 0.4]
        positive = pd.DataFrame(pairs, columns=["user", "item"]).assign(timestamp=NOW, weight=1.0)
        dataset, _, _ = build_dataset(positive, rows)
        assert isinstance(dataset, Dataset) and dataset.item_features is not None
        for name in ("als", "item-knn", "tfidf", "feature-profile", "feature-mf"):
            model = create(name).fit(dataset)
            assert len(model.recommend(["u1"], k=3)) == 3, name


def test_the_catalogue_and_storage_reads_take_any_stored_attributes(storage: Storage) -> None:
    param = _json_param(storage)
    texts = {"huge": '{"n": 18446744073709551616, "genre": "rock"}', "list": "[1]"}
    texts |= {"deep": json.dumps({"d": _nested(20, 1, as_dict=True), "genre": "jazz"})}
    if storage.backend == "sqlite":
        texts |= {"bad": "{nope", "nan": '{"genre": "pop", "n": NaN}', "empty": ""}
    _raw(
        storage,
        "INSERT INTO items (id, title, attributes, available, created_at, updated_at) "
        f"VALUES (:id, NULL, {param}, TRUE, 0, 0)",
        [{"id": key, "a": text} for key, text in texts.items()],
    )
    read = {row["id"]: row["attributes"] for row in storage.all_items()}
    assert read["huge"] == {"genre": "rock"}  # what the rules refuse is left out
    assert read["deep"] == {"genre": "jazz"} and read["list"] == {}
    if storage.backend == "sqlite":
        assert read["bad"] == {} and read["nan"] == {"genre": "pop"} and read["empty"] == {}
    assert all(rules.json_problem(attrs) is None for attrs in read.values())
    catalog = Catalog(storage, PipelineSettings())
    catalog.reload()
    assert catalog.categories("huge") == frozenset({"rock"})
    for key in texts:  # even when a row reaches the catalogue around storage
        catalog.put({"id": key, "attributes": ZOO, "available": True})
        assert catalog.categories(key) == frozenset()


def test_an_import_leaves_out_cells_no_attribute_can_hold(storage: Storage) -> None:
    interactions = pd.DataFrame({"user": ["u", "v"], "item": ["a", "b"]})
    items = pd.DataFrame(
        {
            "item": ["a", "b"],
            "title": ["A", "B"],
            "big": pd.Series([2**64, 3], dtype=object),
            "nested": pd.Series([_nested(20, 1, as_dict=False), {"ok": 1}], dtype=object),
            "nul": ["bad\x00text", "fine"],
        }
    )
    dataset = Dataset.from_frame(interactions, items=items)
    storage.import_dataset(dataset)
    stored = {row["id"]: row["attributes"] for row in storage.all_items()}
    assert stored == {"a": {}, "b": {"big": 3, "nested": {"ok": 1}, "nul": "fine"}}
    late = Dataset.from_frame(
        pd.DataFrame({"user": ["u"], "item": ["a"], "ts": [-86_400.0]}), timestamp="ts"
    )
    with pytest.raises(Exception, match="timestamp"):
        storage.import_dataset(late)


# -- a failed retrain changes nothing --------------------------------------------------------------
def _fail(*_: Any, **__: Any) -> Any:
    raise RuntimeError("injected failure")


def _fail_half_written(_: Any, path: Path) -> None:
    Path(path).mkdir(parents=True)
    (Path(path) / "config.json").write_text("{")
    raise OSError("disk full (injected)")


@pytest.mark.parametrize("step", ["fit", "demographics", "save", "record", "popularity"])
def test_a_failed_retrain_leaves_the_active_version_as_it_was(
    step: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path, model="item-knn")
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        seed(client)
        first = ok(client.post("/admin/retrain", params={"wait": "true"}))["version"]
        ok(client.post("/events", json={"user_id": "u0", "item_id": "a9", "type": "like"}), 201)
        folders = sorted(p.name for p in Path(settings.model_dir).iterdir())
        target: Any = {
            "fit": (get_class("item-knn"), "fit"),
            "demographics": (Demographics, "learn"),
            "save": (get_class("item-knn"), "save", _fail_half_written),
            "record": (Storage, "add_model_version"),
            "popularity": (Live, "popularity"),
        }[step]
        with monkeypatch.context() as patch:
            patch.setattr(*target, *([] if len(target) == 3 else [_fail]))
            failed = client.post("/admin/retrain", params={"wait": "true"})
        assert failed.status_code == 500
        storage: Storage = app.state.storage
        assert storage.active_model_version()["id"] == first["id"]  # type: ignore[index]
        assert [v["id"] for v in storage.list_model_versions()] == [first["id"]]
        assert sorted(p.name for p in Path(settings.model_dir).iterdir()) == folders
        ready = ok(client.get("/health/ready"))
        assert ready["model_version"] == first["id"]
        assert ok(client.get("/users/u0/recommendations"))["model_version"] == first["id"]
        second = ok(client.post("/admin/retrain", params={"wait": "true"}))["version"]
        assert ok(client.get("/health/ready"))["model_version"] == second["id"] > first["id"]


# -- start-up falls back ---------------------------------------------------------------------------
@pytest.fixture
def versions(tmp_path: Path) -> tuple[Settings, list[dict[str, Any]]]:
    """Two trained versions of item-knn; the second active."""
    settings = make_settings(tmp_path, model="item-knn")
    with serve(settings) as client:
        seed(client)
        first = ok(client.post("/admin/retrain", params={"wait": "true"}))["version"]
        event = {"user_id": "u0", "item_id": "a9", "type": "like"}
        ok(client.post("/events", json=event), 201)
        second = ok(client.post("/admin/retrain", params={"wait": "true"}))["version"]
    return settings, [first, second]


def _truncate(folder: Path) -> None:
    arrays = folder / "arrays.npz"
    arrays.write_bytes(arrays.read_bytes()[: arrays.stat().st_size // 2])


@pytest.mark.parametrize(
    "damage",
    [
        _truncate,
        lambda folder: shutil.rmtree(folder),
        lambda folder: (folder / "config.json").write_text("{garbage"),
        lambda folder: (folder / "arrays.npz").unlink(),
    ],
    ids=["truncated-arrays", "missing-folder", "garbage-config", "missing-arrays"],
)
def test_a_start_serves_the_newest_loadable_version(
    versions: tuple[Settings, list[dict[str, Any]]],
    damage: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings, (first, second) = versions
    damage(Path(second["path"]))
    with caplog.at_level(logging.ERROR, "tastebud.service"), serve(settings) as client:
        ready = ok(client.get("/health/ready"))
        assert ready["model_version"] == first["id"]
        assert f"active model version {second['id']} cannot be loaded" in ready["serving"]
        assert f"serving version {first['id']} instead" in ready["serving"]
        assert any("cannot be loaded" in r.getMessage() for r in caplog.records)
        # the database keeps the operator's choice; the answers say what is served
        listed = {v["id"]: v["active"] for v in ok(client.get("/admin/models"))}
        assert listed == {first["id"]: False, second["id"]: True}
        answer = ok(client.get("/users/u0/recommendations", params={"k": 3}))
        assert answer["model_version"] == first["id"] and answer["items"]
        engine: Engine = client.app.state.engine  # type: ignore[attr-defined]
        engine.versions.follow_active()  # the follower tries again later, quietly
        assert engine.snapshot.version["id"] == first["id"]  # type: ignore[index]
        # an unloadable version cannot be activated (409); a loadable one can, and clears it
        conflict = client.post(f"/admin/models/{second['id']}/activate")
        assert conflict.status_code == 409, conflict.text
        ok(client.post(f"/admin/models/{first['id']}/activate"))
        ready = ok(client.get("/health/ready"))
        assert ready["model_version"] == first["id"] and "cannot" not in ready["serving"]


def test_a_start_with_no_loadable_version_serves_popular_items(
    versions: tuple[Settings, list[dict[str, Any]]],
) -> None:
    settings, found = versions
    for version in found:
        _truncate(Path(version["path"]))
    # too few events for the retrain a start without a model begins: the note stays
    blocked = settings.model_copy(update={"min_events_to_train": 10**9})
    with serve(blocked) as client:
        ready = ok(client.get("/health/ready"))
        assert ready["model_version"] is None
        assert ready["serving"].startswith("popular items")
        assert f"active model version {found[1]['id']} cannot be loaded" in ready["serving"]
        assert "no other version can" in ready["serving"]
        answer = ok(client.get("/users/u0/recommendations", params={"k": 3}))
        assert answer["items"] and answer["model_version"] is None
    with serve(settings) as client:  # enough events: the start's retrain replaces it
        deadline = time.monotonic() + 60
        while (ready := ok(client.get("/health/ready")))["model_version"] is None:
            assert time.monotonic() < deadline, ready
            time.sleep(0.05)
        assert "cannot" not in ready["serving"] and ready["model_version"] > found[1]["id"]


def test_the_follower_survives_an_unloadable_version_activated_elsewhere(
    versions: tuple[Settings, list[dict[str, Any]]], caplog: pytest.LogCaptureFixture
) -> None:
    settings, (first, second) = versions
    with serve(settings) as client:
        engine: Engine = client.app.state.engine  # type: ignore[attr-defined]
        storage: Storage = client.app.state.storage  # type: ignore[attr-defined]
        _truncate(Path(first["path"]))
        storage.activate_model_version(first["id"])  # as another process would
        with caplog.at_level(logging.ERROR, "tastebud.service"):
            engine.versions.follow_active()
            engine.versions.follow_active()
        said = [r for r in caplog.records if "cannot load the active model version" in r.message]
        assert len(said) == 1  # said once, not every second
        ready = ok(client.get("/health/ready"))
        assert ready["model_version"] == second["id"]
        assert f"active model version {first['id']} cannot be loaded" in ready["serving"]
        ok(client.get("/users/u0/recommendations"))


def test_the_live_tail_and_histories_take_poisoned_rows(storage: Storage, tmp_path: Path) -> None:
    storage.upsert_item("good")
    engine = Engine(Settings(db=storage.url, model_dir=tmp_path / "models"), storage)
    engine.start()
    rows = [_event("u", "good", "rating", v) for v in (1e308, -float("inf"), 1e12, 4.0)]
    rows += [_event(bad, "good") for bad in BAD_IDS] + [_event("u", "good", "like", None, -1.0)]
    _raw(
        storage,
        "INSERT INTO events (user_id, item_id, type, value, ts, received_at) "
        "VALUES (:u, :i, :k, :v, :t, :r)",
        rows,
    )
    if storage.backend == "sqlite":
        _raw(
            storage,
            "INSERT INTO events (user_id, item_id, type, value, ts, received_at) "
            "VALUES ('u', 'good', 'rating', 'five', 0, 0)",
            [{}],
        )
    engine.live.follow_events()
    assert engine.live._counted_seq == storage.last_seq()  # read past them, once
    # 4.0, the like, the bad ids -- and on SQLite the rating whose value is the text 'five':
    # an unreadable value reads as no value, in the live tail as in the training set
    unreadable = 1 if storage.backend == "sqlite" else 0
    assert engine.popular(3) == [("good", float(len(BAD_IDS) + 2 + unreadable))]
    # a history holding them: the usable events count, the others say nothing
    # (4.0 for the rating of 4, 4.0 for the like, and the unreadable rating's weight, 1)
    assert engine.user_state("u").values == {"good": 4.0 + 4.0 + unreadable}
    assert engine.rules.value("rating", float("nan")) == 1.0  # NaN: no value
    assert engine.rules.value("rating", "five") == 0.0  # type: ignore[arg-type]


# -- rows of the wrong SQL type (the acceptance walk of issue 17) ----------------------------------
def test_values_of_the_wrong_type_in_any_column_answer_on_every_route(
    tmp_path: Path,
) -> None:
    """SQLite keeps whatever a column is given: a BLOB id or title that is no UTF-8, text
    in a value or a time. A start, the lists, the item pages and searches, a user's events
    and a retrain all answer for them."""
    settings = make_settings(tmp_path)
    with serve(settings) as client:
        seed(client)
    with Storage(settings.db) as storage:
        _raw(
            storage,
            "INSERT INTO events (user_id, item_id, type, value, ts, received_at) VALUES "
            "(x'fffe', 'a1', 'like', NULL, 1.0, 0), ('u1', x'ff', 'like', NULL, 1.0, 0), "
            "('u1', 'a2', 'rating', 'abc', 1.0, 0), ('u1', 'a3', 'like', NULL, 'notats', 0), "
            "('u1', 'a4', 'rating', 4.0, 'Infinity', 0)",
            [{}],
        )
        _raw(
            storage,
            "INSERT INTO items (id, title, attributes, available, created_at, updated_at) "
            "VALUES ('blob-title', x'ff', '{}', 1, 1.0, 1.0), (x'fe', 'blob id', '{}', 1, 1, 1)",
            [{}],
        )
        _raw(
            storage,
            "INSERT INTO experiments (name, variants, status, created_at) VALUES "
            "('broken', '{bad json', 'running', 1.0)",
            [{}],
        )
    with serve(settings) as client:  # the start reads them all (demographics, catalogue...)
        assert ok(client.get("/health/ready"))["status"] == "ready"
        ok(client.get("/users/u1/recommendations"))
        ok(client.post("/users/u1/onboarding", json={"liked_items": ["a1"]}))
        assert ok(client.get("/items/blob-title"))["title"] == "\ufffd"
        assert {i["id"] for i in ok(client.get("/items", params={"limit": 1000}))} >= {
            "blob-title",
            "\ufffd",
        }
        ok(client.get("/items", params={"q": "pi"}))  # the case-folding search skips a BLOB
        events = ok(client.get("/users/u1/events"))
        assert {e["item_id"] for e in events} >= {"a2", "a3", "\ufffd"}
        by_item = {e["item_id"]: e for e in events}
        assert by_item["a2"]["value"] is None and by_item["a3"]["ts"] is None
        assert by_item["a4"]["ts"] is None  # infinity: no JSON number
        # the broken experiment is not run (lists above answered) and its report says why
        assert [e["name"] for e in ok(client.get("/admin/experiments"))] == ["broken"]
        assert "unreadable" in error(client.get("/admin/experiments/broken/report"), 409)["message"]
        version = ok(client.post("/admin/retrain", params={"wait": "true"}))["version"]
        skipped = version["metrics"]["skipped"]
        assert skipped[BAD_TS] == 2  # the text time and the infinite one
