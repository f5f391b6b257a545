"""The service's OpenAPI document is its exact contract (issue 17): ``schemathesis run
--checks all`` -- every check it has: no server error, every status and body as documented,
schema-valid requests accepted and schema-invalid ones refused, unsupported methods 405
with ``Allow``, deleted resources gone, and its stateful phase chaining the API's own
links -- finds nothing, against a real ``tastebud serve`` on SQLite and on PostgreSQL.

Bounded so it fits the default run: 20 examples per operation and phase, a fixed seed (a
failure reproduces with the command printed in the assertion)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from serving import sample_server
from tastebud.service.storage import Storage

KEY = "fuzz-key-0123456789"
SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_schemathesis_finds_nothing(
    backend: str, tmp_path: Path, postgres_url: tuple[str | None, str]
) -> None:
    db = None
    if backend == "postgresql":
        url, reason = postgres_url
        if url is None:
            pytest.skip(reason)
        with Storage(url) as store:
            store.drop_all()
        db = url
    env = {
        "TASTEBUD_API_KEY": KEY,
        "TASTEBUD_MODEL": "item-knn",  # quick to train
        "TASTEBUD_MAX_BATCH": "50",
        "TASTEBUD_EVALUATE_ON_RETRAIN": "false",
    }
    with sample_server(tmp_path, db=db, **env) as base:
        command = [
            SCHEMATHESIS, "run", f"{base}/openapi.json", "--checks", "all",
            "--header", f"X-API-Key: {KEY}", "--max-examples", "20", "--seed", "17",
            "--no-color", "--report-dir", str(tmp_path / "report"),
        ]  # fmt: skip
        run = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    if db is not None:
        with Storage(db) as store:
            store.drop_all()
    shown = [*command[:5], "--header", "'X-API-Key: ...'", *command[7:13]]
    assert run.returncode == 0, (
        f"{' '.join(shown)} found problems:\n{run.stdout[-15000:]}\n{run.stderr[-3000:]}"
    )
    # every generated case passed (a warning such as "missing test data" is not a failure)
    passed = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    assert passed is not None and passed.group(1) == passed.group(2), run.stdout[-3000:]
    assert "28/28" in run.stdout or "Tested: 2" in run.stdout  # every operation was tried
