"""The README's first command, as a newcomer runs it: a fresh virtualenv, the package WITHOUT
extras, then ``tastebud demo``. CI installs the dev extras, so without this test a demo that
needs torch would pass CI and fail for every new user."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _first_command() -> str:
    """The first shell command of the README (the one that sets up and runs the demo)."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.+?)\n```", readme, re.S)
    assert block is not None, "the README has no bash block"
    return block.group(1).strip()


def test_the_readme_starts_with_the_demo_command():
    command = _first_command()
    assert command.startswith("python3 -m venv .venv")
    assert "pip install -e ." in command and "tastebud demo" in command
    assert "[" not in command  # no extras: it must work on a bare install


@pytest.mark.slow
def test_the_readmes_first_command_works_on_a_bare_install(tmp_path):
    # The same command, with the project named by its path (we run it in an empty folder)
    # and the report kept out of the way.
    # (--no-compile: no .pyc for every installed module, a third of the install's time)
    command = _first_command().replace("pip install -e .", f"pip install -q --no-compile -e {ROOT}")
    command = command.replace("tastebud demo", f"tastebud demo --out {tmp_path / 'report'}")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(sys.prefix)
    )
    started = time.monotonic()
    res = subprocess.run(
        command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    seconds = time.monotonic() - started
    assert res.returncode == 0, f"{command}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    python = tmp_path / ".venv" / "bin" / "python"
    bare = subprocess.run(
        [str(python), "-c", "import importlib.util as u; print(u.find_spec('torch') is None)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert bare.stdout.strip() == "True", "the bare install pulled torch in"
    lines = res.stdout.splitlines()
    skipped = [line for line in lines if line.startswith("skipped ")]
    assert len(skipped) == 1, res.stdout
    assert "pip install 'tastebud[neural]'" in skipped[0] and "sasrec" in skipped[0]
    assert "pip install 'tastebud[embeddings]'" in skipped[0]
    assert any(line.startswith("als ") for line in lines), res.stdout
    assert (tmp_path / "report" / "report.md").is_file()
    assert "Traceback" not in res.stderr
    print(f"fresh venv + bare install + demo: {seconds:.0f} s")
