"""The documentation site: it builds with ``mkdocs build --strict`` (no broken link, no
docstring the API reference cannot read, no network), and its generated parts are complete.

The build runs once per session (about 10-30 s on 2 cores); the other tests read the pages it
wrote. The models table is hand-written (what each model is, when to use it), so a test holds
it to the registry.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site built strictly from the working tree into a temporary folder."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's notice about MkDocs 2.0
    for name in list(env):
        if name.startswith("TASTEBUD_"):  # the routes page builds the app from Settings
            env.pop(name)
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def page_text(site: Path, page: str) -> str:
    """A built page's text: tags stripped, entities decoded."""
    raw = (site / page / "index.html").read_text(encoding="utf-8")
    return html.unescape(re.sub(r"<[^>]+>", "", raw))


@pytest.mark.slow
def test_site_builds_strictly_with_every_page(site: Path) -> None:
    for page in (
        "",
        "getting-started",
        "lab",
        "models",
        "service",
        "cli",
        "changelog",
        "architecture",
        "benchmarks",
        "tutorials/lab-movielens",
        "tutorials/service-ab-test",
        "reference/tastebud",
        "reference/models",
        "reference/evaluation",
    ):
        assert (site / page / "index.html").is_file(), page
    # the search index works offline: built locally, nothing fetched
    assert (site / "search" / "search_index.json").is_file()


@pytest.mark.slow
def test_api_reference_is_generated_from_the_docstrings(site: Path) -> None:
    from tastebud.evaluation import evaluate
    from tastebud.models.base import Recommender

    evaluation = page_text(site, "reference/evaluation")
    first_line = (evaluate.__doc__ or "").strip().splitlines()[0].replace("``", "")
    assert first_line.rstrip(".") in evaluation
    models = page_text(site, "reference/models")
    assert "recommend_from_history" in models
    assert (Recommender.__doc__ or "").strip().splitlines()[0].rstrip(".") in models


@pytest.mark.slow
def test_sphinx_roles_do_not_show_on_the_site(site: Path) -> None:
    """``:class:`Dataset``` in a docstring reads as ``Dataset`` (or a link), not the role."""
    leftovers = []
    for page in site.rglob("*.html"):
        if re.search(r":(class|func|meth|mod|attr|data|exc):<", page.read_text(encoding="utf-8")):
            leftovers.append(str(page.relative_to(site)))
    assert not leftovers
    # a fully qualified role (tastebud.models' ":class:`~tastebud.models.base.Recommender`")
    # became a link to the documented object
    models_page = (site / "reference" / "models" / "index.html").read_text(encoding="utf-8")
    link = r'<a [^>]*href="[^"]*#tastebud\.models\.base\.Recommender"[^>]*><code>Recommender<'
    assert re.search(link, models_page)


@pytest.mark.slow
def test_cli_page_documents_every_command_and_option(site: Path) -> None:
    import typer.main

    from tastebud.cli import app

    text = page_text(site, "cli")
    root = typer.main.get_command(app)

    def walk(command: object, prefix: str) -> None:
        assert prefix in text, prefix
        for param in getattr(command, "params", []):
            for opt in getattr(param, "opts", []):
                if opt.startswith("--"):
                    assert opt in text, f"{prefix}: {opt}"
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{prefix} {name}")

    walk(root, "tastebud")
    assert "tastebud experiments report" in text


@pytest.mark.slow
def test_service_page_lists_every_route_and_the_settings(site: Path) -> None:
    from tastebud.service.app import create_app
    from tastebud.service.settings import Settings

    spec = create_app(Settings(db="sqlite:///unused.db")).openapi()
    text = page_text(site, "service")
    for path in spec["paths"]:
        assert path in text, path
    example = (ROOT / "tastebud.toml.example").read_text(encoding="utf-8")
    assert "[pipeline.generators]" in text
    assert example.splitlines()[0] in text


@pytest.mark.slow
def test_client_page_documents_every_method(site: Path) -> None:
    """The client's route methods are made at import time; the page still has each one."""
    import inspect

    from tastebud.client import Client

    text = page_text(site, "reference/client")
    methods = [name for name, m in vars(Client).items() if callable(m) and name[0] != "_"]
    assert {"recommend", "add_event", "start_experiment", "wait_ready"} <= set(methods)
    for name in methods:
        assert f"{name}(" in text, name
        first_line = inspect.cleandoc(getattr(Client, name).__doc__).splitlines()[0]
        assert re.sub(r":\w+:|`", "", first_line) in text, name


@pytest.mark.slow
def test_changelog_page_is_the_changelog(site: Path) -> None:
    text = page_text(site, "changelog")
    assert "Keep a Changelog" in text
    assert "Unreleased" in text


def documented_model_names() -> list[str]:
    """The names in the first column of the models table of docs/models.md."""
    names = []
    for line in (ROOT / "docs" / "models.md").read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\| `([a-z0-9-]+)` \|", line)
        if match:
            names.append(match.group(1))
    return names


def test_models_page_lists_every_registered_model_once() -> None:
    from tastebud.models import available

    names = documented_model_names()
    assert sorted(names) == sorted(set(names)), "a model is listed twice"
    assert set(names) == set(available())


def test_models_page_names_the_extra_of_each_model_that_needs_one() -> None:
    """Models from tastebud.models.neural need ``tastebud[neural]``; the row says so."""
    from tastebud.models import available, get_class

    rows = {
        match.group(1): line
        for line in (ROOT / "docs" / "models.md").read_text(encoding="utf-8").splitlines()
        if (match := re.match(r"^\| `([a-z0-9-]+)` \|", line))
    }
    for name in available():
        needs_torch = get_class(name).__module__.startswith("tastebud.models.neural")
        extra_cell = rows[name].rstrip(" |").rsplit("|", 1)[1]
        assert ("`neural`" in extra_cell) == needs_torch, name
    assert "`embeddings`" in rows["embedding"].rsplit("|", 2)[1]


def test_the_readme_python_runs_top_to_bottom(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's Python blocks before its Service section, in order and in one namespace,
    as a reader pastes them (the Service blocks need a running service:
    tests/service/test_client.py runs them against one)."""
    import matplotlib
    import matplotlib.pyplot as plt

    matplotlib.use("Agg")
    text = (ROOT / "README.md").read_text(encoding="utf-8").split("\n## Service")[0]
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) >= 3, "the README's library and lab sections have Python blocks"
    monkeypatch.chdir(tmp_path)  # the blocks write files (a saved model)
    namespace: dict[str, object] = {"__name__": "readme"}
    try:
        for block in blocks:
            exec(compile(block, str(ROOT / "README.md"), "exec"), namespace)
    finally:
        plt.close("all")
