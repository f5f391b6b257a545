"""Evaluation metrics: rating error, top-k ranking quality and beyond-accuracy measures.

Which direction is better for each result label (``NDCG@10``: higher, ``RMSE``: lower...)
is kept in one table, :mod:`tastebud.metrics.labels` (:func:`direction`, :func:`describe`).

Ranking metrics (:mod:`tastebud.metrics.ranking`) and the per-user beyond-accuracy metrics
return one float64 value per user, NaN where the value is undefined (for ranking metrics:
users with no relevant item), so callers can average them and run paired tests over users.
"""

from __future__ import annotations

from tastebud.metrics.beyond import (
    GroupGap,
    average_popularity,
    catalog_coverage,
    gini_index,
    group_gap,
    intra_list_diversity,
    novelty,
    serendipity,
    user_coverage,
)
from tastebud.metrics.labels import (
    DIRECTIONS,
    MetricInfo,
    describe,
    direction,
    headline_metrics,
    main_metric,
)
from tastebud.metrics.ranking import (
    RANKING_METRICS,
    auc_at_k,
    average_precision_at_k,
    f1_at_k,
    hit_rate_at_k,
    hits_matrix,
    metric_label,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    reciprocal_rank_at_k,
)
from tastebud.metrics.rating import mae, rmse

__all__ = [
    "DIRECTIONS",
    "RANKING_METRICS",
    "GroupGap",
    "MetricInfo",
    "auc_at_k",
    "average_popularity",
    "average_precision_at_k",
    "catalog_coverage",
    "describe",
    "direction",
    "f1_at_k",
    "gini_index",
    "group_gap",
    "headline_metrics",
    "hit_rate_at_k",
    "hits_matrix",
    "intra_list_diversity",
    "mae",
    "main_metric",
    "metric_label",
    "ndcg_at_k",
    "novelty",
    "precision_at_k",
    "recall_at_k",
    "reciprocal_rank_at_k",
    "rmse",
    "serendipity",
    "user_coverage",
]
