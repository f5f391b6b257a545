"""Turning feature tables into numeric matrices (for diversity metrics and content models).

Numeric columns are standardized; text columns with few distinct values are one-hot encoded,
with ``|``-joined values (e.g. ``"Action|Comedy"``) treated as multi-valued; free-text columns
with mostly distinct values (titles, urls) are left out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp


def feature_matrix(table: pd.DataFrame, *, max_distinct_share: float = 0.5) -> sp.csr_matrix:
    """A sparse ``(len(table), d)`` float matrix encoding the columns of ``table``."""
    blocks: list[sp.csr_matrix] = []
    n = len(table)
    for name in table.columns:
        col = table[name]
        if pd.api.types.is_bool_dtype(col.dtype):
            blocks.append(sp.csr_matrix(col.fillna(False).to_numpy(dtype=np.float64)[:, None]))
        elif pd.api.types.is_numeric_dtype(col.dtype):
            values = col.to_numpy(dtype=np.float64, na_value=np.nan)
            mean = np.nanmean(values) if np.isfinite(values).any() else 0.0
            std = np.nanstd(values) if np.isfinite(values).any() else 0.0
            z = np.where(np.isfinite(values), (values - mean) / (std or 1.0), 0.0)
            blocks.append(sp.csr_matrix(z[:, None]))
        elif pd.api.types.is_object_dtype(col.dtype) or pd.api.types.is_string_dtype(col.dtype):
            text = col.astype("string").fillna("").reset_index(drop=True)
            tokens = text.str.split("|")
            exploded = tokens.explode()
            exploded = exploded[exploded.str.len() > 0]
            distinct = exploded.unique()
            if len(distinct) == 0 or len(distinct) > max_distinct_share * n:
                continue  # free text (titles, urls): not a categorical feature
            codes = pd.Index(distinct).get_indexer(exploded.to_numpy())
            rows = exploded.index.to_numpy()
            blocks.append(
                sp.csr_matrix((np.ones(len(codes)), (rows, codes)), shape=(n, len(distinct)))
            )
    if not blocks:
        return sp.csr_matrix((n, 0))
    return sp.hstack(blocks, format="csr")
