"""Rows grouped by identical sparse vector, and the ``k`` most similar rows found per group.

A million users share a few thousand attribute vectors (gender x country x age band...): a
similarity to one of them is a similarity to every row with the same vector. :class:`RowGroups`
groups the rows once; :meth:`RowGroups.nearest` computes one similarity per distinct vector
and takes whole groups from the most similar down, the tied rows at the cut by row order --
the answer of ranking every row, without a similarity per row (``UserMetadata``'s donors).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp

#: Rows whose vectors have more fields than this are not grouped (one group each): the key
#: that compares them is two numbers per field.
MAX_FIELDS = 64


@dataclasses.dataclass(frozen=True, eq=False)
class RowGroups:
    """Rows grouped by identical vector: ``vectors`` (fields x groups) holds each group's
    vector, the groups numbered by their first row; ``members`` the rows sorted by group,
    then position; ``starts`` where each group starts in ``members`` (one more entry than
    groups); ``group_of`` each row's group."""

    vectors: sp.csr_matrix
    members: np.ndarray
    starts: np.ndarray
    group_of: np.ndarray

    @classmethod
    def of(cls, rows: sp.csr_matrix, max_fields: int = MAX_FIELDS) -> RowGroups:
        """Group the rows of ``rows`` (rows x fields) by identical vector; rows of more than
        ``max_fields`` fields each stay a group of their own."""
        rows = sp.csr_matrix(rows, copy=True)
        rows.sort_indices()
        n = rows.shape[0]
        nnz = np.diff(rows.indptr)
        width = int(nnz.max()) if n else 0
        if n and width <= max_fields:
            # each row as one fixed-width key: its length, field indices and value bits
            keys = np.full((n, 1 + 2 * width), -1, dtype=np.int64)
            keys[:, 0] = nnz
            slot = np.arange(len(rows.indices)) - np.repeat(rows.indptr[:-1], nnz)
            owner = np.repeat(np.arange(n), nnz)
            keys[owner, 1 + slot] = rows.indices
            keys[owner, 1 + width + slot] = rows.data.astype(np.float64).view(np.int64)
            _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
            rank = np.empty(len(first), dtype=np.int64)
            rank[np.argsort(first, kind="stable")] = np.arange(len(first))
            group_of = rank[inverse.ravel()]
            firsts = np.sort(first)
        else:
            group_of, firsts = np.arange(n), np.arange(n)
        members = np.argsort(group_of, kind="stable")
        starts = np.concatenate(([0], np.cumsum(np.bincount(group_of, minlength=len(firsts)))))
        return cls(rows[firsts].T.tocsr(), members, starts, group_of)

    @property
    def n_rows(self) -> int:
        return len(self.group_of)

    @property
    def n_groups(self) -> int:
        return len(self.starts) - 1

    def nearest(
        self, queries: sp.csr_matrix, k: int, own: np.ndarray | None = None
    ) -> sp.csr_matrix:
        """Each query's ``k`` most similar rows with a positive similarity (the dot product of
        the vectors; ties: the lower row first), as a queries x rows matrix of similarities.
        ``own``: per query, a row never taken (its own; -1 for none)."""
        n_queries = queries.shape[0]
        k = min(int(k), self.n_rows)
        own = np.full(n_queries, -1, dtype=np.int64) if own is None else np.asarray(own)
        sims = (queries @ self.vectors).tocsr()  # queries x groups, only groups sharing a field
        sizes = np.diff(self.starts)
        members, starts = self.members, self.starts
        rows, cols, vals = [], [], []
        for r in range(n_queries):
            s = sims.data[sims.indptr[r] : sims.indptr[r + 1]]
            g = sims.indices[sims.indptr[r] : sims.indptr[r + 1]]
            positive = s > 0
            s, g = s[positive].astype(np.float64), g[positive]
            if not len(g) or k <= 0:
                continue
            order = np.argsort(-s, kind="stable")
            s, g = s[order], g[order]
            count = sizes[g].copy()
            mine = int(own[r])
            if mine >= 0:
                count[g == self.group_of[mine]] -= 1
            total = np.cumsum(count)
            # every positive group whole, or whole down to the group that reaches k
            cut = -np.inf if total[-1] <= k else s[int(np.searchsorted(total, k))]
            whole = s > cut
            picked = _concat([members[starts[i] : starts[i + 1]] for i in g[whole].tolist()])
            weights = np.repeat(s[whole], sizes[g[whole]])
            if mine >= 0:
                keep = picked != mine
                picked, weights = picked[keep], weights[keep]
            if cut > -np.inf:
                tied = np.sort(
                    _concat([members[starts[i] : starts[i + 1]] for i in g[s == cut].tolist()])
                )
                tied = tied[tied != mine][: k - len(picked)]
                picked = np.concatenate([picked, tied])
                weights = np.concatenate([weights, np.full(len(tied), cut)])
            rows.append(np.full(len(picked), r))
            cols.append(picked)
            vals.append(weights)
        if not rows:
            return sp.csr_matrix((n_queries, self.n_rows))
        return sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(n_queries, self.n_rows),
        )


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
