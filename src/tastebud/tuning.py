"""Hyper-parameter search on a validation split carved from the training data only.

``tune("ease", train)`` splits ``train`` once more (per-user random holdout), tries
parameter settings drawn from a search space, scores each on the validation part, and returns
the best setting and a results table. The test data are never seen, so the chosen model can
be evaluated honestly afterwards.

Search is seeded random search (Bergstra & Bengio, "Random search for hyper-parameter
optimization", JMLR 2012): with a handful of parameters it finds settings as good as a grid
at a fraction of the trials, needs no extra dependency, and is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from tastebud.data.dataset import Dataset
from tastebud.errors import InvalidInputError
from tastebud.evaluation import evaluate
from tastebud.metrics.ranking import metric_label
from tastebud.models import create, get_class
from tastebud.split import Split, random_split


@dataclass(frozen=True)
class Range:
    """A continuous range to sample from: uniformly, or uniformly on a log scale (``log``)
    for parameters whose useful values span orders of magnitude."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def sample(self, rng: np.random.Generator) -> float | int:
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        return round(value) if self.integer else value


def LogRange(low: float, high: float, integer: bool = False) -> Range:  # noqa: N802
    """Shorthand for ``Range(low, high, log=True)``."""
    return Range(low, high, log=True, integer=integer)


Space = Mapping[str, Sequence[Any] | Range]

#: Search spaces that suit typical data, per registered model name.
DEFAULT_SPACES: dict[str, dict[str, Any]] = {
    "ease": {"reg": LogRange(10.0, 5000.0)},
    "trending": {"half_life_days": LogRange(1.0, 365.0)},
    "baseline": {"reg_user": LogRange(1.0, 50.0), "reg_item": LogRange(1.0, 50.0)},
    "item-knn": {"k": LogRange(10, 400, integer=True), "shrinkage": LogRange(1.0, 300.0)},
    "user-knn": {"k": LogRange(10, 400, integer=True), "shrinkage": LogRange(1.0, 300.0)},
    "svd": {
        "n_factors": [32, 64, 128],
        "reg": LogRange(0.005, 0.2),
        "lr": LogRange(0.002, 0.02),
        "n_epochs": LogRange(10, 80, integer=True),
    },
    "svdpp": {
        "n_factors": [16, 32, 64],
        "reg": LogRange(0.005, 0.2),
        "lr": LogRange(0.002, 0.02),
        "n_epochs": LogRange(10, 60, integer=True),
    },
    "als": {
        "n_factors": [32, 64, 128],
        "reg": LogRange(1.0, 300.0),
        "alpha": LogRange(0.5, 20.0),
        "n_iterations": LogRange(5, 30, integer=True),
    },
    "bpr": {
        "n_factors": [32, 64, 128],
        "lr": LogRange(0.001, 0.05),
        "reg": LogRange(0.0001, 0.1),
        "n_epochs": LogRange(50, 400, integer=True),
    },
}


@dataclass
class TuningResult:
    """Outcome of :func:`tune`: the best parameters and every trial."""

    model: str
    metric: str
    best_params: dict[str, Any]
    best_score: float
    trials: pd.DataFrame

    def best_model(self) -> Any:
        """A new, unfitted model with the best parameters."""
        return create(self.model, **self.best_params)


def _sample(space: Space, rng: np.random.Generator) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, choice in space.items():
        if isinstance(choice, Range):
            params[name] = choice.sample(rng)
        else:
            options = list(choice)
            if not options:
                raise InvalidInputError(f"search space for {name!r} is empty")
            value = options[int(rng.integers(len(options)))]
            params[name] = value.item() if isinstance(value, np.generic) else value
    return params


def tune(
    model: str,
    train: Dataset,
    *,
    space: Space | None = None,
    n_trials: int = 20,
    metric: str = "ndcg",
    k: int = 10,
    validation_size: float = 0.2,
    relevance_threshold: float | None = None,
    fixed: Mapping[str, Any] | None = None,
    seed: int = 0,
    progress: bool | None = None,
) -> TuningResult:
    """Random search of ``model``'s hyper-parameters on a validation split of ``train``.

    Parameters
    ----------
    model:
        Registered model name.
    train:
        The training data; a per-user ``validation_size`` holdout of it is the validation set.
    space:
        Parameter -> list of values or a :class:`Range`; defaults
        to :data:`DEFAULT_SPACES` for the model. The model's defaults are always trial 1.
    metric:
        A ranking metric name (``ndcg``, ``recall``...) -- higher is better -- or ``rmse`` /
        ``mae`` for rating models -- lower is better.
    fixed:
        Parameters held constant in every trial.
    """
    cls = get_class(model)
    space = space if space is not None else DEFAULT_SPACES.get(cls.name)
    if not space:
        raise InvalidInputError(f"no search space for {cls.name}; pass space={{param: values}}")
    if n_trials < 1:
        raise InvalidInputError(f"n_trials must be >= 1, got {n_trials}")
    fields = set(cls.__dataclass_fields__)
    unknown = sorted((set(space) | set(fixed or {})) - fields)
    if unknown:
        raise InvalidInputError(f"{cls.name} has no parameter(s) {', '.join(unknown)}")
    split = random_split(train, validation_size, seed=seed)
    split = Split(split.train, split.test, name=f"validation of {train.name}")
    rating_metric = metric.lower() in ("rmse", "mae")
    if rating_metric and not cls.predicts_ratings:
        raise InvalidInputError(f"{cls.name} does not predict ratings; tune it on a ranking metric")
    label = metric.upper() if rating_metric else metric_label(metric, k)
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    trials: list[dict[str, Any]] = [{}] + [_sample(space, rng) for _ in range(n_trials - 1)]
    hide = None if progress is None else not progress
    bar = tqdm(trials, desc=f"tune {cls.name}", unit="trial", disable=hide)
    for params in bar:
        candidate = create(cls.name, **{**(fixed or {}), **params})
        result = evaluate(
            {cls.name: candidate},
            split,
            metrics=[metric] if not rating_metric else ["ndcg"],
            k=k,
            relevance_threshold=relevance_threshold,
            beyond_accuracy=False,
            progress=False,
        )
        values = dict(zip(result["metric"], result["value"], strict=True))
        shown = {name: candidate.get_params()[name] for name in space}
        rows.append({**shown, label: values[label], "fit_seconds": values["fit_seconds"]})
    table = pd.DataFrame(rows)
    scores = table[label].to_numpy(dtype=float)
    best = int(np.argmin(scores) if rating_metric else np.argmax(scores))
    best_params = {**(fixed or {}), **trials[best]}
    return TuningResult(
        model=cls.name,
        metric=label,
        best_params=best_params,
        best_score=float(table[label].iloc[best]),
        trials=table.sort_values(label, ascending=rating_metric).reset_index(drop=True),
    )
