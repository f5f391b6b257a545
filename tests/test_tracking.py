"""MLflow tracking: runs are read back from a SQLite store in a temporary folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from tastebud.data.synthetic import synthetic
from tastebud.errors import InvalidInputError, TastebudError
from tastebud.evaluation import cross_validate, evaluate
from tastebud.models import create
from tastebud.report import write_report
from tastebud.split import random_split
from tastebud.tracking import check_tracker, log_evaluation, log_tuning, metric_name
from tastebud.tuning import tune

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

pytestmark = [
    pytest.mark.slow,  # MLflow creates its SQLite schema once per store (seconds)
    # MLflow's own SQLAlchemy store, read back here outside tastebud's quiet wrapper
    pytest.mark.filterwarnings("ignore:.*noload.*:DeprecationWarning"),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A folder for the store; the default URI resolves here (sqlite:///mlflow.db in cwd)."""
    folder = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.chdir(folder)
        yield folder


@pytest.fixture(scope="module")
def uri(store):
    return f"sqlite:///{store / 'mlflow.db'}"


@pytest.fixture(scope="module")
def data():
    return synthetic(300, 120, 6_000, n_clusters=4, seed=4)


def _runs(uri: str, experiment: str = "tastebud") -> list:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], max_results=1000)


def _artifacts(uri: str, run_id: str, path: str | None = None) -> set[str]:
    return {f.path for f in MlflowClient(uri).list_artifacts(run_id, path)}


def test_an_evaluation_is_a_parent_run_with_one_child_per_model(store, uri, data):
    split = random_split(data, 0.2, seed=0)
    models = {"ease": create("ease", reg=120.0), "pop": create("popularity")}
    results = evaluate(models, split, metrics=["ndcg", "recall"], progress=False)
    report = write_report(results, store / "report")["markdown"].parent
    parent_id = log_evaluation(
        results, models=models, report_dir=report, tracking_uri=uri, experiment="evals"
    )
    runs = {r.info.run_id: r for r in _runs(uri, "evals")}
    parent = runs[parent_id]
    assert parent.data.params["k"] == "10" and parent.data.params["split"] == split.name
    assert parent.data.tags["tastebud.kind"] == "evaluation"
    children = {
        r.info.run_name: r
        for r in runs.values()
        if r.data.tags.get("mlflow.parentRunId") == parent_id
    }
    assert set(children) == {"ease", "pop"}
    ease = children["ease"]
    assert ease.data.params["reg"] == "120.0" and ease.data.tags["tastebud.model"] == "ease"
    expected = results[results.model == "ease"].set_index("metric")["value"]
    assert ease.data.metrics["NDCG_at_10"] == pytest.approx(expected["NDCG@10"])
    assert ease.data.metrics["Recall_at_10"] == pytest.approx(expected["Recall@10"])
    assert ease.data.metrics["fit_seconds"] == pytest.approx(expected["fit_seconds"])
    assert all(r.info.status == "FINISHED" for r in runs.values())
    written = {f"report/{f.name}" for f in report.iterdir()}
    assert {"report/report.md", "report/metrics.png", "report/results.json"} <= written
    assert _artifacts(uri, parent_id, "report") == written
    # the artifacts live beside the store, not in the working folder of whoever ran it
    location = Path(MlflowClient(uri).get_experiment_by_name("evals").artifact_location[7:])
    assert location == (store / "mlruns" / "evals").resolve()


def test_without_a_report_folder_a_report_is_written_and_logged(uri, data):
    results = evaluate("popularity", random_split(data, 0.2, seed=1), progress=False)
    parent_id = log_evaluation(results, tracking_uri=uri, experiment="evals-2")
    logged = _artifacts(uri, parent_id, "report")
    assert {"report/report.md", "report/metrics.png", "report/results.json"} <= logged
    (child,) = [r for r in _runs(uri, "evals-2") if r.info.run_id != parent_id]
    assert child.data.params == {}  # no models given: metrics only
    assert "NDCG_at_10" in child.data.metrics


def test_cross_validation_logs_the_mean_and_each_fold(uri, data):
    results = cross_validate("popularity", data, folds=2, metrics=["ndcg"], progress=False)
    parent_id = log_evaluation(results, tracking_uri=uri, experiment="folds")
    (child,) = [r for r in _runs(uri, "folds") if r.info.run_id != parent_id]
    ndcg = results[results.metric == "NDCG@10"].sort_values("fold")["value"]
    assert child.data.metrics["NDCG_at_10"] == pytest.approx(ndcg.mean())
    history = MlflowClient(uri).get_metric_history(child.info.run_id, "NDCG_at_10/fold")
    points = sorted((m.step, m.value) for m in history)
    assert [step for step, _ in points] == [1, 2]
    assert [value for _, value in points] == pytest.approx(ndcg.tolist())


def test_a_tuning_logs_the_best_on_the_parent_and_every_trial_as_a_child(uri, data):
    result = tune("ease", data, n_trials=12, seed=1, progress=False)
    assert result.n_pruned > 0  # the data and seed are chosen so some trials are pruned
    parent_id = log_tuning(result, tracking_uri=uri, experiment="tuning")
    runs = _runs(uri, "tuning")
    parent = next(r for r in runs if r.info.run_id == parent_id)
    assert float(parent.data.params["best.reg"]) == pytest.approx(result.best_params["reg"])
    assert parent.data.metrics["NDCG_at_10"] == pytest.approx(result.best_score)
    assert parent.data.params["sampler"] == "TPE (multivariate)"
    assert parent.data.metrics["trials_pruned"] == result.n_pruned
    assert "trials.csv" in _artifacts(uri, parent_id)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]
    assert len(children) == len(result.trials) == 12
    table = result.trials.set_index("trial")
    for child in children:
        row = table.loc[int(child.data.tags["tastebud.trial"])]
        assert child.data.tags["tastebud.state"] == row["state"]
        assert float(child.data.params["reg"]) == pytest.approx(row["reg"])
        if row["state"] == "pruned":
            assert "NDCG_at_10" not in child.data.metrics
        else:
            assert child.data.metrics["NDCG_at_10"] == pytest.approx(row["NDCG@10"])


def test_the_default_store_is_sqlite_in_the_working_folder(store, data):
    result = tune("baseline", data, n_trials=2, metric="rmse", seed=0, progress=False)
    parent_id = log_tuning(result, experiment="default-store")
    assert (Path.cwd() / "mlflow.db").is_file() and Path.cwd() == store
    runs = _runs(f"sqlite:///{store / 'mlflow.db'}", "default-store")
    assert parent_id in {r.info.run_id for r in runs}


def test_a_run_started_by_the_caller_becomes_the_parent(uri, data, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    result = tune("baseline", data, n_trials=2, metric="rmse", seed=0, progress=False)
    mlflow.set_experiment("notebook")
    with mlflow.start_run() as outer:
        parent_id = log_tuning(result)  # nested: in the caller's experiment, not "tastebud"
    parent = next(r for r in _runs(uri, "notebook") if r.info.run_id == parent_id)
    assert parent.data.tags["mlflow.parentRunId"] == outer.info.run_id


def test_missing_mlflow_and_unknown_trackers_are_one_clear_line(monkeypatch):
    check_tracker("mlflow")
    with pytest.raises(InvalidInputError, match="unknown tracker 'wandb'"):
        check_tracker("wandb")
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now fails
    with pytest.raises(TastebudError, match=r"pip install 'tastebud\[tracking\]'"):
        check_tracker("mlflow")
    with pytest.raises(InvalidInputError, match="the table evaluate"):
        log_evaluation(pd.DataFrame({"user": [1], "item": [2]}))


def test_the_way_to_browse_a_store_works_from_any_folder(tmp_path, monkeypatch):
    from tastebud.tracking import browse_command, store_uri

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert store_uri() == "sqlite:///mlflow.db" and store_uri("http://x:5000") == "http://x:5000"
    absolute = f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    assert browse_command("sqlite:///mlflow.db") == f"mlflow ui --backend-store-uri {absolute}"
    assert browse_command("http://x:5000") == "open http://x:5000"


def test_metric_labels_become_mlflow_names():
    assert metric_name("NDCG@10") == "NDCG_at_10"
    assert metric_name("NDCG@10 [gender=F]") == "NDCG_at_10 gender-F"
    assert metric_name("NDCG@10 gap by gender") == "NDCG_at_10 gap by gender"
    assert metric_name("fit_seconds") == "fit_seconds"


def test_the_command_line_tracks_evaluate_and_tune(uri, capsys):
    """``tastebud evaluate|tune ... --track mlflow``: the same runs as from Python."""
    from tastebud.cli import main

    def cli(*args: str) -> str:
        with pytest.raises(SystemExit) as done:
            main([*args, "--track", "mlflow", "--track-uri", uri, "--experiment", "cli"])
        captured = capsys.readouterr()
        assert done.value.code in (0, None), captured.err
        return captured.out

    said = cli(
        "evaluate", "--dataset", "sample", "-m", "popularity", "-m", "item-knn", "--no-beyond"
    )
    tuned_json = json.loads(
        cli("tune", "--dataset", "sample", "-m", "item-knn", "--trials", "3", "--json")
    )
    runs = _runs(uri, "cli")
    # the command says where it logged and how to look (the JSON carries the same)
    where = said.strip().splitlines()[-1]
    parent_id = next(
        r.info.run_id
        for r in runs
        if "mlflow.parentRunId" not in r.data.tags and r.data.params.get("k")
    )
    browse = f"mlflow ui --backend-store-uri sqlite:///{Path(uri[10:]).resolve()}"
    assert where == (
        f"logged to MLflow: run {parent_id} in experiment 'cli' at {uri}; to browse: {browse}"
    )
    assert tuned_json["tracking"]["run_id"] in {r.info.run_id for r in runs}
    assert tuned_json["tracking"]["browse"] == browse
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    models = {r.data.tags.get("mlflow.runName") for r in children}
    assert {"popularity", "item-knn"} <= models
    evaluation = next(r for r in runs if "NDCG_at_10" in r.data.metrics and r.data.params.get("k"))
    assert evaluation is not None
    tuned = [r for r in runs if any(key.startswith("best.") for key in r.data.params)]
    assert len(tuned) == 1
    trials = [r for r in children if r.data.tags["mlflow.parentRunId"] == tuned[0].info.run_id]
    assert len(trials) == 3
