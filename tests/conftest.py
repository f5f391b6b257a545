"""Shared fixtures: small generated data, and the reference data when present."""

from __future__ import annotations

from pathlib import Path

import pytest

from tastebud.data.reference import data_home


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """Folder of the reference data sets (TASTEBUD_DATA or ../shared/data)."""
    return data_home()


def require_reference(folder: str) -> Path:
    """Path of one reference data set; skips (naming what is missing) when it is absent."""
    path = data_home() / folder
    if not path.is_dir():
        pytest.skip(f"reference data {path} not found (set TASTEBUD_DATA)")
    return path
