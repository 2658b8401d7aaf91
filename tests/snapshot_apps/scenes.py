"""Each wizard screen in a settled, deterministic state: shared by the snapshot tests
and by screenshots/make_screenshots.py.

A scene is (app factory, async function that drives a Pilot there and waits until
every worker has finished). Paths are relative to the repository root, which the
caller must make the working directory.
"""

from __future__ import annotations

import time
from typing import Awaitable, Callable

from textual.widgets import Input

from tests.snapshot_apps.fixed import FixedBackend, snapshot_state

DEMO_RUN = "tests/snapshot_apps/runs/capn-lora-demo"


async def settle(pilot, condition: Callable[[], bool] = lambda: True, timeout: float = 60.0) -> None:
    """Wait until ``condition`` holds and no worker is running, then let the screen repaint."""
    app = pilot.app
    app.animation_level = "none"  # tab underlines and scrolls land at once, not mid-animation
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause(0.05)
        busy = [w for w in app.workers if w.is_running and w.group != "follow"]
        if condition() and not busy:
            break
    for field in app.screen.query(Input):
        field.cursor_blink = False  # a blinking cursor would make snapshots differ by timing
    others = [w for w in app.workers if w.group != "follow"]  # a live run's follower never completes
    if others:  # (an empty list would mean "wait for all of them")
        await app.workers.wait_for_complete(others)
    await pilot.pause(0.2)
    await pilot.pause()


def _model_app():
    from lora_tui.ui.app import make_app

    return make_app(state=snapshot_state(), backend=FixedBackend())


async def _model(pilot) -> None:
    app = pilot.app
    await settle(pilot, lambda: app.state.model_check is not None and app.current_judgement() is not None
                 and app.screen.query_one("#models").row_count > 1)


async def _hardware(pilot) -> None:
    app = pilot.app
    await _model(pilot)
    await pilot.press("ctrl+n")
    await settle(pilot, lambda: app.current_mode == "hardware" and app.current_judgement() is not None)


def _hardware_tight_app():
    from lora_tui.ui.app import make_app

    state = snapshot_state(data__max_seq_len=4096, training__micro_batch=16,
                           training__gradient_checkpointing=False)  # auto would switch it on and fit
    return make_app(state=state, backend=FixedBackend())


async def _dataset(pilot, tab: str | None = None) -> None:
    app = pilot.app
    await _hardware(pilot)
    await pilot.press("ctrl+n")
    await settle(pilot, lambda: app.current_mode == "dataset" and app.state.dataset_current() is not None)
    if tab:
        app.screen.query_one("#data-tabs").active = tab
        await settle(pilot)


async def _parameters(pilot) -> None:
    app = pilot.app
    await _dataset(pilot)
    await pilot.press("ctrl+n")
    await settle(pilot, lambda: app.current_mode == "parameters" and app.current_judgement() is not None
                 and app.state.layers_for_model() is not None)
    app.screen.query_one("#field-lora-r Input").focus()
    await settle(pilot)


def _run_app():
    from lora_tui.ui.app import make_app

    return make_app(run=DEMO_RUN, state=snapshot_state(), backend=FixedBackend())


async def _training(pilot) -> None:
    app = pilot.app
    await settle(pilot, lambda: app.current_mode == "training" and app.screen.history.outcome is not None)


async def _chat(pilot, compare: bool = False) -> None:
    app = pilot.app
    await _training(pilot)
    await pilot.press("ctrl+n")
    await settle(pilot, lambda: app.current_mode == "chat" and app.screen.session is not None)
    await pilot.press(*"How do I read a map scale?")
    await pilot.press("ctrl+r" if compare else "enter")
    await settle(pilot, lambda: not app.screen._busy)


async def _export(pilot) -> None:
    app = pilot.app
    await _training(pilot)
    await pilot.press("ctrl+n", "ctrl+n")
    await settle(pilot, lambda: app.current_mode == "export" and bool(app.screen._summary_data))


SCENES: dict[str, tuple[Callable, Callable[..., Awaitable[None]]]] = {
    "model": (_model_app, _model),
    "hardware": (_model_app, _hardware),
    "hardware_fixes": (_hardware_tight_app, _hardware),
    "dataset": (_model_app, _dataset),
    "dataset_findings": (_model_app, lambda pilot: _dataset(pilot, "tab-findings")),
    "dataset_lengths": (_model_app, lambda pilot: _dataset(pilot, "tab-lengths")),
    "parameters": (_model_app, _parameters),
    "training": (_run_app, _training),
    "chat": (_run_app, _chat),
    "chat_compare": (_run_app, lambda pilot: _chat(pilot, compare=True)),
    "export": (_run_app, _export),
}
