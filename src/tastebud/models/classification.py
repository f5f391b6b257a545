"""Recommendation as classification over a user's history.

A user's liked items are the *input* and a held-out liked item is the *class*: a linear
classifier with one class per item learns which item completes a history, and a user's
recommendations are the classes it scores highest for their full history.

Preferences become likes
    An interaction is a *like* when its preference value reaches ``threshold``: the rating
    on rated data, else the weight (play counts, listening time...). With ``threshold=None``
    a rated dataset uses 4.0 (four stars or more) and an unrated one counts every interaction
    as a like. A dataset with neither ratings nor weights counts every interaction whatever
    the threshold.

Two encodings turn likes into training samples (:func:`history_samples` shows the tables)
    ``"leave-one-out"``
        every liked item is held out once as the class; the input is the user's other likes;
    ``"history-playback"``
        the likes are ordered by time (timestamps; item order when there are none) and each
        like is the class of one sample whose input is the likes before it -- the model
        learns to predict the *next* like, which suits temporal evaluation and incremental
        updates.
    A sample whose input would be empty (the first like in playback, the only like of a user
    in leave-one-out) is kept only for ``inputs="tabular"``, where the user's attributes
    still say something; with item inputs it carries no information and is skipped.

Three input encodings
    ``"ids"``
        a binary bag of item ids (rows L2-normalized with ``normalize=True``);
    ``"text"``
        the liked items' names as text ("Freewheelin', Origin of Symmetry"), hashed into word
        n-grams with scikit-learn's ``HashingVectorizer`` -- each name is hashed on its own and
        the vectors are summed, so an n-gram never spans two names;
    ``"tabular"``
        the user's attributes (``user_features``: numbers standardized, categories one-hot,
        via :func:`tastebud.features.feature_matrix`) next to the item-id bag.

Recency
    ``half_life_days`` weights each sample by ``0.5 ** (age / half_life_days)``, where the age
    is the time from the sample's target like to the latest timestamp in training;
    ``window_days`` drops samples older than that. Both need timestamps.

The classifier is a softmax (multinomial logistic regression) over the item classes whose
weight matrix is factorized, W = A Bᵀ: the input x is mapped to ``factors`` numbers h = xA and
class c scores h·B_c + b_c, so memory and time grow with (inputs + classes) x factors instead
of inputs x classes -- thousands of classes cost seconds, and the softmax makes the classes
compete for each sample, which one-versus-rest classifiers do not. It is trained by minibatch
Adam on the weighted cross-entropy of the samples with an L2 penalty ``alpha`` (numpy,
float32, seeded: the same seed gives the same model; BLAS on tastebud's thread count, one
thread by default, :mod:`tastebud._threads`). On MovieLens 100K likes (53K playback
samples, 1,430 classes) ``benchmarks/classification.py`` has the timings and the comparison
with item-kNN, EASE and ALS.

Scores and items that are not classes
    A user's score for a class is the classifier's decision value for their input. Items that
    never were a target in training (never liked, or beyond ``max_classes``) cannot be
    predicted: they score below every class, ordered among themselves by popularity (finite
    scores, so lists stay full).

Incremental updates
    :meth:`HistoryClassifier.partial_update` records a new like of a (possibly new) user and
    takes ``update_steps`` plain gradient steps of size ``update_rate`` on the playback sample
    "likes so far -> new item"; the like also joins the user's input, so their next
    recommendations reflect it at once. Items
    unknown at fit time cannot become classes (refit to add them).

One module (~800 lines) for one model family: the history samplers, the linear and softmax
trainers and the model that joins them are only used together.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.preprocessing import normalize as l2_normalize

from tastebud import _threads
from tastebud.data import columns as C
from tastebud.data.dataset import Dataset
from tastebud.errors import InvalidInputError
from tastebud.features import feature_matrix
from tastebud.models.base import Recommender
from tastebud.models.registry import register

Encoding = Literal["leave-one-out", "history-playback"]
Inputs = Literal["ids", "text", "tabular"]

DAY = 86_400.0
DEFAULT_RATING_THRESHOLD = 4.0
_NAME_COLUMNS = ("title", "name")


#: A fit's inputs may hold this many likes per allowed sample (``max_samples``) in all.
INPUTS_PER_SAMPLE = 100

_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8


# -- the factorized softmax ------------------------------------------------------------------------
@dataclasses.dataclass
class _Softmax:
    """Parameters of the factorized softmax (module docstring) and their Adam moments, float32.

    ``step`` counts Adam steps taken (bias correction)."""

    A: np.ndarray  # inputs x factors
    B: np.ndarray  # classes x factors
    b: np.ndarray  # classes
    moments: list[np.ndarray]  # first and second moments of A, B, b
    step: int

    @classmethod
    def init(
        cls, n_inputs: int, n_classes: int, factors: int, rng: np.random.Generator
    ) -> _Softmax:
        scale = 1.0 / np.sqrt(factors)
        A = (rng.standard_normal((n_inputs, factors)) * scale).astype(np.float32)
        B = (rng.standard_normal((n_classes, factors)) * scale).astype(np.float32)
        b = np.zeros(n_classes, dtype=np.float32)
        moments = [np.zeros_like(x) for x in (A, A, B, B, b, b)]
        return cls(A, B, b, moments, 0)

    def logits(self, x: sp.csr_matrix) -> np.ndarray:
        return np.asarray((x @ self.A) @ self.B.T + self.b[None, :], dtype=np.float32)

    def train_step(
        self,
        x: sp.csr_matrix,
        y: np.ndarray,
        weight: np.ndarray,
        learning_rate: float,
        alpha: float,
        *,
        mean: bool = True,
    ) -> float:
        """One Adam step on the cross-entropy of rows ``x`` with class positions ``y``,
        weighted by ``weight`` (divided by its sum with ``mean``); returns that loss. The L2
        penalty ``alpha`` covers every class and the input rows the batch touches (the other
        input rows, and their moments, are left as they are: a sparse, lazy update)."""
        h = np.asarray(x @ self.A, dtype=np.float32)
        z = h @ self.B.T + self.b[None, :]
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        rows = np.arange(len(y))
        w = (weight / weight.sum() if mean else weight).astype(np.float32)
        loss = float(-(w * np.log(np.maximum(p[rows, y], 1e-30))).sum())
        g = p
        g[rows, y] -= 1.0
        g *= w[:, None]
        grad_B = g.T @ h + alpha * self.B
        grad_b = g.sum(axis=0)
        grad_h = g @ self.B
        touched = np.unique(x.indices)
        grad_A = np.asarray(x.T @ grad_h, dtype=np.float32)[touched] + alpha * self.A[touched]
        self.step += 1
        beta1, beta2 = _ADAM_BETAS
        lr = learning_rate * np.sqrt(1 - beta2**self.step) / (1 - beta1**self.step)
        m_A, v_A, m_B, v_B, m_b, v_b = self.moments
        for param, m, v, grad, where in (
            (self.A, m_A, v_A, grad_A, touched),
            (self.B, m_B, v_B, grad_B, slice(None)),
            (self.b, m_b, v_b, grad_b, slice(None)),
        ):
            m[where] = beta1 * m[where] + (1 - beta1) * grad
            v[where] = beta2 * v[where] + (1 - beta2) * grad * grad
            param[where] -= lr * m[where] / (np.sqrt(v[where]) + _ADAM_EPS)
        return loss

    def sgd_step(self, x: sp.csr_matrix, y: int, weight: float, learning_rate: float) -> None:
        """One plain gradient step on one sample's cross-entropy (partial updates: no
        momentum, so nothing from the last training batch is replayed)."""
        h = np.asarray(x @ self.A, dtype=np.float32)[0]
        z = self.B @ h + self.b
        p = np.exp(z - z.max())
        p /= p.sum()
        p[y] -= 1.0
        g = (weight * p).astype(np.float32)
        grad_h = g @ self.B
        self.B -= learning_rate * np.outer(g, h)
        self.b -= learning_rate * g
        rows = x.indices
        self.A[rows] -= learning_rate * np.outer(x.data, grad_h).astype(np.float32)


# -- likes and samples ---------------------------------------------------------------------------
def like_mask(dataset: Dataset, threshold: float | None) -> tuple[np.ndarray, float | None]:
    """Which interactions are likes (module docstring), and the threshold actually used."""
    values = dataset.rating if dataset.rating is not None else dataset.weight
    if threshold is None and dataset.rating is not None:
        threshold = DEFAULT_RATING_THRESHOLD
    if values is None or threshold is None:
        return np.ones(dataset.n_interactions, dtype=bool), None
    return values >= threshold, float(threshold)


@dataclasses.dataclass(frozen=True)
class _Samples:
    """Training samples as internal indices.

    ``likes`` are the liked items in (user, time, item) order; sample ``s`` has target
    ``likes[target_pos[s]]`` and input ``likes[positions[indptr[s]:indptr[s + 1]]]``, oldest
    first.
    """

    like_users: np.ndarray
    likes: np.ndarray
    like_times: np.ndarray | None
    target_pos: np.ndarray
    indptr: np.ndarray
    positions: np.ndarray
    weight: np.ndarray
    threshold: float | None
    reference_time: float | None

    @property
    def user(self) -> np.ndarray:
        return self.like_users[self.target_pos]

    @property
    def target(self) -> np.ndarray:
        return self.likes[self.target_pos]

    def input_matrix(self, n_items: int) -> sp.csr_matrix:
        """The binary (samples x items) bag of input items."""
        matrix = sp.csr_matrix(
            (np.ones(len(self.positions)), self.likes[self.positions], self.indptr),
            shape=(len(self.target_pos), n_items),
        )
        matrix.sort_indices()
        return matrix

    def select(self, keep: np.ndarray) -> _Samples:
        """Only the samples where ``keep`` is true."""
        lengths = np.diff(self.indptr)
        owner = np.repeat(np.arange(len(lengths)), lengths)
        indptr = np.zeros(int(keep.sum()) + 1, dtype=np.int64)
        np.cumsum(lengths[keep], out=indptr[1:])
        return dataclasses.replace(
            self,
            target_pos=self.target_pos[keep],
            indptr=indptr,
            positions=self.positions[keep[owner]],
            weight=self.weight[keep],
        )


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``concat(arange(s, s + n) for s, n in zip(starts, lengths))``, vectorized."""
    total = int(lengths.sum())
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts - offsets, lengths) + np.arange(total, dtype=np.int64)


def build_samples(
    dataset: Dataset,
    *,
    encoding: Encoding,
    threshold: float | None = None,
    half_life_days: float | None = None,
    window_days: float | None = None,
    keep_empty: bool = False,
    max_samples: int | None = None,
) -> _Samples:
    """The (input, target, weight) samples of a dataset as internal indices.

    With ``max_samples``, more samples than that -- or inputs holding more than
    :data:`INPUTS_PER_SAMPLE` times that many likes in all (a history's samples repeat its
    earlier likes, so one very long history costs its length squared) -- is an error raised
    before the samples are built."""
    if encoding not in ("leave-one-out", "history-playback"):
        raise InvalidInputError(
            f"encoding must be 'leave-one-out' or 'history-playback', got {encoding!r}"
        )
    if (half_life_days is not None or window_days is not None) and dataset.timestamp is None:
        raise InvalidInputError(
            f"half_life_days and window_days need timestamps; {dataset.name} has none"
        )
    mask, used = like_mask(dataset, threshold)
    users = dataset.user_index[mask].astype(np.int64)
    items = dataset.item_index[mask].astype(np.int64)
    times = None if dataset.timestamp is None else dataset.timestamp[mask]
    keys = (items, users) if times is None else (items, times, users)
    order = np.lexsort(keys)  # by user, then time, then item
    users, items = users[order], items[order]
    times = None if times is None else times[order]

    n = len(users)
    new_user = np.ones(n, dtype=bool)
    new_user[1:] = users[1:] != users[:-1]
    group_start = np.flatnonzero(new_user)
    group_end = np.append(group_start[1:], n)
    group = np.cumsum(new_user) - 1
    start, end = group_start[group], group_end[group]
    position = np.arange(n, dtype=np.int64)
    playback = encoding == "history-playback"
    lengths = position - start if playback else end - start - 1
    keep = (lengths > 0) | keep_empty
    reference = None if dataset.timestamp is None else float(dataset.timestamp.max())
    age_days = None
    if times is not None and reference is not None:
        age_days = (reference - times) / DAY
        if window_days is not None:
            keep &= age_days <= window_days
    target_pos = position[keep]
    lengths = lengths[keep]
    if max_samples is not None:
        _check_sample_budget(len(target_pos), lengths, int(max_samples), dataset.name)
    if playback:
        positions = _ranges(start[keep], lengths)
    else:
        full = _ranges(start[keep], lengths + 1)
        owner = np.repeat(target_pos, lengths + 1)
        positions = full[full != owner]
    indptr = np.zeros(len(target_pos) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])

    weight = np.ones(len(target_pos), dtype=np.float64)
    if age_days is not None and half_life_days is not None:
        weight *= 0.5 ** (age_days[target_pos] / half_life_days)
    return _Samples(
        like_users=users,
        likes=items,
        like_times=times,
        target_pos=target_pos,
        indptr=indptr,
        positions=positions,
        weight=weight,
        threshold=used,
        reference_time=reference,
    )


def _check_sample_budget(n_samples: int, lengths: np.ndarray, limit: int, name: str) -> None:
    """Refuses (before anything is allocated) more than ``limit`` samples, or inputs
    holding more than :data:`INPUTS_PER_SAMPLE` x ``limit`` likes in all: the full-softmax
    training costs classes x factors per sample and epoch (``benchmarks/scale.py``: about
    3 minutes an epoch for 0.6M samples and 20,000 classes on 2 cores)."""
    remedy = (
        "set window_days to learn from recent likes only, raise max_samples, or use als or "
        "item-knn, which scale to tens of millions of interactions"
    )
    if n_samples > limit:
        raise InvalidInputError(
            f"history-classifier: {name} gives {n_samples:,} training samples, over "
            f"max_samples={limit:,}; {remedy}"
        )
    entries = int(lengths.sum())
    if entries > INPUTS_PER_SAMPLE * limit:
        raise InvalidInputError(
            f"history-classifier: the samples' inputs of {name} hold {entries:,} likes in "
            f"all, over {INPUTS_PER_SAMPLE} x max_samples={INPUTS_PER_SAMPLE * limit:,} (the "
            f"longest history has {int(lengths.max()) + 1:,} likes, and each of its samples "
            f"repeats the earlier ones); {remedy}"
        )


def item_names(dataset: Dataset, text_field: str | None = None) -> list[str]:
    """One name per item (internal order): ``text_field`` of the item features, else the first
    of ``title``/``name``, else the id as text (also for items whose name is missing)."""
    table = dataset.item_features
    ids = [str(i) for i in dataset.items.ids]
    if text_field is not None:
        if table is None or text_field not in table.columns:
            have = ", ".join(map(str, table.columns)) if table is not None else "none"
            raise InvalidInputError(f"no item field {text_field!r} to read names from ({have})")
        column = text_field
    else:
        if table is None:
            return ids
        lower = {str(c).lower(): c for c in table.columns}
        found = [lower[name] for name in _NAME_COLUMNS if name in lower]
        if not found:
            return ids
        column = found[0]
    values = table[column]
    return [ids[i] if pd.isna(v) else str(v) for i, v in enumerate(values.tolist())]


def _user_table(dataset: Dataset, user_fields: tuple[str, ...] | None) -> pd.DataFrame | None:
    table = dataset.user_features
    if user_fields is None:
        return table
    if table is None:
        raise InvalidInputError(
            f"user_fields needs user features; {dataset.name} has none (pass users=... to "
            "Dataset.from_frame)"
        )
    missing = [f for f in user_fields if f not in table.columns]
    if missing:
        raise InvalidInputError(
            f"no user field {', '.join(map(repr, missing))}; fields: "
            f"{', '.join(map(str, table.columns))}"
        )
    return table[list(user_fields)]


def user_attributes(dataset: Dataset, user_fields: tuple[str, ...] | None) -> sp.csr_matrix:
    """The (users x attributes) matrix of the tabular input: all user feature columns by
    default (free-text-like columns left out by :func:`~tastebud.features.feature_matrix`);
    fields named in ``user_fields`` are always encoded."""
    table = _user_table(dataset, user_fields)
    if table is None:
        return sp.csr_matrix((dataset.n_users, 0))
    share = 1.0 if user_fields is not None else 0.5
    return sp.csr_matrix(feature_matrix(table, max_distinct_share=share), dtype=np.float64)


def _as_dataset(
    data: Dataset | pd.DataFrame,
    users: pd.DataFrame | None,
    items: pd.DataFrame | None,
) -> Dataset:
    if isinstance(data, Dataset):
        return data
    if not isinstance(data, pd.DataFrame):
        raise InvalidInputError(
            f"history_samples needs a Dataset or a DataFrame, got {type(data).__name__}"
        )
    present = set(data.columns)
    return Dataset.from_frame(
        data,
        rating=C.RATING if C.RATING in present else None,
        weight=C.WEIGHT if C.WEIGHT in present else None,
        timestamp=C.TIMESTAMP if C.TIMESTAMP in present else None,
        users=users,
        items=items,
    )


def history_samples(
    data: Dataset | pd.DataFrame,
    *,
    encoding: Encoding = "history-playback",
    inputs: Inputs = "ids",
    threshold: float | None = None,
    half_life_days: float | None = None,
    window_days: float | None = None,
    text_field: str | None = None,
    user_fields: tuple[str, ...] | None = None,
    users: pd.DataFrame | None = None,
    items: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The sample table a :class:`HistoryClassifier` learns from, with external ids.

    ``data`` is a :class:`~tastebud.data.Dataset` or an interaction table with columns
    ``user, item`` and optionally ``rating``, ``weight``, ``timestamp`` (then ``users`` and
    ``items`` are optional feature tables). The other arguments mean what the model's
    parameters of the same names mean (module docstring).

    Returns one row per sample, users in id order and each user's samples in time order:
    ``user``, the user's attribute columns (``inputs="tabular"``), ``input`` (tuple of item
    ids, oldest first), ``text`` (``inputs="text"``: their names joined by ", "), ``target``,
    ``timestamp`` (of the target like, when known) and ``weight``.
    """
    if inputs not in ("ids", "text", "tabular"):
        raise InvalidInputError(f"inputs must be 'ids', 'text' or 'tabular', got {inputs!r}")
    dataset = _as_dataset(data, users, items)
    samples = build_samples(
        dataset,
        encoding=encoding,
        threshold=threshold,
        half_life_days=half_life_days,
        window_days=window_days,
        keep_empty=inputs == "tabular",
    )
    item_ids = dataset.items.ids
    input_items = item_ids[samples.likes[samples.positions]].tolist()
    bounds = samples.indptr
    tuples = [tuple(input_items[bounds[s] : bounds[s + 1]]) for s in range(len(bounds) - 1)]
    out: dict[str, Any] = {C.USER: dataset.users.to_ids(samples.user)}
    if inputs == "tabular":
        table = _user_table(dataset, user_fields)
        if table is not None:
            for name in table.columns:
                out[str(name)] = table[name].to_numpy()[samples.user]
    out["input"] = tuples
    if inputs == "text":
        names = np.asarray(item_names(dataset, text_field), dtype=object)
        name_of = dict(zip(item_ids.tolist(), names.tolist(), strict=True))
        out["text"] = [", ".join(name_of[i] for i in t) for t in tuples]
    out["target"] = item_ids[samples.target].tolist()
    if samples.like_times is not None:
        out[C.TIMESTAMP] = samples.like_times[samples.target_pos]
    out["weight"] = samples.weight
    return pd.DataFrame(out)


def _grow(matrix: sp.csr_matrix, n_rows: int) -> sp.csr_matrix:
    """``matrix`` with empty rows appended up to ``n_rows``."""
    if n_rows <= matrix.shape[0]:
        return matrix
    extra = sp.csr_matrix((n_rows - matrix.shape[0], matrix.shape[1]), dtype=matrix.dtype)
    return sp.csr_matrix(sp.vstack([matrix, extra], format="csr"))


def _with_entry(matrix: sp.csr_matrix, row: int, col: int) -> sp.csr_matrix:
    """``matrix`` with a 1 at (row, col); an existing entry is kept."""
    if matrix[row, col] != 0:
        return matrix
    one = sp.csr_matrix(([1.0], ([row], [col])), shape=matrix.shape, dtype=matrix.dtype)
    out = sp.csr_matrix(matrix + one)
    out.sort_indices()
    return out


# -- the model -----------------------------------------------------------------------------------
@register("history-classifier")
@dataclasses.dataclass(kw_only=True, eq=False)
class HistoryClassifier(Recommender):
    """Recommendation as classification: liked items in, the next liked item out.

    Parameters
    ----------
    encoding:
        ``"history-playback"`` (default: one sample per point of the time-ordered likes, so the
        model learns what comes *next* -- what a temporal split asks) or ``"leave-one-out"``
        (every like held out once, order ignored).
    inputs:
        ``"ids"`` (bag of item ids), ``"text"`` (the items' names as hashed word n-grams) or
        ``"tabular"`` (user attributes plus the bag of ids).
    threshold:
        Preference value (rating, else weight) from which an interaction is a like; ``None``
        means 4.0 on rated data and every interaction otherwise.
    half_life_days, window_days:
        Recency: sample weights halve every ``half_life_days`` of age, samples older than
        ``window_days`` are dropped (ages relative to the latest training timestamp).
    text_field:
        Item feature column holding the names (``inputs="text"``); default the first of
        ``title``/``name``, else the ids as text.
    user_fields:
        User feature columns of the tabular input (default: all usable columns).
    text_features:
        Hashing dimension of the text input (the classifier stores ``classes x text_features``
        weights).
    max_ngram:
        Longest word n-gram of the text input.
    normalize:
        L2-normalize the item part of each input, so long histories do not dominate.
    factors:
        Rank of the softmax's weight matrix (module docstring).
    alpha:
        L2 penalty of the factors and class biases.
    learning_rate:
        Adam's step size.
    batch_size:
        Samples per Adam step.
    epochs:
        Passes over the samples.
    update_steps, update_rate:
        Gradient steps :meth:`partial_update` takes on a new like's sample, and their size.
    max_classes:
        At most this many items, the most frequent targets, become classes (memory and time
        grow with it); the others rank after the classes, by popularity.
    max_samples:
        A fit with more training samples than this (or whose inputs hold more than 100 times
        this many likes in all) refuses before building them, naming ``window_days``: the
        full softmax costs ``max_classes x factors`` per sample and epoch, about 3 minutes an
        epoch per 600,000 samples at 20,000 classes on 2 cores.
    random_state:
        Seed of the initial factors and the sample shuffling: the same seed gives the same
        model.
    """

    encoding: Encoding = "history-playback"
    inputs: Inputs = "ids"
    threshold: float | None = None
    half_life_days: float | None = None
    window_days: float | None = None
    text_field: str | None = None
    user_fields: tuple[str, ...] | None = None
    text_features: int = 4_096
    max_ngram: int = 2
    normalize: bool = True
    factors: int = 64
    alpha: float = 1e-4
    learning_rate: float = 0.005
    batch_size: int = 256
    epochs: int = 10
    update_steps: int = 1
    update_rate: float = 0.05
    max_classes: int = 20_000
    max_samples: int = 1_000_000
    random_state: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.user_fields, list):
            self.user_fields = tuple(self.user_fields)  # JSON round trips give lists

    def _validate(self) -> None:
        super()._validate()
        self._check(
            self.half_life_days is None or self.half_life_days > 0, "half_life_days must be > 0"
        )
        self._check(self.window_days is None or self.window_days > 0, "window_days must be > 0")
        self._check(self.text_features >= 1, "text_features must be >= 1")
        self._check(self.max_ngram >= 1, "max_ngram must be >= 1")
        self._check(self.factors >= 1, "factors must be >= 1")
        self._check(self.alpha >= 0, "alpha must be >= 0")
        self._check(self.learning_rate > 0, "learning_rate must be > 0")
        self._check(self.batch_size >= 1, "batch_size must be >= 1")
        self._check(self.epochs >= 1, "epochs must be >= 1")
        self._check(self.update_steps >= 0, "update_steps must be >= 0")
        self._check(self.update_rate > 0, "update_rate must be > 0")
        self._check(self.max_classes >= 2, "max_classes must be >= 2")
        self._check(self.max_samples >= 1, "max_samples must be >= 1")
        self._check(0 <= self.random_state < 2**32, "random_state must be in [0, 2**32)")

    # -- fitting ------------------------------------------------------------------------------
    def _fit(self, dataset: Dataset) -> None:
        samples = build_samples(
            dataset,
            encoding=self.encoding,
            threshold=self.threshold,
            half_life_days=self.half_life_days,
            window_days=self.window_days,
            keep_empty=self.inputs == "tabular",
            max_samples=int(self.max_samples),
        )
        if len(samples.likes) == 0:
            raise InvalidInputError(
                f"no interaction of {dataset.name} is a like (threshold {samples.threshold}); "
                "lower threshold"
            )
        targets = samples.target
        counts = np.bincount(targets, minlength=dataset.n_items)
        classes = np.flatnonzero(counts)
        if len(classes) > self.max_classes:
            best = np.argsort(-counts[classes], kind="stable")[: int(self.max_classes)]
            classes = np.sort(classes[best])
            samples = samples.select(np.isin(targets, classes))
            targets = samples.target
        if len(classes) < 2:
            raise InvalidInputError(
                f"{type(self).__name__} needs at least two liked items as classes; "
                f"{dataset.name} gives {len(classes)} (check threshold and encoding)"
            )
        self.like_threshold_ = samples.threshold
        self.reference_time_ = samples.reference_time
        self.inputs_ = sp.csr_matrix(
            (np.ones(len(samples.likes)), (samples.like_users, samples.likes)),
            shape=(dataset.n_users, dataset.n_items),
        )
        self.item_text_: sp.csr_matrix | None = None
        self.user_attributes_: sp.csr_matrix | None = None
        if self.inputs == "text":
            self.item_text_ = self._vectorizer().transform(item_names(dataset, self.text_field))
        if self.inputs == "tabular":
            self.user_attributes_ = user_attributes(dataset, self.user_fields)
        features = sp.csr_matrix(
            self._features(samples.input_matrix(dataset.n_items), samples.user), dtype=np.float32
        )
        y = np.searchsorted(classes, targets)
        weight = np.asarray(samples.weight, dtype=np.float32)
        rng = np.random.default_rng(self.random_state)
        model = _Softmax.init(features.shape[1], len(classes), int(self.factors), rng)
        # minibatch products are short BLAS calls: with a thread per core each waits for
        # the slowest thread, which on a busy machine is one the scheduler gave away
        with _threads.limited(_threads.threads()):
            losses = self._train(model, features, y, weight, rng)
        self.classes_ = classes.astype(np.int64)
        self.loss_ = np.asarray(losses)
        self.input_factors_ = model.A
        self.class_factors_ = model.B
        self.class_bias_ = model.b

    def _train(
        self,
        model: _Softmax,
        features: sp.csr_matrix,
        y: np.ndarray,
        weight: np.ndarray,
        rng: np.random.Generator,
    ) -> list[float]:
        """``epochs`` shuffled passes of minibatch Adam steps; the weighted mean loss of each."""
        batch = int(self.batch_size)
        losses = []
        for _ in range(int(self.epochs)):
            order = rng.permutation(len(y))
            total = 0.0
            for start in range(0, len(y), batch):
                rows = order[start : start + batch]
                share = float(weight[rows].sum())
                if share <= 0:
                    continue
                total += share * model.train_step(
                    features[rows], y[rows], weight[rows], self.learning_rate, self.alpha
                )
            losses.append(total / max(float(weight.sum()), 1e-30))
        return losses

    def _softmax(self) -> _Softmax:
        """The trained softmax over the stored arrays (steps update them in place)."""
        return _Softmax(self.input_factors_, self.class_factors_, self.class_bias_, [], 0)

    def _vectorizer(self) -> HashingVectorizer:
        return HashingVectorizer(
            n_features=int(self.text_features),
            ngram_range=(1, int(self.max_ngram)),
            token_pattern=r"(?u)\b\w+\b",
            alternate_sign=False,
            norm=None,
        )

    def _features(self, bag: sp.csr_matrix, users: np.ndarray | None) -> sp.csr_matrix:
        """Classifier inputs from binary item bags (and, for tabular, the rows' users; -1 or
        ``None`` = no attributes)."""
        x = sp.csr_matrix(bag, dtype=np.float64, copy=True)
        x.sum_duplicates()
        x.data[:] = 1.0
        if self.inputs == "text" and self.item_text_ is not None:
            x = sp.csr_matrix(x @ self.item_text_)
        if self.normalize:
            x = sp.csr_matrix(l2_normalize(x))
        attributes = self.user_attributes_
        if self.inputs == "tabular" and attributes is not None and attributes.shape[1]:
            if users is None:
                rows = sp.csr_matrix((x.shape[0], attributes.shape[1]))
            else:
                known = users >= 0
                rows = attributes[np.where(known, users, 0)]
                rows = sp.csr_matrix(rows.multiply(known[:, None].astype(np.float64)))
            x = sp.hstack([rows, x], format="csr")
        return x

    # -- scoring ------------------------------------------------------------------------------
    def _decision(self, features: sp.csr_matrix) -> np.ndarray:
        """Scores over all items: classes by decision value, the rest below, by popularity."""
        block = self._softmax().logits(sp.csr_matrix(features, dtype=np.float32))
        block = block.astype(np.float64)
        n_items = len(self.items_)
        if len(self.classes_) == n_items:
            return block
        lowest = block.min(axis=1, keepdims=True) if block.size else np.zeros((len(block), 1))
        tail = self.popularity_ / (self.popularity_.max() + 1.0)
        full = np.broadcast_to(lowest - 1.0 + tail[None, :], (len(block), n_items)).copy()
        full[:, self.classes_] = block
        return full

    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        scores = self._decision(self._features(self.inputs_[users], users))
        return scores if items is None else scores[:, items]

    def _score_history(
        self, histories: sp.csr_matrix, sequences: list[np.ndarray] | None = None
    ) -> np.ndarray:
        """Fold-in. A history given without values (all ones) counts every item as a like; one
        given with values (ratings, weights) keeps the items that reach the like threshold
        used in training -- then it reproduces a known user's scores exactly. Tabular inputs
        get no attributes."""
        bag = sp.csr_matrix(histories, dtype=np.float64, copy=True)
        bag.sum_duplicates()
        threshold = self.like_threshold_
        if threshold is not None and bag.nnz and not np.all(bag.data == 1.0):
            bag.data = (bag.data >= threshold).astype(np.float64)
            bag.eliminate_zeros()
        return self._decision(self._features(bag, None))

    def _explain(self, user: int, items: np.ndarray) -> list[str]:
        if user < 0:
            return ["popular with everyone (new user)"] * len(items)
        liked = self.inputs_[user].indices
        offset = self.input_factors_.shape[0] - (
            len(self.items_) if self.inputs != "text" else int(self.text_features)
        )
        reasons = []
        for item in items:
            position = int(np.searchsorted(self.classes_, item))
            if position >= len(self.classes_) or self.classes_[position] != item:
                reasons.append("never liked in training: ranked by popularity")
                continue
            weights = self.input_factors_[offset:] @ self.class_factors_[position]
            if self.inputs == "text" and self.item_text_ is not None:
                per_item = np.asarray(self.item_text_[liked] @ weights).ravel()
            else:
                per_item = weights[liked]
            best = np.argsort(-per_item, kind="stable")[:2]
            best = best[per_item[best] > 0]
            if len(best) == 0:
                reasons.append("often liked by users like you")
                continue
            names = " and ".join(map(str, self.items_.to_ids(liked[best])))
            reasons.append(f"often liked after {names}")
        return reasons

    # -- sample tables and incremental updates -------------------------------------------------
    def samples(self, dataset: Dataset) -> pd.DataFrame:
        """The sample table this model's parameters make from ``dataset``
        (:func:`history_samples`)."""
        return history_samples(
            dataset,
            encoding=self.encoding,
            inputs=self.inputs,
            threshold=self.threshold,
            half_life_days=self.half_life_days,
            window_days=self.window_days,
            text_field=self.text_field,
            user_fields=self.user_fields,
        )

    def partial_update(self, user: Any, item: Any, *, weight: float = 1.0) -> Self:
        """Record that ``user`` (known or new) just liked ``item`` and learn from it at once.

        One history-playback sample -- input: the user's likes so far, class: ``item`` -- takes
        ``update_steps`` gradient steps of ``update_rate`` x ``weight``, then the like joins the
        user's history and their seen items, so their next recommendations change
        immediately. An item known from training but never a class (never liked there)
        only joins the history: a linear classifier cannot grow a class without a refit.
        Items unknown at fit time raise :class:`~tastebud.errors.InvalidInputError`. New
        users have no attributes (tabular inputs). Returns ``self``.
        """
        self._require_fitted()
        self._check(
            isinstance(weight, int | float | np.integer | np.floating)
            and bool(np.isfinite(weight))
            and weight > 0,
            f"weight must be a positive number, got {weight!r}",
        )
        item_index = int(self.items_.to_index([item], on_unknown="ignore")[0])
        if item_index < 0:
            raise InvalidInputError(
                f"item {item!r} was not in the training data: it can be neither an input nor a "
                "class of the fitted classifier; refit to add it"
            )
        user_index = int(self.users_.to_index([user], on_unknown="ignore")[0])
        if user_index < 0:  # a new user: one more (empty) row everywhere
            self.users_ = self.users_.extend([user])
            user_index = len(self.users_) - 1
            self.inputs_ = _grow(self.inputs_, len(self.users_))
            self.seen_ = _grow(self.seen_, len(self.users_))
            if self.user_attributes_ is not None:
                self.user_attributes_ = _grow(self.user_attributes_, len(self.users_))
        position = int(np.searchsorted(self.classes_, item_index))
        if position < len(self.classes_) and self.classes_[position] == item_index:
            features = self._features(self.inputs_[[user_index]], np.array([user_index]))
            features = sp.csr_matrix(features, dtype=np.float32)
            model = self._softmax()
            for _ in range(int(self.update_steps)):
                model.sgd_step(features, position, float(weight), self.update_rate)
        self.inputs_ = _with_entry(self.inputs_, user_index, item_index)
        if self.seen_[user_index, item_index] == 0:
            self.popularity_ = self.popularity_.copy()
            self.popularity_[item_index] += 1
        self.seen_ = _with_entry(self.seen_, user_index, item_index)
        return self
