"""MkDocs hook: show the package's Sphinx-style roles as code (and links where possible).

The docstrings name other objects with roles such as ``:class:`Dataset``` or
``:func:`~tastebud.evaluation.evaluate```, which Markdown renders as the role's name followed
by code. This hook drops the role: a fully qualified name becomes a cross-reference that
mkdocs-autorefs resolves when the object is documented on the site (and leaves as plain
code, without a warning, when it is not); any other name stays code. A leading ``~`` shows
only the last part of the name, as in Sphinx.
"""

from __future__ import annotations

import html
import re
from typing import Any

_ROLE = re.compile(
    r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const):<code>(~?)([^<]+)</code>"
)


def _replace(match: re.Match[str]) -> str:
    short, name = match.group(1) == "~", html.unescape(match.group(2)).strip()
    shown = name.rsplit(".", 1)[-1] if short else name
    code = f"<code>{html.escape(shown)}</code>"
    if name.startswith("tastebud."):
        return f'<autoref identifier="{html.escape(name)}" optional>{code}</autoref>'
    return code


def on_page_content(output: str, **_kwargs: Any) -> str:
    """Rewrite the roles in a page's HTML (after Markdown, before autorefs links it)."""
    return _ROLE.sub(_replace, output)
