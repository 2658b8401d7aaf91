"""The Chat step's choice of who answers: the loaded adapters and the base model (ctrl+t cycles,
ctrl+g picks the other side of a comparison), and the finished or stopped runs with an adapter,
trained on the same base model, that can join the chat (ctrl+o, the AddRun picker; it says so when
there is none). ChatScreen (screens/chat.py) builds on
this; the widgets it touches (#use-adapter, #chat-adapters, #chat-header) are composed there.
Workers only call the backend and post messages; the handlers own the widgets.
"""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Checkbox, Label, OptionList, Static
from textual.widgets.option_list import Option
from textual.worker import Worker

from lora_tui.ui.errors import plain_error
from lora_tui.ui.messages import AdapterAdded, ChatRunsFound
from lora_tui.ui.screens.base import WizardScreen
from lora_tui.ui.workers import failure, thread_worker

BASE = "base"  # lora_tui.core.chat.adapters.BASE (not imported: the wizard paints before the core loads)


class AddRun(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, runs: list[tuple[str, str]], base: str) -> None:
        super().__init__(classes="dialog-screen")
        self.runs, self.base = runs, base

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Add a run's adapter to this chat", classes="dialog-title")
            yield Static(f"Runs with an adapter trained on {self.base}. Enter adds one; esc cancels.", classes="hint")
            yield OptionList(*(Option(Text.assemble(name, ("  " + str(path), "dim")), id=str(path))
                               for name, path in self.runs), id="add-run-list")

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)


class ChatAdapters(WizardScreen):
    """Who answers in the chat, who it is compared with, and the runs that could join."""

    def __init__(self) -> None:
        super().__init__()
        self.session = None
        self._loaded_for: str | None = None
        self._busy = False
        self.answering: str = BASE  # a loaded adapter's name, or BASE
        self.partner: str = BASE  # the other side of ctrl+r
        self._last_adapter: str | None = None  # what the tick turns back on
        self._addable: list | None = None  # (name, path) of runs on this base not loaded; None: still looking

    def _show_header(self) -> None:  # ChatScreen says what is loaded
        pass

    # --- who answers ----------------------------------------------------------------------------
    def adapter_names(self) -> list[str]:
        """The loaded adapters' names (a session without names has one adapter or none)."""
        session = self.session
        if session is None:
            return []
        return list(getattr(session, "names", None) or (["adapter"] if session.has_adapter else []))

    def answer_title(self, who: str) -> str:
        if who == BASE:
            return "Base model"
        return "Adapter" if len(self.adapter_names()) == 1 else who

    def _show_adapters(self) -> None:
        """The tick, the adapters line and the bindings follow who answers and who is compared."""
        names = self.adapter_names()
        tick = self.query_one("#use-adapter", Checkbox)
        if self.answering != BASE:
            self._last_adapter = self.answering
        tick.disabled = not names
        tick.label = self._last_adapter if len(names) > 1 and self._last_adapter else "adapter"
        tick.value = self.answering != BASE
        line = self.query_one("#chat-adapters", Static)
        line.display = len(names) > 1 or bool(self._addable)
        parts = [("Answering: ", "dim")]
        for who in names + [BASE]:
            parts += [(f"[{who}]" if who == self.answering else who, "bold" if who == self.answering else ""), ("  ", "")]
        parts += [(f"ctrl+r compares {self.answering} with {self.partner}"
                   + (" (ctrl+g: another)" if len(names) > 1 else ""), "dim")]
        if self._addable:
            parts += [(f"   ctrl+o adds a run ({len(self._addable)} more on this base)", "dim")]
        line.update(Text.assemble(*parts))
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "compare_with":
            return len(self.adapter_names()) > 1
        return True

    def _cycle(self, current: str, skip: str | None = None) -> str:
        order = [who for who in self.adapter_names() + [BASE] if who != skip]
        return order[(order.index(current) + 1) % len(order)] if current in order else order[0]

    def action_toggle_adapter(self) -> None:
        if not self.adapter_names():
            return
        self.answering = self._cycle(self.answering)
        if self.partner == self.answering:
            self.partner = self._cycle(self.partner, skip=self.answering)
        self._show_adapters()

    def action_compare_with(self) -> None:
        if len(self.adapter_names()) > 1:
            self.partner = self._cycle(self.partner, skip=self.answering)
            self._show_adapters()

    @on(Checkbox.Changed, "#use-adapter")
    def _ticked(self, event: Checkbox.Changed) -> None:
        if event.value == (self.answering != BASE) or not self.adapter_names():
            return  # set by _show_adapters
        self.answering = (self._last_adapter or self.adapter_names()[0]) if event.value else BASE
        if self.partner == self.answering:
            self.partner = self._cycle(self.partner, skip=self.answering)
        self._show_adapters()

    # --- adding runs on the same base ---------------------------------------------------------------
    @thread_worker("chat-runs")
    def _find_runs(self, session, folder: str, path: str) -> None:
        self.post_message(ChatRunsFound(self.backend.chat_runs(session, folder), path=path))

    @on(ChatRunsFound)
    def _runs_found(self, message: ChatRunsFound) -> None:
        if message.path == self._loaded_for and self.session is not None:
            self._addable = list(message.runs)
            self._show_adapters()

    def action_add_run(self) -> None:
        if self.session is None:
            self.notify("The model is still loading; ctrl+o lists the runs that can join once it is ready.", timeout=5)
            return
        base = getattr(getattr(self.session, "source", None), "base_model", "this base model")
        if self._addable is None:
            self.notify("Still looking for runs trained on the same base model…", timeout=4)
        elif not self._addable:
            run = self.state.run
            folder = run.path.parent if run is not None else "the runs folder"
            self.notify(f"No other finished or stopped run in {folder} has an adapter trained on {base} "
                        "(same quantisation). Train one, then ctrl+o adds it here.", timeout=8)
        else:
            self.app.push_screen(AddRun(self._addable, base), self._add_chosen)

    def _add_chosen(self, path: str | None) -> None:
        if path and self.session is not None:
            if self._busy:
                self.notify("Still answering (esc stops it); add the run after.", timeout=4)
                return
            self._busy = True
            self.query_one("#chat-header", Static).update(f"Loading the adapter of {path}…")
            self._add(self.session, path)

    @thread_worker("reply")  # one model: adding an adapter and answering take turns
    def _add(self, session, path: str) -> None:
        self.post_message(AdapterAdded(self.backend.add_chat_adapter(session, path)))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The adapter workers that raised (ChatScreen's own handler takes the reply workers)."""
        failed = failure(event)
        if failed is None:
            return
        if failed.group == "chat-runs":  # a listing that fails only means nothing to offer
            self.post_message(ChatRunsFound([], path=failed.args["path"]))
        elif failed.group == "reply" and failed.name == "_add":
            self.post_message(AdapterAdded(None, error=plain_error(failed.error)))

    @on(AdapterAdded)
    def _added(self, message: AdapterAdded) -> None:
        self._busy = False
        self._show_header()
        if message.error:
            self.notify(message.error, severity="error", timeout=8)
            return
        self.answering = message.name
        if self.partner == self.answering:
            self.partner = self._cycle(self.partner, skip=self.answering)
        self.notify(f"{message.name} loaded: it answers now (ctrl+t switches).", timeout=5)
        run = self.state.run
        if run is not None:
            self._find_runs(self.session, str(run.path.parent), self._loaded_for)
        self._show_adapters()
