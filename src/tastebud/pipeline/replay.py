"""The lab's side of the pipeline: a split's test users replayed through exactly the code the
service runs, with live state built from the training data as of the split."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from tastebud.data.dataset import Dataset
from tastebud.errors import TastebudError
from tastebud.models.base import Recommender
from tastebud.pipeline.config import PipelineConfig, PipelineSettings, load_config
from tastebud.pipeline.core import Pipeline, Query
from tastebud.pipeline.explore import Explorer
from tastebud.pipeline.history import History, dataset_history
from tastebud.pipeline.live import OfflineState
from tastebud.pipeline.model import ModelView


def replay(
    model: Recommender,
    train: Dataset,
    users: np.ndarray,
    k: int,
    config: Any = None,
    *,
    user_ids: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """The pipeline's list for each user: ``(len(users), k)`` internal item indices of
    ``train`` (``-1`` where a list is shorter). ``users`` are internal indices of ``train``
    (-1: unknown to it; ``user_ids`` then gives their ids, whose attributes a cold user's
    demographic generator reads when the user feature table has them).

    Each user's history is their training interactions, as the service reads events
    (:func:`~tastebud.pipeline.dataset_history`); the model is asked through its public
    fold-in, as the service asks it. With exploration on in ``config`` (its ``exploration``
    table), each list gets its slot as the service's would, drawn from ``seed``; offline
    there are no answered explored exposures, so Thompson sampling draws uniformly.
    ``config``: anything :func:`~tastebud.pipeline.load_config` takes."""
    config = load_config(config)
    if not model.supports_fold_in:
        raise TastebudError(
            f"{type(model).__name__} cannot recommend from a history, so no pipeline can serve "
            "it (the service folds every list in from the user's live history)"
        )
    view = ModelView.of(model)
    live = OfflineState(train, config.pipeline, rules=config)
    pipe = Pipeline(config.pipeline)
    explorer = Explorer(config.exploration, seed=seed)
    position = {str(item): n for n, item in enumerate(train.items.to_ids(np.arange(train.n_items)))}
    names = [str(u) for u in train.users.to_ids(np.arange(train.n_users))]
    out = np.full((len(users), k), -1, dtype=np.int64)
    for row, user in enumerate(users.tolist()):
        if user >= 0:
            history, name = dataset_history(train, user, config), names[user]
        else:
            history = History({}, set(), [])
            name = None if user_ids is None else str(user_ids[row])
        query = Query(history, k, attributes=functools.partial(live.user_attributes, name))
        result = pipe.run(view, live, query, keep_rest=explorer.on)
        chosen = explorer.explore(result.chosen, result.rest, k) if explorer.on else result.chosen
        items = [c.item for c in chosen]
        found = [position[i] for i in items if i in position]
        out[row, : len(found)] = found
    return out


def describe(config: PipelineConfig) -> dict[str, Any]:
    """The pipeline a replay ran with, in words, for a report's protocol."""
    settings = config.pipeline
    gens = ", ".join(f"{name} {n}" for name, n in settings.generators.items() if n > 0)
    default = PipelineSettings().model_dump()
    changed = [
        f"{name}={value}"
        for name, value in settings.model_dump().items()
        if name != "generators" and value != default[name]
    ]
    return {
        "pipeline": f"generators {gens or 'none'}; " + (", ".join(changed) or "re-rankers off"),
        "exploration": _exploration(config),
    }


def _exploration(config: PipelineConfig) -> str:
    explore = config.exploration
    if explore.method == "off":
        return "off"
    chance = f"epsilon {explore.epsilon}, " if explore.method == "epsilon" else ""
    return f"{explore.method} ({chance}slot {explore.position})"
