"""Driving the wizard with a Textual pilot (shared by the tests/test_ui_*.py modules and tests/test_bench.py)."""

from __future__ import annotations

from tests.support.wait import until


async def goto(pilot, step: str) -> None:
    """Switch to a step and wait until its screen is mounted and shown."""
    app = pilot.app
    app.goto(step)
    await until(pilot, lambda: getattr(app.screen, "STEP", None) == step and app.screen.is_mounted,
                what=f"the {step} step")
    await pilot.pause()
