"""Models: every recommender follows :class:`~tastebud.models.base.Recommender`.

``create(name, **params)`` builds one by registered name, ``available()`` lists the names and
``load(path)`` reads any saved model.
"""

from __future__ import annotations

from pathlib import Path

from tastebud.models.base import Recommender, model_class_of, read_model_files
from tastebud.models.registry import available, create, get_class, register


def load(path: str | Path) -> Recommender:
    """Load a model saved with :meth:`Recommender.save`, whatever its class."""
    config, _arrays = read_model_files(path)
    return model_class_of(path, config).load(path)


__all__ = ["Recommender", "available", "create", "get_class", "load", "register"]
