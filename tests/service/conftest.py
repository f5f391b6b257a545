"""Storage fixtures: one suite over SQLite (always) and PostgreSQL (when it answers).

PostgreSQL is looked for at ``TASTEBUD_TEST_POSTGRES_URL`` if set, else at 127.0.0.1:5432,
database ``test``, as user ``postgres`` then ``root`` (trust authentication). Its tests drop and
recreate the tastebud tables, so they must not run in parallel with each other: under
pytest-xdist each worker gets a database of its own, ``<database>_<worker>`` (created on first
use).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import psycopg.sql
import pytest
import sqlalchemy as sa

from tastebud.service.storage import Storage

POSTGRES_CANDIDATES = (
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg://root@127.0.0.1:5432/test",
)


@pytest.fixture(scope="session")
def postgres_url() -> tuple[str | None, str]:
    """The first PostgreSQL URL that accepts a connection within 2 s, or why there is none."""
    env = os.environ.get("TASTEBUD_TEST_POSTGRES_URL")
    candidates = (env,) if env else POSTGRES_CANDIDATES
    failures = []
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    for url in candidates:
        parsed = sa.make_url(url)
        try:
            with psycopg.connect(
                host=parsed.host,
                port=parsed.port or 5432,
                user=parsed.username,
                password=parsed.password,
                dbname=parsed.database,
                connect_timeout=2,
                autocommit=True,
            ) as conn:
                if not worker:
                    return url, ""
                own = f"{parsed.database}_{worker}"
                exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (own,))
                if exists.fetchone() is None:
                    conn.execute(
                        psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(own))
                    )
                return parsed.set(database=own).render_as_string(hide_password=False), ""
        except psycopg.Error as err:
            failures.append(f"{parsed.render_as_string(hide_password=True)}: {err}".strip())
    reason = "PostgreSQL not reachable (" + "; ".join(failures) + ")"
    return None, reason.replace("\n", " ")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def storage_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_url: tuple[str | None, str]
) -> str:
    """A database URL with no tastebud tables in it: a fresh SQLite file, or PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store' / 'tastebud.db'}"
    url, reason = postgres_url
    if url is None:
        pytest.skip(reason)
    with Storage(url) as store:
        store.drop_all()
    return url


@pytest.fixture
def storage(storage_url: str) -> Iterator[Storage]:
    """A migrated, empty :class:`Storage` on each backend."""
    store = Storage(storage_url)
    store.migrate()
    try:
        yield store
    finally:
        store.close()
