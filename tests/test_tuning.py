from __future__ import annotations

import pytest

from tastebud.data.synthetic import synthetic
from tastebud.errors import InvalidInputError
from tastebud.tuning import LogRange, Range, tune


@pytest.fixture(scope="module")
def data():
    return synthetic(300, 120, 6_000, n_clusters=4, seed=4)


def test_tune_ranks_trials_and_never_loses_to_the_defaults(data):
    result = tune("ease", data, space={"reg": [0.5, 30.0, 5000.0]}, n_trials=6, seed=1)
    assert result.metric == "NDCG@10"
    assert len(result.trials) == 6
    scores = result.trials["NDCG@10"].tolist()
    assert scores == sorted(scores, reverse=True)
    assert result.best_score == scores[0]
    defaults_row = result.trials[result.trials.reg == 300.0]  # trial 1 is always the defaults
    assert len(defaults_row) == 1 and result.best_score >= defaults_row["NDCG@10"].iloc[0]
    assert result.best_model().get_params()["reg"] == result.best_params.get("reg", 300.0)


def test_tune_is_reproducible_and_supports_rating_metrics(data):
    a = tune("baseline", data, n_trials=4, metric="rmse", seed=3)
    b = tune("baseline", data, n_trials=4, metric="rmse", seed=3)
    assert a.best_params == b.best_params and a.metric == "RMSE"
    assert a.trials["RMSE"].is_monotonic_increasing  # lower is better, best first


def test_ranges_sample_on_the_right_scale():
    import numpy as np

    rng = np.random.default_rng(0)
    values = [LogRange(10, 1000, integer=True).sample(rng) for _ in range(200)]
    assert min(values) >= 10 and max(values) <= 1000 and all(isinstance(v, int) for v in values)
    assert sum(v < 100 for v in values) > 60  # log scale: half the mass below the geometric mean
    flat = [Range(10, 1000).sample(rng) for _ in range(200)]
    assert sum(v < 100 for v in flat) < 60  # uniform: ~9% of the mass below 100


def test_tune_refuses_what_cannot_work(data):
    with pytest.raises(InvalidInputError, match="no parameter"):
        tune("ease", data, space={"lambda": [1.0]})
    with pytest.raises(InvalidInputError, match="does not predict ratings"):
        tune("ease", data, metric="rmse")
    with pytest.raises(InvalidInputError, match="no search space"):
        tune("random", data)


def test_every_default_space_names_real_parameters_with_valid_values():
    import dataclasses

    import numpy as np

    from tastebud.models import create, get_class
    from tastebud.tuning import DEFAULT_SPACES, _sample

    rng = np.random.default_rng(0)
    for name, space in DEFAULT_SPACES.items():
        fields = {f.name for f in dataclasses.fields(get_class(name))}
        assert set(space) <= fields, f"{name}: {set(space) - fields} are not parameters"
        for _ in range(5):  # sampled values pass the model's own checks
            create(name, **_sample(space, rng))._validate()
