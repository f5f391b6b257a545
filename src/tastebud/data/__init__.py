"""Data model and loaders: :class:`Dataset`, :class:`IdMap`, file and reference-data loaders."""

from __future__ import annotations

from tastebud.data.dataset import Dataset
from tastebud.data.idmap import IdMap

__all__ = ["Dataset", "IdMap"]
