"""Turning feature tables into numeric matrices.

:func:`feature_matrix` (diversity metrics, the classifier's and the neural models' side
features): numeric columns standardized; text columns with few distinct values one-hot,
with ``|``-joined values (e.g. ``"Action|Comedy"``) and list cells multi-valued; free-text
columns with mostly distinct values (titles, urls) left out.

:class:`AttributeEncoder` (the content models' attribute profiles and ``user-metadata``):
the same categories, numbers in soft quantile bins, every field's block of unit norm so
each field weighs the same in a cosine; fitted once, it encodes later rows -- a cold
user's attributes -- the same way.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.preprocessing import normalize

from tastebud.errors import InvalidInputError


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
            exploded = _tokens(col)
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


def _bin_edges(values: np.ndarray, bins: int) -> np.ndarray | None:
    """Quantile edges of the finite values (``None``: none is finite)."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return None
    return np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]))


def _binned(values: np.ndarray, edges: np.ndarray) -> sp.csr_matrix:
    """Values in the bins of ``edges``, one-hot, with half weight on the neighbouring bins
    (close numbers are similar); missing values get an empty row."""
    n = len(values)
    finite = np.isfinite(values)
    code = np.searchsorted(edges, values, side="right")
    width = len(edges) + 1
    rows, cols, vals = [], [], []
    for offset, weight in ((0, 1.0), (-1, 0.5), (1, 0.5)):
        c = code + offset
        ok = finite & (c >= 0) & (c < width)
        rows.append(np.flatnonzero(ok))
        cols.append(c[ok])
        vals.append(np.full(int(ok.sum()), weight))
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, width)
    )


def _joined(value: Any) -> Any:
    """A list-like cell as one ``|``-joined text (a bag of values), anything else as it is."""
    if isinstance(value, list | tuple | set | frozenset | np.ndarray):
        return "|".join(str(v) for v in value)
    return value


def _tokens(column: pd.Series) -> pd.Series:
    """A text column's values -- ``|``-joined text and list cells as bags -- one token per
    row of the result (index: the row's position), empty tokens dropped."""
    if pd.api.types.is_object_dtype(column.dtype):
        column = column.map(_joined)
    exploded = column.astype("string").fillna("").reset_index(drop=True).str.split("|").explode()
    return exploded[exploded.str.len() > 0]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def _mostly_numbers(column: pd.Series) -> bool:
    """Whether an object column holds numbers (Python or numpy numbers, not numeric text)
    in at least 90% of its non-missing cells: a number field with a stray text value,
    as user-supplied JSON often has, stays a number field (the text then counts as
    missing)."""
    present = column.dropna()
    if not len(present):
        return False
    numbers = sum(_is_number(v) for v in present.tolist())
    return numbers >= 0.9 * len(present)


def _numbers(column: pd.Series) -> np.ndarray:
    """A column's finite numbers as float64 -- numbers, and text that spells one -- and NaN
    for anything else (booleans are no numbers)."""
    if pd.api.types.is_object_dtype(column.dtype):
        column = column.map(lambda v: v if _is_number(v) or isinstance(v, str) else np.nan)
    values = pd.to_numeric(column, errors="coerce").to_numpy(np.float64, na_value=np.nan)
    return np.where(np.isfinite(values), values, np.nan)


@dataclasses.dataclass
class AttributeEncoder:
    """Structured attributes as sparse vectors in which every field's block has unit norm (so
    each field weighs the same in a cosine): categorical one-hot, ``|``-joined values as a
    bag, numbers in soft quantile bins. Fitted on one table (its vocabularies and bin edges),
    it encodes that table and any later rows -- a cold user's attributes -- the same way:
    unknown values and missing fields give an empty block. Free text with mostly distinct
    values is left out unless named in ``columns``."""

    #: (column, bin edges) of numeric fields, (column, vocabulary) of categorical ones
    fields: list[tuple[str, np.ndarray | pd.Index]]

    @classmethod
    def fit(
        cls,
        table: pd.DataFrame,
        columns: tuple[str, ...] | None = None,
        *,
        bins: int = 10,
        what: str = "item",
    ) -> AttributeEncoder:
        names = list(table.columns) if columns is None else list(columns)
        missing = [c for c in names if c not in table.columns]
        if missing:
            raise InvalidInputError(
                f"no {what} attribute {', '.join(map(repr, missing))}; attributes: "
                f"{', '.join(map(str, table.columns))}"
            )
        fields: list[tuple[str, np.ndarray | pd.Index]] = []
        for name in names:
            col = table[name]
            if pd.api.types.is_bool_dtype(col.dtype):
                col = col.astype("string")
            if pd.api.types.is_numeric_dtype(col.dtype) or (
                pd.api.types.is_object_dtype(col.dtype) and _mostly_numbers(col)
            ):
                edges = _bin_edges(_numbers(col), bins)
                if edges is not None:
                    fields.append((name, edges))
            elif pd.api.types.is_object_dtype(col.dtype) or pd.api.types.is_string_dtype(col.dtype):
                distinct = pd.Index(_tokens(col).unique())
                if len(distinct) and not (columns is None and len(distinct) > 0.5 * len(table)):
                    fields.append((name, distinct))  # else free text: not an attribute
            # dates and other types: derive a number or a category first
        if not fields:
            raise InvalidInputError(f"the {what} table has no usable attribute among {names}")
        return cls(fields)

    def transform(self, table: pd.DataFrame) -> sp.csr_matrix:
        """The rows of ``table`` (any index; columns by name) as unit-norm vectors."""
        n = len(table)
        if n == 0:
            width = sum(
                len(spec) + (0 if isinstance(spec, pd.Index) else 1) for _, spec in self.fields
            )
            return sp.csr_matrix((0, width))
        blocks: list[sp.csr_matrix] = []
        for name, spec in self.fields:
            col = table[name] if name in table.columns else pd.Series([None] * n, dtype=object)
            if isinstance(spec, pd.Index):
                if pd.api.types.is_bool_dtype(col.dtype):
                    col = col.astype("string")
                tokens = _tokens(col)
                codes = spec.get_indexer(pd.Index(tokens.to_numpy()))
                known = codes >= 0
                block = sp.csr_matrix(
                    (np.ones(int(known.sum())), (tokens.index.to_numpy()[known], codes[known])),
                    shape=(n, len(spec)),
                )
            else:
                block = _binned(_numbers(col), spec)
            blocks.append(normalize(block.tocsr()))
        return normalize(sp.hstack(blocks, format="csr"))

    def to_state(self) -> list[list[Any]]:
        """The fitted fields as JSON (model files hold no pickle)."""
        return [
            [name, "tokens", [str(v) for v in spec]]
            if isinstance(spec, pd.Index)
            else [name, "bins", [float(v) for v in spec]]
            for name, spec in self.fields
        ]

    @classmethod
    def from_state(cls, state: list[list[Any]]) -> AttributeEncoder:
        return cls(
            [
                (
                    str(name),
                    pd.Index(values, dtype=object) if kind == "tokens" else np.array(values),
                )
                for name, kind, values in state
            ]
        )


def attribute_matrix(
    table: pd.DataFrame,
    columns: tuple[str, ...] | None,
    *,
    bins: int = 10,
    what: str = "item",
) -> sp.csr_matrix:
    """``table``'s rows encoded by an :class:`AttributeEncoder` fitted on it."""
    return AttributeEncoder.fit(table, columns, bins=bins, what=what).transform(table)
