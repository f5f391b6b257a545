"""What a metric label in evaluation results means: which direction is better, and its kind.

:func:`tastebud.evaluation.evaluate` names its results with labels such as ``NDCG@10``,
``RMSE``, ``Coverage@10``, ``NDCG@10 [gender=F]`` (a metric within one user group),
``users [gender=F]`` (how many users the group has), ``NDCG@10 gap by gender`` and
``fit_seconds``. This module is the one place that knows, for each of them, whether higher
or lower is better and what kind of number it is; reports, plots, leaderboards and tuning
read it here instead of keeping their own lists.

Directions follow the metric's definition (see :mod:`tastebud.metrics.ranking`,
:mod:`~tastebud.metrics.rating` and :mod:`~tastebud.metrics.beyond`): accuracy, coverage,
novelty, serendipity and diversity are better higher; errors, seconds, the popularity of what is
recommended (ARP: lower means less popularity bias), the Gini index of exposure (lower means
exposure spread more evenly over the catalog) and gaps between user groups are better lower.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "DIRECTIONS",
    "MetricInfo",
    "describe",
    "direction",
    "headline_metrics",
    "main_metric",
]

Direction = Literal["higher", "lower"]
Kind = Literal["ranking", "rating", "beyond", "timing", "group", "gap", "count", "other"]

#: Base metric name (the label without ``@k``) -> (better direction, kind).
DIRECTIONS: dict[str, tuple[Direction, Kind]] = {
    "Precision": ("higher", "ranking"),
    "Recall": ("higher", "ranking"),
    "F1": ("higher", "ranking"),
    "MAP": ("higher", "ranking"),
    "NDCG": ("higher", "ranking"),
    "MRR": ("higher", "ranking"),
    "HitRate": ("higher", "ranking"),
    "AUC": ("higher", "ranking"),
    "RMSE": ("lower", "rating"),
    "MAE": ("lower", "rating"),
    "Coverage": ("higher", "beyond"),
    "Novelty": ("higher", "beyond"),
    "Serendipity": ("higher", "beyond"),
    "ILD": ("higher", "beyond"),
    "ARP": ("lower", "beyond"),
    "Gini": ("lower", "beyond"),
    "fit_seconds": ("lower", "timing"),
    "recommend_seconds": ("lower", "timing"),
}

# The metrics a compact leaderboard shows first, in this order (the rest is detail).
_HEADLINE = ("NDCG", "Recall", "Precision", "MAP", "HitRate", "Coverage", "Novelty", "fit_seconds")

_GROUP = re.compile(r"^(?P<metric>.+?) \[(?P<group>[^\]]+)\]$")
_GAP = re.compile(r"^(?P<metric>.+?) gap by (?P<by>.+)$")
_AT_K = re.compile(r"^(?P<base>[^@\s]+)@(?P<k>\d+)$")


@dataclass(frozen=True)
class MetricInfo:
    """What one result label means.

    Attributes
    ----------
    label:
        The label as written in the results, e.g. ``"NDCG@10 [gender=F]"``.
    base:
        The metric without cut-off or group, e.g. ``"NDCG"``; ``"users"`` for group sizes.
    kind:
        ``ranking``, ``rating``, ``beyond`` (beyond-accuracy), ``timing``, ``group`` (a metric
        within one user group), ``gap`` (best group minus worst group), ``count`` (a number
        of users) or ``other`` (a label this table does not know).
    direction:
        ``"higher"`` or ``"lower"`` (which is better), ``None`` where neither is (counts,
        unknown labels).
    k:
        The list length after ``@``, if any.
    group:
        ``"gender=F"`` for per-group labels, the grouping column for gaps, else ``None``.
    """

    label: str
    base: str
    kind: Kind
    direction: Direction | None
    k: int | None = None
    group: str | None = None

    @property
    def better(self) -> str:
        """``"higher is better"``, ``"lower is better"`` or ``""``."""
        return f"{self.direction} is better" if self.direction else ""

    @property
    def arrow(self) -> str:
        """``"↑"`` (higher is better), ``"↓"`` (lower is better) or ``""``."""
        return {"higher": "↑", "lower": "↓"}.get(self.direction or "", "")


def _plain(label: str) -> tuple[str, int | None]:
    match = _AT_K.match(label)
    if match:
        return match["base"], int(match["k"])
    return label, None


def describe(label: str) -> MetricInfo:
    """Parse a result label into its base metric, kind, better direction, k and group.

    >>> describe("NDCG@10").direction
    'higher'
    >>> describe("NDCG@10 gap by gender").kind
    'gap'
    """
    label = str(label)
    group = _GROUP.match(label)
    if group:
        inner = group["metric"]
        if inner == "users":
            return MetricInfo(label, "users", "count", None, group=group["group"])
        base, k = _plain(inner)
        known = DIRECTIONS.get(base)
        return MetricInfo(label, base, "group", known[0] if known else None, k, group["group"])
    gap = _GAP.match(label)
    if gap:
        base, k = _plain(gap["metric"])
        return MetricInfo(label, base, "gap", "lower", k, gap["by"])
    base, k = _plain(label)
    known = DIRECTIONS.get(base)
    if known is None:
        return MetricInfo(label, base, "other", None, k)
    return MetricInfo(label, base, known[1], known[0], k)


def direction(label: str) -> Direction | None:
    """``"higher"`` or ``"lower"``: which values of this metric are better (``None``: neither)."""
    return describe(label).direction


def headline_metrics(labels: Iterable[str], *, timings: bool = True) -> list[str]:
    """The labels a compact leaderboard shows, in reading order.

    The main ranking metrics (NDCG, Recall, Precision, MAP, HitRate), catalog coverage,
    novelty and the fit time, as far as ``labels`` has them. When none of those ranking
    metrics was computed, the ranking metrics there are take their place (so a run with
    only ``MRR`` still has a headline).
    """
    infos = [describe(label) for label in labels]
    plain = [i for i in infos if i.kind in ("ranking", "beyond", "timing")]
    order = {name: n for n, name in enumerate(_HEADLINE)}
    chosen = [i for i in plain if i.base in order]
    if not any(i.kind == "ranking" for i in chosen):
        chosen += [i for i in plain if i.kind == "ranking"]
    if not timings:
        chosen = [i for i in chosen if i.kind != "timing"]
    chosen.sort(key=lambda i: (order.get(i.base, -1), i.k or 0))
    return list(dict.fromkeys(i.label for i in chosen))


def main_metric(labels: Iterable[str]) -> str | None:
    """The metric that ranks models by default: the first headline ranking metric (NDCG@k
    when computed), else a rating error (RMSE), else ``None``."""
    labels = list(labels)
    head = headline_metrics(labels, timings=False)
    rating = [m for m in labels if describe(m).kind == "rating"]
    return next(iter(head + rating), None)
