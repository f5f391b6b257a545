"""A real ``tastebud serve --sample`` process for the end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

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
    **env_extra: str,
) -> Iterator[str]:
    """``tastebud serve --sample`` on a free port, yielding its base URL once it is ready
    (and serves a trained model, unless ``with_model`` is false). ``env_extra`` are
    ``TASTEBUD_*`` settings; the machine's own keys and database are left out."""
    port = free_port()
    env = {
        **os.environ,
        "TASTEBUD_MODEL_DIR": str(tmp_path / "models"),
        "TASTEBUD_LOG_LEVEL": "warning",
    }
    for name in ("TASTEBUD_API_KEY", "TASTEBUD_ADMIN_KEY", "TASTEBUD_READ_KEY", "TASTEBUD_DB"):
        env.pop(name, None)
    env.update(env_extra)
    proc = subprocess.Popen(
        [TASTEBUD, "serve", "--sample", "--db", f"sqlite:///{tmp_path / 'sample.db'}",
         "--port", str(port), "--workers", str(workers)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                ready = httpx.get(f"{base}/health/ready", timeout=2)
                if ready.status_code == 200 and (
                    ready.json()["model_version"] is not None or not with_model
                ):
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.25)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)
