"""Driving the wizard with a Textual pilot (shared by the tests/test_ui_*.py modules and tests/test_bench.py)."""

from __future__ import annotations

import contextlib

from screenshots.make_demo_run import write_demo_run
from tests.support.wait import until


async def goto(pilot, step: str) -> None:
    """Switch to a step and wait until its screen is mounted and shown."""
    app = pilot.app
    app.goto(step)
    await until(pilot, lambda: getattr(app.screen, "STEP", None) == step and app.screen.is_mounted,
                what=f"the {step} step")
    await pilot.pause()


@contextlib.asynccontextmanager
async def wizard_at(step: str, size: tuple[int, int] = (80, 24), **app_kwargs):
    """The wizard (``make_app(**app_kwargs)``) under a pilot, switched to ``step``; yields the pilot."""
    from lora_tui.ui.app import make_app

    app = make_app(**app_kwargs)
    async with app.run_test(size=size) as pilot:
        await goto(pilot, step)
        yield pilot


def export_screen(tmp_path, backend, size: tuple[int, int] = (120, 40)):
    """The wizard on the Export step of a finished demo run (``tmp_path/demo-run``), ``backend``
    answering every core call; yields the pilot (``pilot.app.screen`` is the Export screen)."""
    path = write_demo_run(tmp_path / "demo-run", last_step=10, finished=True)
    return wizard_at("export", size, run=str(path), backend=backend)
