"""How a pipeline runs: the ``pipeline`` table of the service's settings, and how events
become a history (``event_weights``, ``dislike_below_rating``).

The same table configures the service (``tastebud serve --config``), the lab
(``evaluate(..., pipeline=...)``, ``tastebud evaluate --pipeline``) and a notebook: see
:func:`load_config`.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tastebud.errors import InvalidInputError
from tastebud.rules import value_problem, whole_numbers

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
        given = whole_numbers(PipelineSettings, given)
        return PipelineSettings.model_validate({**self.model_dump(), **given}, strict=True)


#: How much each event type says "the user wants this", as the value x_ui the models learn
#: from; "dislike" is never a positive (it removes the item from the user's lists).
DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 2.0,
    "like": 4.0,
    "rating": 1.0,  # times the event's value: a 5-star rating counts 5 (below 3: a dislike)
    "purchase": 5.0,
    "dislike": 0.0,
}


class EventRules(BaseModel):
    """How events become a history: what each says "the user wants this", and which are
    dislikes. The settings' ``event_weights`` and ``dislike_below_rating``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    dislike_below_rating: float | None = 3.0

    def value(self, kind: str, value: float | None) -> float:
        """What one event says "the user wants this": its type's weight, times the value
        for a rating; 0 for a dislike and for a rating below ``dislike_below_rating``.

        A stored value may be anything a database holds: NaN reads as no value, and a value
        that :func:`rules.value_problem` refuses (or that is not a number) makes the event
        say nothing (0), as the training set leaves it out."""
        number = usable_value(value)
        if isinstance(number, Unusable) or self.dislike(kind, number):
            return 0.0
        weight = self.event_weights.get(kind, 1.0)
        if kind == "rating" and number is not None:
            weight *= number
        return weight

    def dislike(self, kind: str, value: Any) -> bool:
        """A dislike, or a rating below ``dislike_below_rating``."""
        if kind == "dislike":
            return True
        low = self.dislike_below_rating
        if kind != "rating" or low is None:
            return False
        number = usable_value(value)
        return isinstance(number, float) and number < low


class Unusable:
    """The type of :data:`UNUSABLE`."""


#: A stored event value that no model can use (not a number, or refused by the rules).
UNUSABLE = Unusable()


def usable_value(value: Any) -> float | Unusable | None:
    """A stored event value as a float: ``None`` when absent (NULL, NaN), else the value
    when :func:`rules.value_problem` accepts it, else :data:`UNUSABLE`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return UNUSABLE  # text or bytes in a numeric column (SQLite keeps what it is given)
    try:
        number = float(value)
    except OverflowError:
        return UNUSABLE
    if math.isnan(number):
        return None
    return number if value_problem(number) is None else UNUSABLE


class ExplorationSettings(BaseModel):
    """The exploration slot (the ``exploration`` table of the settings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["off", "epsilon", "thompson"] = Field(
        "off", description="off, epsilon (epsilon-greedy) or thompson (Thompson sampling)"
    )
    epsilon: float = Field(
        0.1, ge=0, le=1, allow_inf_nan=False, description="epsilon: chance a list explores"
    )
    position: int = Field(
        3,
        ge=1,
        strict=True,
        description="1-based slot of the explored item (past the list's end: its last slot)",
    )
    positive_feedback: list[str] = Field(
        default_factory=lambda: ["click", "like", "purchase"],
        description="Feedback types that count as a success (thompson)",
    )
    refresh_s: float = Field(10.0, gt=0, description="thompson: how often stats are re-read")


class PipelineConfig(EventRules):
    """Everything a pipeline reads from a settings file: the event rules (it is an
    :class:`EventRules`), the ``pipeline`` table and the ``exploration`` table. Other keys
    of the file (the database, the model, keys...) are the service's and are left to it."""

    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    exploration: ExplorationSettings = Field(default_factory=ExplorationSettings)


def load_config(source: Any = None) -> PipelineConfig:
    """A :class:`PipelineConfig` from a settings file (TOML or JSON: the file
    ``tastebud serve --config`` reads), a mapping with the same keys, a bare
    :class:`PipelineSettings`, or ``None`` (the defaults). The service's own keys in a file
    are ignored here (the service checks them); a mistake in the pipeline's is an
    :class:`~tastebud.errors.InvalidInputError` naming the file and the field."""
    if source is None:
        return PipelineConfig()
    if isinstance(source, PipelineConfig):
        return source
    if isinstance(source, PipelineSettings):
        return PipelineConfig(pipeline=source)
    where = "pipeline config"
    if isinstance(source, str | Path):
        path = Path(source)
        where = str(path)
        try:
            text = path.read_text(encoding="utf-8")
            table = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except OSError as err:
            raise InvalidInputError(f"{path}: cannot read: {err.strerror or err}") from None
        except (ValueError, tomllib.TOMLDecodeError) as err:
            raise InvalidInputError(f"{path}: not valid TOML/JSON: {err}") from None
    elif isinstance(source, Mapping):
        table = dict(source)
    else:
        raise InvalidInputError(
            f"pipeline= takes a settings file, a mapping or PipelineSettings, not "
            f"{type(source).__name__}"
        )
    if not isinstance(table, Mapping):
        raise InvalidInputError(f"{where}: expected a table of settings")
    wanted = {k: table[k] for k in PipelineConfig.model_fields if k in table}
    try:
        return PipelineConfig.model_validate(wanted)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise InvalidInputError(f"{where}: {field}: {first['msg']}") from None
