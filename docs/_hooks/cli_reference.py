"""MkDocs hook: the command-line reference, generated from the typer app.

``docs/cli.md`` holds the marker below; this hook replaces it with the Markdown that typer's
own generator (the one behind ``typer ... utils docs``) writes for ``tastebud.cli.app``: every
command, argument and option with its help and default. The page is built from the same
objects ``tastebud --help`` prints, so it cannot drift from the code.

(mkdocs-click cannot read typer >= 0.20's commands: typer now carries its own copy of click,
whose options are not ``click.Option`` instances.)
"""

from __future__ import annotations

from typing import Any

from mkdocs.exceptions import PluginError

MARKER = "<!-- tastebud-cli-reference -->"


def cli_markdown() -> str:
    """The Markdown reference of every ``tastebud`` command, headings from level 2."""
    import typer
    import typer.cli
    import typer.main

    from tastebud.cli import app

    command = typer.main.get_command(app)
    docs = typer.cli.get_docs_for_click(
        obj=command, ctx=typer.Context(command), name="tastebud", indent=1
    )
    return docs.strip() + "\n"


def on_page_markdown(markdown: str, page: Any, **_kwargs: Any) -> str:
    """Put the generated reference where ``cli.md`` has the marker."""
    if page.file.src_uri != "cli.md":
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"docs/cli.md lost its {MARKER} marker")
    return markdown.replace(MARKER, cli_markdown())
