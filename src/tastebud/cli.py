"""The ``tastebud`` command line (typer): demo, datasets, evaluate, tune, fit, recommend,
import, serve.

Every error a user can cause ends as one line on stderr and exit code 2 -- never a traceback.

One module (~1,350 lines) because the commands share what they are made of -- the data
flags and their reader, model specs and ``--param``, the error translation to flags, the
leaderboard printing -- and each command is a thin function over the library; a command
that grows an idea of its own belongs in the library, not here.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import shlex
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tastebud._io import output_folder, to_json
from tastebud.data.catalog import DATASETS, load_dataset
from tastebud.data.dataset import Dataset
from tastebud.data.files import read_interactions
from tastebud.errors import DataError, InvalidInputError, TastebudError
from tastebud.spark.cli import spark_app  # PySpark is imported only inside its commands

if TYPE_CHECKING:
    from tastebud.split import Split
    from tastebud.tuning import TuningResult

app = typer.Typer(
    help="tastebud: fit recommenders, prove how good they are, and serve them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: flags without a value placeholder, no boxes
)
#: Plain text: ids and titles print as they are (no rich markup like "[Live]" eaten), and a
#: line stays one line when piped or on a narrow terminal.
out = Console(soft_wrap=True, markup=False, highlight=False)


# -- shared helpers ------------------------------------------------------------------------------
def _parse_models(models: list[str], params: list[str]) -> dict[str, Any]:
    """``--model name[:k=v,k=v]`` plus ``--param [name.]k=v`` -> {label: model}, the
    parameters checked now (not at the first fit), each error naming the flag that set the
    value."""
    from tastebud.models import create
    from tastebud.models.registry import parse_params

    specs: list[tuple[str, dict[str, str], dict[str, str]]] = []  # name, pairs, flag of each
    for spec in models:
        name, _, inline = spec.partition(":")
        name = name.strip()
        _model_class(name, f"--model {spec}")
        pairs = dict(_split_pair(p) for p in inline.split(",") if p.strip())
        specs.append((name, pairs, dict.fromkeys(pairs, f"--model {spec}")))
    for param in params:
        key, value = _split_pair(param)
        target, dot, field = key.rpartition(".")
        wanted = _model_class(target, f"--param {param}").name if dot else None
        matched = False
        for name, pairs, flags in specs:
            cls = _model_class(name, "")
            if (wanted and cls.name != wanted) or (not dot and field not in _fields(cls)):
                continue
            pairs[field], flags[field] = value, f"--param {param}"
            matched = True
        if not matched:
            raise InvalidInputError(f"--param {param}: no chosen model has a parameter {field!r}")
    result: dict[str, Any] = {}
    for name, pairs, flags in specs:
        label = name if not pairs else f"{name}({', '.join(f'{k}={v}' for k, v in pairs.items())})"
        try:
            result[label] = create(name, **parse_params(name, pairs))
            result[label]._validate()  # what fit would refuse, refused before any work
        except InvalidInputError as err:
            # the flag that set the parameter the message names, else the model's own
            named = [f for key, f in flags.items() if re.search(rf"\b{re.escape(key)}\b", str(err))]
            raise InvalidInputError(f"{(named or [f'--model {name}'])[0]}: {err}") from None
    return result


def _model_class(name: str, flag: str) -> Any:
    """The registered class of ``name``; unknown: an error naming ``flag`` as typed."""
    from tastebud.models import get_class

    try:
        return get_class(name)
    except InvalidInputError as err:
        raise InvalidInputError(f"{flag}: {err}") from None


def _fields(cls: Any) -> set[str]:
    return set(cls.__dataclass_fields__)


def _check_metrics(names: list[str], also: tuple[str, ...] = ()) -> None:
    """``--metric``: ranking metric names (and ``also`` these)."""
    from tastebud.metrics.ranking import RANKING_METRICS

    known = [*RANKING_METRICS, *also]
    for name in names:
        if name.lower() not in known:
            raise InvalidInputError(
                f"--metric {name}: unknown metric; choose from {', '.join(known)}"
            )


def _binarized(ds: Dataset, threshold: float | None) -> Dataset:
    """``--binarize``: ratings >= threshold as implicit positives (an error, naming the
    flag, when nothing is left)."""
    if threshold is None:
        return ds
    out = ds.to_implicit(threshold)
    if len(out) == 0:
        raise InvalidInputError(
            f"--binarize {threshold:g}: no rating in {ds.name} is >= {threshold:g}, so nothing "
            "is left to train on"
        )
    return out


def _check_attribute(ds: Dataset, name: str | None) -> None:
    """``--fairness-by``: the column must be a user attribute of the training data."""
    columns = [] if ds.user_features is None else [str(c) for c in ds.user_features.columns]
    if name is not None and name not in columns:
        known = f"attributes: {', '.join(columns)}" if columns else "it has no user attributes"
        raise InvalidInputError(
            f"--fairness-by {name}: {ds.name} has no such user attribute ({known})"
        )


def _split_pair(text: str) -> tuple[str, str]:
    key, eq, value = text.partition("=")
    if not eq or not key.strip():
        raise InvalidInputError(f"expected key=value, got {text!r}")
    return key.strip(), value.strip()


_ROLES = ("user", "item", "rating", "weight", "timestamp")


#: The reader's messages name its Python arguments (``encoding='latin-1'``, ``sep=...``); on
#: the command line they read as the flags that set them.
_READING_FLAGS: tuple[tuple[re.Pattern[str], Any], ...] = (
    (
        re.compile(r"\b(on_bad_rows|encoding)='([^']*)'"),
        lambda m: f"--{m[1].replace('_', '-')} {m[2]}",
    ),
    (re.compile(r"\bsep=\.\.\."), "--sep SEP"),
    (re.compile(r"\b(?:user|item|rating|weight|timestamp)=\.\.\. or "), ""),  # "or --column"
)


@dataclass(frozen=True)
class _Reading:
    """How to read interaction files: the --column, --sep, --encoding, --header and
    --on-bad-rows options shared by every command that reads data."""

    columns: dict[str, str | None]
    sep: str | None
    encoding: str
    header: bool | None
    on_bad_rows: str

    @classmethod
    def from_options(
        cls,
        column: list[str] | None,
        sep: str | None,
        encoding: str,
        header: bool | None,
        on_bad_rows: str,
    ) -> _Reading:
        columns: dict[str, str | None] = dict.fromkeys(_ROLES)
        for pair in column or []:
            role, name = _split_pair(pair)
            if role not in columns:
                raise InvalidInputError(f"--column {pair}: role must be one of {', '.join(_ROLES)}")
            columns[role] = name
        return cls(columns, sep, encoding, header, on_bad_rows)

    def flags(self) -> list[str]:
        """The command-line flags that give this way of reading (non-defaults only)."""
        words = [w for role, name in self.columns.items() if name for w in ("-c", f"{role}={name}")]
        if self.sep is not None:
            words += ["--sep", self.sep]
        if self.encoding != "utf-8":
            words += ["--encoding", self.encoding]
        if self.header is not None:
            words.append("--header" if self.header else "--no-header")
        if self.on_bad_rows != "raise":
            words += ["--on-bad-rows", self.on_bad_rows]
        return words

    def read(self, path: Path) -> Dataset:
        try:
            return read_interactions(
                path,
                user=self.columns["user"],
                item=self.columns["item"],
                rating=self.columns["rating"],
                weight=self.columns["weight"],
                timestamp=self.columns["timestamp"],
                sep=self.sep,
                encoding=self.encoding,
                header=self.header,
                on_bad_rows=self.on_bad_rows,  # type: ignore[arg-type]
            )
        except DataError as err:
            problem = err.problem
            for python, flag in _READING_FLAGS:
                problem = python.sub(flag, problem)
            raise DataError(problem, source=err.source, line=err.line, column=err.column) from None

    def load(self, dataset: str | None, data: Path | None) -> Dataset:
        if (dataset is None) == (data is None):
            raise InvalidInputError("give either --dataset NAME or --data FILE")
        if data is not None:
            return self.read(data)
        try:
            return load_dataset(dataset)  # type: ignore[arg-type]
        except InvalidInputError as err:
            raise InvalidInputError(f"--dataset {dataset}: {err}") from None


def _print_board(board: pd.DataFrame) -> None:
    """The leaderboard in the terminal: the report's main columns (plus rating errors when
    models predict ratings), numbers formatted as the report formats them."""
    from tastebud.report import column_title, format_value, main_columns

    columns = main_columns(board) + [
        c for c in ("RMSE", "MAE") if c in board.columns and board[c].notna().any()
    ]
    rows = [[str(m)] + [format_value(c, row[c]) for c in columns] for m, row in board.iterrows()]
    titles = ["model"] + [column_title(c) for c in columns]
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for i, title in enumerate(titles):
        table.add_column(title, justify="left" if i == 0 else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    widths = [max(len(cells[i]) for cells in [titles, *rows]) for i in range(len(titles))]
    # as wide as the numbers need, whatever the terminal: a squeezed number is a wrong one
    Console(width=sum(widths) + 2 * len(widths), markup=False, highlight=False).print(table)


def _fraction(value: float) -> float:
    if not 0 < value < 1:
        raise typer.BadParameter(f"{value:g} is not strictly between 0 and 1")
    return value


def _check_encoding(value: str) -> str:
    try:
        codecs.lookup(value)
    except LookupError:
        raise typer.BadParameter(
            f"{value!r} is not a text encoding (e.g. utf-8, latin-1)"
        ) from None
    return value


SepOpt = Annotated[
    str | None, typer.Option(metavar="SEP", help="field separator (sniffed if omitted)")
]
EncodingOpt = Annotated[
    str,
    typer.Option(
        metavar="ENCODING",
        callback=_check_encoding,
        help="text encoding of data files, e.g. latin-1",
    ),
]
HeaderOpt = Annotated[
    bool | None,
    typer.Option("--header/--no-header", help="whether files start with a header (guessed)"),
]
BadRowsOpt = Annotated[
    Literal["raise", "skip"],
    typer.Option(help="raise: stop at the first bad row; skip: drop and count bad rows"),
]
ColumnsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--column",
        "-c",
        metavar="ROLE=NAME",
        help="e.g. user=userId (roles: user, item, rating, weight, timestamp); "
        "inferred from the file's header when omitted",
    ),
]
KOpt = Annotated[int, typer.Option("--k", min=1, metavar="K", help="list length")]
DatasetOpt = Annotated[
    str | None, typer.Option(metavar="NAME", help="named data set (see `tastebud datasets`)")
]
DataOpt = Annotated[Path | None, typer.Option(metavar="FILE", help="interactions file")]
ParamOpt = Annotated[
    list[str] | None,
    typer.Option("--param", "-p", metavar="KEY=VALUE", help="model parameter (or model.key=value)"),
]
BinarizeOpt = Annotated[
    float | None,
    typer.Option(metavar="RATING", help="train on ratings >= this as implicit positives"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON only")]
TrackOpt = Annotated[
    Literal["mlflow"] | None,
    typer.Option(help="log the run to a tracker (pip install 'tastebud[tracking]')"),
]
TrackUriOpt = Annotated[
    str | None,
    typer.Option(
        metavar="URI",
        help="tracking store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)",
    ),
]
ExperimentOpt = Annotated[
    str, typer.Option(metavar="NAME", help="the tracker's experiment to log into")
]


def _check_tracking(track: str | None) -> None:
    """Before any fitting: a missing tracker package is a one-line error now, not after an
    hour of work."""
    if track is not None:
        from tastebud.tracking import check_tracker

        check_tracker(track)


# -- commands ------------------------------------------------------------------------------------
@app.command()
def demo(
    out_dir: Annotated[
        Path, typer.Option("--out", metavar="FOLDER", help="folder for the report")
    ] = Path("tastebud-report"),
    k: KOpt = 10,
    model: Annotated[
        list[str] | None,
        _listing_option(
            "model",
            "--model",
            "-m",
            help="fit only these models (repeatable; default: every model installed)",
        ),
    ] = None,
) -> None:
    """Build the sample music store, fit every installed model, print a leaderboard, write a
    report."""
    from tastebud.data.sample import load_sample
    from tastebud.evaluation import evaluate, leaderboard
    from tastebud.report import write_report
    from tastebud.split import random_split

    models, skipped = _demo_models(model)
    ds = load_sample()
    out.print(Text.assemble(("tastebud demo", "bold"), f" -- {ds}"))
    if skipped:
        out.print(skipped)
    split = random_split(ds, 0.2, seed=0)
    results = evaluate(models, split, k=k, fairness_by="gender")
    board = leaderboard(results)
    _print_board(board)
    paths = write_report(
        results, out_dir, title="tastebud demo: music store", dataset=ds.describe()
    )
    best = str(board.index[0])
    chosen = models[best]
    user = split.test["user"].iloc[0]
    recs = chosen.recommend(user, k=5)
    out.print(
        Text.assemble(f"\nTop 5 for listener {user} by the best model, ", (best, "bold"), ":")
    )
    reasons = (
        chosen.explain(user, recs["item"])["reason"].tolist()
        if chosen.can_explain
        else [""] * len(recs)
    )
    for rank, item, why in zip(recs["rank"], recs["item"], reasons, strict=True):
        out.print(f"  {rank}. {item}" + (f"  -- {why}" if why else ""))
    out.print(f"\nReport: {paths['markdown']} (plots: {paths['plot']}, data: {paths['json']})")


def _demo_models(names: list[str] | None) -> tuple[dict[str, Any], str]:
    """The demo's models -- those named, else every registered model whose extra is
    installed -- and one line naming the models left out and how to add them."""
    from tastebud.models import available, create, get_class

    wanted = [_model_class(n, f"--model {n}").name for n in names] if names else available()
    models: dict[str, Any] = {}
    left_out: dict[str, list[str]] = {}
    for name in wanted:
        hint = get_class(name).missing_extra()
        if hint is None:
            models[name] = create(name)
        elif names:
            raise InvalidInputError(f"--model {name} needs an extra: {hint}")
        else:
            left_out.setdefault(hint, []).append(name)
    line = "; ".join(f"{', '.join(n)} (add with: {hint})" for hint, n in left_out.items())
    n = sum(map(len, left_out.values()))
    return models, f"skipped {n} model{'s' if n > 1 else ''}: {line}" if line else ""


@app.command()
def datasets() -> None:
    """List the named data sets and whether they are available here."""
    table = Table("name", "description", "where", "available")
    for d in DATASETS.values():
        table.add_row(d.name, d.description, d.location(), "yes" if d.available() else "no")
    out.print(table)
    out.print("Reference data are read from TASTEBUD_DATA (or ../shared/data); files with --data.")


# Over 80 lines for its flags: the typer options are the signature (~70 lines), the body ~50.
@app.command()
def evaluate(
    model: Annotated[
        list[str],
        _listing_option(
            "model",
            "--model",
            "-m",
            metavar="NAME[:KEY=VALUE,...]",
            help="model, optionally with parameters (repeatable)",
        ),
    ],
    dataset: DatasetOpt = None,
    data: Annotated[
        Path | None, typer.Option(metavar="FILE", help="interactions file to split")
    ] = None,
    train: Annotated[
        Path | None, typer.Option(metavar="FILE", help="training interactions file")
    ] = None,
    test: Annotated[
        Path | None, typer.Option(metavar="FILE", help="test interactions file (with --train)")
    ] = None,
    split: Annotated[
        Literal["random", "temporal", "leave-last-out", "cold-user", "cold-item"],
        typer.Option(help="how to split --data or --dataset into train and test"),
    ] = "random",
    test_size: Annotated[
        float,
        typer.Option(
            callback=_fraction, metavar="FRACTION", help="share of each user's data held out"
        ),
    ] = 0.2,
    seed: Annotated[int, typer.Option(min=0, metavar="SEED", help="random seed of the split")] = 0,
    param: ParamOpt = None,
    k: KOpt = 10,
    metric: Annotated[
        list[str] | None, _listing_option("metric", "--metric", help="ranking metric (repeatable)")
    ] = None,
    relevance_threshold: Annotated[
        float | None,
        typer.Option(
            metavar="RATING", help="test ratings >= this are relevant (default: all test items)"
        ),
    ] = None,
    binarize: BinarizeOpt = None,
    fairness_by: Annotated[
        str | None, typer.Option(metavar="COLUMN", help="user attribute to compare groups by")
    ] = None,
    beyond: Annotated[bool, typer.Option(help="beyond-accuracy metrics")] = True,
    pipeline: Annotated[
        str | None,
        typer.Option(
            metavar="FILE|default",
            help="score the lists the service shows: the pipeline of this settings file "
            "(what 'tastebud serve --config' reads), or 'default'",
        ),
    ] = None,
    as_json: JsonOpt = False,
    report: Annotated[
        Path | None, typer.Option(metavar="FOLDER", help="write a report folder")
    ] = None,
    track: TrackOpt = None,
    track_uri: TrackUriOpt = None,
    experiment: ExperimentOpt = "tastebud",
    column: ColumnsOpt = None,
    sep: SepOpt = None,
    encoding: EncodingOpt = "utf-8",
    header: HeaderOpt = None,
    on_bad_rows: BadRowsOpt = "raise",
) -> None:
    """Fit models on a training set and score their top-k lists on a test set."""
    from tastebud.evaluation import DEFAULT_METRICS
    from tastebud.evaluation import evaluate as run_evaluation
    from tastebud.pipeline import load_config

    reading = _Reading.from_options(column, sep, encoding, header, on_bad_rows)
    models = _parse_models(model, param or [])
    _check_metrics(metric or [])
    _check_tracking(track)
    config = None
    if pipeline is not None:
        try:
            config = load_config(None if pipeline == "default" else Path(pipeline))
        except InvalidInputError as err:
            raise InvalidInputError(f"--pipeline {err}") from None
    the_split, data_summary, title = _evaluation_split(
        reading, dataset, data, train, test, split, test_size, seed, binarize
    )
    _check_attribute(the_split.train, fairness_by)
    results = run_evaluation(
        models,
        the_split,
        metrics=metric or DEFAULT_METRICS,
        k=k,
        relevance_threshold=relevance_threshold,
        beyond_accuracy=beyond,
        fairness_by=fairness_by,
        progress=None if not as_json else False,
        pipeline=config,
    )
    if report is not None:
        from tastebud.report import write_report

        write_report(results, report, title=title, dataset=data_summary)
    tracked: dict[str, str] = {}
    if track is not None:
        from tastebud.tracking import log_evaluation

        run_id = log_evaluation(
            results,
            models=models,
            report_dir=report,
            title=title,
            dataset=data_summary,
            tracking_uri=track_uri,
            experiment=experiment,
        )
        tracked = _tracked(run_id, track_uri, experiment)
    _show_evaluation(results, tracked, as_json=as_json)


def _evaluation_split(
    reading: _Reading,
    dataset: str | None,
    data: Path | None,
    train: Path | None,
    test: Path | None,
    split: str,
    test_size: float,
    seed: int,
    binarize: float | None,
) -> tuple[Split, dict[str, Any], str]:
    """``evaluate``'s split -- the --train and --test files, or --data/--dataset split by
    --split; its training part --binarize'd -- with the data's summary and the report's
    title."""
    from tastebud.split import SPLITTERS, Split

    if train is not None or test is not None:
        if train is None or test is None or dataset is not None or data is not None:
            raise InvalidInputError("--train and --test go together, without --dataset/--data")
        train_ds = reading.read(train)
        test_table = reading.read(test).interactions
        the_split = Split(train=train_ds, test=test_table, name=f"{train.name} / {test.name}")
        data_summary, title = train_ds.describe(), f"tastebud evaluation: {the_split.name}"
    else:
        ds = reading.load(dataset, data)
        splitter = SPLITTERS[split]
        if split == "leave-last-out":
            the_split = splitter(ds)
        elif split == "temporal":
            the_split = splitter(ds, test_size)
        else:
            the_split = splitter(ds, test_size, seed=seed)
        data_summary, title = ds.describe(), f"tastebud evaluation: {ds.name}, {the_split.name}"
    if binarize is not None:
        the_split = Split(
            train=_binarized(the_split.train, binarize), test=the_split.test, name=the_split.name
        )
    return the_split, data_summary, title


def _show_evaluation(results: pd.DataFrame, tracked: dict[str, str], *, as_json: bool) -> None:
    """``evaluate``'s answer: the protocol and results as JSON, or the leaderboard."""
    from tastebud.evaluation import leaderboard

    if as_json:
        payload = {
            "protocol": results.attrs["protocol"],
            "results": {
                label: dict(zip(g["metric"], g["value"], strict=True))
                for label, g in results.groupby("model", sort=False)
            },
        }
        sys.stdout.write(to_json(payload | ({"tracking": tracked} if tracked else {})) + "\n")
        return
    board = leaderboard(results)
    _print_board(board)
    protocol = results.attrs["protocol"]
    out.print(", ".join(f"{key}: {value}" for key, value in protocol.items()))
    if tracked:
        out.print(_tracked_line(tracked))


def _tracked(run_id: str, track_uri: str | None, experiment: str) -> dict[str, str]:
    """Where ``--track mlflow`` logged: the store, the experiment, the run, how to look."""
    from tastebud.tracking import browse_command, store_uri

    uri = store_uri(track_uri)
    return {"uri": uri, "experiment": experiment, "run_id": run_id, "browse": browse_command(uri)}


def _tracked_line(tracked: dict[str, str]) -> str:
    return (
        f"logged to MLflow: run {tracked['run_id']} in experiment {tracked['experiment']!r} "
        f"at {tracked['uri']}; to browse: {tracked['browse']}"
    )


@app.command()
def fit(
    model: Annotated[
        str,
        _listing_option(
            "model",
            "--model",
            "-m",
            metavar="NAME[:KEY=VALUE,...]",
            help="model, optionally with parameters",
        ),
    ],
    out_dir: Annotated[
        Path, typer.Option("--out", metavar="FOLDER", help="folder to write the model to")
    ],
    dataset: DatasetOpt = None,
    data: DataOpt = None,
    param: ParamOpt = None,
    binarize: BinarizeOpt = None,
    column: ColumnsOpt = None,
    sep: SepOpt = None,
    encoding: EncodingOpt = "utf-8",
    header: HeaderOpt = None,
    on_bad_rows: BadRowsOpt = "raise",
) -> None:
    """Fit one model on all the data and save it to a folder."""
    reading = _Reading.from_options(column, sep, encoding, header, on_bad_rows)
    ds = reading.load(dataset, data)
    ds = _binarized(ds, binarize)
    ((_label, recommender),) = _parse_models([model], param or []).items()
    recommender.fit(ds)
    path = recommender.save(out_dir)
    out.print(f"fitted {recommender!r} on {ds}; saved to {path}")


# Over 80 lines for its flags: the typer options are the signature (~50 lines), the body ~40.
@app.command()
def tune(
    model: Annotated[str, _listing_option("model", "--model", "-m", help="model to tune")],
    dataset: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="named data set (a validation part is carved from it)"),
    ] = None,
    data: Annotated[
        Path | None, typer.Option(metavar="FILE", help="training interactions file")
    ] = None,
    trials: Annotated[int, typer.Option(min=1, metavar="N", help="settings to try")] = 20,
    metric: Annotated[
        str, typer.Option(metavar="NAME", help="ndcg, recall, map... or rmse/mae")
    ] = "ndcg",
    k: KOpt = 10,
    relevance_threshold: Annotated[
        float | None,
        typer.Option(metavar="RATING", help="validation ratings >= this are relevant"),
    ] = None,
    binarize: BinarizeOpt = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", metavar="KEY=VALUE", help="a parameter held fixed"),
    ] = None,
    seed: Annotated[
        int,
        typer.Option(min=0, metavar="SEED", help="seed of the validation split and the search"),
    ] = 0,
    sampler: Annotated[
        Literal["tpe", "random"],
        typer.Option(help="how settings are chosen: Optuna's TPE, or random search"),
    ] = "tpe",
    prune: Annotated[
        bool, typer.Option(help="stop a trial early when its running score is hopeless")
    ] = True,
    timeout: Annotated[
        float | None,
        typer.Option(min=0, metavar="SECONDS", help="start no new trial after this long"),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", metavar="FOLDER", help="fit the best setting and save it here"),
    ] = None,
    as_json: JsonOpt = False,
    track: TrackOpt = None,
    track_uri: TrackUriOpt = None,
    experiment: ExperimentOpt = "tastebud",
    column: ColumnsOpt = None,
    sep: SepOpt = None,
    encoding: EncodingOpt = "utf-8",
    header: HeaderOpt = None,
    on_bad_rows: BadRowsOpt = "raise",
) -> None:
    """Search hyper-parameters (Optuna) on a validation split carved from the training data
    only; prints the best setting as a command that fits it."""
    from tastebud.tuning import DEFAULT_SPACES
    from tastebud.tuning import tune as run_tune

    _check_tracking(track)
    ((_label, chosen),) = _parse_models([model], param or []).items()
    if chosen.name not in DEFAULT_SPACES:
        raise InvalidInputError(
            f"--model {model}: tune has no search space for {chosen.name}; it tunes "
            f"{', '.join(sorted(DEFAULT_SPACES))}"
        )
    _check_metrics([metric], also=("rmse", "mae"))
    given = [*model.partition(":")[2].split(","), *(param or [])]  # -m name:k=v and -p k=v
    held = [_split_pair(p)[0].rpartition(".")[2] for p in given if p.strip()]
    fixed = {name: getattr(chosen, name) for name in held}
    reading = _Reading.from_options(column, sep, encoding, header, on_bad_rows)
    ds = _binarized(reading.load(dataset, data), binarize)
    result = run_tune(
        chosen.name,
        ds,
        n_trials=trials,
        metric=metric,
        k=k,
        relevance_threshold=relevance_threshold,
        fixed=fixed,
        seed=seed,
        sampler=sampler,
        pruning=prune,
        timeout=timeout,
        progress=None if not as_json else False,
    )
    if out_dir is not None:
        result.best_model().fit(ds).save(out_dir)
    tracked: dict[str, str] = {}
    if track is not None:
        from tastebud.tracking import log_tuning

        run_id = log_tuning(result, tracking_uri=track_uri, experiment=experiment)
        tracked = _tracked(run_id, track_uri, experiment)
    fit_line = _fit_command(result.model, result.best_params, dataset, data, binarize, reading)
    _show_tuning(result, fit_line, tracked, out_dir=out_dir, data=ds.name, as_json=as_json)


def _show_tuning(
    result: TuningResult,
    fit_line: str,
    tracked: dict[str, str],
    *,
    out_dir: Path | None,
    data: str,
    as_json: bool,
) -> None:
    """``tune``'s answer: the search as JSON, or the best trials, the best score, the command
    that fits it (and where the best setting, fitted on ``data``, was saved)."""
    if as_json:
        payload = {
            "model": result.model,
            "metric": result.metric,
            "best_params": result.best_params,
            "best_score": result.best_score,
            "fit_command": fit_line,
            "protocol": result.protocol,
            "trials": result.trials.to_dict(orient="records"),
        } | ({"tracking": tracked} if tracked else {})
        sys.stdout.write(to_json(payload) + "\n")
        return
    _print_trials(result.trials)
    pruned = f", {result.n_pruned} of {len(result.trials)} trials pruned" if result.n_pruned else ""
    out.print(f"best {result.metric} on validation: {result.best_score:.4f}{pruned}")
    out.print(f"fit it: {fit_line}")
    if out_dir is not None:
        out.print(f"fitted the best setting on all of {data}; saved to {out_dir}")
    if tracked:
        out.print(_tracked_line(tracked))


def _print_trials(trials: pd.DataFrame, rows: int = 10) -> None:
    table = Table(*[str(c) for c in trials.columns], box=None)
    for row in trials.head(rows).itertuples(index=False):
        table.add_row(*[_cell(v) for v in row])
    Console(width=max(out.width, 160), markup=False, highlight=False).print(table)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "-" if value != value else f"{value:.4g}"  # NaN: a default of None, or pruned
    return str(value)


def _fit_command(
    model: str,
    params: dict[str, Any],
    dataset: str | None,
    data: Path | None,
    binarize: float | None,
    reading: _Reading,
) -> str:
    """``tastebud fit ...`` that fits ``model`` with ``params`` on the data tune read: a line
    to copy and paste (values exact, so the fit is the one that scored)."""

    def text(value: Any) -> str:
        if isinstance(value, tuple | list):
            return "|".join(text(v) for v in value)
        return "none" if value is None else repr(value) if isinstance(value, float) else str(value)

    spec = model + (":" + ",".join(f"{k}={text(v)}" for k, v in params.items()) if params else "")
    words = ["tastebud", "fit", "--model", spec]
    words += ["--dataset", dataset] if dataset is not None else ["--data", str(data)]
    words += reading.flags()
    if binarize is not None:
        words += ["--binarize", f"{binarize:g}"]
    words += ["--out", "model/"]
    return shlex.join(words)


@app.command()
def recommend(
    model_dir: Annotated[
        Path, typer.Argument(metavar="MODEL_DIR", help="folder written by `tastebud fit`")
    ],
    user: Annotated[
        list[str] | None,
        typer.Option("--user", "-u", metavar="ID", help="user id (repeatable)"),
    ] = None,
    users_file: Annotated[
        Path | None, typer.Option(metavar="FILE", help="file with one user id per line")
    ] = None,
    all_users: Annotated[
        bool, typer.Option("--all-users", help="every user the model knows")
    ] = False,
    k: KOpt = 10,
    include_seen: Annotated[
        bool, typer.Option("--include-seen", help="also recommend items the user already has")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option("--out", metavar="FILE", help="write .csv or .json (default: CSV to stdout)"),
    ] = None,
) -> None:
    """Recommend with a saved model: CSV (or JSON) of user, item, title (when the training
    data had titles), score, rank."""
    from tastebud.models import load

    if output is not None and (output.is_dir() or output.suffix.lower() not in (".csv", ".json")):
        what = "is a folder" if output.is_dir() else "names no known format"
        raise InvalidInputError(f"--out {output} {what}; give a file ending .csv or .json")
    ids: list[Any] = list(user or [])
    if users_file is not None:
        if not users_file.is_file():
            raise InvalidInputError(f"--users-file {users_file}: no such file")
        ids += [line.strip() for line in users_file.read_text().splitlines() if line.strip()]
    recommender = load(model_dir)
    if all_users:
        ids = recommender.users_.ids.tolist()
    elif not ids:
        raise InvalidInputError("name users with --user, --users-file or --all-users")
    ids, unknown = _model_ids(recommender.users_, ids)
    if unknown:
        sys.stderr.write(f"warning: {unknown} unknown user(s) got the fallback (popular) list\n")
    recs = recommender.recommend(ids, k=k, exclude_seen=not include_seen)
    titles = recommender.item_titles(recs["item"])
    if any(t is not None for t in titles):
        recs.insert(2, "title", titles)
    recs["score"] = [float(f"{v:.6g}") for v in recs["score"]]  # noise digits say nothing
    if output is None:
        recs.to_csv(sys.stdout, index=False)
        return
    output_folder(output.parent)
    if output.suffix.lower() == ".json":
        output.write_text(to_json(recs.to_dict(orient="records")))
    else:
        recs.to_csv(output, index=False)


def _model_ids(ids_map: Any, given: list[Any]) -> tuple[list[Any], int]:
    """Ids as the model holds them (typed command-line text -- "7" -- becomes the model's id,
    7, so JSON output has one id type), and how many the model does not know (integer-like
    text becomes an integer for a model with integer ids)."""
    index = ids_map.to_index(given, on_unknown="ignore")
    known = ids_map.to_ids(index[index >= 0]).tolist()
    integer_ids = ids_map.ids.dtype.kind in "iu"
    out, position = [], 0
    for value, idx in zip(given, index, strict=True):
        if idx >= 0:
            out.append(known[position])
            position += 1
        elif integer_ids and isinstance(value, str) and value.lstrip("-").isdigit():
            out.append(int(value))
        else:
            out.append(value)
    return out, int((index < 0).sum())


DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        metavar="URL",
        help="database URL: sqlite:///file.db (default) or postgresql+psycopg://user@host/db",
    ),
]


@app.command("import")
def import_(
    db: DbOpt = None,
    dataset: DatasetOpt = None,
    data: DataOpt = None,
    event_type: Annotated[
        str,
        typer.Option(
            metavar="TYPE", help="event type of the imported rows (rating, like, view...)"
        ),
    ] = "rating",
    config: Annotated[
        Path | None, typer.Option(metavar="FILE", help="service config file (TOML/JSON)")
    ] = None,
    column: ColumnsOpt = None,
    sep: SepOpt = None,
    encoding: EncodingOpt = "utf-8",
    header: HeaderOpt = None,
    on_bad_rows: BadRowsOpt = "raise",
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="no progress bar (shown only in a terminal)")
    ] = False,
) -> None:
    """Load users, items (with titles) and interactions into the service's database.

    Re-importing the same data adds nothing: every imported row has a stable event id.
    Rows are committed in batches of 250,000 (PostgreSQL: COPY); an import that stops
    half-way keeps the batches before, and running it again adds the rest.
    """
    import time

    from tastebud.service.settings import load_settings
    from tastebud.service.storage import Storage

    settings = load_settings(config, db=db)
    reading = _Reading.from_options(column, sep, encoding, header, on_bad_rows)
    ds = reading.load(dataset, data)
    if event_type not in settings.event_types:
        raise InvalidInputError(
            f"--event-type {event_type!r} is not one of {', '.join(settings.event_types)}"
        )
    with Storage(settings.db) as storage:
        storage.migrate()
        started = time.perf_counter()
        counts = storage.import_dataset(
            ds, event_type=event_type, progress=False if quiet else None
        )
        out.print(
            f"imported {ds.name} into {storage.url}: "
            + ", ".join(f"{v:,} {k}" for k, v in counts.items())
            + f" ({time.perf_counter() - started:.1f} s)",
        )


@app.command()
def serve(
    db: DbOpt = None,
    config: Annotated[
        Path | None, typer.Option(metavar="FILE", help="service config file (TOML/JSON)")
    ] = None,
    host: Annotated[str, typer.Option(metavar="ADDRESS", help="address to listen on")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=1, max=65535, help="port")] = 8000,
    model: Annotated[
        str | None,
        _listing_option("model", "--model", help="model retrained from the events"),
    ] = None,
    sample: Annotated[
        bool, typer.Option("--sample", help="import the built-in music-store sample first")
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            metavar="N",
            help="processes serving requests (one per core; one of them trains at a time)",
        ),
    ] = 1,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="no API keys: anyone who reaches the port can write, delete and retrain",
        ),
    ] = False,
) -> None:
    """Run the HTTP service (API docs at /docs, the web UI at /ui/, health at
    /health/ready).

    Keys: with none configured, an admin key is generated at the first start into
    MODEL_DIR/admin.key and printed once; it guards writes and admin, reads stay open
    (set read_key to guard them). Listening on an address other than loopback needs
    configured keys (api_key or admin_key) or --insecure."""
    import uvicorn

    from tastebud.service import logs
    from tastebud.service.runtime import serving_app
    from tastebud.service.server import is_loopback, uvicorn_options
    from tastebud.service.settings import load_settings

    settings = load_settings(config, db=db, model=model, **({"insecure": True} if insecure else {}))
    if not is_loopback(host) and not (settings.insecure or settings.api_key or settings.admin_key):
        raise InvalidInputError(
            f"--host {host}: refusing to listen beyond this machine without API keys; set "
            "api_key (and read_key) in the config file or TASTEBUD_API_KEY, or pass --insecure"
        )
    _check_serveable(settings.model)
    logs.configure(settings.log_level, settings.log_json)
    storage = _served_storage(settings.db, sample=sample)
    base = f"http://{f'[{host}]' if ':' in host else host}:{port}"  # an IPv6 address: [::1]
    out.print(
        f"tastebud serving {storage.url} on {base} (web UI: {base}/ui/, API docs: {base}/docs)"
    )
    options = uvicorn_options(settings)
    if workers == 1:
        uvicorn.run(serving_app(settings, storage), host=host, port=port, **options)
        storage.close()
        return
    storage.close()
    from tastebud.service.runtime import WORKER_SETTINGS_ENV

    os.environ[WORKER_SETTINGS_ENV] = settings.model_dump_json()
    uvicorn.run(
        "tastebud.service.runtime:worker_app",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        **options,
    )


def _served_storage(db: str, *, sample: bool) -> Any:
    """The service's database, migrated, with the built-in sample imported when asked."""
    from tastebud.service.storage import Storage

    storage = Storage(db)
    storage.migrate()
    if sample:
        from tastebud.data.sample import load_sample

        counts = storage.import_dataset(load_sample(), event_type="rating")
        out.print("sample data: " + ", ".join(f"{n:,} {what}" for what, n in counts.items()))
    return storage


def _check_serveable(model: str) -> None:
    """Refuses a service model whose extra is not installed (it would serve popularity
    forever, saying so only in the log)."""
    from tastebud.models import get_class

    missing = get_class(model).missing_extra()
    if missing is not None:
        raise InvalidInputError(
            f"model {model}: its packages are not installed; add them with {missing}"
        )


experiments_app = typer.Typer(
    help="A/B tests of the service: list, start, stop, report.", no_args_is_help=True
)
app.add_typer(experiments_app, name="experiments")
app.add_typer(spark_app, name="spark")  # tastebud spark fit|evaluate|recommend


def _storage(db: str | None, config: Path | None) -> Any:
    from tastebud.service.settings import load_settings
    from tastebud.service.storage import Storage

    storage = Storage(load_settings(config, db=db).db)
    storage.migrate()
    return storage


ConfigOpt = Annotated[
    Path | None, typer.Option(metavar="FILE", help="service config file (TOML/JSON)")
]


@experiments_app.command("list")
def experiments_list(db: DbOpt = None, config: ConfigOpt = None) -> None:
    """Every experiment with its variants."""
    with _storage(db, config) as storage:
        rows = storage.list_experiments()
    if not rows:
        out.print("no experiments")
    for row in rows:
        variants = ", ".join(
            f"{v['name']} {v['share']:.0%}"
            + (f" (version {v['model_version']})" if v.get("model_version") else "")
            for v in row["variants"]
        )
        out.print(f"{row['name']}  {row['status']}  {variants}")


@experiments_app.command("start")
def experiments_start(
    name: Annotated[str, typer.Argument(metavar="NAME", help="experiment name")],
    variant: Annotated[
        list[str],
        typer.Option(
            metavar="NAME=SHARE[@VERSION]",
            help="a variant's share of users and model version (default: the active one); "
            "repeat for each variant, the first is the control",
        ),
    ],
    db: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Start an A/B test (stops the running one; a serving process follows within 2 s)."""
    from pydantic import ValidationError

    from tastebud.service.schemas import ExperimentIn

    variants = []
    for text in variant:
        vname, _, rest = text.partition("=")
        share, _, version = rest.partition("@")
        try:
            variants.append(
                {
                    "name": vname.strip(),
                    "share": float(share),
                    "model_version": int(version) if version else None,
                }
            )
        except ValueError:
            raise InvalidInputError(
                f"--variant {text!r}: expected NAME=SHARE or NAME=SHARE@VERSION"
            ) from None
    try:
        spec = ExperimentIn.model_validate({"name": name, "variants": variants}, strict=False)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidInputError(f"{where}: {message}") from None
    with _storage(db, config) as storage:
        for v in spec.variants:
            if v.model_version is not None and storage.get_model_version(v.model_version) is None:
                raise InvalidInputError(
                    f"variant {v.name}: unknown model version {v.model_version}"
                )
        storage.create_experiment(spec.name, [v.model_dump() for v in spec.variants])
    out.print(f"experiment {spec.name} running")


@experiments_app.command("stop")
def experiments_stop(
    name: Annotated[str, typer.Argument(metavar="NAME", help="experiment name")],
    db: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Stop an experiment (its logs stay for the report)."""
    with _storage(db, config) as storage:
        storage.stop_experiment(name)
    out.print(f"experiment {name} stopped")


@experiments_app.command("report")
def experiments_report(
    name: Annotated[str, typer.Argument(metavar="NAME", help="experiment name")],
    outcome: Annotated[
        str | None,
        typer.Option(metavar="TYPE", help="feedback type that counts (default click)"),
    ] = None,
    alpha: Annotated[
        float, typer.Option(callback=_fraction, metavar="FRACTION", help="significance level")
    ] = 0.05,
    json_out: JsonOpt = False,
    db: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Per-variant exposures and outcome rate (users with the outcome / users exposed), with
    a significance test between the variants."""
    from tastebud.service.experiments import report

    with _storage(db, config) as storage:
        result = report(storage, name, outcome, alpha)
    if json_out:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for column in ("variant", "users", "exposures", f"{result['outcome']} users", "rate", "lift"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for row in result["variants"]:
        table.add_row(
            row["variant"],
            f"{row['users']:,}",
            f"{row['exposures']:,}",
            f"{row['outcome_users']:,}",
            "-" if row["rate"] is None else f"{row['rate']:.2%}",
            "-" if row["lift"] is None else f"{row['lift']:+.1%}",
        )
    out.print(f"experiment {name} ({result['status']}), outcome: {result['outcome']}")
    out.print(table)
    test = result["test"]
    if test["p_value"] is None:
        out.print(f"{test['method']}: not enough data yet")
    else:
        verdict = "significant" if test["significant"] else "not significant"
        out.print(
            f"{test['method']}: statistic {test['statistic']:.3f}, p = {test['p_value']:.4f} "
            f"-> {verdict} at alpha {test['alpha']}",
        )


models_app = typer.Typer(
    help="The service's model versions: list, register a folder trained elsewhere, activate.",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list(db: DbOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Every model version, oldest first: its model, the events stored when it was made,
    its NDCG@10 on the holdout (or that it came from elsewhere), and whether it serves
    (--json: every field, the folder and all metrics too)."""
    import time

    with _storage(db, config) as storage:
        rows = storage.list_model_versions()
    if as_json:
        sys.stdout.write(to_json(rows) + "\n")
        return
    if not rows:
        out.print("no model versions")
        return
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for column in ("version", "model", "name", "created (UTC)", "events", "ndcg@10", "status"):
        table.add_column(column, justify="right" if column in ("version", "events") else "left")
    for row in rows:
        metrics = row["metrics"] or {}
        ndcg = metrics.get("ndcg@10")
        quality = "external" if metrics.get("external") else "-"
        if isinstance(ndcg, int | float):
            quality = f"{ndcg:.4f}"
        status = "active" if row["active"] else ""
        if row.get("forgotten_at") is not None:
            status = "retired (learned from a deleted user)"
        table.add_row(
            str(row["id"]),
            row["model"],
            str(metrics.get("name") or ""),
            time.strftime("%Y-%m-%d %H:%M", time.gmtime(row["created_at"])),
            f"{row['n_events']:,}",
            quality,
            status,
        )
    out.print(table)


@models_app.command("register")
def models_register(
    folder: Annotated[
        Path,
        typer.Argument(
            metavar="FOLDER",
            help="a saved tastebud model (model.save(path), tastebud spark fit)",
            show_default=False,
        ),
    ],
    activate: Annotated[
        bool,
        typer.Option("--activate", help="serve it now (running services follow within a second)"),
    ] = False,
    name: Annotated[
        str | None,
        typer.Option(metavar="TEXT", help="a label for the version (names its folder)"),
    ] = None,
    db: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Serve a model trained elsewhere (Spark, a notebook): checks the folder, copies it into
    the service's model_dir (the service owns its copy) and records it as a model version.

    Refused: a folder that is not a saved model, a model that cannot recommend from a live
    history, one none of whose items the database stores. A later retrain replaces it as
    it replaces any version; deleting a user with events retires it the same way."""
    from tastebud.service.registration import register_folder
    from tastebud.service.settings import load_settings
    from tastebud.service.storage import Storage

    settings = load_settings(config, db=db)

    def waiting() -> None:
        sys.stderr.write(f"waiting for the retrain under way in {settings.model_dir}\n")

    with Storage(settings.db) as storage:
        storage.migrate()
        done = register_folder(
            settings, storage, folder, name=name, activate=activate, on_wait=waiting
        )
    for line in done.warnings:
        sys.stderr.write(f"warning: {line}\n")
    version = done.version
    state = (
        "active"
        if version["active"]
        else f"not active (serve it with: tastebud models activate {version['id']})"
    )
    out.print(
        f"registered {folder} as model version {version['id']} ({version['model']}, "
        f"{version['metrics']['items']:,} items) in {version['path']}: {state}"
    )


@models_app.command("activate")
def models_activate(
    version: Annotated[
        int, typer.Argument(metavar="ID", min=1, help="model version id (tastebud models list)")
    ],
    db: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Serve a recorded version (a rollback, or a registered model): its files are loaded
    first; running services follow within a second."""
    from tastebud.service.registration import activate_version

    with _storage(db, config) as storage:
        row = activate_version(storage, version)
    out.print(f"model version {row['id']} ({row['model']}) active")


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    sys.stderr.write(f"warning: {message}\n")


def _version(value: bool) -> None:
    if value:
        from tastebud import __version__

        out.print(f"tastebud {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """tastebud: fit recommenders, prove how good they are, and serve them."""


#: Whether options list the model and metric names in their help: only when help is asked
#: for, since listing the models imports every model module (seconds). The annotations of the
#: commands are evaluated when typer builds the command (``from __future__ import
#: annotations``), after :func:`main` has set this.
_help_names = False


def _listing_option(kind: str, *decls: str, help: str, metavar: str = "NAME") -> Any:
    if _help_names:
        help = f"{help} ({_names(kind)})"
    return typer.Option(*decls, help=help, metavar=metavar)


def _names(kind: str) -> str:
    if kind == "model":
        from tastebud.models import available

        return "models: " + ", ".join(available())
    from tastebud.metrics.ranking import RANKING_METRICS

    return "metrics: " + ", ".join(RANKING_METRICS)


def main(argv: list[str] | None = None) -> None:
    """Entry point: every error a user can cause ends as one line ``error: ...`` on stderr
    and exit code 2 (click's usage errors name the flag); an unexpected one is one line and
    exit 1 (``TASTEBUD_DEBUG=1`` shows its traceback)."""
    warnings.showwarning = _show_warning
    args = sys.argv[1:] if argv is None else argv
    global _help_names
    _help_names = "--help" in args
    try:
        code = app(args=args, prog_name="tastebud", standalone_mode=False)
    except _clicks.UsageError as error:  # click's parser: a bad flag value, a missing option...
        if isinstance(error, _NoArgsIsHelp):
            error.show()  # no arguments: the help, as with --help (but exit code 2)
        else:
            sys.stderr.write(f"error: {_usage_line(error, args)}\n")
        raise SystemExit(error.exit_code) from None
    except _clicks.ClickException as error:
        sys.stderr.write(f"error: {_one_line(error.format_message())}\n")
        raise SystemExit(error.exit_code) from None
    except _ABORTS:
        sys.stderr.write("error: aborted\n")
        raise SystemExit(1) from None
    except TastebudError as error:
        sys.stderr.write(f"error: {_one_line(error)}\n")  # one line, never wrapped
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as error:
        if os.environ.get("TASTEBUD_DEBUG"):
            raise
        sys.stderr.write(
            f"error: unexpected {type(error).__name__}: {_one_line(error)} -- this is a bug in "
            "tastebud; "
            "run again with TASTEBUD_DEBUG=1 for the traceback and report it\n"
        )
        raise SystemExit(1) from None
    raise SystemExit(code if isinstance(code, int) else 0)  # --help, --version, typer.Exit


def _one_line(error: object) -> str:
    """An error's message on one line (a wrapped library message folded, whitespace kept
    single)."""
    return " ".join(str(error).split())


#: The exceptions of the click that typer runs on (recent typer releases carry their own copy).
_clicks: Any = sys.modules[typer.BadParameter.__module__]
_NoArgsIsHelp = getattr(_clicks, "NoArgsIsHelpError", ())  # click >= 8.2
_ABORTS = (typer.Abort, getattr(_clicks, "Abort", typer.Abort))


def _usage_line(error: Any, args: list[str]) -> str:
    """Click's usage error as one line that names the flag as typed and where help is:
    ``--test-size: 2 is not strictly between 0 and 1 (see tastebud evaluate --help)``."""
    param = getattr(error, "param", None)
    if isinstance(error, _clicks.MissingParameter) or param is None:
        message = _lower_first(error.format_message())  # "missing option '--model' / '-m'"
    else:  # a value the option refused ("Value error, ": typer's pydantic)
        flags = [o for o in param.opts if o.startswith("--")] or param.opts
        name = flags[0] if flags else param.human_readable_name
        message = f"{name}: {_lower_first(error.message.removeprefix('Value error, '))}"
    message = _one_line(message).rstrip(".")
    where = error.ctx.command_path if error.ctx is not None else _command_path(args)
    return f"{message} (see {where} --help)"


def _command_path(args: list[str]) -> str:
    """``tastebud experiments report``: the (sub)commands named at the start of ``args``, for
    the errors click's parser raises without a context."""
    words, command = ["tastebud"], typer.main.get_command(app)
    for arg in args:  # a group's subcommands are in its .commands
        sub = getattr(command, "commands", {}).get(arg)
        if sub is None:
            break
        words.append(arg)
        command = sub
    return " ".join(words)


def _lower_first(text: str) -> str:
    """``Missing option`` -> ``missing option``, as the other error lines read."""
    return text[:1].lower() + text[1:]
