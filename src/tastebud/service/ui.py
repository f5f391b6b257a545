"""The web UI: two static pages over the JSON API, served by the app itself.

``mount_ui(app)`` adds ``GET /`` (a redirect to ``/ui/``), ``GET /ui/`` (pick or create a user,
see and rate recommendations, search items, onboard a newcomer), ``GET /ui/admin`` (stats, model
versions with their offline metrics, A/B experiments and their reports) and the pages' assets
under ``/ui/static/``. The pages are plain HTML with vanilla JavaScript: no build step, nothing
loaded from elsewhere, so they work offline. Every request they make goes to the same API as
any other client, with the ``X-API-Key`` the user typed (kept in the browser's localStorage).

The pages hold no data and need no key; the strict Content-Security-Policy they are sent with
allows only the app's own scripts, styles and API, so a title holding markup can do no harm
(the scripts also put every string from the API into the page as text, never as markup).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
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
