"""How many threads tastebud's own computations use: the one place that decides it.

Why one thread by default. The thread pools under tastebud -- torch's intra-op OpenMP
pool (and MKL inside torch), OpenBLAS under numpy/scipy (and faiss's own copy), the OpenMP
pool of ``implicit``'s ALS/BPR engines, faiss's OpenMP -- each start one thread per core.
On a quiet machine that is a small gain at best for the sizes tastebud usually trains
(each parallel region is short), and on a busy one it is a large loss: a region ends
only when its slowest thread does, so every region waits for a thread the scheduler has
given to someone else, and idle threads spin while they wait. Measured on 2 cores
beside 2 busy processes (``benchmarks/threads_load.py``, fit + recommend, loaded time
over quiet time): SASRec 6.7x with torch's default 2 threads, 1.6x with one;
HistoryClassifier (OpenBLAS) 5.3x against 1.7x; ALS on ML-100K 3.7x against 1.6x; the
whole ``tastebud demo`` 4.0x against 2.0x. With one thread each was as fast or faster on
the quiet machine, ALS apart (9% slower on ML-100K). numba's kernels (SVD, SVD++, FeatureMF,
item-kNN) are compiled without ``parallel=True``: single-threaded, no pool to tune.

So within a fit or a scoring call tastebud runs its pools on :func:`threads` threads:
one, or every core for work large enough for more threads to pay for their
synchronisation (the ALS engine from :data:`PARALLEL_INTERACTIONS` interactions). The
user's own settings always win:

- ``TASTEBUD_THREADS=N`` (N >= 1): every pool tastebud controls uses N threads
  (``auto``, or unset: the policy above);
- a thread count set in the environment (``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``,
  ``MKL_NUM_THREADS``...): tastebud leaves every pool as that setting made it;
- ``torch.set_num_threads(n)`` called by the user (told apart from torch's default by
  differing from torch's inter-op count, which torch derives from the same default and
  users seldom set): torch keeps n;
- a model's own ``num_threads`` (ALS, BPR): that many engine threads.

Settings are changed only for the duration of the call (:func:`limited`) and restored
after it, so the process's own code keeps whatever it had. The counts are process-wide:
blocks running at once in several threads of a process with different counts interfere
(the last to leave restores its own start). Nothing has to be set before a runtime loads,
so importing tastebud changes no environment variable. The OpenMP wait policy would have
to be (``OMP_WAIT_POLICY=PASSIVE``, ``GOMP_SPINCOUNT``): it was measured and left alone.
With two threads it brought the loaded slowdown of SASRec and BERT4Rec to 2.9x and 3.9x
(from 6.7x and 7.3x; ``threads_load.py --env OMP_WAIT_POLICY=PASSIVE``), one thread to
1.7x and 1.8x in the same run; OpenBLAS's pthreads pool does not read it
(HistoryClassifier stayed at 5.5x); and with one thread there is nobody left to spin.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

from tastebud.errors import InvalidInputError

#: The environment variable that sets tastebud's thread count (``auto`` or an integer >= 1).
ENV = "TASTEBUD_THREADS"

#: Variables through which a user pins thread pools for the whole process; when one is set,
#: tastebud leaves its pools alone.
PINNING_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "GOTO_NUM_THREADS",
)

#: From this many interactions the ALS/BPR engine runs on every core: its parallel regions
#: (one sweep over all users or items) are long enough that waiting for the slowest thread
#: costs little next to the gain. ALS on 2M interactions, 2 cores: 1.6x faster than one
#: engine thread when quiet, as fast beside two busy processes
#: (``benchmarks/threads_load.py --cases als-2m,als-2m-1-thread``).
PARALLEL_INTERACTIONS = 1_000_000

_state = threading.local()  # the count a `limited` block of this thread applied, if any
_controller: tuple[int, Any] | None = None  # (len(sys.modules) when made, ThreadpoolController)


def cores() -> int:
    """The CPUs this process may run on (its affinity mask where the platform has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - platforms without sched_getaffinity
        return max(1, os.cpu_count() or 1)


def configured() -> int | None:
    """``TASTEBUD_THREADS`` as a count, or ``None`` when it is unset, empty or ``auto``."""
    raw = os.environ.get(ENV, "").strip()
    if raw.lower() in ("", "auto"):
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise InvalidInputError(f"{ENV} must be 'auto' or an integer >= 1, got {raw!r}")
    return value


def pinned_by_environment() -> bool:
    """Whether a thread-count variable of :data:`PINNING_VARIABLES` is set (not empty)."""
    return any(os.environ.get(name, "").strip() for name in PINNING_VARIABLES)


def threads(*, large: bool = False) -> int | None:
    """How many threads tastebud's pools use for a task; ``None``: leave them as they are.

    ``TASTEBUD_THREADS`` when set; ``None`` when the environment pins a thread count;
    otherwise 1, or every core when ``large`` (work whose parallel regions are long enough
    to pay for their synchronisation on a busy machine).
    """
    chosen = configured()
    if chosen is not None:
        return chosen
    if pinned_by_environment():
        return None
    return cores() if large else 1


def torch_pinned(torch: Any) -> bool:
    """Whether torch's intra-op thread count was set by the user: it differs from the
    default, which torch gives its inter-op pool too (both come from the core count or
    ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``); asking does not start the inter-op pool."""
    return bool(torch.get_num_threads() != torch.get_num_interop_threads())


@contextlib.contextmanager
def limited(count: int | None, *, pools: bool = True) -> Iterator[None]:
    """Run the block with tastebud's thread pools on ``count`` threads, restored after it.

    ``pools``: also limit the BLAS and OpenMP libraries loaded now (threadpoolctl: about
    50 us, 3 ms when modules were imported since the last block, as finding the libraries
    means walking every loaded one; so for a fit, not for every scoring call). torch's
    intra-op count and faiss's OpenMP count are set whenever they are loaded (about a
    microsecond each), torch's unless the user set it (:func:`torch_pinned`).
    ``count=None`` leaves everything as it is, and so does a block inside a block of this
    thread that already applied as much.
    """
    outer = getattr(_state, "active", None)  # (count, pools) of an enclosing block
    if count is None or (outer is not None and outer[0] == count and (outer[1] or not pools)):
        yield
        return
    torch = sys.modules.get("torch")
    # read before the OpenMP limit below, which reaches torch's libgomp (torch reports
    # omp_get_max_threads()) and would make torch's count look like the user's
    previous = torch.get_num_threads() if torch is not None else 0
    user = previous if torch is not None and torch_pinned(torch) else None
    with contextlib.ExitStack() as stack:
        if pools:
            stack.enter_context(_pool_controller().limit(limits=count))
        # faiss before torch: where both use the same OpenMP runtime, faiss's count is
        # torch's too, and torch's (the user's, if they set one) must be the one that stays
        faiss = sys.modules.get("faiss")
        if faiss is not None and hasattr(faiss, "omp_set_num_threads"):
            stack.callback(faiss.omp_set_num_threads, faiss.omp_get_max_threads())
            faiss.omp_set_num_threads(count)
        if torch is not None:
            torch.set_num_threads(user if user is not None else count)
            stack.callback(torch.set_num_threads, previous)
        _state.active = (count, pools or bool(outer and outer[1]))
        stack.callback(setattr, _state, "active", outer)
        yield


def _pool_controller() -> Any:
    """threadpoolctl's view of the loaded BLAS/OpenMP libraries, found again only when
    modules were imported since (a new library comes with an import)."""
    global _controller
    from threadpoolctl import ThreadpoolController

    if _controller is None or _controller[0] != len(sys.modules):
        _controller = (len(sys.modules), ThreadpoolController())
    return _controller[1]
