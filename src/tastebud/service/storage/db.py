"""The database under every repository: engine creation, transactions, bulk inserts, and the
column types that read a SQLite row whatever it holds.

Concurrency and durability
--------------------------
One engine (a connection pool) is shared by all threads. SQLite connections run in WAL mode
with ``synchronous=FULL`` (a write is on disk when the call returns), ``foreign_keys=ON`` and
a 10 s busy timeout; every write transaction starts with ``BEGIN IMMEDIATE``, so writers queue
for the lock up front instead of failing half way. PostgreSQL writes run at READ COMMITTED; a
write that loses a race on a unique key (two requests posting the same ``client_event_id``), a
deadlock or a serialization failure is rolled back and run again.

Every write commits before its method returns. Timestamps are float unix seconds.

Bulk loads
----------
:meth:`Database.bulk_connection` and :meth:`Database.load_rows` are what an import of millions
of rows runs on: PostgreSQL gets ``COPY`` into a temporary table and one ``INSERT ... SELECT
... ON CONFLICT DO NOTHING``; SQLite one prepared ``executemany`` of plain tuples, on one
connection with a larger page cache (the indexes' pages stay in memory from batch to batch).

Reading what a row holds
------------------------
SQLite's columns take any type, so a row written around the API (by hand, or by older code)
may hold a BLOB in a text column or text in a number column. The column types below read such
values as the type the column promises; PostgreSQL refuses the wrong type at the write, so its
reads skip them and pay nothing.
"""

from __future__ import annotations

import itertools
import json
import random
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Literal, TypeVar

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from tastebud import rules
from tastebud.errors import InvalidInputError

T = TypeVar("T")
Backend = Literal["sqlite", "postgresql"]

CHUNK = 5_000  # ids per IN (...) query
BULK_CHUNK = 10_000  # rows per bulk INSERT
#: SQLite page cache of a bulk load's connection, in KiB (the default is 2 MiB): the pages of
#: the indexes a load inserts into stay cached instead of being read again for every batch.
BULK_CACHE_KIB = 256 * 1024
_ROWCOUNT = {"preserve_rowcount": True}  # rowcount of INSERTs, too
_WRITE_ATTEMPTS = 8  # a write that loses a race is run again up to this many times in all


# -- reading what a row holds ----------------------------------------------------------------------
class ReadText(sa.TypeDecorator[str]):
    """A text column read as text whatever a row holds (written around the API, by hand or
    by older code): a BLOB is decoded (undecodable bytes replaced), a number written as
    text. Writes are unchanged. Only SQLite needs it -- its columns take any type;
    PostgreSQL's refuse the wrong one at the write -- so reads there pay nothing."""

    impl = sa.Text
    cache_ok = True

    def result_processor(self, dialect: sa.Dialect, coltype: Any) -> Any:
        if dialect.name != "sqlite":
            return self.impl_instance.result_processor(dialect, coltype)
        return super().result_processor(dialect, coltype)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> str | None:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value).decode("utf-8", "replace")
        return str(value)


class ReadNumber(sa.TypeDecorator[float]):
    """A number column read as a float whatever a row holds: text that is no number, or a
    BLOB, reads as ``unreadable`` (``None`` for an event's value and time -- the training
    set counts such rows and skips them --, 0.0, the epoch, for the other times). NaN and
    infinities read as they are, for the training set to count; an answer drops them."""

    impl = sa.Double
    cache_ok = True

    def __init__(self, unreadable: float | None = 0.0) -> None:
        super().__init__()
        self.unreadable = unreadable

    def result_processor(self, dialect: sa.Dialect, coltype: Any) -> Any:
        if dialect.name != "sqlite":  # PostgreSQL's double precision holds only floats
            return self.impl_instance.result_processor(dialect, coltype)
        return super().result_processor(dialect, coltype)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> float | None:
        if value is None:
            return None
        try:
            return float(value)
        except (TypeError, ValueError, OverflowError):
            return self.unreadable


class JSONObject(sa.TypeDecorator[dict[str, Any]]):
    """A JSON column holding an object (attributes, a version's params and metrics), read
    so that whatever a row holds -- written before today's checks, by an import of older
    code or by hand -- reads as an object the API can answer with and every consumer can
    use: text that is not JSON, and JSON that is not an object, read as ``{}``; an entry
    that :func:`rules.json_problem` refuses (NaN, an integer beyond 64 bits, nesting deeper
    than :data:`rules.MAX_JSON_DEPTH`, a lone surrogate) is left out of what is read. The
    row itself is not changed."""

    impl = sa.JSON
    cache_ok = True

    def result_processor(self, dialect: sa.Dialect, coltype: Any) -> Callable[[Any], Any]:
        # the JSON type's own processor first (it parses the text on SQLite), but a failure
        # to parse is a value to read as {}, not an error for the whole query
        inner = self.impl_instance.result_processor(dialect, coltype)

        def process(value: Any) -> dict[str, Any]:
            if inner is not None and value is not None:
                try:
                    value = inner(value)
                # not JSON; a number beyond 4300 digits; not text at all (SQLite keeps a
                # number or a blob written in its place as it is)
                except (ValueError, RecursionError, TypeError):
                    return {}
            return _readable_object(value)

        return process


def _readable_object(value: Any) -> dict[str, Any]:
    """``value`` as a JSON object of the entries :func:`rules.json_problem` accepts."""
    if not isinstance(value, dict):
        return {}
    if rules.json_problem(value) is None:  # the usual case: one walk
        return value
    return {k: v for k, v in value.items() if rules.json_problem({k: v}) is None}


class JSONObjects(sa.TypeDecorator[list[dict[str, Any]]]):
    """A JSON column holding a list of objects (an experiment's variants), read as such
    whatever a row holds: text that is not JSON, or JSON that is not a list, reads as
    ``[]``, and entries that are not objects are left out (the engine then refuses to run
    an experiment whose variants are unusable, and says so, instead of failing lists)."""

    impl = sa.JSON
    cache_ok = True

    def result_processor(self, dialect: sa.Dialect, coltype: Any) -> Callable[[Any], Any]:
        inner = self.impl_instance.result_processor(dialect, coltype)

        def process(value: Any) -> list[dict[str, Any]]:
            if inner is not None and value is not None:
                try:
                    value = inner(value)
                except (ValueError, RecursionError):
                    return []
            if not isinstance(value, list):
                return []
            return [_readable_object(v) for v in value if isinstance(v, dict)]

        return process


# -- small helpers ---------------------------------------------------------------------------------
def _json_dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def _casefold(value: Any) -> str | None:
    """SQL function ``tastebud_casefold`` on SQLite (whose lower() only folds ASCII); a
    value that is not text (a BLOB written around the API) matches nothing."""
    return value.casefold() if isinstance(value, str) else None


def chunks(values: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _dicts(result: Iterable[sa.Row[Any]]) -> list[dict[str, Any]]:
    """Result rows as dicts (the typed rows of :mod:`.rows` are these dicts)."""
    return [dict(row._mapping) for row in result]


def _first_dict(result: sa.Result[Any]) -> dict[str, Any] | None:
    """The first result row as a dict, or ``None``."""
    row = result.first()
    return None if row is None else dict(row._mapping)


def get_one(conn: Connection, table: sa.Table, key: str) -> dict[str, Any] | None:
    """The row of ``table`` whose ``id`` is ``key``, or ``None``."""
    return _first_dict(conn.execute(sa.select(table).where(table.c.id == key)))


def _is_retryable(err: sa_exc.DBAPIError) -> bool:
    """A unique-key race, deadlock or serialization failure: rolling back and rerunning works."""
    orig = err.orig
    sqlstate = getattr(orig, "sqlstate", None)  # psycopg
    if sqlstate in ("23505", "40P01", "40001"):
        return True
    return getattr(orig, "sqlite_errorname", None) == "SQLITE_CONSTRAINT_UNIQUE"


# -- the database ----------------------------------------------------------------------------------
class Database:
    """One SQL database (an engine and its connection pool) and the transactions run on it.

    ``url`` is ``sqlite:///path/to/file.db`` (the parent folder is created) or
    ``postgresql+psycopg://user:password@host:5432/dbname`` (``postgresql://`` means the
    same). In-memory SQLite is refused: each pooled connection would see its own database.
    """

    def __init__(self, url: str) -> None:
        if not isinstance(url, str) or not url.strip():
            raise InvalidInputError("the database URL must be a non-empty string")
        try:
            parsed = sa.make_url(url.strip())
        except sa_exc.ArgumentError:
            raise InvalidInputError(
                f"cannot parse database URL {url!r}; use sqlite:///path/to/file.db or "
                "postgresql+psycopg://user@host:5432/dbname"
            ) from None
        backend = parsed.get_backend_name()
        driver = parsed.get_driver_name()
        if backend == "sqlite" and driver in ("pysqlite", ""):
            self.backend: Backend = "sqlite"
            self.engine = self._sqlite_engine(parsed)
        elif backend in ("postgresql", "postgres") and driver in ("psycopg", ""):
            self.backend = "postgresql"
            parsed = parsed.set(drivername="postgresql+psycopg")
            connect_args: dict[str, Any] = {}
            if "connect_timeout" not in parsed.query:
                connect_args["connect_timeout"] = 10
            self.engine = sa.create_engine(
                parsed,
                pool_size=8,
                max_overflow=32,
                pool_pre_ping=True,
                connect_args=connect_args,
                json_serializer=_json_dumps,
            )
        else:
            raise InvalidInputError(
                f"unsupported database URL scheme {parsed.drivername!r}; use sqlite:///path.db "
                "or postgresql+psycopg://user@host:5432/dbname"
            )
        self.url = parsed.render_as_string(hide_password=True)

    @staticmethod
    def _sqlite_engine(url: sa.URL) -> Engine:
        database = url.database
        if not database or database == ":memory:" or url.query.get("mode") == "memory":
            raise InvalidInputError(
                "in-memory SQLite is not supported; give a file: sqlite:///path/to/file.db"
            )
        path = Path(database)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InvalidInputError(
                f"cannot create the folder of database {path}: {err.strerror}"
            ) from None
        engine = sa.create_engine(url, pool_size=8, max_overflow=32, json_serializer=_json_dumps)

        @sa_event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Take over transaction control from the sqlite3 module (see the "begin" hook).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("PRAGMA busy_timeout = 10000")
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = FULL")
                cursor.execute("PRAGMA foreign_keys = ON")
                # deleted rows are overwritten with zeros, not left in free space of the
                # file (a deleted user's id must not stay readable in its bytes)
                cursor.execute("PRAGMA secure_delete = ON")
            finally:
                cursor.close()
            dbapi_connection.create_function("tastebud_casefold", 1, _casefold, deterministic=True)

        @sa_event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            immediate = conn.get_execution_options().get("tastebud_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    def close(self) -> None:
        """Close every pooled connection; the object must not be used afterwards."""
        self.engine.dispose()

    def read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in a read transaction (one snapshot on SQLite)."""
        with self.engine.connect() as conn:
            return fn(conn)

    def write(
        self, fn: Callable[[Connection], T], *, durable: bool = True, on: Connection | None = None
    ) -> T:
        """Run ``fn`` in one write transaction, committed on return, rerun when it lost a race.

        ``durable=False`` (telemetry such as exposures, all but the last batch of an import)
        commits without waiting for the disk on SQLite (``synchronous=NORMAL`` for that
        transaction: atomic and safe from a process crash, but the last commits may be lost
        to a power cut), so the write lock it holds is not held through an fsync that the
        events behind it wait for; the next durable commit makes them durable too (it syncs
        the whole write-ahead log). ``on``: a connection to run on (a bulk load's, from
        :meth:`bulk_connection`), outside any transaction; by default one from the pool."""
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            try:
                with self.engine.connect() if on is None else nullcontext(on) as conn:
                    if self.backend == "sqlite":
                        conn.execution_options(tastebud_write=True)
                    raw = conn.connection.driver_connection  # outside any transaction
                    if raw is not None and self.backend == "sqlite" and not durable:
                        raw.execute("PRAGMA synchronous = NORMAL")
                    try:
                        with conn.begin():
                            return fn(conn)
                    finally:
                        if raw is not None and self.backend == "sqlite" and not durable:
                            raw.execute("PRAGMA synchronous = FULL")
            except sa_exc.DBAPIError as err:
                if attempt == _WRITE_ATTEMPTS or not _is_retryable(err):
                    raise
                time.sleep(random.uniform(0.001, 0.01 * attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def rows(self, stmt: sa.Executable) -> list[dict[str, Any]]:
        """The rows ``stmt`` selects, as dicts, in one read transaction."""
        return self.read(lambda conn: _dicts(conn.execute(stmt)))

    def first(self, stmt: sa.Executable) -> dict[str, Any] | None:
        """The first row ``stmt`` selects as a dict, or ``None``."""
        return self.read(lambda conn: _first_dict(conn.execute(stmt)))

    def count(self, table: sa.Table) -> int:
        """Number of rows of ``table``."""
        stmt = sa.select(sa.func.count()).select_from(table)
        return self.read(lambda conn: int(conn.execute(stmt).scalar_one()))

    def insert(self, table: sa.Table) -> sqlite.Insert | postgresql.Insert:
        """An INSERT that supports ``on_conflict_do_*`` on this backend."""
        return postgresql.insert(table) if self.backend == "postgresql" else sqlite.insert(table)

    def bulk_insert(
        self,
        conn: Connection,
        table: sa.Table,
        rows: Sequence[Mapping[str, Any]],
        *,
        skip_conflicts_on: str | None = None,
    ) -> int:
        """Insert rows (all with the same keys) in chunks; returns how many were written.

        With ``skip_conflicts_on`` (a unique column), rows clashing with a stored one are
        skipped. SQLite gets an executemany; PostgreSQL one ``INSERT ... SELECT unnest(...)``
        per chunk, with one array parameter per column (much faster than row-wise VALUES).
        """
        if not rows:
            return 0
        columns = list(rows[0])
        written = 0
        if self.backend == "postgresql":
            arrays = [
                sa.func.unnest(sa.bindparam(f"array_{c}", type_=postgresql.ARRAY(table.c[c].type)))
                for c in columns
            ]
            pg_stmt = postgresql.insert(table).from_select(columns, sa.select(*arrays))
            if skip_conflicts_on is not None:
                pg_stmt = pg_stmt.on_conflict_do_nothing(
                    index_elements=[table.c[skip_conflicts_on]]
                )
            for chunk in chunks(rows, BULK_CHUNK):
                params = {f"array_{c}": [row[c] for row in chunk] for c in columns}
                written += conn.execute(pg_stmt, params, execution_options=_ROWCOUNT).rowcount
        else:
            lite_stmt = sqlite.insert(table)
            if skip_conflicts_on is not None:
                lite_stmt = lite_stmt.on_conflict_do_nothing(
                    index_elements=[table.c[skip_conflicts_on]]
                )
            for chunk in chunks(rows, BULK_CHUNK):
                written += conn.execute(
                    lite_stmt, list(chunk), execution_options=_ROWCOUNT
                ).rowcount
        return written

    @contextmanager
    def bulk_connection(self) -> Iterator[Connection]:
        """One connection for a bulk load, to pass to :meth:`write` as ``on`` for each of its
        batches. On SQLite its page cache is :data:`BULK_CACHE_KIB` while it is held (and set
        back after: the pool keeps the connection)."""
        with self.engine.connect() as conn:
            raw = conn.connection.driver_connection
            lite = raw if self.backend == "sqlite" else None
            before = None
            if lite is not None:
                before = int(lite.execute("PRAGMA cache_size").fetchone()[0])
                lite.execute(f"PRAGMA cache_size = -{int(BULK_CACHE_KIB)}")
            try:
                yield conn
            finally:
                if lite is not None and before is not None:
                    lite.execute(f"PRAGMA cache_size = {before}")

    def load_rows(
        self,
        conn: Connection,
        table: sa.Table,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
        *,
        skip_conflicts_on: str,
    ) -> int:
        """Insert ``rows`` -- tuples of plain values in ``columns`` order (text, numbers,
        booleans, ``None``; JSON already as text) -- in the caller's transaction, skipping
        each row whose ``skip_conflicts_on`` value is stored already or comes earlier in
        ``rows``; returns how many were written. ``rows`` is consumed once, as it comes (an
        iterator keeps a batch's Python objects to one row at a time on PostgreSQL).

        PostgreSQL: ``COPY`` into a temporary table with ``table``'s column types, then one
        ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` (a COPY cannot skip conflicts
        itself). SQLite: one ``executemany`` of a prepared ``INSERT ... ON CONFLICT DO
        NOTHING`` over the tuples, no dict or SQLAlchemy object per row.
        """
        quote = conn.dialect.identifier_preparer.quote
        target = quote(table.name)
        names = ", ".join(quote(table.c[c].name) for c in columns)
        key = quote(table.c[skip_conflicts_on].name)
        raw: Any = conn.connection.driver_connection
        if self.backend == "postgresql":
            stage = quote(f"tastebud_load_{table.name}")
            conn.exec_driver_sql(
                f"CREATE TEMPORARY TABLE {stage} ON COMMIT DROP AS "
                f"SELECT {names} FROM {target} WITH NO DATA"
            )
            with raw.cursor() as cursor, cursor.copy(f"COPY {stage} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            result = conn.exec_driver_sql(
                f"INSERT INTO {target} ({names}) SELECT {names} FROM {stage} "
                f"ON CONFLICT ({key}) DO NOTHING"
            )
            conn.exec_driver_sql(f"DROP TABLE {stage}")
            return int(result.rowcount)
        marks = ", ".join(itertools.repeat("?", len(columns)))
        cursor = raw.cursor()
        try:
            cursor.executemany(
                f"INSERT INTO {target} ({names}) VALUES ({marks}) ON CONFLICT ({key}) DO NOTHING",
                rows,
            )
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def stream(
        self, conn: Connection, sql: str, params: Sequence[Any], size: int
    ) -> Iterator[list[tuple[Any, ...]]]:
        """The rows of ``sql`` (positional ``?`` parameters) as lists of up to ``size`` plain
        tuples, fetched as they are read: a server-side cursor on PostgreSQL (the whole
        result never sits in the client), ``fetchmany`` on SQLite. Raw values -- no
        SQLAlchemy row or column type per value: the caller converts a list at a time.
        Runs in ``conn``'s transaction (begun by then)."""
        raw: Any = conn.connection.driver_connection
        if self.backend == "postgresql":
            cursor = raw.cursor(name=f"tastebud_stream_{id(conn):x}")
            sql = sql.replace("?", "%s")
        else:
            cursor = raw.cursor()
        try:
            cursor.execute(sql, tuple(params))
            while rows := cursor.fetchmany(size):
                yield rows
        finally:
            cursor.close()

    def truncate_wal(self) -> None:
        """Copy the write-ahead log into the database file and empty it, so that the frames
        holding a deleted user's rows go (best effort: readers in the way for more than
        0.5 s leave it to SQLite's next checkpoints, which overwrite the log from its start).
        """
        with self.engine.connect() as conn:
            raw = conn.connection.driver_connection
            if raw is None:  # pragma: no cover
                return
            raw.execute("PRAGMA busy_timeout = 500")
            try:
                # a busy database answers (1, ...) or raises; either way nothing is lost
                raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.OperationalError:  # pragma: no cover
                pass
            finally:
                raw.execute("PRAGMA busy_timeout = 10000")
