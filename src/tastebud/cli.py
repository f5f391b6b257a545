"""The ``tastebud`` command line (typer): demo, datasets, evaluate, tune, fit, recommend,
import, serve.

Every error a user can cause ends as one line on stderr and exit code 2 -- never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from tastebud._io import output_folder, to_json
from tastebud.data.catalog import DATASETS, load_dataset
from tastebud.data.dataset import Dataset
from tastebud.data.files import read_interactions
from tastebud.errors import InvalidInputError, TastebudError

app = typer.Typer(
    help="tastebud: fit recommenders, prove how good they are, and serve them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()


# -- shared helpers ------------------------------------------------------------------------------
def _parse_models(models: list[str], params: list[str]) -> dict[str, Any]:
    """``--model name[:k=v,k=v]`` plus ``--param [name.]k=v`` -> {label: model}."""
    from tastebud.models import create
    from tastebud.models.registry import get_class, parse_params

    specs: list[tuple[str, dict[str, str]]] = []
    for spec in models:
        name, _, inline = spec.partition(":")
        pairs = dict(_split_pair(p) for p in inline.split(",") if p.strip())
        specs.append((name.strip(), pairs))
    for param in params:
        key, value = _split_pair(param)
        target, dot, field = key.rpartition(".")
        matched = False
        for name, pairs in specs:
            if dot and get_class(target).name != get_class(name).name:
                continue
            if not dot and field not in set(get_class(name).__dataclass_fields__):
                continue
            pairs[field] = value
            matched = True
        if not matched:
            raise InvalidInputError(f"--param {param}: no chosen model has a parameter {field!r}")
    result: dict[str, Any] = {}
    for name, pairs in specs:
        label = name if not pairs else f"{name}({', '.join(f'{k}={v}' for k, v in pairs.items())})"
        result[label] = create(name, **parse_params(name, pairs))
    return result


def _split_pair(text: str) -> tuple[str, str]:
    key, eq, value = text.partition("=")
    if not eq or not key.strip():
        raise InvalidInputError(f"expected key=value, got {text!r}")
    return key.strip(), value.strip()


_ROLES = ("user", "item", "rating", "weight", "timestamp")


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
        if on_bad_rows not in ("raise", "skip"):
            raise InvalidInputError("--on-bad-rows must be 'raise' or 'skip'")
        return cls(columns, sep, encoding, header, on_bad_rows)

    def read(self, path: Path) -> Dataset:
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

    def load(self, dataset: str | None, data: Path | None) -> Dataset:
        if (dataset is None) == (data is None):
            raise InvalidInputError("give either --dataset NAME or --data FILE")
        return load_dataset(dataset) if data is None else self.read(data)  # type: ignore[arg-type]


def _print_board(board: pd.DataFrame, columns: list[str]) -> None:
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("model", no_wrap=True)
    for c in columns:
        table.add_column(c, justify="right", no_wrap=True)
    for model, row in board.iterrows():
        table.add_row(str(model), *[f"{row[c]:.3f}" if pd.notna(row[c]) else "-" for c in columns])
    Console(width=max(out.width, 120)).print(table)  # never squeeze numbers


def _main_columns(board: pd.DataFrame, k: int) -> list[str]:
    """The leaderboard columns worth a terminal's width."""
    wanted = [
        f"NDCG@{k}",
        f"Recall@{k}",
        f"Precision@{k}",
        f"MAP@{k}",
        f"HitRate@{k}",
        f"Coverage@{k}",
        f"Novelty@{k}",
        "RMSE",
        "MAE",
    ]
    return [c for c in wanted if c in board.columns and board[c].notna().any()]


SepOpt = Annotated[str | None, typer.Option(help="field separator (sniffed if omitted)")]
EncodingOpt = Annotated[str, typer.Option(help="text encoding of data files, e.g. latin-1")]
HeaderOpt = Annotated[
    bool | None,
    typer.Option("--header/--no-header", help="whether files start with a header (guessed)"),
]
BadRowsOpt = Annotated[
    str, typer.Option(help="raise: stop at the first bad row; skip: drop and count bad rows")
]
ColumnsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--column",
        "-c",
        help="ROLE=NAME, e.g. user=userId (roles: user, item, rating, weight, timestamp); "
        "inferred from the file's header when omitted",
    ),
]


# -- commands ------------------------------------------------------------------------------------
@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="folder for the report")] = Path(
        "tastebud-report"
    ),
    k: Annotated[int, typer.Option(help="list length")] = 10,
) -> None:
    """Build the sample music store, fit several models, print a leaderboard, write a report."""
    from tastebud.data.sample import load_sample
    from tastebud.evaluation import evaluate, leaderboard
    from tastebud.models import available, create
    from tastebud.report import write_report
    from tastebud.split import random_split

    ds = load_sample()
    out.print(f"[bold]tastebud demo[/bold] -- {ds}")
    split = random_split(ds, 0.2, seed=0)
    models = {name: create(name) for name in available()}
    results = evaluate(models, split, k=k, fairness_by="gender")
    board = leaderboard(results)
    _print_board(board, _main_columns(board, k))
    paths = write_report(
        results, out_dir, title="tastebud demo: music store", dataset=ds.describe()
    )
    best = str(board.index[0])
    model = models[best]
    user = split.test["user"].iloc[0]
    recs = model.recommend(user, k=5)
    out.print(f"\nTop 5 for listener {user} by the best model, [bold]{best}[/bold]:")
    reasons = (
        model.explain(user, recs["item"])["reason"].tolist()
        if _can_explain(model)
        else [""] * len(recs)
    )
    for rank, item, why in zip(recs["rank"], recs["item"], reasons, strict=True):
        out.print(f"  {rank}. {item}" + (f"  -- {why}" if why else ""), highlight=False)
    out.print(f"\nReport: {paths['markdown']} (plots: {paths['plot']}, data: {paths['json']})")


def _can_explain(model: Any) -> bool:
    from tastebud.models.base import Recommender

    return type(model)._explain is not Recommender._explain


@app.command()
def datasets() -> None:
    """List the named data sets and whether they are available here."""
    table = Table("name", "description", "where", "available")
    for d in DATASETS.values():
        table.add_row(d.name, d.description, d.location(), "yes" if d.available() else "no")
    out.print(table)
    out.print("Reference data are read from TASTEBUD_DATA (or ../shared/data); files with --data.")


@app.command()
def evaluate(
    model: Annotated[
        list[str], typer.Option("--model", "-m", help="model name, optionally name:key=value,...")
    ],
    dataset: Annotated[
        str | None, typer.Option(help="named data set (see `tastebud datasets`)")
    ] = None,
    data: Annotated[Path | None, typer.Option(help="interactions file to split")] = None,
    train: Annotated[Path | None, typer.Option(help="training interactions file")] = None,
    test: Annotated[Path | None, typer.Option(help="test interactions file (with --train)")] = None,
    split: Annotated[
        str, typer.Option(help="random | temporal | leave-last-out | cold-user | cold-item")
    ] = "random",
    test_size: Annotated[float, typer.Option(help="test fraction for the split")] = 0.2,
    seed: Annotated[int, typer.Option(help="random seed of the split")] = 0,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="key=value or model.key=value")
    ] = None,
    k: Annotated[int, typer.Option(help="list length")] = 10,
    metric: Annotated[list[str] | None, typer.Option(help="ranking metric (repeatable)")] = None,
    relevance_threshold: Annotated[
        float | None,
        typer.Option(help="test ratings >= this are relevant (default: all test items)"),
    ] = None,
    binarize: Annotated[
        float | None, typer.Option(help="train on ratings >= this as implicit positives")
    ] = None,
    fairness_by: Annotated[
        str | None, typer.Option(help="user feature to compare groups by")
    ] = None,
    beyond: Annotated[bool, typer.Option(help="beyond-accuracy metrics")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON only")] = False,
    report: Annotated[Path | None, typer.Option(help="write a report folder")] = None,
    column: ColumnsOpt = None,
    sep: SepOpt = None,
    encoding: EncodingOpt = "utf-8",
    header: HeaderOpt = None,
    on_bad_rows: BadRowsOpt = "raise",
) -> None:
    """Fit models on a training set and score their top-k lists on a test set."""
    from tastebud.evaluation import DEFAULT_METRICS, leaderboard
    from tastebud.evaluation import evaluate as run_evaluation
    from tastebud.split import SPLITTERS, Split

    reading = _Reading.from_options(column, sep, encoding, header, on_bad_rows)
    models = _parse_models(model, param or [])
    if train is not None or test is not None:
        if train is None or test is None or dataset is not None or data is not None:
            raise InvalidInputError("--train and --test go together, without --dataset/--data")
        train_ds = reading.read(train)
        test_table = reading.read(test).interactions
        the_split = Split(train=train_ds, test=test_table, name=f"{train.name} / {test.name}")
    else:
        ds = reading.load(dataset, data)
        if split not in SPLITTERS:
            raise InvalidInputError(f"unknown split {split!r}; choose from {', '.join(SPLITTERS)}")
        splitter = SPLITTERS[split]
        if split == "leave-last-out":
            the_split = splitter(ds)
        elif split == "temporal":
            the_split = splitter(ds, test_size)
        else:
            the_split = splitter(ds, test_size, seed=seed)
    if binarize is not None:
        the_split = Split(
            train=the_split.train.to_implicit(binarize), test=the_split.test, name=the_split.name
        )
    results = run_evaluation(
        models,
        the_split,
        metrics=metric or DEFAULT_METRICS,
        k=k,
        relevance_threshold=relevance_threshold,
        beyond_accuracy=beyond,
        fairness_by=fairness_by,
        progress=None if not as_json else False,
    )
    if report is not None:
        from tastebud.report import write_report

        write_report(results, report, title=f"tastebud evaluation: {the_split.name}")
    if as_json:
        payload = {
            "protocol": results.attrs["protocol"],
            "results": {
                label: dict(zip(g["metric"], g["value"], strict=True))
                for label, g in results.groupby("model", sort=False)
            },
        }
        sys.stdout.write(to_json(payload) + "\n")
        return
    board = leaderboard(results)
    _print_board(board, _main_columns(board, k))
    protocol = results.attrs["protocol"]
    out.print(", ".join(f"{key}: {value}" for key, value in protocol.items()), highlight=False)


@app.command()
def fit(
    model: Annotated[str, typer.Option("--model", "-m", help="model name")],
    out_dir: Annotated[Path, typer.Option("--out", help="folder to write the model to")],
    dataset: Annotated[str | None, typer.Option(help="named data set")] = None,
    data: Annotated[Path | None, typer.Option(help="interactions file")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="key=value")] = None,
    binarize: Annotated[
        float | None, typer.Option(help="train on ratings >= this as implicit positives")
    ] = None,
    column: ColumnsOpt = None,
    sep: SepOpt = None,
    encoding: EncodingOpt = "utf-8",
    header: HeaderOpt = None,
    on_bad_rows: BadRowsOpt = "raise",
) -> None:
    """Fit one model on all the data and save it to a folder."""
    reading = _Reading.from_options(column, sep, encoding, header, on_bad_rows)
    ds = reading.load(dataset, data)
    if binarize is not None:
        ds = ds.to_implicit(binarize)
    ((_label, recommender),) = _parse_models([model], param or []).items()
    recommender.fit(ds)
    path = recommender.save(out_dir)
    out.print(f"fitted {recommender!r} on {ds}; saved to {path}")


@app.command()
def tune(
    model: Annotated[str, typer.Option("--model", "-m", help="model name")],
    dataset: Annotated[
        str | None, typer.Option(help="named data set (a validation part is carved from it)")
    ] = None,
    data: Annotated[Path | None, typer.Option(help="training interactions file")] = None,
    trials: Annotated[int, typer.Option(help="number of settings to try")] = 20,
    metric: Annotated[str, typer.Option(help="ndcg, recall, map... or rmse/mae")] = "ndcg",
    k: Annotated[int, typer.Option(help="list length")] = 10,
    relevance_threshold: Annotated[
        float | None, typer.Option(help="validation ratings >= this are relevant")
    ] = None,
    binarize: Annotated[
        float | None, typer.Option(help="train on ratings >= this as implicit positives")
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="fixed key=value")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the validation split and the search")] = 0,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="fit the best setting and save it here")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON only")] = False,
    column: ColumnsOpt = None,
    sep: SepOpt = None,
    encoding: EncodingOpt = "utf-8",
    header: HeaderOpt = None,
    on_bad_rows: BadRowsOpt = "raise",
) -> None:
    """Search hyper-parameters on a validation split carved from the training data only."""
    from tastebud.models.registry import parse_params
    from tastebud.tuning import tune as run_tune

    reading = _Reading.from_options(column, sep, encoding, header, on_bad_rows)
    ds = reading.load(dataset, data)
    if binarize is not None:
        ds = ds.to_implicit(binarize)
    fixed = parse_params(model, dict(_split_pair(p) for p in param or []))
    result = run_tune(
        model,
        ds,
        n_trials=trials,
        metric=metric,
        k=k,
        relevance_threshold=relevance_threshold,
        fixed=fixed,
        seed=seed,
        progress=None if not as_json else False,
    )
    if out_dir is not None:
        result.best_model().fit(ds).save(out_dir)
    if as_json:
        payload = {
            "model": result.model,
            "metric": result.metric,
            "best_params": result.best_params,
            "best_score": result.best_score,
            "trials": result.trials.to_dict(orient="records"),
        }
        sys.stdout.write(to_json(payload) + "\n")
        return
    table = Table(*[str(c) for c in result.trials.columns], box=None)
    for row in result.trials.head(10).itertuples(index=False):
        table.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
    Console(width=max(out.width, 120)).print(table)
    best = f"best {result.metric}: {result.best_score:.4f} with {result.best_params}"
    out.print(best, highlight=False)
    if out_dir is not None:
        out.print(f"fitted the best setting on all of {ds.name}; saved to {out_dir}")


@app.command()
def recommend(
    model_dir: Annotated[Path, typer.Argument(help="folder written by `tastebud fit`")],
    user: Annotated[
        list[str] | None, typer.Option("--user", "-u", help="user id (repeatable)")
    ] = None,
    users_file: Annotated[Path | None, typer.Option(help="file with one user id per line")] = None,
    all_users: Annotated[
        bool, typer.Option("--all-users", help="every user the model knows")
    ] = False,
    k: Annotated[int, typer.Option(help="list length")] = 10,
    include_seen: Annotated[
        bool, typer.Option(help="also recommend items the user already has")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--out", help="write .csv or .json (default: CSV to stdout)")
    ] = None,
) -> None:
    """Recommend with a saved model; writes CSV (or JSON) of user, item, score, rank."""
    from tastebud.models import load

    recommender = load(model_dir)
    ids: list[Any] = list(user or [])
    if users_file is not None:
        if not users_file.is_file():
            raise InvalidInputError(f"{users_file}: no such file")
        ids += [line.strip() for line in users_file.read_text().splitlines() if line.strip()]
    if all_users:
        ids_all = recommender.users_.ids.tolist()
    elif not ids:
        raise InvalidInputError("name users with --user, --users-file or --all-users")
    else:
        ids_all = ids  # text ids match integer ids too ("7" finds 7)
    unknown = int((recommender.users_.to_index(ids_all, on_unknown="ignore") < 0).sum())
    if unknown:
        sys.stderr.write(f"warning: {unknown} unknown user(s) got the fallback (popular) list\n")
    recs = recommender.recommend(ids_all, k=k, exclude_seen=not include_seen)
    if output is None:
        recs.to_csv(sys.stdout, index=False)
    else:
        output_folder(output.parent)
        if output.is_dir():
            raise InvalidInputError(f"{output} is a folder; give a file name ending .csv or .json")
        if output.suffix.lower() == ".json":
            output.write_text(to_json(recs.to_dict(orient="records")))
        else:
            recs.to_csv(output, index=False)


DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="database URL: sqlite:///file.db (default) or postgresql+psycopg://user@host/db",
    ),
]


@app.command("import")
def import_(
    db: DbOpt = None,
    dataset: Annotated[str | None, typer.Option(help="named data set")] = None,
    data: Annotated[Path | None, typer.Option(help="interactions file")] = None,
    event_type: Annotated[
        str, typer.Option(help="event type of the imported rows (rating, like, view...)")
    ] = "rating",
    config: Annotated[Path | None, typer.Option(help="service config file (TOML/JSON)")] = None,
    column: ColumnsOpt = None,
    sep: SepOpt = None,
    encoding: EncodingOpt = "utf-8",
    header: HeaderOpt = None,
    on_bad_rows: BadRowsOpt = "raise",
) -> None:
    """Load users, items (with titles) and interactions into the service's database.

    Re-importing the same data adds nothing: every imported row has a stable event id.
    """
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
        counts = storage.import_dataset(ds, event_type=event_type)
        out.print(
            f"imported {ds.name} into {storage.url}: "
            + ", ".join(f"{v:,} {k}" for k, v in counts.items()),
            highlight=False,
        )


@app.command()
def serve(
    db: DbOpt = None,
    config: Annotated[Path | None, typer.Option(help="service config file (TOML/JSON)")] = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    model: Annotated[str | None, typer.Option(help="model retrained from the events")] = None,
    sample: Annotated[
        bool, typer.Option("--sample", help="import the built-in music-store sample first")
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="processes serving requests (one per core; one of them trains at a time)",
        ),
    ] = 1,
) -> None:
    """Run the HTTP service (API docs at /docs, the web UI at /ui/, health at
    /health/ready)."""
    import uvicorn

    from tastebud.service import logs
    from tastebud.service.app import serving_app
    from tastebud.service.settings import load_settings
    from tastebud.service.storage import Storage

    settings = load_settings(config, db=db, model=model)
    logs.configure(settings.log_level, settings.log_json)
    storage = Storage(settings.db)
    storage.migrate()
    if sample:
        from tastebud.data.sample import load_sample

        counts = storage.import_dataset(load_sample(), event_type="rating")
        out.print(f"sample data: {counts}", highlight=False)
    out.print(
        f"tastebud serving {storage.url} on http://{host}:{port} "
        f"(API docs: http://{host}:{port}/docs)",
        highlight=False,
    )
    if workers == 1:
        uvicorn.run(
            serving_app(settings, storage),
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            timeout_keep_alive=_KEEP_ALIVE_S,
        )
        storage.close()
        return
    storage.close()
    from tastebud.service.app import WORKER_SETTINGS_ENV

    os.environ[WORKER_SETTINGS_ENV] = settings.model_dump_json()
    uvicorn.run(
        "tastebud.service.app:worker_app",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_keep_alive=_KEEP_ALIVE_S,
    )


#: Idle keep-alive connections are closed after this long (uvicorn's 5 s default races
#: with clients' connection pools: a request sent as the server closes is reset).
_KEEP_ALIVE_S = 65


experiments_app = typer.Typer(
    help="A/B tests of the service: list, start, stop, report.", no_args_is_help=True
)
app.add_typer(experiments_app, name="experiments")


def _storage(db: str | None, config: Path | None) -> Any:
    from tastebud.service.settings import load_settings
    from tastebud.service.storage import Storage

    storage = Storage(load_settings(config, db=db).db)
    storage.migrate()
    return storage


ConfigOpt = Annotated[Path | None, typer.Option(help="service config file (TOML/JSON)")]


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
        out.print(f"{row['name']}  {row['status']}  {variants}", highlight=False)


@experiments_app.command("start")
def experiments_start(
    name: Annotated[str, typer.Argument(help="experiment name")],
    variant: Annotated[
        list[str],
        typer.Option(
            help="NAME=SHARE or NAME=SHARE@VERSION (model version; default the active one); "
            "repeat for each variant, the first is the control"
        ),
    ],
    db: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Start an A/B test (stops the running one; a serving process follows within 2 s)."""
    from pydantic import ValidationError

    from tastebud.service.experiments import ExperimentIn

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
    out.print(f"experiment {spec.name} running", highlight=False)


@experiments_app.command("stop")
def experiments_stop(
    name: Annotated[str, typer.Argument(help="experiment name")],
    db: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Stop an experiment (its logs stay for the report)."""
    with _storage(db, config) as storage:
        storage.stop_experiment(name)
    out.print(f"experiment {name} stopped", highlight=False)


@experiments_app.command("report")
def experiments_report(
    name: Annotated[str, typer.Argument(help="experiment name")],
    outcome: Annotated[
        str | None, typer.Option(help="feedback type that counts (default click)")
    ] = None,
    alpha: Annotated[float, typer.Option(help="significance level")] = 0.05,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
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
            highlight=False,
        )


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    sys.stderr.write(f"warning: {message}\n")


def main() -> None:
    """Entry point: run the app, turning tastebud errors into one line and exit code 2."""
    warnings.showwarning = _show_warning
    try:
        app()
    except TastebudError as error:
        sys.stderr.write(f"error: {error}\n")  # one line, never wrapped
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
