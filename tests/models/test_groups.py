"""RowGroups: rows grouped by identical vector, and the nearest rows found per group, equal
to ranking every row (ties: the lower row first; a query's own row never taken)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from tastebud.models._groups import RowGroups


def _rows(rng: np.random.Generator, n: int) -> sp.csr_matrix:
    """``n`` rows drawn from a handful of distinct sparse vectors (some empty)."""
    distinct = sp.random(6, 9, density=0.3, random_state=1, format="csr", dtype=np.float64)
    distinct.data = np.round(distinct.data, 2)
    return distinct[rng.integers(0, 6, n)].tocsr()


def _same(got: np.ndarray, want: np.ndarray) -> None:
    """The same rows taken, with the same similarities (to rounding: sparse and dense dot
    products add in another order)."""
    np.testing.assert_array_equal(np.flatnonzero(got), np.flatnonzero(want))
    np.testing.assert_allclose(got, want, rtol=1e-12)


def _ranked(rows: np.ndarray, query: np.ndarray, k: int, own: int) -> np.ndarray:
    sims = rows @ query
    if own >= 0:
        sims[own] = -np.inf
    order = np.lexsort((np.arange(len(sims)), -sims))[:k]
    order = order[sims[order] > 0]
    out = np.zeros(len(sims))
    out[order] = sims[order]
    return out


def test_groups_hold_each_distinct_vector_once_numbered_by_first_row():
    rng = np.random.default_rng(0)
    rows = _rows(rng, 200)
    groups = RowGroups.of(rows)
    dense = rows.toarray()
    distinct = {tuple(r) for r in dense}
    assert groups.n_groups == len(distinct) and groups.n_rows == 200
    firsts = [int(groups.members[groups.starts[g]]) for g in range(groups.n_groups)]
    assert firsts == sorted(firsts)  # numbered by their first row
    for g in range(groups.n_groups):
        members = groups.members[groups.starts[g] : groups.starts[g + 1]]
        assert np.all(np.diff(members) > 0) and np.all(groups.group_of[members] == g)
        vector = groups.vectors[:, g].T.toarray()
        np.testing.assert_array_equal(dense[members], np.tile(vector, (len(members), 1)))


@pytest.mark.parametrize("k", [0, 1, 5, 37, 500])
def test_nearest_equals_ranking_every_row(k):
    rng = np.random.default_rng(k)
    rows = _rows(rng, 150)
    queries = _rows(rng, 12)
    own = rng.integers(-1, 150, 12)
    groups = RowGroups.of(rows)
    got = groups.nearest(queries, k, own).toarray()
    dense, asked = rows.toarray(), queries.toarray()
    for q in range(12):
        _same(got[q], _ranked(dense, asked[q], k, int(own[q])))


def test_wide_rows_stay_one_group_each_and_still_rank_alike():
    rng = np.random.default_rng(3)
    rows = _rows(rng, 40)
    groups = RowGroups.of(rows, max_fields=1)  # too wide to group
    assert groups.n_groups == 40
    queries = _rows(rng, 5)
    got = groups.nearest(queries, 7).toarray()
    for q in range(5):
        _same(got[q], _ranked(rows.toarray(), queries.toarray()[q], 7, -1))
