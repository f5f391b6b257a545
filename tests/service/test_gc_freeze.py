"""``create_app(freeze_heap=True)`` (what ``tastebud serve`` runs): the heap is frozen for the
garbage collector at start-up and every ``REFREEZE_S``; cyclic garbage among frozen objects
is still collected once the frozen heap has grown by half. Run in a child process: freezing
would reach into the test session's own heap."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import asyncio, gc, sys, time, weakref
    from pathlib import Path
    from tastebud.service import app as app_module, runtime
    from tastebud.service.settings import Settings

    runtime.REFREEZE_S = 0.05
    tmp = Path(sys.argv[1])
    settings = Settings(
        db=f"sqlite:///{tmp / 'f.db'}", model_dir=tmp / "m", log_level="warning", insecure=True
    )
    app = app_module.create_app(settings, freeze_heap=True)

    class Node:
        pass

    unfrozen = []
    unfreeze = gc.unfreeze
    gc.unfreeze = lambda: (unfrozen.append(1), unfreeze())[1]

    async def main():
        async with app.router.lifespan_context(app):
            start = gc.get_freeze_count()
            assert start > 1000, start  # start-up's heap is frozen
            model = [[i] for i in range(start)]  # a swap's new model: growth, not garbage
            app.state.engine.after_swap()
            await asyncio.sleep(0.2)
            assert not unfrozen, "a swap's growth made the heap be looked at whole"
            start = gc.get_freeze_count()
            cycle = Node()
            cycle.me = cycle  # a cycle, alive now
            gone = []
            weakref.finalize(cycle, gone.append, True)
            await asyncio.sleep(0.2)
            assert gc.get_freeze_count() > start  # frozen with it by a refreeze
            del cycle
            gc.collect()
            assert not gone  # frozen: a plain collection does not see it
            ballast = [[i] for i in range(start)]  # the frozen heap grows by more than half
            deadline = time.monotonic() + 10
            while not gone and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert gone, "the cycle was never collected"
            assert unfrozen
            print("ok", len(ballast), len(model))

    asyncio.run(main())
    """
)


def test_the_frozen_heap_is_refrozen_and_its_cycles_still_collected(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("ok")
