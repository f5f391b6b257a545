"""Shared fixtures: small generated data, and the reference data when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tastebud import Dataset
from tastebud.data.reference import data_home


def require_reference(folder: str) -> Path:
    """Path of one reference data set; skips (naming what is missing) when it is absent."""
    path = data_home() / folder
    if not path.is_dir():
        pytest.skip(f"reference data {path} not found (set TASTEBUD_DATA)")
    return path


def checkerboard(n_users: int = 40, n_items: int = 20, seed: int = 0) -> Dataset:
    """Known-answer data: the first half of the users only touch the first half of the
    items and the rest only the rest (each in-block pair with probability 0.7)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        block = range(0, n_items // 2) if u < n_users // 2 else range(n_items // 2, n_items)
        rows += [(u, i) for i in block if rng.random() < 0.7]
    return Dataset.from_frame(pd.DataFrame(rows, columns=["user", "item"]))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules with a test marked ``slow`` run first, each module's tests still together (a
    module-scoped fixture -- a Spark session, a fitted model -- is set up once): with
    pytest-xdist's work stealing (the default run, ``-n logical --dist worksteal``) the
    short modules then fill the workers' tails evenly, instead of a long test starting last
    and running alone."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)  # stable: the order within stays
