"""MkDocs hook: the methods of ``tastebud.client.Client``, one per route, from the objects.

The client builds its methods at import time from one description per route
(``Client.recommend = _sync(_Routes.recommend)``), so reading the source statically -- what
mkdocstrings does -- finds attributes, not methods. This hook imports the client and writes
each public method's signature and docstring where ``docs/reference/client.md`` has the
marker below: what the page lists is what ``help(Client)`` shows.
"""

from __future__ import annotations

import inspect
from typing import Any

from mkdocs.exceptions import PluginError

MARKER = "<!-- tastebud-client-methods -->"


class _Shown(str):
    """An annotation shown as written (a string annotation's repr would add quotes)."""

    def __repr__(self) -> str:
        return str(self)


def _signature(method: Any) -> str:
    signature = inspect.signature(method)
    parameters = [
        parameter.replace(annotation=_Shown(parameter.annotation))
        if isinstance(parameter.annotation, str)
        else parameter
        for name, parameter in signature.parameters.items()
        if name != "self"
    ]
    returns = signature.return_annotation
    shown = signature.replace(
        parameters=parameters,
        return_annotation=_Shown(returns) if isinstance(returns, str) else returns,
    )
    return f"{method.__name__}{shown}"


def methods_markdown() -> str:
    """A section per route method of ``Client``, in the order the class defines them (its
    own methods, such as ``wait_ready``, are on the page through mkdocstrings)."""
    from tastebud.client import Client

    parts = []
    for name, member in vars(Client).items():
        if name.startswith("_") or not callable(member):
            continue
        if getattr(member, "__module__", None) == Client.__module__:
            continue
        doc = inspect.cleandoc(member.__doc__ or "")
        if not doc:
            raise PluginError(f"Client.{name} has no docstring")
        parts.append(f"### `{name}`\n\n```python\n{_signature(member)}\n```\n\n{doc}\n")
    return "\n".join(parts)


def on_page_markdown(markdown: str, page: Any, **_kwargs: Any) -> str:
    """Put the generated methods where ``reference/client.md`` has the marker."""
    if page.file.src_uri != "reference/client.md":
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"docs/reference/client.md lost its {MARKER} marker")
    return markdown.replace(MARKER, methods_markdown())
