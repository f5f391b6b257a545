"""top_k: the k best columns of each row, ties to the lower index, masked entries never.

Checked against a plain sort of every row on random blocks that exercise each path: distinct
scores (the partial sort), integer scores with ties across the cut, masked (-inf) and NaN
entries, float32, and k larger than the row.
"""

from __future__ import annotations

import numpy as np
import pytest

from tastebud.models.base import top_k


def _reference(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.full((scores.shape[0], k), -1, dtype=np.int64)
    val = np.full((scores.shape[0], k), np.nan)
    for r, row in enumerate(scores):
        valid = [c for c in range(len(row)) if row[c] > -np.inf]  # NaN and -inf never
        best = sorted(valid, key=lambda c: (-float(row[c]), c))[:k]
        idx[r, : len(best)] = best
        val[r, : len(best)] = row[best]
    return idx, val


@pytest.mark.parametrize("kind", ["distinct", "ties", "masked", "nan"])
def test_top_k_matches_a_full_sort(kind: str) -> None:
    rng = np.random.default_rng(7)
    for trial in range(300):
        rows, cols = int(rng.integers(1, 5)), int(rng.integers(1, 200))
        k = int(rng.integers(0, cols + 3))
        if kind == "ties":
            scores = rng.integers(0, 4, (rows, cols)).astype(np.float64)
        else:
            scores = rng.random((rows, cols))
        if kind in ("masked", "nan"):
            scores[rng.random((rows, cols)) < 0.3] = -np.inf
        if kind == "nan":
            scores[rng.random((rows, cols)) < 0.05] = np.nan
        if trial % 5 == 0:
            scores = scores.astype(np.float32)
        got_idx, got_val = top_k(scores, k)
        want_idx, want_val = _reference(scores, k)
        np.testing.assert_array_equal(got_idx, want_idx)
        np.testing.assert_allclose(got_val, want_val, equal_nan=True)


def test_top_k_ties_go_to_the_lower_column() -> None:
    scores = np.array([[1.0, 3.0, 3.0, 2.0, 3.0, 0.0, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    idx, val = top_k(scores, 2)
    assert idx.tolist() == [[1, 2]]
    assert val.tolist() == [[3.0, 3.0]]
