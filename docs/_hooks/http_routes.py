"""MkDocs hook: the service's table of HTTP routes, generated from its OpenAPI schema.

``docs/service.md`` holds the marker below; this hook replaces it with one row per route
(method, path, what it does, the key it asks for) read from ``create_app(settings).openapi()``.
Building the app opens nothing (the database is opened at start-up, which never runs here),
and a route added to the service appears on the page at the next build.
"""

from __future__ import annotations

import inspect
import re
import tempfile
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

MARKER = "<!-- tastebud-http-routes -->"


def _first_sentence(text: str) -> str:
    """The text up to its first '.' or ';' outside parentheses, on one line."""
    paragraph = re.sub(r"\s+", " ", text.strip().split("\n\n", 1)[0])
    depth = 0
    for at, char in enumerate(paragraph):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and char in ".;" and paragraph[at + 1 : at + 2] in (" ", ""):
            paragraph = paragraph[: at + 1].rstrip(";")
            break
    return paragraph.replace("|", "\\|")


def _key_level(route: Any) -> str:
    """``open``, ``read``, ``write`` or ``admin``: the key a route's dependencies check
    (each key check -- the closure create_app's ``_key_check`` returns -- holds its level)."""
    levels = []
    for dependency in route.dependant.dependencies:
        level = inspect.getclosurevars(dependency.call).nonlocals.get("level")
        if level is not None:
            if level not in ("read", "write", "admin"):
                raise PluginError(f"{route.path}: a key check this page does not know")
            levels.append(level)
    return levels[0] if len(levels) == 1 else "open" if not levels else "+".join(levels)


def routes_markdown() -> str:
    """A Markdown table of every route in the service's OpenAPI schema, in its order."""
    from fastapi.routing import APIRoute

    from tastebud.service.app import create_app
    from tastebud.service.settings import Settings

    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(db=f"sqlite:///{Path(folder) / 'unused.db'}")
        app = create_app(settings)
    spec = app.openapi()
    levels = {
        (method.lower(), route.path): _key_level(route)
        for route in app.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    }
    rows = ["| method | path | what it does | key |", "|---|---|---|---|"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            what = _first_sentence(operation.get("description") or operation["summary"])
            rows.append(f"| `{method.upper()}` | `{path}` | {what} | {levels[method, path]} |")
    return "\n".join(rows) + "\n"


def on_page_markdown(markdown: str, page: Any, **_kwargs: Any) -> str:
    """Put the generated table where ``service.md`` has the marker."""
    if page.file.src_uri != "service.md":
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"docs/service.md lost its {MARKER} marker")
    return markdown.replace(MARKER, routes_markdown())
