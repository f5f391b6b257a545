"""schemathesis against the service's own OpenAPI spec: no request it can derive from the
spec -- valid or not -- gets a 5xx, and every answer it documents matches its schema.

The app runs over a small SQLite catalogue with a trained model (item-knn: quick), with an
API key that schemathesis sends, so writes and admin endpoints are exercised beyond 401."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tastebud.data.sample import load_sample
from tastebud.service.app import create_app
from tastebud.service.settings import Settings
from tastebud.service.storage import Storage

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

KEY = "fuzz-key"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{tmp / 'fuzz.db'}"
    store = Storage(url)
    store.migrate()
    store.import_dataset(load_sample(n_users=40), event_type="rating")
    app = create_app(
        Settings(
            db=url,
            model="item-knn",
            model_dir=tmp / "models",
            api_key=KEY,
            evaluate_on_retrain=False,
            max_batch=50,
        ),
        store,
    )
    with TestClient(app) as client:  # runs the lifespan: migrate, load, first training
        client.post("/admin/retrain?wait=true", headers={"X-API-Key": KEY})
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        yield schema
    store.close()


def test_no_5xx_and_answers_match_the_spec(app_schema: Any) -> None:
    """Every operation, 25 derandomized examples each (negative ones too); a failure names
    the operation and the request that broke it."""
    operations = [result.ok() for result in app_schema.get_all_operations()]
    assert len(operations) >= 25  # the whole API, not an empty spec
    failures: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            case.headers = {**(case.headers or {}), "X-API-Key": KEY}
            # documented answers must match their schema; a 4xx the spec does not list is
            # fine (every error is the JSON error body), a 5xx never is
            case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])

        try:
            run()
        except Exception as err:  # noqa: BLE001 - collect all, then fail once naming each
            failures.append(f"{operation.label}: {str(err)[:2000]}")
    assert not failures, "\n\n".join(failures)
