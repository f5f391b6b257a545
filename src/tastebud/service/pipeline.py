"""Temporary: the pipeline moved to :mod:`tastebud.pipeline` (issue 18); these names are
re-exported until every importer reads them from there (removed in the same change)."""

from tastebud.pipeline.config import (
    CATEGORY_FIELDS,
    FALLBACK_WEIGHT,
    GENERATORS,
    SECONDS_PER_DAY,
    PipelineSettings,
)
from tastebud.pipeline.filters import FILTER_PATTERN, Filters, Predicate, categories, category_field
from tastebud.pipeline.stages import Candidate, Pool, boost_fresh, rank, select

__all__ = [
    "CATEGORY_FIELDS",
    "FALLBACK_WEIGHT",
    "FILTER_PATTERN",
    "GENERATORS",
    "SECONDS_PER_DAY",
    "Candidate",
    "Filters",
    "PipelineSettings",
    "Pool",
    "Predicate",
    "boost_fresh",
    "categories",
    "category_field",
    "rank",
    "select",
]
