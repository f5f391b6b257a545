"""Alternating least squares in Spark MLlib, set up as tastebud's ALS is.

Implicit feedback (``implicit=True``, the default) follows Hu, Koren & Volinsky (ICDM
2008) with tastebud's confidence scheme (:class:`tastebud.models.factorization.ALS`)::

    c_ui = 1 + α g(x_ui) m_ui,   g(x) = log₂(1 + x) ("log") or x ("linear"),
    m_ui = n_u^a n_i^b / mean over the interactions of n_u^a n_i^b

MLlib's implicit ALS computes its confidence as ``1 + alpha * |r|`` from the rating
column, so each pair is given ``r_ui = g(x_ui) m_ui`` and ``alpha = α``: with
``exponent_shift=0`` MLlib then sees exactly the confidences tastebud's engine sees
(preference 1 for every pair with ``r > 0``, 0 elsewhere); by default the exponents are
shifted to offset MLlib's penalty (below).

The penalty does not map one to one. tastebud's (and the ``implicit`` package's) user
step solves ``(YᵀC_uY + λI) x_u = YᵀC_u p_u`` with the same λ for everyone; MLlib
weights the penalty by the number of ratings of the row (ALS-WR, Zhou et al. 2008):
``λ_u = regParam · n_u`` for a user, ``regParam · n_i`` for an item. No single
``regParam`` reproduces a constant λ, and left as it is that penalty costs MLlib 6% of
NDCG@10 on MovieLens and a fifth on Last.fm, where play counts make heavy users heavier
(``benchmarks/spark.py``, ``docs/spark.md``). Divided by n_u, MLlib's user objective is
tastebud's with every weight of the row -- observed and unobserved -- divided by n_u.
MLlib only lets the observed confidences be set, so two things offset it:

- ``exponent_shift`` s (0.5 by default) is added to both exponents in what MLlib is
  given (``m'_ui ∝ n_u^(a+s) n_i^(b+s)``): half of the n_u the penalty grew by comes back
  to the observed weights;
- ``reg`` (tastebud's λ) is mapped to ``regParam = 0.85 · reg / n̄``, n̄ the mean number of
  interactions per user (:data:`REG_PARAM_FACTOR`).

Both were chosen together on validation splits carved from the training data of
MovieLens 100K and Last.fm 2K, three seeds each (``benchmarks/spark.py shift``).
``exponent_shift=0`` gives MLlib exactly tastebud's confidences; ``reg_param`` sets
MLlib's value directly. An exported model keeps tastebud's own scheme (exponents a, b,
their normaliser, λ) for the histories it folds in.

Rating prediction (``implicit=False``) is MLlib's explicit ALS on the ratings:
``min Σ (r_ui - x_uᵀy_i)² + regParam (Σ n_u |x_u|² + Σ n_i |y_i|²)``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from tastebud.data import columns as C
from tastebud.errors import InvalidInputError
from tastebud.metrics.ranking import check_k
from tastebud.spark._session import require_pyspark
from tastebud.spark.io import ITEM_INDEX, USER_INDEX, Interactions, index_ids

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.ml.recommendation import ALSModel
    from pyspark.sql import DataFrame

Values = Literal["auto", "binary", "weight", "rating"]
Confidence = Literal["log", "linear"]
VALUE = "value"  # the column MLlib reads: r_ui (implicit) or the rating (explicit)
#: regParam = REG_PARAM_FACTOR · λ / n̄ (module docstring; chosen with the exponent shift)
REG_PARAM_FACTOR = 0.85
_SCORE_BLOCK = 1 << 22  # scores per block in the batch top-k (users x items), 32 MiB


@dataclasses.dataclass(frozen=True, kw_only=True)
class ALSParams:
    """The settings of :func:`fit_als` (its docstring says what each does)."""

    n_factors: int = 64
    reg: float = 30.0
    reg_param: float | None = None
    alpha: float = 2.5
    n_iterations: int = 15
    values: Values = "auto"
    confidence: Confidence = "log"
    user_exponent: float = -0.5
    item_exponent: float = -0.3
    exponent_shift: float = 0.5
    implicit: bool = True
    seed: int = 0
    num_blocks: int | None = None
    checkpoint_interval: int = 10

    def check(self) -> None:
        """Refuse settings MLlib or tastebud would not take, naming the setting."""

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise InvalidInputError(message)

        def is_int(value: Any, low: int) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value >= low

        need(
            is_int(self.n_factors, 1), f"n_factors must be an integer >= 1, got {self.n_factors!r}"
        )
        need(
            is_int(self.n_iterations, 1),
            f"n_iterations must be an integer >= 1, got {self.n_iterations!r}",
        )
        need(_finite(self.reg) and self.reg > 0, f"reg must be > 0, got {self.reg!r}")
        need(
            self.reg_param is None or (_finite(self.reg_param) and self.reg_param > 0),
            f"reg_param must be > 0, got {self.reg_param!r}",
        )
        # MLlib divides by alpha * r in its implicit update: alpha = 0 is undefined there
        need(_finite(self.alpha) and self.alpha > 0, f"alpha must be > 0, got {self.alpha!r}")
        need(
            self.values in ("auto", "binary", "weight", "rating"),
            f"values must be 'auto', 'binary', 'weight' or 'rating', got {self.values!r}",
        )
        need(
            self.confidence in ("log", "linear"),
            f"confidence must be 'log' or 'linear', got {self.confidence!r}",
        )
        for name in ("user_exponent", "item_exponent"):
            value = getattr(self, name)
            need(_finite(value) and -2 <= value <= 2, f"{name} must be between -2 and 2")
        need(
            _finite(self.exponent_shift) and -2 <= self.exponent_shift <= 2,
            f"exponent_shift must be between -2 and 2, got {self.exponent_shift!r}",
        )
        need(is_int(self.seed, 0), f"seed must be a non-negative integer, got {self.seed!r}")
        need(
            self.num_blocks is None or is_int(self.num_blocks, 1),
            f"num_blocks must be an integer >= 1, got {self.num_blocks!r}",
        )
        need(
            is_int(self.checkpoint_interval, 1),
            f"checkpoint_interval must be an integer >= 1, got {self.checkpoint_interval!r}",
        )


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def fit_als(train: Interactions, **params: Any) -> SparkALS:
    """Fit MLlib ALS on ``train`` with tastebud's settings (module docstring).

    Parameters
    ----------
    train:
        Checked interactions (:func:`tastebud.spark.read_interactions`).
    n_factors, alpha, n_iterations, values, confidence, user_exponent, item_exponent:
        As in :class:`tastebud.models.factorization.ALS` (``values="auto"``: the weights
        when the data have them, else 1 per pair).
    reg:
        tastebud's λ, mapped to MLlib's ``regParam = 0.85 · reg / n̄`` (n̄: interactions per
        user; module docstring).
    reg_param:
        MLlib's ``regParam`` itself (wins over ``reg``).
    exponent_shift:
        Added to both exponents in the confidences MLlib is given, to offset its per-row
        penalty (module docstring); 0: tastebud's confidences exactly.
    implicit:
        ``False``: MLlib's explicit ALS on the ratings (rating prediction).
    seed:
        MLlib's seed (initial factors).
    num_blocks:
        User and item blocks (MLlib's ``numUserBlocks``/``numItemBlocks``; default: the
        session's default parallelism, at least 2). More blocks, more parallel tasks.
    checkpoint_interval:
        Checkpoint the factors every this many iterations when the session has a
        checkpoint folder (long runs on a cluster: keeps the lineage short).
    """
    require_pyspark()
    unknown = sorted(set(params) - {f.name for f in dataclasses.fields(ALSParams)})
    if unknown:
        raise InvalidInputError(f"unknown ALS setting(s): {', '.join(unknown)}")
    settings = ALSParams(**params)
    settings.check()
    return SparkALS(settings).fit(train)


class SparkALS:
    """An MLlib ALS model with tastebud's id maps; use :func:`fit_als`.

    After :meth:`fit`: ``users``/``items`` are cached DataFrames ``(user, user_index)`` and
    ``(item, item_index)`` (ids sorted, as the library's id maps order them), ``ratings``
    the cached training pairs ``(user_index, item_index, value)``, ``mllib`` the fitted
    :class:`pyspark.ml.recommendation.ALSModel` and ``info`` what the fit computed (sizes,
    the ``regParam`` used, the confidence normaliser...).
    """

    def __init__(self, params: ALSParams) -> None:
        self.params = params
        self.info: dict[str, Any] = {}

    # -- fitting --------------------------------------------------------------------------------
    def fit(self, train: Interactions) -> SparkALS:
        from pyspark.ml import recommendation
        from pyspark.sql import functions as F

        started = time.perf_counter()
        p = self.params
        frame = train.frame
        spark = frame.sparkSession
        kind = self._value_kind(train)
        self.users, n_users = index_ids(frame, C.USER, USER_INDEX)
        self.items, n_items = index_ids(frame, C.ITEM, ITEM_INDEX)
        pairs = frame.join(self.users, C.USER).join(self.items, C.ITEM)
        x = F.lit(1.0) if kind == "binary" else F.col(kind)
        pairs = pairs.select(USER_INDEX, ITEM_INDEX, x.cast("double").alias("_x"))
        if p.implicit:
            ratings, scale = self._confidences(pairs, kind)
            n = int(scale.pop("interactions"))
        else:
            ratings, scale = pairs.withColumnRenamed("_x", VALUE), {}
            n = frame.count()  # one row per pair, every id indexed
        self.ratings = ratings.persist()
        per_user = n / max(n_users, 1)
        reg_param = (
            float(p.reg_param)
            if p.reg_param is not None
            else REG_PARAM_FACTOR * float(p.reg) / per_user
        )
        blocks = p.num_blocks or max(2, spark.sparkContext.defaultParallelism)
        estimator = recommendation.ALS(
            rank=int(p.n_factors),
            maxIter=int(p.n_iterations),
            regParam=reg_param,
            implicitPrefs=bool(p.implicit),
            alpha=float(p.alpha),
            userCol=USER_INDEX,
            itemCol=ITEM_INDEX,
            ratingCol=VALUE,
            seed=int(p.seed),
            numUserBlocks=int(blocks),
            numItemBlocks=int(blocks),
            checkpointInterval=int(p.checkpoint_interval),
            coldStartStrategy="drop",
        )
        self.mllib: ALSModel = estimator.fit(self.ratings)
        self.info = {
            "source": train.source,
            "users": n_users,
            "items": n_items,
            "interactions": n,
            "interactions_per_user": per_user,
            "interactions_per_item": n / max(n_items, 1),
            "reg_param": reg_param,
            # tastebud's λ under the mapping (the one an export folds histories in with)
            "reg_equivalent": reg_param * per_user / REG_PARAM_FACTOR,
            "value_kind": kind,
            "implicit": bool(p.implicit),
            "fit_seconds": round(time.perf_counter() - started, 3),
            **scale,
        }
        return self

    def _value_kind(self, train: Interactions) -> str:
        p = self.params
        if not p.implicit:
            if not train.has_rating:
                raise InvalidInputError(
                    f"rating-prediction ALS (implicit=False) needs ratings; {train.source} has none"
                )
            return C.RATING
        kind = p.values
        if kind == "auto":
            kind = "weight" if train.has_weight else "binary"
        if kind == "rating" and not train.has_rating:
            raise InvalidInputError(f"values='rating' but {train.source} has no ratings")
        if kind == "weight" and not train.has_weight:
            raise InvalidInputError(f"values='weight' but {train.source} has no weights")
        return kind

    def _confidences(self, pairs: DataFrame, kind: str) -> tuple[DataFrame, dict[str, Any]]:
        """``r = g(x) m`` per pair (module docstring); MLlib makes ``1 + alpha r`` of it.
        One pass computes the multipliers' mean, the count and checks the values."""
        from pyspark.sql import functions as F

        p = self.params
        user_n = pairs.groupBy(USER_INDEX).agg(F.count(F.lit(1)).alias("_nu"))
        item_n = pairs.groupBy(ITEM_INDEX).agg(F.count(F.lit(1)).alias("_ni"))

        def multiplier(shift: float) -> Any:
            return F.pow(F.col("_nu").cast("double"), float(p.user_exponent) + shift) * F.pow(
                F.col("_ni").cast("double"), float(p.item_exponent) + shift
            )

        counted = pairs.join(user_n, USER_INDEX).join(item_n, ITEM_INDEX)
        counted = counted.withColumn("_m", multiplier(float(p.exponent_shift)))
        stats = counted.agg(
            F.avg("_m").alias("mean"),
            F.avg(multiplier(0.0)).alias("own_mean"),  # tastebud's normaliser, for export
            F.count(F.lit(1)).alias("n"),
            F.min("_x").alias("low"),
        ).first()
        assert stats is not None
        if stats["low"] is not None and float(stats["low"]) < 0:
            raise InvalidInputError(f"values='{kind}' must be >= 0 for implicit ALS")
        norm = float(stats["mean"]) if stats["mean"] else 1.0
        g = F.log2(1.0 + F.col("_x")) if p.confidence == "log" else F.col("_x")
        ratings = counted.select(
            USER_INDEX, ITEM_INDEX, (g * F.col("_m") / F.lit(norm)).alias(VALUE)
        )
        return ratings, {
            "scale_norm": float(stats["own_mean"]) if stats["own_mean"] else 1.0,
            "mllib_scale_norm": norm,
            "interactions": int(stats["n"]),
        }

    # -- factors ----------------------------------------------------------------------------------
    def user_factors(self) -> np.ndarray:
        """``(n_users, n_factors)`` float32, row i = the user with ``user_index`` i."""
        return _factor_matrix(self.mllib.userFactors, int(self.info["users"]), self._rank)

    def item_factors(self) -> np.ndarray:
        """``(n_items, n_factors)`` float32, row i = the item with ``item_index`` i."""
        return _factor_matrix(self.mllib.itemFactors, int(self.info["items"]), self._rank)

    @property
    def _rank(self) -> int:
        return int(self.mllib.rank)

    def user_ids(self) -> np.ndarray:
        """External user ids in index order (int64 or text, as the data had them)."""
        return _ids(self.users, C.USER, USER_INDEX)

    def item_ids(self) -> np.ndarray:
        """External item ids in index order."""
        return _ids(self.items, C.ITEM, ITEM_INDEX)

    # -- using it ---------------------------------------------------------------------------------
    def recommend(
        self, k: int = 10, *, users: DataFrame | None = None, exclude_seen: bool = True
    ) -> DataFrame:
        """Top-``k`` items per user as a DataFrame ``(user, item, score, rank)``.

        Every training user (or those in ``users``, a DataFrame with a ``user`` column;
        users the model does not know are left out), each item's score ``x_uᵀy_i``, the
        user's training items excluded before the top-k (``exclude_seen``), ties broken
        by the lower item index: the library's top-k routine
        (:func:`tastebud.models.base.top_k`) on each block of users, so an exported model
        lists the same items. The item factors are broadcast to every executor
        (``n_items × n_factors × 4`` bytes); users are scored in blocks of about 4M
        scores, so an executor's memory stays bounded.
        """
        from pyspark.sql import functions as F

        k = check_k(k)
        spark = self.ratings.sparkSession
        vectors = self.mllib.userFactors.select(F.col("id").alias(USER_INDEX), F.col("features"))
        if users is not None:
            if C.USER not in users.columns:
                raise InvalidInputError("users must be a DataFrame with a 'user' column")
            wanted = users.select(C.USER).distinct().join(self.users, C.USER).select(USER_INDEX)
            vectors = vectors.join(wanted, USER_INDEX)
        if exclude_seen:
            seen = self.ratings.groupBy(USER_INDEX).agg(F.collect_list(ITEM_INDEX).alias("seen"))
            vectors = vectors.join(seen, USER_INDEX, "left")
        else:
            vectors = vectors.withColumn("seen", F.array().cast("array<int>"))
        items = spark.sparkContext.broadcast(self.item_factors())
        with warnings.catch_warnings():  # PySpark 4.3 warns of pandas 3 (no pandas is used)
            warnings.filterwarnings("ignore", "PySpark does not yet fully", FutureWarning)
            top = vectors.mapInArrow(
                functools.partial(_top_k_batches, items=items, k=k),
                f"{USER_INDEX} int, {ITEM_INDEX} int, {C.SCORE} double, {C.RANK} int",
            )
        return (
            top.join(self.users, USER_INDEX)
            .join(self.items, ITEM_INDEX)
            .select(C.USER, C.ITEM, C.SCORE, C.RANK)
        )

    def predict(self, pairs: DataFrame) -> DataFrame:
        """``pairs`` (``user``, ``item`` columns, any others kept) with a ``prediction``
        column: ``x_uᵀy_i``, the predicted rating of the explicit model; pairs whose user
        or item the model does not know are left out."""
        for column in (C.USER, C.ITEM):
            if column not in pairs.columns:
                raise InvalidInputError(f"pairs must have a '{column}' column")
        indexed = pairs.join(self.users, C.USER).join(self.items, C.ITEM)
        return self.mllib.transform(indexed).drop(USER_INDEX, ITEM_INDEX)

    def unpersist(self) -> None:
        """Drop the cached id maps and training pairs (a long-lived session fitting many
        models); the model cannot recommend or export afterwards."""
        for frame in (self.users, self.items, self.ratings):
            frame.unpersist()

    def export(self, folder: str | Path) -> Path:
        """Write a tastebud model folder (:func:`tastebud.spark.export.export_als`)."""
        from tastebud.spark.export import export_als

        return export_als(self, folder)


def _factor_matrix(frame: DataFrame, n: int, rank: int) -> np.ndarray:
    """MLlib's ``(id, features)`` factors as a dense array in id order (zeros for an id
    without factors: a user whose every value was 0, which MLlib does not count)."""
    table = frame.select("id", "features").toArrow()
    ids = table.column("id").to_numpy()
    flat = table.column("features").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    out = np.zeros((n, rank), dtype=np.float32)
    out[ids] = np.asarray(flat, dtype=np.float32).reshape(len(ids), rank)
    return out


def _ids(frame: DataFrame, column: str, index: str) -> np.ndarray:
    table = frame.select(column, index).toArrow()
    order = np.argsort(table.column(index).to_numpy())
    values = table.column(column).to_numpy(zero_copy_only=False)[order]
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    out = np.empty(len(values), dtype=object)
    out[:] = [str(v) for v in values]
    return out


def _top_k_batches(
    batches: Iterator[pa.RecordBatch], *, items: Any, k: int
) -> Iterator[pa.RecordBatch]:
    """mapInArrow body of :meth:`SparkALS.recommend`: for each block of users, scores of
    every item (float32 products, as the library's ALS computes them), seen items masked,
    then the library's top-k."""
    import pyarrow as pa

    from tastebud.models.base import top_k

    item_factors = items.value
    n_items, rank = item_factors.shape
    rows_per_block = max(1, _SCORE_BLOCK // max(n_items, 1))
    for batch in batches:
        if batch.num_rows == 0:
            continue
        users = batch.column(USER_INDEX).to_numpy(zero_copy_only=False)
        features = batch.column("features")
        vectors = np.asarray(features.flatten().to_numpy(zero_copy_only=False), np.float32)
        vectors = vectors.reshape(batch.num_rows, rank)
        seen = batch.column("seen")
        lengths = seen.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
        seen_items = seen.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
        ends = np.cumsum(lengths)
        for start in range(0, batch.num_rows, rows_per_block):
            stop = min(start + rows_per_block, batch.num_rows)
            scores = np.asarray(vectors[start:stop] @ item_factors.T, dtype=np.float64)
            first = int(ends[start - 1]) if start else 0
            last = int(ends[stop - 1])
            rows = np.repeat(np.arange(stop - start), lengths[start:stop])
            scores[rows, seen_items[first:last]] = -np.inf
            top, values = top_k(scores, k)
            keep = top >= 0
            n_kept = keep.sum(axis=1)
            yield pa.RecordBatch.from_arrays(
                [
                    pa.array(np.repeat(users[start:stop], n_kept).astype(np.int32)),
                    pa.array(top[keep].astype(np.int32)),
                    pa.array(values[keep]),
                    pa.array(np.nonzero(keep)[1].astype(np.int32) + 1),
                ],
                names=[USER_INDEX, ITEM_INDEX, C.SCORE, C.RANK],
            )
