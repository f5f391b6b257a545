"""A model folder trained outside the service (Spark, a notebook), registered with
``tastebud models register`` and served like a version the service trained itself: real
storage (SQLite, and PostgreSQL for the main flow), the real command line, the app with its
lifespan. Nothing of tastebud is mocked."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tests.service.test_app import (  # noqa: F401 - _clean_environment is an autouse fixture
    A_ITEMS,
    B_ITEMS,
    ApiClient,
    _clean_environment,
    cluster_likes,
    make_settings,
    ok,
    title,
)

from tastebud import Dataset
from tastebud.models import create, load
from tastebud.service.app import create_app
from tastebud.service.settings import Settings
from tastebud.service.storage import Storage


# -- helpers -------------------------------------------------------------------------------------
def _settings(tmp_path: Path, url: str) -> Settings:
    return make_settings(tmp_path, url, evaluate_on_retrain=False)


def _config(tmp_path: Path, settings: Settings) -> Path:
    """A config file naming the service's database and model_dir (what an operator passes)."""
    path = tmp_path / "tastebud.json"
    path.write_text(json.dumps({"db": settings.db, "model_dir": str(settings.model_dir)}))
    return path


def _seed(url: str) -> list[dict[str, Any]]:
    """The catalogue and the two taste clusters, written straight into the database (as
    ``tastebud import`` would), before any service starts."""
    with Storage(url) as storage:
        storage.migrate()
        for item in A_ITEMS + B_ITEMS:
            storage.upsert_item(item, title=title(item))
        events = cluster_likes()
        storage.add_events(events)
    return events


def _train_elsewhere(events: list[dict[str, Any]], folder: Path, **params: Any) -> Path:
    """What Spark or a notebook does: fit on the same events (their ids), save a folder."""
    frame = pd.DataFrame({"user": [e["user_id"] for e in events]})
    frame["item"] = [e["item_id"] for e in events]
    dataset = Dataset.from_frame(frame)
    model = create("als", **{"n_factors": 2, "reg": 0.1, "random_state": 0, **params})
    model.fit(dataset).save(folder)
    return folder


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from tastebud.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _versions(capsys: pytest.CaptureFixture[str], config: Path) -> list[dict[str, Any]]:
    code, out, err = _cli(capsys, "models", "list", "--config", str(config), "--json")
    assert code == 0, err
    return list(json.loads(out))


def _registered_id(out: str) -> int:
    """The version id in ``registered FOLDER as model version N (...)``."""
    assert out.startswith("registered "), out
    return int(out.split(" as model version ")[1].split()[0])


def _wait(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _recs(client: ApiClient, user: str) -> dict[str, Any]:
    return dict(ok(client.get(f"/users/{user}/recommendations", params={"k": 5})))


# -- the main flow -------------------------------------------------------------------------------
def test_a_registered_folder_is_served_followed_and_replaced_by_a_retrain(
    storage_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = _settings(tmp_path, storage_url)
    config = _config(tmp_path, settings)
    events = _seed(storage_url)
    source = _train_elsewhere(events, tmp_path / "spark-out")

    code, out, err = _cli(
        capsys, "models", "register", str(source), "--config", str(config),
        "--activate", "--name", "spark-1",
    )  # fmt: skip
    assert code == 0 and err == "", err  # every id is known: no warning
    first = _registered_id(out)
    assert out.strip().endswith(": active")
    [row] = _versions(capsys, config)
    assert row["id"] == first and row["active"] and row["model"] == "als"
    assert row["metrics"]["name"] == "spark-1"
    assert row["metrics"]["external"].startswith("trained outside the service")
    assert "last_seq" not in row["metrics"]  # so that deleting any user retires it
    assert row["metrics"]["stored_items"] == row["metrics"]["items"] == 20
    assert row["metrics"]["users"] == 40 and row["metrics"]["interactions"] == len(events)
    copy = Path(row["path"])
    assert copy.parent == Path(settings.model_dir).resolve() and copy.name.startswith("spark-1-")
    assert not list(copy.parent.glob(".registering-*"))  # no half copy left behind

    shutil.rmtree(source)  # the service owns its copy: the source may go
    with ApiClient(create_app(settings)) as client:
        ready = ok(client.get("/health/ready"))
        assert ready["serving"] == f"model version {first} (als)"
        answer = _recs(client, "u0")
        assert answer["model_version"] == first
        assert answer["items"][0]["source"] == "model"
        # the registered model's own ranking of u0's stored history (its copy in model_dir)
        expected = load(row["path"]).recommend(["u0"], k=5)["item"].tolist()
        assert [r["item"] for r in answer["items"]] == expected
        assert all(item in A_ITEMS for item in expected)  # u0's cluster
        stats = ok(client.get("/admin/stats"))
        assert stats["model_version"] == first and not stats["training"]

        # a second folder, registered while the service runs: it follows within a second
        other = _train_elsewhere(events, tmp_path / "notebook", n_factors=4)
        code, out, err = _cli(
            capsys, "models", "register", str(other), "--config", str(config), "--activate"
        )
        assert code == 0, err
        second = _registered_id(out)
        assert second > first
        _wait(lambda: _recs(client, "u0")["model_version"] == second)
        assert ok(client.get("/health/ready"))["serving"] == f"model version {second} (als)"

        # a rollback to the first from the command line is followed as well
        code, out, err = _cli(capsys, "models", "activate", str(first), "--config", str(config))
        assert code == 0 and out.strip() == f"model version {first} (als) active", err
        _wait(lambda: _recs(client, "u0")["model_version"] == first)

        # a retrain replaces it as it replaces any version
        retrained = ok(client.post("/admin/retrain", params={"wait": "true"}))["version"]
        assert retrained["id"] > second and retrained["active"]
        assert "external" not in retrained["metrics"] and "last_seq" in retrained["metrics"]
        assert _recs(client, "u0")["model_version"] == retrained["id"]

    listed = _versions(capsys, config)
    assert [v["id"] for v in listed] == [first, second, retrained["id"]]
    assert [v["active"] for v in listed] == [False, False, True]
    code, out, _ = _cli(capsys, "models", "list", "--config", str(config))
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["version", "model", "name"]
    assert "spark-1" in lines[1] and "external" in lines[1]
    assert lines[3].split()[-1] == "active"


def test_an_external_version_is_up_to_date_until_events_come_and_is_kept_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No retrain at start (one serves) and none scheduled until new events come: the
    scheduled retrain compares the events stored at registration."""
    settings = _settings(tmp_path, f"sqlite:///{tmp_path / 'service.db'}")
    config = _config(tmp_path, settings)
    events = _seed(settings.db)
    source = _train_elsewhere(events, tmp_path / "spark-out")
    code, out, err = _cli(
        capsys, "models", "register", str(source), "--config", str(config), "--activate"
    )
    assert code == 0, err
    version = _registered_id(out)
    with ApiClient(create_app(settings)) as client:
        engine = client.app.state.engine  # type: ignore[attr-defined]
        assert engine.snapshot.version["id"] == version
        assert not engine.has_new_events()
        ok(client.post("/events", json={"user_id": "u1", "item_id": "a9", "type": "like"}), 201)
        assert engine.has_new_events()
        assert [v["id"] for v in _versions(capsys, config)] == [version]  # no retrain ran


def test_deleting_a_user_retires_the_registered_version_and_deletes_its_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The model may hold any user (it learned elsewhere): deleting one with events marks
    it, the usual retrain follows, and the copy in model_dir is deleted."""
    settings = _settings(tmp_path, f"sqlite:///{tmp_path / 'service.db'}")
    config = _config(tmp_path, settings)
    events = _seed(settings.db)
    source = _train_elsewhere(events, tmp_path / "spark-out")
    code, out, err = _cli(
        capsys, "models", "register", str(source), "--config", str(config), "--activate"
    )
    assert code == 0, err
    version = _registered_id(out)
    copy = Path(_versions(capsys, config)[0]["path"])
    with ApiClient(create_app(settings)) as client:
        assert _recs(client, "u0")["model_version"] == version
        ok(client.delete("/users/u33"))

        def replaced() -> bool:
            rows = {v["id"]: v for v in ok(client.get("/admin/models"))}
            active = [v for v in rows.values() if v["active"]]
            return bool(active) and active[0]["id"] != version and not copy.exists()

        _wait(replaced)
        rows = {v["id"]: v for v in ok(client.get("/admin/models"))}
        assert rows[version]["forgotten_at"] is not None
        assert _recs(client, "u0")["model_version"] != version
    code, _, err = _cli(capsys, "models", "activate", str(version), "--config", str(config))
    assert code == 2 and "deleted since" in err and len(err.strip().splitlines()) == 1


# -- what is refused -----------------------------------------------------------------------------
def _corrupt_arrays(folder: Path) -> None:
    (folder / "arrays.npz").write_bytes(b"not a zip file")


def _unknown_model(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model": "no-such-model"}))


def _no_config(folder: Path) -> None:
    (folder / "config.json").unlink()


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda tmp, events: tmp / "missing", "missing: no such folder"),
        (lambda tmp, events: _file(tmp), "is a file, not a model folder"),
        (lambda tmp, events: _broken(tmp, events, _no_config), "no config.json"),
        (lambda tmp, events: _broken(tmp, events, _corrupt_arrays), "cannot read arrays.npz"),
        (lambda tmp, events: _broken(tmp, events, _unknown_model), "this tastebud does not know"),
        (lambda tmp, events: _random_model(tmp, events), "cannot recommend from a live history"),
        (lambda tmp, events: _other_ids(tmp, events), "none of the model's 20 items"),
    ],
    ids=["missing", "file", "no-config", "corrupt", "unknown-class", "no-fold-in", "other-ids"],
)
def test_a_folder_the_service_cannot_serve_is_refused_in_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make: Callable[[Path, list[dict[str, Any]]], Path],
    says: str,
) -> None:
    settings = _settings(tmp_path, f"sqlite:///{tmp_path / 'service.db'}")
    config = _config(tmp_path, settings)
    folder = make(tmp_path, _seed(settings.db))
    code, out, err = _cli(
        capsys, "models", "register", str(folder), "--config", str(config), "--activate"
    )
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert says in err and ".registering-" not in err  # the source is named, not the copy
    assert _versions(capsys, config) == []  # nothing recorded
    model_dir = Path(settings.model_dir)
    assert not model_dir.exists() or not [p for p in model_dir.iterdir() if p.is_dir()]


def _file(tmp: Path) -> Path:
    path = tmp / "model.npz"
    path.write_bytes(b"x")
    return path


def _broken(tmp: Path, events: list[dict[str, Any]], damage: Callable[[Path], None]) -> Path:
    folder = _train_elsewhere(events, tmp / "broken")
    damage(folder)
    return folder


def _random_model(tmp: Path, events: list[dict[str, Any]]) -> Path:
    frame = pd.DataFrame({"user": [e["user_id"] for e in events]})
    frame["item"] = [e["item_id"] for e in events]
    return create("random").fit(Dataset.from_frame(frame)).save(tmp / "random")


def _other_ids(tmp: Path, events: list[dict[str, Any]]) -> Path:
    """Trained on internal indices instead of the ids: 0..19 are no stored item."""
    renamed = [{**e, "item_id": str((A_ITEMS + B_ITEMS).index(e["item_id"]))} for e in events]
    return _train_elsewhere(renamed, tmp / "indices")


def test_an_empty_catalogue_says_to_import_it_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = _settings(tmp_path, f"sqlite:///{tmp_path / 'service.db'}")
    config = _config(tmp_path, settings)
    source = _train_elsewhere(cluster_likes(), tmp_path / "spark-out")
    code, _, err = _cli(capsys, "models", "register", str(source), "--config", str(config))
    assert code == 2 and "import the catalogue first" in err


def test_ids_the_database_lacks_are_warned_about_and_registered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Items the catalogue lacks are never recommended; users it lacks may be deleted ones:
    both are said on stderr, the version is recorded (inactive without --activate)."""
    settings = _settings(tmp_path, f"sqlite:///{tmp_path / 'service.db'}")
    config = _config(tmp_path, settings)
    events = _seed(settings.db)
    extra = [{"user_id": f"elsewhere{u}", "item_id": f"z{u % 3}", "type": "like"} for u in range(5)]
    source = _train_elsewhere(events + extra, tmp_path / "spark-out")
    code, out, err = _cli(capsys, "models", "register", str(source), "--config", str(config))
    assert code == 0
    assert err.splitlines() == [
        "warning: 3 of the model's 23 items are not in the database: they are never recommended",
        "warning: 5 of the model's 45 users are not in the database (never imported, or "
        "deleted): the service serves users from their stored events, but the model folder "
        "holds their ids; if any was deleted, retrain without them",
    ]
    version = _registered_id(out)
    assert "not active (serve it with: tastebud models activate " in out
    [row] = _versions(capsys, config)
    assert row["id"] == version and not row["active"]
    assert (row["metrics"]["stored_items"], row["metrics"]["stored_users"]) == (20, 40)


def test_a_name_that_cannot_name_a_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = _settings(tmp_path, f"sqlite:///{tmp_path / 'service.db'}")
    config = _config(tmp_path, settings)
    source = _train_elsewhere(_seed(settings.db), tmp_path / "spark-out")
    for name in ("../up", "a b", "", "x" * 65):
        code, _, err = _cli(
            capsys, "models", "register", str(source), "--config", str(config), "--name", name
        )
        assert code == 2 and err.startswith("error: --name "), name
    assert _versions(capsys, config) == []


def test_a_pickled_array_is_refused_never_unpickled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``arrays.npz`` holding an object array (stored pickled by numpy) is refused at load
    (``allow_pickle=False``): registering a folder cannot run code from it."""
    settings = _settings(tmp_path, f"sqlite:///{tmp_path / 'service.db'}")
    config = _config(tmp_path, settings)
    folder = _train_elsewhere(_seed(settings.db), tmp_path / "spark-out")
    with np.load(folder / "arrays.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["items_"] = np.array([object()] * len(arrays["items_"]), dtype=object)
    np.savez(folder / "arrays.npz", **arrays)  # type: ignore[arg-type]
    code, _, err = _cli(capsys, "models", "register", str(folder), "--config", str(config))
    assert code == 2 and "allow_pickle=False" in err, err
    assert _versions(capsys, config) == []


# -- races with deletions and retrains -----------------------------------------------------------
def test_a_user_deleted_during_the_registration_retires_the_new_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The forget mark is read before anything else: a deletion that commits before the row
    is written (so it cannot mark the row itself) still retires it, and the copy goes."""
    from tastebud.errors import TastebudError
    from tastebud.service.registration import register_folder

    settings = _settings(tmp_path, f"sqlite:///{tmp_path / 'service.db'}")
    source = _train_elsewhere(_seed(settings.db), tmp_path / "spark-out")
    with Storage(settings.db) as storage:
        add = storage.add_model_version

        def deleting_first(*args: Any, **kwargs: Any) -> Any:
            assert storage.delete_user("u7")  # commits before the row is written
            return add(*args, **kwargs)

        monkeypatch.setattr(storage, "add_model_version", deleting_first)
        with pytest.raises(TastebudError, match=r"was deleted while .* was registered"):
            register_folder(settings, storage, source, activate=True)
        [row] = storage.list_model_versions()
        assert row["forgotten_at"] is not None and not row["active"]
        assert not Path(row["path"]).exists()
        assert storage.active_model_version() is None


def test_a_registration_waits_for_a_retrain_under_way(tmp_path: Path) -> None:
    """Registration takes the lock a retrain holds on model_dir, so a retrain that finishes
    later cannot activate its version over the registered one."""
    from tastebud.service.registration import register_folder
    from tastebud.service.versions import retrain_lock

    settings = _settings(tmp_path, f"sqlite:///{tmp_path / 'service.db'}")
    source = _train_elsewhere(_seed(settings.db), tmp_path / "spark-out")
    waiting, done = threading.Event(), threading.Event()
    result: dict[str, Any] = {}

    def register() -> None:
        with Storage(settings.db) as storage:
            result["version"] = register_folder(
                settings, storage, source, activate=True, on_wait=waiting.set
            ).version
        done.set()

    model_dir = Path(settings.model_dir)
    model_dir.mkdir(parents=True)
    with retrain_lock(model_dir, wait=True) as locked:  # a retrain under way elsewhere
        assert locked
        thread = threading.Thread(target=register)
        thread.start()
        assert waiting.wait(60)
        assert not done.is_set()
        with Storage(settings.db) as storage:
            assert storage.list_model_versions() == []  # nothing recorded while it waits
    thread.join(60)
    assert done.is_set() and result["version"]["active"]


# -- a Spark-trained model -----------------------------------------------------------------------
@pytest.mark.slow
def test_a_spark_trained_model_is_served_over_http(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """MLlib ALS fitted in Spark local mode on the service's events, exported as a model
    folder (:func:`tastebud.spark.export.export_als`), registered, its source deleted, and
    served: the list comes from the registered version and ranks as the exported model
    does."""
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("Spark needs Java (java not on PATH)")
    from tastebud.spark._session import spark_session
    from tastebud.spark.als import fit_als
    from tastebud.spark.export import export_als
    from tastebud.spark.io import from_frame

    settings = _settings(tmp_path, f"sqlite:///{tmp_path / 'service.db'}")
    config = _config(tmp_path, settings)
    events = _seed(settings.db)
    spark = spark_session("local[2]")  # left running: one session per process, others reuse it
    frame = spark.createDataFrame([(e["user_id"], e["item_id"]) for e in events], ["user", "item"])
    trained = fit_als(from_frame(frame, user="user", item="item"), n_factors=2, reg=0.1)
    source = export_als(trained, tmp_path / "spark-out")
    code, out, err = _cli(
        capsys, "models", "register", str(source), "--config", str(config), "--activate"
    )
    assert code == 0 and err == "", err
    version = _registered_id(out)
    expected = load(source).recommend(["u0"], k=5)["item"].tolist()
    shutil.rmtree(source)
    with ApiClient(create_app(settings)) as client:
        answer = _recs(client, "u0")
        assert answer["model_version"] == version
        assert [r["item"] for r in answer["items"]] == expected
        assert all(item in A_ITEMS for item in expected)
