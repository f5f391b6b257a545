"""Reading interaction tables from CSV/TSV/DAT/Parquet files with precise error locations.

Every row keeps its file line number, so a bad value is reported as ``file:line: column 'x':
problem``. Separators, a header row and the role of each column are inferred when not given:
a newcomer can point tastebud at ``ratings.csv`` or at a header-less ``u.data`` alike.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import lzma
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from tastebud.data import columns as C
from tastebud.data.dataset import Dataset, Duplicates
from tastebud.data.validate import OnBadRows, SkippedRowsWarning
from tastebud.errors import DataError

#: Column names recognized for each role (compared lower-case without ``_``, ``-`` or spaces).
ALIASES: dict[str, tuple[str, ...]] = {
    C.USER: ("user", "userid", "uid", "users", "customer", "customerid", "visitorid"),
    C.ITEM: (
        "item",
        "itemid",
        "iid",
        "items",
        "movie",
        "movieid",
        "artist",
        "artistid",
        "product",
        "productid",
        "book",
        "bookid",
        "isbn",
        "track",
        "trackid",
        "album",
        "albumid",
    ),
    C.RATING: ("rating", "ratings", "score", "stars", "bookrating"),
    C.WEIGHT: ("weight", "count", "plays", "playcount", "clicks", "value", "quantity"),
    C.TIMESTAMP: ("timestamp", "time", "ts", "datetime", "date", "unixtime", "eventtime"),
}
_SEPARATORS = ("\t", ",", ";", "|", "::")
_PARQUET = (".parquet", ".pq")


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]", "", str(name)).lower()


_OPENERS: dict[str, Callable[..., IO[str]]] = {
    ".gz": gzip.open,
    ".bz2": bz2.open,
    ".xz": lzma.open,
}


def _open_text(path: Path, encoding: str) -> IO[str]:
    """Open a text file, decompressing ``.gz``/``.bz2``/``.xz`` on the fly."""
    opener = _OPENERS.get(path.suffix.lower())
    if opener is not None:
        return opener(path, "rt", encoding=encoding, newline="")
    return path.open(encoding=encoding, newline="")


def _fields(line: str, sep: str) -> list[str]:
    """The fields of one line, honouring CSV quotes for one-character separators."""
    if len(sep) == 1:
        return next(csv.reader([line], delimiter=sep), [])
    return line.split(sep)


def _first_lines(path: Path, encoding: str, n: int = 20) -> list[str]:
    lines: list[str] = []
    try:
        with _open_text(path, encoding) as fh:
            for raw in fh:
                if raw.strip():
                    lines.append(raw.rstrip("\r\n"))
                if len(lines) >= n:
                    break
    except UnicodeDecodeError:
        raise _encoding_error(path, encoding) from None
    return lines


def _encoding_error(path: Path, encoding: str) -> DataError:
    """Locate the first byte sequence that is not valid ``encoding`` and name its line."""
    decoder = codecs.getincrementaldecoder(encoding)()
    line = 1
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as err:
                line += chunk[: err.start].count(b"\n")
                return DataError(
                    f"bytes {chunk[err.start : err.start + 4]!r} are not valid "
                    f"{encoding.removesuffix('-sig')}; "
                    "pass the file's encoding (e.g. encoding='latin-1')",
                    source=str(path),
                    line=line,
                )
            line += chunk.count(b"\n")
    return DataError(f"not valid {encoding}", source=str(path))


def sniff_separator(lines: Sequence[str]) -> str | None:
    """The candidate separator found the same (non-zero) number of times on every line."""
    best: tuple[int, str] | None = None
    for sep in _SEPARATORS:
        counts = {line.count(sep) for line in lines}
        count = counts.pop() if len(counts) == 1 else 0
        if count > 0 and (sep == "::" or best is None or count > best[0]):
            best = (count, sep)
    if best is None:
        # Fall back to the separator present on most lines (a malformed row must not hide it).
        scored = [(sum(sep in line for line in lines), sep) for sep in _SEPARATORS]
        top = max(scored)
        return top[1] if top[0] > len(lines) // 2 else None
    return best[1]


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def has_header(first: list[str], second: list[str] | None, expected: Sequence[str] = ()) -> bool:
    """A header names a column the caller asked for or a known column, or is all text above
    a row with numbers."""
    known = {a for names in ALIASES.values() for a in names}
    if any(f.strip() in expected for f in first) or any(_norm(f) in known for f in first):
        return True
    if any(_looks_numeric(f) for f in first):
        return False
    return second is not None and any(_looks_numeric(f) for f in second)


def infer_roles(columns: Sequence[str]) -> dict[str, str]:
    """Map roles (user, item, rating, weight, timestamp) to column names by :data:`ALIASES`."""
    roles: dict[str, str] = {}
    for role, names in ALIASES.items():
        for col in columns:
            if _norm(col) in names and col not in roles.values():
                roles[role] = col
                break
    return roles


def read_table(
    path: str | Path,
    *,
    sep: str | None = None,
    header: bool | None = None,
    names: Sequence[str] | None = None,
    encoding: str = "utf-8",
    on_bad_rows: OnBadRows = "raise",
    expected: Sequence[str] = (),
) -> tuple[pd.DataFrame, np.ndarray | None, dict[str, int]]:
    """Read a delimited text or Parquet file as text columns.

    Returns the table, the file line number of each row (``None`` for Parquet) and counts of
    rows skipped for having too many fields. ``expected`` are column names the caller will
    look for: a first line holding one of them is a header.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("no such file", source=str(path))
    if path.is_dir():
        raise DataError("is a folder, not a file", source=str(path))
    if path.suffix.lower() in _PARQUET:
        return _read_parquet(path, names), None, {}

    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise DataError(f"unknown encoding {encoding!r}", source=str(path)) from None
    if codec == "utf-8":
        encoding = "utf-8-sig"  # also strips the byte-order mark spreadsheets write
    lines = _first_lines(path, encoding)
    if not lines:
        raise DataError("the file is empty", source=str(path))
    sep, header, names = _layout(path, lines, sep, header, names, expected)
    options: dict[str, Any] = {
        "sep": sep,
        "header": None,
        "skiprows": 1 if header else 0,
        "names": names,
        "keep_default_na": False,
        "skip_blank_lines": False,
        "skipinitialspace": True,
        "encoding": encoding,
        "engine": "python" if len(sep) > 1 else "c",
    }
    numeric = _read_numeric(path, options)
    if numeric is not None:  # fast path: every field parsed as a number
        lines_of = np.arange(2 if header else 1, (2 if header else 1) + len(numeric))
        return numeric, lines_of, {}
    frame, skipped_lines = _read_text(path, options, on_bad_rows)
    return _with_file_lines(path, frame, options, skipped_lines)


def _read_parquet(path: Path, names: Sequence[str] | None) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except Exception as err:  # noqa: BLE001 -- pyarrow raises many types; report one way
        raise DataError(f"cannot read as Parquet: {err}", source=str(path)) from None
    if names is not None:
        frame.columns = list(names)
    return frame


def _layout(
    path: Path,
    lines: list[str],
    sep: str | None,
    header: bool | None,
    names: Sequence[str] | None,
    expected: Sequence[str],
) -> tuple[str, bool, list[str]]:
    """The separator, whether the first line is a header and the column names: those given,
    else guessed from the file's first ``lines``."""
    if sep is None:
        sep = sniff_separator(lines) or ","
    if not sep or sep in ("\n", "\r", '"'):
        raise DataError(f"unusable separator {sep!r}", source=str(path))
    first = _fields(lines[0], sep)
    if header is None:
        second = _fields(lines[1], sep) if len(lines) > 1 else None
        header = has_header(first, second, expected)
    if names is None:
        names = [f.strip() for f in first] if header else _default_names(len(first))
    names = list(names)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(
            f"column name(s) {', '.join(map(repr, repeated))} appear more than once in the header",
            source=str(path),
            line=1,
        )
    if len(names) < 2:
        raise DataError(
            f"found 1 column with separator {sep!r}; expected at least user and item columns "
            "-- is the separator right? (pass sep=...)",
            source=str(path),
            line=1,
        )
    return sep, header, names


def _read_text(
    path: Path, options: dict[str, Any], on_bad_rows: OnBadRows
) -> tuple[pd.DataFrame, list[int]]:
    """The table as text columns and the lines pandas skipped for having too many fields
    (``on_bad_rows="skip"``; else the first such line is an error)."""
    skipped_lines: list[int] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            frame = pd.read_csv(
                path,
                dtype=str,
                on_bad_lines="warn" if on_bad_rows == "skip" else "error",
                **options,
            )
        for w in caught:
            skipped_lines += [int(m) for m in re.findall(r"Skipping line (\d+)", str(w.message))]
    except UnicodeDecodeError:
        raise _encoding_error(path, options["encoding"]) from None
    except pd.errors.ParserError as err:
        match = re.search(r"line (\d+), saw (\d+)", str(err))
        if match:
            raise _FieldCountError(
                f"has {match.group(2)} fields, expected {len(options['names'])} "
                f"(separator {options['sep']!r}; on_bad_rows='skip' skips and counts such lines)",
                source=str(path),
                line=int(match.group(1)),
            ) from None
        raise DataError(f"cannot parse: {err}", source=str(path)) from None
    except pd.errors.EmptyDataError:
        raise DataError("the file has a header but no rows", source=str(path)) from None
    return frame, skipped_lines


def _with_file_lines(
    path: Path, frame: pd.DataFrame, options: dict[str, Any], skipped_lines: list[int]
) -> tuple[pd.DataFrame, np.ndarray, dict[str, int]]:
    """The rows without blank lines, the file line of each and the skipped counts (warned of,
    on behalf of :func:`read_table`'s caller)."""
    # File line of each row: rows follow the header, minus the lines skipped as malformed.
    offset = 1 + options["skiprows"]
    row_lines = np.arange(offset, offset + len(frame) + len(skipped_lines), dtype=np.int64)
    if skipped_lines:
        row_lines = row_lines[~np.isin(row_lines, skipped_lines)]
    blank = _blank_lines(path, options["encoding"])[row_lines - 1]
    if blank.any():  # blank lines are not rows (a line of empty fields like ",," is one)
        frame = frame[~blank].reset_index(drop=True)
        row_lines = row_lines[~blank]
    skipped = {"too many fields": len(skipped_lines)} if skipped_lines else {}
    if skipped_lines:
        n = len(skipped_lines)
        warnings.warn(
            f"{path}: skipped {n} line{'s' if n > 1 else ''} with more than "
            f"{len(options['names'])} fields ({'first at ' if n > 1 else ''}line "
            f"{skipped_lines[0]})",
            SkippedRowsWarning,
            stacklevel=3,
        )
    if len(frame) == 0:
        raise DataError("the file has no rows", source=str(path))
    return frame, row_lines, skipped


class _FieldCountError(DataError):
    """A line with more fields than the header (pandas stops at the first such line)."""


def _blank_lines(path: Path, encoding: str) -> np.ndarray:
    """For each physical line of the file, whether it is empty or whitespace only."""
    with _open_text(path, encoding) as fh:
        return np.array([not line.strip() for line in fh] or [False], dtype=bool)


def _read_numeric(path: Path, options: dict[str, Any]) -> pd.DataFrame | None:
    """The table if every column parses as numbers (no blanks, no text), else ``None``.

    Numeric files (u.data, play-count logs) skip the slower text pass; anything unusual falls
    back to reading text, which locates problems by line.
    """
    try:
        frame = pd.read_csv(path, on_bad_lines="error", **options)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError):
        return None
    if len(frame) == 0:
        return None
    kinds = {frame[c].dtype.kind for c in frame.columns}
    if not kinds <= {"i", "u", "f"}:
        return None
    if "f" in kinds and frame.isna().to_numpy().any():
        return None  # blanks or "nan" text: let the text pass report them by line
    return frame


def _default_names(n_fields: int) -> list[str]:
    """Positional roles for header-less files: user, item, rating, timestamp (u.data order)."""
    base = [C.USER, C.ITEM, C.RATING, C.TIMESTAMP]
    return base[:n_fields] + [f"column_{i + 1}" for i in range(len(base), n_fields)]


def read_interactions(
    path: str | Path,
    *,
    user: str | None = None,
    item: str | None = None,
    rating: str | bool | None = None,
    weight: str | bool | None = None,
    timestamp: str | bool | None = None,
    sep: str | None = None,
    header: bool | None = None,
    names: Sequence[str] | None = None,
    encoding: str = "utf-8",
    duplicates: Duplicates | None = None,
    on_bad_rows: OnBadRows = "raise",
    rating_range: tuple[float, float] | None = None,
    users: pd.DataFrame | None = None,
    items: pd.DataFrame | None = None,
    name: str | None = None,
) -> Dataset:
    """Load interactions from a CSV/TSV/DAT/Parquet file into a :class:`Dataset`.

    Column roles not given are inferred from the header (``userId``, ``movie_id``, ``rating``,
    ``timestamp``... see :data:`ALIASES`); a file without a header is read as
    ``user, item[, rating[, timestamp]]``. Pass ``rating=False`` (or ``weight``/``timestamp``)
    to ignore a column that would be inferred.
    """
    roles = {C.USER: user, C.ITEM: item, C.RATING: rating, C.WEIGHT: weight, C.TIMESTAMP: timestamp}
    options: dict[str, Any] = {"sep": sep, "header": header, "names": names, "encoding": encoding}
    options["expected"] = [c for c in roles.values() if isinstance(c, str)]
    build: dict[str, Any] = {"duplicates": duplicates, "rating_range": rating_range}
    build |= {"users": users, "items": items, "name": name or Path(path).stem}
    try:
        frame, lines, skipped = read_table(path, on_bad_rows=on_bad_rows, **options)
    except _FieldCountError as too_many:
        # pandas stops at the first line with too many fields; a bad value above it is the
        # first problem in the file, and the one to report
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a probe: only its error counts
                frame, lines, skipped = read_table(path, on_bad_rows="skip", **options)
                _dataset(frame, lines, skipped, path, roles, on_bad_rows="raise", **build)
        except DataError as err:
            if err.line is not None and err.line < (too_many.line or 0):
                also = f"; also line {too_many.line}: {too_many.problem}"
                raise DataError(
                    err.problem + also, source=err.source, line=err.line, column=err.column
                ) from None
        raise too_many from None
    return _dataset(frame, lines, skipped, path, roles, on_bad_rows=on_bad_rows, **build)


def _dataset(
    frame: pd.DataFrame,
    lines: np.ndarray | None,
    skipped: dict[str, int],
    path: str | Path,
    roles: dict[str, str | bool | None],
    **build: Any,
) -> Dataset:
    """The :class:`Dataset` of a table read from ``path``: column roles as given (a name,
    or ``False`` for none) or inferred from the column names."""
    weight, rating = roles[C.WEIGHT], roles[C.RATING]
    columns = [str(c) for c in frame.columns]
    inferred = infer_roles(columns)
    chosen: dict[str, str | None] = {}
    for role, given in roles.items():
        if given is False:
            chosen[role] = None
        elif isinstance(given, str):
            chosen[role] = given
        else:
            chosen[role] = inferred.get(role)
    for role in (C.USER, C.ITEM):
        if chosen[role] is None:
            raise DataError(
                f"cannot tell which column holds the {role} ids among [{', '.join(columns)}]; "
                f"name it ({role}=... or --column {role}=NAME)",
                source=str(path),
            )
    if chosen[C.RATING] is not None and isinstance(weight, str) and rating is None:
        chosen[C.RATING] = None  # a weight column the caller named wins over an inferred rating
    ds = Dataset.from_frame(
        frame,
        user=str(chosen[C.USER]),
        item=str(chosen[C.ITEM]),
        rating=chosen[C.RATING],
        weight=chosen[C.WEIGHT],
        timestamp=chosen[C.TIMESTAMP],
        source=str(path),
        line_numbers=lines,
        **build,
    )
    if skipped:
        ds.skipped.update(skipped)
    return ds
