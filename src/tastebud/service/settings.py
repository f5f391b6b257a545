"""The service's settings, defined once: defaults < config file < environment < arguments.

Environment variables are the field names upper-cased with the prefix ``TASTEBUD_``
(``TASTEBUD_DB=postgresql+psycopg://...``, ``TASTEBUD_EVENT_WEIGHTS='{"like": 5}'``); a config
file (``tastebud serve --config tastebud.toml``, TOML or JSON) holds the same names. Every
value is validated when the app starts, so a typo stops the start with one clear line.
"""

from __future__ import annotations

import contextlib
import json
import math
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict, SettingsError

from tastebud.errors import InvalidInputError
from tastebud.models.base import Recommender
from tastebud.pipeline.config import DEFAULT_EVENT_WEIGHTS, ExplorationSettings, PipelineSettings


class Settings(BaseSettings):
    """Everything ``tastebud serve`` can be told (field docs are the reference)."""

    model_config = SettingsConfigDict(
        env_prefix="TASTEBUD_", extra="forbid", validate_default=True, frozen=True
    )

    db: str = Field("sqlite:///tastebud.db", description="Database URL (SQLite or PostgreSQL)")
    model: str = Field("als", description="Registered model retrained from the events")
    model_params: dict[str, Any] = Field(default_factory=dict, description="Its parameters")
    model_dir: Path = Field(Path("tastebud-models"), description="Where model versions live")
    min_events_to_train: int = Field(
        20, ge=1, description="Fewer events than this: serve popularity, train nothing"
    )
    retrain_every_s: float = Field(
        0.0, ge=0, description="Retrain on a schedule every N seconds (0: only on demand)"
    )
    event_types: list[str] = Field(
        default_factory=lambda: list(DEFAULT_EVENT_WEIGHTS),
        description="Accepted event types",
    )
    event_weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS),
        description="Strength of each event type as training value",
    )
    dislike_below_rating: float | None = Field(
        3.0,
        description="A rating below this is a dislike: no positive, the item hidden from the "
        "user (None: every rating is a positive worth its value)",
    )
    create_missing_items: bool = Field(
        False, description="Events on unknown items create them (else 422)"
    )
    history_limit: int = Field(500, ge=1, description="Latest events per user used live")
    default_k: int = Field(10, ge=1, le=1000)
    max_k: int = Field(200, ge=1)
    max_batch: int = Field(
        1_000,
        ge=1,
        description="Most events in one POST /events/batch (with max_body_bytes: a batch of "
        "this many events of the longest ids fits in a body, so the API's schema and its "
        "size limit agree; `tastebud import` loads files of any size)",
    )
    max_body_bytes: int = Field(16 * 2**20, ge=1024, description="Largest request body")
    api_key: str | None = Field(
        None,
        min_length=16,
        description="Required by write endpoints (else the admin key). With neither api_key "
        "nor admin_key set, an admin key is generated at the first start into "
        "model_dir/admin.key and printed once",
    )
    admin_key: str | None = Field(
        None, min_length=16, description="Required by admin endpoints (else api_key)"
    )
    read_key: str | None = Field(
        None, min_length=16, description="If set, required by read endpoints too"
    )
    insecure: bool = Field(
        False,
        description="No keys at all: anyone who reaches the port can write, delete users and "
        "retrain (for a throwaway local run; tastebud serve --insecure)",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Web origins (https://shop.example) whose pages may send writes; other "
        "origins' writes are refused (403), as the browser tells them by Origin header",
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="A connection must send a request's headers within this long"
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="A request's whole body must arrive within this long (408)"
    )
    max_connections: int = Field(
        1000, ge=1, description="Open connections per process; more are answered 503"
    )
    pipeline: PipelineSettings = Field(
        default_factory=PipelineSettings, description="Candidate generators and re-rankers"
    )
    exploration: ExplorationSettings = Field(
        default_factory=ExplorationSettings, description="The exploration slot"
    )
    list_cache_s: float = Field(
        10.0,
        ge=0,
        description="Serve a warm user's list again for this long while their history, the "
        "model version and the request stay the same (0: always rebuild)",
    )
    state_cache_users: int = Field(
        20_000,
        ge=0,
        description="Keep the state read from this many users' latest events until their "
        "events change (0: read them on every request)",
    )
    state_cache_s: float = Field(
        60.0,
        gt=0,
        description="Read a kept user state again after this long at the latest (a safety "
        "net: changes are followed within a second)",
    )
    evaluate_on_retrain: bool = Field(
        True, description="Score each new version on a holdout first (offline metrics)"
    )
    log_level: str = Field("info")
    log_json: bool = Field(True, description="One JSON object per log line")

    @field_validator("db")
    @classmethod
    def _known_database(cls, url: str) -> str:
        if not url.startswith(("sqlite://", "postgresql+psycopg://", "postgresql://")):
            raise ValueError(
                "must be sqlite:///path.db or postgresql+psycopg://user@host:port/database"
            )
        if url.startswith("postgresql://"):  # the driver we ship
            url = "postgresql+psycopg://" + url[len("postgresql://") :]
        return url

    @field_validator("model")
    @classmethod
    def _registered_model(cls, name: str) -> str:
        from tastebud.models import get_class

        try:
            model_cls = get_class(name)
        except InvalidInputError as err:
            raise ValueError(str(err)) from None
        # The service folds every user's live history into the model and trains on implicit
        # event strengths, so the model must recommend from a history and not need ratings.
        if not _servable(model_cls, fold_in_only=True):
            raise ValueError(
                f"model {model_cls.name!r} cannot recommend from a user's live history; "
                f"use one of: {', '.join(servable_models())}"
            )
        if model_cls.needs_ratings:
            raise ValueError(
                f"model {model_cls.name!r} learns from ratings, the service trains on event "
                f"strengths; use one of: {', '.join(servable_models())}"
            )
        return model_cls.name

    @field_validator("event_types")
    @classmethod
    def _event_types(cls, types: list[str]) -> list[str]:
        if not types:
            raise ValueError("must name at least one event type")
        for kind in types:
            if not kind or len(kind) > 64 or kind != kind.strip():
                raise ValueError(f"{kind!r} is not a valid event type (1-64 characters)")
        repeated = sorted({t for t in types if types.count(t) > 1})
        if repeated:
            raise ValueError(f"repeated event type(s): {', '.join(repeated)}")
        return types

    @field_validator("event_weights")
    @classmethod
    def _event_weights(cls, weights: dict[str, float]) -> dict[str, float]:
        for kind, weight in weights.items():
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"the weight of {kind!r} must be a finite number >= 0")
        return weights

    @field_validator("model_params")
    @classmethod
    def _model_params(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        model = info.data.get("model")
        if model is None:  # the model itself is invalid; that error is reported
            return params
        from tastebud.models import create

        try:  # unknown names and wrong types now, not at the first retrain
            create(model, **params)._validate()
        except InvalidInputError as err:
            raise ValueError(str(err)) from None
        return params

    @field_validator("log_level")
    @classmethod
    def _level(cls, level: str) -> str:
        if level.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError("must be debug, info, warning or error")
        return level.lower()

    @model_validator(mode="before")
    @classmethod
    def _default_k_follows_max_k(cls, data: Any) -> Any:
        """A max_k below the default list length lowers it, unless default_k is set too."""
        if isinstance(data, dict) and "max_k" in data and "default_k" not in data:
            default = cls.model_fields["default_k"].default
            with contextlib.suppress(TypeError, ValueError):  # invalid: reported by the field
                max_k = int(data["max_k"])
                if 1 <= max_k < default:
                    data = {**data, "default_k": max_k}
        return data

    @field_validator("max_k")
    @classmethod
    def _max_k(cls, max_k: int, info: ValidationInfo) -> int:
        default_k = info.data.get("default_k")
        if default_k is not None and default_k > max_k:
            raise ValueError(f"max_k={max_k} is below default_k={default_k}")
        return max_k


def _servable(model_cls: type[Recommender], *, fold_in_only: bool = False) -> bool:
    folds_in = model_cls.folds_in()
    return folds_in if fold_in_only else folds_in and not model_cls.needs_ratings


def servable_models() -> list[str]:
    """Registered models the service can train and serve (fold-in, no ratings needed)."""
    from tastebud.models import available, get_class

    return [name for name in available() if _servable(get_class(name))]


def _read_config(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise InvalidInputError(f"{path}: cannot read the config file: {err.strerror}") from err
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as err:
        raise InvalidInputError(f"{path}: not valid {path.suffix[1:] or 'TOML'}: {err}") from err
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path}: the config must be a table of settings")
    return data


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Settings from a config file (optional), the environment and explicit ``overrides``
    (which win; ``None`` means "not given"); any invalid value raises one
    :class:`InvalidInputError` naming the setting and where it came from."""
    from_file = _read_config(config) if config is not None else {}
    explicit = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(explicit) - set(Settings.model_fields))
    if unknown:
        raise InvalidInputError(f"unknown setting(s): {', '.join(unknown)}")
    from_env: dict[str, Any] = {}
    try:
        from_env = EnvSettingsSource(Settings)()  # the TASTEBUD_* variables, raw
        # Settings(**kwargs) reads the environment again, but keyword arguments beat it.
        return Settings(**{**from_file, **from_env, **explicit})
    except (ValidationError, SettingsError) as err:
        if isinstance(err, SettingsError):  # a variable that is not valid JSON, for one
            raise InvalidInputError(f"settings from the environment: {err}") from err
        first = err.errors()[0]
        loc = [str(part) for part in first["loc"]]
        name = loc[0] if loc else ""
        if name in explicit:
            source = f" (--{name.replace('_', '-')})"  # the command-line flag that set it
        elif name in from_env:
            source = f" (environment variable {_env_name(name)})"
        elif name in from_file:
            source = f" (in {config})"
        else:
            source = ""
        message = str(first["msg"]).removeprefix("Value error, ")
        what = f"setting {'.'.join(loc)}{source}" if loc else "settings"
        raise InvalidInputError(f"{what}: {message}") from err


def _env_name(name: str) -> str:
    return f"{Settings.model_config.get('env_prefix', '')}{name}".upper()
