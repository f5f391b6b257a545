"""A fitted model as the pipeline reads it: ids as text both ways (plain dict lookups on the
request path), the user's scores through the model's public fold-in
(:meth:`~tastebud.models.Recommender.fold_in`), and kept nearest neighbours
(:meth:`~tastebud.models.Recommender.nearest`) for the item-to-item generator."""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from tastebud.models.base import Recommender, UserScores
from tastebud.pipeline.history import History

#: Neighbours kept per item for the item-to-item generator, and items kept per view.
NEIGHBOURS = 50
NEIGHBOUR_ITEMS = 20_000


@dataclasses.dataclass(frozen=True)
class ModelView:
    """A model (``None``: none trained yet) with its item ids as text (``ids[i]``) and back
    (``index[id]``), and the nearest neighbours of the items asked for so far."""

    model: Recommender | None
    ids: list[str] = dataclasses.field(default_factory=list)
    index: dict[str, int] = dataclasses.field(default_factory=dict)
    _neighbours: OrderedDict[int, tuple[tuple[str, float], ...]] = dataclasses.field(
        default_factory=OrderedDict, repr=False, compare=False
    )
    _neighbours_lock: threading.Lock = dataclasses.field(
        default_factory=threading.Lock, repr=False, compare=False
    )

    @staticmethod
    def ids_of(model: Recommender | None) -> tuple[list[str], dict[str, int]]:
        """A model's item ids as text, and each id's index."""
        if model is None:
            return [], {}
        ids = [str(i) for i in model.items_.to_ids(np.arange(len(model.items_)))]
        return ids, {item: n for n, item in enumerate(ids)}

    @classmethod
    def of(cls, model: Recommender | None) -> ModelView:
        ids, index = cls.ids_of(model)
        return cls(model, ids, index)

    @property
    def similar_items(self) -> bool:
        return self.model is not None and self.model.supports_similar_items

    # -- the ranker's scores -----------------------------------------------------------------
    def scores(self, history: History, blocked: set[str]) -> UserScores | None:
        """The model's scores for a history (``None`` when there is no model or it knows none
        of the history's items); ``blocked`` items score ``-inf``."""
        model, index = self.model, self.index
        if model is None or not history.values:
            return None
        known = sorted((index[i], v) for i, v in history.values.items() if i in index)
        if not known:
            return None
        cols = np.array([c for c, _ in known], dtype=np.int32)
        vals = np.array([v for _, v in known], dtype=np.float64)
        indptr = np.array([0, len(cols)], dtype=np.int32)
        matrix = sp.csr_matrix((vals, cols, indptr), shape=(1, len(self.ids)))
        # sequential models read the history oldest first; the rest read the matrix
        ordered = np.array([index[i] for i in reversed(history.recent) if i in index], np.int64)
        masked = np.array([index[i] for i in blocked if i in index], dtype=np.int64)
        return model.fold_in(matrix, ordered, masked)

    def top(self, scores: UserScores, n: int) -> list[tuple[str, float]]:
        """The ``n`` best-scored items as ids and scores."""
        idx, val = scores.top(n)
        ids = self.ids
        return [(ids[i], v) for i, v in zip(idx.tolist(), val.tolist(), strict=True)]

    # -- similar items -----------------------------------------------------------------------
    def neighbours(self, item: int) -> tuple[tuple[str, float], ...]:
        """The :data:`NEIGHBOURS` items most similar to item index ``item``, best first, as
        ids and similarities: worked out once per item and view (at most
        :data:`NEIGHBOUR_ITEMS` items kept, least recently used out first)."""
        with self._neighbours_lock:
            found = self._neighbours.get(item)
            if found is not None:
                self._neighbours.move_to_end(item)
                return found
        assert self.model is not None
        top, val = self.model.nearest(item, NEIGHBOURS)
        ids = self.ids
        found = tuple(  # a tuple of text and numbers: the garbage collector stops tracking it
            (ids[i], v) for i, v in zip(top.tolist(), val.tolist(), strict=True)
        )
        with self._neighbours_lock:
            self._neighbours[item] = found
            while len(self._neighbours) > NEIGHBOUR_ITEMS:
                self._neighbours.popitem(last=False)
        return found

    def nearest_unblocked(self, seed: str, blocked: set[str], n: int) -> list[tuple[str, float]]:
        """The ``n`` items most similar to ``seed`` that are not ``blocked`` (nor itself):
        from the seed's kept neighbours, or worked out over the catalogue when blocked items
        leave fewer than that among them."""
        assert self.model is not None
        near = self.neighbours(self.index[seed])
        picked = list(itertools.islice((p for p in near if p[0] not in blocked), n))
        if len(picked) == n or len(near) < NEIGHBOURS:  # the kept list did not run short
            return picked
        index = self.index
        masked = np.array([index[i] for i in blocked if i in index], dtype=np.int64)
        top, val = self.model.nearest(index[seed], n, masked)
        ids = self.ids
        return [(ids[i], v) for i, v in zip(top.tolist(), val.tolist(), strict=True)]

    def pairwise(self, items: Sequence[str]) -> np.ndarray:
        """The model's similarities among ``items`` (0 for items it does not know)."""
        assert self.model is not None
        idx = np.array([self.index.get(i, -1) for i in items], dtype=np.int64)
        out = np.zeros((len(items), len(items)))
        known = np.flatnonzero(idx >= 0)
        if len(known):
            out[np.ix_(known, known)] = self.model.similarities(idx[known], idx[known])
        return out

    def because(self, history: Mapping[str, float], items: list[str]) -> dict[str, str]:
        """For each item, the history item the model says explains it
        (:meth:`Recommender.because <tastebud.models.Recommender.because>`): "because you
        liked ..."."""
        if not self.similar_items or not history:
            return {}
        assert self.model is not None
        index, ids = self.index, self.ids
        known = [i for i in items if i in index]
        hist = [index[i] for i in history if i in index]
        if not known or not hist:
            return {}
        found = self.model.because(
            np.array(hist, dtype=np.int64), np.array([index[i] for i in known], dtype=np.int64)
        )
        return {item: ids[b] for item, b in zip(known, found.tolist(), strict=True) if b >= 0}
