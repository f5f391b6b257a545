"""One recommendation pipeline for the notebook, the lab and the service.

A :class:`Pipeline` (candidate generators → ranker → re-rankers, module
:mod:`tastebud.pipeline.core`) runs a :class:`Query` on a fitted model
(:class:`ModelView`) and live state handed in (:class:`LiveState`: the service's, counted
from events as they arrive, or :class:`OfflineState`, built from a split's training data);
an :class:`Explorer` may then give one slot to an item the ranking would not have shown.
``evaluate(..., pipeline=...)`` and ``tastebud evaluate --pipeline`` replay a split through
it; ``tastebud serve`` answers every list with it.

    >>> from tastebud import models, pipeline
    >>> from tastebud.data.sample import load_sample
    >>> train = load_sample()
    >>> model = models.create("ease").fit(train)
    >>> pipe = pipeline.Pipeline(pipeline.PipelineSettings(diversity=0.3))
    >>> answer = pipe.run(
    ...     pipeline.ModelView.of(model),
    ...     pipeline.OfflineState(train),
    ...     pipeline.Query(pipeline.dataset_history(train, 0), k=5),
    ... )
    >>> len(answer.items)
    5
"""

from tastebud.pipeline.config import (
    DEFAULT_EVENT_WEIGHTS,
    GENERATORS,
    EventRules,
    ExplorationSettings,
    PipelineConfig,
    PipelineSettings,
    load_config,
)
from tastebud.pipeline.core import Pipeline, Query, Recommendations, explain_items
from tastebud.pipeline.explore import Explorer
from tastebud.pipeline.filters import Filters, Predicate, categories
from tastebud.pipeline.history import History, dataset_history
from tastebud.pipeline.live import Demographics, LiveState, OfflineState
from tastebud.pipeline.model import ModelView
from tastebud.pipeline.stages import Candidate

__all__ = [
    "DEFAULT_EVENT_WEIGHTS",
    "GENERATORS",
    "Candidate",
    "Demographics",
    "EventRules",
    "ExplorationSettings",
    "Explorer",
    "Filters",
    "History",
    "LiveState",
    "ModelView",
    "OfflineState",
    "Pipeline",
    "PipelineConfig",
    "PipelineSettings",
    "Predicate",
    "Query",
    "Recommendations",
    "categories",
    "dataset_history",
    "explain_items",
    "load_config",
]
