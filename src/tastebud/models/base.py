"""The :class:`Recommender` contract every model follows.

A model is a keyword-only dataclass whose fields are its hyper-parameters (declared once:
``__init__``, ``repr``, :meth:`~Recommender.get_params` and :meth:`~Recommender.set_params`
derive from them). ``fit`` validates, learns state in attributes ending with ``_`` and returns
``self``. The base class does everything that is the same for every model -- id mapping,
the unknown-user policy, masking seen items inside the top-k routine, batching, persistence --
and a model implements only:

``_fit(dataset)``
    learn from the training :class:`~tastebud.data.Dataset`;
``_score(users, items)``
    a dense ``(len(users), n)`` score block for internal user indices (and optional internal
    candidate items, else all items) -- higher is better;
``_predict(users, items)`` (rating models)
    predicted ratings for internal index pairs, where -1 marks an unknown id;
``_similar(items)`` (optional)
    item-to-item scores ``(len(items), n_items)``;
``_explain(user, items)`` (optional)
    a reason per item (models with ``_similar`` have one: the history item
    :meth:`Recommender.because` names).

One module (~950 lines) because it is one contract: the base class and the few helpers
every model's masking, fold-in and persistence go through; the top-k selection itself is
:mod:`tastebud.models._topk` (re-exported here), models live in their own modules.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib.util
import json
import time
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tastebud import _threads
from tastebud._io import output_folder, to_json
from tastebud.data import columns as C
from tastebud.data.dataset import Dataset
from tastebud.data.idmap import IdMap
from tastebud.errors import (
    InvalidInputError,
    ModelFileError,
    NotFittedError,
    TastebudError,
)
from tastebud.metrics.ranking import check_k
from tastebud.models._card import CARD_FILE, fit_record, model_card
from tastebud.models._topk import top_k

OnUnknown = Literal["fallback", "raise"]
FORMAT = "tastebud-model"
FORMAT_VERSION = 1
_BATCH_CELLS = 1 << 23  # scores computed at once (64 MiB of float64), whatever the catalog size


def _matches(value: Any, annotation: Any) -> bool:
    """Whether ``value`` fits a parameter annotation (int, float, str, bool, Literal, Optional,
    tuple[str, ...], dict)."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, option) for option in typing.get_args(annotation))
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool | np.bool_)
    if annotation is int:  # within int64: numpy and the compiled kernels take it
        return (
            isinstance(value, int | np.integer)
            and not isinstance(value, bool | np.bool_)
            and -(2**63) <= int(value) < 2**63
        )
    if annotation is float:
        return (
            isinstance(value, int | float | np.integer | np.floating)
            and not isinstance(value, bool | np.bool_)
            and bool(np.isfinite(value))
        )
    if origin in (tuple, list):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return (
            isinstance(value, tuple | list) and all(_matches(v, args[0]) for v in value)
            if args
            else isinstance(value, tuple | list)
        )
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(annotation)))
    if annotation is type(None):
        return "None"
    if annotation is int:
        return "an integer within 64 bits"
    if annotation is float:
        return "a finite number"
    return getattr(annotation, "__name__", str(annotation))


def _titles(dataset: Dataset) -> np.ndarray:
    """Item titles from the item table's ``title`` column, aligned with the item ids ("" where
    missing); empty when the data has no titles."""
    table = dataset.item_features
    if table is None or "title" not in table.columns:
        return np.empty(0, dtype=object)
    titles = table["title"].to_numpy(dtype=object)
    return np.array(["" if not isinstance(t, str) else t for t in titles], dtype=object)


def _as_list(values: Any) -> list[Any]:
    """Accept one id or many (list, array, Series, Index)."""
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        return [values]
    return list(values)


def padding_lists(n_users: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Lists of ``k`` slots for ``n_users`` users, every slot padding (index -1, score NaN):
    what ``recommend_indices`` fills in."""
    return np.full((n_users, k), -1, dtype=np.int64), np.full((n_users, k), np.nan)


class Retriever(Protocol):
    """One user's search over a model's catalogue (:meth:`Recommender._retriever`)."""

    def top(self, n: int, exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` best items (internal indices) and their scores, best first, none of
        the indices in ``exclude``; fewer when the catalogue has fewer."""
        ...

    def score(self, items: np.ndarray) -> np.ndarray:
        """The scores of the given item indices, on the scale of :meth:`top`'s."""
        ...


class UserScores:
    """One user's scores from their history (:meth:`Recommender.fold_in`): the best items
    (:meth:`top`) and the scores of given items (:meth:`at`), on one scale. A dense row over
    the catalogue, or -- for models that search theirs through an approximate index -- that
    search, so a large catalogue is never scored whole for one list. Items in ``exclude``
    score ``-inf`` and are never in :meth:`top`."""

    __slots__ = ("_retriever", "_row", "exclude")

    def __init__(
        self, row: np.ndarray | None, retriever: Retriever | None, exclude: np.ndarray
    ) -> None:
        self._row, self._retriever, self.exclude = row, retriever, exclude
        if row is not None:
            row[exclude] = -np.inf

    def top(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` best items (internal indices, best first; ties to the lower index) and
        their scores: finite scores only, so fewer when fewer qualify."""
        if self._retriever is not None:
            idx, val = self._retriever.top(n, self.exclude)
        else:
            assert self._row is not None
            found, scores = top_k(self._row[None, :], min(n, len(self._row)))
            idx, val = found[0], scores[0]
        keep = (idx >= 0) & np.isfinite(val)
        return idx[keep], val[keep]

    def at(self, items: np.ndarray) -> np.ndarray:
        """The scores of these item indices (``-inf`` for excluded ones), float64."""
        if self._row is not None:
            return self._row[items]
        assert self._retriever is not None
        idx = np.asarray(items, dtype=np.int64)
        scores = np.array(self._retriever.score(idx), dtype=np.float64)
        scores[np.isin(idx, self.exclude)] = -np.inf
        return scores


def mask_rows(
    scores: np.ndarray, matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray | None
) -> None:
    """Set ``scores[r, j] = -inf`` where ``matrix[rows[r], j]`` is stored (in place).

    ``cols`` maps score columns to matrix columns when scoring a candidate subset.
    """
    sub = matrix[rows]
    if cols is None:
        r = np.repeat(np.arange(len(rows)), np.diff(sub.indptr))
        scores[r, sub.indices] = -np.inf
        return
    position = np.full(matrix.shape[1], -1, dtype=np.int64)
    position[cols] = np.arange(len(cols))
    r = np.repeat(np.arange(len(rows)), np.diff(sub.indptr))
    c = position[sub.indices]
    hit = c >= 0
    scores[r[hit], c[hit]] = -np.inf


@dataclasses.dataclass(kw_only=True, eq=False)
class Recommender(abc.ABC):
    """Base class of every tastebud model (see the module docstring for the contract).

    Parameters
    ----------
    on_unknown:
        What ``recommend``/``score``/``predict`` do with ids never seen in training:
        ``"fallback"`` answers from the training popularity (rating models: from the global
        mean and the known side's bias), ``"raise"`` raises
        :class:`~tastebud.errors.UnknownIdError`.
    """

    #: Registry name, set by :func:`tastebud.models.registry.register`.
    name: ClassVar[str] = ""
    #: Whether ``predict`` returns ratings.
    predicts_ratings: ClassVar[bool] = False
    #: Whether ``fit`` needs explicit ratings.
    needs_ratings: ClassVar[bool] = False
    #: The optional extra this model needs (``pip install 'tastebud[<extra>]'``) and the
    #: modules that extra brings; models of the bare install need none.
    extra: ClassVar[str | None] = None
    needs_modules: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def missing_extra(cls) -> str | None:
        """``None`` when everything this model needs is installed, else the pip command
        that adds it (found without importing the modules: torch takes seconds)."""
        missing = [m for m in cls.needs_modules if importlib.util.find_spec(m) is None]
        if not missing:
            return None
        return f"pip install 'tastebud[{cls.extra}]'" if cls.extra else f"pip install {missing[0]}"

    on_unknown: OnUnknown = "fallback"

    # -- hyper-parameters ---------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """Hyper-parameters by name (derived from the dataclass fields)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def set_params(self, **params: Any) -> Self:
        """Change hyper-parameters; unknown names raise. Returns ``self``."""
        valid = {f.name for f in dataclasses.fields(self)}
        for key, value in params.items():
            if key not in valid:
                raise InvalidInputError(
                    f"{type(self).__name__} has no parameter {key!r}; "
                    f"parameters: {', '.join(sorted(valid))}"
                )
            setattr(self, key, value)
        return self

    def _validate(self) -> None:
        """Check hyper-parameters (override and call super); runs at the start of ``fit``.

        Every parameter is first checked against its declared type, so a wrong type is a
        clear error instead of a crash deep inside the algorithm.
        """
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not _matches(value, hints[f.name]):
                raise InvalidInputError(
                    f"{type(self).__name__}: parameter {f.name}={value!r} is not "
                    f"{_describe(hints[f.name])}"
                )

    def _check(self, condition: bool, message: str) -> None:
        if not condition:
            raise InvalidInputError(f"{type(self).__name__}: {message}")

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, dataset: Dataset) -> Self:
        """Learn from ``dataset``; returns ``self``."""
        if not isinstance(dataset, Dataset):
            raise InvalidInputError(
                f"fit needs a tastebud Dataset, got {type(dataset).__name__}; "
                "build one with Dataset.from_frame(...)"
            )
        self._validate()
        if len(dataset) == 0:
            raise InvalidInputError(f"cannot fit {type(self).__name__} on an empty dataset")
        if self.needs_ratings and not dataset.has_ratings:
            raise InvalidInputError(
                f"{type(self).__name__} predicts ratings and needs a dataset with ratings; "
                f"{dataset.name} has none"
            )
        started = time.perf_counter()
        self.users_ = dataset.users
        self.items_ = dataset.items
        self.seen_ = dataset.matrix("binary")
        self.popularity_ = dataset.item_popularity().astype(np.float64)
        self.item_titles_ = _titles(dataset)
        # tastebud's thread policy (one thread, every core for large work; the user's own
        # settings win): a busy machine slows a fit down gracefully, not 4-8x
        with _threads.limited(_threads.threads(large=self._parallel_fit(dataset))):
            self._fit(dataset)
        self.fit_info_ = fit_record(dataset, time.perf_counter() - started)
        return self

    def _parallel_fit(self, dataset: Dataset) -> bool:
        """Whether this fit's parallel regions are long enough for every core to pay
        (:mod:`tastebud._threads`); one thread otherwise."""
        return False

    def model_card(self) -> str:
        """What this model was trained on, when, with which parameters, and its validation
        scores (markdown; ``save`` writes it as ``MODEL_CARD.md``)."""
        self._require_fitted()
        return model_card(self)

    def item_titles(self, items: Any) -> list[str | None]:
        """Titles of ``items`` (external ids) from the training data's ``title`` column;
        ``None`` where there is none (no such column, or an unknown item)."""
        self._require_fitted()
        titles = getattr(self, "item_titles_", None)
        idx = self.items_.to_index(_as_list(items), on_unknown="ignore")
        if titles is None or not len(titles):
            return [None] * len(idx)
        return [str(titles[i]) or None if i >= 0 else None for i in idx]

    @abc.abstractmethod
    def _fit(self, dataset: Dataset) -> None:
        """Learn from the training dataset (state in attributes ending with ``_``)."""

    @abc.abstractmethod
    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        """Dense ``(len(users), n)`` scores for known internal users; higher is better."""

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "items_")

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit(dataset)")

    # -- ids ----------------------------------------------------------------------------------
    def _user_index(self, users: Any) -> tuple[list[Any], np.ndarray]:
        ids = _as_list(users)
        idx = self.users_.to_index(ids, on_unknown="ignore")
        if self.on_unknown == "raise" and (idx < 0).any():
            self.users_.to_index(ids, on_unknown="raise", what="user")
        return ids, idx

    def _item_index(self, items: Any, *, strict: bool) -> np.ndarray:
        ids = _as_list(items)
        idx = self.items_.to_index(ids, on_unknown="ignore")
        if (strict or self.on_unknown == "raise") and (idx < 0).any():
            self.items_.to_index(ids, on_unknown="raise", what="item")
        return idx

    def _fallback_scores(self, n_rows: int, items: np.ndarray | None) -> np.ndarray:
        row = self.popularity_ if items is None else self.popularity_[items]
        return np.broadcast_to(row, (n_rows, len(row))).astype(np.float64)

    # -- scoring and recommending -----------------------------------------------------------------
    def _score_block(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        """Scores for internal users; unknown users (-1) and users known by id but without
        training interactions (cold users) are answered by the fallback."""
        n = len(self.items_) if items is None else len(items)
        out = np.empty((len(users), n), dtype=np.float64)
        known = users >= 0
        known[known] = self._scorable(users[known])
        if known.any():
            out[known] = self._score(users[known], items)
        if not known.all():
            out[~known] = self._fallback_scores(int((~known).sum()), items)
        return out

    def _scorable(self, users: np.ndarray) -> np.ndarray:
        """Which known internal users ``_score`` can answer: by default those with training
        interactions. Models that score users from their features (cold users known by their
        attributes) override it."""
        return np.diff(self.seen_.indptr)[users] > 0

    def score(self, users: Any, items: Any = None) -> np.ndarray:
        """Scores of ``items`` (all items, in internal order, when ``None``) for ``users``.

        Returns a float array ``(len(users), len(items))``; unknown users follow ``on_unknown``;
        unknown items raise :class:`~tastebud.errors.UnknownIdError`.
        """
        self._require_fitted()
        _ids, uidx = self._user_index(users)
        iidx = None if items is None else self._item_index(items, strict=True)
        return self._score_block(uidx, iidx)

    def recommend_indices(
        self,
        users: np.ndarray,
        k: int,
        *,
        exclude: sp.csr_matrix | None = None,
        items: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` internal item indices and scores for internal ``users`` (-1 = unknown).

        ``exclude`` rows (indexed like ``users``' internal ids) are masked inside the top-k
        routine; ``items`` restricts the candidates. Padded with -1/NaN where fewer than ``k``
        items remain.
        """
        self._require_fitted()
        n_candidates = len(self.items_) if items is None else len(items)
        k = min(check_k(k), n_candidates)  # a list never holds more than the candidates
        out_items, out_scores = padding_lists(len(users), k)
        if k == 0:
            return out_items, out_scores
        rows = max(1, min(1024, _BATCH_CELLS // n_candidates))
        for start in range(0, len(users), rows):
            batch = users[start : start + rows]
            scores = self._score_block(batch, items)
            if exclude is not None:
                known = np.flatnonzero(batch >= 0)
                if len(known):
                    block = scores[known]
                    mask_rows(block, exclude, batch[known], items)
                    scores[known] = block
            idx, val = top_k(scores, k)
            if items is not None:  # k >= 1 here, so items is not empty
                idx = np.where(idx >= 0, items[np.maximum(idx, 0)], -1)
            out_items[start : start + rows] = idx
            out_scores[start : start + rows] = val
        return out_items, out_scores

    def recommend(
        self,
        users: Any,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        items: Any = None,
    ) -> pd.DataFrame:
        """Top-``k`` recommendations for each of ``users`` (external ids, one or many).

        Parameters
        ----------
        users:
            One user id or an iterable of them. Unknown users follow ``on_unknown``.
        k:
            List length. Lists are shorter when fewer items remain (e.g. ``k`` larger than the
            catalog, or everything seen).
        exclude_seen:
            Leave out items the user interacted with in training.
        items:
            Optional candidate item ids to rank (others are never returned); unknown
            candidates are ignored under ``on_unknown="fallback"``.

        Returns
        -------
        DataFrame with columns ``user, item, score, rank`` (rank 1 = best), users in the
        order given.
        """
        self._require_fitted()
        k = check_k(k)
        ids, uidx = self._user_index(users)
        cand = None
        if items is not None:
            cand = self._item_index(items, strict=False)
            cand = np.unique(cand[cand >= 0])
        idx, scores = self.recommend_indices(
            uidx, k, exclude=self.seen_ if exclude_seen else None, items=cand
        )
        valid = idx >= 0
        rows = np.repeat(np.arange(len(ids)), valid.sum(axis=1))
        user_col = np.asarray(ids, dtype=object)[rows] if len(ids) else np.array([], dtype=object)
        return pd.DataFrame(
            {
                C.USER: user_col,
                C.ITEM: self.items_.to_ids(idx[valid]),
                C.SCORE: scores[valid],
                C.RANK: (np.nonzero(valid)[1] + 1).astype(np.int64),
            }
        )

    # -- fold-in: users given by their history, without refitting ------------------------------
    @classmethod
    def folds_in(cls) -> bool:
        """Whether the model class scores users given only by their history (fold-in)."""
        return cls._score_history is not Recommender._score_history

    @property
    def supports_fold_in(self) -> bool:
        return self.folds_in()

    def _score_history(
        self, histories: sp.csr_matrix, sequences: list[np.ndarray] | None = None
    ) -> np.ndarray:
        """Optional hook, the one way a model scores users given only by their history
        (fold-in; :meth:`fold_in` is its public face): dense scores over every item, one row
        per history row. ``sequences`` holds each row's item indices in time order, oldest
        first, for the models that read the order (sequential models, the recent-items
        towers); ``None`` when the caller has no order (they then take the matrix's), and
        other models ignore it."""
        raise TastebudError(f"{type(self).__name__} cannot recommend from a history")

    def _retriever(self, sequences: list[np.ndarray], histories: sp.csr_matrix) -> Retriever | None:
        """Optional hook for models that search their catalogue through an approximate index
        rather than score every item (two-tower with a faiss index): a :class:`Retriever`
        for the one history given (as in :meth:`_score_history`), or ``None`` to have
        every item scored. The service asks it before each fold-in."""
        return None

    def fold_in(
        self,
        history: sp.csr_matrix,
        sequence: np.ndarray | None = None,
        exclude: np.ndarray | None = None,
    ) -> UserScores:
        """Score a user given only by their history, without refitting -- the one way a
        history is scored (:meth:`recommend_from_history`, the pipeline's ranker and the
        service all go through it).

        ``history`` is a one-row ``(1, n_items)`` matrix of values over internal item
        indices (:meth:`history_matrix`); ``sequence`` the same items' indices in time order,
        oldest first, which sequential models read (default: the matrix's column order);
        ``exclude`` item indices never proposed. Models with an approximate index answer
        with a search (see :class:`UserScores`)."""
        self._require_fitted()
        if not self.supports_fold_in:
            raise TastebudError(f"{type(self).__name__} cannot recommend from a history")
        ordered = (
            np.asarray(history.indices, dtype=np.int64)
            if sequence is None
            else np.asarray(sequence, dtype=np.int64)
        )
        masked = np.zeros(0, dtype=np.int64) if exclude is None else np.asarray(exclude, np.int64)
        retriever = self._retriever([ordered], history)
        if retriever is not None:
            return UserScores(None, retriever, masked)
        row = np.array(self._score_history(history, [ordered]), dtype=np.float64)[0]
        return UserScores(row, None, masked)

    def history_matrix(self, items: Any, values: Any = None) -> sp.csr_matrix:
        """A one-row ``(1, n_items)`` CSR history from item ids (unknown items are dropped) and
        optional values (ratings or weights; 1 when omitted)."""
        ids = _as_list(items)
        vals = np.ones(len(ids)) if values is None else np.asarray(_as_list(values), dtype=float)
        if len(vals) != len(ids):
            raise InvalidInputError("values must have one entry per history item")
        if not np.isfinite(vals).all():
            raise InvalidInputError("history values must be finite numbers")
        idx = self.items_.to_index(ids, on_unknown="ignore") if ids else np.zeros(0, np.int64)
        keep = idx >= 0
        row = sp.csr_matrix(
            (vals[keep], (np.zeros(int(keep.sum()), dtype=np.int64), idx[keep])),
            shape=(1, len(self.items_)),
        )
        row.sum_duplicates()
        return row

    def recommend_from_history(
        self,
        items: Any,
        k: int = 10,
        *,
        values: Any = None,
        exclude_seen: bool = True,
        candidates: Any = None,
    ) -> pd.DataFrame:
        """Recommend for a user known only by a list of items -- an anonymous session, a new
        user after onboarding, or a known user whose history just changed -- without refitting
        (fold-in). ``values`` are the ratings/weights of those items (default 1); ``items``
        are read oldest first by sequential models.

        Returns a DataFrame with columns ``item, score, rank``.
        """
        self._require_fitted()
        if not self.supports_fold_in:
            raise TastebudError(f"{type(self).__name__} cannot recommend from a history")
        if self.needs_ratings and values is None:
            raise InvalidInputError(
                f"{type(self).__name__} learns from ratings: pass the history's ratings as values="
            )
        k = check_k(k)
        history = self.history_matrix(items, values)
        ids = _as_list(items)
        order = self.items_.to_index(ids, on_unknown="ignore") if ids else np.zeros(0, np.int64)
        sequence = np.asarray(order[order >= 0], dtype=np.int64)
        user = self.fold_in(history, sequence, history.indices if exclude_seen else None)
        if candidates is None:
            idx, val = user.top(k)
        else:
            cand = self._item_index(candidates, strict=False)
            cand = np.unique(cand[cand >= 0])
            found, scores = top_k(user.at(cand)[None, :], min(k, len(cand)))
            keep = found[0] >= 0
            idx, val = cand[found[0][keep]], scores[0][keep]
        return pd.DataFrame(
            {
                C.ITEM: self.items_.to_ids(idx),
                C.SCORE: val,
                C.RANK: np.arange(1, len(idx) + 1, dtype=np.int64),
            }
        )

    # -- ratings ------------------------------------------------------------------------------
    def predict(self, pairs: pd.DataFrame) -> np.ndarray:
        """Predicted ratings for a table with ``user`` and ``item`` columns (rating models)."""
        self._require_fitted()
        if not self.predicts_ratings:
            raise TastebudError(
                f"{type(self).__name__} ranks items but does not predict ratings; use "
                "recommend() or score(), or a rating model such as 'baseline'"
            )
        if not isinstance(pairs, pd.DataFrame) or not {C.USER, C.ITEM} <= set(pairs.columns):
            raise InvalidInputError("predict needs a DataFrame with 'user' and 'item' columns")
        u = self.users_.to_index(pairs[C.USER].to_numpy(), on_unknown="ignore")
        i = self.items_.to_index(pairs[C.ITEM].to_numpy(), on_unknown="ignore")
        if self.on_unknown == "raise":
            self.users_.to_index(pairs[C.USER].to_numpy(), what="user")
            self.items_.to_index(pairs[C.ITEM].to_numpy(), what="item")
        return self._predict(u, i)

    def _predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Optional hook (rating models): predicted ratings; -1 marks an unknown id."""
        raise TastebudError(f"{type(self).__name__} does not predict ratings")

    def warm_up(self) -> None:
        """Build now what serving would otherwise build on a first request (search
        indexes); the service calls it when it loads a version. Nothing by default."""
        return None

    # -- similar items and explanations ---------------------------------------------------------
    @property
    def supports_similar_items(self) -> bool:
        return type(self)._similar is not Recommender._similar

    @property
    def can_explain(self) -> bool:
        """Whether :meth:`explain` answers (its own reasons, or item similarities)."""
        return type(self)._explain is not Recommender._explain or self.supports_similar_items

    def _similar(self, items: np.ndarray) -> np.ndarray:
        """Optional hook: item-to-item scores ``(len(items), n_items)``."""
        raise TastebudError(f"{type(self).__name__} does not compute item similarities")

    def nearest(
        self, item: int, k: int, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` items most similar to item index ``item`` -- itself, the indices in
        ``exclude`` and non-finite similarities left out, best first, ties to the lower
        index -- as indices and similarities (fewer when fewer qualify): the one path of
        :meth:`similar_items`, the service's ``/similar`` and the pipeline's item-to-item
        generator. Models with a search index override it."""
        self._require_fitted()
        if not self.supports_similar_items:
            raise TastebudError(f"{type(self).__name__} does not compute item similarities")
        sims = np.array(self._similar(np.array([item])), dtype=np.float64)
        sims[0, item] = -np.inf
        if exclude is not None:
            sims[0, exclude] = -np.inf
        top, val = top_k(sims, min(k, sims.shape[1]))
        keep = (top[0] >= 0) & np.isfinite(val[0])
        return top[0][keep], val[0][keep]

    def similar_items(self, items: Any, k: int = 10) -> pd.DataFrame:
        """The ``k`` items most similar to each of ``items``: columns ``item, similar, score,
        rank``. Unknown items raise :class:`~tastebud.errors.UnknownIdError`."""
        self._require_fitted()
        if not self.supports_similar_items:
            raise TastebudError(f"{type(self).__name__} does not compute item similarities")
        k = check_k(k)
        ids = _as_list(items)
        idx = self._item_index(ids, strict=True)
        found = [self.nearest(int(i), k) for i in idx]  # an item is not similar to itself
        sizes = [len(top) for top, _ in found]
        empty = np.zeros(0, dtype=np.int64)
        return pd.DataFrame(
            {
                C.ITEM: np.asarray(ids, dtype=object)[np.repeat(np.arange(len(ids)), sizes)],
                "similar": self.items_.to_ids(
                    np.concatenate([top for top, _ in found]) if found else empty
                ),
                C.SCORE: np.concatenate([val for _, val in found]) if found else np.zeros(0),
                C.RANK: np.concatenate([np.arange(1, n + 1) for n in sizes] or [empty]),
            }
        )

    def similarities(self, items: np.ndarray, others: np.ndarray) -> np.ndarray:
        """Item-to-item similarities ``(len(items), len(others))`` between internal item
        indices (what MMR diversity and "because you liked" explanations read)."""
        self._require_fitted()
        if not self.supports_similar_items:
            raise TastebudError(f"{type(self).__name__} does not compute item similarities")
        return np.asarray(self._similar(np.asarray(items, dtype=np.int64)), np.float64)[:, others]

    def because(self, history: np.ndarray, items: np.ndarray) -> np.ndarray:
        """For each of ``items`` (internal indices), the item of ``history`` (internal
        indices) that most explains it -- the most similar one (:meth:`similarities`), only
        where that similarity is positive -- else -1: what the pipeline's "because you liked
        ..." reads. Models with item similarities answer; the others answer -1 throughout."""
        history = np.asarray(history, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        out = np.full(len(items), -1, dtype=np.int64)
        if not self.supports_similar_items or not len(history) or not len(items):
            return out
        sims = self.similarities(items, history)
        sims[items[:, None] == history[None, :]] = -np.inf  # not "because of itself"
        best = sims.argmax(axis=1)
        found = sims[np.arange(len(items)), best] > 0
        out[found] = history[best[found]]
        return out

    def _explained_history(self, user: int) -> np.ndarray:
        """Hook: the training items (internal indices) an explanation may name for a known
        user -- every item they interacted with; models that know likes narrow it."""
        return np.asarray(self.seen_[user].indices, dtype=np.int64)

    def _explain(self, user: int, items: np.ndarray) -> list[str]:
        """Optional hook: one reason per item. Models with item similarities have one
        already: the history item :meth:`because` names -- the same answer the service's
        "because you liked ..." gives."""
        if not self.supports_similar_items:
            raise TastebudError(f"{type(self).__name__} cannot explain its recommendations")
        history = self._explained_history(user) if user >= 0 else np.zeros(0, np.int64)
        if not len(history):
            return ["popular with everyone (nothing known about you yet)"] * len(items)
        found = self.because(history, items)
        names = self.items_.to_ids(np.maximum(found, 0)).tolist()
        return [
            f"similar to {name} in your history" if at >= 0 else "from your history as a whole"
            for at, name in zip(found.tolist(), names, strict=True)
        ]

    def explain(self, user: Any, items: Any) -> pd.DataFrame:
        """Why ``items`` are recommended to ``user``: columns ``item, reason``."""
        self._require_fitted()
        if not self.can_explain:
            raise TastebudError(f"{type(self).__name__} cannot explain its recommendations")
        _ids, uidx = self._user_index([user])
        item_ids = _as_list(items)
        iidx = self._item_index(item_ids, strict=True)
        return pd.DataFrame({C.ITEM: item_ids, "reason": self._explain(int(uidx[0]), iidx)})

    # -- persistence --------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k.endswith("_") and not k.startswith("_")}

    def save(self, path: str | Path) -> Path:
        """Write the model to folder ``path`` (created): ``config.json`` + ``arrays.npz``.

        No pickle: arrays, sparse matrices and id maps go to the npz, plain values to JSON.
        """
        self._require_fitted()
        folder = output_folder(path)
        arrays: dict[str, np.ndarray] = {}
        plain: dict[str, Any] = {}
        kinds: dict[str, str] = {}
        for key, value in self._state().items():
            if isinstance(value, IdMap):
                ids, values = value.to_state()
                if ids is not None:
                    arrays[key] = ids
                    kinds[key] = "idmap"
                else:
                    plain[key] = values
                    kinds[key] = "idmap-json"
            elif sp.issparse(value):
                csr = sp.csr_matrix(value)
                for part in ("data", "indices", "indptr"):
                    arrays[f"{key}/{part}"] = getattr(csr, part)
                arrays[f"{key}/shape"] = np.asarray(csr.shape, dtype=np.int64)
                kinds[key] = "csr"
            elif isinstance(value, np.ndarray) and value.dtype == object:
                if not all(isinstance(v, str) for v in value):
                    raise ModelFileError(f"cannot save object array {key} without pickle")
                arrays[f"{key}/utf8"], arrays[f"{key}/offsets"] = _pack_text(value)
                kinds[key] = "text"
            elif isinstance(value, np.ndarray):
                arrays[key] = value
                kinds[key] = "array"
            else:
                try:
                    json.dumps(value)
                except TypeError:
                    raise ModelFileError(
                        f"cannot save attribute {key} of type {type(value).__name__}"
                    ) from None
                plain[key] = value
                kinds[key] = "json"
        config = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": self.name,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "params": self.get_params(),
            "state": plain,
            "kinds": kinds,
        }
        from tastebud import __version__

        config["tastebud_version"] = __version__
        (folder / "config.json").write_text(to_json(config))
        np.savez(folder / "arrays.npz", **arrays)  # type: ignore[arg-type]
        (folder / CARD_FILE).write_text(model_card(self))
        return folder

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read a model written by :meth:`save`; the folder must hold this class's model."""
        config, arrays = read_model_files(path)
        model_cls = model_class_of(path, config)
        if not issubclass(model_cls, cls):
            raise ModelFileError(
                f"{path} holds a '{config.get('model')}' model, not a {cls.__name__}"
            )
        try:
            model = model_cls(**config["params"])
            model._validate()
        except (TypeError, TastebudError) as err:
            raise ModelFileError(
                f"{path}: the saved parameters do not fit {model_cls.__name__}: {err}"
            ) from None
        try:
            model._restore_state(config, arrays)
            model._restore_parts(Path(path))
        except ModelFileError:
            raise
        except Exception as err:  # noqa: BLE001 -- damaged files can fail anywhere; one error
            raise ModelFileError(
                f"{path}: saved state is incomplete or corrupt ({type(err).__name__}: {err})"
            ) from None
        model._check_loaded(path)
        return model

    def _restore_parts(self, folder: Path) -> None:
        """Hook: read what a model keeps beside its own files (composites: their members);
        most models keep nothing there."""
        return None

    def _check_loaded(self, path: str | Path) -> None:
        """Refuse a loaded model whose parts do not fit together: the learned state must
        agree with the id maps, and one recommendation (a known and an unknown user) must
        work -- so a damaged folder fails at load, with the folder's name, not at the
        first request."""
        n_users, n_items = len(self.users_), len(self.items_)
        titles = getattr(self, "item_titles_", np.empty(0))
        problems = [
            f"seen-items matrix {self.seen_.shape} for {n_users} users x {n_items} items"
            if self.seen_.shape != (n_users, n_items)
            else "",
            f"{len(self.popularity_)} popularity values for {n_items} items"
            if np.shape(self.popularity_) != (n_items,)
            else "",
            f"{len(titles)} titles for {n_items} items" if len(titles) not in (0, n_items) else "",
        ]
        problem = next((p for p in problems if p), None)
        if problem is None and n_users and n_items:
            try:
                self.recommend_indices(np.array([0, -1]), 1, exclude=self.seen_)
            except TastebudError:
                raise
            except Exception as err:  # noqa: BLE001 -- whatever the damage, one clear error
                problem = f"it fails to recommend ({type(err).__name__}: {err})"
        if problem is not None:
            raise ModelFileError(f"{path}: the saved model is damaged: {problem}")

    def _restore_state(self, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Set learned attributes from a model folder's config and arrays."""
        model = self
        for key, kind in config["kinds"].items():
            if kind == "idmap":
                value: Any = IdMap.from_state(arrays[key], None)
            elif kind == "idmap-json":
                value = IdMap.from_state(None, config["state"][key])
            elif kind == "csr":
                shape = tuple(int(x) for x in arrays[f"{key}/shape"])
                value = sp.csr_matrix(
                    (arrays[f"{key}/data"], arrays[f"{key}/indices"], arrays[f"{key}/indptr"]),
                    shape=shape,
                )
            elif kind == "array":
                value = arrays[key]
            elif kind == "text":
                value = _unpack_text(arrays[f"{key}/utf8"], arrays[f"{key}/offsets"])
            else:
                value = config["state"][key]
            setattr(model, key, value)


def _pack_text(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Strings as one UTF-8 byte array plus end offsets: variable length, no pickle (a
    fixed-width unicode array would take the longest string's width for every entry)."""
    encoded = [v.encode("utf-8") for v in values]
    offsets = np.cumsum([len(b) for b in encoded], dtype=np.int64)
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets


def _unpack_text(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    raw = np.asarray(data, dtype=np.uint8).tobytes()
    ends = np.asarray(offsets, dtype=np.int64)
    if len(ends) and (ends[-1] != len(raw) or (np.diff(ends) < 0).any() or ends[0] < 0):
        raise ValueError("text offsets do not match the text")
    if not len(ends):
        return np.empty(0, dtype=object)
    starts = np.concatenate([[0], ends[:-1]])
    return np.array(
        [raw[a:b].decode("utf-8") for a, b in zip(starts, ends, strict=True)], dtype=object
    )


def model_class_of(path: str | Path, config: dict[str, Any]) -> type[Recommender]:
    """The registered class a model folder's config names (a clear error when unknown)."""
    from tastebud.models.registry import get_class

    try:
        return get_class(str(config["model"]))
    except InvalidInputError:
        raise ModelFileError(
            f"{path} holds a model named {config['model']!r}, which this tastebud does not know"
        ) from None


def read_model_files(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and check a model folder's config and arrays (no pickle)."""
    folder = Path(path)
    config_path = folder / "config.json"
    if not folder.exists():
        raise ModelFileError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise ModelFileError(f"{folder} is a file, not a model folder")
    if not config_path.is_file():
        raise ModelFileError(f"{folder} is not a saved tastebud model (no config.json)")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ModelFileError(f"{config_path} is not valid JSON: {err}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelFileError(f"{config_path} is not a tastebud model file")
    if config.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{config_path} has format version {config.get('format_version')}; this tastebud "
            f"reads version {FORMAT_VERSION}"
        )
    for key, kind in (("params", dict), ("state", dict), ("kinds", dict), ("model", str)):
        if not isinstance(config.get(key), kind):
            raise ModelFileError(f"{config_path}: '{key}' is missing or not a {kind.__name__}")
    try:
        with np.load(folder / "arrays.npz", allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except Exception as err:  # noqa: BLE001 -- a truncated or damaged zip fails in many ways
        raise ModelFileError(
            f"{folder}: cannot read arrays.npz ({type(err).__name__}: {err})"
        ) from None
    return config, arrays
