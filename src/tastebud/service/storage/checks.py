"""Checks of what the repositories are asked to write, by the rules of :mod:`tastebud.rules`
(the request schemas apply the same ones): a value that could not be read back as written is an
:class:`InvalidInputError` naming it, before any transaction starts."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Set
from typing import Any

import numpy as np

from tastebud import rules
from tastebud.errors import InvalidInputError


def check_id(value: Any, what: str) -> str:
    """An id as stored (:func:`rules.id_problem`; ints are accepted and written as text)."""
    if isinstance(value, bool) or not isinstance(value, str | int | np.integer):
        raise InvalidInputError(f"{what} must be a string, got {type(value).__name__}")
    text = str(value)
    problem = rules.id_problem(text)
    if problem is not None:
        raise InvalidInputError(f"{what} {problem}")
    return text


def check_optional_id(value: Any, what: str) -> str | None:
    return None if value is None else check_id(value, what)


def check_text(value: Any, what: str) -> str | None:
    """Optional free text (a title): valid Unicode without NUL characters, or ``None``."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a string or null, got {type(value).__name__}")
    problem = rules.text_problem(value)
    if problem is not None:
        raise InvalidInputError(f"{what} {problem}")
    return value


def check_number(value: Any, what: str) -> float | None:
    """An optional finite number as a float."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
        raise InvalidInputError(f"{what} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidInputError(f"{what} must be finite, got {number}")
    return number


def check_ts(value: Any, what: str) -> float | None:
    """An optional timestamp (:func:`rules.ts_problem`)."""
    return _check_ruled(value, what, rules.ts_problem)


def check_value(value: Any, what: str) -> float | None:
    """An optional event value (:func:`rules.value_problem`)."""
    return _check_ruled(value, what, rules.value_problem)


def _check_ruled(value: Any, what: str, rule: Callable[[float], str | None]) -> float | None:
    number = check_number(value, what)
    problem = None if number is None else rule(number)
    if problem is not None:
        raise InvalidInputError(f"{what} {problem}")
    return number


def check_int(value: Any, what: str, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise InvalidInputError(f"{what} must be an integer, got {type(value).__name__}")
    return int(value)


def check_bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise InvalidInputError(f"{what} must be true or false, got {type(value).__name__}")
    return bool(value)


def json_object(value: Any, what: str) -> dict[str, Any]:
    """A JSON object exactly as it will read back (:func:`rules.json_problem`: string keys,
    finite numbers, integers within 64 bits, valid text), as plain types."""
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{what} must be a JSON object, got {type(value).__name__}")
    try:
        text = json.dumps(dict(value), allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as err:
        raise InvalidInputError(f"{what} must be JSON-serializable: {err}") from None
    loaded: dict[str, Any] = json.loads(text)
    problem = rules.json_problem(loaded)
    if problem is not None:
        raise InvalidInputError(
            f"{what}.{problem}" if not problem.startswith("key ") else f"{what}: {problem}"
        )
    return loaded


def check_limit(limit: int | None, offset: int = 0) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise InvalidInputError(f"limit must be a non-negative integer, got {limit!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidInputError(f"offset must be a non-negative integer, got {offset!r}")


def check_mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{what} must be a mapping, got {type(value).__name__}")
    return value


def no_extra_keys(row: Mapping[str, Any], allowed: Set[str], what: str) -> None:
    extra = sorted(str(k) for k in row if k not in allowed)
    if extra:
        raise InvalidInputError(
            f"{what}: unknown field(s) {', '.join(extra)}; allowed: {', '.join(sorted(allowed))}"
        )
