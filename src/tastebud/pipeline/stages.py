"""The stages' data and arithmetic: candidates merged by item, the ranker's scale, the
freshness boost and the final selection (MMR diversity, category caps)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tastebud.pipeline.config import FALLBACK_WEIGHT, GENERATORS, SECONDS_PER_DAY, PipelineSettings


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
