"""The base of every wizard step: step bar on top, footer of key bindings below,
and the hooks the app calls (re-read state, may we move on?, move on)."""

from __future__ import annotations

from typing import ClassVar

from textual import events, on
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer

from lora_tui.ui.widgets.steps import StepBar


class WizardScreen(Screen):
    STEP: ClassVar[str] = ""
    composed = False  # True once Mount ran, i.e. every child of compose() exists

    @on(events.Mount)
    def _composed(self) -> None:
        self.composed = True

    def compose(self) -> ComposeResult:
        yield StepBar(self.STEP)
        yield from self.compose_body()
        yield Footer(compact=True, show_command_palette=False)

    def compose_body(self) -> ComposeResult:
        yield from ()

    @property
    def state(self):
        return self.app.state

    @property
    def backend(self):
        return self.app.backend

    def on_screen_resume(self) -> None:
        if not self.composed:  # shown before its widgets exist: read the state once they do
            self.call_later(self.on_screen_resume)
            return
        self.sync_from_state()

    def sync_from_state(self) -> None:
        """Show what ``app.state`` holds now (called each time the step is shown)."""

    def state_changed(self, what: str) -> None:
        """Shared state changed while this step is shown: 'hardware', 'judgement', 'layers', 'run'.
        Only called once the screen is composed (see LoraTuiApp.notify_screens)."""

    def next_refusal(self) -> str | None:
        """Why the user may not move on yet, in words; None when they may."""
        return None

    def go_next(self) -> None:
        step = self.app.next_step_name()
        if step:
            self.app.goto(step)
