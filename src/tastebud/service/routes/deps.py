"""What the routes share: the per-app :class:`Context` (reached through
``request.app.state``), the key checks, :class:`Routes` (how each area adds its routes), a
route's types made from one app's settings (:func:`typed`), and pipeline settings merged
with overrides (:func:`merged`).

Nothing here holds an app's state: :func:`~tastebud.service.app.create_app` makes a
:class:`Context` per app and puts it in ``app.state.context``, so two apps in one process
(a test suite makes many) share none of it.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import types
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Request
from pydantic import ValidationError

from tastebud.errors import InvalidInputError
from tastebud.pipeline import PipelineSettings
from tastebud.pipeline.explore import Explorer
from tastebud.service.engine import Engine
from tastebud.service.experiments import ExposureLog
from tastebud.service.keys import Keys
from tastebud.service.keys import resolve as access_keys
from tastebud.service.runtime import HTTPError, RequestIds, RequestMetrics
from tastebud.service.settings import Settings
from tastebud.service.storage import Storage

_F = TypeVar("_F", bound=Callable[..., Any])


@dataclasses.dataclass(slots=True, eq=False)
class Context:
    """Everything one app's routes work with, made by ``create_app``."""

    settings: Settings
    storage: Storage
    engine: Engine
    explorer: Explorer
    exposures: ExposureLog
    metrics: RequestMetrics
    new_request_id: RequestIds
    #: set once start-up has finished (``/health/ready``), cleared at shutdown
    ready: threading.Event = dataclasses.field(default_factory=threading.Event)
    _keys: Keys | None = dataclasses.field(default=None, init=False, repr=False)

    def keys(self) -> Keys:
        """The keys each level needs, resolved once (at start-up, or by the first request)."""
        if self._keys is None:
            self._keys = access_keys(self.settings)
        return self._keys


def context(request: Request) -> Context:
    """The :class:`Context` of the app answering ``request``."""
    ctx: Context = request.app.state.context
    return ctx


# -- keys ------------------------------------------------------------------------------------
async def check_key(ctx: Context, level: str, sent: str | None) -> None:
    """Open when the key of ``level`` (read, write, admin) is unset, else that key or a
    stronger one must be sent (401 none, 403 another). A coroutine, so that FastAPI runs the
    dependencies below on the event loop (a plain function would cost every request a hop
    to the thread pool and back) and the recommendations fast path awaits it the same way."""
    keys = ctx.keys()
    if getattr(keys, level) is None:
        return
    if sent is None:
        raise HTTPError(401, "unauthorized", "this endpoint needs an X-API-Key header")
    sent_bytes = sent.encode()
    # compare with every key (no early exit), so timing does not tell which matched
    matches = [secrets.compare_digest(sent_bytes, key) for key in keys.accepted(level)]
    if not any(matches):
        raise HTTPError(403, "forbidden", "the X-API-Key is not valid here")


def _key_check(level: str) -> Callable[..., Awaitable[None]]:
    """The dependency that checks the key of ``level`` (:func:`check_key`). The docs' route
    table reads the level from this closure (``docs/_hooks/http_routes.py``)."""

    async def check(
        request: Request,
        x_api_key: Annotated[str | None, Header(description="API key")] = None,
    ) -> None:
        await check_key(request.app.state.context, level, x_api_key)

    return check


#: A route's ``dependencies``: the key it asks for.
read_key = Depends(_key_check("read"))
write_key = Depends(_key_check("write"))
admin_key = Depends(_key_check("admin"))


# -- helpers ---------------------------------------------------------------------------------
#: No ``response_model`` given: FastAPI takes the endpoint's return annotation.
_INFERRED: Any = object()


@dataclasses.dataclass(frozen=True, slots=True)
class Routes:
    """Adds one area's routes to ``router`` (the app's), all tagged ``tag``, one line each
    -- ``routes.add("GET", path, endpoint, key, answer, **options)`` -- so an area's routes
    read as a table. ``key`` is the dependency that checks the key (``None``: open),
    ``answer`` the response model (left out: the endpoint's return annotation), ``options``
    the rest of :meth:`APIRouter.add_api_route`'s (``status_code``, ``responses``...)."""

    router: APIRouter
    tag: str

    def add(
        self,
        method: str,
        path: str,
        endpoint: Callable[..., Any],
        key: Any,
        answer: Any = _INFERRED,
        **options: Any,
    ) -> None:
        """``method path``, answered by ``endpoint``."""
        if answer is not _INFERRED:
            options["response_model"] = answer
        self.router.add_api_route(
            path,
            endpoint,
            methods=[method],
            tags=[self.tag],
            dependencies=None if key is None else [key],
            **options,
        )


def typed(route: _F, **annotations: Any) -> _F:
    """A copy of the module-level ``route`` for one app, its parameters ``annotations``
    made from that app's settings (FastAPI reads a route's types from ``__annotations__``).
    The route itself is left as it is: other apps in the process have other settings. A
    copy, not a wrapper, so a request costs no extra call."""
    copy = types.FunctionType(
        route.__code__, route.__globals__, route.__name__, route.__defaults__, route.__closure__
    )
    copy.__kwdefaults__ = route.__kwdefaults__
    copy.__qualname__ = route.__qualname__
    copy.__module__ = route.__module__
    copy.__doc__ = route.__doc__
    copy.__annotations__ = {**route.__annotations__, **annotations}
    return copy  # type: ignore[return-value]


def merged(base: PipelineSettings, overrides: dict[str, Any], where: str) -> PipelineSettings:
    """``base.merged(overrides)``, an invalid value answered 422 naming it."""
    try:
        return base.merged(overrides)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidInputError(f"{where}{loc}: {message}") from None
