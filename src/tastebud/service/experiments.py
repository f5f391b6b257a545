"""A/B tests, exploration and the exposure log.

**A/B tests.** An experiment splits users between variants by a stable hash of
``experiment name + user id`` (SHA-256, so the split is the same in every process and after
every restart, and independent between experiments). A variant serves a model version (or
the active one) and may override pipeline settings. Every list shown is logged as exposures
with its experiment and variant; outcomes are the feedback that names the list's
``request_id`` (``POST /feedback``, or an event posted with ``request_id``). The report
compares, per variant, the share of exposed users with at least one outcome of a type (the
unit of randomisation is the user, so that is the unit of the test): a two-sided
two-proportion z-test for two variants, a chi-square test of independence for more.

**Exploration** is the pipeline's (:mod:`tastebud.pipeline.explore`); here it reads the
answered explored exposures from the exposure log. Explored items are logged with source
``exploration``, so their outcomes are counted apart from the ranked ones.

**The exposure log** writes exposures from a background thread in batches (every
``flush_every_s`` seconds): logging never slows a request down. Exposures are telemetry, not
acknowledged data: a crash loses at most the last batch. Deleting a user drops their buffered
rows (:meth:`ExposureLog.forget`), and the write itself leaves out the rows of users deleted
meanwhile, so a list served just before a deletion logs nothing after it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from tastebud.errors import InvalidInputError
from tastebud.pipeline.config import ExplorationSettings
from tastebud.pipeline.explore import EXPLORATION_SOURCE, Explorer
from tastebud.service.storage import Storage, exposure_row

log = logging.getLogger("tastebud.service")


# -- A/B assignment --------------------------------------------------------------------------
def bucket(experiment: str, user_id: str) -> float:
    """A user's stable position in [0, 1) for an experiment."""
    digest = hashlib.sha256(f"{experiment}\x00{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign(experiment: Mapping[str, Any], user_id: str) -> dict[str, Any]:
    """The variant (a row of ``experiment["variants"]``) a user is in."""
    position = bucket(str(experiment["name"]), user_id)
    variants = list(experiment["variants"])
    upper = 0.0
    for variant in variants:
        upper += float(variant["share"])
        if position < upper:
            return dict(variant)
    return dict(variants[-1])  # shares summing to 1 - 1e-9


# -- the report ------------------------------------------------------------------------------
def report(
    storage: Storage, name: str, outcome: str | None = None, alpha: float = 0.05
) -> dict[str, Any]:
    """Per-variant exposures and outcome rates of an experiment, with a significance test on
    the share of users with an ``outcome`` (default: ``click`` if logged, else the first
    outcome type logged)."""
    experiment = storage.get_experiment(name)
    if experiment is None:
        from tastebud.errors import UnknownIdError

        raise UnknownIdError(f"unknown experiment {name!r}")
    if not 0 < alpha < 1:
        raise InvalidInputError(f"alpha must be between 0 and 1, got {alpha}")
    if not experiment["variants"]:
        from tastebud.errors import TastebudError

        raise TastebudError(f"experiment {name!r}: its stored variants are unreadable")
    counts = storage.exposure_counts(name)
    types = sorted(c[: -len("_users")] for c in counts.columns if c.endswith("_users"))
    types = [t for t in types if t != ""]
    if outcome is None:
        outcome = "click" if "click" in types or not types else types[0]
    by_variant = {row["variant"]: row for row in counts.to_dict("records")}
    control = str(experiment["variants"][0]["name"])
    rows: list[dict[str, Any]] = []
    for variant in experiment["variants"]:
        row = by_variant.get(variant["name"], {})
        users = int(row.get("users", 0))
        exposures = int(row.get("exposures", 0))
        outcome_users = int(row.get(f"{outcome}_users", 0))
        outcome_events = int(row.get(f"{outcome}_events", 0))
        rows.append(
            {
                "variant": variant["name"],
                "share": variant["share"],
                "model_version": variant.get("model_version"),
                "users": users,
                "requests": int(row.get("requests", 0)),
                "exposures": exposures,
                "outcome_users": outcome_users,
                "outcome_events": outcome_events,
                "rate": outcome_users / users if users else None,
                "per_exposure": outcome_events / exposures if exposures else None,
                "outcomes": {t: int(row.get(f"{t}_users", 0)) for t in types},
            }
        )
    base = rows[0]["rate"]
    for out in rows:
        rate = out["rate"]
        out["lift"] = (rate / base - 1.0) if rate is not None and base else None
    return {
        "experiment": name,
        "status": experiment["status"],
        "outcome": outcome,
        "control": control,
        "variants": rows,
        "test": significance([(r["outcome_users"], r["users"]) for r in rows], alpha),
    }


def significance(groups: Sequence[tuple[int, int]], alpha: float = 0.05) -> dict[str, Any]:
    """Test that the groups' rates (successes, trials) differ: a two-sided two-proportion
    z-test for two groups, a chi-square test of independence for more. ``p_value`` is
    ``None`` when a group has no trials or nobody (or everybody) succeeded anywhere."""
    method = "two-proportion z-test" if len(groups) == 2 else "chi-square test"
    out: dict[str, Any] = {
        "method": method,
        "alpha": alpha,
        "statistic": None,
        "p_value": None,
        "significant": False,
    }
    successes = np.array([s for s, _ in groups], dtype=np.float64)
    trials = np.array([n for _, n in groups], dtype=np.float64)
    pooled_total = successes.sum()
    if (trials <= 0).any() or pooled_total == 0 or pooled_total == trials.sum():
        return out
    if len(groups) == 2:
        p1, p2 = successes / trials
        pooled = pooled_total / trials.sum()
        se = math.sqrt(pooled * (1 - pooled) * (1 / trials[0] + 1 / trials[1]))
        z = (p2 - p1) / se
        p_value = float(2 * stats.norm.sf(abs(z)))
        statistic = float(z)
    else:
        table = np.stack([successes, trials - successes], axis=1)
        chi2, p_value, _, _ = stats.chi2_contingency(table, correction=False)
        statistic, p_value = float(chi2), float(p_value)
    out.update(statistic=statistic, p_value=p_value, significant=p_value < alpha)
    return out


# -- exploration -----------------------------------------------------------------------------
def explorer(settings: ExplorationSettings, storage: Storage, seed: int | None = None) -> Explorer:
    """The pipeline's :class:`~tastebud.pipeline.explore.Explorer`, reading the answered
    explored exposures from the exposure log (thompson)."""
    return Explorer(
        settings,
        lambda: storage.exploration_stats(EXPLORATION_SOURCE, settings.positive_feedback),
        seed,
    )


# -- the exposure log ------------------------------------------------------------------------
class ExposureLog:
    """Buffers exposure rows and writes them in batches from a background thread."""

    def __init__(self, storage: Storage, flush_every_s: float = 0.5) -> None:
        self.storage = storage
        self.flush_every_s = flush_every_s
        self._rows: list[tuple[Any, ...]] = []
        self._writing: list[tuple[Any, ...]] = []  # taken by the write under way
        self._lock = threading.Lock()  # guards _rows and _writing
        self._flushing = threading.Lock()  # one write at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="tastebud-exposures", daemon=True
            )
            self._thread.start()

    def add(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Exposure objects (``Storage.log_exposures``' rows), checked now: a bad one is
        logged and left out, so it never blocks the others."""
        now = time.time()
        checked = []
        for pos, row in enumerate(rows):
            try:
                checked.append(exposure_row(row, pos, now))
            except InvalidInputError as err:
                log.error("dropped an exposure: %s", err)
        self.add_rows(checked)

    def add_rows(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Checked tuples in ``EXPOSURE_COLUMNS`` order (the service's own lists)."""
        with self._lock:
            self._rows.extend(rows)

    def forget(self, user_id: str) -> int:
        """Drop a user's buffered rows (the user is being deleted); returns how many rows
        of theirs this log held: those dropped and those of a write under way, which may
        not have reached the database yet (the deletion must be logged for them). Rows of
        that write, and rows added later by a list computed before the deletion, are kept
        out of the database by :meth:`Storage.log_exposure_rows`."""
        with self._lock:
            kept = [row for row in self._rows if row[1] != user_id]
            held = len(self._rows) - len(kept) + sum(row[1] == user_id for row in self._writing)
            self._rows = kept
        return held

    def flush(self) -> int:
        """Write what is buffered now; returns how many rows were written. When it returns,
        every row added before the call is in the database (a write in flight in the
        background thread is waited for)."""
        with self._flushing:
            with self._lock:
                rows, self._rows = self._rows, []
                self._writing = rows
            if not rows:
                return 0
            try:
                return self.storage.log_exposure_rows(rows)
            except InvalidInputError:  # a bad row would block every later flush: drop them
                log.exception("dropped %d exposures the database refused", len(rows))
                return 0
            except Exception:  # the database went away: keep them for the next try
                log.exception("could not write %d exposures; retrying later", len(rows))
                with self._lock:
                    self._rows[:0] = rows
                return 0
            finally:
                with self._lock:
                    self._writing = []

    def _run(self) -> None:
        while not self._stop.wait(self.flush_every_s):
            self.flush()

    def close(self) -> None:
        """Stop the thread and write what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.flush()
