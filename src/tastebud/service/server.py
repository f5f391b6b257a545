"""How ``tastebud serve`` runs the app: uvicorn with the limits a server reachable by
untrusted clients needs.

- ``header_timeout_s``: a connection must send a request's headers within this long, from
  when it opens or the request's first byte arrives (a client that opens connections and
  trickles headers, or sends nothing, would otherwise hold them forever: uvicorn's
  keep-alive timer only starts after a first answer);
- ``body_timeout_s``: the whole body within this long (the app's ``_Guard``: 408);
- ``max_connections``: open connections per process (uvicorn's ``limit_concurrency``;
  beyond it a request is answered 503 at once);
- idle keep-alive connections closed after :data:`KEEP_ALIVE_S`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: Idle keep-alive connections are closed after this long (uvicorn's 5 s default races
#: with clients' connection pools: a request sent as the server closes is reset).
KEEP_ALIVE_S = 65
#: With ``--workers`` above 1, uvicorn's supervisor kills a worker that does not answer its
#: ping within this many seconds (its default, 5 s, killed workers that were reading a
#: 10M-event database at start-up or fitting a model on a busy 2-core machine: the ping
#: thread waits for the interpreter lock -- each replacement started the same work over).
WORKER_HEALTHCHECK_S = 120
#: How :class:`TimedHttp` learns the header timeout in every worker process.
HEADER_TIMEOUT_ENV = "_TASTEBUD_HEADER_TIMEOUT_S"


class TimedHttp(HttpToolsProtocol):
    """uvicorn's HTTP protocol with a header timeout: the connection is closed when a
    request's headers are not complete within ``header_timeout_s`` of the connection
    opening or of the request's first byte (between requests, the keep-alive timeout
    rules)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        seconds = float(os.environ.get(HEADER_TIMEOUT_ENV, "10"))
        self._header_timer = self.loop.call_later(seconds, self._headers_late)

    def _disarm(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if getattr(self, "_header_timer", None) is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable from this machine only."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def uvicorn_options(settings: Any) -> dict[str, Any]:
    """uvicorn's keyword arguments for ``settings`` (and the header timeout in the
    environment, where worker processes read it)."""
    os.environ[HEADER_TIMEOUT_ENV] = repr(float(settings.header_timeout_s))
    return {
        "http": TimedHttp,
        "limit_concurrency": settings.max_connections,
        "timeout_keep_alive": KEEP_ALIVE_S,
        "timeout_worker_healthcheck": WORKER_HEALTHCHECK_S,
        "log_config": None,
        "access_log": False,
    }
