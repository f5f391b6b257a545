"""tastebud: recommender systems you can prove.

The library's front door: :class:`Dataset` to hold data, :mod:`tastebud.models` to fit and
recommend, :mod:`tastebud.split`, :mod:`tastebud.metrics` and :mod:`tastebud.evaluation` to
prove how good the answer is.
"""

from __future__ import annotations

from tastebud.data.dataset import Dataset
from tastebud.data.idmap import IdMap
from tastebud.errors import ModelWarning, TastebudError

__version__ = "0.1.0"

__all__ = ["Dataset", "IdMap", "ModelWarning", "TastebudError", "__version__"]
