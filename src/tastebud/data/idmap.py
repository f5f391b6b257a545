"""Mapping between external ids (any hashable: ints, strings...) and contiguous internal ints.

Ids live at the edge; models work on ``0..n-1`` internally (the LensKit convention). Lookups go
through a :class:`pandas.Index`, which is vectorized and hashes any id type.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from tastebud.errors import InvalidInputError, UnknownIdError

OnUnknown = Literal["raise", "ignore"]


def _canonical_int(text: str) -> int | None:
    """The integer that ``text`` spells canonically (``"7"``, ``"-3"``), else ``None``."""
    try:
        value = int(text)
    except ValueError:
        return None
    return value if str(value) == text else None


def _as_id_array(values: Iterable[Any]) -> np.ndarray:
    """Turn ids into a 1-D numpy array of int64, str or (mixed) object dtype."""
    if isinstance(values, pd.Index | pd.Series):
        arr = values.to_numpy()
    elif isinstance(values, np.ndarray):
        arr = values
    else:
        items = list(values)
        if items and all(isinstance(v, int | np.integer | float | np.floating) for v in items):
            arr = np.asarray(items)  # numbers: typed (ints, or floats checked below)
        else:
            arr = np.empty(len(items), dtype=object)
            arr[:] = items
            if all(isinstance(v, str) for v in items):
                return arr
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind in "US":
        return arr.astype(object)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise InvalidInputError("ids must be integers or strings, got non-integral floats")
        return arr.astype(np.int64)
    if arr.dtype.kind == "b":
        raise InvalidInputError("ids must be integers or strings, got booleans")
    arr = arr.astype(object)
    if len(arr) and all(isinstance(v, int | np.integer) for v in arr):
        return arr.astype(np.int64)
    return arr


class IdMap:
    """A bijection between external ids and ``0..len-1``.

    Parameters
    ----------
    ids:
        Distinct external ids; position ``i`` holds the id of internal index ``i``.

    Notes
    -----
    Build one with :meth:`from_values`, which sorts the distinct ids when they are mutually
    comparable (so internal order, and with it every tie-break, follows the natural id order) and
    keeps first-seen order otherwise.
    """

    __slots__ = ("_index",)

    def __init__(self, ids: Iterable[Any]) -> None:
        arr = _as_id_array(ids)
        index = pd.Index(arr, dtype=arr.dtype, copy=False)
        if not index.is_unique:
            dup = index[index.duplicated()][:5].tolist()
            raise InvalidInputError(f"IdMap ids must be distinct; repeated: {dup}")
        if index.hasnans:
            raise InvalidInputError("IdMap ids must not be missing (NaN/None)")
        self._index = index

    @classmethod
    def from_values(cls, values: Iterable[Any]) -> IdMap:
        """Collect the distinct ids of ``values`` (sorted when comparable)."""
        arr = _as_id_array(values)
        uniq = pd.unique(arr)
        with contextlib.suppress(TypeError):  # mixed, non-comparable ids: first-seen order
            uniq = np.sort(uniq)
        return cls(uniq)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, external_id: object) -> bool:
        try:
            return external_id in self._index
        except TypeError:
            return False

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and self._index.equals(other._index)

    __hash__ = None  # type: ignore[assignment]  # compared by value, never a dict key

    def __repr__(self) -> str:
        head = ", ".join(map(repr, self._index[:3].tolist()))
        more = ", ..." if len(self) > 3 else ""
        return f"IdMap({len(self)} ids: {head}{more})"

    @property
    def ids(self) -> np.ndarray:
        """External ids in internal order (read-only view)."""
        arr = self._index.to_numpy()
        arr.flags.writeable = False
        return arr

    @property
    def index(self) -> pd.Index:
        """The underlying :class:`pandas.Index` (external ids in internal order)."""
        return self._index

    def to_index(
        self, ids: Iterable[Any], *, on_unknown: OnUnknown = "raise", what: str = "id"
    ) -> np.ndarray:
        """Internal indices (int64) of external ``ids``.

        ``on_unknown="raise"`` raises :class:`UnknownIdError` naming some unknown ids;
        ``"ignore"`` returns -1 in their place.
        """
        arr = ids if isinstance(ids, np.ndarray | pd.Index | pd.Series) else list(ids)
        query = pd.Index(arr)
        if len(query) and query.hasnans:
            raise InvalidInputError(f"{what} ids must not be missing (None/NaN)")
        idx = np.asarray(self._index.get_indexer(query), dtype=np.int64)
        if (idx < 0).any():
            idx = self._match_other_spelling(query, idx)
        if on_unknown == "raise":
            missing = idx < 0
            if missing.any():
                bad = np.asarray(arr, dtype=object)[missing]
                shown = ", ".join(map(repr, bad[:5].tolist()))
                more = f" and {int(missing.sum()) - 5} more" if missing.sum() > 5 else ""
                raise UnknownIdError(f"unknown {what}: {shown}{more}")
        elif on_unknown != "ignore":
            raise InvalidInputError(f"on_unknown must be 'raise' or 'ignore', got {on_unknown!r}")
        return idx

    def _match_other_spelling(self, query: pd.Index, idx: np.ndarray) -> np.ndarray:
        """Match ids written as text against integer ids and vice versa ("7" <-> 7): files,
        command lines and JSON bodies often disagree on the type of the same id."""
        missing = np.flatnonzero(idx < 0)
        values = query.to_numpy()[missing]
        if self._index.dtype.kind in "iu":
            never = np.iinfo(np.int64).min  # matches no real id
            spelled = [_canonical_int(v) if isinstance(v, str) else None for v in values]
            alt = pd.Index([never if c is None else c for c in spelled], dtype=np.int64)
        else:
            alt = pd.Index(
                [str(v) if isinstance(v, int | np.integer) else v for v in values], dtype=object
            )
        found = np.asarray(self._index.get_indexer(alt), dtype=np.int64)
        out = idx.copy()
        out[missing] = found
        return out

    def to_ids(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """External ids of internal ``indices`` (all must be valid)."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise InvalidInputError(f"internal index out of range 0..{len(self) - 1}")
        return self._index.to_numpy()[idx]

    def extend(self, new_ids: Iterable[Any]) -> IdMap:
        """A new IdMap with the ids of ``new_ids`` not yet present appended at the end.

        Existing indices keep their meaning, so models fitted on this map stay valid.
        """
        arr = _as_id_array(new_ids)
        fresh = pd.unique(arr[self._index.get_indexer(pd.Index(arr)) < 0])
        if len(fresh) == 0:
            return self
        return IdMap(np.concatenate([self._index.to_numpy().astype(object), fresh.astype(object)]))

    # -- persistence (pickle-free) -------------------------------------------------------------
    def to_state(self) -> tuple[np.ndarray | None, list[Any] | None]:
        """Arrays for ``np.savez`` (ints or unicode) or, for mixed ids, a JSON-able list."""
        arr = self._index.to_numpy()
        if arr.dtype.kind in "iu":
            return arr.astype(np.int64), None
        values = arr.tolist()
        if all(isinstance(v, str) for v in values):
            return np.asarray(values, dtype=str), None
        if all(isinstance(v, str | int) and not isinstance(v, bool) for v in values):
            return None, values
        raise InvalidInputError("only int and str ids can be saved")

    @classmethod
    def from_state(cls, array: np.ndarray | None, values: list[Any] | None) -> IdMap:
        """Inverse of :meth:`to_state`."""
        if array is not None:
            return cls(array if array.dtype.kind in "iu" else array.astype(object))
        return cls(np.asarray(values, dtype=object))
