"""Real servers for the end-to-end tests: ``tastebud serve --sample`` in its own process
(:func:`sample_server`), or an app of this process under uvicorn in a thread
(:func:`app_server`, :func:`served_app`), talked to through :class:`tastebud.client.Client`."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from tastebud.client import Client, ServiceError
from tastebud.service.app import create_app
from tastebud.service.settings import Settings

TASTEBUD = str(Path(sys.executable).parent / "tastebud")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def sample_server(
    tmp_path: Path,
    *,
    with_model: bool = True,
    timeout_s: float = 120,
    workers: int = 1,
    db: str | None = None,
    **env_extra: str,
) -> Iterator[str]:
    """``tastebud serve --sample`` on a free port, yielding its base URL once it is ready
    (and serves a trained model, unless ``with_model`` is false), on ``db`` (default: a new
    SQLite file). ``env_extra`` are ``TASTEBUD_*`` settings; the machine's own keys and
    database are left out."""
    port = free_port()
    env = {
        **os.environ,
        "TASTEBUD_MODEL_DIR": str(tmp_path / "models"),
        "TASTEBUD_LOG_LEVEL": "warning",
    }
    for name in ("TASTEBUD_API_KEY", "TASTEBUD_ADMIN_KEY", "TASTEBUD_READ_KEY", "TASTEBUD_DB"):
        env.pop(name, None)
    if not {"TASTEBUD_API_KEY", "TASTEBUD_ADMIN_KEY"} & set(env_extra):
        env["TASTEBUD_INSECURE"] = "true"  # no keys (test_security covers the default)
    env.update(env_extra)
    proc = subprocess.Popen(
        [TASTEBUD, "serve", "--sample", "--db", db or f"sqlite:///{tmp_path / 'sample.db'}",
         "--port", str(port), "--workers", str(workers)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        with Client(base, timeout=2, retries=0) as client:
            while True:
                try:
                    ready = client.ready()
                    if ready.model_version is not None or not with_model:
                        break
                except ServiceError:  # not listening yet (no answer), or starting (503)
                    pass
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "the server did not become ready"
                time.sleep(0.25)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextlib.contextmanager
def app_server(app: Any) -> Iterator[str]:
    """``app`` (an ASGI app, its lifespan included) served by uvicorn on a free port from a
    thread of this process, yielding its base URL once it has started: real HTTP, while the
    test keeps the app's objects at hand."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="app-server", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive(), "the app did not start (see the log above)"
            assert time.monotonic() < deadline, "the app did not start within 60 s"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@contextlib.contextmanager
def served_app(settings: Settings) -> Iterator[tuple[Client, Any]]:
    """A new app over ``settings`` served by :func:`app_server`: a client talking to it over
    HTTP, and the app (its ``state`` holds the engine and the storage)."""
    app = create_app(settings)
    # no retries (a test sees every failure) and time for a loaded machine
    with app_server(app) as base, Client(base, timeout=60, retries=0) as client:
        yield client, app


def ids(answer: Any) -> list[str]:
    """The items of a recommendation list (or of a similar-items answer), in order."""
    return [row.item for row in answer.items]


def raised(call: Any, *args: Any, **kwargs: Any) -> ServiceError:
    """The :class:`ServiceError` that ``call(*args, **kwargs)`` raises (failing if none)."""
    with pytest.raises(ServiceError) as caught:
        call(*args, **kwargs)
    return caught.value
