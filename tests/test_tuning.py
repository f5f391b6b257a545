from __future__ import annotations

import dataclasses

import numpy as np
import optuna
import pytest

from tastebud.data.synthetic import synthetic
from tastebud.errors import InvalidInputError
from tastebud.evaluation import evaluate, leaderboard
from tastebud.models import create, get_class, registry
from tastebud.models.linear import EASE
from tastebud.split import random_split
from tastebud.tuning import DEFAULT_SPACES, LogRange, Range, _param, tune

TIMING = ["fit_seconds", "seconds"]


@pytest.fixture(scope="module")
def data():
    return synthetic(300, 120, 6_000, n_clusters=4, seed=4)


def test_tune_ranks_trials_and_never_loses_to_the_defaults(data):
    result = tune("ease", data, space={"reg": [0.5, 30.0, 5000.0]}, n_trials=6, seed=1)
    assert result.metric == "NDCG@10"
    assert len(result.trials) == 6
    assert set(result.trials["state"]) <= {"complete", "pruned"}
    complete = result.trials[result.trials.state == "complete"]
    scores = complete["NDCG@10"].tolist()
    assert scores == sorted(scores, reverse=True)
    assert result.best_score == scores[0]
    first = result.trials[result.trials.trial == 1]  # trial 1 is always the defaults
    assert first["reg"].iloc[0] == 300.0 and first["state"].iloc[0] == "complete"
    assert result.best_score >= first["NDCG@10"].iloc[0]
    assert result.best_model().get_params()["reg"] == result.best_params["reg"]


def test_floats_from_a_range_are_tried_with_four_significant_digits(data):
    """So the best setting prints as reg=423.5 -- and 423.5 is what scored and what a pasted
    fit line fits."""
    result = tune("ease", data, space={"reg": LogRange(10.0, 5000.0)}, n_trials=5, seed=3)
    tried = result.trials["reg"].tolist()
    assert len(set(tried)) > 2 and all(float(f"{v:.4g}") == v for v in tried)
    assert all(10.0 <= v <= 5000.0 for v in tried)
    assert result.best_model().get_params()["reg"] == result.best_params["reg"] in tried


def test_the_best_score_is_what_evaluate_gives_on_the_validation_split(data):
    """Scoring in batches (for pruning) must agree with the evaluator on all users."""
    result = tune("ease", data, n_trials=5, seed=2, validation_size=0.25)
    validation = random_split(data, 0.25, seed=2)
    board = leaderboard(
        evaluate(result.best_model(), validation, metrics=["ndcg"], beyond_accuracy=False)
    )
    assert result.best_score == pytest.approx(board["NDCG@10"].iloc[0], rel=1e-12)
    rated = tune("baseline", data, n_trials=3, metric="rmse", seed=2)
    board = leaderboard(evaluate(rated.best_model(), random_split(data, 0.2, seed=2)))
    assert rated.best_score == pytest.approx(board["RMSE"].iloc[0], rel=1e-12)


def test_tune_is_reproducible_and_supports_rating_metrics(data):
    a = tune("baseline", data, n_trials=6, metric="rmse", seed=3)
    b = tune("baseline", data, n_trials=6, metric="rmse", seed=3)
    c = tune("baseline", data, n_trials=6, metric="rmse", seed=4)
    assert a.best_params == b.best_params and a.metric == "RMSE"
    assert a.trials.drop(columns=TIMING).equals(b.trials.drop(columns=TIMING))
    assert not a.trials.drop(columns=TIMING).equals(c.trials.drop(columns=TIMING))
    assert a.trials["RMSE"].is_monotonic_increasing  # lower is better, best first
    assert a.protocol["metric"] == "RMSE" and a.protocol["seed"] == 3


@dataclasses.dataclass(kw_only=True, eq=False)
class _Reversed(EASE):
    """EASE whose ``hopeless`` setting ranks the catalogue upside down."""

    hopeless: bool = False

    def _score(self, users, items):
        scores = super()._score(users, items)
        return -scores if self.hopeless else scores


def test_a_hopeless_trial_is_pruned_and_a_good_one_never_is(data, monkeypatch):
    monkeypatch.setattr(_Reversed, "name", "reversed-ease")
    monkeypatch.setitem(registry._REGISTRY, "reversed-ease", _Reversed)
    # max_items above the catalogue changes nothing: every good trial scores the same, every
    # hopeless one the same, so the median rule has one right answer.
    space = {"hopeless": [False, True], "max_items": Range(1000, 100_000, integer=True)}
    result = tune("reversed-ease", data, space=space, n_trials=16, seed=0)
    trials = result.trials
    pruned = trials[trials.state == "pruned"]
    assert len(pruned) >= 1 and result.n_pruned == len(pruned)
    assert pruned["hopeless"].all() and pruned["NDCG@10"].isna().all()
    assert not trials.loc[~trials.hopeless, "state"].eq("pruned").any()
    assert result.best_params["hopeless"] is False
    study_states = {t.number: t.state for t in result.study.trials}
    assert sum(s == optuna.trial.TrialState.PRUNED for s in study_states.values()) == len(pruned)


def test_repeated_settings_are_not_refitted(data):
    result = tune("ease", data, space={"reg": [30.0, 300.0]}, n_trials=8, seed=0, pruning=False)
    trials = result.trials.sort_values("trial")
    for _reg, group in trials.groupby("reg"):
        assert group["NDCG@10"].nunique() == 1  # the same setting, the same score
        assert (group["fit_seconds"].iloc[1:] == 0).all() and group["fit_seconds"].iloc[0] > 0
    assert len(trials) == 8 and trials["reg"].nunique() == 2


def test_defaults_outside_the_space_are_still_trial_one_with_plain_values(data):
    # item-knn's default shrinkage is None: not in the space, so trial 1 runs outside the study
    result = tune("item-knn", data, n_trials=4, seed=0, pruning=False)
    first = result.trials[result.trials.trial == 1].iloc[0]
    assert first["k"] == 50 and np.isnan(first["shrinkage"])
    assert len(result.study.trials) == 3
    assert isinstance(result.best_params["k"], int)  # not numpy, not a float from pandas
    result.best_model().fit(data)  # passes the model's type checks


def test_fixed_parameters_leave_the_space_and_timeout_stops_new_trials(data):
    result = tune("baseline", data, fixed={"reg_user": 5.0}, n_trials=3, metric="rmse", seed=0)
    assert "reg_user" not in result.trials.columns and "reg_item" in result.trials.columns
    assert result.best_params["reg_user"] == 5.0 and "reg_item" in result.best_params
    stopped = tune("ease", data, n_trials=50, timeout=0.0, seed=0)
    assert len(stopped.trials) == 1 and stopped.protocol["timeout_s"] == 0.0


def test_optuna_stays_quiet_and_its_verbosity_is_restored(data, capsys):
    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        tune("ease", data, n_trials=3, seed=0, progress=False)
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    captured = capsys.readouterr()
    assert "Trial" not in captured.err and "Trial" not in captured.out


def test_spaces_translate_to_optuna_distributions():
    log_int = _param("k", LogRange(10, 1000, integer=True)).distribution
    assert isinstance(log_int, optuna.distributions.IntDistribution)
    assert (log_int.low, log_int.high, log_int.log) == (10, 1000, True)
    flat = _param("reg", Range(0.5, 2.0)).distribution
    assert isinstance(flat, optuna.distributions.FloatDistribution) and not flat.log
    listed = _param("n", [np.int64(32), 64]).distribution
    assert listed.choices == (32, 64) and type(listed.choices[0]) is int
    layers = _param("layers", [(64,), (128, 64)])  # values Optuna cannot store go by repr
    assert layers.distribution.choices == ("(64,)", "(128, 64)")
    assert layers.decode("(128, 64)") == (128, 64) and layers.encode((64,)) == "(64,)"
    assert layers.encode((32,)) is None
    ints = _param("k", Range(10, 20, integer=True))
    assert ints.encode(15) == 15 and ints.encode(None) is None and ints.encode(25) is None
    with pytest.raises(InvalidInputError, match="low <= high"):
        Range(5, 1)
    with pytest.raises(InvalidInputError, match="low > 0"):
        LogRange(0, 1)
    with pytest.raises(InvalidInputError, match="list of values"):
        _param("reg", "auto")
    with pytest.raises(InvalidInputError, match="empty"):
        _param("reg", [])


def test_tune_refuses_what_cannot_work(data):
    with pytest.raises(InvalidInputError, match="no parameter"):
        tune("ease", data, space={"lambda": [1.0]})
    with pytest.raises(InvalidInputError, match="does not predict ratings"):
        tune("ease", data, metric="rmse")
    with pytest.raises(InvalidInputError, match="no search space"):
        tune("random", data)
    with pytest.raises(InvalidInputError, match="unknown ranking metric"):
        tune("ease", data, metric="accuracy")
    with pytest.raises(InvalidInputError, match="sampler"):
        tune("ease", data, sampler="grid")
    with pytest.raises(InvalidInputError, match="nothing to search"):
        tune("ease", data, fixed={"reg": 10.0})
    with pytest.raises(InvalidInputError, match="n_trials"):
        tune("ease", data, n_trials=0)


def test_every_default_space_names_real_parameters_with_valid_values():
    for name, space in DEFAULT_SPACES.items():
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        fields = {f.name for f in dataclasses.fields(get_class(name))}
        assert set(space) <= fields, f"{name}: {set(space) - fields} are not parameters"
        params = {p: _param(p, choice) for p, choice in space.items()}
        for _ in range(5):  # sampled values pass the model's own checks
            trial = study.ask({p: spec.distribution for p, spec in params.items()})
            values = {p: params[p].decode(v) for p, v in trial.params.items()}
            create(name, **values)._validate()
            study.tell(trial, 0.0)
