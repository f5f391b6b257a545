"""Finding users by the start of their id (the UI's type-ahead picker): the right users in
code point order on every backend, an index range rather than a scan of the table, and a
validated, documented query parameter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from tests.service.test_app import (  # noqa: F401 - _clean_environment is an autouse fixture
    _clean_environment,
    error,
    make_settings,
    ok,
    serve,
)

from tastebud.data.dataset import Dataset
from tastebud.service.storage import Storage
from tastebud.service.storage.users import prefix_end

#: Ids that a careless prefix search gets wrong: LIKE wildcards, case, a space, accents,
#: the highest code point, and neighbours that share all but the last character.
IDS = [
    "a", "a b", "a%", "a_c", "ab", "abc", "abd", "ab\U0010ffff", "ac", "A", "b",
    "é", "éa", "\U0010ffff", "\U0010ffffz",
]  # fmt: skip


def expected(prefix: str) -> list[str]:
    return sorted(i for i in IDS if i.startswith(prefix))  # Python sorts by code point


@pytest.mark.parametrize("prefix", ["a", "ab", "a%", "a_", "A", "é", "\U0010ffff", "zz"])
def test_a_prefix_finds_exactly_the_ids_that_start_with_it(storage: Storage, prefix: str) -> None:
    for user in IDS:
        storage.upsert_user(user)
    found = [u["id"] for u in storage.list_users(limit=100, prefix=prefix)]
    assert found == expected(prefix)
    # pages of it
    first = [u["id"] for u in storage.list_users(limit=2, prefix=prefix)]
    rest = [u["id"] for u in storage.list_users(limit=100, offset=2, prefix=prefix)]
    assert first + rest == expected(prefix)


def test_the_end_of_a_prefix_range() -> None:
    assert prefix_end("ab") == "ac"
    assert prefix_end("a\U0010ffff") == "b"
    assert prefix_end("\U0010ffff") is None
    assert prefix_end("\ud7ff") == "\ue000"  # surrogates are skipped


def test_a_prefix_search_reads_an_index_range(storage: Storage) -> None:
    """The statement run for a prefix is planned as a seek into an index of the ids, never
    a scan of the users table: the same few rows read with ten users or a million."""
    for user in ("u1", "u2", "v1"):
        storage.upsert_user(user)
    statements: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "users" in statement:
            statements.append((statement, params))

    sa.event.listen(storage.engine, "before_cursor_execute", capture)
    try:
        assert [u["id"] for u in storage.list_users(limit=20, prefix="u")] == ["u1", "u2"]
    finally:
        sa.event.remove(storage.engine, "before_cursor_execute", capture)
    (statement, params), *_ = statements
    with storage.engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        cursor = raw.cursor()
        if storage.backend == "sqlite":
            cursor.execute(f"EXPLAIN QUERY PLAN {statement}", params)
            plan = " ".join(str(row[-1]) for row in cursor.fetchall())
            assert "SEARCH users USING INDEX" in plan and "id>? AND id<?" in plan, plan
        else:
            # a tiny table, where reading it whole is cheaper: plan as for a large one
            cursor.execute("SET enable_seqscan = off")
            cursor.execute("SET enable_bitmapscan = off")
            cursor.execute(f"EXPLAIN {statement}", params)
            plan = " ".join(str(row[0]) for row in cursor.fetchall())
            assert "Index Scan using ix_users_id_c" in plan, plan
            assert "Sort" not in plan, plan  # the index gives the order too


def test_the_users_route_searches_by_prefix(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, read_key="read-key-0123456789", min_events_to_train=10**9)
    users = [f"u{n:03d}" for n in range(30)] + ["U999"]
    with Storage(settings.db) as store:  # one transaction, not one per user
        store.migrate()
        store.import_dataset(Dataset.from_frame(pd.DataFrame({"user": users, "item": "x"})))
    with serve(settings) as client:
        key = {"X-API-Key": "read-key-0123456789"}
        found = ok(client.get("/users", params={"q": "u01", "limit": 5}, headers=key))
        assert [u["id"] for u in found] == ["u010", "u011", "u012", "u013", "u014"]
        assert ok(client.get("/users", params={"q": "u0299"}, headers=key)) == []
        assert len(ok(client.get("/users", params={"q": ""}, headers=key))) == 31  # no filter
        error(client.get("/users", params={"q": "u"}), 401)  # a read like any other
        problem = error(client.get("/users", params={"q": "x" * 257}, headers=key), 422)
        assert problem["message"].startswith("query.q:")
        parameters = ok(client.get("/openapi.json"))["paths"]["/users"]["get"]["parameters"]
        documented = {p["name"]: p for p in parameters}
        assert "starts with" in documented["q"]["description"]
