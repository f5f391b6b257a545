"""A typed Python client for the service (``tastebud serve``): :class:`Client` and
:class:`AsyncClient`, one method per route, over httpx.

>>> from tastebud.client import Client
>>> with Client("http://127.0.0.1:8000") as client:  # doctest: +SKIP
...     client.add_event("ann", "Kind of Blue", "like", client_event_id="e1")
...     for row in client.recommend("ann", k=5, explain=True).items:
...         print(row.rank, row.item, row.explanation)

Answers are the service's own pydantic response models (``tastebud.service.schemas``), so a
field is described once, where the service writes it; the few routes without a response
model (``/health/live``) answer typed dicts. Arguments are plain Python values. Any answer of 400 or
more raises :class:`ServiceError` with the HTTP status, the service's error type (``code``)
and its message; so does a server that cannot be reached (``status`` None).

Each route is described once, in :mod:`tastebud.client._routes`, as a function that returns
a ``_Call`` (method, path, query, body, how to read the answer, whether repeating it is
safe); :mod:`tastebud.client._clients` turns each into a method of :class:`Client` and of
:class:`AsyncClient` with the function's signature and documentation. The two clients
differ only in how they send a call.

Retries are bounded (``retries``, default 2, with doubling pauses from ``backoff_s``) and
happen only where repeating the request cannot change what is stored: a connection that
could not be opened (nothing was sent), and, for reads, idempotent writes (``PUT``,
onboarding, feedback) and events that carry a ``client_event_id``, a timeout, a dropped
connection or a 502/503/504 answer.
"""

from tastebud.client._clients import AsyncClient, Client, ServiceError
from tastebud.client._routes import UNSET, ListOptions, Live

__all__ = [
    "UNSET",
    "AsyncClient",
    "Client",
    "ListOptions",
    "Live",
    "ServiceError",
]
