"""Interactions in Spark: read from Parquet/CSV (local paths or any Hadoop URI), checked
like the library checks them, repeated pairs folded, ids indexed.

The checks follow :mod:`tastebud.data.validate`: every column named must be there (the
error names the file and the column and lists the columns found); ids must be present;
ratings and weights must be finite numbers, weights not negative; timestamps are numbers
(unix seconds) or date/time text. Ids keep their type: integers when every value is one
(text that spells an integer canonically, ``"7"`` but not ``"007"``), text otherwise -- so
an exported model answers to the same ids as a model fitted by the library. Repeated
(user, item) pairs are folded by the library's ``duplicates`` policies.

What differs from the library, because a distributed read has no line numbers: a bad
value is reported by column with the count of bad rows and one example, not by line.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from tastebud.data import columns as C
from tastebud.data.files import ALIASES, _default_names, _fields, has_header, infer_roles
from tastebud.data.files import sniff_separator as _sniff
from tastebud.data.validate import SkippedRowsWarning
from tastebud.errors import DataError, InvalidInputError
from tastebud.spark._session import require_pyspark, spark_error

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

Format = Literal["auto", "csv", "parquet"]
Duplicates = Literal["last", "first", "sum", "max"]
OnBadRows = Literal["raise", "skip"]

USER_INDEX = "user_index"
ITEM_INDEX = "item_index"
_TEXT_SUFFIXES = (".csv", ".tsv", ".txt", ".data", ".dat")
_INT_RE = r"^(0|-?[1-9][0-9]{0,18})$"  # a canonical int64 spelling (range checked by cast)
_ROLES = (C.USER, C.ITEM, C.RATING, C.WEIGHT, C.TIMESTAMP)


@dataclass(frozen=True)
class Interactions:
    """Checked interactions as a Spark DataFrame, one row per (user, item).

    ``frame`` has the columns ``user`` and ``item`` (int64 or text ids, as the data had
    them) and, when the data had them, ``rating``, ``weight`` (doubles) and ``timestamp``
    (unix seconds, double). ``source`` names where they came from, for messages.
    """

    frame: DataFrame
    source: str

    @property
    def has_rating(self) -> bool:
        return C.RATING in self.frame.columns

    @property
    def has_weight(self) -> bool:
        return C.WEIGHT in self.frame.columns

    @property
    def has_timestamp(self) -> bool:
        return C.TIMESTAMP in self.frame.columns


def _format_of(path: str, fmt: Format) -> Literal["csv", "parquet"]:
    if fmt in ("csv", "parquet"):
        return fmt
    if fmt != "auto":
        raise InvalidInputError(f"format must be 'auto', 'csv' or 'parquet', got {fmt!r}")
    name = PurePosixPath(path.rstrip("/")).name.lower()
    for compressed in (".gz", ".bz2", ".xz", ".zst", ".lz4", ".snappy"):
        name = name.removesuffix(compressed)
    return "csv" if name.endswith(_TEXT_SUFFIXES) else "parquet"


def read_interactions(
    spark: SparkSession,
    path: str,
    *,
    format: Format = "auto",
    user: str | None = None,
    item: str | None = None,
    rating: str | bool | None = None,
    weight: str | bool | None = None,
    timestamp: str | bool | None = None,
    sep: str | None = None,
    header: bool | None = None,
    duplicates: Duplicates | None = None,
    on_bad_rows: OnBadRows = "raise",
) -> Interactions:
    """Read interactions from Parquet or delimited text at ``path`` (a file or a folder of
    files; a local path or any URI Spark's Hadoop readers take: ``hdfs://``, ``s3a://``,
    ``gs://``, ``abfss://``...).

    ``format="auto"`` reads names ending in ``.csv``/``.tsv``/``.txt``/``.data``/``.dat``
    (optionally compressed) as text and anything else as Parquet. For text, the separator
    and the header are guessed from the first lines as :func:`tastebud.read_interactions`
    guesses them, and a file without a header is read as ``user, item[, rating[,
    timestamp]]``. Column roles not given are inferred from the names (``userId``,
    ``movie_id``, ``rating``, ``plays``...); ``False`` ignores a column that would be
    inferred. Checks and folding: :func:`from_frame`.
    """
    require_pyspark()
    kind = _format_of(str(path), format)
    try:
        if kind == "parquet":
            frame = spark.read.parquet(str(path))
        else:
            frame = _read_text(spark, str(path), sep, header, user, item)
        columns = frame.columns
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 -- Spark raises AnalysisException, Py4J errors...
        raise _read_error(str(path), kind, err) from None
    if not columns:
        raise DataError("no columns found", source=str(path))
    return from_frame(
        frame,
        user=user,
        item=item,
        rating=rating,
        weight=weight,
        timestamp=timestamp,
        source=str(path),
        duplicates=duplicates,
        on_bad_rows=on_bad_rows,
    )


def _read_error(path: str, kind: str, err: BaseException) -> DataError:
    text = spark_error(err)
    if "PATH_NOT_FOUND" in text or "does not exist" in text:
        return DataError("no such file or folder", source=path)
    hint = " (a text file? pass format='csv' / --format csv)" if kind == "parquet" else ""
    return DataError(f"cannot read as {kind}: {text}{hint}", source=path)


def _read_text(
    spark: SparkSession,
    path: str,
    sep: str | None,
    header: bool | None,
    user: str | None,
    item: str | None,
) -> DataFrame:
    """Delimited text as string columns, the separator and header guessed from the first
    non-blank lines (the library's rules, :mod:`tastebud.data.files`)."""
    from pyspark.sql import functions as F

    lines = [
        r[0] for r in spark.read.text(path).where(F.trim(F.col("value")) != "").limit(20).collect()
    ]
    if not lines:
        raise DataError("the file is empty", source=path)
    lines[0] = lines[0].removeprefix("\ufeff")
    if sep is None:
        sep = _sniff(lines) or ","
    first = _fields(lines[0], sep)
    if header is None:
        second = _fields(lines[1], sep) if len(lines) > 1 else None
        header = has_header(first, second, [c for c in (user, item) if c])
    names = [f.strip() for f in first] if header else _default_names(len(first))
    if len(names) < 2:
        raise DataError(
            f"found 1 column with separator {sep!r}; expected at least user and item columns "
            "-- is the separator right? (pass sep=...)",
            source=path,
        )
    reader = spark.read.option("sep", sep).option("header", str(bool(header)).lower())
    reader = reader.option("mode", "PERMISSIVE").option("ignoreLeadingWhiteSpace", "true")
    reader = reader.option("ignoreTrailingWhiteSpace", "true")  # "65  " is the id 65
    frame = reader.csv(path, inferSchema=False)
    return frame.toDF(*names)


def from_frame(
    frame: DataFrame,
    *,
    user: str | None = None,
    item: str | None = None,
    rating: str | bool | None = None,
    weight: str | bool | None = None,
    timestamp: str | bool | None = None,
    source: str = "DataFrame",
    duplicates: Duplicates | None = None,
    on_bad_rows: OnBadRows = "raise",
    rating_range: tuple[float, float] | None = None,
) -> Interactions:
    """Check a Spark DataFrame of interactions and fold repeated pairs.

    One pass over the data counts the bad values of every column (missing ids; ratings
    and weights that are missing, not numbers or infinite; negative weights; timestamps
    that are neither numbers nor date/time text); ``on_bad_rows="raise"`` (the default)
    stops with the first column's problem, its count and an example, ``"skip"`` drops
    the bad rows with a :class:`~tastebud.data.validate.SkippedRowsWarning`.

    ``duplicates`` folds repeated (user, item) pairs as the library does: ``"last"`` (the
    default with ratings: the latest by timestamp, then by input order), ``"first"``,
    ``"sum"`` (the default otherwise: weights add up, a pair seen n times without weights
    gets weight n) or ``"max"``.
    """
    require_pyspark()
    if on_bad_rows not in ("raise", "skip"):
        raise InvalidInputError(f"on_bad_rows must be 'raise' or 'skip', got {on_bad_rows!r}")
    chosen = _roles(frame.columns, source, user, item, rating, weight, timestamp)
    policy = duplicates or ("last" if chosen[C.RATING] else "sum")
    if policy not in ("last", "first", "sum", "max"):
        raise InvalidInputError(
            f"duplicates must be 'last', 'first', 'sum' or 'max', got {policy!r}"
        )
    if rating_range is not None and not rating_range[0] < rating_range[1]:
        raise InvalidInputError(
            f"rating_range must be (low, high) with low < high, got {rating_range}"
        )
    checked, problems = _checked(frame, chosen, rating_range)
    try:
        summary = checked.agg(*problems.aggregates(), *_id_checks(checked, problems)).first()
    except Exception as err:  # noqa: BLE001 -- a file Spark cannot parse fails here
        raise DataError(f"cannot read: {spark_error(err)}", source=source) from None
    assert summary is not None
    checked = problems.settle(checked, summary, source, on_bad_rows)
    checked = checked.drop(*[c for c in checked.columns if c.startswith("_raw_")])
    checked = _typed_ids(checked, summary)
    return Interactions(_fold(checked, policy), source)


def _roles(
    columns: list[str],
    source: str,
    user: str | None,
    item: str | None,
    rating: str | bool | None,
    weight: str | bool | None,
    timestamp: str | bool | None,
) -> dict[str, str | None]:
    """Which column plays which role: as given (a name; ``False``: none) or inferred from
    the names (:data:`tastebud.data.files.ALIASES`); a named column must exist."""
    given = {C.USER: user, C.ITEM: item, C.RATING: rating, C.WEIGHT: weight, C.TIMESTAMP: timestamp}
    inferred = infer_roles(columns)
    chosen: dict[str, str | None] = {}
    found = ", ".join(columns)
    for role, name in given.items():
        if name is False:
            chosen[role] = None
        elif isinstance(name, str):
            if name not in columns:
                raise DataError(
                    f"no such column; columns found: [{found}]", source=source, column=name
                )
            chosen[role] = name
        elif name is None or name is True:
            chosen[role] = inferred.get(role)
            if name is True and chosen[role] is None:
                raise DataError(
                    f"no {role} column among [{found}] (known names: {', '.join(ALIASES[role])})",
                    source=source,
                )
        else:
            raise InvalidInputError(f"{role} must be a column name or False, got {name!r}")
    for role in (C.USER, C.ITEM):
        if chosen[role] is None:
            raise DataError(
                f"cannot tell which column holds the {role} ids among [{found}]; "
                f"name it ({role}=... or --column {role}=NAME)",
                source=source,
            )
    if chosen[C.RATING] is not None and isinstance(weight, str) and rating is None:
        chosen[C.RATING] = None  # a weight column the caller named wins over an inferred rating
    picked = [c for c in chosen.values() if c is not None]
    repeated = sorted({c for c in picked if picked.count(c) > 1})
    if repeated:
        raise DataError(f"column(s) {', '.join(repeated)} given more than one role", source=source)
    return chosen


class _Problems:
    """Bad-value conditions per column, counted (with one example) in one aggregation."""

    def __init__(self) -> None:
        self.checks: list[tuple[str, str, Column, Column]] = []  # column, kind, bad, raw

    def add(self, column: str, kind: str, bad: Column, raw: Column) -> None:
        self.checks.append((column, kind, bad, raw))

    def aggregates(self) -> list[Column]:
        from pyspark.sql import functions as F

        out = [F.count(F.lit(1)).alias("_rows")]
        for n, (_column, _kind, bad, raw) in enumerate(self.checks):
            out.append(F.count(F.when(bad, 1)).alias(f"_bad{n}"))
            out.append(F.first(F.when(bad, raw.cast("string")), ignorenulls=True).alias(f"_ex{n}"))
        return out

    def any_bad(self) -> Column:
        from pyspark.sql import functions as F

        flag = F.lit(False)
        for _column, _kind, bad, _raw in self.checks:
            flag = flag | F.coalesce(bad, F.lit(False))
        return flag

    def settle(
        self, frame: DataFrame, summary: Any, source: str, on_bad_rows: OnBadRows
    ) -> DataFrame:
        rows = int(summary["_rows"])
        if rows == 0:
            raise DataError("no interactions (the table is empty)", source=source)
        counts = [(n, int(summary[f"_bad{n}"])) for n in range(len(self.checks))]
        bad = [(n, c) for n, c in counts if c]
        if not bad:
            return frame
        if on_bad_rows == "raise":
            n, count = bad[0]
            column, kind, _bad, _raw = self.checks[n]
            example = summary[f"_ex{n}"]
            shown = "" if example is None else f" (e.g. {example!r})"
            raise DataError(
                f"{count} of {rows} rows with {kind}{shown}; on_bad_rows='skip' skips them",
                source=source,
                column=column,
            )
        detail = "; ".join(
            f"{c} with column '{self.checks[n][0]}': {self.checks[n][1]}" for n, c in bad
        )
        kept = frame.where(~self.any_bad())
        warnings.warn(
            f"{source}: skipped rows with bad values ({detail})", SkippedRowsWarning, stacklevel=4
        )
        if kept.limit(1).count() == 0:
            raise DataError(f"every one of the {rows} rows is bad ({detail})", source=source)
        return kept


def _checked(
    frame: DataFrame,
    chosen: dict[str, str | None],
    rating_range: tuple[float, float] | None,
) -> tuple[DataFrame, _Problems]:
    """The roles' columns under their canonical names (numbers as doubles, ids raw), each
    beside its raw value (``_raw_<role>``, dropped after the checks), and the conditions
    that make a row bad."""
    from pyspark.sql import functions as F

    problems = _Problems()
    types = dict(frame.dtypes)
    staged: list[Column] = []
    for role in _ROLES:
        name = chosen[role]
        if name is None:
            continue
        if types[name] == "boolean" and role in (C.USER, C.ITEM):
            raise DataError("ids must be integers or text, not true/false", column=name)
        source = F.col(f"`{name}`")
        staged.append(source.alias(f"_raw_{role}"))
        if role in (C.USER, C.ITEM):
            staged.append(source.alias(role))
        elif role == C.TIMESTAMP:
            staged.append(_seconds(source, types[name]).alias(role))
        else:
            staged.append(_number(source, types[name]).alias(role))
    staged.append(F.monotonically_increasing_id().alias("_row"))  # input order: last/first
    out = frame.select(*staged)
    for role in _ROLES:
        name = chosen[role]
        if name is None:
            continue
        raw, value = F.col(f"_raw_{role}"), F.col(role)
        blank = raw.isNull()
        if types[name] == "string":
            blank = blank | (F.trim(raw) == "")
        if role in (C.USER, C.ITEM):
            problems.add(name, "a missing id", blank, raw)
            continue
        problems.add(name, "a missing value", blank, raw)
        if role == C.TIMESTAMP:
            problems.add(
                name, "a value that is neither a number nor a time", ~blank & value.isNull(), raw
            )
            continue
        problems.add(
            name, "a value that is not a number", ~blank & (value.isNull() | F.isnan(value)), raw
        )
        problems.add(name, "a value that is not finite", F.abs(value) == float("inf"), raw)
        if role == C.WEIGHT:
            problems.add(name, "a negative weight", value < 0, raw)
        elif rating_range is not None:
            lo, hi = rating_range
            outside = (value < lo) | (value > hi)
            problems.add(name, f"a rating outside [{lo:g}, {hi:g}]", outside, raw)
    return out, problems


def _number(raw: Column, dtype: str) -> Column:
    from pyspark.sql import functions as F

    if dtype == "string":
        return F.trim(raw).try_cast("double")
    if dtype == "boolean":  # true/false are not numbers (the library's rule)
        return F.lit(None).cast("double")
    return raw.try_cast("double")


def _seconds(raw: Column, dtype: str) -> Column:
    """Unix seconds from numbers, timestamps, dates or date/time text."""
    from pyspark.sql import functions as F

    if dtype in ("timestamp", "timestamp_ntz"):
        return F.unix_micros(raw.cast("timestamp")) / 1e6
    if dtype == "date":
        return F.unix_micros(raw.cast("timestamp")) / 1e6
    if dtype == "string":
        text = F.trim(raw)
        parsed = F.try_to_timestamp(text)
        return F.coalesce(text.try_cast("double"), F.unix_micros(parsed) / 1e6)
    return _number(raw, dtype)


def _id_checks(frame: DataFrame, problems: _Problems) -> list[Column]:
    """Aggregates ``_int_user``/``_int_item``: 1 when every id of the rows kept is an
    integer (text: spelled canonically), read in the checks' pass."""
    from pyspark.sql import functions as F

    types = dict(frame.dtypes)
    kept = ~problems.any_bad()
    out = []
    for role in (C.USER, C.ITEM):
        dtype, col = types[role], F.col(role)
        if dtype == "string":
            ok = col.rlike(_INT_RE) & col.try_cast("long").isNotNull()
        elif dtype in ("float", "double") or dtype.startswith("decimal"):
            ok = (col == F.floor(col)) & (F.abs(col) < 2.0**53)
        else:
            ok = F.lit(True)
        out.append(F.min(F.when(kept, ok.cast("int"))).alias(f"_int_{role}"))
    return out


def _typed_ids(frame: DataFrame, summary: Any) -> DataFrame:
    """Ids as int64 when every value is an integer, else text: the library's rule
    (:func:`tastebud.data.validate.normalize_ids`)."""
    from pyspark.sql import functions as F

    types = dict(frame.dtypes)
    out = []
    for role in (C.USER, C.ITEM):
        integral = types[role] in ("tinyint", "smallint", "int", "bigint")
        as_int = integral or summary[f"_int_{role}"] == 1
        out.append(F.col(role).cast("long" if as_int else "string").alias(role))
    rest = [F.col(c) for c in frame.columns if c not in (C.USER, C.ITEM)]
    return frame.select(*out, *rest)


def _fold(frame: DataFrame, policy: Duplicates) -> DataFrame:
    """One row per (user, item) by the ``duplicates`` policy (:func:`from_frame`)."""
    from pyspark.sql import functions as F

    has = set(frame.columns)
    order = F.struct(F.col(C.TIMESTAMP), F.col("_row")) if C.TIMESTAMP in has else F.col("_row")
    pick = F.max_by if policy in ("last", "sum", "max") else F.min_by
    aggs: list[Column] = []
    if C.RATING in has:
        rating = F.max(C.RATING) if policy == "max" else pick(C.RATING, order)
        aggs.append(rating.alias(C.RATING))
    if C.WEIGHT in has:
        weight = {"sum": F.sum(C.WEIGHT), "max": F.max(C.WEIGHT)}.get(policy, pick(C.WEIGHT, order))
        aggs.append(weight.alias(C.WEIGHT))
    elif policy == "sum" and C.RATING not in has:
        aggs.append(F.count(F.lit(1)).cast("double").alias(C.WEIGHT))  # repeated clicks count
    if C.TIMESTAMP in has:
        ts = F.min(C.TIMESTAMP) if policy == "first" else F.max(C.TIMESTAMP)
        aggs.append(ts.alias(C.TIMESTAMP))
    return frame.groupBy(C.USER, C.ITEM).agg(*aggs)


def index_ids(frame: DataFrame, column: str, index: str) -> tuple[DataFrame, int]:
    """The distinct values of ``frame[column]`` numbered ``0..n-1`` in sorted order (as
    :meth:`tastebud.data.idmap.IdMap.from_values` numbers them: integers numerically,
    text by code point), as a cached DataFrame ``(column, index)``.

    Distributed: a range-partitioned sort, then each partition's rows are numbered from
    the count of the rows before it (one small job collects the partition sizes) -- no
    single partition holds all the ids, and no row goes through Python. Returns the
    table and the number of ids.
    """
    from pyspark.sql import functions as F

    ordered = (
        frame.select(column)
        .distinct()
        .orderBy(column)
        .withColumn("_part", F.spark_partition_id())
        .withColumn("_pos", F.monotonically_increasing_id())
        .persist()
    )
    sizes = ordered.groupBy("_part").agg(F.count(F.lit(1)).alias("n"), F.min("_pos").alias("start"))
    starts, before = [], 0
    for row in sorted(sizes.collect(), key=lambda r: r["_part"]):
        starts.append((int(row["_part"]), int(row["start"]), before))
        before += int(row["n"])
    if before >= 2**31 - 1:
        ordered.unpersist()
        raise InvalidInputError(
            f"{before:,} distinct {column} ids; Spark's ALS numbers ids with 32-bit integers"
        )
    spark = frame.sparkSession
    offsets = spark.createDataFrame(starts, "_part int, _start long, _before long")
    numbered = (
        ordered.join(F.broadcast(offsets), "_part")
        .select(
            column, (F.col("_pos") - F.col("_start") + F.col("_before")).cast("int").alias(index)
        )
        .persist()
    )
    numbered.count()  # materialise before the sorted copy is dropped
    ordered.unpersist()
    return numbered, before


def random_split(
    data: Interactions, test_size: float = 0.2, *, seed: int = 0, min_train: int = 1
) -> tuple[Interactions, Interactions]:
    """Per-user random holdout, the library's :func:`tastebud.split.random_split` rule:
    each user keeps ``round(test_size * n_u)`` interactions for test (half to even), never
    leaving fewer than ``min_train`` in train. Returns ``(train, test)``.

    The order within a user is a hash of (user, item, seed) rather than a random stream,
    so the split is the same however Spark partitions or recomputes the data (a random
    number per row would change with the row order a shuffle delivers). It is therefore
    not the same split as the library's for the same seed.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if not (isinstance(test_size, int | float) and 0 < test_size < 1):
        raise InvalidInputError(f"test_size must be between 0 and 1, got {test_size!r}")
    if not isinstance(min_train, int) or isinstance(min_train, bool) or min_train < 0:
        raise InvalidInputError(f"min_train must be an integer >= 0, got {min_train!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InvalidInputError(f"seed must be an integer, got {seed!r}")
    frame = data.frame
    key = F.xxhash64(F.col(C.USER), F.col(C.ITEM), F.lit(int(seed)))
    order = Window.partitionBy(C.USER).orderBy(key, C.ITEM)
    count = Window.partitionBy(C.USER)
    n_u = F.count(F.lit(1)).over(count)
    n_test = F.least(F.rint(F.lit(float(test_size)) * n_u), F.greatest(n_u - min_train, F.lit(0)))
    flagged = frame.withColumn("_test", (F.row_number().over(order) - 1) < n_test)
    train = flagged.where(~F.col("_test")).drop("_test")
    test = flagged.where(F.col("_test")).drop("_test")
    name = f"{data.source} (random {test_size:g}, seed={seed})"
    return Interactions(train, f"{name} train"), Interactions(test, f"{name} test")
