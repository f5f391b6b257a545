"""Exploration: one slot of a list may show an item the ranking would not have.

With ``epsilon``, a list gets an explored item with probability ``epsilon``, drawn uniformly
from the candidates that missed the list; with ``thompson``, every list gets one, the
candidate with the highest draw from Beta(1 + answered, 1 + unanswered exposures) of the
earlier explored exposures (``stats``: the service reads them from its exposure log; a
replay has none, so every draw is from Beta(1, 1)). The explored item goes to slot
``position`` (the list's last slot when ``position`` is past its end) and is marked
``exploration``, so its outcomes can be counted apart. The service explores the lists of
known users only (exposures are per user): anonymous session lists are never explored."""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from tastebud.pipeline.config import ExplorationSettings
from tastebud.pipeline.stages import Candidate

#: The source explored items are logged with.
EXPLORATION_SOURCE = "exploration"

#: Per item: (times shown in the exploration slot, times answered).
Stats = Mapping[str, tuple[int, int]]


class Explorer:
    """Picks the explored item of a list and puts it in. ``stats`` (thompson) is called at
    most every ``refresh_s`` seconds; ``seed`` makes the draws reproducible."""

    def __init__(
        self,
        settings: ExplorationSettings,
        stats: Callable[[], Stats] | None = None,
        seed: int | None = None,
    ) -> None:
        self.settings = settings
        self._read = stats
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._stats: Stats = {}
        self._read_at = -math.inf

    @property
    def on(self) -> bool:
        return self.settings.method != "off"

    def _current_stats(self) -> Stats:
        if self._read is None:
            return self._stats
        now = time.monotonic()
        if now - self._read_at >= self.settings.refresh_s:
            self._read_at = now  # one reader; the others use the old stats meanwhile
            self._stats = self._read()
        return self._stats

    def pick(self, pool: Sequence[str]) -> str | None:
        """The item to explore among ``pool`` (items that missed the list), or ``None``."""
        if not self.on or not pool:
            return None
        if self.settings.method == "epsilon":
            with self._lock:
                if self._rng.random() >= self.settings.epsilon:
                    return None
                return pool[int(self._rng.integers(len(pool)))]
        known = self._current_stats()
        shown = np.array([known.get(item, (0, 0))[0] for item in pool], dtype=np.float64)
        answered = np.array([known.get(item, (0, 0))[1] for item in pool], dtype=np.float64)
        with self._lock:
            draws = self._rng.beta(1.0 + answered, 1.0 + np.maximum(shown - answered, 0.0))
        return pool[int(np.argmax(draws))]

    def explore(
        self, chosen: Sequence[Candidate], rest: Sequence[Candidate], k: int
    ) -> list[Candidate]:
        """``chosen`` (a list of at most ``k``) with the pick among ``rest`` put in at the
        slot's position, marked ``exploration`` (a copy: lists may be cached)."""
        out = list(chosen)
        picked = self.pick([c.item for c in rest])
        if picked is not None:
            found = next(c for c in rest if c.item == picked)
            slot = min(self.settings.position, len(out) + 1, k) - 1  # past the end: last
            out.insert(slot, dataclasses.replace(found, exploration=True))
            out = out[:k]
        return out
