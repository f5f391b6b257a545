"""What the service accepts, defined once: a valid id, event value, timestamp and JSON
attribute value. A library module because the pipeline (:mod:`tastebud.pipeline`) reads
events by the same rules offline as the service does online.

Three places apply these rules -- the request schemas (a 422 naming the field at the door),
the storage layer (rows written by imports or by library code) and the training-set builder
(rows already in a database written before these rules, or around the API) -- so a value the
API accepts is a value every model, consumer and route can handle, and a value that slipped
in some other way is skipped, counted and named instead of stopping a retrain or a restart.

Each ``*_problem`` function returns ``None`` for a good value, else what is wrong in words
("contains a control character"), to be prefixed with the field's name by the caller.
"""

from __future__ import annotations

import functools
import math
import unicodedata
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

#: Longest id (user, item, event type, client event id, request id), in characters.
MAX_ID_LENGTH = 256
#: Largest absolute event value (a rating, a price): far above any rating or price, and low
#: enough that a weight built from it (times a confidence scale, summed over repeats) stays
#: finite in float32 model code.
MAX_ABS_VALUE = 1e9
#: Latest event timestamp accepted: 9999-12-31T23:59:59Z in unix seconds.
MAX_TS = 253_402_300_799.0
#: Integers an attribute may hold: the range of a 64-bit signed integer (what numpy, pandas
#: and the databases' BIGINT hold without overflow or silent conversion to float).
MIN_INT, MAX_INT = -(2**63), 2**63 - 1
#: Deepest nesting of lists and objects inside an attribute value.
MAX_JSON_DEPTH = 16
#: :func:`id_problem` as a JSON Schema pattern (ECMA-262, Python's and Rust's regex alike):
#: not blank, not ``.`` or ``..``, no control characters (C0, DEL, C1). (Lone surrogates are
#: refused too, but no portable pattern can name them: they are not characters.)
ID_PATTERN = "^(?!\\s*$)(?!\\.\\.?$)[^\\u0000-\\u001f\\u007f-\\u009f]+$"
#: :func:`text_problem` as a JSON Schema pattern: no NUL (nor lone surrogates, unsaid).
TEXT_PATTERN = "^[^\\u0000]*$"
#: Largest integer id of a stored row that a route accepts (model versions: a 32-bit
#: ``INTEGER`` column on PostgreSQL).
MAX_ROW_ID = 2**31 - 1


def text_problem(text: str) -> str | None:
    """Free text (titles, attribute strings): valid Unicode (no lone UTF-16 surrogates,
    which cannot be written as UTF-8) without NUL characters (PostgreSQL cannot store them)."""
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone UTF-16 surrogate (not valid Unicode text)"
    return None


def id_problem(text: str) -> str | None:
    """An id: 1 to :data:`MAX_ID_LENGTH` characters of valid Unicode, not blank (not only
    whitespace), without control characters (tabs, newlines, NUL...), not ``.`` or ``..``.
    Any other character is fine -- ``/``, ``%``, ``?``, ``#``, spaces inside, any script --
    and every route addresses it (percent-encoded in a URL)."""
    if not text:
        return "must not be empty"
    if len(text) > MAX_ID_LENGTH:
        return f"is longer than {MAX_ID_LENGTH} characters"
    problem = text_problem(text)
    if problem is not None:
        return problem
    if not text.strip():
        return "must not be blank"
    if text in (".", ".."):  # URL clients resolve /users/.. to / before sending
        return "must not be . or .. (no URL can address them)"
    if any(unicodedata.category(ch) == "Cc" for ch in text):
        return "contains a control character"
    return None


def value_problem(value: float) -> str | None:
    """An event's value: finite, at most :data:`MAX_ABS_VALUE` in size."""
    if not math.isfinite(value):
        return "must be a finite number"
    if abs(value) > MAX_ABS_VALUE:
        return f"must be between {-MAX_ABS_VALUE:g} and {MAX_ABS_VALUE:g}"
    return None


def ts_problem(ts: float) -> str | None:
    """An event's timestamp in unix seconds: from 0 to :data:`MAX_TS` (year 9999)."""
    if not math.isfinite(ts) or not 0 <= ts <= MAX_TS:
        return f"must be unix seconds between 0 and {MAX_TS:.0f} (the year 9999)"
    return None


def json_problem(value: Any) -> str | None:
    """A JSON value as attributes hold it: objects with string keys, lists, valid text,
    booleans, null, finite floats and integers within 64 bits, nested at most
    :data:`MAX_JSON_DEPTH` deep. ``None`` when good, else where and what
    (``"age: is an integer beyond 64 bits"``, ``"tags[2]: contains a NUL character"``)."""
    found = json_problem_at(value)
    if found is None:
        return None
    path, problem = found
    return f"{path}: {problem}" if path else problem


def json_problem_at(value: Any, path: str = "", depth: int = 0) -> tuple[str, str] | None:
    """:func:`json_problem` as (where, what): ``("tags[2]", "contains a NUL character")``;
    ``where`` is ``""`` for the value itself."""
    if depth > MAX_JSON_DEPTH:
        return path, f"nested deeper than {MAX_JSON_DEPTH} levels"
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if MIN_INT <= value <= MAX_INT else (path, "is an integer beyond 64 bits")
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, "must be a finite number")
    if isinstance(value, str):
        problem = text_problem(value)
        return None if problem is None else (path, problem)
    if isinstance(value, list):
        for n, item in enumerate(value):
            found = json_problem_at(item, f"{path}[{n}]", depth + 1)
            if found is not None:
                return found
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return path, f"key {key!r} is not a string"
            shown = _shown(key)
            problem = text_problem(key)
            if problem is not None:
                return path, f"key {shown} {problem}"
            found = json_problem_at(item, f"{path}.{shown}" if path else shown, depth + 1)
            if found is not None:
                return found
        return None
    return path, f"is not a JSON value ({type(value).__name__})"


def _shown(key: str) -> str:
    """A key for a message (a lone surrogate shown escaped, long keys cut)."""
    text = key if text_problem(key) is None else key.encode("utf-8", "backslashreplace").decode()
    return text if len(text) <= 60 else text[:57] + "..."


class RequestBody(BaseModel):
    """A JSON request body: strict types ("5" is not a number, true is not a timestamp),
    no unknown fields, and every value in it -- at any depth, in any field -- a JSON value
    that :func:`json_problem` accepts (so no field can carry a lone surrogate, a NUL or an
    integer beyond 64 bits past the door)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _plain_json(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        found = json_problem_at(data)
        if found is not None:  # the handler of invalid requests reads "path" from ctx
            path, problem = found
            raise PydanticCustomError("json_value", "{problem}", {"path": path, "problem": problem})
        return whole_numbers(cls, data)


def whole_numbers(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """``data`` for ``model`` with whole floats made ints where ``model`` takes an integer
    (and in an integer-valued dict such as the pipeline's generators). JSON has one kind of
    number: ``5.0`` is an integer wherever one is asked for, as JSON Schema says, and strict
    validation would refuse it."""
    fields = _integer_fields(model)
    out = dict(data)
    for name, value in data.items():
        if name not in fields:
            continue
        if isinstance(value, float) and value.is_integer():
            out[name] = int(value)
        elif isinstance(value, dict):
            out[name] = {
                k: int(v) if isinstance(v, float) and v.is_integer() else v
                for k, v in value.items()
            }
    return out


@functools.cache
def _integer_fields(model: type[BaseModel]) -> frozenset[str]:
    """The fields of ``model`` that take an integer (``int``, ``int | None``, or a dict of
    integers)."""

    def takes_integers(kind: Any) -> bool:
        if kind is int or int in get_args(kind):
            return True
        return get_origin(kind) is dict and get_args(kind)[1:] == (int,)

    return frozenset(n for n, f in model.model_fields.items() if takes_integers(f.annotation))
