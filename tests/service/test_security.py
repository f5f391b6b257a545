"""Secure by default (issue 17): keys without configuration, writes that a browser on
another site cannot forge, the limits a server facing untrusted clients needs, and the
HTTP details (Allow, a 500 that keeps the connection) that clients rely on."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from tests.service.test_app import (  # noqa: F401 - _clean_environment is an autouse fixture
    _clean_environment,
    error,
    make_settings,
    ok,
    serve,
)
from tests.test_cli import _main

from tastebud.service.app import create_app
from tastebud.service.keys import KEY_FILE
from tastebud.service.server import is_loopback, uvicorn_options
from tastebud.service.settings import Settings

EVENT = {"user_id": "u", "item_id": "x", "type": "like"}


def default_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """The settings as shipped: no key configured, not insecure."""
    return Settings(
        db=f"sqlite:///{tmp_path / 'service.db'}",
        model_dir=tmp_path / "models",
        min_events_to_train=10**9,
        **overrides,
    )


# -- keys ----------------------------------------------------------------------------------------
def test_the_first_start_generates_an_admin_key_that_guards_writes_and_admin(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tastebud.service")
    with serve(default_settings(tmp_path)) as client:
        path = tmp_path / "models" / KEY_FILE
        key = path.read_text().strip()
        assert len(key) >= 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
        assert sum(key in record.getMessage() for record in caplog.records) == 1  # printed once

        assert error(client.put("/items/x", json={}), 401)["type"] == "unauthorized"
        error(client.put("/items/x", json={}, headers={"X-API-Key": "guess-0123456789"}), 403)
        error(client.post("/admin/retrain"), 401)
        error(client.delete("/users/u"), 401)
        ok(client.put("/items/x", json={}, headers={"X-API-Key": key}))
        ok(client.post("/events", json=EVENT, headers={"X-API-Key": key}), 201)
        ok(client.get("/admin/stats", headers={"X-API-Key": key}))
        ok(client.get("/users/u/recommendations"))  # reads stay open
        ok(client.get("/items/x"))
    caplog.clear()
    with serve(default_settings(tmp_path)) as client:  # a restart reads the same key
        assert path.read_text().strip() == key
        assert not any(key in record.getMessage() for record in caplog.records)
        assert any(str(path) in record.getMessage() for record in caplog.records)
        ok(client.get("/admin/stats", headers={"X-API-Key": key}))


def test_configured_keys_replace_the_generated_one(tmp_path: Path) -> None:
    settings = default_settings(tmp_path, api_key="write-key-0123456789")
    with serve(settings) as client:
        ok(client.put("/items/x", json={}, headers={"X-API-Key": "write-key-0123456789"}))
    assert not (tmp_path / "models" / KEY_FILE).exists()
    with pytest.raises(ValueError, match="at least 16 characters"):
        default_settings(tmp_path, api_key="short")


def test_insecure_opens_everything_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with serve(default_settings(tmp_path, insecure=True)) as client:
        ok(client.put("/items/x", json={}))
        ok(client.post("/admin/retrain"), 202)
    assert any("insecure" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    assert not (tmp_path / "models" / KEY_FILE).exists()


def cli_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``tastebud ARGS`` in this process: exit code and everything printed."""
    code, out, err = _main(capsys, *args)
    return code, out + err


def test_serve_refuses_a_public_address_without_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASTEBUD_MODEL_DIR", str(tmp_path / "m"))
    for host in ("0.0.0.0", "192.168.1.20", "::", "shop.example"):
        code, output = cli_main(
            capsys, "serve", "--db", f"sqlite:///{tmp_path / 's.db'}", "--host", host
        )
        lines = output.strip().splitlines()
        assert code == 2 and len(lines) == 1, output
        assert f"--host {host}" in lines[0] and "--insecure" in lines[0]
    assert [is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "127.8.0.1")] == [True] * 4


def test_serve_refuses_a_model_whose_packages_are_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tastebud.models import get_class

    cls = get_class("sasrec")
    monkeypatch.setattr(cls, "missing_extra", classmethod(lambda _: "pip install 'x[neural]'"))
    code, output = cli_main(
        capsys, "serve", "--db", f"sqlite:///{tmp_path / 's.db'}", "--model", "sasrec"
    )
    assert code == 2
    assert output.strip().splitlines() == [
        "error: model sasrec: its packages are not installed; add them with pip install 'x[neural]'"
    ]


# -- cross-site writes -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "text/plain"},  # the example: a form-like simple request
        {"content-type": "application/x-www-form-urlencoded"},
        {"content-type": "multipart/form-data; boundary=x"},
        {},  # no content type at all
    ],
)
def test_a_write_with_a_body_that_is_not_json_is_415(
    tmp_path: Path, headers: dict[str, str]
) -> None:
    with serve(make_settings(tmp_path)) as client:
        for method, url in [
            ("POST", "/admin/retrain"),
            ("POST", "/events"),
            ("PUT", "/users/u"),
            ("PATCH", "/items/x"),
        ]:
            answer = client.request(method, url, content=b'{"a": 1}', headers=headers)
            assert error(answer, 415)["type"] == "unsupported_media_type"
        ok(client.post("/events", json=EVENT | {"item_id": "y"}), 409)  # JSON passes the door


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "https://evil.example"},
        {"origin": "http://testserver.evil.example"},
        {"sec-fetch-site": "cross-site"},
        {"origin": "https://evil.example", "sec-fetch-site": "same-site"},
        {"origin": "null"},  # a sandboxed frame or a file:// page
    ],
)
def test_a_write_from_another_web_origin_is_403(tmp_path: Path, headers: dict[str, str]) -> None:
    with serve(make_settings(tmp_path)) as client:
        for method, url in [("POST", "/admin/retrain"), ("DELETE", "/users/u")]:
            answer = client.request(method, url, headers=headers)
            assert "origin" in error(answer, 403)["message"]
        ok(client.get("/users/u/recommendations", headers=headers))  # reads are not refused


def test_same_origin_and_allowed_origins_may_write(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, allowed_origins=["https://shop.example"])
    with serve(settings) as client:
        for headers in (
            {"origin": "http://testserver"},
            {"origin": "https://shop.example"},
            {"sec-fetch-site": "same-origin"},
        ):
            ok(client.put("/items/x", json={}, headers=headers))


# -- methods ---------------------------------------------------------------------------------
def test_options_and_405_name_every_method_of_the_path(tmp_path: Path) -> None:
    with serve(make_settings(tmp_path)) as client:
        answer = client.options("/users/u")
        assert answer.status_code == 204
        assert set(answer.headers["allow"].split(", ")) >= {"GET", "PUT", "DELETE", "OPTIONS"}
        refused = client.post("/users/u")
        assert error(refused, 405)["type"] == "method_not_allowed"
        assert set(refused.headers["allow"].split(", ")) >= {"GET", "PUT", "DELETE"}
        assert set(client.options("/items/x").headers["allow"].split(", ")) >= {"PATCH"}
        error(client.options("/nowhere"), 404)


# -- a real server: timeouts, connections ----------------------------------------------------
@contextlib.contextmanager
def real_server(settings: Settings) -> Iterator[int]:
    """``settings``' app under uvicorn with ``tastebud serve``'s options, on a free port."""
    app = create_app(settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    options = uvicorn_options(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        os.environ.pop("_TASTEBUD_HEADER_TIMEOUT_S", None)


def closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closed ``sock`` within ``seconds``, and what it sent first."""
    sock.settimeout(seconds)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        return False, received
    return True, received


def read_response(sock: socket.socket) -> bytes:
    """One whole HTTP answer (headers and a Content-Length body) from ``sock``."""
    sock.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_a_half_sent_body_is_408_and_the_connection_closed(tmp_path: Path) -> None:
    with real_server(make_settings(tmp_path, body_timeout_s=1.0)) as port:
        conns = []
        for _ in range(20):  # many at once: none is held
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(
                b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n" + b'{"user_id": "u", '
            )
            conns.append(sock)
        for sock in conns:
            closed, answer = closed_within(sock, 5)
            assert closed and answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert b'"timeout"' in answer
            sock.close()


@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /health/live HTTP/1.1\r\nHost: x\r\n", b"GET /health/li"],
)
def test_headers_that_never_finish_are_cut_off(tmp_path: Path, sent: bytes) -> None:
    with real_server(make_settings(tmp_path, header_timeout_s=0.5)) as port:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(sent)
        closed, _ = closed_within(sock, 5)
        assert closed
        sock.close()
        # a normal request on a kept-alive connection is not cut off between requests
        with socket.create_connection(("127.0.0.1", port)) as alive:
            for _ in range(2):
                alive.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
                assert read_response(alive).startswith(b"HTTP/1.1 200")
                time.sleep(0.8)  # idle longer than the header timeout: keep-alive rules


def test_an_unhandled_error_is_a_json_500_on_a_kept_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    settings = make_settings(tmp_path)
    with real_server(settings) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
        from tastebud.service.storage import Storage

        def broken(*_args: Any, **_kwargs: Any) -> Any:
            raise RuntimeError("a bug")

        monkeypatch.setattr(Storage, "get_item", broken)
        answer = http.get("/items/x")
        assert answer.status_code == 500 and answer.json()["error"]["type"] == "internal_error"
        assert "a bug" not in answer.text and "Traceback" not in answer.text
        assert answer.headers.get("connection") != "close"
        monkeypatch.undo()
        assert http.get("/health/live").status_code == 200  # the same pooled connection


def test_busy_workers_are_not_killed_as_hung(tmp_path: Path) -> None:
    """uvicorn's supervisor kills a worker that does not answer its ping in time; a worker
    reading a large database at start-up or fitting a model on a busy machine answers late
    (the ping waits for the interpreter lock), so the limit is minutes, not uvicorn's 5 s."""
    settings = default_settings(tmp_path)
    config = uvicorn.Config(create_app(settings), **uvicorn_options(settings))
    assert config.timeout_worker_healthcheck >= 60
