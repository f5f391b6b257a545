"""The web UI: its routes (in process), then ``tastebud serve --sample`` driven by headless
Chromium end to end.

The browser tests need Debian's ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium
chromium-driver``) and the ``selenium`` package (in the ``dev`` extra). Selenium is given the
driver's path, so Selenium Manager never runs and nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from serving import sample_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL = "install with: apt-get install -y chromium chromium-driver"


def test_the_pages_and_assets_are_served(tmp_path: Path) -> None:
    import warnings

    from tastebud.service.app import create_app
    from tastebud.service.settings import Settings
    from tastebud.service.ui import UI_DIR, mount_ui

    with warnings.catch_warnings():  # starlette prefers httpx2 where it is installed
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        from fastapi.testclient import TestClient

    app = create_app(
        Settings(db=f"sqlite:///{tmp_path / 'ui.db'}", model_dir=tmp_path / "m", insecure=True)
    )
    mount_ui(app)  # a no-op where create_app did it already
    mount_ui(app)
    assert sum(getattr(r, "path", None) == "/ui/" for r in app.routes) == 1
    client = TestClient(app)  # no lifespan: the pages need no database

    root = client.get("/", follow_redirects=False)
    assert root.status_code in (302, 307)
    assert client.get("/").url.path == "/ui/"
    assert client.get("/ui").url.path == "/ui/"
    for path, marker in (("/ui/", "static/user.js"), ("/ui/admin", "static/admin.js")):
        page = client.get(path)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert marker in page.text
        # offline: nothing is loaded from another host
        assert "http://" not in page.text and "https://" not in page.text
    for asset in sorted((UI_DIR / "static").iterdir()):
        answer = client.get(f"/ui/static/{asset.name}")
        assert answer.status_code == 200, asset.name
        assert answer.content == asset.read_bytes()
        text = answer.text.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert "http://" not in text and "https://" not in text, asset.name
    assert "javascript" in client.get("/ui/static/user.js").headers["content-type"]
    missing = client.get("/ui/static/nothing.js")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found"
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/ui")], "the UI is not API"


def test_the_api_docs_are_served_from_the_package(tmp_path: Path) -> None:
    """/docs and /redoc load Swagger UI and ReDoc from the app itself, never from a CDN,
    and stay open when keys guard the API (like /openapi.json, they hold no data)."""
    import warnings

    from tastebud.service.app import create_app
    from tastebud.service.settings import Settings
    from tastebud.service.ui import DOCS_ASSETS, DOCS_STATIC, mount_docs

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        from fastapi.testclient import TestClient

    settings = Settings(
        db=f"sqlite:///{tmp_path / 'docs.db'}",
        model_dir=tmp_path / "m",
        read_key="read-key-0123456789",
        api_key="write-key-0123456789",
        admin_key="admin-key-0123456789",
    )
    app = create_app(settings)
    mount_docs(app)  # a no-op where create_app did it already
    assert sum(getattr(r, "path", None) == "/docs" for r in app.routes) == 1
    client = TestClient(app)
    assert client.get("/users").status_code == 401, "the API itself is guarded"
    assets = {
        "/docs": ("swagger-ui-bundle.js", "swagger-ui.css"),
        "/redoc": ("redoc.standalone.js",),
    }
    for page, files in assets.items():
        answer = client.get(page)
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in answer.headers["content-security-policy"]
        assert "http://" not in answer.text and "https://" not in answer.text, page
        assert "'/openapi.json'" in answer.text or '"/openapi.json"' in answer.text
        for name in files:
            assert f"{DOCS_STATIC}/{name}" in answer.text
            served = client.get(f"{DOCS_STATIC}/{name}")
            assert served.status_code == 200
            assert served.content == (DOCS_ASSETS / name).read_bytes()
    assert "'validatorUrl': null" in client.get("/docs").text.replace('"', "'")
    assert client.get("/openapi.json").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith(("/docs", "/redoc"))], "the docs are not API"
    assert client.get(f"{DOCS_STATIC}/nothing.js").status_code == 404
    app.state.storage.close()


@contextlib.contextmanager
def _serve(tmp_path: Path, *, with_model: bool = True, **env_extra: str) -> Iterator[str]:
    """``tastebud serve --sample`` that serves the UI. A fixed regularisation: reg="auto"
    tunes it with extra fits (seconds each on a small machine), which the pages do not
    need."""
    env = {"TASTEBUD_MODEL_PARAMS": '{"reg": 0.1}', **env_extra}
    with sample_server(tmp_path, with_model=with_model, timeout_s=60, **env) as base:
        page = httpx.get(f"{base}/ui/")
        assert page.status_code == 200, "the app does not serve the UI (mount_ui not called?)"
        yield base


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    with _serve(tmp_path) as base:
        yield base


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Headless Chromium under Debian's chromedriver, keeping the console log."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"the browser test needs {' and '.join(missing)}; {INSTALL}")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("the browser test needs selenium: pip install -e '.[dev]'")
    monkeypatch.setenv("SE_OFFLINE", "true")  # belt and braces: Selenium Manager never fetches
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any, what: str, check: Callable[[], Any], timeout: float = 15) -> Any:
    """Poll ``check`` until it returns something truthy; fail saying ``what`` did not happen."""
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except StaleElementReferenceException:  # the list was redrawn under us: look again
            pass
        if time.monotonic() > deadline:
            error = driver.find_element("css selector", "[data-testid=error]")
            shown = error.text if error.is_displayed() else "(no error shown)"
            raise AssertionError(f"timed out waiting for: {what}; page error: {shown}")
        time.sleep(0.1)


def _by(driver: Any, testid: str, within: Any = None) -> list[Any]:
    return (within or driver).find_elements("css selector", f"[data-testid={testid!r}]")


def _recs(driver: Any) -> list[str]:
    return [li.get_attribute("data-item") for li in _by(driver, "rec")]


def _options(driver: Any) -> list[str]:
    """The user picker's options (shown or not)."""
    return [o.get_attribute("data-user") for o in _by(driver, "user-option")]


def _retype(field: Any, text: str) -> None:
    """Replace a field's text the way a person does (select all, type), so that the page
    sees input events."""
    from selenium.webdriver.common.keys import Keys

    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.BACKSPACE)
    field.send_keys(text)


def _settled(driver: Any) -> bool:
    """No request of the page's is in flight."""
    return driver.find_element("tag name", "html").get_attribute("data-pending") == "0"


def _severe(driver: Any) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


@pytest.mark.browser
@pytest.mark.slow
def test_user_and_admin_pages_end_to_end(browser: Any, server: str) -> None:
    from selenium.webdriver.common.keys import Keys

    driver = browser
    driver.get(f"{server}/")
    assert driver.current_url == f"{server}/ui/", "GET / redirects to the user page"

    # the user picker asks the server for the users whose id starts with what is typed
    search = _by(driver, "user-search")[0]
    search.send_keys("u2")
    first = [u["id"] for u in httpx.get(f"{server}/users?q=u2&limit=20", timeout=30).json()]
    assert first == [f"u{n}" for n in range(200, 220)]  # of the sample's u200..u299
    _wait(driver, "the first 20 users starting u2", lambda: _options(driver) == first)
    assert _by(driver, "user-note")[0].text.startswith("The first 20 matches")
    search.send_keys("9")
    _wait(
        driver,
        "the ten users starting u29",
        lambda: _options(driver) == [f"u{n}" for n in range(290, 300)],
    )
    assert _by(driver, "user-note")[0].text == "10 matches."
    # the keyboard: down twice, Enter picks the second option
    search.send_keys(Keys.ARROW_DOWN, Keys.ARROW_DOWN, Keys.ENTER)
    _wait(driver, "u291 to be current", lambda: _by(driver, "current-user")[0].text == "u291")
    _wait(driver, "u291's recommendations", lambda: len(_recs(driver)) == 10)
    assert not _by(driver, "user-options")[0].is_displayed()
    # the mouse: a click on an option picks it
    _retype(search, "u00")
    option = _wait(
        driver,
        "u007 among the options",
        lambda: [o for o in _by(driver, "user-option") if o.get_attribute("data-user") == "u007"],
    )[0]
    option.click()
    _wait(driver, "u007 to be current", lambda: _by(driver, "current-user")[0].text == "u007")
    # "More like this" says what its scores are (here: the model's item similarity)
    _wait(driver, "u007's recommendations", lambda: len(_recs(driver)) == 10)
    _by(driver, "rec-similar", _by(driver, "rec")[0])[0].click()
    basis = _wait(driver, "the similar items' basis", lambda: _by(driver, "similar-basis"))[0]
    assert basis.get_attribute("data-source") == "model"
    assert basis.text.startswith("item similarity of model version")
    assert len(_by(driver, "similar-item")) == 5
    # an id typed whole opens that user; an unknown one is refused in words
    _retype(search, "nobody-here")
    _by(driver, "user-open")[0].click()
    _wait(driver, "the refusal", lambda: _by(driver, "error")[0].is_displayed())
    assert _by(driver, "error")[0].text == "no user “nobody-here”; create it below"
    assert _by(driver, "current-user")[0].text == "u007"

    # create a user: a newcomer gets popular items and the onboarding box
    _by(driver, "new-user-id")[0].send_keys("ui-tester")
    _by(driver, "create-user")[0].click()
    _wait(
        driver,
        "the new user to be current",
        lambda: _by(driver, "current-user")[0].text == "ui-tester",
    )
    _wait(driver, "ten popular recommendations", lambda: len(_recs(driver)) == 10)
    assert {s.text for s in _by(driver, "rec-source")} == {"popular"}
    assert _by(driver, "onboarding")[0].is_displayed()
    assert _by(driver, "user-search")[0].get_attribute("value") == "ui-tester"

    # search an item and like it from the results
    _by(driver, "search-input")[0].send_keys("Kind of Blue")
    _by(driver, "search-submit")[0].click()
    hit = _wait(
        driver,
        "Kind of Blue in the search results",
        lambda: [
            r
            for r in _by(driver, "search-result")
            if _by(driver, "search-result-title", r)[0].text == "Kind of Blue"
        ],
    )[0]
    liked = hit.get_attribute("data-item")
    _by(driver, "search-result-like", hit)[0].click()

    # the list now comes from the model, with titles and "because you liked" explanations
    def explained() -> bool:
        texts = [e.text for e in _by(driver, "rec-explanation")]
        return len(texts) == 10 and any(
            t.startswith("because you liked Kind of Blue") for t in texts
        )

    _wait(driver, "recommendations explained by the like", explained)
    ids = _recs(driver)
    assert liked not in ids
    titles = [t.text for t in _by(driver, "rec-title")]
    stored = [httpx.get(f"{server}/items/{quote(i, safe='')}").json()["title"] for i in ids]
    assert titles == [t or i for t, i in zip(stored, ids, strict=True)], "titles (else ids)"
    assert not _by(driver, "onboarding")[0].is_displayed(), "onboarding is for newcomers only"
    _wait(
        driver,
        "the like in the events table",
        lambda: [r.get_attribute("data-type") for r in _by(driver, "event")] == ["like"],
    )

    # like the first recommendation: it leaves the list and another one comes in
    before = _recs(driver)
    first = _by(driver, "rec")[0]
    _by(driver, "rec-like", first)[0].click()
    _wait(
        driver,
        "the liked item to leave the list",
        lambda: (now := _recs(driver)) and before[0] not in now and now != before,
    )
    after = _recs(driver)
    assert len(after) == 10, "the list is refilled"
    assert set(after) - set(before), "new items came in"
    assert _by(driver, "rec-new"), "newcomers to the list are marked"

    # dislike one: it leaves the list too
    target = after[1]
    row = next(li for li in _by(driver, "rec") if li.get_attribute("data-item") == target)
    _by(driver, "rec-dislike", row)[0].click()
    _wait(
        driver,
        "the disliked item to leave the list",
        lambda: (now := _recs(driver)) and target not in now,
    )
    _wait(
        driver,
        "three events, newest first",
        lambda: (
            [r.get_attribute("data-type") for r in _by(driver, "event")]
            == ["dislike", "like", "like"]
        ),
    )
    assert not _by(driver, "error")[0].is_displayed()

    # text from the API is shown as text, never as markup
    hostile = "<img src=x onerror=alert(1)>"
    _by(driver, "new-user-id")[0].send_keys(hostile)
    _by(driver, "create-user")[0].click()
    current = _wait(
        driver,
        "the oddly named user to be current",
        lambda: [c for c in _by(driver, "current-user") if c.text == hostile],
    )[0]
    assert current.find_elements("tag name", "img") == []
    _wait(driver, "its recommendations", lambda: len(_recs(driver)) == 10)

    # onboarding: a newcomer picks two items found by search and gets a list from them
    _by(driver, "new-user-id")[0].send_keys("ui-newcomer")
    _by(driver, "create-user")[0].click()
    _wait(
        driver,
        "the newcomer to be current",
        lambda: _by(driver, "current-user")[0].text == "ui-newcomer",
    )
    _wait(driver, "the onboarding box", lambda: _by(driver, "onboarding")[0].is_displayed())
    search = _by(driver, "search-input")[0]
    search.clear()
    search.send_keys("Blue")
    _by(driver, "search-submit")[0].click()
    _wait(
        driver,
        "two results for Blue",
        lambda: (
            len(_by(driver, "search-result")) >= 2
            and all("Blue" in r.text for r in _by(driver, "search-result"))
        ),
    )
    picked = []
    for result in _by(driver, "search-result")[:2]:
        picked.append(result.get_attribute("data-item"))
        _by(driver, "search-result-pick", result)[0].click()
    assert [p.get_attribute("data-item") for p in _by(driver, "onboarding-pick")] == picked
    _by(driver, "onboarding-submit")[0].click()
    _wait(
        driver,
        "the onboarding likes in the events table",
        lambda: (
            sorted(
                r.get_attribute("data-item")
                for r in _by(driver, "event")
                if r.get_attribute("data-type") == "like"
            )
            == sorted(picked)
        ),
    )
    _wait(
        driver,
        "a list explained by the picks",
        lambda: any(
            e.text.startswith("because you liked ") for e in _by(driver, "rec-explanation")
        ),
    )
    assert not set(picked) & set(_recs(driver))
    assert not _by(driver, "onboarding")[0].is_displayed()
    problems = _severe(driver)
    assert problems == [], f"the user page logged errors: {problems}"

    # the admin page: stats and the model versions with an active one
    driver.get(f"{server}/ui/admin")
    rows = _wait(driver, "a model version row", lambda: _by(driver, "model-row"))
    assert len(rows) >= 1
    assert len(_by(driver, "model-active")) == 1, "exactly one version is active"
    headers = [th.text for th in driver.find_elements("css selector", "#models-head th")]
    assert headers[:2] == ["Version", "Model"], headers
    ndcg = rows[0].find_element("css selector", "td[data-metric='ndcg@10']").text
    assert 0 < float(ndcg) <= 1, "the offline NDCG@10 of the version is shown"
    users = _wait(driver, "the stats", lambda: _by(driver, "stat-users"))[0]
    assert users.find_element("tag name", "dd").text.replace(",", "").isdigit()
    # the caches' counters as labelled numbers, not raw JSON
    stats = httpx.get(f"{server}/admin/stats", timeout=30).json()
    assert set(stats["list_cache"]) == {"hits", "misses"}
    for cache, labels in (
        ("list_cache", ("Kept lists", "served again", "built")),
        ("state_cache", ("Kept user histories", "from memory", "read from the database")),
    ):
        box = _by(driver, f"stat-{cache}")[0]
        assert box.find_element("tag name", "dt").text == labels[0]
        text = box.find_element("tag name", "dd").text
        assert "{" not in text and '"' not in text, text
        for part, label in zip(("hits", "misses"), labels[1:], strict=True):
            shown = _by(driver, f"stat-{cache}-{part}", box)[0]
            number, _, words = shown.text.partition(" ")
            assert number.replace(",", "").isdigit() and words == label, shown.text
    rate = _by(driver, "stat-state_cache-rate")[0].text  # the user page's lists read states
    assert rate.endswith("% hit rate") and 0 <= float(rate.split("%")[0]) <= 100

    # an A/B experiment started from the page shows its report, and can be stopped
    _wait(driver, "no experiments yet", lambda: _by(driver, "experiments-empty")[0].is_displayed())
    _by(driver, "experiment-name")[0].send_keys("ui-ab")
    _by(driver, "create-experiment")[0].click()
    exp = _wait(driver, "the new experiment", lambda: _by(driver, "experiment"))[0]
    assert exp.get_attribute("data-name") == "ui-ab"
    assert _by(driver, "experiment-status", exp)[0].text == "running"
    assert len(_by(driver, "experiment-variant", exp)) == 2
    _wait(driver, "its report", lambda: len(_by(driver, "report-row")) == 2)
    verdict = _by(driver, "report-significant")[0]
    assert verdict.text in {"significant", "not significant"}
    assert _by(driver, "report-p-value")[0].text.startswith("p = ")
    _by(driver, "experiment-stop", exp)[0].click()
    _wait(
        driver,
        "the experiment to stop",
        lambda: [s.text for s in _by(driver, "experiment-status")] == ["stopped"],
    )
    _wait(driver, "every request to finish", lambda: _settled(driver))
    assert not _by(driver, "error")[0].is_displayed(), _by(driver, "error")[0].text
    problems = _severe(driver)
    assert problems == [], f"the admin page logged errors: {problems}"


@pytest.mark.browser
@pytest.mark.slow
def test_the_api_key_typed_in_the_page_is_sent(tmp_path: Path, browser: Any) -> None:
    driver = browser
    # no model trained (fast start): the admin page's reads need the key all the same
    with _serve(
        tmp_path,
        with_model=False,
        TASTEBUD_API_KEY="s3cret-0123456789",
        TASTEBUD_MIN_EVENTS_TO_TRAIN="1000000",
    ) as base:
        driver.get(f"{base}/ui/")
        _by(driver, "user-search")[0].click()  # focus: the first users are offered
        _wait(driver, "the users (reads need no key)", lambda: len(_options(driver)) == 20)
        _by(driver, "new-user-id")[0].send_keys("keyed")
        _by(driver, "create-user")[0].click()
        error = _by(driver, "error")[0]
        _wait(driver, "the refusal to be shown", lambda: error.is_displayed())
        assert error.text == "create user: this endpoint needs an X-API-Key header"
        assert _by(driver, "current-user")[0].text == "none"

        _by(driver, "api-key")[0].send_keys("s3cret-0123456789")
        _by(driver, "save-key")[0].click()
        new_user = _by(driver, "new-user-id")[0]
        new_user.clear()
        new_user.send_keys("keyed")
        _by(driver, "create-user")[0].click()
        _wait(
            driver,
            "the user to be created with the key",
            lambda: _by(driver, "current-user")[0].text == "keyed",
        )
        assert not _by(driver, "error")[0].is_displayed()
        assert httpx.get(f"{base}/users/keyed").status_code == 200

        # the key is kept in the browser: the admin page (which needs it) works at once
        driver.get(f"{base}/ui/admin")
        users = _wait(driver, "the stats", lambda: _by(driver, "stat-users"))[0]
        assert users.find_element("tag name", "dd").text.replace(",", "").isdigit()
        _wait(driver, "no versions", lambda: _by(driver, "models-empty")[0].is_displayed())
        _wait(driver, "every request to finish", lambda: _settled(driver))
        assert not _by(driver, "error")[0].is_displayed(), _by(driver, "error")[0].text
        refused = [e for e in _severe(driver) if "401" not in e["message"]]
        assert refused == [], f"errors besides the expected 401: {refused}"


@pytest.mark.browser
@pytest.mark.slow
def test_the_api_docs_render_offline(tmp_path: Path, browser: Any) -> None:
    """This machine reaches no CDN (nor anything else off it), so operations rendered by
    Swagger UI and ReDoc prove their assets came from the app -- with keys guarding the API
    -- and a call made from Swagger UI reaches the API through the page's policy."""
    driver = browser
    with _serve(
        tmp_path,
        with_model=False,
        TASTEBUD_READ_KEY="read-key-0123456789",
        TASTEBUD_API_KEY="write-key-0123456789",
        TASTEBUD_MIN_EVENTS_TO_TRAIN="1000000",
    ) as base:
        operations = sum(
            len(entry)
            for entry in httpx.get(f"{base}/openapi.json", timeout=60).json()["paths"].values()
        )
        assert operations >= 25
        # the UI's "API docs" link
        driver.get(f"{base}/ui/")
        driver.find_element("link text", "API docs").click()
        _wait(driver, "the docs page", lambda: driver.current_url == f"{base}/docs")
        blocks = _wait(
            driver,
            "Swagger UI's operations",
            lambda: (
                (found := driver.find_elements("css selector", ".opblock"))
                and len(found) == operations
                and found
            ),
            timeout=60,  # 1.5 MB of script to parse on a busy machine
        )
        paths = {b.find_element("css selector", ".opblock-summary-path").text for b in blocks}
        assert {"/users/{user_id}/recommendations", "/items/{item_id}/similar"} <= paths
        # try /health/ready from the page: open it, "Try it out", "Execute"
        ready = next(
            b
            for b in blocks
            if b.find_element("css selector", ".opblock-summary-path").text == "/health/ready"
        )
        ready.find_element("css selector", ".opblock-summary").click()
        _wait(driver, "Try it out", lambda: ready.find_elements("css selector", ".try-out__btn"))
        ready.find_element("css selector", ".try-out__btn").click()
        _wait(driver, "Execute", lambda: ready.find_elements("css selector", ".execute"))
        ready.find_element("css selector", ".execute").click()
        status = _wait(
            driver,
            "the live answer",
            lambda: ready.find_elements(
                "css selector", ".live-responses-table tr.response td.response-col_status"
            ),
        )[0]
        assert status.text.startswith("200")
        problems = _severe(driver)
        assert problems == [], f"Swagger UI logged errors: {problems}"

        driver.get(f"{base}/redoc")
        _wait(
            driver,
            "ReDoc's operations",
            lambda: (
                len(driver.find_elements("css selector", "[data-section-id^='operation/']"))
                == operations
            ),
            timeout=60,
        )
        # ReDoc's bundle hard-codes its maker's logo from their CDN; the page's policy
        # refuses it (the logo hides itself) -- nothing else may be missing
        problems = [e for e in _severe(driver) if "cdn.redoc.ly" not in e["message"]]
        assert problems == [], f"ReDoc logged errors: {problems}"
