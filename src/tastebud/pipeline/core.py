"""The pipeline: a :class:`Query` through candidate generators, the ranker and the
re-rankers, on a model (:class:`~tastebud.pipeline.model.ModelView`) and live state
(:class:`~tastebud.pipeline.live.LiveState`) handed in.

Stages, in order (each configurable in the ``pipeline`` table of the settings and per query):

1. **Candidate generators** propose items, each with its own score:

   ``model``
       the model's top items for the history (fold-in: ``Recommender.fold_in``);
   ``item_to_item``
       the items most similar to each of the most recent positive items
       (``Recommender.nearest``);
   ``popular``
       live popularity;
   ``new``
       the newest items the model has not learned yet (created after its training);
   ``demographic``
       what users sharing the user's attributes liked (cold start from attributes).

   Candidates are merged by item; each remembers every generator that proposed it.

2. **Ranker**: the relevance of each candidate is the model's score for the history (the same
   fold-in, so every generator's candidates are judged on one scale), min-max scaled to
   [0, 1] over the candidates. Items the model cannot score -- new since its training, or
   every item when the history is empty -- rank by their generators' scores instead: each as
   a share of that generator's best, weighted (:data:`~tastebud.pipeline.config.FALLBACK_WEIGHT`)
   and summed, so what several generators agree on comes first. A new item the model does
   not know yet enters a warm user's list through the freshness boost or the exploration
   slot, and a cold user's list mixes what people like them liked, what is popular and,
   lower, what is new.

3. **Re-rankers**: exclude seen, disliked and unavailable items; business filters
   (categories to include or exclude, attribute predicates such as ``year>=1990``); a
   freshness boost ``freshness * 0.5 ** (age_days / half_life_days)``; MMR diversity (each
   pick maximises ``(1 - diversity) * score - diversity * max similarity to the items
   already picked``); and a cap on items per category.

With the defaults (no diversity, freshness or caps) a warm user's list is the model's own
top-k over the catalogue: every candidate the model knows is ranked by its score.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

from tastebud.models.base import UserScores
from tastebud.pipeline.config import SECONDS_PER_DAY, PipelineSettings
from tastebud.pipeline.filters import Filters
from tastebud.pipeline.history import History
from tastebud.pipeline.live import LiveState
from tastebud.pipeline.model import ModelView
from tastebud.pipeline.stages import Candidate, Pool, boost_fresh, rank, select


@dataclasses.dataclass(frozen=True)
class Query:
    """One request for a list: the history, ``k``, business filters, items never to show,
    the user's attributes (a cold user's demographic generator reads them; a callable is
    called only when needed) and the settings that differ from the pipeline's."""

    history: History
    k: int = 10
    filters: Filters = dataclasses.field(default_factory=Filters)
    exclude: frozenset[str] = frozenset()
    attributes: Mapping[str, Any] | Callable[[], Mapping[str, Any] | None] | None = None
    settings: PipelineSettings | None = None

    def user_attributes(self) -> Mapping[str, Any] | None:
        attrs = self.attributes
        return attrs() if callable(attrs) else attrs


#: The model view a pipeline ran on (the service's carries its version).
View = TypeVar("View", bound=ModelView)


class Recommendations(Generic[View]):
    """A pipeline's answer: the chosen candidates, the rest that passed the filters (best
    first; the service's exploration slot draws from them), the item rows, the model view
    used, and whether the model scored the history.

    ``rest`` may be given as a function: a cached list builds it only when asked."""

    __slots__ = ("_rest", "chosen", "rows", "scored", "snapshot")

    def __init__(
        self,
        chosen: list[Candidate],
        rest: list[Candidate] | Callable[[], list[Candidate]],
        rows: dict[str, dict[str, Any]],
        snapshot: View,
        scored: bool = False,
    ) -> None:
        self.chosen = chosen
        self._rest = rest
        self.rows = rows
        self.snapshot = snapshot
        self.scored = scored

    @property
    def rest(self) -> list[Candidate]:
        if callable(self._rest):
            self._rest = self._rest()
        return self._rest

    @property
    def items(self) -> list[str]:
        return [c.item for c in self.chosen]


class Pipeline:
    """Generators → ranker → re-rankers with ``settings`` (see the module docstring)."""

    def __init__(self, settings: PipelineSettings | None = None) -> None:
        self.settings = PipelineSettings() if settings is None else settings

    def run(
        self, view: View, live: LiveState, query: Query, *, keep_rest: bool = True
    ) -> Recommendations[View]:
        """The top ``query.k``; never the history's items, its dislikes, ``query.exclude``,
        unavailable or unknown items. ``keep_rest=False`` leaves ``rest`` empty: cheaper."""
        options = self.settings if query.settings is None else query.settings
        history, k = query.history, query.k
        blocked = set(history.values) | history.disliked | set(query.exclude)
        row = view.scores(history, blocked)
        pool = Pool()
        sizes = {name: n for name, n in options.generators.items() if n > 0}
        for attempt in range(3):  # widen when filters leave fewer than k
            grow = 4**attempt
            if row is not None and "model" in sizes:
                pool.add("model", view.top(row, sizes["model"] * grow + k))
            if attempt == 0 and row is not None:
                _item_to_item(pool, view, query.history, options, sizes, blocked)
            if "popular" in sizes:
                wanted = sizes["popular"] * grow + k
                pool.add("popular", live.popular(wanted, skip=blocked, current=row is None))
            if attempt == 0:
                _cold_candidates(pool, view, live, query, options, sizes, row is None)
            survivors, rows = _available(pool, live, blocked, query.filters, options)
            if len(survivors) >= k or (row is None and attempt == 0):
                break
        self._rank(survivors, rows, view, live, row, options)
        cats: dict[str, frozenset[str]] = {}
        if options.max_per_category is not None or options.diversity > 0:  # they read them
            cats = {c.item: live.categories(c.item, options) for c in survivors}
        similarity = view.pairwise if view.similar_items and options.diversity > 0 else None
        chosen = select(survivors, k, options, cats, similarity)
        rest: list[Candidate] = []
        if keep_rest:
            taken = {c.item for c in chosen}
            rest = sorted((c for c in survivors if c.item not in taken), key=lambda c: -c.score)
        return Recommendations(chosen, rest, rows, view, row is not None)

    @staticmethod
    def _rank(
        survivors: list[Candidate],
        rows: Mapping[str, Mapping[str, Any]],
        view: ModelView,
        live: LiveState,
        row: UserScores | None,
        options: PipelineSettings,
    ) -> None:
        """The ranker (the model's scores), then the freshness boost."""
        scores: dict[str, float] = {}
        if row is not None:
            index = view.index
            known = [c.item for c in survivors if c.item in index]
            picked = row.at([index[item] for item in known]).tolist()  # type: ignore[arg-type]
            scores = {item: v for item, v in zip(known, picked, strict=True) if math.isfinite(v)}
        rank(survivors, scores)
        created: dict[str, float] = {}
        if options.freshness > 0:  # the only reader
            created = {
                c.item: float(rows[c.item]["created_at"])
                for c in survivors
                if rows[c.item].get("created_at") is not None
            }
        boost_fresh(survivors, created, options, live.now())


def _item_to_item(
    pool: Pool,
    view: ModelView,
    history: History,
    options: PipelineSettings,
    sizes: Mapping[str, int],
    blocked: set[str],
) -> None:
    """The ``ceil(n / seeds)`` most similar unblocked items to each recent item."""
    n = sizes.get("item_to_item", 0)
    if n <= 0 or not view.similar_items:
        return
    seeds = [i for i in history.recent if i in view.index][: options.recent_items]
    per_seed = max(1, -(-n // len(seeds))) if seeds else 0
    for seed in seeds:
        pool.add("item_to_item", view.nearest_unblocked(seed, blocked, per_seed), seed)


def _cold_candidates(
    pool: Pool,
    view: ModelView,
    live: LiveState,
    query: Query,
    options: PipelineSettings,
    sizes: Mapping[str, int],
    cold: bool,
) -> None:
    """What the model cannot propose: new items, and for a cold history what users with
    the same attributes liked."""
    if "new" in sizes:
        pool.add("new", new_to(view, live, sizes["new"], options.new_item_days))
    if "demographic" in sizes and cold:
        attrs = query.user_attributes()
        if attrs:
            pool.add("demographic", live.demographic(attrs, sizes["demographic"]))


def new_to(view: ModelView, live: LiveState, n: int, days: float) -> list[tuple[str, float]]:
    """The newest items of the last ``days`` that the view's model has not learned (all of
    them without a model): the items only this generator can bring in, scored by how new,
    from 1 (created now) down to 0 at the end of the window."""
    newest = live.new_items(n if view.model is None else 4 * n, days)
    newest = [pair for pair in newest if pair[0] not in view.index]
    now, window = live.now(), days * SECONDS_PER_DAY
    return [
        (item, max(1e-3, 1.0 - max(0.0, now - created) / window)) for item, created in newest[:n]
    ]


def _available(
    pool: Pool,
    live: LiveState,
    blocked: set[str],
    filters: Filters,
    options: PipelineSettings,
) -> tuple[list[Candidate], dict[str, dict[str, Any]]]:
    """The candidates that may be shown, and their item rows."""
    rows = live.rows(c.item for c in pool if c.item not in blocked)
    out = [c for c in pool if c.item in rows and rows[c.item]["available"]]
    if filters:
        out = [
            c
            for c in out
            if filters.keep(live.categories(c.item, options), rows[c.item]["attributes"] or {})
        ]
    return out, rows


def explain_items(
    chosen: Iterable[Candidate], view: ModelView, history: Mapping[str, float]
) -> dict[str, str]:
    """For each chosen item, the history item it is recommended "because you liked": the seed
    of an item-to-item candidate, else (a model candidate) the history item the model finds
    most similar to it."""
    chosen = list(chosen)
    because = {c.item: c.because for c in chosen if c.because is not None}
    rest = [c.item for c in chosen if c.because is None and "model" in c.scores]
    because.update(view.because(history, rest))
    return because
