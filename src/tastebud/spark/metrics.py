"""Ranking metrics per user, computed in Spark with the library's definitions.

:func:`ranking_metrics` is :mod:`tastebud.metrics.ranking` written as DataFrame
operations, so a test set too large for one machine is scored where it lies; it agrees
with the library to floating-point rounding (``tests/test_spark_metrics.py`` checks every
metric on MovieLens 100K within 1e-6). The definitions, as the library states them:

* a list is the user's recommendations ordered by ``rank``; only its first ``k``
  positions count, missing positions are misses, and an item repeated in a list counts
  only at its first position (later copies are misses and, for AUC, not items);
* an item is relevant when its gain (``relevant``'s ``gain`` column, 1 when absent) is
  > 0; ``R`` counts every relevant item of the user, recommendable or not;
* ``P@k = h/k`` (the denominator is k even for shorter lists), ``R@k = h/R``,
  ``F1@k = 2 P R / (P + R)``, ``AP@k = Σ_hits P@i / min(R, k)``,
  ``NDCG@k = DCG@k / IDCG@k`` with ``IDCG@k = Σ_{i ≤ min(R,k)} 1/log₂(i+1)`` (graded:
  the user's ``min(R, k)`` largest gains, in order), ``RR@k = 1/first hit``,
  ``HR@k = [h > 0]``, and AUC@k from ``n_candidates`` (the items that could be ranked);
* users with no relevant item are undefined (the library's NaN) and are left out: the
  answer has one row per user with at least one relevant item.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tastebud.data import columns as C
from tastebud.errors import InvalidInputError
from tastebud.metrics.ranking import RANKING_METRICS, check_k, metric_label
from tastebud.spark._session import require_pyspark

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

GAIN = "gain"
N_CANDIDATES = "n_candidates"
DEFAULT_METRICS = ("precision", "recall", "ndcg", "map", "mrr", "hit_rate")


def ranking_metrics(
    recommendations: DataFrame,
    relevant: DataFrame,
    k: int = 10,
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    graded: bool = False,
    n_candidates: DataFrame | None = None,
) -> DataFrame:
    """Per-user ranking metrics (module docstring) as a DataFrame ``(user, <label>...)``
    with labels such as ``NDCG@10``.

    Parameters
    ----------
    recommendations:
        ``(user, item, rank)``: each user's list, ``rank`` ascending from the best.
    relevant:
        ``(user, item[, gain])``: the relevant items (rows with gain <= 0 are not).
    k:
        The cut-off.
    metrics:
        Names from :data:`tastebud.metrics.ranking.RANKING_METRICS`.
    graded:
        NDCG with the gains as graded relevance (the library's ``graded=True``).
    n_candidates:
        ``(user, n_candidates)``: how many items each user's ranking chose from; needed
        for ``"auc"`` only.
    """
    require_pyspark()
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    k = check_k(k)
    names = [str(m).lower() for m in metrics]
    for name in names:
        if name not in RANKING_METRICS:
            raise InvalidInputError(
                f"unknown metric {name!r}; ranking metrics: {', '.join(RANKING_METRICS)}"
            )
    if "auc" in names and n_candidates is None:
        raise InvalidInputError("the auc metric needs n_candidates (user, n_candidates)")
    _require(recommendations, "recommendations", (C.USER, C.ITEM, C.RANK))
    _require(relevant, "relevant", (C.USER, C.ITEM))

    gain = F.col(GAIN).cast("double") if GAIN in relevant.columns else F.lit(1.0)
    rel = relevant.select(C.USER, C.ITEM, gain.alias(GAIN)).where(F.col(GAIN) > 0)
    # a repeated relevant row counts once (the library sums duplicates into one cell)
    rel = rel.groupBy(C.USER, C.ITEM).agg(F.sum(GAIN).alias(GAIN))

    # positions 1..k of each list; an item repeated in a list is a miss after its first
    by_user = Window.partitionBy(C.USER).orderBy(C.RANK, C.ITEM)
    listed = recommendations.select(C.USER, C.ITEM, C.RANK).withColumn(
        "_pos", F.row_number().over(by_user)
    )
    listed = listed.where(F.col("_pos") <= k)
    first = Window.partitionBy(C.USER, C.ITEM).orderBy("_pos")
    listed = listed.withColumn("_first", F.row_number().over(first) == 1)
    scored = listed.join(rel, [C.USER, C.ITEM], "left")
    hit = (F.col("_first") & F.col(GAIN).isNotNull()).cast("double")
    scored = scored.withColumn("_hit", hit).withColumn("_valid", F.col("_first").cast("double"))
    by_pos = Window.partitionBy(C.USER).orderBy("_pos")
    upto = by_pos.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    scored = scored.withColumn("_hits_upto", F.sum("_hit").over(upto)).withColumn(
        "_valid_upto", F.sum("_valid").over(upto)
    )
    discount = 1.0 / F.log2(F.col("_pos").cast("double") + 1.0)
    per_list = scored.groupBy(C.USER).agg(
        F.sum("_hit").alias("_h"),
        F.sum(F.col("_hit") * discount).alias("_dcg"),
        F.sum(F.col("_hit") * F.coalesce(F.col(GAIN), F.lit(0.0)) * discount).alias("_gdcg"),
        F.sum(F.col("_hit") * F.col("_hits_upto") / F.col("_pos")).alias("_ap"),
        F.min(F.when(F.col("_hit") > 0, F.col("_pos"))).alias("_first_hit"),
        F.sum("_valid").alias("_listed"),
        # AUC: Σ over hits of the non-relevant items listed above them
        F.sum(F.col("_hit") * ((F.col("_valid_upto") - 1.0) - (F.col("_hits_upto") - 1.0))).alias(
            "_neg_above_hits"
        ),
    )

    # per user: R, and the ideal DCG of the graded gains (the min(R, k) largest)
    best = Window.partitionBy(C.USER).orderBy(F.col(GAIN).desc(), C.ITEM)
    ideal = rel.withColumn("_r", F.row_number().over(best))
    per_user = ideal.groupBy(C.USER).agg(
        F.count(F.lit(1)).alias("_R"),
        F.sum(
            F.when(F.col("_r") <= k, F.col(GAIN) / F.log2(F.col("_r").cast("double") + 1.0))
        ).alias("_gidcg"),
    )
    table = per_user.join(per_list, C.USER, "left").na.fill(
        0.0, ["_h", "_dcg", "_gdcg", "_ap", "_listed", "_neg_above_hits"]
    )
    if n_candidates is not None:
        _require(n_candidates, "n_candidates", (C.USER, N_CANDIDATES))
        table = table.join(
            n_candidates.select(C.USER, F.col(N_CANDIDATES).cast("double")), C.USER, "left"
        )
    columns = [F.col(C.USER)]
    for name in names:
        columns.append(_metric(name, k, graded).alias(metric_label(name, k)))
    return table.select(*columns)


def _require(frame: DataFrame, what: str, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InvalidInputError(
            f"{what} needs the column(s) {', '.join(missing)}; it has [{', '.join(frame.columns)}]"
        )


def _ideal_binary(k: int) -> Column:
    """``Σ_{i ≤ min(R, k)} 1/log₂(i+1)`` from a table of the k prefix sums."""
    from pyspark.sql import functions as F

    prefix, total = [], 0.0
    for i in range(1, k + 1):
        total += 1.0 / math.log2(i + 1)
        prefix.append(total)
    table = F.array(*[F.lit(v) for v in prefix])
    return F.element_at(table, F.least(F.col("_R"), F.lit(k)).cast("int"))


def _metric(name: str, k: int, graded: bool) -> Column:
    from pyspark.sql import functions as F

    h, R = F.col("_h"), F.col("_R").cast("double")
    if name == "precision":
        return h / k
    if name == "recall":
        return h / R
    if name == "f1":
        p, r = h / k, h / R
        return F.when(p + r > 0, 2.0 * p * r / (p + r)).otherwise(0.0)
    if name == "map":
        return F.col("_ap") / F.least(R, F.lit(float(k)))
    if name == "ndcg":
        if graded:
            return F.col("_gdcg") / F.col("_gidcg")
        return F.col("_dcg") / _ideal_binary(k)
    if name == "mrr":
        return F.when(F.col("_first_hit").isNotNull(), 1.0 / F.col("_first_hit")).otherwise(0.0)
    if name == "hit_rate":
        return F.when(h > 0, 1.0).otherwise(0.0)
    # auc (ranking.auc_at_k): correct pairs over P * N, the unlisted relevant items tied
    # with the unlisted non-relevant ones
    positives, negatives = R, F.col(N_CANDIDATES) - R
    listed_negatives = F.col("_listed") - h
    correct = h * negatives - F.col("_neg_above_hits")
    ties = 0.5 * (positives - h) * (negatives - listed_negatives)
    defined = (positives > 0) & (negatives > 0)
    return F.when(
        defined & (listed_negatives > negatives),
        F.raise_error(
            F.concat(
                F.lit("a list holds more non-relevant items than n_candidates allows; user "),
                F.col(C.USER).cast("string"),
            )
        ),
    ).when(defined, (correct + ties) / (positives * negatives))


def mean_metrics(per_user: DataFrame) -> dict[str, float]:
    """The mean of each metric column over the users where it is defined (the library's
    averages: NaN/null values dropped), and ``users`` (how many rows were averaged)."""
    from pyspark.sql import functions as F

    labels = [c for c in per_user.columns if c != C.USER]
    row = per_user.agg(
        F.count(F.lit(1)).alias("users"),
        *[F.avg(F.when(~F.isnan(F.col(c)), F.col(c))).alias(c) for c in labels],
    ).first()
    assert row is not None
    out = {"users": float(row["users"])}
    out.update({c: float("nan") if row[c] is None else float(row[c]) for c in labels})
    return out
