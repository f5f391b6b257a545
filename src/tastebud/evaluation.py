"""Evaluation: ``evaluate`` models on a split, ``cross_validate``, paired significance tests.

Protocol (stated in every result's ``attrs["protocol"]``): each model is fitted on
``split.train``; for every test user with at least one relevant test item it ranks the *whole*
catalog minus the user's training items and the top ``k`` are scored against the user's
relevant test items. A test item is relevant if its rating is ``>= relevance_threshold`` (when
given) -- otherwise every held-out interaction is relevant. Relevant items the training data
never saw count in the denominators (they cannot be recommended). Rating models are also
scored on every test row with RMSE and MAE.

Results are tidy tables (one row per model and metric) so they can be filtered, pivoted,
plotted and written to reports.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats
from tqdm.auto import tqdm

from tastebud.data import columns as C
from tastebud.data.dataset import Dataset
from tastebud.data.validate import clean_interactions
from tastebud.errors import InvalidInputError
from tastebud.features import feature_matrix
from tastebud.metrics import beyond, ranking, rating
from tastebud.metrics.ranking import check_k
from tastebud.models import Recommender, create
from tastebud.pipeline.config import load_config
from tastebud.pipeline.replay import describe, replay
from tastebud.split import Split, kfold

DEFAULT_METRICS = ("precision", "recall", "ndcg", "map", "mrr", "hit_rate")
ModelSpec = Recommender | str


@dataclass
class TestSet:
    """A split's test data prepared once for ranking evaluation of many models.

    ``users`` are internal indices of evaluated users (-1 for users unknown to training);
    ``relevant`` is a CSR matrix (len(users) x (n_items + extra)) whose extra columns stand for
    relevant items the training data never saw.
    """

    user_ids: np.ndarray
    users: np.ndarray
    relevant: sp.csr_matrix
    n_candidates: np.ndarray
    n_items: int
    threshold: float | None


def prepare_test(
    split: Split, relevance_threshold: float | None = None, candidates: np.ndarray | None = None
) -> TestSet:
    """Relevance matrix and candidate counts of a split's test users (``candidates``:
    internal indices of the only items ranked, default all)."""
    train, test = split.train, split.test
    if not isinstance(test, pd.DataFrame):
        raise InvalidInputError("the split's test set must be a DataFrame with user and item")
    clean_interactions(
        test,
        user=C.USER,
        item=C.ITEM,
        rating=C.RATING if C.RATING in test.columns else None,
        source="test set",
    )
    rel = test
    if relevance_threshold is not None:
        if C.RATING not in test.columns:
            raise InvalidInputError("relevance_threshold needs a 'rating' column in the test set")
        rel = test[test[C.RATING].to_numpy() >= relevance_threshold]
    rel = rel.drop_duplicates([C.USER, C.ITEM])
    if len(rel) == 0:
        raise InvalidInputError("no relevant test interactions (check relevance_threshold)")
    user_codes, user_ids = pd.factorize(rel[C.USER], sort=True)
    items = train.items.to_index(rel[C.ITEM].to_numpy(), on_unknown="ignore")
    unseen = items < 0
    if unseen.any():  # give never-seen items their own columns past the catalog
        extra_codes, _ = pd.factorize(rel[C.ITEM].to_numpy()[unseen])
        items = items.copy()
        items[unseen] = train.n_items + extra_codes
    n_cols = int(max(items.max() + 1, train.n_items))
    relevant = sp.csr_matrix(
        (np.ones(len(items)), (user_codes, items)), shape=(len(user_ids), n_cols)
    )
    relevant.sum_duplicates()
    uidx = train.users.to_index(np.asarray(user_ids), on_unknown="ignore")
    seen = np.where(uidx >= 0, train.user_activity()[np.maximum(uidx, 0)], 0)
    # Relevant items that cannot be ranked -- unknown to training, or already in the user's
    # training history -- count as candidates tied at the bottom (for AUC's negatives count).
    n_unrankable = np.asarray((relevant[:, train.n_items :] > 0).sum(axis=1)).ravel()
    history = train.matrix("binary")[np.maximum(uidx, 0)]
    history = sp.diags((uidx >= 0).astype(np.float64)) @ history
    n_unrankable += (
        np.asarray(history.multiply(relevant[:, : train.n_items]).sum(axis=1))
        .ravel()
        .astype(np.int64)
    )
    n_candidates = train.n_items - seen + n_unrankable
    if candidates is not None:
        # Relevant items outside the candidates (or unknown, or seen) cannot be ranked.
        ranked = np.zeros(train.n_items, dtype=bool)
        ranked[candidates] = True
        seen_ranked = np.asarray(history[:, candidates].sum(axis=1)).ravel().astype(np.int64)
        known_relevant = sp.csr_matrix(relevant[:, : train.n_items])
        rel_rankable = known_relevant.multiply(ranked[None, :]) - history.multiply(
            known_relevant
        ).multiply(ranked[None, :])
        n_rel = np.diff(relevant.indptr)
        n_rel_rankable = np.asarray(sp.csr_matrix(rel_rankable).sum(axis=1)).ravel()
        n_candidates = len(candidates) - seen_ranked + (n_rel - n_rel_rankable).astype(np.int64)
    return TestSet(
        user_ids=np.asarray(user_ids),
        users=uidx,
        relevant=relevant,
        n_candidates=n_candidates,
        n_items=train.n_items,
        threshold=relevance_threshold,
    )


def _label(metric: str, k: int) -> str:
    return ranking.metric_label(metric, k)


def ranking_scores(
    recommended: np.ndarray, test: TestSet, metrics: Sequence[str], k: int
) -> pd.DataFrame:
    """Per-user ranking metrics: rows are test users, columns metric labels."""
    out: dict[str, np.ndarray] = {}
    for name in metrics:
        key = name.lower()
        if key not in ranking.RANKING_METRICS:
            raise InvalidInputError(
                f"unknown metric {name!r}; ranking metrics: {', '.join(ranking.RANKING_METRICS)}"
            )
        fn = ranking.RANKING_METRICS[key]
        if key == "auc":
            out[_label(key, k)] = fn(recommended, test.relevant, k, test.n_candidates)
        else:
            out[_label(key, k)] = fn(recommended, test.relevant, k)
    return pd.DataFrame(out, index=pd.Index(test.user_ids, name=C.USER))


@dataclass
class _Context:
    """What scoring every model shares: the split, its test set and the settings, and what the
    beyond-accuracy and fairness metrics compare with (derived on creation)."""

    split: Split
    test: TestSet
    k: int
    metrics: tuple[str, ...]
    beyond: bool
    candidates: np.ndarray | None  # the only items ranked (None: all)
    pipeline: Any  # the pipeline settings replayed (None: the model's own top-k)
    fairness_by: str | None
    popular: np.ndarray | None = field(init=False, default=None)
    item_features: sp.csr_matrix | None = field(init=False, default=None)
    groups: pd.Series | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        train = self.split.train
        if self.beyond:
            popularity = create("popularity").fit(train)
            self.popular, _ = popularity.recommend_indices(
                self.test.users, self.k, exclude=popularity.seen_, items=self.candidates
            )
            if train.item_features is not None:
                self.item_features = feature_matrix(train.item_features)
        if self.fairness_by:
            self.groups = _group_labels(train, self.fairness_by)


def _mean(values: np.ndarray) -> float:
    """Mean over the defined (non-NaN) values; NaN, without a warning, when there are none."""
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if len(finite) else math.nan


def _beyond_scores(rec: np.ndarray, ctx: _Context) -> dict[str, float]:
    train, k = ctx.split.train, ctx.k
    pop = train.item_popularity()
    out = {
        f"Coverage@{k}": beyond.catalog_coverage(rec, train.n_items, k),
        f"Novelty@{k}": _mean(beyond.novelty(rec, pop, train.n_users, k)),
        f"ARP@{k}": _mean(beyond.average_popularity(rec, pop, k)),
        f"Gini@{k}": beyond.gini_index(rec, train.n_items, k),
    }
    if ctx.popular is not None:
        out[f"Serendipity@{k}"] = _mean(beyond.serendipity(rec, ctx.test.relevant, ctx.popular, k))
    if ctx.item_features is not None and ctx.item_features.shape[1] > 0:
        out[f"ILD@{k}"] = _mean(beyond.intra_list_diversity(rec, ctx.item_features, k))
    return out


def _fairness(per_user: pd.DataFrame, groups: pd.Series, k: int) -> dict[str, float]:
    """Metric means per user group and the gap between the best and worst group."""
    label = _label("ndcg", k) if _label("ndcg", k) in per_user else per_user.columns[0]
    values = per_user[label].to_numpy()
    labels = groups.reindex(per_user.index).to_numpy()
    present = pd.notna(labels)
    if present.sum() == 0 or len(set(labels[present].tolist())) < 2:
        return {}
    gap = beyond.group_gap(values[present], labels[present])
    sizes = pd.Series(labels[present]).value_counts()
    out = {f"{label} [{groups.name}={g}]": float(v) for g, v in gap["by_group"].items()}
    out |= {f"users [{groups.name}={g}]": float(sizes.get(g, 0)) for g in gap["by_group"]}
    out[f"{label} gap by {groups.name}"] = float(gap["gap"])
    return out


def _group_labels(train: Dataset, column: str) -> pd.Series:
    if train.user_features is None or column not in train.user_features.columns:
        raise InvalidInputError(f"no user feature {column!r} to group users by")
    col = train.user_features[column]
    if pd.api.types.is_numeric_dtype(col.dtype) and col.nunique() > 8:
        col = pd.qcut(col, 4, duplicates="drop").astype(str)  # numeric: quartile bands
    return pd.Series(col.to_numpy(), index=train.users.index, name=column)


def _resolve_models(
    models: ModelSpec | Iterable[ModelSpec] | Mapping[str, ModelSpec],
) -> dict[str, Recommender]:
    if isinstance(models, Recommender | str):
        models = [models]
    items = list(models.items()) if isinstance(models, Mapping) else [(None, m) for m in models]
    out: dict[str, Recommender] = {}
    for label, spec in items:
        model = create(spec) if isinstance(spec, str) else spec
        if not isinstance(model, Recommender):
            raise InvalidInputError(f"not a model: {spec!r}")
        name = label or model.name or type(model).__name__
        base, n = name, 2
        while name in out:
            name, n = f"{base}#{n}", n + 1
        out[name] = model
    if not out:
        raise InvalidInputError("no models to evaluate")
    return out


def _protocol(ctx: _Context) -> dict[str, Any]:
    """What was measured, how: ``attrs["protocol"]`` of :func:`evaluate`'s result."""
    train, test = ctx.split.train, ctx.split.test
    users = test[C.USER].drop_duplicates().to_numpy()
    items = test[C.ITEM].drop_duplicates().to_numpy()
    protocol: dict[str, Any] = {
        "k": ctx.k,
        "candidates": "all items minus the user's training items",
        "ties": "equal scores rank the smaller id first (ids in sorted order)",
        "test_users_unknown_to_training": int(
            (train.users.to_index(users, on_unknown="ignore") < 0).sum()
        ),
        "test_items_unknown_to_training": int(
            (train.items.to_index(items, on_unknown="ignore") < 0).sum()
        ),
        "relevance": (
            f"test rating >= {ctx.test.threshold:g}"
            if ctx.test.threshold is not None
            else "every test interaction"
        ),
        "users_evaluated": len(ctx.test.users),
        "train_interactions": len(ctx.split.train),
        "test_interactions": len(ctx.split.test),
        "split": ctx.split.name,
    }
    if ctx.pipeline is not None:
        protocol.update(describe(ctx.pipeline))
        protocol["candidates"] = "the pipeline's generators (see pipeline)"
    if ctx.candidates is not None:
        protocol["candidates"] = (
            f"{len(ctx.candidates)} given items minus the user's training items"
        )
    return protocol


def evaluate(
    models: ModelSpec | Iterable[ModelSpec] | Mapping[str, ModelSpec],
    split: Split,
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    k: int = 10,
    relevance_threshold: float | None = None,
    beyond_accuracy: bool = True,
    fairness_by: str | None = None,
    fit: bool = True,
    progress: bool | None = None,
    per_user: dict[str, pd.DataFrame] | None = None,
    candidates: Any = None,
    pipeline: Any = None,
) -> pd.DataFrame:
    """Fit each model on ``split.train`` and score it on ``split.test``.

    Parameters
    ----------
    models:
        Models or registered names; a mapping gives them labels.
    metrics:
        Ranking metric names (``precision, recall, f1, map, ndcg, mrr, hit_rate, auc``).
    k:
        List length.
    relevance_threshold:
        Only test interactions rated at least this are relevant (default: all of them).
    beyond_accuracy:
        Also report coverage, novelty, ARP, Gini, serendipity (vs popularity) and intra-list
        diversity (when items have features).
    fairness_by:
        A user feature (e.g. ``"gender"``; numbers are cut in quartiles) to report NDCG by
        group and the gap between groups.
    fit:
        Refit the models (``False`` evaluates already fitted ones).
    progress:
        Show a progress bar (default: only in a terminal).
    per_user:
        If a dict is passed, it is filled with each model's per-user metric table (for
        :func:`paired_test`).
    candidates:
        Item ids that are the only ones ranked (default: the whole catalog) -- e.g.
        ``"test"``, the items of the test set, to measure how well models rank a cold-item
        split's new items among themselves. Items unknown to training are ignored.
    pipeline:
        Score the lists the service would show instead of the model's own top-k: each test
        user's training history replayed through :mod:`tastebud.pipeline` (generators,
        ranker, re-rankers) with live state built from the training data as of the split.
        A settings file (TOML/JSON, the one ``tastebud serve --config`` reads), a mapping
        with the same keys, a :class:`~tastebud.pipeline.PipelineSettings`, or ``True``
        for the default pipeline.

    Returns
    -------
    Tidy DataFrame with columns ``model, metric, value``; ``attrs["protocol"]`` states the
    protocol.
    """
    if not isinstance(split, Split):
        raise InvalidInputError("evaluate needs a Split (see tastebud.split)")
    k = check_k(k)
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    resolved = _resolve_models(models)
    cand = _candidate_index(split.train, split.test, candidates)
    config = _pipeline_config(pipeline, cand)
    test = prepare_test(split, relevance_threshold, cand)
    ctx = _Context(split, test, k, tuple(metrics), beyond_accuracy, cand, config, fairness_by)
    rows: list[tuple[str, str, float]] = []
    bar = tqdm(
        resolved.items(), desc="evaluate", unit="model", disable=_no_bar(progress, len(resolved))
    )
    for label, model in bar:
        bar.set_postfix_str(label)
        values, users_table = _score_model(model, ctx, fit=fit)
        if per_user is not None:
            per_user[label] = users_table
        rows += [(label, metric, value) for metric, value in values.items()]
    result = pd.DataFrame(rows, columns=["model", "metric", "value"])
    result.attrs["protocol"] = _protocol(ctx)
    return result


def _pipeline_config(pipeline: Any, candidates: np.ndarray | None) -> Any:
    """The pipeline settings ``evaluate(pipeline=...)`` replays (``None``: the model alone)."""
    if pipeline is None or pipeline is False:
        return None
    if candidates is not None:
        raise InvalidInputError(
            "candidates= and pipeline= cannot be combined: the pipeline's generators "
            "choose the candidates"
        )
    return load_config(None if pipeline is True else pipeline)


def _score_model(
    model: Recommender, ctx: _Context, *, fit: bool
) -> tuple[dict[str, float], pd.DataFrame]:
    """Fit (or check) one model, make its lists and score them: the metric values and the
    per-user table."""
    train, test, k = ctx.split.train, ctx.test, ctx.k
    t0 = time.perf_counter()
    if fit:
        model.fit(train)
    else:
        model._require_fitted()
    t1 = time.perf_counter()
    if ctx.pipeline is None:
        rec, _ = model.recommend_indices(test.users, k, exclude=model.seen_, items=ctx.candidates)
    else:
        rec = replay(model, train, test.users, k, ctx.pipeline, user_ids=test.user_ids)
    t2 = time.perf_counter()
    users_table = ranking_scores(rec, test, ctx.metrics, k)
    values: dict[str, float] = {str(c): _mean(users_table[c].to_numpy()) for c in users_table}
    split_test = ctx.split.test
    if model.predicts_ratings and C.RATING in split_test.columns:
        predicted = model.predict(split_test)
        truth = split_test[C.RATING].to_numpy(dtype=np.float64)
        values["RMSE"] = rating.rmse(truth, predicted)
        values["MAE"] = rating.mae(truth, predicted)
    if ctx.beyond:
        values.update(_beyond_scores(rec, ctx))
    if ctx.groups is not None:
        values.update(_fairness(users_table, ctx.groups, k))
    values["fit_seconds"] = t1 - t0
    values["recommend_seconds"] = t2 - t1
    return values, users_table


def _candidate_index(train: Dataset, test: pd.DataFrame, candidates: Any) -> np.ndarray | None:
    """Internal indices of the items to rank (``None``: all)."""
    if candidates is None:
        return None
    if isinstance(candidates, str):
        if candidates != "test":
            raise InvalidInputError(
                f"candidates must be item ids or 'test' (the test set's items), got {candidates!r}"
            )
        candidates = test[C.ITEM].drop_duplicates().to_numpy()
    if not isinstance(candidates, Iterable) or isinstance(candidates, bytes):
        candidates = [candidates]  # one id
    idx = train.items.to_index(list(candidates), on_unknown="ignore")
    idx = np.unique(idx[idx >= 0])
    if len(idx) == 0:
        raise InvalidInputError("none of the candidate items is known to the training data")
    return idx


def _no_bar(progress: bool | None, n: int) -> bool | None:
    if progress is None:
        return None if n > 1 else True  # tqdm: None = only when writing to a terminal
    return not progress


def leaderboard(results: pd.DataFrame, sort_by: str | None = None) -> pd.DataFrame:
    """Pivot a tidy result to one row per model, best first by ``sort_by`` (default NDCG)."""
    table = results.pivot_table(index="model", columns="metric", values="value", sort=False)
    table.columns.name = None
    metrics_order = list(dict.fromkeys(results["metric"]))
    table = table[[m for m in metrics_order if m in table.columns]]
    if sort_by is None:
        sort_by = next((c for c in table.columns if c.startswith("NDCG@")), None)
    if sort_by is not None and sort_by in table.columns:
        ascending = sort_by in ("RMSE", "MAE")
        table = table.sort_values(sort_by, ascending=ascending)
    return table


def cross_validate(
    models: ModelSpec | Iterable[ModelSpec] | Mapping[str, ModelSpec],
    dataset: Dataset | Split | Sequence[Split],
    *,
    folds: int = 5,
    seed: int = 0,
    progress: bool | None = None,
    **kwargs: Any,
) -> pd.DataFrame:
    """Evaluate on each of ``folds`` user-stratified folds (or on given splits).

    Returns the tidy table with a ``fold`` column; summarize it with :func:`summarize`.
    """
    if isinstance(dataset, Dataset):
        splits = kfold(dataset, folds, seed=seed)
    elif isinstance(dataset, Split):
        splits = [dataset]
    else:
        splits = list(dataset)
    if not splits or not all(isinstance(s, Split) for s in splits):
        raise InvalidInputError("cross_validate needs a Dataset or a non-empty list of Splits")
    tables = []
    for number, split in enumerate(
        tqdm(splits, desc="folds", unit="fold", disable=_no_bar(progress, len(splits))), start=1
    ):
        table = evaluate(models, split, progress=False, **kwargs)
        table.insert(1, "fold", number)
        tables.append(table)
    result = pd.concat(tables, ignore_index=True)
    result.attrs["protocol"] = tables[0].attrs["protocol"] | {"folds": len(splits)}
    return result


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation and count over folds per model and metric."""
    grouped = results.groupby(["model", "metric"], sort=False)["value"]
    return grouped.agg(["mean", "std", "count"]).reset_index()


@dataclass(frozen=True)
class PairedTest:
    """Outcome of a paired test between two models over the same users."""

    metric: str
    n: int
    mean_a: float
    mean_b: float
    difference: float
    ci_low: float
    ci_high: float
    statistic: float
    p_value: float
    method: str

    def significant(self, alpha: float = 0.05) -> bool:
        return self.p_value < alpha


def paired_test(
    a: pd.DataFrame | pd.Series | Sequence[float],
    b: pd.DataFrame | pd.Series | Sequence[float],
    metric: str | None = None,
    *,
    method: str = "t",
) -> PairedTest:
    """Paired test of mean(a - b) = 0 over users present in both (per-user metric tables).

    ``method="t"``: Student's paired t-test with a 95% confidence interval of the difference;
    ``"wilcoxon"``: the Wilcoxon signed-rank test (no normality assumption; the interval is
    still the t interval). See Sakai, "Statistical reform in information retrieval", SIGIR
    Forum 2014, for why paired tests over users are the right comparison.
    """

    def column(values: Any) -> pd.Series:
        if isinstance(values, pd.DataFrame):
            if metric is None or metric not in values.columns:
                found = ", ".join(map(str, values.columns))
                raise InvalidInputError(f"name a metric column to compare (columns: {found})")
            values = values[metric]
        series = (
            values if isinstance(values, pd.Series) else pd.Series(np.asarray(values, dtype=float))
        )
        if not series.index.is_unique:
            raise InvalidInputError("per-user values must have one entry per user (unique index)")
        return series.astype(float)

    a, b = column(a), column(b)
    joined = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
    n = len(joined)
    if n < 2:
        raise InvalidInputError("a paired test needs at least 2 users present in both tables")
    diff = joined["a"].to_numpy() - joined["b"].to_numpy()
    mean = float(diff.mean())
    se = float(diff.std(ddof=1) / math.sqrt(n))
    half = float(stats.t.ppf(0.975, n - 1) * se) if se > 0 else 0.0
    if method == "t":
        if se == 0:
            statistic, p_value = 0.0, 1.0 if mean == 0 else 0.0
        else:
            res = stats.ttest_rel(joined["a"], joined["b"])
            statistic, p_value = float(res.statistic), float(res.pvalue)
    elif method == "wilcoxon":
        if np.all(diff == 0):
            statistic, p_value = 0.0, 1.0
        else:
            res = stats.wilcoxon(diff)
            statistic, p_value = float(res.statistic), float(res.pvalue)
    else:
        raise InvalidInputError(f"method must be 't' or 'wilcoxon', got {method!r}")
    return PairedTest(
        metric=metric or (str(a.name) if a.name is not None else "metric"),
        n=n,
        mean_a=float(joined["a"].mean()),
        mean_b=float(joined["b"].mean()),
        difference=mean,
        ci_low=mean - half,
        ci_high=mean + half,
        statistic=statistic,
        p_value=p_value,
        method=method,
    )


def compare(
    model_a: ModelSpec,
    model_b: ModelSpec,
    split: Split,
    *,
    metric: str = "ndcg",
    k: int = 10,
    method: str = "t",
    **kwargs: Any,
) -> PairedTest:
    """Evaluate two models on the same split and test the per-user difference in ``metric``."""
    tables: dict[str, pd.DataFrame] = {}
    resolved = _resolve_models([model_a, model_b])
    evaluate(
        resolved, split, metrics=[metric], k=k, per_user=tables, beyond_accuracy=False, **kwargs
    )
    first, second = list(resolved)
    return paired_test(tables[first], tables[second], _label(metric, k), method=method)
