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


def shown(widget) -> list[str]:
    """What the widget really puts on screen, line by line (after wrapping and cropping)."""
    from textual.geometry import Region

    strips = widget.render_lines(Region(0, 0, widget.outer_size.width, widget.outer_size.height))
    return [strip.text.rstrip() for strip in strips]


def words(lines) -> str:
    """Lines (or a text) as one string of single-spaced words: what a reader reads, whatever the wrapping."""
    return " ".join(" ".join(lines if isinstance(lines, list) else [lines]).split())


def on_screen(widget, region=None) -> list[str]:
    """What the terminal shows where ``widget`` is (or in ``region`` of the screen), its children and anything
    over it included, line by line. (Textual has no public call for a screen's text; its compositor's
    render_strips is what it paints.)"""
    region = region or widget.region
    strips = widget.screen._compositor.render_strips()
    return [strip.crop(region.x, region.right).text.rstrip() for strip in strips[region.y:region.bottom]]


async def read_all(pilot, box) -> list[str]:
    """Every line a reader sees in the scrollable ``box`` by scrolling it down a page at a time (never sideways),
    in order, each once."""
    rows: dict[int, str] = {}
    box.scroll_to(y=0, animate=False)
    await pilot.pause()
    while True:
        view = box.scrollable_content_region
        for offset, line in enumerate(on_screen(box, view)):
            rows[round(box.scroll_y) + offset] = line
        if box.scroll_y >= box.max_scroll_y:
            return [rows[i] for i in sorted(rows)]
        box.scroll_to(y=min(box.scroll_y + view.height, box.max_scroll_y), animate=False)
        await pilot.pause()


def run_scene(name: str, check, size: tuple[int, int] = (80, 24), notifications: bool = False) -> None:
    """Drive the wizard to scene ``name`` of screenshots/scenes.py under a pilot, then ``await check(pilot, app)``.
    The scenes use paths relative to the repository: the caller makes it the working directory."""
    import asyncio

    from screenshots.scenes import SCENES

    make, drive = SCENES[name]

    async def go():
        app = make()
        async with app.run_test(size=size, notifications=notifications) as pilot:
            await drive(pilot)
            await check(pilot, app)

    asyncio.run(go())
