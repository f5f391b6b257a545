"""``tastebud spark fit|evaluate|recommend``: MLlib ALS from the command line.

The sub-app is registered by :mod:`tastebud.cli`; this module imports PySpark only inside
the commands, so ``tastebud --help`` works without it. Errors follow the main command
line's rule: a :class:`~tastebud.errors.TastebudError` (one line, exit code 2) for
anything the user can fix -- a missing file, a bad column, an unknown master URL -- and
Spark's own failures are cut to their first line.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from tastebud.errors import DataError, InvalidInputError, TastebudError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from tastebud.spark.als import SparkALS
    from tastebud.spark.io import Interactions

spark_app = typer.Typer(
    help="Train, evaluate and recommend with Spark MLlib ALS (pip install 'tastebud[spark]').",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help, as the main app's
)

_ROLES = ("user", "item", "rating", "weight", "timestamp")

DataArg = Annotated[
    str,
    typer.Argument(
        metavar="DATA",
        help="interactions: a Parquet or CSV file or folder, local or any Hadoop URI "
        "(hdfs://, s3a://, gs://...)",
    ),
]
MasterOpt = Annotated[
    str,
    typer.Option(
        metavar="URL", help="Spark master: local[N], local[*], yarn, k8s://..., spark://..."
    ),
]
ConfOpt = Annotated[
    list[str] | None,
    typer.Option("--conf", metavar="KEY=VALUE", help="a Spark setting (repeatable)"),
]
CheckpointOpt = Annotated[
    str | None,
    typer.Option(metavar="DIR", help="checkpoint folder for long ALS runs (HDFS/S3 on a cluster)"),
]
FormatOpt = Annotated[
    Literal["auto", "csv", "parquet"],
    typer.Option("--format", help="auto: .csv/.tsv/.txt/.data/.dat are text, else Parquet"),
]
ColumnsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--column",
        "-c",
        metavar="ROLE=NAME",
        help="e.g. user=userId (roles: user, item, rating, weight, timestamp); "
        "inferred from the column names when omitted",
    ),
]
SepOpt = Annotated[str | None, typer.Option(metavar="SEP", help="CSV separator (sniffed)")]
HeaderOpt = Annotated[
    bool | None, typer.Option("--header/--no-header", help="whether CSV has a header (guessed)")
]
BadRowsOpt = Annotated[
    Literal["raise", "skip"],
    typer.Option(help="raise: stop at the first bad column; skip: drop and count bad rows"),
]
FactorsOpt = Annotated[int, typer.Option("--factors", min=1, metavar="N", help="factors")]
RegOpt = Annotated[
    float,
    typer.Option(metavar="LAMBDA", help="tastebud's λ (regParam = λ / interactions per user)"),
]
RegParamOpt = Annotated[
    float | None,
    typer.Option(min=0, metavar="R", help="MLlib's regParam itself (wins over --reg)"),
]
AlphaOpt = Annotated[float, typer.Option(metavar="ALPHA", help="confidence slope α")]
IterOpt = Annotated[int, typer.Option("--iterations", min=1, metavar="N", help="ALS sweeps")]
ValuesOpt = Annotated[
    Literal["auto", "binary", "weight", "rating"],
    typer.Option(help="x_ui: auto = weights when present, else 1"),
]
ConfidenceOpt = Annotated[Literal["log", "linear"], typer.Option(help="g(x): log2(1+x) or x")]
UserExpOpt = Annotated[float, typer.Option(min=-2, max=2, help="confidence × n_u^a")]
ItemExpOpt = Annotated[float, typer.Option(min=-2, max=2, help="confidence × n_i^b")]
ShiftOpt = Annotated[
    float,
    typer.Option(
        min=-2, max=2, metavar="S", help="added to both exponents for MLlib (offsets ALS-WR)"
    ),
]
ExplicitOpt = Annotated[
    bool, typer.Option("--explicit", help="rating-prediction ALS on the ratings")
]
SeedOpt = Annotated[int, typer.Option(min=0, help="random seed")]
BlocksOpt = Annotated[
    int | None, typer.Option(min=1, metavar="N", help="ALS user/item blocks (default: cores)")
]
KOpt = Annotated[int, typer.Option("--k", min=1, metavar="K", help="list length")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON only")]


def _pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for text in values or []:
        key, eq, value = text.partition("=")
        if not eq or not key.strip():
            raise InvalidInputError(f"{flag} {text}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


@contextlib.contextmanager
def _session(
    master: str, conf: list[str] | None, checkpoint_dir: str | None
) -> Iterator[SparkSession]:
    """A session for one command (stopped after it unless it was already running), with
    Spark's failures turned into one-line errors."""
    from tastebud.spark._session import check_master, require_pyspark, spark_session

    settings = _pairs(conf, "--conf")
    try:
        check_master(master)
    except InvalidInputError:
        raise InvalidInputError(
            f"--master {master}: not a Spark master URL; use local[N], local[*], yarn, "
            "spark://HOST:PORT or k8s://https://HOST:PORT"
        ) from None
    require_pyspark()
    from pyspark.sql import SparkSession

    running = SparkSession.getActiveSession() is not None
    session = spark_session(master, conf=settings, checkpoint_dir=checkpoint_dir)
    try:
        with _spark_errors():
            yield session
    finally:
        if not running:
            session.stop()


@contextlib.contextmanager
def _spark_errors() -> Iterator[None]:
    """Spark's and Py4J's exceptions (a Java failure surfacing in Python) as one line."""
    from pyspark.errors import PySparkException

    from tastebud.spark._session import spark_error

    try:
        yield
    except TastebudError:
        raise
    except Exception as err:
        java = any(c.__module__.startswith("py4j") for c in type(err).__mro__)
        if not (java or isinstance(err, PySparkException)):
            raise
        raise TastebudError(f"Spark failed: {spark_error(err)}") from None


#: The reader's messages name its Python arguments; on the command line they are flags.
_FLAGS = (
    (re.compile(r"\bformat='csv'"), "--format csv"),
    (re.compile(r"\bon_bad_rows='skip'"), "--on-bad-rows skip"),
    (re.compile(r"\bsep=\.\.\."), "--sep SEP"),
    (re.compile(r"\b(?:user|item|rating|weight|timestamp)=\.\.\. or "), ""),
)


def _read(
    session: SparkSession,
    data: str,
    fmt: str,
    column: list[str] | None,
    sep: str | None,
    header: bool | None,
    on_bad_rows: str,
) -> Interactions:
    from tastebud.spark.io import read_interactions

    roles: dict[str, Any] = dict.fromkeys(_ROLES)
    for text in column or []:
        role, eq, name = text.partition("=")
        if not eq or role.strip() not in roles:
            raise InvalidInputError(
                f"--column {text}: expected ROLE=NAME, role one of {', '.join(_ROLES)}"
            )
        roles[role.strip()] = name.strip()
    try:
        return read_interactions(
            session,
            data,
            format=fmt,  # type: ignore[arg-type]
            sep=sep,
            header=header,
            on_bad_rows=on_bad_rows,  # type: ignore[arg-type]
            **roles,
        )
    except DataError as err:
        problem = err.problem
        for python, flag in _FLAGS:
            problem = python.sub(flag, problem)
        raise DataError(problem, source=err.source, line=err.line, column=err.column) from None


def _fit(train: Interactions, settings: dict[str, Any]) -> SparkALS:
    from tastebud.spark.als import fit_als

    return fit_als(train, **settings)


def _settings(
    factors: int,
    reg: float,
    reg_param: float | None,
    alpha: float,
    iterations: int,
    values: str,
    confidence: str,
    user_exponent: float,
    item_exponent: float,
    exponent_shift: float,
    explicit: bool,
    seed: int,
    blocks: int | None,
) -> dict[str, Any]:
    return {
        "n_factors": factors,
        "reg": reg,
        "reg_param": reg_param,
        "alpha": alpha,
        "n_iterations": iterations,
        "values": values,
        "confidence": confidence,
        "user_exponent": user_exponent,
        "item_exponent": item_exponent,
        "exponent_shift": exponent_shift,
        "implicit": not explicit,
        "seed": seed,
        "num_blocks": blocks,
    }


# The commands' signatures are their flags (typer), hence their length.
@spark_app.command("fit")
def fit(
    data: DataArg,
    out_dir: Annotated[
        Path, typer.Option("--out", metavar="FOLDER", help="the tastebud model folder to write")
    ],
    master: MasterOpt = "local[*]",
    conf: ConfOpt = None,
    checkpoint_dir: CheckpointOpt = None,
    fmt: FormatOpt = "auto",
    column: ColumnsOpt = None,
    sep: SepOpt = None,
    header: HeaderOpt = None,
    on_bad_rows: BadRowsOpt = "raise",
    factors: FactorsOpt = 64,
    reg: RegOpt = 30.0,
    reg_param: RegParamOpt = None,
    alpha: AlphaOpt = 2.5,
    iterations: IterOpt = 15,
    values: ValuesOpt = "auto",
    confidence: ConfidenceOpt = "log",
    user_exponent: UserExpOpt = -0.5,
    item_exponent: ItemExpOpt = -0.3,
    exponent_shift: ShiftOpt = 0.5,
    seed: SeedOpt = 0,
    blocks: BlocksOpt = None,
) -> None:
    """Fit implicit-feedback ALS on all of DATA and write a tastebud model folder
    (`tastebud recommend FOLDER`, `tastebud serve`, `models.load` read it)."""
    settings = _settings(
        factors, reg, reg_param, alpha, iterations, values, confidence,
        user_exponent, item_exponent, exponent_shift, False, seed, blocks,
    )  # fmt: skip
    with _session(master, conf, checkpoint_dir) as session:
        interactions = _read(session, data, fmt, column, sep, header, on_bad_rows)
        model = _fit(interactions, settings)
        path = model.export(out_dir)
        info = model.info
    typer.echo(
        f"fitted Spark ALS on {info['users']:,} users x {info['items']:,} items, "
        f"{info['interactions']:,} interactions (regParam {info['reg_param']:.4g}) "
        f"in {info['fit_seconds']:.1f} s; saved to {path}"
    )


@spark_app.command("evaluate")
def evaluate(
    data: DataArg,
    master: MasterOpt = "local[*]",
    conf: ConfOpt = None,
    checkpoint_dir: CheckpointOpt = None,
    fmt: FormatOpt = "auto",
    column: ColumnsOpt = None,
    sep: SepOpt = None,
    header: HeaderOpt = None,
    on_bad_rows: BadRowsOpt = "raise",
    test_size: Annotated[float, typer.Option(min=0, max=1, help="test share per user")] = 0.2,
    k: KOpt = 10,
    metric: Annotated[
        list[str] | None,
        typer.Option("--metric", metavar="NAME", help="ranking metric (repeatable)"),
    ] = None,
    relevance_threshold: Annotated[
        float | None, typer.Option(metavar="RATING", help="relevant: test ratings >= this")
    ] = None,
    factors: FactorsOpt = 64,
    reg: RegOpt = 30.0,
    reg_param: RegParamOpt = None,
    alpha: AlphaOpt = 2.5,
    iterations: IterOpt = 15,
    values: ValuesOpt = "auto",
    confidence: ConfidenceOpt = "log",
    user_exponent: UserExpOpt = -0.5,
    item_exponent: ItemExpOpt = -0.3,
    exponent_shift: ShiftOpt = 0.5,
    explicit: ExplicitOpt = False,
    seed: SeedOpt = 0,
    blocks: BlocksOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Split DATA per user (random, by --test-size), fit on the train part and score the
    test part in Spark with tastebud's metric definitions."""
    from tastebud.metrics.ranking import RANKING_METRICS
    from tastebud.spark.metrics import DEFAULT_METRICS

    names = [m.lower() for m in (metric or DEFAULT_METRICS)]
    for name in names:
        if name not in RANKING_METRICS:
            raise InvalidInputError(
                f"--metric {name}: unknown metric; choose from {', '.join(RANKING_METRICS)}"
            )
    settings = _settings(
        factors, reg, reg_param, alpha, iterations, values, confidence,
        user_exponent, item_exponent, exponent_shift, explicit, seed, blocks,
    )  # fmt: skip
    from tastebud.spark.evaluation import evaluate as evaluate_model
    from tastebud.spark.io import random_split

    with _session(master, conf, checkpoint_dir) as session:
        interactions = _read(session, data, fmt, column, sep, header, on_bad_rows)
        train, test = random_split(interactions, test_size, seed=seed)
        model = _fit(train, settings)
        summary, _per_user = evaluate_model(
            model, test, k=k, metrics=names, relevance_threshold=relevance_threshold
        )
        summary["fit_seconds"] = float(model.info["fit_seconds"])
        summary["reg_param"] = float(model.info["reg_param"])
    if as_json:
        typer.echo(json.dumps({k: None if math.isnan(v) else v for k, v in summary.items()}))
        return
    typer.echo(f"Spark ALS on {data} (random split {test_size:g}, seed {seed})")
    width = max(len(name) for name in summary)
    for name, value in summary.items():
        shown = f"{int(value):,}" if name in ("users", "predicted_rows") else f"{value:.4f}"
        typer.echo(f"{name:<{width}}  {shown}")


@spark_app.command("recommend")
def recommend(
    data: DataArg,
    output: Annotated[
        str, typer.Option("--out", metavar="PATH", help="Parquet folder to write (local or URI)")
    ],
    master: MasterOpt = "local[*]",
    conf: ConfOpt = None,
    checkpoint_dir: CheckpointOpt = None,
    fmt: FormatOpt = "auto",
    column: ColumnsOpt = None,
    sep: SepOpt = None,
    header: HeaderOpt = None,
    on_bad_rows: BadRowsOpt = "raise",
    k: KOpt = 10,
    include_seen: Annotated[
        bool, typer.Option("--include-seen", help="also recommend items the user already has")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="replace --out if it exists")
    ] = False,
    factors: FactorsOpt = 64,
    reg: RegOpt = 30.0,
    reg_param: RegParamOpt = None,
    alpha: AlphaOpt = 2.5,
    iterations: IterOpt = 15,
    values: ValuesOpt = "auto",
    confidence: ConfidenceOpt = "log",
    user_exponent: UserExpOpt = -0.5,
    item_exponent: ItemExpOpt = -0.3,
    exponent_shift: ShiftOpt = 0.5,
    explicit: ExplicitOpt = False,
    seed: SeedOpt = 0,
    blocks: BlocksOpt = None,
) -> None:
    """Fit ALS on DATA and write every user's top K (user, item, score, rank) as Parquet."""
    settings = _settings(
        factors, reg, reg_param, alpha, iterations, values, confidence,
        user_exponent, item_exponent, exponent_shift, explicit, seed, blocks,
    )  # fmt: skip
    with _session(master, conf, checkpoint_dir) as session:
        interactions = _read(session, data, fmt, column, sep, header, on_bad_rows)
        model = _fit(interactions, settings)
        top = model.recommend(k, exclude_seen=not include_seen)
        writer = top.write.mode("overwrite" if overwrite else "errorifexists")
        try:
            writer.parquet(output)
        except Exception as err:  # noqa: BLE001 -- Spark's writers fail in many ways
            from tastebud.spark._session import spark_error

            text = spark_error(err)
            if "PATH_ALREADY_EXISTS" in text or "already exists" in text:
                raise InvalidInputError(
                    f"--out {output} exists; pass --overwrite to replace it"
                ) from None
            raise TastebudError(f"--out {output}: cannot write: {text}") from None
    typer.echo(f"wrote the top {k} of {model.info['users']:,} users to {output}")
