"""Hyper-parameter search on a validation split carved from the training data only.

``tune("ease", train)`` splits ``train`` once more (per-user random holdout), lets Optuna
propose parameter settings from a search space, scores each on the validation part, and
returns the best setting and a table of every trial. The test data are never seen, so the
chosen model can be evaluated honestly afterwards.

The search is Optuna's TPE (Bergstra et al., "Algorithms for hyper-parameter optimization",
NeurIPS 2011; multivariate, Falkner et al. 2018): after a few random trials it proposes
settings near the best ones so far. It is seeded, so the same seed gives the same trials and
the same best. The model's defaults are always the first trial. ``sampler="random"`` is plain
seeded random search (Bergstra & Bengio, JMLR 2012), what this module did before TPE.

Pruning: a model has to be fitted whole before it can be scored, so what can be cut short is
the scoring. Each trial ranks the validation users in four equal batches (the same users, in
the same order, for every trial) and reports the metric on the users scored so far; a trial
whose running score is worse than the median of earlier trials at the same point is stopped
(Optuna's ``MedianPruner``, after 5 complete trials). A pruned trial still paid for its fit,
so pruning saves most where ranking the catalogue costs as much as fitting (neighbour models,
large catalogues). ``benchmarks/tuning.py`` measures TPE against random search.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import Trial, TrialState
from tqdm.auto import tqdm

from tastebud.data import columns as C
from tastebud.data.dataset import Dataset
from tastebud.errors import InvalidInputError
from tastebud.evaluation import TestSet, prepare_test, ranking_scores
from tastebud.metrics.ranking import RANKING_METRICS, metric_label
from tastebud.models import Recommender, create, get_class
from tastebud.split import Split, random_split

#: Validation users are ranked in this many equal batches; a trial may be pruned after each
#: batch but the last.
PRUNING_STEPS = 4
SAMPLERS = ("tpe", "random")
#: Significant digits of the floats tried from a :class:`Range`.
RANGE_DIGITS = 4


@dataclass(frozen=True)
class Range:
    """A continuous range to search: uniformly, or uniformly on a log scale (``log``) for
    parameters whose useful values span orders of magnitude; ``integer`` for counts. Floats
    are tried rounded to :data:`RANGE_DIGITS` significant digits (``reg=423.5``)."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise InvalidInputError(f"a range needs low <= high, got {self.low}..{self.high}")
        if self.log and self.low <= 0:
            raise InvalidInputError(f"a log range needs low > 0, got {self.low}")

    def distribution(self) -> FloatDistribution | IntDistribution:
        """The Optuna distribution searched for this range."""
        if self.integer:
            return IntDistribution(math.ceil(self.low), math.floor(self.high), log=self.log)
        return FloatDistribution(float(self.low), float(self.high), log=self.log)


def LogRange(low: float, high: float, integer: bool = False) -> Range:  # noqa: N802
    """Shorthand for ``Range(low, high, log=True)``."""
    return Range(low, high, log=True, integer=integer)


#: A search space: parameter -> list of values, :class:`Range`, or an Optuna distribution.
Space = Mapping[str, Sequence[Any] | Range | BaseDistribution]

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
    """Outcome of :func:`tune`.

    ``trials`` has one row per trial (best first; pruned trials last, with no score): the
    trial number, the searched parameters as used, the validation score, ``state``
    (``complete`` or ``pruned``), ``fit_seconds`` and ``seconds`` (fit and scoring).
    ``protocol`` states how the search was run; ``study`` is the Optuna study (for its
    plots), ``None`` on results built by hand.
    """

    model: str
    metric: str
    best_params: dict[str, Any]
    best_score: float
    trials: pd.DataFrame
    protocol: dict[str, Any] = field(default_factory=dict)
    study: optuna.Study | None = field(default=None, repr=False)

    def best_model(self) -> Any:
        """A new, unfitted model with the best parameters."""
        return create(self.model, **self.best_params)

    @property
    def n_pruned(self) -> int:
        """How many trials were stopped early."""
        return int((self.trials["state"] == "pruned").sum())


@dataclass(frozen=True)
class _Param:
    """One searched parameter: its Optuna distribution and the map back to model values
    (categorical values Optuna cannot store, such as tuples, travel as their ``repr``).

    ``digits``: a float from a :class:`Range` is used rounded to this many significant
    digits, so the best setting reads (and is pasted, and refitted) as ``reg=423.5``, the very
    value that scored -- finer than any validation score tells apart."""

    distribution: BaseDistribution
    values: dict[Any, Any] | None = None
    digits: int | None = None

    def decode(self, value: Any) -> Any:
        if self.values is not None:
            return self.values[value]
        dist = self.distribution
        if self.digits is not None and isinstance(dist, FloatDistribution):
            return min(max(float(f"{value:.{self.digits}g}"), dist.low), dist.high)
        return value

    def encode(self, value: Any) -> Any:
        """Optuna's representation of a model value, or ``None`` if it is not in the space."""
        dist = self.distribution
        if self.values is not None:
            key = repr(value)
            return key if key in self.values else None
        if isinstance(dist, CategoricalDistribution):
            return (
                value if any(value == c and type(value) is type(c) for c in dist.choices) else None
            )
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            return None
        if isinstance(dist, IntDistribution):
            inside = float(value).is_integer() and dist.low <= value <= dist.high
            return int(value) if inside and (int(value) - dist.low) % dist.step == 0 else None
        if isinstance(dist, FloatDistribution) and dist.low <= value <= dist.high:
            return float(value)
        return None


def _param(name: str, choice: Any) -> _Param:
    if isinstance(choice, BaseDistribution):
        return _Param(choice)
    if isinstance(choice, Range):
        return _Param(choice.distribution(), digits=RANGE_DIGITS)
    if isinstance(choice, str | bytes) or not isinstance(choice, Sequence | np.ndarray):
        raise InvalidInputError(
            f"search space for {name!r} must be a list of values or a Range, got {choice!r}"
        )
    options = [v.item() if isinstance(v, np.generic) else v for v in choice]
    if not options:
        raise InvalidInputError(f"search space for {name!r} is empty")
    if all(v is None or isinstance(v, bool | int | float | str) for v in options):
        return _Param(CategoricalDistribution(options))
    values = {repr(v): v for v in options}
    if len(values) < len(options):
        raise InvalidInputError(f"search space for {name!r} repeats a value")
    return _Param(CategoricalDistribution(list(values)), values)


class _Validation:
    """The validation split and the scoring of one trial on it, in batches of users."""

    def __init__(
        self,
        train: Dataset,
        *,
        metric: str,
        k: int,
        size: float,
        relevance_threshold: float | None,
        seed: int,
        steps: int,
    ) -> None:
        carved = random_split(train, size, seed=seed)
        self.split = Split(carved.train, carved.test, name=f"validation of {train.name}")
        self.size = size
        self.rating = metric.lower() in ("rmse", "mae")
        self.metric = metric.lower()
        self.label = metric.upper() if self.rating else metric_label(metric, k)
        self.k = k
        rng = np.random.default_rng(seed)
        self.test: TestSet | None = None
        if self.rating:
            codes, uniques = pd.factorize(self.split.test[C.USER])
            order = rng.permutation(len(uniques))
            position = np.empty(len(uniques), dtype=np.int64)
            position[order] = np.arange(len(uniques))
            self.n_users = len(uniques)
            self.batches = [
                np.flatnonzero(np.isin(position[codes], chunk))
                for chunk in np.array_split(np.arange(len(uniques)), steps)
            ]
            self.truth = self.split.test[C.RATING].to_numpy(dtype=np.float64)
        else:
            self.test = prepare_test(self.split, relevance_threshold)
            self.n_users = len(self.test.users)
            self.batches = np.array_split(rng.permutation(self.n_users), steps)
        self.batches = [b for b in self.batches if len(b)]

    def scores(self, model: Recommender) -> Iterator[float]:
        """The metric on the first 1, 2, ... batches of users (the last: all of them)."""
        if self.rating:
            rows, errors = self.split.test, []
            for batch in self.batches:
                predicted = model.predict(rows.iloc[batch])
                errors.append(self.truth[batch] - np.asarray(predicted, dtype=np.float64))
                err = np.concatenate(errors)
                yield float(
                    np.sqrt(np.mean(err**2)) if self.metric == "rmse" else np.abs(err).mean()
                )
            return
        test, values = self.test, []
        assert test is not None
        for batch in self.batches:
            part = TestSet(
                user_ids=test.user_ids[batch],
                users=test.users[batch],
                relevant=test.relevant[batch],
                n_candidates=test.n_candidates[batch],
                n_items=test.n_items,
                threshold=test.threshold,
            )
            rec, _ = model.recommend_indices(part.users, self.k, exclude=model.seen_)
            values.append(ranking_scores(rec, part, [self.metric], self.k).iloc[:, 0].to_numpy())
            every = np.concatenate(values)
            finite = every[~np.isnan(every)]
            yield float(finite.mean()) if len(finite) else math.nan


@dataclass(frozen=True)
class _Outcome:
    """What one trial gave: the score on every validation user (NaN when pruned), the
    running scores reported to the pruner, and the fit time."""

    score: float
    steps: tuple[float, ...]
    fit_seconds: float
    pruned: bool


def _run_trial(validation: _Validation, model: Recommender, trial: Trial | None) -> _Outcome:
    """Fit ``model`` and score it batch by batch, reporting to ``trial``'s pruner."""
    start = time.perf_counter()
    model.fit(validation.split.train)
    fit_seconds = time.perf_counter() - start
    value, steps = math.nan, []
    last = len(validation.batches) - 1
    for step, value in enumerate(validation.scores(model)):
        if trial is not None and step < last:
            trial.report(value, step)
            steps.append(value)
            if trial.should_prune():
                return _Outcome(math.nan, tuple(steps), fit_seconds, pruned=True)
    return _Outcome(value, tuple(steps), fit_seconds, pruned=False)


def _replay(outcome: _Outcome, trial: Trial | None) -> _Outcome:
    """A setting tried before (samplers do propose repeats, most in small lists of values):
    the same outcome, reported again, without fitting the same model twice."""
    if trial is not None:
        for step, value in enumerate(outcome.steps):
            trial.report(value, step)
    return _Outcome(outcome.score, outcome.steps, 0.0, outcome.pruned)


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna logs every trial at INFO; the progress bar (or the CLI) reports instead."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def _study(sampler: str, seed: int, n_trials: int, pruning: bool, minimize: bool) -> optuna.Study:
    if sampler not in SAMPLERS:
        raise InvalidInputError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    chosen: optuna.samplers.BaseSampler
    if sampler == "tpe":
        # Optuna's 10 random start-up trials are half of a typical 20-trial budget; a third
        # of the budget (4 to 10) leaves TPE more trials to exploit.
        startup = min(10, max(4, n_trials // 3))
        with warnings.catch_warnings():  # experimental before Optuna 5, the default since
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            chosen = optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=startup, multivariate=True
            )
    else:
        chosen = optuna.samplers.RandomSampler(seed=seed)
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
        if pruning
        else optuna.pruners.NopPruner()
    )
    return optuna.create_study(
        direction="minimize" if minimize else "maximize", sampler=chosen, pruner=pruner
    )


def _check(
    cls: type[Recommender], space: Space | None, fixed: Mapping[str, Any], n_trials: int
) -> dict[str, _Param]:
    space = space if space is not None else DEFAULT_SPACES.get(cls.name)
    if not space:
        raise InvalidInputError(f"no search space for {cls.name}; pass space={{param: values}}")
    if n_trials < 1:
        raise InvalidInputError(f"n_trials must be >= 1, got {n_trials}")
    unknown = sorted((set(space) | set(fixed)) - set(cls.__dataclass_fields__))
    if unknown:
        raise InvalidInputError(f"{cls.name} has no parameter(s) {', '.join(unknown)}")
    params = {name: _param(name, choice) for name, choice in space.items() if name not in fixed}
    if not params:
        raise InvalidInputError("every parameter of the search space is fixed: nothing to search")
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
    sampler: str = "tpe",
    pruning: bool = True,
    timeout: float | None = None,
    progress: bool | None = None,
) -> TuningResult:
    """Search ``model``'s hyper-parameters on a validation split of ``train``.

    Parameters
    ----------
    model:
        Registered model name.
    train:
        The training data; a per-user ``validation_size`` holdout of it is the validation set.
    space:
        Parameter -> list of values, :class:`Range` / :func:`LogRange`, or an Optuna
        distribution; defaults to :data:`DEFAULT_SPACES` for the model. The model's defaults
        are always trial 1 (the sampler learns from it when they lie inside the space).
    n_trials:
        Trials in all, the defaults and pruned trials included.
    metric:
        A ranking metric name (``ndcg``, ``recall``...) -- higher is better -- or ``rmse`` /
        ``mae`` for rating models -- lower is better.
    fixed:
        Parameters held constant in every trial (taken out of the space).
    seed:
        Seeds the validation split, the order users are scored in, and the sampler: the same
        seed gives the same trials and the same best (unless ``timeout`` cuts the run).
    sampler:
        ``"tpe"`` (default) or ``"random"``.
    pruning:
        Stop trials whose running score on the first batches of validation users is below
        the median of earlier trials (see the module docstring).
    timeout:
        Seconds after which no new trial starts.
    """
    cls = get_class(model)
    fixed = dict(fixed or {})
    params = _check(cls, space, fixed, n_trials)
    if metric.lower() in ("rmse", "mae"):
        if not cls.predicts_ratings:
            raise InvalidInputError(
                f"{cls.name} does not predict ratings; tune it on a ranking metric"
            )
        if train.rating is None:
            raise InvalidInputError(f"{metric} needs ratings and {train.name} has none")
    elif metric.lower() not in RANKING_METRICS:
        metric_label(metric, k)  # raises the clear error
    validation = _Validation(
        train,
        metric=metric,
        k=k,
        size=validation_size,
        relevance_threshold=relevance_threshold,
        seed=seed,
        steps=PRUNING_STEPS if pruning else 1,
    )
    with _quiet_optuna():
        study = _study(sampler, seed, n_trials, pruning, validation.rating)
        rows = _search(cls, params, fixed, validation, study, n_trials, timeout, progress)
    protocol = _protocol(train, validation, sampler=sampler, pruning=pruning, seed=seed)
    protocol |= {"n_trials": n_trials, "timeout_s": timeout}
    return _result(cls.name, params, fixed, validation, study, rows, protocol)


def _search(
    cls: type[Recommender],
    params: dict[str, _Param],
    fixed: dict[str, Any],
    validation: _Validation,
    study: optuna.Study,
    n_trials: int,
    timeout: float | None,
    progress: bool | None,
) -> list[dict[str, Any]]:
    """Run the trials: the defaults first (in the study when they fit the space), then the
    sampler's proposals until ``n_trials`` or ``timeout``. One row per trial."""
    defaults = create(cls.name, **fixed).get_params()
    encoded = {name: p.encode(defaults[name]) for name, p in params.items()}
    defaults_in_study = all(v is not None for v in encoded.values())
    if defaults_in_study:
        study.enqueue_trial(encoded)
    distributions = {name: p.distribution for name, p in params.items()}
    rows: list[dict[str, Any]] = []
    hide = None if progress is None else not progress
    bar = tqdm(total=n_trials, desc=f"tune {cls.name}", unit="trial", disable=hide)
    started = time.perf_counter()
    sign = 1.0 if validation.rating else -1.0  # best = smallest sign * score
    best = math.inf
    tried: dict[str, _Outcome] = {}
    for number in range(n_trials):
        if number and timeout is not None and time.perf_counter() - started > timeout:
            break
        trial = None if number == 0 and not defaults_in_study else study.ask(distributions)
        values = {} if trial is None else {n: params[n].decode(v) for n, v in trial.params.items()}
        candidate = create(cls.name, **{**fixed, **values})
        used = candidate.get_params()
        key = repr([used[name] for name in params])
        t0 = time.perf_counter()
        try:
            outcome = (
                _replay(tried[key], trial)
                if key in tried
                else _run_trial(validation, candidate, trial)
            )
        except BaseException:
            if trial is not None:
                study.tell(trial, state=TrialState.FAIL)
            raise
        tried.setdefault(key, outcome)
        if trial is not None and outcome.pruned:
            study.tell(trial, state=TrialState.PRUNED)
        elif trial is not None:
            study.tell(trial, outcome.score)
        if not outcome.pruned:
            best = min(best, sign * outcome.score)
        rows.append(
            {"trial": number + 1}
            | {name: used[name] for name in params}
            | {validation.label: outcome.score, "state": "pruned" if outcome.pruned else "complete"}
            | {"fit_seconds": outcome.fit_seconds, "seconds": time.perf_counter() - t0}
        )
        bar.update()
        bar.set_postfix_str(f"best {validation.label} {sign * best:.4f}")
    bar.close()
    return rows


def _protocol(
    train: Dataset, validation: _Validation, *, sampler: str, pruning: bool, seed: int
) -> dict[str, Any]:
    """How the search was run, stated with the result (and logged by tracking)."""
    test = validation.test
    return {
        "train": train.name,
        "validation": (
            f"per-user random {validation.size:g} of the training data (seed {seed}); "
            "the test data are never seen"
        ),
        "validation_users": validation.n_users,
        "validation_interactions": len(validation.split.test),
        "metric": validation.label,
        "relevance": (
            f"validation rating >= {test.threshold:g}"
            if test is not None and test.threshold is not None
            else "every validation interaction"
        ),
        "sampler": "TPE (multivariate)" if sampler == "tpe" else "random",
        "pruning": (
            f"median rule after each of the first {PRUNING_STEPS - 1} of {PRUNING_STEPS} "
            "batches of validation users"
            if pruning
            else "none"
        ),
        "seed": seed,
    }


def _result(
    name: str,
    params: dict[str, _Param],
    fixed: dict[str, Any],
    validation: _Validation,
    study: optuna.Study,
    rows: list[dict[str, Any]],
    protocol: dict[str, Any],
) -> TuningResult:
    label = validation.label
    table = pd.DataFrame(rows).sort_values(
        [label, "trial"], ascending=[validation.rating, True], na_position="last", kind="stable"
    )
    table = table.reset_index(drop=True)
    best = rows[int(table["trial"].iloc[0]) - 1]  # the row as built: plain Python values
    protocol = protocol | {
        "trials_run": len(table),
        "trials_pruned": int((table["state"] == "pruned").sum()),
    }
    if protocol.get("timeout_s") is None:
        protocol.pop("timeout_s", None)
    return TuningResult(
        model=name,
        metric=label,
        best_params={**fixed, **{p: best[p] for p in params}},
        best_score=float(best[label]),
        trials=table,
        protocol=protocol,
        study=study,
    )
