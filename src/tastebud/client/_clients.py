"""The two clients: how a :class:`~tastebud.client._routes._Call` is sent (retries,
errors), and one method per route for synchronous and for ``async`` code."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Concatenate, Final, ParamSpec, TypeVar

import anyio
import httpx

from tastebud import __version__
from tastebud.client._routes import _DEFAULT_TIMEOUT, _Call, _Routes
from tastebud.errors import TastebudError
from tastebud.service.schemas import ReadyOut

T = TypeVar("T")
P = ParamSpec("P")

#: Statuses a safe request is sent again after (a proxy's or the database's hiccup).
RETRY_STATUSES: Final = frozenset({502, 503, 504})
#: The longest pause between two tries, in seconds.
MAX_BACKOFF_S: Final = 5.0


class ServiceError(TastebudError):
    """The service answered an error (``status`` 400 or more) or could not be reached
    (``status`` None).

    Attributes
    ----------
    status : int or None
        The HTTP status; None when no answer came (``code`` says why: ``unreachable``,
        ``timeout``, ``transport_error``).
    code : str
        The service's error type (``not_found``, ``invalid_request``, ``unauthorized``,
        ``forbidden``, ``conflict``, ``database_unavailable``...), or ``http_error`` for an
        answer that is not the service's JSON error (a proxy's page), or
        ``invalid_response`` for a 2xx answer this client cannot read.
    message : str
        One line saying what went wrong.
    details : dict
        The error's other fields: ``problems`` (each ``where`` and ``problem``) for an
        invalid request, ``missing`` ids for an unknown reference.
    """

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details or {})
        where = "" if status is None else f"HTTP {status} "
        super().__init__(f"{where}{code}: {message}")

    @classmethod
    def from_response(cls, response: httpx.Response) -> ServiceError:
        """The error a 4xx/5xx ``response`` carries (``{"error": {"type", "message", ...}}``)."""
        try:
            body = response.json()
            error = dict(body["error"])
            code, message = str(error.pop("type")), str(error.pop("message"))
        except (ValueError, KeyError, TypeError):  # not the service's JSON error
            text = " ".join(response.text.split())[:200] or response.reason_phrase
            return cls(response.status_code, "http_error", text)
        return cls(response.status_code, code, message, error)


# -- what the two clients share --------------------------------------------------------------
class _Base:
    """Settings, headers and the retry policy of both clients."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None,
        timeout: float | httpx.Timeout | None,
        retries: int,
        backoff_s: float,
    ) -> None:
        if retries < 0 or backoff_s < 0:
            raise ValueError("retries and backoff_s must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff_s = backoff_s
        self.headers = {"user-agent": f"tastebud-client/{__version__}"}
        if api_key is not None:
            self.headers["x-api-key"] = api_key

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    def _request(self, call: _Call[Any]) -> dict[str, Any]:
        """The keyword arguments of ``httpx.Client.request`` for ``call``."""
        return {
            "method": call.method,
            "url": self.base_url + call.path,
            "params": call.params,
            "json": call.json,
            "headers": self.headers,
            "timeout": self.timeout if call.timeout is _DEFAULT_TIMEOUT else call.timeout,
        }

    def _pause(self, attempt: int, call: _Call[Any], failure: Exception | int) -> float | None:
        """Seconds to wait before sending ``call`` again after ``failure`` (an exception or
        a status) on try ``attempt`` (0-based), or None to give up."""
        if attempt >= self.retries:
            return None
        if isinstance(failure, int):
            again = call.safe and failure in RETRY_STATUSES
        else:  # nothing was sent when the connection could not be opened
            again = isinstance(failure, httpx.ConnectError | httpx.ConnectTimeout) or (
                call.safe and isinstance(failure, httpx.TransportError)
            )
        return min(self.backoff_s * 2**attempt, MAX_BACKOFF_S) if again else None

    def _failure(self, call: _Call[Any], err: httpx.TransportError) -> ServiceError:
        """``err`` as one line naming the request."""
        url = self.base_url + call.path
        why = " ".join(str(err).split()) or type(err).__name__
        if isinstance(err, httpx.ConnectError | httpx.ConnectTimeout):
            return ServiceError(None, "unreachable", f"cannot connect to {self.base_url}: {why}")
        if isinstance(err, httpx.TimeoutException):
            return ServiceError(None, "timeout", f"{call.method} {url}: no answer in time ({why})")
        return ServiceError(None, "transport_error", f"{call.method} {url}: {why}")

    @staticmethod
    def _read(call: _Call[T], response: httpx.Response) -> T:
        if response.status_code >= 400:
            raise ServiceError.from_response(response)
        try:
            return call.read(response)
        except ValueError as err:  # not JSON, or not the shape this client knows
            first = str(err).splitlines()[0]
            raise ServiceError(
                response.status_code,
                "invalid_response",
                f"{call.method} {call.path}: unexpected answer ({first})",
            ) from None


def _method_signature(build: Callable[..., Any]) -> inspect.Signature:
    """``build``'s signature as a client method's: ``self`` first, returning what its
    :class:`_Call` reads."""
    signature = inspect.signature(build)
    returns = str(signature.return_annotation).removeprefix("_Call[").removesuffix("]")
    this = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    return signature.replace(
        parameters=[this, *signature.parameters.values()], return_annotation=returns
    )


def _named(method: Any, build: Callable[..., Any], owner: str) -> None:
    functools.update_wrapper(method, build)
    del method.__wrapped__
    method.__qualname__ = f"{owner}.{build.__name__}"
    method.__signature__ = _method_signature(build)


def _sync(build: Callable[P, _Call[T]]) -> Callable[Concatenate[Client, P], T]:
    """A :class:`Client` method that sends what ``build`` describes."""

    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._send(build(*args, **kwargs))

    _named(method, build, "Client")
    return method


def _async(build: Callable[P, _Call[T]]) -> Callable[Concatenate[AsyncClient, P], Awaitable[T]]:
    """An :class:`AsyncClient` method that sends what ``build`` describes."""

    async def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._send(build(*args, **kwargs))

    _named(method, build, "AsyncClient")
    return method


def _not_ready(base_url: str, timeout_s: float, last: object) -> ServiceError:
    return ServiceError(
        None, "not_ready", f"{base_url} was not ready within {timeout_s:g} s (last: {last})"
    )


# -- the clients -----------------------------------------------------------------------------
class Client(_Base):
    """The service's API from synchronous code; one connection pool, closed by
    :meth:`close` or the ``with`` block.

    Parameters
    ----------
    base_url : str
        Where the service answers, e.g. ``http://127.0.0.1:8000`` (a path prefix is kept).
    api_key : str, optional
        Sent as ``X-API-Key`` (the read, write or admin key the service is set up with).
    timeout : float or httpx.Timeout, default 10
        Seconds to wait for an answer, on every request, also through an ``http_client``
        (``retrain(wait=True)`` has its own).
    retries : int, default 2
        How many times a safe request is sent again (see the module's documentation).
    backoff_s : float, default 0.2
        The pause before the first retry; each next one doubles (at most 5 s).
    transport : httpx.BaseTransport, optional
        What carries the requests (a test's mock, a mounted app...).
    http_client : httpx.Client, optional
        A client of your own (proxies, TLS...) to send through; it is left open.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = 10.0,
        retries: int = 2,
        backoff_s: float = 0.2,
        transport: httpx.BaseTransport | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        super().__init__(
            base_url, api_key=api_key, timeout=timeout, retries=retries, backoff_s=backoff_s
        )
        if http_client is not None and transport is not None:
            raise ValueError("give transport or http_client, not both")
        self._owned = http_client is None
        self._http = http_client or httpx.Client(transport=transport, timeout=timeout)

    def close(self) -> None:
        """Close the connections (not those of an ``http_client`` passed in)."""
        if self._owned:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, call: _Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = self._http.request(**self._request(call))
            except httpx.TransportError as err:
                pause = self._pause(attempt, call, err)
                if pause is None:
                    raise self._failure(call, err) from err
            else:
                pause = self._pause(attempt, call, response.status_code)
                if pause is None:
                    return self._read(call, response)
            time.sleep(pause)
            attempt += 1

    def wait_ready(
        self, timeout_s: float = 60.0, *, with_model: bool = False, interval_s: float = 0.25
    ) -> ReadyOut:
        """Ask :meth:`ready` until the service is ready (and serves a model version, with
        ``with_model``); :class:`ServiceError` ``not_ready`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                ready = self._send(_Routes.ready())
            except ServiceError as err:
                if err.status not in (None, 503):
                    raise
                last: object = err
            else:
                if not with_model or ready.model_version is not None:
                    return ready
                last = ready
            if time.monotonic() >= deadline:
                raise _not_ready(self.base_url, timeout_s, last)
            time.sleep(interval_s)

    put_user = _sync(_Routes.put_user)
    get_user = _sync(_Routes.get_user)
    list_users = _sync(_Routes.list_users)
    delete_user = _sync(_Routes.delete_user)
    user_events = _sync(_Routes.user_events)
    put_item = _sync(_Routes.put_item)
    patch_item = _sync(_Routes.patch_item)
    get_item = _sync(_Routes.get_item)
    list_items = _sync(_Routes.list_items)
    delete_item = _sync(_Routes.delete_item)
    add_event = _sync(_Routes.add_event)
    add_events = _sync(_Routes.add_events)
    recommend = _sync(_Routes.recommend)
    recommend_session = _sync(_Routes.recommend_session)
    onboard = _sync(_Routes.onboard)
    feedback = _sync(_Routes.feedback)
    similar_items = _sync(_Routes.similar_items)
    retrain = _sync(_Routes.retrain)
    models = _sync(_Routes.models)
    activate_model = _sync(_Routes.activate_model)
    stats = _sync(_Routes.stats)
    start_experiment = _sync(_Routes.start_experiment)
    experiments = _sync(_Routes.experiments)
    stop_experiment = _sync(_Routes.stop_experiment)
    experiment_report = _sync(_Routes.experiment_report)
    exploration = _sync(_Routes.exploration)
    live = _sync(_Routes.live)
    ready = _sync(_Routes.ready)
    metrics = _sync(_Routes.metrics)


class AsyncClient(_Base):
    """The service's API from ``async`` code: :class:`Client`'s methods, awaited.

    Parameters are :class:`Client`'s, with an ``httpx.AsyncBaseTransport`` (such as
    ``httpx.ASGITransport(app)`` to talk to an app in this process) or an
    ``httpx.AsyncClient``; close it with :meth:`aclose` or ``async with``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = 10.0,
        retries: int = 2,
        backoff_s: float = 0.2,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(
            base_url, api_key=api_key, timeout=timeout, retries=retries, backoff_s=backoff_s
        )
        if http_client is not None and transport is not None:
            raise ValueError("give transport or http_client, not both")
        self._owned = http_client is None
        self._http = http_client or httpx.AsyncClient(transport=transport, timeout=timeout)

    async def aclose(self) -> None:
        """Close the connections (not those of an ``http_client`` passed in)."""
        if self._owned:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, call: _Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = await self._http.request(**self._request(call))
            except httpx.TransportError as err:
                pause = self._pause(attempt, call, err)
                if pause is None:
                    raise self._failure(call, err) from err
            else:
                pause = self._pause(attempt, call, response.status_code)
                if pause is None:
                    return self._read(call, response)
            await anyio.sleep(pause)
            attempt += 1

    async def wait_ready(
        self, timeout_s: float = 60.0, *, with_model: bool = False, interval_s: float = 0.25
    ) -> ReadyOut:
        """:meth:`Client.wait_ready`, awaited."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                ready = await self._send(_Routes.ready())
            except ServiceError as err:
                if err.status not in (None, 503):
                    raise
                last: object = err
            else:
                if not with_model or ready.model_version is not None:
                    return ready
                last = ready
            if time.monotonic() >= deadline:
                raise _not_ready(self.base_url, timeout_s, last)
            await anyio.sleep(interval_s)

    put_user = _async(_Routes.put_user)
    get_user = _async(_Routes.get_user)
    list_users = _async(_Routes.list_users)
    delete_user = _async(_Routes.delete_user)
    user_events = _async(_Routes.user_events)
    put_item = _async(_Routes.put_item)
    patch_item = _async(_Routes.patch_item)
    get_item = _async(_Routes.get_item)
    list_items = _async(_Routes.list_items)
    delete_item = _async(_Routes.delete_item)
    add_event = _async(_Routes.add_event)
    add_events = _async(_Routes.add_events)
    recommend = _async(_Routes.recommend)
    recommend_session = _async(_Routes.recommend_session)
    onboard = _async(_Routes.onboard)
    feedback = _async(_Routes.feedback)
    similar_items = _async(_Routes.similar_items)
    retrain = _async(_Routes.retrain)
    models = _async(_Routes.models)
    activate_model = _async(_Routes.activate_model)
    stats = _async(_Routes.stats)
    start_experiment = _async(_Routes.start_experiment)
    experiments = _async(_Routes.experiments)
    stop_experiment = _async(_Routes.stop_experiment)
    experiment_report = _async(_Routes.experiment_report)
    exploration = _async(_Routes.exploration)
    live = _async(_Routes.live)
    ready = _async(_Routes.ready)
    metrics = _async(_Routes.metrics)
