"""What the torch models share: import, device, seeding, the training loop, weights as arrays.

Weights are saved like every other learned array -- numpy arrays in the model's ``.npz``, no
pickle -- under ``weights/<parameter name>``; a loaded model rebuilds its network from its
JSON parameters and those arrays.

Every fit and scoring call of a torch model runs on tastebud's thread count
(:mod:`tastebud._threads`: one intra-op thread by default, restored after the call): these
networks are small, so each operation is a short parallel region, and beside two busy
processes on 2 cores torch's default of a thread per core made SASRec 6.7x slower than on
the quiet machine (1.6x with one thread, which is as fast when quiet;
``benchmarks/threads_load.py``).
"""

from __future__ import annotations

import abc
import copy
import dataclasses
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from tastebud import _threads
from tastebud.data.dataset import Dataset
from tastebud.errors import InvalidInputError, TastebudError, warn
from tastebud.metrics.ranking import ndcg_at_k
from tastebud.models._holdout import MAX_USERS
from tastebud.models.base import _BATCH_CELLS, Recommender, top_k

if TYPE_CHECKING:  # pragma: no cover
    import torch

WEIGHTS = "weights/"
_SCORE_BATCH = 256
#: Methods of TorchRecommender subclasses run under tastebud's thread count: the fit limits
#: every pool (BLAS, OpenMP, torch), the scoring calls torch's alone (cheap enough per call).
_FIT_METHODS = ("_fit",)
_SCORE_METHODS = ("_score", "_score_history", "_similar", "_predict")


def import_torch() -> Any:
    """The torch module, or a clear error saying how to install it."""
    try:
        import torch
    except ImportError:
        raise TastebudError(
            "this model needs PyTorch: pip install 'tastebud[neural]' "
            "(on CPU-only machines: pip install torch==2.13.0)"
        ) from None
    return torch


def pick_device(device: str) -> torch.device:
    """``"auto"``: CUDA when present, else the CPU; otherwise the named device (a CUDA
    device on a machine without CUDA is a clear error, not torch's at the first tensor)."""
    torch = import_torch()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        picked = torch.device(device)
    except RuntimeError as err:
        raise TastebudError(f"unknown device {device!r}: {err}") from None
    if picked.type == "cuda" and not torch.cuda.is_available():
        raise TastebudError(
            f"device {device!r}: this machine has no CUDA device that torch can use; "
            "use device='auto' or 'cpu'"
        )
    return picked


def time_ordered(dataset: Dataset, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Every user's items, oldest first (ties in their stored order), as ``(indptr, items)``
    over internal indices.

    A dataset without timestamps has no time order, and its stored order is by item (a
    user's "latest" items would be those with the highest indices: a model trained to
    predict each item from the ones before it learns to recommend later catalogue entries
    and nothing else). Each user's items are then in a random order drawn from ``seed``: the
    "latest" items are a random sample of the history. :meth:`TorchRecommender._ordered`
    says so with a :class:`~tastebud.errors.ModelWarning`."""
    users = dataset.user_index
    if dataset.timestamp is not None:
        key = dataset.timestamp
    else:
        key = np.random.default_rng(seed).random(len(users))
    order = np.lexsort((np.arange(len(users)), key, users))
    indptr = np.zeros(dataset.n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=dataset.n_users), out=indptr[1:])
    return indptr, dataset.item_index[order].astype(np.int64)


def sequence_matrix(sequences: list[np.ndarray], n_items: int) -> sp.csr_matrix:
    """Each user's items as a binary user x item matrix (sorted indices, no duplicates)."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    cols = np.concatenate(sequences) if len(sequences) else np.zeros(0, np.int64)
    out = sp.csr_matrix(
        (np.ones(len(cols), dtype=np.float32), cols, indptr), shape=(len(sequences), n_items)
    )
    out.sum_duplicates()
    out.data[:] = 1.0
    return out


@dataclasses.dataclass(frozen=True)
class OneItemHoldout:
    """The validation split of early stopping: users with at least two items lose one of them
    (``targets``) and keep the rest (``sequences``, in their order) -- every such user, or a
    seeded sample of :data:`~tastebud.models._holdout.MAX_USERS` of them on larger data (the
    others train on all their items), so each epoch's check costs the same on a million users
    as on ten thousand.

    Which item: the latest (``pick="last"``) for models that read the order and predict what
    comes next; a random one (``"random"``) for models that read a history as a set -- the
    latest item tests next-item prediction, which is not what such a model learns, and early
    stopping on it stopped them at the wrong epoch."""

    sequences: list[np.ndarray]
    users: np.ndarray
    targets: np.ndarray
    n_items: int

    @classmethod
    def carve(
        cls,
        indptr: np.ndarray,
        items: np.ndarray,
        n_items: int,
        max_users: int = MAX_USERS,
        *,
        pick: Literal["last", "random"] = "last",
        seed: int = 0,
    ) -> OneItemHoldout:
        """The holdout of one item per user of :func:`time_ordered`'s ``(indptr, items)``."""
        n_users = len(indptr) - 1
        sequences = [items[indptr[u] : indptr[u + 1]] for u in range(n_users)]
        users = np.flatnonzero(np.diff(indptr) >= 2)
        rng = np.random.default_rng(seed)
        if len(users) > max_users:
            users = np.sort(rng.choice(users, max_users, replace=False))
        lengths = np.diff(indptr)[users]
        at = lengths - 1 if pick == "last" else (rng.random(len(users)) * lengths).astype(int)
        targets = np.array([sequences[u][p] for u, p in zip(users, at, strict=True)], np.int64)
        for u, p in zip(users, at, strict=True):
            sequences[u] = np.delete(sequences[u], p)
        return cls(sequences, users, targets, n_items)

    def matrix(self) -> sp.csr_matrix:
        """The kept items as a binary user x item matrix (sorted indices)."""
        return sequence_matrix(self.sequences, self.n_items)

    def ndcg(self, score: Callable[[int, int], np.ndarray], k: int = 10) -> float:
        """Mean NDCG@k of each target among all items but the user's kept ones;
        ``score(start, stop)`` gives the scores of ``users[start:stop]`` over every item."""
        tops = []
        block = max(1, min(_SCORE_BATCH, _BATCH_CELLS // max(self.n_items, 1)))
        for start in range(0, len(self.users), block):
            stop = min(start + block, len(self.users))
            scores = np.array(score(start, stop), dtype=np.float64)
            for row, user in enumerate(self.users[start:stop]):
                scores[row, self.sequences[user]] = -np.inf
            tops.append(top_k(scores, k)[0])
        if not tops:
            return 0.0
        rows = np.arange(len(self.targets))
        relevant = sp.csr_matrix(
            (np.ones(len(rows)), (rows, self.targets)), shape=(len(rows), self.n_items)
        )
        return float(ndcg_at_k(np.vstack(tops), relevant, k).mean())

    def popularity_ndcg(self, k: int = 10) -> float:
        """:meth:`ndcg` of the most popular items of the kept ones: the bar every model's
        validation score is compared with (:meth:`TorchRecommender._train`)."""
        counts = np.asarray(self.matrix().sum(axis=0), dtype=np.float64).ravel()
        return self.ndcg(lambda a, b: np.broadcast_to(counts, (b - a, len(counts))), k)


def recent(sequences: list[np.ndarray], length: int) -> np.ndarray:
    """The latest ``length`` items of each sequence, + 1, left-padded with 0."""
    out = np.zeros((len(sequences), length), dtype=np.int64)
    for row, seq in enumerate(sequences):
        tail = seq[-length:]
        if len(tail):
            out[row, -len(tail) :] = tail + 1
    return out


@dataclasses.dataclass(frozen=True)
class StepHistories:
    """Every step ``(users[r], items[r])`` of time-ordered sequences, with the ``length``
    items before it (:meth:`windows`): a training sample never sees its own item."""

    users: np.ndarray
    items: np.ndarray
    length: int
    flat: np.ndarray  # each sequence, + 1, behind ``length`` zeros
    start: np.ndarray  # where the window before each step starts in ``flat``

    @classmethod
    def of(cls, sequences: list[np.ndarray], length: int) -> StepHistories:
        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        users = np.repeat(np.arange(len(sequences)), lengths)
        items = np.concatenate(sequences) if len(sequences) else np.zeros(0, np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        step = np.arange(len(users)) - starts[users]
        offset = starts + np.arange(len(sequences)) * length
        flat = np.zeros(len(items) + len(sequences) * length, dtype=np.int64)
        flat[np.repeat(offset + length, lengths) + step] = items + 1
        return cls(users, items.astype(np.int64), length, flat, offset[users] + step)

    def windows(self, rows: np.ndarray) -> np.ndarray:
        """``(len(rows), length)`` items + 1 before each step (0 = nothing that far back)."""
        return self.flat[self.start[rows][:, None] + np.arange(self.length)]


@dataclasses.dataclass(frozen=True)
class OtherItems:
    """Every item ``(users[r], items[r])`` of each user with up to ``length`` of the user's
    *other* items as its history (:meth:`windows`): the training samples of a model that
    reads a history as a set, not a sequence. :meth:`of` shuffles each user's items, and a
    step's history is the items cyclically before it in that order -- so each sample sees
    ``min(length, n - 1)`` distinct other items, drawn afresh in every epoch."""

    users: np.ndarray
    items: np.ndarray
    length: int
    starts: np.ndarray  # where each user's items start in ``items``
    counts: np.ndarray  # how many items each user has
    position: np.ndarray  # each row's place among its user's items

    @classmethod
    def of(cls, sequences: list[np.ndarray], length: int, rng: np.random.Generator) -> OtherItems:
        counts = np.array([len(s) for s in sequences], dtype=np.int64)
        users = np.repeat(np.arange(len(sequences)), counts)
        items = np.concatenate(sequences) if len(sequences) else np.zeros(0, np.int64)
        order = np.lexsort((rng.random(len(users)), users))  # shuffled within each user
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        position = np.arange(len(users)) - starts[users]
        return cls(users, items[order].astype(np.int64), length, starts, counts, position)

    def windows(self, rows: np.ndarray) -> np.ndarray:
        """``(len(rows), length)`` other items + 1 of each row's user (0 = none)."""
        users = self.users[rows]
        n = self.counts[users][:, None]
        back = np.arange(self.length, 0, -1)[None, :]
        at = (self.position[rows][:, None] - back) % n
        picked = self.items[self.starts[users][:, None] + at] + 1
        return np.where(back <= n - 1, picked, 0)


def length_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, pool: int = 16
) -> list[np.ndarray]:
    """Shuffled batches of row indices in which rows have similar lengths: rows are shuffled,
    sorted by length within pools of ``pool`` batches, cut into batches, and the batches
    shuffled -- so a padded batch is as wide as its own rows, not as the longest row."""
    order = rng.permutation(len(lengths))
    batches = []
    for start in range(0, len(order), batch_size * pool):
        chunk = order[start : start + batch_size * pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def sample_negatives(
    positives: sp.csr_matrix,
    users: np.ndarray,
    rng: np.random.Generator,
    pool: np.ndarray | None = None,
    rounds: int = 8,
) -> np.ndarray:
    """One item per entry of ``users``, drawn uniformly among the items of ``pool`` (default:
    all) that user has no positive for (a user with every item gets any item). Draws hitting
    a positive are redrawn ``rounds`` times, then drawn from the user's complement directly."""
    n_items = positives.shape[1]
    pool = np.arange(n_items) if pool is None else np.asarray(pool, dtype=np.int64)
    coo = positives.tocoo()
    keys = np.unique(coo.row.astype(np.int64) * n_items + coo.col)
    out = pool[rng.integers(0, len(pool), len(users))]
    todo = np.arange(len(users))
    for _ in range(rounds):
        query = users[todo].astype(np.int64) * n_items + out[todo]
        at = np.searchsorted(keys, query).clip(0, max(len(keys) - 1, 0))
        hit = keys[at] == query if len(keys) else np.zeros(len(todo), dtype=bool)
        todo = todo[hit]
        if not len(todo):
            break
        out[todo] = pool[rng.integers(0, len(pool), len(todo))]
    else:
        for row in todo:  # dense users: draw from the complement itself
            user = users[row]
            have = positives.indices[positives.indptr[user] : positives.indptr[user + 1]]
            free = np.setdiff1d(pool, have)
            if len(free):
                out[row] = free[rng.integers(0, len(free))]
    return out


def history_sequences(histories: sp.csr_matrix) -> list[np.ndarray]:
    """The positive items of each history row as sequences in item order (what a sequence
    model reads when a history comes as a matrix, without its order)."""
    h = sp.csr_matrix(histories)
    h.sort_indices()
    out = []
    for r in range(h.shape[0]):
        cols, vals = h.indices[h.indptr[r] : h.indptr[r + 1]], h.data[h.indptr[r] : h.indptr[r + 1]]
        out.append(np.asarray(cols[vals > 0], dtype=np.int64))
    return out


def cosine_rows(vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Cosine similarity of ``vectors[rows]`` with every vector (``_similar`` of embedding
    models); zero vectors are similar to nothing."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    return np.asarray(unit[rows] @ unit.T, dtype=np.float64)


def dense_features(table: Any, n: int) -> np.ndarray:
    """A side's feature table (``feature_matrix``: z-scored numbers, one-hot categories) as a
    dense float32 array, zero columns wide without a table."""
    from tastebud.features import feature_matrix

    if table is None:
        return np.zeros((n, 0), dtype=np.float32)
    return np.asarray(feature_matrix(table).toarray(), dtype=np.float32)


@dataclasses.dataclass
class History:
    """One training run: the loss and validation score of each epoch, the best epoch."""

    loss: list[float] = dataclasses.field(default_factory=list)
    validation: list[float] = dataclasses.field(default_factory=list)
    best_epoch: int = -1


def train(
    module: torch.nn.Module,
    epoch: Callable[[int], float],
    validate: Callable[[], float] | None,
    *,
    epochs: int,
    patience: int,
    progress: bool,
    desc: str,
) -> History:
    """Run ``epoch(i)`` (one pass; returns its mean loss) up to ``epochs`` times. With
    ``validate`` (a score, higher is better) training stops after ``patience`` epochs without
    a better score and the module gets back the weights of its best epoch."""
    history = History()
    best_score = -np.inf
    best_state: dict[str, Any] | None = None
    since_best = 0
    bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress)
    for i in bar:
        module.train()
        history.loss.append(float(epoch(i)))
        if validate is None:
            history.best_epoch = i
            continue
        module.eval()
        score = float(validate())
        history.validation.append(score)
        bar.set_postfix(loss=f"{history.loss[-1]:.4f}", val=f"{score:.4f}")
        if score > best_score:
            best_score, best_state, since_best = score, copy.deepcopy(module.state_dict()), 0
            history.best_epoch = i
        else:
            since_best += 1
            if since_best >= patience:
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return history


def _on_tastebud_threads(method: Callable[..., Any], *, pools: bool) -> Callable[..., Any]:
    """``method`` run inside :func:`tastebud._threads.limited` (torch imported first, so
    its thread count is among those set)."""

    @functools.wraps(method)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        import_torch()
        with _threads.limited(_threads.threads(), pools=pools):
            return method(self, *args, **kwargs)

    run.__dict__["on_tastebud_threads"] = True
    return run


@dataclasses.dataclass(kw_only=True, eq=False)
class TorchRecommender(Recommender):
    """Base of the torch models: the network's weights travel with ``save``/``load`` as
    arrays, and the network is rebuilt on first use after a load (:meth:`_build`).

    The fit and scoring methods a subclass defines (``_FIT_METHODS``, ``_SCORE_METHODS``)
    are wrapped to run on tastebud's thread count (module docstring), so every model, and
    every path into it (evaluation, fold-in, the service), gets the same policy.

    ``max_cpu_interactions`` (every torch model's parameter; ``None``: no limit): a fit on
    the CPU over more training interactions than this refuses at once, before any work --
    each epoch passes over every interaction, which on a few cores takes hours at tens of
    millions (``benchmarks/scale.py``); a GPU (``device="cuda"``) has no such limit."""

    extra: ClassVar[str | None] = "neural"
    needs_modules: ClassVar[tuple[str, ...]] = ("torch",)

    #: whether the model reads the order of each user's items (sequences, latest items)
    reads_order: ClassVar[bool] = False

    max_cpu_interactions: int | None = 5_000_000

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in _FIT_METHODS + _SCORE_METHODS:
            method = cls.__dict__.get(name)
            if callable(method) and not getattr(method, "on_tastebud_threads", False):
                setattr(cls, name, _on_tastebud_threads(method, pools=name in _FIT_METHODS))

    @abc.abstractmethod
    def _build(self) -> torch.nn.Module:
        """A new, untrained network for this model's parameters and catalogue."""

    def _network(self) -> torch.nn.Module:
        net = self.__dict__.get("_net")
        if net is None:
            torch = import_torch()
            net = self._build()
            state = {
                key[len(WEIGHTS) :]: torch.from_numpy(np.array(value))
                for key, value in self.__dict__.items()
                if key.startswith(WEIGHTS)
            }
            net.load_state_dict(state)
            net.to(pick_device(self.device))  # type: ignore[attr-defined]
            net.eval()
            self.__dict__["_net"] = net
        return net

    def _check_training(self) -> None:
        """Checks of the training parameters every torch model has."""
        p: Any = self
        self._check(p.epochs >= 1, "epochs must be >= 1")
        self._check(p.patience >= 0, "patience must be >= 0")
        self._check(p.batch_size >= 1, "batch_size must be >= 1")
        self._check(p.learning_rate > 0, "learning_rate must be > 0")
        self._check(p.weight_decay >= 0, "weight_decay must be >= 0")
        self._check(p.random_state >= 0, "random_state must be >= 0")
        self._check(
            self.max_cpu_interactions is None or self.max_cpu_interactions >= 1,
            "max_cpu_interactions must be >= 1 or None",
        )

    def _start(self, dataset: Dataset) -> tuple[Any, torch.device, np.random.Generator]:
        """torch, the device, and a seeded numpy generator (torch's seed set too); a fit
        over ``max_cpu_interactions`` on the CPU refuses here (class docstring)."""
        p: Any = self
        torch = import_torch()
        device = pick_device(p.device)
        limit = self.max_cpu_interactions
        if device.type == "cpu" and limit is not None and dataset.n_interactions > limit:
            raise InvalidInputError(
                f"{self.name} on the CPU: {dataset.name} has {dataset.n_interactions:,} "
                f"interactions, over max_cpu_interactions={limit:,} (each of up to "
                f"{int(p.epochs)} epochs passes over every one: hours on a CPU at tens of "
                "millions); "
                "fit on a GPU (device='cuda'), raise max_cpu_interactions, or use als or "
                "item-knn, which scale to tens of millions of interactions on a CPU"
            )
        torch.manual_seed(int(p.random_state))
        return torch, device, np.random.default_rng(p.random_state)

    def _ordered(self, dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
        """:func:`time_ordered` with this model's seed; on data without timestamps, models
        that read the order (``reads_order``) warn that it is a random one."""
        p: Any = self
        if dataset.timestamp is None and self.reads_order:
            warn(
                f"{self.name}: {dataset.name} has no timestamps, so each user's items are "
                "read in a random order (seeded by random_state): the 'latest items' this "
                "model reads are a random sample of the history, not the most recent ones"
            )
        return time_ordered(dataset, int(p.random_state))

    def _optimizer(self, net: torch.nn.Module) -> Any:
        p: Any = self
        return import_torch().optim.AdamW(
            net.parameters(), lr=float(p.learning_rate), weight_decay=float(p.weight_decay)
        )

    def _train(
        self,
        net: torch.nn.Module,
        epoch: Callable[[int], float],
        validate: Callable[[], float] | None,
        holdout: OneItemHoldout | None = None,
    ) -> None:
        """:func:`train` with the model's settings; the loss and validation curves and the
        best epoch are kept (``loss_``, ``validation_ndcg_``, ``best_epoch_``), and so is the
        network.

        With the ``holdout`` that ``validate`` scores, popularity's NDCG@10 on it is kept too
        (``validation_popularity_ndcg_``), and a best validation score below it warns
        (:class:`~tastebud.errors.ModelWarning`): the network learned less than a count of
        interactions, so its defaults do not suit these data."""
        p: Any = self
        torch = import_torch()
        # some CPU kernels (accumulating index_put, used by the backward of embedding
        # lookups with repeated rows) sum in thread order unless told otherwise: a 1e-7
        # difference in the first epoch grew to a different model by the second
        previous = torch.are_deterministic_algorithms_enabled()
        on_cpu = next(net.parameters()).device.type == "cpu"
        try:
            if on_cpu:
                torch.use_deterministic_algorithms(True)
            history = train(
                net,
                epoch,
                validate,
                epochs=int(p.epochs),
                patience=int(p.patience),
                progress=bool(p.progress),
                desc=self.name,
            )
        finally:
            torch.use_deterministic_algorithms(previous)
        self.loss_ = np.asarray(history.loss)
        self.validation_ndcg_ = np.asarray(history.validation)
        self.best_epoch_ = int(history.best_epoch)
        if holdout is not None and len(history.validation):
            bar = holdout.popularity_ndcg()
            best = float(np.max(history.validation))
            self.validation_popularity_ndcg_ = bar
            if best < bar:
                warn(
                    f"{self.name}: its best validation NDCG@10 ({best:.4f}, one training "
                    f"item per user held out) is below popularity's ({bar:.4f}) on "
                    "the same users: on these data this model recommends worse than the "
                    "most popular items; try another model (README: 'Which neural model when') "
                    "or more epochs / another learning rate"
                )

    def _keep(self, net: torch.nn.Module) -> None:
        """Make ``net`` the fitted network (its weights are copied as arrays for saving)."""
        for key in [k for k in self.__dict__ if k.startswith(WEIGHTS)]:
            del self.__dict__[key]
        for name, tensor in net.state_dict().items():
            self.__dict__[WEIGHTS + name] = tensor.detach().cpu().numpy().copy()
        net.eval()
        self.__dict__["_net"] = net

    def _state(self) -> dict[str, Any]:
        state = super()._state()
        state.update({k: v for k, v in self.__dict__.items() if k.startswith(WEIGHTS)})
        return state

    def _restore_state(self, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.__dict__.pop("_net", None)
        super()._restore_state(config, arrays)
