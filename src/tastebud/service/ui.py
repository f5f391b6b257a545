"""The web UI: two static pages over the JSON API, served by the app itself.

``mount_ui(app)`` adds ``GET /`` (a redirect to ``/ui/``), ``GET /ui/`` (find a user as you type
the start of their id -- the server searches, ``GET /users?q=``, so the page never holds the
user list -- or create one; see and rate recommendations, search items, onboard a newcomer),
``GET /ui/admin`` (stats and cache counters as labelled numbers, model versions with their
offline metrics, A/B experiments and their reports) and the pages' assets under
``/ui/static/``. The pages are plain HTML with vanilla JavaScript: no build step, nothing
loaded from elsewhere, so they work offline. Every request they make goes to the same API as
any other client, with the ``X-API-Key`` the user typed (kept in the browser's localStorage).

The pages hold no data and need no key; the strict Content-Security-Policy they are sent with
allows only the app's own scripts, styles and API, so a title holding markup can do no harm
(the scripts also put every string from the API into the page as text, never as markup).

``mount_docs(app)`` serves the API reference the same way: ``GET /docs`` (Swagger UI) and
``GET /redoc`` (ReDoc) with their scripts and styles from the ``fastapi-offline`` package under
``/docs/static/`` -- FastAPI's own pages load them from a CDN, which leaves ``/docs`` blank on
a machine without internet. Like ``/openapi.json`` they need no key: they describe the API
and hold no data (every call made from them sends the key typed into them).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from starlette.staticfiles import StaticFiles

#: Where the pages and their assets live (inside the package, so they ship with the wheel).
UI_DIR = Path(__file__).parent / "ui"

_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _page(name: str) -> FileResponse:
    return FileResponse(UI_DIR / name, media_type="text/html", headers=_PAGE_HEADERS)


def mount_ui(app: FastAPI) -> None:
    """Add the UI's routes to ``app`` (once: a second call changes nothing)."""
    if any(getattr(route, "path", None) == "/ui/" for route in app.routes):
        return

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("ui/", status_code=307)

    @app.get("/ui", include_in_schema=False)
    def ui_bare() -> RedirectResponse:
        return RedirectResponse("ui/", status_code=307)

    @app.get("/ui/", include_in_schema=False)
    def ui_user() -> FileResponse:
        return _page("index.html")

    @app.get("/ui/admin", include_in_schema=False)
    def ui_admin() -> FileResponse:
        return _page("admin.html")

    app.mount("/ui/static", StaticFiles(directory=UI_DIR / "static"), name="ui-static")


#: Swagger UI's and ReDoc's files (swagger-ui-bundle.js, swagger-ui.css,
#: redoc.standalone.js), as the ``fastapi-offline`` package ships them.
DOCS_ASSETS = Path(str(importlib.resources.files("fastapi_offline") / "static"))

#: Where :func:`mount_docs` serves :data:`DOCS_ASSETS`.
DOCS_STATIC = "/docs/static"

# Swagger UI and ReDoc start from an inline script and style their elements inline (ReDoc's
# search runs in a worker made from a blob); nothing may come from another host.
_DOCS_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self' 'unsafe-inline'; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
        "connect-src 'self'; worker-src 'self' blob:; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def mount_docs(app: FastAPI) -> None:
    """Add ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) over ``app.openapi_url``, their
    assets served from :data:`DOCS_ASSETS` (``app`` is made with ``docs_url=None`` and
    ``redoc_url=None``, so FastAPI's CDN-loading pages are not there). A second call changes
    nothing."""
    if any(getattr(route, "path", None) == "/docs" for route in app.routes):
        return
    openapi_url = app.openapi_url or "/openapi.json"

    def root(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        base = root(request)
        page = get_swagger_ui_html(
            openapi_url=base + openapi_url,
            title=f"{app.title} · API docs",
            swagger_js_url=f"{base}{DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{base}{DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{base}/ui/static/favicon.svg",
            # no badge fetched from validator.swagger.io
            swagger_ui_parameters={"validatorUrl": None, **(app.swagger_ui_parameters or {})},
        )
        page.headers.update(_DOCS_HEADERS)
        return page

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        base = root(request)
        page = get_redoc_html(
            openapi_url=base + openapi_url,
            title=f"{app.title} · API reference",
            redoc_js_url=f"{base}{DOCS_STATIC}/redoc.standalone.js",
            redoc_favicon_url=f"{base}/ui/static/favicon.svg",
            with_google_fonts=False,
        )
        page.headers.update(_DOCS_HEADERS)
        return page

    app.mount(DOCS_STATIC, StaticFiles(directory=DOCS_ASSETS), name="docs-static")
