"""Business filters of a request: categories to include or exclude, attribute predicates."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tastebud.errors import InvalidInputError
from tastebud.pipeline.config import CATEGORY_FIELDS, PipelineSettings

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
