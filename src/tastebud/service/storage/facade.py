"""``Storage``: one object over the repositories, with the method names the service calls.

Each method of :class:`Storage` is one repository method under the name the service knows it
by: ``storage.get_user`` is ``storage.users.get`` (:class:`_To`), so the two cannot drift
apart, mypy sees the repository method's signature, and a call adds one attribute lookup to
calling the repository, never anything per row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from sqlalchemy.engine import Engine

from tastebud.service.storage import bulk_import, schema
from tastebud.service.storage.db import Backend, Database
from tastebud.service.storage.deletions import DeletionLog
from tastebud.service.storage.events import Events
from tastebud.service.storage.experiments import Experiments
from tastebud.service.storage.exposures import Exposures
from tastebud.service.storage.items import Items
from tastebud.service.storage.users import Users
from tastebud.service.storage.versions import ModelVersions

P = ParamSpec("P")
T = TypeVar("T")


class _To(Generic[P, T]):
    """A method of :class:`Storage` that is ``method`` bound to the instance's attribute
    ``part`` (a repository, or ``db`` for a function of the database).

    Looked up on an instance, it answers the repository's own bound method (tracebacks and
    reprs name the repository); looked up on the class, itself, so a test can replace the
    method on the class or on an instance as on any other.
    """

    def __init__(self, part: str, method: Callable[Concatenate[Any, P], T]) -> None:
        self._part = part
        self._method = method
        self.__doc__ = method.__doc__

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> _To[P, T]: ...
    @overload
    def __get__(self, obj: object, owner: type[Any]) -> Callable[P, T]: ...
    def __get__(self, obj: object | None, owner: type[Any]) -> _To[P, T] | Callable[P, T]:
        if obj is None:
            return self
        bound: Callable[P, T] = self._method.__get__(getattr(obj, self._part))
        return bound


class Storage:
    """Users, items, events, model versions and experiment logs in one SQL database.

    Parameters
    ----------
    url:
        ``sqlite:///path/to/file.db`` (the parent folder is created) or
        ``postgresql+psycopg://user:password@host:5432/dbname`` (``postgresql://`` means the
        same). In-memory SQLite is refused: each pooled connection would see its own database.

    One instance is meant to be shared by all threads of a process; :meth:`close` it (or use it
    as a context manager) when done. Call :meth:`migrate` at every start. The repositories
    are its attributes -- ``users``, ``items``, ``events``, ``versions``, ``experiments``,
    ``exposures`` (and feedback), ``deletions`` -- and ``db`` is the database under them.
    """

    def __init__(self, url: str) -> None:
        self.db = Database(url)
        self.backend: Backend = self.db.backend
        self.url = self.db.url
        self.deletions = DeletionLog(self.db)
        self.users = Users(self.db, self.deletions)
        self.items = Items(self.db, self.deletions)
        self.events = Events(self.db)
        self.versions = ModelVersions(self.db)
        self.experiments = Experiments(self.db)
        self.exposures = Exposures(self.db, self.deletions)

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Storage({self.url!r})"

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for diagnostics; use the methods to read and write)."""
        return self.db.engine

    def drop_all(self) -> None:
        """Destructive, for tests: drop every tastebud table with all its data."""
        schema.drop_all(self.db)
        self.deletions.clear_key()

    close = _To("db", Database.close)
    migrate = _To("db", schema.migrate)
    schema_version = _To("db", schema.schema_version)
    import_dataset = _To("db", bulk_import.import_dataset)

    upsert_user = _To("users", Users.upsert)
    get_user = _To("users", Users.get)
    delete_user = _To("users", Users.delete)
    list_users = _To("users", Users.page)
    user_attributes = _To("users", Users.attributes)
    count_users = _To("users", Users.count)

    user_hash = _To("deletions", DeletionLog.user_hash)
    forget_mark = _To("deletions", DeletionLog.forget_mark)
    deletions_after = _To("deletions", DeletionLog.after)
    last_deletion = _To("deletions", DeletionLog.last)

    upsert_item = _To("items", Items.upsert)
    update_item = _To("items", Items.update)
    get_item = _To("items", Items.get)
    delete_item = _To("items", Items.delete)
    list_items = _To("items", Items.page)
    count_items = _To("items", Items.count)
    all_items = _To("items", Items.all)
    items_changed_since = _To("items", Items.changed_since)
    newest_items = _To("items", Items.newest)

    add_events = _To("events", Events.add)
    user_events = _To("events", Events.of_user)
    recent_events = _To("events", Events.recent)
    events_frame = _To("events", Events.frame)
    events_after = _To("events", Events.after)
    count_events = _To("events", Events.count)
    last_seq = _To("events", Events.last_seq)

    add_model_version = _To("versions", ModelVersions.add)
    list_model_versions = _To("versions", ModelVersions.all)
    get_model_version = _To("versions", ModelVersions.get)
    activate_model_version = _To("versions", ModelVersions.activate)
    active_model_version = _To("versions", ModelVersions.active)
    deactivate_model_versions = _To("versions", ModelVersions.deactivate_all)
    mark_forgotten = _To("versions", ModelVersions.mark_forgotten)
    forgotten_versions = _To("versions", ModelVersions.forgotten)

    create_experiment = _To("experiments", Experiments.create)
    list_experiments = _To("experiments", Experiments.all)
    get_experiment = _To("experiments", Experiments.get)
    running_experiment = _To("experiments", Experiments.running)
    stop_experiment = _To("experiments", Experiments.stop)

    log_exposures = _To("exposures", Exposures.log)
    log_exposure_rows = _To("exposures", Exposures.log_rows)
    log_feedback = _To("exposures", Exposures.log_feedback)
    exposure_counts = _To("exposures", Exposures.counts)
    exploration_stats = _To("exposures", Exposures.exploration_stats)
