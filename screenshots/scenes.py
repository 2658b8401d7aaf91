"""Each wizard screen in a settled, deterministic state: shared by the snapshot tests
and by screenshots/make_screenshots.py.

A scene is (app factory, async function that drives a Pilot there and waits until
every worker has finished). Paths are relative to the repository root, which the
caller must make the working directory.
"""

from __future__ import annotations

from typing import Awaitable, Callable

from textual.widgets import Input

from screenshots import SCENE_FILES
from screenshots.fixed import FixedBackend, snapshot_state
from screenshots.wait import until

DEMO_RUN = f"{SCENE_FILES}/runs/capn-lora-demo"


async def settle(pilot, condition: Callable[[], bool] = lambda: True, what: str = "the screen",
                 timeout: float = 60.0, endless: tuple[str, ...] = ()) -> None:
    """Wait until ``condition`` holds and no worker is left to run (a live run's follower never ends),
    then until the screen has handled what the workers posted and repainted (``endless``: names of workers
    that wait for work and never end, such as a DirectoryTree's loader). Fails naming ``what``
    when that does not happen within ``timeout``: a scene must never be taken half-drawn."""
    app = pilot.app
    app.animation_level = "none"  # tab underlines and scrolls land at once, not mid-animation

    def working() -> list[str]:
        return [w.name or w.group for w in app.workers
                if not w.is_finished and w.group != "follow" and w.name not in endless]

    await until(pilot, lambda: condition() and not working(), timeout, what=f"{what}, with every worker done",
                details=lambda: f"condition holds: {bool(condition())}; workers still running: {working()}")
    for field in app.screen.query(Input):
        field.cursor_blink = False  # a blinking cursor would make snapshots differ by timing
    await pilot.wait_for_scheduled_animations()  # the messages the workers posted are handled and painted


def _model_app():
    from lora_tui.ui.app import make_app

    return make_app(state=snapshot_state(), backend=FixedBackend())


async def _model(pilot) -> None:
    app = pilot.app
    await settle(pilot, lambda: app.state.model_check is not None and app.current_judgement() is not None
                 and app.screen.query_one("#models").row_count > 1, "the model check, estimate and model table")


async def _hardware(pilot) -> None:
    app = pilot.app
    await _model(pilot)
    await pilot.press("ctrl+n")
    await settle(pilot, lambda: app.current_mode == "hardware" and app.current_judgement() is not None,
                 "the Hardware step's estimate")


def _hardware_tight_app():
    from lora_tui.ui.app import make_app

    state = snapshot_state(data__max_seq_len=4096, training__micro_batch=16,
                           training__gradient_checkpointing=False)  # auto would switch it on and fit
    return make_app(state=state, backend=FixedBackend())


async def _dataset(pilot, tab: str | None = None) -> None:
    app = pilot.app
    await _hardware(pilot)
    await pilot.press("ctrl+n")
    await settle(pilot, lambda: app.current_mode == "dataset" and app.state.dataset_current() is not None,
                 "the Dataset step's check")
    if tab:
        app.screen.query_one("#data-tabs").active = tab
        await settle(pilot, what=f"the {tab} tab")


async def _parameters(pilot) -> None:
    app = pilot.app
    await _dataset(pilot)
    await pilot.press("ctrl+n")
    await settle(pilot, lambda: app.current_mode == "parameters" and app.current_judgement() is not None
                 and app.state.layers_for_model() is not None, "the Parameters step's estimate and layers")
    app.screen.query_one("#field-lora-r Input").focus()
    await settle(pilot, what="the focused rank field")


def _run_app():
    from lora_tui.ui.app import make_app

    return make_app(run=DEMO_RUN, state=snapshot_state(), backend=FixedBackend())


async def _training(pilot) -> None:
    app = pilot.app
    await settle(pilot, lambda: app.current_mode == "training" and app.screen.history.outcome is not None,
                 "the demo run's whole history")


async def _chat(pilot, compare: bool = False) -> None:
    app = pilot.app
    await _training(pilot)
    await pilot.press("ctrl+n")
    await settle(pilot, lambda: app.current_mode == "chat" and app.screen.session is not None, "the chat model")
    await pilot.press(*"How do I read a map scale?")
    await pilot.press("ctrl+r" if compare else "enter")
    await settle(pilot, lambda: not app.screen._busy, "the answer")


async def _chat_base(pilot) -> None:
    """After an adapter turn, ctrl+t: the base model answers, in its own conversation (empty), and says so."""
    app = pilot.app
    await _chat(pilot)
    await pilot.press("ctrl+t")
    await settle(pilot, lambda: app.screen.answering == "base", "the base model answering")


async def _file_picker(pilot) -> None:
    app = pilot.app
    await _dataset(pilot)
    await pilot.press("ctrl+o")
    await settle(pilot, lambda: type(app.screen).__name__ == "FilePicker"
                 and bool(app.screen.query_one("#tree").root.children), "the file browser", endless=("_loader",))


async def _export(pilot) -> None:
    app = pilot.app
    await _training(pilot)
    await pilot.press("ctrl+n", "ctrl+n")
    await settle(pilot, lambda: app.current_mode == "export" and bool(app.screen._summary_data), "the export summary")


def _export_app():
    """The demo run with canned GGUF exports (screenshots/fixed.py ExportBackend): the chooser and the verdict."""
    from lora_tui.ui.app import make_app
    from screenshots.fixed import ExportBackend

    return make_app(run=DEMO_RUN, state=snapshot_state(), backend=ExportBackend())


async def _export_gguf_types(pilot) -> None:
    """g: every GGUF type and the LoRA GGUF, each with its size before writing."""
    app = pilot.app
    await _export(pilot)
    await settle(pilot, lambda: bool(app.screen._sizes), "the size estimates")
    await pilot.press("g")
    await settle(pilot, lambda: type(app.screen).__name__ == "GGUFChoice", "the GGUF types with their sizes")


async def _export_verdict(pilot) -> None:
    """q4_k_m written and checked: the verdict table (gain kept, KL, same top token, template, stop token)."""
    from textual.widgets import Static

    app = pilot.app
    await _export_gguf_types(pilot)
    await pilot.press("down", "down", "down", "enter")
    await settle(pilot, lambda: type(app.screen).__name__ == "ExportScreen" and not app.screen._busy
                 and "PASS" in str(app.screen.query_one("#export-text", Static).render()), "the verdict table")


SCENES: dict[str, tuple[Callable, Callable[..., Awaitable[None]]]] = {
    "model": (_model_app, _model),
    "hardware": (_model_app, _hardware),
    "hardware_fixes": (_hardware_tight_app, _hardware),
    "dataset": (_model_app, _dataset),
    "dataset_findings": (_model_app, lambda pilot: _dataset(pilot, "tab-findings")),
    "dataset_lengths": (_model_app, lambda pilot: _dataset(pilot, "tab-lengths")),
    "file_picker": (_model_app, _file_picker),
    "parameters": (_model_app, _parameters),
    "training": (_run_app, _training),
    "chat": (_run_app, _chat),
    "chat_compare": (_run_app, lambda pilot: _chat(pilot, compare=True)),
    "chat_base": (_run_app, _chat_base),
    "export": (_run_app, _export),
    "export_gguf_types": (_export_app, _export_gguf_types),
    "export_verdict": (_export_app, _export_verdict),
}
