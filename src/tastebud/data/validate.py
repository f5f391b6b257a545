"""Validation of raw interaction tables, shared by every way data comes in.

A table is checked column by column with vectorized operations; each bad row gets the first
problem found in it. Bad rows either stop the load with a :class:`~tastebud.errors.DataError`
naming the file, line, column and problem (the default) or, with ``on_bad_rows="skip"``, are
dropped and *counted by reason* in a :class:`SkippedRowsWarning` and on the dataset -- never
silently.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from tastebud.errors import DataError, InvalidInputError

OnBadRows = Literal["raise", "skip"]
_INT_RE = re.compile(r"-?\d+")


class SkippedRowsWarning(UserWarning):
    """Rows were skipped under ``on_bad_rows="skip"``; the message says how many and why."""


@dataclass
class CleanInteractions:
    """Validated columns (raw external ids; numeric values as numpy arrays)."""

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray | None
    weight: np.ndarray | None
    timestamp: np.ndarray | None
    line: np.ndarray | None
    skipped: dict[str, int] = field(default_factory=dict)


def blank_cells(col: pd.Series) -> np.ndarray:
    """Missing or empty-string cells."""
    missing = col.isna().to_numpy().copy()
    if col.dtype == object or pd.api.types.is_string_dtype(col.dtype):
        text = col.astype("string").str.strip()
        missing |= (text == "").fillna(True).to_numpy(dtype=bool)
    return missing


def normalize_ids(col: pd.Series, *, column: str = "id") -> np.ndarray:
    """Ids as int64 when every value is an integer, else as strings, exactly as given.

    Text becomes an integer only when it is the canonical spelling of one (``"7"``, not
    ``"007"``, ``"+7"`` or ``" 7"``), so distinct ids are never merged.
    """
    if pd.api.types.is_bool_dtype(col.dtype):
        raise DataError("ids must be integers or text, not true/false", column=column)
    if pd.api.types.is_unsigned_integer_dtype(col.dtype):
        if len(col) and col.max() > np.iinfo(np.int64).max:
            raise DataError("integer ids must fit in 64-bit signed integers", column=column)
        return col.to_numpy(dtype=np.int64)
    if pd.api.types.is_integer_dtype(col.dtype):
        return col.to_numpy(dtype=np.int64)
    if pd.api.types.is_float_dtype(col.dtype):
        values = col.to_numpy(dtype=np.float64)
        if np.all(values == np.round(values)) and np.all(np.abs(values) < 2**53):
            return values.astype(np.int64)
        return col.astype(str).to_numpy(dtype=object)
    if col.dtype == object and not all(isinstance(v, str) for v in col):
        if any(isinstance(v, bool | np.bool_) for v in col):
            raise DataError("ids must be integers or text, not true/false", column=column)
        return col.to_numpy(dtype=object)
    text = col.astype(str)
    if len(text) and bool(text.str.fullmatch(_INT_RE).all()):
        try:
            ints = text.astype(np.int64)
        except (OverflowError, ValueError):
            return text.to_numpy(dtype=object)
        if bool((ints.astype(str) == text).all()):  # canonical spellings only
            return ints.to_numpy()
    return text.to_numpy(dtype=object)


def _numeric(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Float values and a mask of cells that are present but not numbers."""
    if pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
        values = col.to_numpy(dtype=np.float64, na_value=np.nan)
        return values, np.zeros(len(col), dtype=bool)
    text = col.astype("string").str.strip()
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return values, np.isnan(values) & ~blank_cells(col)


def _timestamps(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Unix seconds (float64) from numbers or date/time text, and a mask of unparseable cells."""
    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        ts = pd.to_datetime(col, utc=True)
        values = (ts - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(na_value=np.nan)
        return values.astype(np.float64), np.zeros(len(col), dtype=bool)
    values, bad = _numeric(col)
    if bad.any():
        text = col[bad].astype("string").str.strip()
        parsed = pd.to_datetime(text, utc=True, errors="coerce", format="mixed")
        secs = (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
        ok = secs.notna().to_numpy()
        idx = np.flatnonzero(bad)
        values[idx[ok]] = secs.to_numpy(dtype=np.float64, na_value=np.nan)[ok]
        bad[idx[ok]] = False
    return values, bad


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def clean_interactions(
    frame: pd.DataFrame,
    *,
    user: str,
    item: str,
    rating: str | None = None,
    weight: str | None = None,
    timestamp: str | None = None,
    source: str = "DataFrame",
    line_numbers: np.ndarray | None = None,
    on_bad_rows: OnBadRows = "raise",
    rating_range: tuple[float, float] | None = None,
) -> CleanInteractions:
    """Check an interaction table and return its validated columns.

    Parameters
    ----------
    frame:
        Raw table (text columns from a file or typed columns from a DataFrame).
    user, item, rating, weight, timestamp:
        Column names; ``rating``/``weight``/``timestamp`` are optional.
    source:
        Where the table came from (a file path), used in messages.
    line_numbers:
        File line (1-based) of each row, for messages; ``None`` for in-memory frames, whose
        messages name the row label instead.
    on_bad_rows:
        ``"raise"`` (default) stops at the first bad row; ``"skip"`` drops bad rows and reports
        counts by reason.
    rating_range:
        Inclusive ``(low, high)``; ratings outside it are bad rows.
    """
    _check_table(frame, [user, item, rating, weight, timestamp], source, on_bad_rows, rating_range)
    problems = _Problems(len(frame))
    for col in (user, item):
        problems.flag(blank_cells(frame[col]), col, "missing id", lambda _p: "missing id")
    rating_values = weight_values = ts_values = None
    if rating is not None:
        rating_values = _check_ratings(frame, rating, rating_range, problems)
    if weight is not None:
        weight_values = _check_weights(frame, weight, problems)
    if timestamp is not None:
        ts_values = _check_timestamps(frame, timestamp, problems)
    skipped = problems.settle(frame, source, line_numbers, on_bad_rows)
    keep = problems.reason < 0
    kept = frame if keep.all() else frame[keep]

    def sel(values: np.ndarray | None) -> np.ndarray | None:
        return None if values is None else values[keep]

    return CleanInteractions(
        user=normalize_ids(kept[user], column=user),
        item=normalize_ids(kept[item], column=item),
        rating=sel(rating_values),
        weight=sel(weight_values),
        timestamp=sel(ts_values),
        line=None if line_numbers is None else line_numbers[keep],
        skipped=skipped,
    )


def _check_table(
    frame: pd.DataFrame,
    columns: list[str | None],
    source: str,
    on_bad_rows: OnBadRows,
    rating_range: tuple[float, float] | None,
) -> None:
    """The arguments and the table's shape: the columns named are there, once each, and it
    has rows."""
    if on_bad_rows not in ("raise", "skip"):
        raise InvalidInputError(f"on_bad_rows must be 'raise' or 'skip', got {on_bad_rows!r}")
    wanted = [c for c in columns if c is not None]
    missing_cols = [c for c in wanted if c not in frame.columns]
    if missing_cols:
        found = ", ".join(map(str, frame.columns))
        raise DataError(
            f"missing column(s) {', '.join(map(repr, missing_cols))}; columns found: [{found}]",
            source=source,
        )
    if len(frame) == 0:
        raise DataError("no interactions (the table is empty)", source=source)
    repeated = sorted({str(c) for c in frame.columns if list(frame.columns).count(c) > 1})
    if repeated:
        raise DataError(f"column(s) {', '.join(repeated)} appear more than once", source=source)
    if rating_range is not None and not rating_range[0] < rating_range[1]:
        raise InvalidInputError(
            f"rating_range must be (low, high) with low < high, got {rating_range}"
        )


class _Problems:
    """The first problem found in each row of a table: ``reason[i]`` is the code of row i's
    (-1: none) and ``problems[code]`` is (column, kind, words), ``words(row)`` describing it
    in full with the offending value."""

    def __init__(self, n_rows: int) -> None:
        self.reason = np.full(n_rows, -1, dtype=np.int64)
        self.problems: list[tuple[str, str, Callable[[int], str]]] = []

    def flag(self, mask: np.ndarray, column: str, kind: str, words: Callable[[int], str]) -> None:
        new = mask & (self.reason < 0)
        if new.any():
            self.reason[new] = len(self.problems)
            self.problems.append((column, kind, words))

    def settle(
        self,
        frame: pd.DataFrame,
        source: str,
        line_numbers: np.ndarray | None,
        on_bad_rows: OnBadRows,
    ) -> dict[str, int]:
        """Stop at the first bad row (``"raise"``), or count the bad rows by reason and warn
        (``"skip"``; an error when every row is bad); returns the counts."""
        reason, problems = self.reason, self.problems
        bad_rows = reason >= 0
        if not bad_rows.any():
            return {}
        n = len(frame)
        n_bad = int(bad_rows.sum())
        first = int(np.flatnonzero(bad_rows)[0])
        column, _kind, words = problems[reason[first]]
        text = words(first)
        if on_bad_rows == "raise":
            line = int(line_numbers[first]) if line_numbers is not None else None
            where = source if line_numbers is not None else f"{source} row {frame.index[first]!r}"
            more = (
                f" ({n_bad} bad rows in all; on_bad_rows='skip' skips and counts them)"
                if n_bad > 1
                else ""
            )
            raise DataError(text + more, source=where, line=line, column=str(column))
        counts = Counter(reason[bad_rows].tolist())
        skipped = {f"column '{problems[c][0]}': {problems[c][1]}": m for c, m in counts.items()}
        detail = "; ".join(f"{count} with {why}" for why, count in sorted(skipped.items()))
        warnings.warn(
            f"{source}: skipped {n_bad} of {n} rows ({detail})", SkippedRowsWarning, stacklevel=4
        )
        if n_bad == n:
            raise DataError(f"every one of the {n} rows is bad ({detail})", source=source)
        return skipped


def _check_numbers(frame: pd.DataFrame, col: str, problems: _Problems) -> np.ndarray:
    """A numeric column's values; missing, non-numbers and infinities flagged."""
    values, bad = _numeric(frame[col])
    raw = frame[col].to_numpy()
    problems.flag(blank_cells(frame[col]), col, "missing value", lambda _p: "missing value")
    problems.flag(bad, col, "not a number", lambda p: f"{_show(raw[p])} is not a number")
    problems.flag(np.isinf(values), col, "not finite", lambda p: f"{values[p]} is not finite")
    return values


def _check_ratings(
    frame: pd.DataFrame, col: str, rating_range: tuple[float, float] | None, problems: _Problems
) -> np.ndarray:
    """The rating column's values; also flagged: those outside ``rating_range``."""
    values = _check_numbers(frame, col, problems)
    if rating_range is not None:
        lo, hi = rating_range
        with np.errstate(invalid="ignore"):
            out = (values < lo) | (values > hi)
        problems.flag(
            out,
            col,
            f"outside the rating range [{lo:g}, {hi:g}]",
            lambda p: f"{values[p]:g} is outside the rating range [{lo:g}, {hi:g}]",
        )
    return values


def _check_weights(frame: pd.DataFrame, col: str, problems: _Problems) -> np.ndarray:
    """The weight column's values; also flagged: negative ones."""
    values = _check_numbers(frame, col, problems)
    with np.errstate(invalid="ignore"):
        negative = values < 0
    problems.flag(negative, col, "negative weight", lambda p: f"{values[p]:g} is negative")
    return values


def _check_timestamps(frame: pd.DataFrame, col: str, problems: _Problems) -> np.ndarray:
    """Unix seconds of the timestamp column; missing, unparseable and infinite ones flagged."""
    values, bad = _timestamps(frame[col])
    raw = frame[col].to_numpy()
    problems.flag(blank_cells(frame[col]), col, "missing value", lambda _p: "missing value")
    problems.flag(
        bad,
        col,
        "not a time",
        lambda p: f"{_show(raw[p])} is neither unix seconds nor a date/time",
    )
    problems.flag(np.isinf(values), col, "not finite", lambda p: "not finite")
    return values
