"""Experiment tracking with MLflow (extra ``tastebud[tracking]``).

Two calls, after the work is done::

    results = evaluate(models, split)
    log_evaluation(results, models=models, report_dir="report")   # report_dir: optional
    log_tuning(tune("ease", train))

Layout in MLflow (experiment ``tastebud`` by default):

- an evaluation is a parent run (the protocol as params, the report folder -- ``report.md``,
  its plots, ``results.json`` -- as artifacts) with one child run per model (the model's
  hyper-parameters as params, every metric as a metric; for ``cross_validate`` results the
  mean over folds, and each fold's value as the step series ``<metric>/fold``);
- a tuning is a parent run (the best parameters as ``best.<name>`` params, the best score,
  the search's protocol, the trials table as ``trials.csv``) with one child run per trial
  (its parameters, its score unless pruned, its state as a tag).

Where runs go: ``tracking_uri`` if given, else MLflow's own setting (``MLFLOW_TRACKING_URI`` or
``mlflow.set_tracking_uri``), else ``sqlite:///mlflow.db`` in the working folder, with
artifacts in ``./mlruns`` beside it. That is MLflow 3's own default: it needs no server and no
network, ``mlflow ui`` started in the same folder shows the runs, and the older ``./mlruns``
file store is deprecated (MLflow 3 refuses it unless told to allow it). An experiment created
here on a SQLite store keeps its artifacts in ``mlruns/<experiment>/`` next to the database
file, so a store in another folder stays self-contained.

Names: MLflow metric names cannot hold ``@``, ``[`` or ``=``, so ``NDCG@10`` is logged as
``NDCG_at_10`` and ``NDCG@10 [gender=F]`` as ``NDCG_at_10 gender-F``.

If a run is active (``with mlflow.start_run(): ...``) in the same store, the parent run is
nested under it, in its experiment.

MLflow itself may send anonymous usage telemetry; ``MLFLOW_DISABLE_TELEMETRY=true`` (or
``DO_NOT_TRACK=true``) turns it off.
"""

from __future__ import annotations

import logging
import re
import shlex
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import pandas as pd

from tastebud.errors import InvalidInputError, TastebudError

if TYPE_CHECKING:  # pragma: no cover
    from tastebud.models import Recommender
    from tastebud.tuning import TuningResult

TRACKERS = ("mlflow",)
DEFAULT_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "tastebud"
_MAX_PARAM_CHARS = 6000  # MLflow's limit on a parameter's value
_BATCH = 100  # MLflow's limit on params/tags per log_batch call


def check_tracker(track: str) -> None:
    """Fail early, in one line, when ``track`` names no tracker or its package is missing."""
    if track not in TRACKERS:
        raise InvalidInputError(f"unknown tracker {track!r}; choose from {', '.join(TRACKERS)}")
    _mlflow()


def store_uri(tracking_uri: str | None = None) -> str:
    """The store runs are logged to: ``tracking_uri`` if given, else MLflow's setting
    (``MLFLOW_TRACKING_URI`` or ``mlflow.set_tracking_uri``), else :data:`DEFAULT_URI`."""
    if tracking_uri is not None:
        return tracking_uri
    mlflow = _mlflow()
    return str(mlflow.get_tracking_uri()) if mlflow.is_tracking_uri_set() else DEFAULT_URI


def browse_command(tracking_uri: str) -> str:
    """How to look at the runs of a store: the server's address, or the ``mlflow ui``
    command that shows a local store (a relative SQLite path made absolute, so the command
    works from any folder)."""
    if urlparse(tracking_uri).scheme in ("http", "https"):
        return f"open {tracking_uri}"
    db = _sqlite_file(tracking_uri)
    if db is not None:
        tracking_uri = f"sqlite:///{db.resolve()}"
    return f"mlflow ui --backend-store-uri {shlex.quote(tracking_uri)}"


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None: another store, or in memory)."""
    if urlparse(uri).scheme != "sqlite" or not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///"))
    return None if str(db) in ("", ".", ":memory:") else db


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        raise TastebudError(
            "tracking with MLflow needs the tracking extra: pip install 'tastebud[tracking]'"
        ) from None
    return mlflow


def metric_name(label: str) -> str:
    """An MLflow-safe name for a metric label (``NDCG@10`` -> ``NDCG_at_10``)."""
    name = label.replace("@", "_at_").replace("=", "-").replace("[", "").replace("]", "")
    return re.sub(r"[^\w.\- /]+", "_", name).strip() or "metric"


def _param_value(value: Any) -> str:
    # A searched parameter is never NaN: NaN is pandas' stand-in for a None in a number column.
    text = "None" if isinstance(value, float) and value != value else str(value)
    return text if len(text) <= _MAX_PARAM_CHARS else text[: _MAX_PARAM_CHARS - 3] + "..."


class _Logger:
    """One connection to a tracking store: runs created through ``MlflowClient`` (no global
    state of the fluent API is changed)."""

    def __init__(self, tracking_uri: str | None, experiment: str) -> None:
        mlflow = _mlflow()
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient

        self._entities = (Metric, Param, RunTag)
        active = mlflow.active_run()
        tracking_uri = store_uri(tracking_uri)
        self.uri = tracking_uri
        # Nested under the caller's run when it lives in the same store.
        self.parent_of_all = (
            active.info.run_id
            if active is not None and mlflow.get_tracking_uri() == tracking_uri
            else None
        )
        self.client = MlflowClient(tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        if self.parent_of_all is not None and active is not None:
            self.experiment_id = active.info.experiment_id  # children stay with their parent
        elif found is not None:
            self.experiment_id = found.experiment_id
        else:
            self.experiment_id = self.client.create_experiment(
                experiment, artifact_location=_artifact_location(tracking_uri, experiment)
            )

    def start(self, name: str, *, parent: str | None, tags: Mapping[str, str]) -> str:
        tags = dict(tags)
        parent = parent or self.parent_of_all
        if parent is not None:
            tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        return str(run.info.run_id)

    def log(
        self,
        run_id: str,
        *,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        series: Mapping[str, Sequence[tuple[int, float]]] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Log in batches; ``series`` are metrics with one value per step (e.g. per fold)."""
        metric_cls, param_cls, tag_cls = self._entities
        now = int(time.time() * 1000)
        param_rows = [param_cls(str(k), _param_value(v)) for k, v in (params or {}).items()]
        tag_rows = [tag_cls(str(k), str(v)) for k, v in (tags or {}).items()]
        metric_rows = [
            metric_cls(key, float(value), now, 0)
            for key, value in _unique_names(metrics or {}).items()
            if value is not None
        ]
        metric_rows += [
            metric_cls(metric_name(label), float(value), now, int(step))
            for label, points in (series or {}).items()
            for step, value in points
        ]
        for start in range(0, max(len(param_rows), len(tag_rows), len(metric_rows)), _BATCH):
            self.client.log_batch(
                run_id,
                metrics=metric_rows[start : start + _BATCH],
                params=param_rows[start : start + _BATCH],
                tags=tag_rows[start : start + _BATCH],
            )

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)


def _artifact_location(uri: str, experiment: str) -> str | None:
    """Artifacts beside a SQLite store's file, ``mlruns/<experiment>/<run id>/artifacts``
    (None: the store's own default)."""
    db = _sqlite_file(uri)
    if db is None:
        return None
    folder = re.sub(r"[^\w.-]+", "_", experiment).strip("._") or "experiment"
    return (db.resolve().parent / "mlruns" / folder).as_uri()


def _unique_names(metrics: Mapping[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for label, value in metrics.items():
        name, n = metric_name(label), 2
        base = name
        while name in out:
            name, n = f"{base} {n}", n + 1
        out[name] = value
    return out


@contextmanager
def _quiet() -> Iterator[None]:
    """MLflow and alembic announce every table they create at INFO, and MLflow's SQLAlchemy
    store warns about its own use of a deprecated loader; neither is the user's business."""
    loggers = [logging.getLogger(name) for name in ("mlflow", "alembic")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"mlflow\.")
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"sqlalchemy\.")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@contextmanager
def _run(
    logger: _Logger, name: str, *, parent: str | None, tags: Mapping[str, str]
) -> Iterator[str]:
    run_id = logger.start(name, parent=parent, tags=tags)
    try:
        yield run_id
    except BaseException:
        logger.finish(run_id, "FAILED")
        raise
    logger.finish(run_id)


def log_evaluation(
    results: pd.DataFrame,
    *,
    models: Mapping[str, Recommender] | None = None,
    report_dir: str | Path | None = None,
    title: str | None = None,
    dataset: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
) -> str:
    """Log an :func:`~tastebud.evaluation.evaluate` result to MLflow; returns the parent run id.

    Parameters
    ----------
    results:
        The tidy table ``evaluate`` returned (its ``attrs["protocol"]`` becomes params).
    models:
        The models evaluated, by the labels in ``results`` (e.g. the mapping given to
        ``evaluate``): their hyper-parameters become each child run's params.
    report_dir:
        A report folder already written by :func:`~tastebud.report.write_report`; without
        one, a report is written to a temporary folder and logged.
    title:
        The report's title (when one is written here) and the parent run's default name.
    dataset:
        The data's summary (``Dataset.describe()``) for the report written here.
    tracking_uri:
        Where to log (default: MLflow's setting, else ``sqlite:///mlflow.db``).
    experiment:
        The MLflow experiment, created when missing.
    run_name:
        The parent run's name.
    """
    if not isinstance(results, pd.DataFrame) or not {"model", "metric", "value"} <= set(
        results.columns
    ):
        raise InvalidInputError("log_evaluation needs the table evaluate() returns")
    if report_dir is not None and not Path(report_dir).is_dir():
        raise InvalidInputError(f"{report_dir}: no such report folder")
    protocol = dict(results.attrs.get("protocol", {}))
    title = title or f"tastebud evaluation: {protocol.get('split', 'split')}"
    with _quiet():
        logger = _Logger(tracking_uri, experiment)
        tags = {"tastebud.kind": "evaluation"}
        with _run(logger, run_name or title, parent=None, tags=tags) as parent:
            logger.log(parent, params=protocol)
            for label, group in results.groupby("model", sort=False):
                params = models[str(label)].get_params() if models and label in models else {}
                kind = models[str(label)].name if models and label in models else ""
                with _run(logger, str(label), parent=parent, tags=tags) as child:
                    metrics, series = _model_metrics(group)
                    logger.log(
                        child,
                        params=params,
                        metrics=metrics,
                        series=series,
                        tags={"tastebud.model": kind} if kind else {},
                    )
            _log_report(logger, parent, results, report_dir, title, dataset)
    return parent


def _model_metrics(
    group: pd.DataFrame,
) -> tuple[dict[str, float], dict[str, list[tuple[int, float]]]]:
    """One model's metrics; for ``cross_validate`` results (a ``fold`` column) the mean over
    folds, and each fold's value as the step series ``<metric>/fold``."""
    if "fold" not in group.columns:
        return dict(zip(group["metric"], group["value"], strict=True)), {}
    means = group.groupby("metric", sort=False)["value"].mean()
    series = {
        f"{metric}/fold": list(zip(g["fold"].astype(int), g["value"].astype(float), strict=True))
        for metric, g in group.groupby("metric", sort=False)
    }
    return {str(k): float(v) for k, v in means.items()}, series


def _log_report(
    logger: _Logger,
    run_id: str,
    results: pd.DataFrame,
    report_dir: str | Path | None,
    title: str,
    dataset: Mapping[str, Any] | None,
) -> None:
    if report_dir is not None:
        logger.client.log_artifacts(run_id, str(report_dir), "report")
        return
    from tastebud.report import write_report

    with tempfile.TemporaryDirectory(prefix="tastebud-report-") as tmp:
        summary = dict(dataset) if dataset is not None else None
        write_report(results, Path(tmp) / "report", title=title, dataset=summary)
        logger.client.log_artifacts(run_id, str(Path(tmp) / "report"), "report")


def log_tuning(
    result: TuningResult,
    *,
    tracking_uri: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
) -> str:
    """Log a :func:`~tastebud.tuning.tune` result to MLflow; returns the parent run id.

    The parent run holds the best parameters (``best.<name>``), the best score (under the
    metric's MLflow name), the search's protocol and ``trials.csv``; each trial is a child run
    with its parameters, its score (complete trials only), ``fit_seconds`` and a
    ``tastebud.state`` tag (``complete`` or ``pruned``).
    """
    from tastebud.tuning import TuningResult

    if not isinstance(result, TuningResult):
        raise InvalidInputError("log_tuning needs the TuningResult tune() returns")
    table = result.trials
    searched = [c for c in table.columns if c not in _TRIAL_COLUMNS | {result.metric}]
    with _quiet():
        logger = _Logger(tracking_uri, experiment)
        tags = {"tastebud.kind": "tuning", "tastebud.model": result.model}
        name = run_name or f"tune {result.model}"
        with _run(logger, name, parent=None, tags=tags) as parent:
            params = {"model": result.model, **result.protocol}
            params |= {f"best.{k}": v for k, v in result.best_params.items()}
            metrics = {result.metric: result.best_score, "trials_pruned": float(result.n_pruned)}
            logger.log(parent, params=params, metrics=metrics)
            for row in table.sort_values("trial").to_dict(orient="records"):
                state = str(row["state"])
                scores = {"fit_seconds": row["fit_seconds"], "seconds": row["seconds"]}
                if state == "complete":
                    scores[result.metric] = row[result.metric]
                trial_tags = tags | {"tastebud.state": state, "tastebud.trial": str(row["trial"])}
                with _run(logger, f"trial {row['trial']}", parent=parent, tags=trial_tags) as child:
                    logger.log(child, params={p: row[p] for p in searched}, metrics=scores)
            logger.client.log_text(parent, table.to_csv(index=False), "trials.csv")
    return parent


_TRIAL_COLUMNS = {"trial", "state", "fit_seconds", "seconds"}
