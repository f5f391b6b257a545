"""Evaluating a Spark ALS on a held-out set, with the library's protocol.

The protocol of :func:`tastebud.evaluate`: every test user with at least one relevant
test item ranks the whole catalogue minus their training items; the top ``k`` are scored
against the relevant test items (all of them, or those rated at least
``relevance_threshold``); relevant items the training data never saw count in the
denominators. Rating-prediction models are also scored on the test rows they can
predict (RMSE, MAE).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from tastebud.data import columns as C
from tastebud.errors import InvalidInputError
from tastebud.metrics.ranking import check_k
from tastebud.spark.io import ITEM_INDEX, USER_INDEX, Interactions
from tastebud.spark.metrics import DEFAULT_METRICS, N_CANDIDATES, mean_metrics, ranking_metrics

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from tastebud.spark.als import SparkALS


def relevant_items(test: Interactions, relevance_threshold: float | None = None) -> DataFrame:
    """The test set's relevant ``(user, item)`` pairs (rated at least the threshold when
    one is given)."""
    from pyspark.sql import functions as F

    frame = test.frame
    if relevance_threshold is not None:
        if not test.has_rating:
            raise InvalidInputError("relevance_threshold needs ratings in the test set")
        frame = frame.where(F.col(C.RATING) >= float(relevance_threshold))
    return frame.select(C.USER, C.ITEM).distinct()


def candidate_counts(model: SparkALS, relevant: DataFrame) -> DataFrame:
    """``(user, n_candidates)``: the items each test user's list was chosen from (the
    catalogue minus their training items), plus their relevant items that could not be
    ranked -- unknown to training, or in their training history -- which AUC counts as
    tied at the bottom (the library's ``prepare_test``)."""
    from pyspark.sql import functions as F

    n_items = int(model.info["items"])
    seen = (
        model.ratings.groupBy(USER_INDEX)
        .agg(F.count(F.lit(1)).alias("_seen"))
        .join(model.users, USER_INDEX)
        .select(C.USER, "_seen")
    )
    indexed = relevant.join(model.items, C.ITEM, "left").join(model.users, C.USER, "left")
    history = model.ratings.select(USER_INDEX, ITEM_INDEX, F.lit(True).alias("_in_history"))
    flagged = indexed.join(history, [USER_INDEX, ITEM_INDEX], "left")
    unrankable = F.col(ITEM_INDEX).isNull() | F.col("_in_history").isNotNull()
    per_user = flagged.groupBy(C.USER).agg(F.sum(unrankable.cast("long")).alias("_unrankable"))
    return per_user.join(seen, C.USER, "left").select(
        C.USER,
        (F.lit(n_items) - F.coalesce(F.col("_seen"), F.lit(0)) + F.col("_unrankable")).alias(
            N_CANDIDATES
        ),
    )


def evaluate(
    model: SparkALS,
    test: Interactions,
    *,
    k: int = 10,
    metrics: Sequence[str] = DEFAULT_METRICS,
    relevance_threshold: float | None = None,
) -> tuple[dict[str, float], DataFrame]:
    """Score ``model`` on ``test`` (module docstring).

    Returns the mean of each metric over the evaluated users (labels such as
    ``NDCG@10``; ``users`` is their count; ``RMSE`` and ``MAE`` for a rating-prediction
    model) and the per-user table (:func:`tastebud.spark.metrics.ranking_metrics`), for
    paired tests or a closer look.

    A test user the model does not know gets no list (every metric 0), where the library
    would give them popular items; a per-user split (:func:`tastebud.spark.random_split`)
    keeps every test user in training.
    """
    from pyspark.sql import functions as F

    k = check_k(k)
    relevant = relevant_items(test, relevance_threshold)
    users = relevant.select(C.USER).distinct()
    recommendations = model.recommend(k, users=users)
    wanted = [str(m).lower() for m in metrics]
    counts = candidate_counts(model, relevant) if "auc" in wanted else None
    per_user = ranking_metrics(recommendations, relevant, k, wanted, n_candidates=counts)
    summary = mean_metrics(per_user)
    if not model.info.get("implicit", True):
        predicted = model.predict(test.frame.select(C.USER, C.ITEM, C.RATING))
        error = F.col("prediction") - F.col(C.RATING)
        row = predicted.agg(
            F.sqrt(F.avg(error * error)).alias("RMSE"),
            F.avg(F.abs(error)).alias("MAE"),
            F.count(F.lit(1)).alias("predicted"),
        ).first()
        assert row is not None
        summary["RMSE"] = float("nan") if row["RMSE"] is None else float(row["RMSE"])
        summary["MAE"] = float("nan") if row["MAE"] is None else float(row["MAE"])
        summary["predicted_rows"] = float(row["predicted"])
    return summary, per_user
