"""The HTTP and process layer around the service's routes: errors answered as JSON
(:func:`install_error_handlers`), the :class:`Guard` every request passes (body size and
time, JSON-only writes, cross-origin writes), ids in paths decoded segment by segment
(:func:`_id_path`), HEAD, the recommendations fast path, request metrics, and the tuning of
a serving process (:func:`serving_app`: BLAS on one thread, a short switch interval, the
heap frozen for the garbage collector by :class:`Freezer`). The routes themselves are in
:mod:`tastebud.service.routes`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import random
import re
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Histogram
from sqlalchemy import exc as sa_exc
from starlette.applications import Starlette
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tastebud import rules
from tastebud.errors import InvalidInputError, TastebudError, UnknownIdError
from tastebud.service.schemas import (
    where_of,
)
from tastebud.service.settings import Settings
from tastebud.service.storage import MissingIdsError, Storage

log = logging.getLogger("tastebud.service")


# -- errors ----------------------------------------------------------------------------------
def error_response(status: int, kind: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message, **extra}}, status)


HTTP_KINDS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
}


class HTTPError(StarletteHTTPException):
    """A 4xx with our error type (a Starlette HTTPException, so FastAPI passes it through
    untouched even when raised while the body is read)."""

    def __init__(
        self, status: int, kind: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status, message, headers)
        self.kind = kind


#: A checked request's message that starts with where the problem is (``query.k: ...``).
_WHERE = re.compile(r"((?:query|body|path)(?:\.[^\s:.\[]+|\[\d+\])+): (.+)", re.DOTALL)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route answers at this path (for ``Allow``), OPTIONS included, and
    HEAD wherever GET is."""
    methods = {"OPTIONS"}
    for route in request.app.router.routes:
        route_methods = getattr(route, "methods", None)
        if route_methods and route.matches(request.scope)[0] != Match.NONE:
            methods |= route_methods | ({"HEAD"} if "GET" in route_methods else set())
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        problems = [
            {
                "where": where_of(e.get("loc", ()), e.get("ctx")),
                "problem": str(e.get("msg", "invalid")).removeprefix("Value error, "),
            }
            for e in err.errors()
        ]
        first = problems[0] if problems else {"where": "request", "problem": "invalid"}
        message = f"{first['where']}: {first['problem']}"
        if len(problems) > 1:
            message += f" (and {len(problems) - 1} more problem{'s' * (len(problems) > 2)})"
        return error_response(422, "invalid_request", message, problems=problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> Response:
        kind = getattr(err, "kind", None) or HTTP_KINDS.get(err.status_code, "http_error")
        if err.status_code < 400:  # pragma: no cover - no redirects are raised
            return Response(status_code=err.status_code, headers=err.headers)
        headers = dict(err.headers or {})
        message = str(err.detail)
        if err.status_code == 405:  # Starlette's Allow names one route's methods only
            allowed = _allowed_methods(request)
            headers["Allow"] = ", ".join(allowed)
            if request.method == "OPTIONS":
                return Response(status_code=204, headers=headers)
            message = f"{request.method} is not allowed here; allowed: {headers['Allow']}"
        response = error_response(err.status_code, kind, message)
        response.headers.update(headers)
        return response

    @app.exception_handler(MissingIdsError)
    async def missing_reference(_: Request, err: MissingIdsError) -> JSONResponse:
        # The body names something that does not exist (yet): a well-formed request that
        # conflicts with what is stored (409; the URL itself was fine, else a 404).
        return error_response(409, "unknown_reference", str(err), missing=sorted(err.missing))

    @app.exception_handler(UnknownIdError)
    async def unknown(_: Request, err: UnknownIdError) -> JSONResponse:
        return error_response(404, "not_found", str(err))

    @app.exception_handler(InvalidInputError)
    async def bad_input(_: Request, err: InvalidInputError) -> JSONResponse:
        message = str(err)
        where = _WHERE.match(message)
        if where is None:
            return error_response(422, "invalid_request", message)
        problems = [{"where": where.group(1), "problem": where.group(2)}]
        return error_response(422, "invalid_request", message, problems=problems)

    @app.exception_handler(TastebudError)
    async def conflict(_: Request, err: TastebudError) -> JSONResponse:
        return error_response(409, "conflict", str(err))

    @app.exception_handler(sa_exc.OperationalError)
    @app.exception_handler(sa_exc.InterfaceError)
    @app.exception_handler(sa_exc.TimeoutError)
    async def database_down(request: Request, err: Exception) -> JSONResponse:
        log.error("database error on %s %s: %s", request.method, request.url.path, err)
        return error_response(
            503, "database_unavailable", "the database does not answer; try again"
        )

    @app.exception_handler(Exception)
    async def crash(request: Request, err: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=err)
        return error_response(500, "internal_error", "internal error; see the server log")


# -- metrics and limits ----------------------------------------------------------------------
class RequestMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tastebud_requests", "HTTP requests", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "tastebud_request_seconds",
            "Request latency",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
        )
        self.events = Counter("tastebud_events", "Events stored", ["type"], registry=self.registry)
        self.duplicates = Counter(
            "tastebud_duplicate_events", "Events answered as duplicates", registry=self.registry
        )
        self.recommendations = Counter(
            "tastebud_recommendations",
            "Recommendation lists served, by where the first item came from",
            ["source"],
            registry=self.registry,
        )

    def record(self, scope: Scope, route: str, status: int, seconds: float) -> None:
        """One answered request."""
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        log.debug("%s %s %d %.1fms", scope.get("method"), route, status, seconds * 1e3)


#: Methods that change state: their bodies must be JSON, and browsers' cross-origin ones
#: are refused (:class:`Guard`).
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Guard:
    """Pure ASGI middleware: what every request must respect before a route sees it, and
    request metrics.

    - the body: at most ``max_body_bytes`` (413, declared or streamed), all of it within
      ``body_timeout_s`` (408, the connection closed);
    - writes (:data:`_WRITES`): a body must be sent as JSON (415), which turns every
      cross-origin "simple" request a browser may send without asking (form posts,
      ``text/plain``) away; a write a browser sends from another web origin is refused
      (403) unless that origin is in ``allowed_origins`` -- told by the ``Origin`` and
      ``Sec-Fetch-Site`` headers browsers add;
    - an unhandled error is answered here, a JSON 500, and the connection is kept (past
      this point the server would drop it without a word).

    Sits inside Starlette's error middleware and outside the exception handlers, so it sees
    the status of every answer.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        body_timeout_s: float,
        allowed_origins: list[str],
        metrics: RequestMetrics,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.allowed_origins = {o.rstrip("/").lower() for o in allowed_origins}
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        started = False

        async def send_counting(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = int(message["status"])
                started = True
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send_counting)
                return
            await self.app(scope, self._receive(receive), send_counting)
        except Exception as err:
            if started:
                raise
            log.error(
                "unhandled error on %s %s", scope.get("method"), scope.get("path"), exc_info=err
            )
            await error_response(500, "internal_error", "internal error; see the server log")(
                scope, receive, send_counting
            )
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.record(scope, route, status, time.perf_counter() - start)

    def _refusal(self, scope: Scope) -> Response | None:
        """The answer to a request refused before it is read, else ``None``."""
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and not length.strip().isdigit():
            return error_response(400, "bad_request", "the Content-Length header is not a number")
        limit = self.max_body_bytes
        if length is not None and int(length) > limit:
            return error_response(413, "too_large", f"the body is larger than {limit} bytes")
        if scope["method"] not in _WRITES:
            return None
        origin = headers.get(b"origin", b"").decode("latin-1").rstrip("/").lower()
        site = headers.get(b"sec-fetch-site", b"").decode("latin-1").lower()
        host = headers.get(b"host", b"").decode("latin-1").lower()
        # "null": a sandboxed frame, a file:// page, a redirect across sites -- never ours
        foreign = site == "cross-site" or (origin != "" and origin.split("://", 1)[-1] != host)
        if foreign and origin not in self.allowed_origins:
            return error_response(
                403,
                "forbidden",
                "writes from another web origin are refused (add it to allowed_origins)",
            )
        has_body = (length is not None and int(length) > 0) or b"transfer-encoding" in headers
        if has_body and not _is_json(headers.get(b"content-type", b"")):
            return error_response(
                415,
                "unsupported_media_type",
                "send the body as JSON, with the header Content-Type: application/json",
            )
        return None

    def _receive(self, receive: Receive) -> Receive:
        """``receive`` with the body's size and time limits."""
        limit = self.max_body_bytes
        deadline = time.monotonic() + self.body_timeout_s
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0))
            except TimeoutError:
                raise HTTPError(
                    408,
                    "timeout",
                    f"the body did not arrive within {self.body_timeout_s:g} s",
                    headers={"Connection": "close"},
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPError(413, "too_large", f"the body is larger than {limit} bytes")
            return message

        return receive_limited


def _is_json(content_type: bytes) -> bool:
    """Whether a Content-Type header says JSON (``application/json``, ``...+json``)."""
    kind = content_type.split(b";", 1)[0].strip().lower()
    return kind == b"application/json" or (
        kind.startswith(b"application/") and kind.endswith(b"+json")
    )


class RequestIds:
    """Ids of served lists: 32 hex digits, the time in milliseconds then 80 random bits
    from a generator seeded once from the system's randomness. They sort by time, so the
    exposures' request index grows at its end, and cost no system call each (``uuid4``
    asks the kernel every time)."""

    def __init__(self) -> None:
        self._random = random.Random(os.urandom(32))

    def __call__(self) -> str:
        return f"{int(time.time() * 1000):012x}{self._random.getrandbits(80):020x}"


RECOMMEND_PATH = "/users/{user_id}/recommendations"
_RECOMMEND_URL = re.compile(r"/users/([^/]+)/recommendations")


class RecommendationsFastPath:
    """Answers ``GET /users/{user_id}/recommendations`` -- the request that carries the
    load -- in front of everything FastAPI and Starlette put between the server and a route
    (their middleware, routing by a regex per route, dependency solving), which together
    cost more than a kept list.

    It does what the documented route does, through the same functions: the read-key check,
    the answer, errors turned into responses by the app's own exception handlers, and the
    request metrics. A request it does not recognise exactly (another method, a body, a
    ``root_path``, an id longer than the route accepts) goes the usual way."""

    def __init__(
        self,
        *,
        route: Any,
        check_key: Callable[[str | None], Awaitable[None]],
        answer: Callable[[str, QueryParams], Response],
        metrics: RequestMetrics,
    ) -> None:
        self.route = route
        self.check_key = check_key
        self.answer = answer
        self.metrics = metrics

    @staticmethod
    def match(scope: Scope) -> str | None:
        """The user id of a request this path answers, else ``None``."""
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("root_path"):
            return None
        for name, _ in scope["headers"]:
            if name in (b"content-length", b"transfer-encoding"):
                return None
        match = _RECOMMEND_URL.fullmatch(scope["path"])
        if match is None:
            return None
        user_id = unquote(match.group(1))
        return user_id if rules.id_problem(user_id) is None else None

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, user_id: str, app: Starlette
    ) -> None:
        start = time.perf_counter()
        scope["app"] = app  # as Starlette sets it: the exception handlers' request.app
        scope["route"] = self.route
        request = Request(scope, receive)
        try:
            await self.check_key(request.headers.get("x-api-key"))
            response = self.answer(user_id, request.query_params)
        except Exception as err:
            handler = exception_handler(app, err)
            if handler is None:  # pragma: no cover - the app handles Exception itself
                raise
            response = await handler(request, err)
        try:
            await response(scope, receive, send)
        finally:
            self.metrics.record(
                scope, self.route.path, response.status_code, time.perf_counter() - start
            )


class ServiceApp(FastAPI):
    """The service's FastAPI app: ids in paths made exact (:func:`_id_path`), then
    :class:`RecommendationsFastPath` ahead of the rest."""

    fast_path: RecommendationsFastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD":  # GET's answer, no body
            scope, send = {**scope, "method": "GET"}, _headers_only(send)
        if scope["type"] == "http" and not _id_path(scope):
            response = error_response(
                400, "bad_request", "the path is not valid percent-encoded UTF-8"
            )
            await response(scope, receive, send)
            return
        fast = self.fast_path
        user_id = None if fast is None else fast.match(scope)
        if user_id is None:
            await super().__call__(scope, receive, send)
            return
        assert fast is not None
        await fast(scope, receive, send, user_id, self)


def _headers_only(send: Send) -> Send:
    """``send`` for a HEAD request answered as a GET: the status and headers (the length
    of the body a GET would get included), no body."""

    async def send_head(message: Message) -> None:
        if message["type"] == "http.response.body":
            if message.get("more_body", False):
                return
            message = {"type": "http.response.body", "body": b"", "more_body": False}
        await send(message)

    return send_head


#: Paths whose segments hold ids (:func:`_id_path`).
_ID_PATHS = ("/users/", "/items/", "/admin/")


def _id_path(scope: Scope) -> bool:
    """Makes every id addressable: the server percent-decodes the whole path before routing,
    so ``/users/a%2Fb`` would route as ``/users/a/b`` and an id holding ``/`` could never be
    read or deleted. Here the raw path is decoded segment by segment instead, with ``%`` and
    ``/`` inside a segment left encoded (``%25``, ``%2F``), so routing splits on the
    client's slashes only; :data:`PathId` decodes the rest. ``False`` when a segment is not
    valid percent-encoded UTF-8."""
    raw = scope.get("raw_path")
    if not raw or b"%" not in raw or not scope["path"].startswith(_ID_PATHS):
        return True  # nothing was encoded: the path is the raw path already
    try:
        segments = [
            unquote(part, errors="strict").replace("%", "%25").replace("/", "%2F")
            for part in raw.decode("ascii").split("/")
        ]
    except (UnicodeDecodeError, UnicodeEncodeError):
        return False
    scope["path"] = "/".join(segments)
    return True


def exception_handler(app: Any, err: Exception) -> Any:
    """The app's handler for ``err`` (its closest class with one), as Starlette picks it."""
    handlers = app.exception_handlers
    for cls in type(err).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None


# -- the app ---------------------------------------------------------------------------------
#: How ``tastebud serve --workers N`` hands its settings to the worker processes.
WORKER_SETTINGS_ENV = "_TASTEBUD_WORKER_SETTINGS"


#: How long a thread may hold the interpreter while another waits for it (CPython's default
#: is 5 ms): a serving process runs requests on the event loop and writes events, exposures
#: and refreshes in threads, and each hand-over at the default added up to 5 ms to a list.
SWITCH_INTERVAL_S = 0.0005


def serving_app(settings: Settings, storage: Storage | None = None) -> FastAPI:
    """The app of a process that does nothing but serve it (``tastebud serve`` and each of
    its workers), with the process tuned for latency first: BLAS on one thread (its others
    only spun against the request threads), a short :data:`SWITCH_INTERVAL_S`, and the
    heap frozen for the garbage collector (``create_app(freeze_heap=True)``)."""
    from threadpoolctl import threadpool_limits

    from tastebud.service.app import create_app

    threadpool_limits(1, user_api="blas")
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    return create_app(settings, storage, freeze_heap=True)


def worker_app() -> FastAPI:
    """The app of one ``tastebud serve --workers N`` process (a uvicorn factory)."""
    from tastebud.service import logs

    settings = Settings.model_validate_json(os.environ[WORKER_SETTINGS_ENV])
    logs.configure(settings.log_level, settings.log_json)
    return serving_app(settings)


#: How often a serving process freezes what survived (``create_app(freeze_heap=True)``).
REFREEZE_S = 10.0


class Freezer:
    """Keeps the heap frozen for the garbage collector (``create_app(freeze_heap=True)``).

    :meth:`freeze` collects fully, then freezes what is left (after start-up and after a
    model swap). :meth:`refresh` does the same every :data:`REFREEZE_S` -- what lived
    through the last seconds (cache entries, mostly) is frozen too -- except while a
    retrain runs (its temporaries would be frozen with it). A frozen object that later turns
    into cyclic garbage is never collected, so when the frozen heap has grown by half since
    the last start-up, swap or full look, it is unfrozen and collected whole once (about
    0.1 s on ML-100K). A swap resets that mark: a new model is growth, not garbage."""

    def __init__(self) -> None:
        self.mark = 0

    def freeze(self) -> None:
        gc.collect()
        gc.freeze()
        self.mark = gc.get_freeze_count()

    def refresh(self) -> None:
        gc.collect()
        gc.freeze()
        if gc.get_freeze_count() > 1.5 * self.mark:
            gc.unfreeze()
            self.freeze()
