"""The multi-stage recommendation pipeline: candidate generators → ranker → re-rankers.

Stages, in order (each configurable in the settings' ``pipeline`` table and per request):

1. **Candidate generators** propose items, each with its own score:

   ``model``
       the active model's top items for the user's live history (fold-in);
   ``item_to_item``
       the items most similar to each of the user's most recent positive items;
   ``popular``
       live popularity (positive events counted as they arrive);
   ``new``
       the newest items the model has not learned yet (created after its training);
   ``demographic``
       what users sharing the user's attributes liked (cold start from attributes).

   Candidates are merged by item; each remembers every generator that proposed it.

2. **Ranker**: the relevance of each candidate is the active model's score for the user (the
   same fold-in, so every generator's candidates are judged on one scale), min-max scaled to
   [0, 1] over the candidates. Items the model cannot score -- new since the last training, or
   every item when the user has no usable history -- rank by their generators' scores
   instead: each as a share of that generator's best, weighted (:data:`FALLBACK_WEIGHT`) and
   summed, so what several generators agree on comes first. A
   new item the model does not know yet enters a warm user's list through the freshness
   boost or the exploration slot, and a cold user's list mixes what people like them liked,
   what is popular and, lower, what is new.

3. **Re-rankers**: exclude seen, disliked and unavailable items; business filters (categories
   to include or exclude, attribute predicates such as ``year>=1990``); a freshness boost
   ``freshness * 0.5 ** (age_days / half_life_days)``; MMR diversity (each pick maximises
   ``(1 - diversity) * score - diversity * max similarity to the items already picked``);
   and a cap on items per category.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tastebud.errors import InvalidInputError
from tastebud.service import rules

#: Every candidate generator, in the order their names are reported.
GENERATORS = ("model", "item_to_item", "demographic", "popular", "new")

#: Weight of a generator's own score (scaled to [0, 1]) as the relevance of a candidate the
#: model cannot score; model-scored candidates span [0, 1].
FALLBACK_WEIGHT = {
    "item_to_item": 0.6,
    "demographic": 0.5,
    "popular": 0.4,
    "new": 0.1,
    "model": 1.0,
}

#: Attribute names looked for, in order, when ``category_field`` is not set.
CATEGORY_FIELDS = ("category", "categories", "genre", "genres", "style", "tags")

SECONDS_PER_DAY = 86_400.0


class PipelineSettings(BaseModel):
    """How the pipeline runs (the ``pipeline`` table of the settings; a request may override
    any of these)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    generators: dict[str, int] = Field(
        default_factory=lambda: {
            "model": 50,
            "item_to_item": 20,
            "popular": 20,
            "new": 10,
            "demographic": 50,
        },
        description="Candidate generators and how many candidates each proposes (0: off)",
        json_schema_extra={
            "propertyNames": {"enum": list(GENERATORS)},
            "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 10_000},
        },
    )
    recent_items: int = Field(5, ge=1, le=100, description="History items seeding item_to_item")
    new_item_days: float = Field(
        30.0,
        gt=0,
        le=36_500,
        description="The 'new' generator proposes items created this recently (days, at most "
        "100 years)",
    )
    diversity: float = Field(0.0, ge=0, le=1, description="MMR trade-off (0: pure relevance)")
    freshness: float = Field(
        0.0, ge=0, le=1000, description="Boost of a brand-new item (0: none; at most 1000)"
    )
    freshness_half_life_days: float = Field(
        7.0, gt=0, le=36_500, description="Age that halves the boost (days)"
    )
    category_field: str | None = Field(
        None,
        max_length=200,
        description=f"Item attribute holding categories (default: first of {CATEGORY_FIELDS})",
    )
    max_per_category: int | None = Field(
        None, ge=1, le=10**9, description="Cap per category in a list"
    )

    @field_validator("generators", mode="before")
    @classmethod
    def _no_booleans(cls, generators: Any) -> Any:
        if isinstance(generators, dict):
            for name, n in generators.items():
                if isinstance(n, bool):
                    raise ValueError(f"generator {name!r}: the number of candidates is not {n}")
        return generators

    @field_validator("generators")
    @classmethod
    def _known_generators(cls, generators: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(generators) - set(GENERATORS))
        if unknown:
            raise ValueError(
                f"unknown generator(s) {', '.join(unknown)}; known: {', '.join(GENERATORS)}"
            )
        for name, n in generators.items():
            if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= 10_000:
                raise ValueError(f"generator {name!r}: the number of candidates must be 0..10000")
        return generators

    def merged(self, overrides: Mapping[str, Any]) -> PipelineSettings:
        """These settings with ``overrides`` (``None`` values ignored), validated."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if not given:
            return self
        given = rules.whole_numbers(PipelineSettings, given)
        return PipelineSettings.model_validate({**self.model_dump(), **given}, strict=True)


# -- business filters ------------------------------------------------------------------------
_WS = r"[ \t\n\r\f\v]"  # whitespace, said the same way in every regex dialect
_NUMBER = r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?"
#: What :meth:`Predicate.parse` accepts, as a JSON Schema pattern (ECMA-262, Python's and
#: Rust's regex alike, and what ``parse`` itself checks): ``field=text``, ``field!=text``,
#: or a comparison with a number in ASCII digits; no NUL anywhere (nor a lone surrogate,
#: unsaid: see ``rules.ID_PATTERN``).
FILTER_PATTERN = (
    rf"^(?=[^\u0000]*$){_WS}*[^=!<> \t\n\r\f\v][^=!<>]*"
    rf"(!=[\s\S]*|=[\s\S]*|(>=|<=|>|<){_WS}*{_NUMBER}{_WS}*)$"
)
_FILTER = re.compile(FILTER_PATTERN)
_PREDICATE = re.compile(
    rf"{_WS}*([^=!<> \t\n\r\f\v][^=!<>]*?){_WS}*(!=|>=|<=|=|>|<){_WS}*([\s\S]*?){_WS}*"
)


@dataclass(frozen=True)
class Predicate:
    """``field op value`` on an item attribute. ``=`` and ``!=`` compare text
    (case-insensitively; on a list attribute, "contains"); ``<``, ``<=``, ``>``, ``>=``
    compare numbers. An item without the attribute fails every predicate but ``!=``."""

    field: str
    op: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Predicate:
        match = _PREDICATE.fullmatch(text) if _FILTER.search(text) else None
        if match is None:
            raise InvalidInputError(
                f"filter {text!r}: expected field=value, field!=value or a comparison with a "
                "number such as year>=1990"
            )
        field_name, op, value = match.groups()
        return cls(field_name, op, value)

    def __call__(self, attributes: Any) -> bool:
        if not isinstance(attributes, Mapping):  # stored attributes that are not an object
            attributes = {}
        if self.field not in attributes or attributes[self.field] is None:
            return self.op == "!="
        raw = attributes[self.field]
        if self.op in ("=", "!="):
            values = raw if isinstance(raw, list) else [raw]
            wanted, number = self.value.casefold(), _number(self.value)
            hit = any(
                _text(v) == wanted or (number is not None and _number(v) == number) for v in values
            )
            return hit if self.op == "=" else not hit
        number, bound = _number(raw), _number(self.value)
        if number is None or bound is None:
            return False
        return {
            "<": number < bound,
            "<=": number <= bound,
            ">": number > bound,
            ">=": number >= bound,
        }[self.op]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).casefold()


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            return None
        return number if math.isfinite(number) else None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def category_field(settings: PipelineSettings, attributes: Mapping[str, Any]) -> str | None:
    """The attribute holding an item's categories."""
    if settings.category_field is not None:
        return settings.category_field
    return next((name for name in CATEGORY_FIELDS if attributes.get(name) is not None), None)


def categories(settings: PipelineSettings, attributes: Any) -> frozenset[str]:
    """An item's categories, case-folded (a text attribute or a list of them; a text with
    ``|`` or ``,`` separators is split). Attributes are any stored JSON: what cannot be a
    category (objects, nested lists, null) is left out."""
    if not isinstance(attributes, Mapping):
        return frozenset()
    name = category_field(settings, attributes)
    raw = attributes.get(name) if name is not None else None
    if raw is None or isinstance(raw, dict):
        return frozenset()
    values = raw if isinstance(raw, list) else re.split(r"[|,]", str(raw))
    scalars = (v for v in values if isinstance(v, str | int | float))  # bools are ints
    return frozenset(text for text in (_text(v).strip() for v in scalars) if text)


@dataclass(frozen=True)
class Filters:
    """The business filters of one request."""

    include_categories: frozenset[str] = frozenset()
    exclude_categories: frozenset[str] = frozenset()
    predicates: tuple[Predicate, ...] = ()

    @classmethod
    def build(
        cls,
        include: Iterable[str] = (),
        exclude: Iterable[str] = (),
        predicates: Iterable[str] = (),
    ) -> Filters:
        return cls(
            frozenset(_split_list(include)),
            frozenset(_split_list(exclude)),
            tuple(Predicate.parse(p) for p in predicates),
        )

    def __bool__(self) -> bool:
        return bool(self.include_categories or self.exclude_categories or self.predicates)

    def keep(self, cats: frozenset[str], attributes: Any) -> bool:
        if self.include_categories and not cats & self.include_categories:
            return False
        if cats & self.exclude_categories:
            return False
        return all(p(attributes) for p in self.predicates)


def _split_list(values: Iterable[str]) -> list[str]:
    """Category names given repeated and/or comma-separated, case-folded."""
    return [part.strip().casefold() for v in values for part in v.split(",") if part.strip()]


# -- candidates ------------------------------------------------------------------------------
@dataclass(slots=True)
class Candidate:
    """One proposed item on its way through the stages."""

    item: str
    scores: dict[str, float] = field(default_factory=dict)  # generator -> its raw score
    because: str | None = None  # the history item an item_to_item candidate came from
    relevance: float = 0.0
    score: float = 0.0
    exploration: bool = False
    lead: str | None = None  # the generator that gave most of the relevance

    def packed(self) -> tuple[Any, ...]:
        """The candidate as a tuple of atomic values (which the garbage collector does not
        track: how cached lists are kept); :meth:`unpack` turns it back."""
        return (
            self.item,
            tuple(self.scores.items()),
            self.because,
            self.relevance,
            self.score,
            self.exploration,
            self.lead,
        )

    @classmethod
    def unpack(cls, packed: tuple[Any, ...]) -> Candidate:
        item, scores, because, relevance, score, exploration, lead = packed
        return cls(item, dict(scores), because, relevance, score, exploration, lead)

    @property
    def sources(self) -> list[str]:
        names = [g for g in GENERATORS if g in self.scores]
        return [*names, "exploration"] if self.exploration else names

    @property
    def source(self) -> str:
        if self.exploration:
            return "exploration"
        if self.lead:
            return self.lead
        return next(g for g in GENERATORS if g in self.scores)


class Pool:
    """Candidates merged by item."""

    def __init__(self) -> None:
        self.by_item: dict[str, Candidate] = {}

    def add(
        self, generator: str, proposals: Iterable[tuple[str, float]], because: str | None = None
    ) -> None:
        by_item = self.by_item
        seed = because if generator == "item_to_item" else None
        for raw, score in proposals:
            # a model holds "7" as 7 when every id spells an integer
            item = raw if type(raw) is str else str(raw)
            cand = by_item.get(item)
            if cand is None:
                by_item[item] = (
                    Candidate(item, {generator: float(score)}, seed)
                    if score > -math.inf
                    else Candidate(item)
                )
            elif score > cand.scores.get(generator, -math.inf):
                cand.scores[generator] = float(score)
                if seed is not None:
                    cand.because = seed

    def __len__(self) -> int:
        return len(self.by_item)

    def __iter__(self) -> Any:
        return iter(self.by_item.values())


def rank(cands: Sequence[Candidate], model_scores: Mapping[str, float]) -> None:
    """Set each candidate's ``relevance``: in [0, 1] for the model-scored; for the others
    the sum of their generators' weighted shares (up to the sum of
    :data:`FALLBACK_WEIGHT`'s, 1.6, reached only in a cold list, where nothing is
    model-scored: in a warm list only ``popular`` and ``new`` can propose what the model
    does not know, at most 0.5). See the module docstring."""
    scored = [c for c in cands if c.item in model_scores]
    if scored:
        values = np.array([model_scores[c.item] for c in scored], dtype=np.float64)
        for cand, value in zip(scored, _min_max(values), strict=True):
            cand.relevance = float(value)
    rest = [c for c in cands if c.item not in model_scores]
    best_part: dict[str, float] = {}
    for generator in GENERATORS:
        mine = [c for c in rest if generator in c.scores]
        if not mine:
            continue
        values = np.array([c.scores[generator] for c in mine], dtype=np.float64)
        weight = FALLBACK_WEIGHT[generator]
        for cand, value in zip(mine, _scale(values), strict=True):
            part = weight * float(value)
            if part > best_part.get(cand.item, -1.0):
                best_part[cand.item] = part
                cand.lead = generator
            cand.relevance += part


def _scale(values: np.ndarray) -> np.ndarray:
    """A generator's scores: non-negative ones (counts, shares) as a share of the largest;
    others min-max to [0, 1]."""
    low, high = float(values.min()), float(values.max())
    if low >= 0 and high > 1e-12 and math.isfinite(high):
        return values / high
    return _min_max(values)


def _min_max(values: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1]; all equal (or one value) → 1."""
    low, high = float(values.min()), float(values.max())
    if not math.isfinite(low) or not math.isfinite(high) or high - low <= 1e-12:
        return np.ones_like(values)
    return (values - low) / (high - low)


def boost_fresh(
    cands: Sequence[Candidate],
    created_at: Mapping[str, float],
    settings: PipelineSettings,
    now: float,
) -> None:
    """``score = relevance + freshness * 0.5 ** (age_days / half_life_days)``."""
    for cand in cands:
        cand.score = cand.relevance
        if settings.freshness > 0 and cand.item in created_at:
            age_days = max(0.0, now - created_at[cand.item]) / SECONDS_PER_DAY
            cand.score += settings.freshness * 0.5 ** (age_days / settings.freshness_half_life_days)


def select(
    cands: Sequence[Candidate],
    k: int,
    settings: PipelineSettings,
    cats: Mapping[str, frozenset[str]],
    similarity: Callable[[Sequence[str]], np.ndarray] | None,
) -> list[Candidate]:
    """The final ``k``: by score, or greedily by MMR when ``diversity > 0``; at most
    ``max_per_category`` items of any one category. Ties go to the lower item id."""
    ordered = sorted(cands, key=lambda c: (-c.score, c.item))
    cap = settings.max_per_category
    counts: dict[str, int] = {}

    def fits(cand: Candidate) -> bool:
        return cap is None or all(counts.get(c, 0) < cap for c in cats.get(cand.item, ()))

    def take(cand: Candidate) -> None:
        for c in cats.get(cand.item, ()):
            counts[c] = counts.get(c, 0) + 1

    chosen: list[Candidate] = []
    if settings.diversity <= 0 or len(ordered) <= 1:
        for cand in ordered:
            if fits(cand):
                chosen.append(cand)
                take(cand)
                if len(chosen) == k:
                    break
        return _fill(chosen, ordered, k)

    # MMR over the best few times k (beyond that nothing can climb into the list)
    pool = ordered[: max(4 * k, 50)]
    sims = _similarities(pool, cats, similarity)
    score = np.array([c.score for c in pool])
    lam = settings.diversity
    max_sim = np.zeros(len(pool))
    open_ = np.ones(len(pool), dtype=bool)
    while len(chosen) < k and open_.any():
        value = np.where(open_, (1 - lam) * score - lam * max_sim, -np.inf)
        best = int(np.argmax(value))
        open_[best] = False
        if not fits(pool[best]):
            continue
        chosen.append(pool[best])
        take(pool[best])
        max_sim = np.maximum(max_sim, sims[best])
    return _fill(chosen, ordered, k)


def _fill(chosen: list[Candidate], ordered: Sequence[Candidate], k: int) -> list[Candidate]:
    """A cap that leaves fewer than ``k`` is relaxed for the places left: they go to the
    best candidates it held back, in score order."""
    if len(chosen) >= k:
        return chosen
    taken = {c.item for c in chosen}
    extra = [c for c in ordered if c.item not in taken][: k - len(chosen)]
    return chosen + extra


def _similarities(
    pool: Sequence[Candidate],
    cats: Mapping[str, frozenset[str]],
    similarity: Callable[[Sequence[str]], np.ndarray] | None,
) -> np.ndarray:
    """Pairwise similarity in [0, 1]: the model's item similarity (scaled so the largest is
    1, negatives 0) or, where higher, the Jaccard overlap of the categories."""
    items = [c.item for c in pool]
    n = len(items)
    sims = np.zeros((n, n))
    if similarity is not None:
        # -inf is "not a neighbour" for kNN models: no similarity
        model_sims = np.nan_to_num(
            np.asarray(similarity(items), dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0
        )
        np.fill_diagonal(model_sims, 0.0)
        top = model_sims.max() if model_sims.size else 0.0
        if top > 1e-12:  # a tiny largest similarity says "unrelated", not "scale me up"
            sims = np.clip(model_sims / top, 0.0, 1.0)
    sets = [cats.get(item, frozenset()) for item in items]
    if any(sets):
        for a in range(n):
            if not sets[a]:
                continue
            for b in range(a + 1, n):
                if sets[b]:
                    jac = len(sets[a] & sets[b]) / len(sets[a] | sets[b])
                    if jac > sims[a, b]:
                        sims[a, b] = sims[b, a] = jac
    return sims
