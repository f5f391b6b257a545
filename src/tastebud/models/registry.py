"""Model registry: ``create(name, **params)``, ``available()``, ``register(name)``."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import math
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from tastebud.errors import InvalidInputError
from tastebud.models.base import Recommender

_REGISTRY: dict[str, type[Recommender]] = {}
_BUILTIN_MODULES = (
    "tastebud.models.popularity",
    "tastebud.models.baseline",
    "tastebud.models.neighbors",
    "tastebud.models.factorization",
    "tastebud.models.linear",
    "tastebud.models.blend",
    "tastebud.models.content",
    "tastebud.models.hybrid",
    "tastebud.models.feature_mf",
    "tastebud.models.classification",
    "tastebud.models.neural.bert4rec",
    "tastebud.models.neural.hybrid_bpr",
    "tastebud.models.neural.ncf",
    "tastebud.models.neural.sasrec",
    "tastebud.models.neural.two_tower",
)
_loaded = False
R = TypeVar("R", bound=type[Recommender])


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def register(name: str) -> Callable[[R], R]:
    """Class decorator adding a model to the registry under ``name``."""

    def wrap(cls: R) -> R:
        key = _key(name)
        if key in _REGISTRY and _REGISTRY[key] is not cls:
            raise InvalidInputError(f"model name {name!r} is already registered")
        cls.name = key
        _REGISTRY[key] = cls
        return cls

    return wrap


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        for module in _BUILTIN_MODULES:
            if importlib.util.find_spec(module) is not None:
                importlib.import_module(module)
        _loaded = True


def available() -> list[str]:
    """Registered model names, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def get_class(name: str) -> type[Recommender]:
    """The model class registered as ``name`` (suggests close names when unknown)."""
    _load_builtins()
    if not isinstance(name, str):
        raise InvalidInputError(f"a model name must be text, got {name!r}")
    key = _key(name)
    if key not in _REGISTRY:
        close = difflib.get_close_matches(key, _REGISTRY, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InvalidInputError(
            f"unknown model {name!r}{hint} (available: {', '.join(available())})"
        )
    return _REGISTRY[key]


def create(name: str, **params: Any) -> Recommender:
    """A new, unfitted model: ``create("popularity")``, ``create("trending", half_life=7)``."""
    cls = get_class(name)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - fields)
    if unknown:
        raise InvalidInputError(
            f"{cls.name} has no parameter(s) {', '.join(unknown)}; "
            f"parameters: {', '.join(sorted(fields))}"
        )
    return cls(**params)


def _coerce(text: str, annotation: Any, where: str) -> Any:
    """Convert a command-line string to a parameter's declared type."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if type(None) in options and text.lower() in ("none", "null", ""):
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(text, option, where)
            except InvalidInputError as err:
                errors.append(str(err))
        raise InvalidInputError(errors[0] if errors else f"{where}: cannot use {text!r}")
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        for choice in choices:
            if str(choice) == text:
                return choice
        raise InvalidInputError(f"{where} must be one of {', '.join(map(str, choices))}")
    if origin in (tuple, list):
        # Several values in one spec: "fields=title|genres" (commas separate parameters).
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        parts = [p.strip() for p in text.split("|") if p.strip()]
        return tuple(_coerce(p, args[0], where) if args else p for p in parts)
    if annotation is bool:
        if text.lower() in ("true", "1", "yes", "on"):
            return True
        if text.lower() in ("false", "0", "no", "off"):
            return False
        raise InvalidInputError(f"{where} must be true or false, got {text!r}")
    if annotation in (int, float):
        try:
            value = float(text)
        except ValueError:
            raise InvalidInputError(f"{where} must be a number, got {text!r}") from None
        if not math.isfinite(value):
            raise InvalidInputError(f"{where} must be a finite number, got {text!r}")
        if annotation is int:
            if value != int(value):
                raise InvalidInputError(f"{where} must be an integer, got {text!r}")
            return int(value)
        return value
    return text


def parse_params(name: str, pairs: dict[str, str]) -> dict[str, Any]:
    """Typed parameters for model ``name`` from ``key -> text`` (the CLI's ``--param``)."""
    cls = get_class(name)
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for key, text in pairs.items():
        if key not in fields:
            raise InvalidInputError(
                f"{cls.name} has no parameter {key!r}; parameters: {', '.join(sorted(fields))}"
            )
        out[key] = _coerce(text, hints[key], f"{cls.name} parameter {key}")
    return out


def from_spec(spec: str) -> Recommender:
    """A new model from ``"name"`` or ``"name:key=value,..."`` (the CLI's form, used by the
    composite models to name their members)."""
    if not isinstance(spec, str):
        raise InvalidInputError(f"a model spec must be text like 'item-knn:k=100', got {spec!r}")
    name, _, inline = spec.partition(":")
    pairs = {}
    for part in inline.split(","):
        if not part.strip():
            continue
        key, eq, value = part.partition("=")
        if not eq:
            raise InvalidInputError(f"model spec {spec!r}: {part!r} is not key=value")
        pairs[key.strip()] = value.strip()
    return create(name.strip(), **parse_params(name.strip(), pairs))
