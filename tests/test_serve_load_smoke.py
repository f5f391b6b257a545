"""The service load benchmark's smoke run: a real server, a few seconds of load, no errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "serve_load.py"


@pytest.mark.slow
def test_serve_load_smoke_runs_without_errors(tmp_path):
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--duration", "3", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    result = json.loads((tmp_path / "serve_load.smoke.json").read_text())
    assert (tmp_path / "serve_load.smoke.md").read_text().startswith("# Service load")
    assert result["benchmark"] == "serve_load"
    assert result["smoke"] is True
    assert result["config"]["duration"] == 3
    assert result["server"]["model_version"] is not None
    assert set(result["target"]) == {"p99_ms", "rate", "met"}
    for run in (result["load"], result["calibration"]):
        for kind in ("recommendations", "events"):
            stats = run[kind]
            assert stats["errors"] == 0, run["error_samples"]
            assert stats["requests"] > 0
            assert stats["ok"] == stats["requests"]
            for field in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "achieved_rps"):
                assert stats[field] > 0
            assert stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"] <= stats["max_ms"]
        assert run["client"]["cpu_us_per_request"] > 0
    assert result["load"]["short_lists"] == 0
